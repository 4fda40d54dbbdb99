import Testing
@testable import Lifeguard

@Suite("The pool's clock")
struct PoolInstantTests {
    @Test("now never goes back and keeps pace with CLOCK_MONOTONIC, whether it reads the timestamp counter or not")
    func keepsPace() async throws {
        let offsetBefore = PoolInstant.now.nanoseconds &- PoolInstant.monotonic.nanoseconds
        var previous = PoolInstant.now
        for _ in 0..<100_000 {
            let next = PoolInstant.now
            #expect(next >= previous)
            previous = next
        }
        try await Task.sleep(for: .milliseconds(50))
        let offsetAfter = PoolInstant.now.nanoseconds &- PoolInstant.monotonic.nanoseconds
        // 50 ms at a rate off by 0.1% would drift 50 µs; allow for a preemption between the reads.
        #expect(abs(offsetAfter &- offsetBefore) < 1_000_000, "drifted \(offsetAfter &- offsetBefore) ns in 50 ms")
    }

    @Test("the timestamp counter, where the kernel keeps time with it, calibrates to a plausible rate")
    func calibrates() throws {
        guard TimestampCounter.isReliable else { return }
        let counter = try #require(TimestampCounter.calibrate(over: 2_000_000))
        #expect(counter.nanosecondsPerTick > 0.01 && counter.nanosecondsPerTick < 10)
        #expect(TimestampCounter.calibrated != nil)
        let reading = counter.nanoseconds(at: TimestampCounter.ticks)
        #expect(abs(reading &- PoolInstant.monotonic.nanoseconds) < 1_000_000)
    }

    @Test("an instant moved by a duration too long for the clock stops at the clock's end instead of wrapping into the past")
    func advancingSaturates() {
        let now = PoolInstant(nanoseconds: 1_000)
        #expect(now.advanced(by: .seconds(Int64.max)) == PoolInstant(nanoseconds: .max))
        #expect(now.advanced(by: .nanoseconds(Int64.max)) == PoolInstant(nanoseconds: .max))
        #expect(PoolInstant(nanoseconds: -1_000).advanced(by: .seconds(Int64.min)) == PoolInstant(nanoseconds: .min))
        #expect(now.advanced(by: .milliseconds(5)) == PoolInstant(nanoseconds: 5_001_000))
    }
}
