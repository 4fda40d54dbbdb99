import Synchronization
import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("Fan-out and deadlines through the shell (in-memory connections)")
struct FanOutTests {
    @Test("fanOut holds at most maxConcurrent leases and returns outputs in input order")
    func fanOutCapsAndOrders() async throws {
        try await withRunningPool(.testing(budget: 8, lanes: [.retrieval: .patient])) { pool, _ in
            let running = Mutex((now: 0, peak: 0))
            let inputs = Array(0..<15)
            let outputs = try await pool.fanOut(lane: .retrieval, maxConcurrent: 3, inputs) { _, input in
                running.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...5)))
                running.withLock { $0.now -= 1 }
                return input * 10
            }
            #expect(outputs == inputs.map { $0 * 10 })
            #expect(running.withLock { $0.peak } == 3)
            #expect(pool.status().leased == 0)
        }
    }

    @Test("the first error of a fan-out cancels the rest and is thrown; no connection leaks")
    func fanOutFailure() async throws {
        try await withRunningPool(.testing(budget: 4, lanes: [.retrieval: .patient])) { pool, _ in
            do {
                _ = try await pool.fanOut(lane: .retrieval, maxConcurrent: 4, Array(0..<8)) { _, input in
                    if input == 2 { throw Boom() }
                    try await Task.sleep(for: .seconds(5))
                    return input
                }
                Issue.record("expected an error")
            } catch is Boom {}
            #expect(pool.status().leased == 0)
            do {
                _ = try await pool.fanOut(lane: .retrieval, maxConcurrent: 0, [1]) { _, input in input }
                Issue.record("expected an error")
            } catch let error as LifeguardError {
                #expect(error.code == .invalidConfiguration)
                #expect(error.problems == ["fanOut maxConcurrent is 0; it must be at least 1"])
            }
        }
    }

    @Test("a RequestDeadline bounds the wait: the lease fails with deadlineExceeded at the deadline, not at waitTimeout")
    func deadlineThroughShell() async throws {
        let clock = ManualClock()
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init(waitTimeout: .seconds(5))])
        configuration.minimumIdle = 1
        try await withRunningPool(configuration, clock: clock) { pool, _ in
            try await pool.withConnection(lane: .write) { _ in
                let started = clock.now
                let bounded = Task {
                    try await RequestDeadline.withDeadline(at: started.advanced(by: .milliseconds(80))) {
                        try await pool.withConnection(lane: .write) { _ in }
                    }
                }
                await clock.sleeper(until: started.advanced(by: .milliseconds(80)))
                clock.advance(by: .milliseconds(80))
                do {
                    try await bounded.value
                    Issue.record("expected deadlineExceeded")
                } catch let error as LifeguardError {
                    #expect(error.code == .deadlineExceeded)
                    #expect(started.duration(to: clock.now) < .seconds(2))
                }
            }
            // An enclosing, earlier deadline wins.
            let outer = PoolInstant.now.advanced(by: .milliseconds(10))
            await RequestDeadline.withDeadline(at: outer) {
                await RequestDeadline.withDeadline(in: .seconds(10)) {
                    #expect(RequestDeadline.current == outer)
                }
            }
        }
    }
}
