import Logging
import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("Statistics on a known schedule")
struct PoolStatisticsTests {
    /// HdrHistogram with two significant digits: values are exact to within 1%.
    func isClose(_ value: Double, to expected: Double) -> Bool {
        abs(value - expected) <= expected * 0.01 + 0.001
    }

    @Test("the recorder counts each event where it belongs: outcomes and arrivals by lane, cancelled leases, connections by reason, findings and incidents kept")
    func eventsAreCountedWhereTheyBelong() {
        var recorder = StatisticsRecorder(laneLimits: [2, 2], budget: 4, windowLength: .seconds(60), now: at(0))
        let ends: [PoolEvent.RequestEnd] = [.granted, .timeout, .overloaded, .shed, .deadlineExceeded, .cancelled, .unavailable, .shutdown]
        for (index, end) in ends.enumerated() { recorder.record(.requestEnded(lane: 1, end, count: index + 1)) }
        recorder.record(.arrived(lane: 0, count: 3))
        recorder.record(.leaseCancelled(lane: 1))
        recorder.record(.connectionOpened)
        recorder.record(.connectFailed)
        for reason in [PoolEvent.CloseReason.idle, .expired, .broken, .broken, .resetFailed, .shutdown] { recorder.record(.connectionClosed(reason)) }
        let finding = WatchdogFinding(kind: .longHold, lane: "b", callSite: nil, heldNanoseconds: 2_000_000_000, idleNanoseconds: nil)
        recorder.record(.finding(finding, lane: 1))
        let first = recorder.recordFirstAtItsCallSite(
            WatchdogFinding(kind: .leaseDuringGeneration, lane: "a", callSite: nil, heldNanoseconds: 0, idleNanoseconds: nil), lane: 0)
        let again = recorder.recordFirstAtItsCallSite(
            WatchdogFinding(kind: .leaseDuringGeneration, lane: "a", callSite: nil, heldNanoseconds: 0, idleNanoseconds: nil), lane: 0)
        let statistics = recorder.snapshot(laneNames: ["a", "b"], total: 0, lanes: [0, 0], capacity: 4, now: at(1_000))
        let b = statistics.lanes[1]
        #expect([b.outcomes.granted, b.outcomes.timeout, b.outcomes.overloaded, b.outcomes.shed, b.outcomes.deadlineExceeded,
                  b.outcomes.cancelled, b.outcomes.unavailable, b.outcomes.shutdown] == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(statistics.lanes[0].outcomes == PoolStatistics.Outcomes())
        #expect(isClose(statistics.lanes[0].arrivalsPerSecond, to: 3))
        #expect(b.cancelledLeases == 1 && b.longHolds == 1)
        #expect(first && !again, "a lease during generation is reported once per call site")
        #expect(statistics.lanes[0].generationHolds == 1)
        let connections = statistics.connections
        #expect([connections.opened, connections.connectFailures, connections.closedIdle, connections.closedExpired,
                 connections.closedBroken, connections.closedResetFailed, connections.closedShutdown] == [1, 1, 1, 1, 2, 1, 1])
        #expect(statistics.findings.map(\.callSite) == ["unknown", "unknown"])
        #expect(statistics.findings[0].heldSeconds == 2)
    }

    @Test("10 leases that each wait 100 ms: p99 wait 100 ms; holds, outcomes, arrival rate and time-weighted utilization")
    func waitsHoldsAndUtilization() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        machine.warmUp(1, now: at(0))
        for round in 0..<10 {
            let start = round * 1_000
            let holder = machine.leaseNow(.write, now: at(start))!
            _ = machine.leaseWaiting(.write, now: at(start))!
            let handedOver = machine.release(holder, disposition: .reuse, now: at(start + 100)).actions
            _ = machine.release(handedOver.grants[0].grant, disposition: .reuse, now: at(start + 100)).actions
        }
        let statistics = machine.statisticsSnapshot(now: at(10_000))
        let write = statistics[.write]!
        #expect(write.wait.count == 20)
        #expect(write.wait.p50 == 0, "half the requests found the connection idle")
        #expect(isClose(write.wait.p99, to: 100))
        #expect(isClose(write.wait.max, to: 100))
        #expect(isClose(write.hold.p99, to: 100))
        #expect(write.outcomes.granted == 20)
        #expect(isClose(write.arrivalsPerSecond, to: 2))
        // One connection leased 100 ms of every 1,000: the median sees none, the p99 sees it.
        #expect(write.inUse.p50 == 0)
        #expect(write.inUse.p99 == 1)
        #expect(write.inUse.max == 1)
        #expect(statistics.utilizationP50 == 0)
        #expect(statistics.utilizationP99 == 1)
        #expect(statistics.wait == write.wait, "one lane: the overall distribution is the lane's")
        #expect(isClose(statistics.windowSeconds, to: 10))
    }

    @Test("p99 in-use is the level exceeded 1% of the time, not the average")
    func occupancyIsTimeWeighted() {
        var machine = Machine(.testing(budget: 10, lanes: [.retrieval: .init()]))
        machine.warmUp(10, now: at(0))
        // 2 connections busy all the time, 10 busy for 2% of it.
        let steady = (0..<2).map { _ in machine.leaseNow(.retrieval, now: at(0))! }
        let burst = (0..<8).map { _ in machine.leaseNow(.retrieval, now: at(0))! }
        for grant in burst { _ = machine.release(grant, disposition: .reuse, now: at(200)).actions }
        let statistics = machine.statisticsSnapshot(now: at(10_000))
        #expect(statistics.inUse.p50 == 2)
        #expect(statistics.inUse.p99 == 10)
        #expect(statistics.inUse.now == 2)
        #expect(statistics.utilizationP99 == 1.0)
        #expect(statistics.utilizationP50 == 0.2)
        _ = steady
    }

    @Test("every way a request ends is counted by lane")
    func outcomes() {
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init(waitTimeout: .milliseconds(100), maxWaiters: 2)])
        configuration.reconnectInitialDelay = .seconds(1)
        var machine = Machine(configuration)
        machine.warmUp(1, now: at(0))
        _ = machine.leaseNow(.write, now: at(0))!
        let (cancelled, _) = machine.leaseWaiting(.write, now: at(1))!
        _ = machine.leaseWaiting(.write, now: at(1))!
        _ = machine.leaseFailure(.write, now: at(1))          // overloaded
        _ = machine.cancelWaiter(cancelled, lane: machine.lane(.write), now: at(0))
        _ = machine.tick(now: at(200))                         // the other waiter times out
        _ = machine.shutdown(gracePeriod: .seconds(1), now: at(300))
        _ = machine.leaseFailure(.write, now: at(301))        // shutdown
        let outcomes = machine.statisticsSnapshot(now: at(400))[.write]!.outcomes
        #expect(outcomes == PoolStatistics.Outcomes(granted: 1, timeout: 1, overloaded: 1, shed: 0, cancelled: 1, unavailable: 0, shutdown: 1))
    }

    @Test("connections opened and closed are counted with their reason")
    func connectionCounts() {
        var configuration = PoolConfiguration.testing(budget: 3, lanes: [.write: .init()])
        configuration.idleTimeout = .seconds(10)
        var machine = Machine(configuration)
        machine.warmUp(2, now: at(0))
        let grant = machine.leaseNow(.write, now: at(0))!
        _ = machine.release(grant, disposition: .close, now: at(1)).actions
        _ = machine.tick(now: at(10_000))
        let (_, opening) = machine.leaseWaiting(.write, now: at(10_001))!
        _ = machine.connectionFailed(slot: opening.connect[0], error: ConnectionFailure(), now: at(10_002))
        let connections = machine.statisticsSnapshot(now: at(10_003)).connections
        #expect(connections.opened == 2)
        #expect(connections.closedBroken == 1)
        #expect(connections.closedIdle == 1)
        #expect(connections.connectFailures == 1)
    }

    @Test("statistics cover the current and the previous window only")
    func windowsRotate() {
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init()])
        configuration.statisticsWindow = .seconds(10)
        var machine = Machine(configuration)
        machine.warmUp(1, now: at(0))
        let early = machine.leaseNow(.write, now: at(1_000))!
        _ = machine.release(early, disposition: .reuse, now: at(1_500)).actions
        _ = machine.tick(now: at(10_000))
        #expect(machine.statisticsSnapshot(now: at(15_000))[.write]!.outcomes.granted == 1, "the previous window still counts")
        _ = machine.tick(now: at(20_000))
        let later = machine.statisticsSnapshot(now: at(25_000))
        #expect(later[.write]!.outcomes.granted == 0, "two windows later it is gone")
        #expect(isClose(later.windowSeconds, to: 15))
    }

    @Test("the pool's statistics() reads the same data through the shell")
    func throughTheShell() async throws {
        try await withRunningPool(.testing(budget: 2, lanes: [.write: .patient, .retrieval: .patient])) { pool, _ in
            for _ in 0..<5 { try await pool.withConnection(lane: .write) { _ in } }
            try await pool.withConnection(lane: .retrieval) { _ in }
            let statistics = pool.statistics()
            #expect(statistics[.write]?.outcomes.granted == 5)
            #expect(statistics[.retrieval]?.outcomes.granted == 1)
            #expect(statistics.outcomes.granted == 6)
            #expect(statistics.connections.opened >= 1)
            #expect(statistics.capacity == 2)
        }
    }

    @Test("the watchdog reports a lease idle too long (generation hold) and held too long, once each, with the call site")
    func watchdog() async throws {
        var configuration = PoolConfiguration.testing(budget: 2, lanes: [.generation: .patient])
        configuration.idleInLeaseThreshold = .milliseconds(100)
        configuration.longHoldThreshold = .milliseconds(300)
        let clock = ManualClock()
        try await withRunningPool(configuration, clock: clock) { pool, _ in
            let line: UInt = #line + 2
            let lease = Task {
                try await pool.withConnection(lane: .generation) { connection in
                    connection.use()
                    try await clock.sleep(for: .milliseconds(600))
                    connection.use()
                }
            }
            let started = clock.now
            await clock.sleeper(until: started.advanced(by: .milliseconds(600)))
            // Idle past 100 ms, then held past 300 ms, each looked at twice.
            for step in [150, 200, 350, 400, 600] {
                clock.advance(by: clock.now.duration(to: started.advanced(by: .milliseconds(step))))
                pool.watch()
            }
            try await lease.value
            let findings = pool.statistics().findings
            #expect(findings.map(\.kind).sorted { $0.rawValue < $1.rawValue } == [.generationHold, .longHold])
            for finding in findings {
                #expect(finding.callSite == "LifeguardTests/PoolStatisticsTests.swift:\(line)")
                #expect(finding.function == "watchdog()")
                #expect(finding.lane == "generation")
            }
            #expect(pool.statistics()[.generation]?.generationHolds == 1)
            #expect(pool.statistics()[.generation]?.longHolds == 1)
        }
    }
}
