import LifeguardTestUtils
import Testing

@Suite("Manual clock")
struct ManualClockTests {
    @Test("sleepers resume when the clock passes their deadline, and only then")
    func advanceResumesSleepers() async throws {
        let clock = ManualClock()
        let sleeper = Task { try await clock.sleep(until: clock.instant(at: .seconds(10)), tolerance: nil) }
        for _ in 0..<100 { await Task.yield() }
        clock.advance(by: .seconds(9))
        #expect(clock.now == clock.instant(at: .seconds(9)))
        clock.advance(by: .seconds(1))
        try await sleeper.value
        #expect(clock.origin.duration(to: clock.now) == .seconds(10))
    }

    @Test("a cancelled sleeper throws CancellationError")
    func cancelledSleeper() async {
        let clock = ManualClock()
        let sleeper = Task { try await clock.sleep(until: clock.instant(at: .seconds(1)), tolerance: nil) }
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }
}
