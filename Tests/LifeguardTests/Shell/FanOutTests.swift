import Synchronization
import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("Fan-out and deadlines through the shell (in-memory connections)", .timeLimit(.minutes(3)))
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

    @Test("a fan-out admitted whole is not judged again lease by lease: a later lease waits its turn instead of failing at once after the first ran")
    func admittedFanOutIsNotRejudged() async throws {
        let clock = ManualClock()
        var configuration = PoolConfiguration.testing(
            budget: 1, lanes: [.retrieval: .init(waitTimeout: .milliseconds(1_250), maxWaiters: 100, shedding: nil)])
        configuration.minimumIdle = 1
        try await withRunningPool(configuration, clock: clock) { pool, _ in
            @Sendable func instant(_ milliseconds: Int) -> PoolInstant { clock.instant(at: .milliseconds(milliseconds)) }
            // The lane's recent hold: one lease of 300 ms.
            let warm = Task { try await pool.withConnection(lane: .retrieval) { _ in try await clock.sleep(until: instant(300)) } }
            await clock.sleeper(until: instant(300))
            clock.advance(by: .milliseconds(300))
            try await warm.value
            // A fan-out of two leases, one at a time: the first takes the connection for 900 ms.
            let fan = Task {
                try await pool.fanOut(lane: .retrieval, maxConcurrent: 1, [0, 1]) { _, index in
                    if index == 0 { try await clock.sleep(until: instant(1_200)) }
                    return index
                }
            }
            await clock.sleeper(until: instant(1_200))
            // Three requests queue behind it (their waits to expect: 300, 600 and 900 ms, within
            // the 1 s, four fifths of the budget, that the lane admits).
            let others = (1...3).map { n in
                Task { try await pool.withConnection(lane: .retrieval) { _ in try await clock.sleep(until: instant(1_200 + 10 * n)) } }
            }
            await pool.status(where: { $0.lanes[.retrieval]?.waiters == 3 })
            // The first lease ends after 900 ms (the recent holds' mean rises to 600 ms) and the
            // second asks with two ahead: 1,800 ms to expect, past the 1 s admitted. Judged alone it
            // would fail at once, after the first had run; admitted with its request, it waits.
            clock.advance(by: .milliseconds(900))
            for n in 1...3 {
                await clock.sleeper(until: instant(1_200 + 10 * n))
                clock.advance(by: .milliseconds(10))
                try await others[n - 1].value
            }
            #expect(try await fan.value == [0, 1], "served 30 ms after it asked, within its wait budget")
        }
    }
}
