import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("State machine: connection health, backoff and shutdown")
struct PoolStateMachineHealthTests {
    @Test("minimumIdle connections are opened at start and replaced when closed")
    func minimumIdle() {
        var configuration = PoolConfiguration.testing(budget: 4, lanes: [.write: .init()])
        configuration.minimumIdle = 2
        var machine = Machine(configuration)
        let start = machine.tick(now: at(0))
        #expect(start.connect.count == 2)
        _ = machine.establish(start, now: at(1))
        #expect(machine.status.idle == 2)
        #expect(machine.tick(now: at(2)).connect.isEmpty)
        let grant = machine.leaseNow(.write, now: at(3))!
        #expect(machine.status.idle == 1)
        let closing = machine.release(grant, disposition: .close, now: at(4)).actions
        #expect(closing.connect.count == 1, "back to 2 idle")
    }

    @Test("idle connections above minimumIdle close after idleTimeout, least recently used first")
    func idleTimeout() {
        var configuration = PoolConfiguration.testing(budget: 4, lanes: [.write: .init()])
        configuration.minimumIdle = 1
        configuration.idleTimeout = .seconds(10)
        var machine = Machine(configuration)
        machine.warmUp(3, now: at(0))
        let grant = machine.leaseNow(.write, now: at(5_000))!
        _ = machine.release(grant, disposition: .reuse, now: at(5_000)).actions
        #expect(machine.tick(now: at(9_999)).close.isEmpty)
        let actions = machine.tick(now: at(10_000))
        // Two have been idle 10 s and close; the one used at 5 s stays as the minimum.
        #expect(actions.close.count == 2)
        #expect(machine.status.idle == 1)
        #expect(machine.idle == [grant.slot])
        #expect(machine.tick(now: at(30_000)).close.isEmpty, "minimumIdle is kept")
    }

    @Test("a connection past its lifetime closes when idle, and on release when leased")
    func maxLifetime() {
        var configuration = PoolConfiguration.testing(budget: 2, lanes: [.write: .init()])
        configuration.maxLifetime = .seconds(60)
        configuration.maxLifetimeJitter = 0.5
        var machine = Machine(configuration)
        machine.warmUp(2, now: at(0))
        let expiries = machine.slots.map { $0.expiresAt! }
        for expiry in expiries {
            #expect(expiry > at(30_000) && expiry <= at(60_000), "jitter shortens by at most half")
        }
        #expect(expiries[0] != expiries[1], "jitter spreads the replacements")
        let grant = machine.leaseNow(.write, now: at(1))!
        let idleSlot = machine.idle[0]
        let idleClosed = machine.tick(now: machine.slots[idleSlot].expiresAt!)
        #expect(idleClosed.close == [idleSlot])
        let released = machine.release(grant, disposition: .reuse, now: at(60_000)).actions
        #expect(released.close == [grant.slot])
    }

    @Test("idle connections are pinged after the keepalive interval; a failed ping closes")
    func keepalive() {
        var configuration = PoolConfiguration.testing(budget: 2, lanes: [.write: .init()])
        configuration.keepaliveInterval = .seconds(30)
        var machine = Machine(configuration)
        machine.warmUp(2, now: at(0))
        #expect(machine.tick(now: at(29_000)).ping.isEmpty)
        let actions = machine.tick(now: at(30_000))
        #expect(actions.ping.count == 2)
        #expect(machine.leaseWaiting(.write, now: at(30_001)) != nil, "a pinging connection is not handed out")
        let succeeded = machine.pingCompleted(slot: actions.ping[0], succeeded: true, now: at(30_002))
        #expect(succeeded.grants.count == 1)
        let failed = machine.pingCompleted(slot: actions.ping[1], succeeded: false, now: at(30_002))
        #expect(failed.close.count == 1)
    }

    @Test("a connection idle longer than validationThreshold is validated before use")
    func validationBeforeHandOut() {
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init()])
        configuration.validationThreshold = .seconds(5)
        var machine = Machine(configuration)
        machine.warmUp(1, now: at(0))
        let fresh = machine.leaseNow(.write, now: at(4_000))!
        #expect(!fresh.needsValidation)
        _ = machine.release(fresh, disposition: .reuse, now: at(4_000)).actions
        #expect(machine.leaseNow(.write, now: at(9_001))!.needsValidation)
    }

    @Test("while connecting fails, waiters fail fast with the last error and retries back off exponentially")
    func backoffAndFailFast() {
        var configuration = PoolConfiguration.testing(budget: 4, lanes: [.write: .init(), .generation: .init(limit: 1)])
        configuration.reconnectInitialDelay = .milliseconds(100)
        configuration.reconnectMaximumDelay = .milliseconds(800)
        var machine = Machine(configuration)
        let (waiter, actions) = machine.leaseWaiting(.write, now: at(0))!
        let failed = machine.connectionFailed(slot: actions.connect[0], error: ConnectionFailure(), now: at(5))
        #expect(failed.failures.map(\.waiter) == [waiter])
        #expect(failed.failures[0].error.code == .databaseUnavailable)
        #expect(failed.failures[0].error.waited == .milliseconds(5))
        #expect(String(describing: failed.failures[0].error).contains("connection refused"))
        #expect(!machine.status.isDatabaseAvailable)

        // During the backoff, a request that needs a new connection fails at once.
        var retryAt = machine.outage!.retryAt
        #expect(retryAt >= at(55) && retryAt <= at(105))
        #expect(machine.leaseFailure(.write, now: at(6))?.code == .databaseUnavailable)

        // After it, one probe is attempted; each further failure doubles the delay, up to the cap.
        var delays: [Duration] = []
        var now = retryAt
        for _ in 0..<6 {
            let (_, probe) = machine.leaseWaiting(.write, now: now)!
            #expect(probe.connect.count == 1, "one probe at a time")
            #expect(machine.leaseWaiting(.write, now: now)!.1.connect.isEmpty)
            _ = machine.connectionFailed(slot: probe.connect[0], error: ConnectionFailure(), now: now)
            retryAt = machine.outage!.retryAt
            delays.append(now.duration(to: retryAt))
            now = retryAt
        }
        let bases: [Duration] = [.milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(800), .milliseconds(800), .milliseconds(800)]
        for (delay, base) in zip(delays, bases) {
            #expect(delay >= base / 2 && delay <= base, "equal jitter: between half and all of \(base), got \(delay)")
        }

        // A success ends the outage.
        let (_, probe) = machine.leaseWaiting(.write, now: now)!
        let recovered = machine.connectionEstablished(slot: probe.connect[0], now: now)
        #expect(recovered.grants.count == 1)
        #expect(machine.status.isDatabaseAvailable)
    }

    @Test("waiters fail only when the last connection attempt under way has failed")
    func failFastWaitsForOtherAttempts() {
        var machine = Machine(.testing(budget: 4, lanes: [.write: .init()]))
        let (first, opening) = machine.leaseWaiting(.write, now: at(0))!
        let (second, more) = machine.leaseWaiting(.write, now: at(0))!
        #expect(opening.connect.count + more.connect.count == 2)
        let failed = machine.connectionFailed(slot: opening.connect[0], error: ConnectionFailure(), now: at(1))
        #expect(failed.failures.isEmpty, "another attempt may still succeed")
        let succeeded = machine.connectionEstablished(slot: more.connect[0], now: at(2))
        #expect(succeeded.grants.map(\.waiter) == [first])
        #expect(machine.status.isDatabaseAvailable)
        _ = second
    }

    @Test("shutdown fails waiters, closes idle connections, lets leases finish, then finishes")
    func gracefulShutdown() {
        var machine = Machine(.testing(budget: 2, lanes: [.write: .init()]))
        machine.warmUp(2, now: at(0))
        let grant = machine.leaseNow(.write, now: at(0))!
        let other = machine.leaseNow(.write, now: at(0))!
        _ = machine.release(other, disposition: .reuse, now: at(1)).actions
        let shutdown = machine.shutdown(gracePeriod: .seconds(10), now: at(2))
        #expect(shutdown.close.count == 1, "the idle connection closes")
        #expect(shutdown.wakeUp == at(10_002))
        #expect(machine.leaseFailure(.write, now: at(3))?.code == .shutdown)
        _ = machine.connectionClosed(slot: shutdown.close[0], now: at(4))
        let released = machine.release(grant, disposition: .reuse, now: at(5)).actions
        #expect(released.close == [grant.slot], "a returned lease's connection closes")
        let finished = machine.connectionClosed(slot: grant.slot, now: at(6))
        #expect(finished.finished)
    }

    @Test("leases still running when the grace period ends have their connections closed")
    func gracePeriodEnds() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.write, now: at(0))!
        let (waiter, _) = machine.leaseWaiting(.write, now: at(0))!
        let shutdown = machine.shutdown(gracePeriod: .seconds(1), now: at(1))
        #expect(shutdown.failures == [WaiterFailure(waiter: waiter, error: .shutdown(lane: .write))])
        #expect(machine.tick(now: at(500)).close.isEmpty)
        let forced = machine.tick(now: at(1_001))
        #expect(forced.close == [grant.slot])
        #expect(machine.release(grant, disposition: .reuse, now: at(1_002)).actions == Actions(), "the late release is ignored")
        #expect(machine.connectionClosed(slot: grant.slot, now: at(1_003)).finished)
    }

    @Test("a second shutdown with a sooner end shortens the grace period; a later one does not extend it")
    func secondShutdownShortens() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.write, now: at(0))!
        let first = machine.shutdown(gracePeriod: .seconds(30), now: at(1))
        #expect(first.wakeUp == at(30_001))
        #expect(machine.shutdown(gracePeriod: .seconds(60), now: at(2)).close.isEmpty, "a later end changes nothing")
        let sooner = machine.shutdown(gracePeriod: .seconds(5), now: at(3))
        #expect(sooner.wakeUp == at(5_003), "the sooner end is the timer now")
        #expect(machine.tick(now: at(5_003)).close == [grant.slot])
        let now = machine.shutdown(gracePeriod: .zero, now: at(5_004))
        #expect(now.close.isEmpty, "nothing left to close")
        #expect(machine.connectionClosed(slot: grant.slot, now: at(5_005)).finished)

        var immediate = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        immediate.warmUp(1, now: at(0))
        let held = immediate.leaseNow(.write, now: at(0))!
        _ = immediate.shutdown(gracePeriod: .seconds(30), now: at(1))
        #expect(immediate.shutdown(gracePeriod: .zero, now: at(2)).close == [held.slot], "a zero grace period closes running leases at once")
    }

    @Test("a connection that opens during shutdown is closed at once")
    func openingDuringShutdown() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        let (_, actions) = machine.leaseWaiting(.write, now: at(0))!
        _ = machine.shutdown(gracePeriod: .seconds(1), now: at(1))
        let opened = machine.connectionEstablished(slot: actions.connect[0], now: at(2))
        #expect(opened.close == [actions.connect[0]])
        #expect(machine.connectionClosed(slot: actions.connect[0], now: at(3)).finished)
    }
}

@Suite("Configuration")
struct PoolConfigurationTests {
    @Test("every problem is reported at once, with the setting to change")
    func allProblemsAtOnce() {
        var configuration = PoolConfiguration(budget: 4)
        configuration.lanes = [
            .retrieval: .init(reserved: 3, limit: 2, waitTimeout: .zero),
            .write: .init(reserved: 3, maxWaiters: -1),
        ]
        configuration.minimumIdle = 9
        configuration.idleTimeout = .seconds(-1)
        do {
            try configuration.validate()
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.problems.count == 6)
            let text = String(describing: error)
            for fragment in ["lanes[\"retrieval\"].reserved (3) exceeds its limit (2)", "lanes[\"retrieval\"].waitTimeout",
                             "lanes[\"write\"].maxWaiters", "reserve 6 connections but the budget is 4", "minimumIdle", "idleTimeout"] {
                #expect(text.contains(fragment), "missing: \(fragment)")
            }
        }
    }

    @Test("a request that meets more broken connections in a row than the budget fails with databaseUnavailable, counted")
    func tooManyBrokenInARow() {
        var machine = Machine(.testing(budget: 2, lanes: [.write: .patient]))
        machine.warmUp(2, now: at(0))
        for attempt in 1...2 {
            let grant = machine.leaseNow(.write, now: at(attempt))!
            let closed = machine.closeBroken(grant, brokenInARow: attempt, since: at(0), now: at(attempt))
            #expect(closed.failure == nil, "within the budget: lease again")
            #expect(closed.actions.close == [grant.slot])
            _ = machine.connectionClosed(slot: grant.slot, now: at(attempt))
        }
        machine.warmUp(1, now: at(3))
        let third = machine.leaseNow(.write, now: at(3))!
        let closed = machine.closeBroken(third, brokenInARow: 3, since: at(0), now: at(3))
        #expect(closed.failure?.code == .databaseUnavailable)
        #expect(closed.failure?.waited == .milliseconds(3))
        #expect(machine.statisticsInputs.snapshot(now: at(3))[.write]?.outcomes.unavailable == 1)
    }

    @Test("a metricsInterval that is not positive is refused, naming the setting")
    func metricsIntervalIsChecked() {
        for interval in [Duration.zero, .seconds(-1), .seconds(Int64.max)] {
            var configuration = PoolConfiguration(budget: 4)
            configuration.metricsInterval = interval
            #expect(throws: LifeguardError.self) { try configuration.validate() }
            do { try configuration.validate() } catch { #expect(error.problems.contains { $0.hasPrefix("metricsInterval is") }) }
        }
    }

    @Test("the defaults are valid and cap the generation lane")
    func defaults() throws {
        let configuration = PoolConfiguration()
        try configuration.validate()
        #expect(configuration.lanes[.generation]?.limit == 2)
        #expect(configuration.lanes[.retrieval]?.waitTimeout == .milliseconds(500))
    }
}

@Suite("Leak signal: churn is not a leak")
struct LeakSignalChurnTests {
    /// A machine of 4 connections, all leased; then, check by check, one lease cancelled and
    /// its connection reset. `comesBack`: whether each reset has finished by the next check.
    func checks(comesBack: Bool) -> [Incident] {
        var machine = Machine(.testing(budget: 4, lanes: [.write: .init()]))
        machine.warmUp(4, now: at(0))
        var grants = (0..<4).map { _ in machine.leaseNow(.write, now: at(0))! }
        var tracker = IncidentTracker()
        var incidents = tracker.check(machine.statisticsInputs, now: at(0), longestReset: .seconds(2))
        var resetting: [Int] = []
        for step in 1...3 {
            if comesBack {
                for slot in resetting {
                    _ = machine.resetCompleted(slot: slot, succeeded: true, now: at(step * 1_000 - 10))
                    grants.append(machine.leaseNow(.write, now: at(step * 1_000 - 10))!)
                }
                resetting = []
            }
            let grant = grants.removeFirst()
            let actions = machine.release(grant, disposition: .reset, now: at(step * 1_000), cancelled: true).actions
            resetting += actions.reset
            incidents += tracker.check(machine.statisticsInputs, now: at(step * 1_000), longestReset: .seconds(2))
        }
        return incidents.filter { $0.kind == .leakSignal }
    }

    @Test("a steady stream of cancelled leases whose connections come back between checks raises no leak signal, though one is always resetting")
    func churnIsNoLeak() {
        #expect(self.checks(comesBack: true).isEmpty)
    }

    @Test("connections that stay in reset while cancellations come raise the leak signal")
    func stuckResetsAreALeak() {
        #expect(!self.checks(comesBack: false).isEmpty)
    }
}
