import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("A lease's end decided without actions agrees with the general path")
struct ReleaseFastPathTests {
    /// Lanes with reservations, a limit and a shared remainder, so that which waiter is served
    /// next depends on more than arrival order.
    static let configuration = PoolConfiguration.testing(budget: 6, lanes: [
        .retrieval: .init(reserved: 2, limit: 4, waitTimeout: .seconds(60), maxWaiters: 1_000, shedding: nil),
        .write: .init(reserved: 1, waitTimeout: .seconds(60), maxWaiters: 1_000, shedding: nil),
        .generation: .init(limit: 2, waitTimeout: .seconds(60), maxWaiters: 1_000, shedding: nil),
    ])

    /// Releases as the shell does, through the one entry point (which decides the common ends
    /// without building actions); returns the waiters granted, in order.
    static func releaseAsTheShellDoes(_ machine: inout Machine, _ grant: Grant, now: PoolInstant) -> [WaiterGrant] {
        machine.release(grant, disposition: .reuse, now: now).actions.grants
    }

    @Test("a random run of leases and releases over three lanes: the same grants, status and statistics", arguments: [1, 2, 3] as [UInt64])
    func sameDecisions(seed: UInt64) {
        var general = Machine(Self.configuration)
        var shell = Machine(Self.configuration)
        general.warmUp(6, now: at(0))
        shell.warmUp(6, now: at(0))
        var random = SplitMix64(seed: seed)
        let lanes: [Lane] = [.retrieval, .write, .generation]
        var held: [Grant] = []
        var handedOff = 0
        for step in 1...2_000 {
            let now = at(step)
            if held.isEmpty || random.next() % 2 == 0 {
                let lane = lanes[Int(random.next() % 3)]
                let index = general.lane(lane)
                let expected = general.lease(lane: index, now: now)
                let actual = shell.lease(lane: index, now: now)
                switch (expected, actual) {
                case (.granted(let a), .granted(let b)):
                    #expect(a == b)
                    held.append(a)
                case (.wait(let a, let actionsA), .wait(let b, let actionsB)):
                    #expect(a == b && actionsA == actionsB)
                default:
                    Issue.record("step \(step): \(expected) against \(actual)")
                    return
                }
            } else {
                let grant = held.remove(at: Int(random.next() % UInt64(held.count)))
                let expected = general.releaseInFull(grant, disposition: .reuse, now: now).grants
                let actual = Self.releaseAsTheShellDoes(&shell, grant, now: now)
                #expect(expected == actual, "step \(step)")
                handedOff += actual.count
                held += actual.map(\.grant)
            }
            #expect(general.status == shell.status, "step \(step)")
        }
        #expect(handedOff > 100)
        #expect(general.statisticsSnapshot(now: at(2_001)) == shell.statisticsSnapshot(now: at(2_001)))
    }

    @Test("a hand-off marks the connection active now: a waiter never gets it flagged for validation")
    func handOffRefreshesActivity() {
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.retrieval: .init(waitTimeout: .seconds(60), shedding: nil)])
        configuration.validationThreshold = .seconds(1)
        var machine = Machine(configuration)
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.retrieval, now: at(0))!
        let (waiter, _) = machine.leaseWaiting(.retrieval, now: at(10))!
        // Held for 5 s, longer than the validation threshold, but in use all along.
        guard case .handedOff(let handed) = machine.release(grant, disposition: .reuse, now: at(5_000)) else {
            Issue.record("expected a hand-off")
            return
        }
        #expect(handed.waiter == waiter)
        #expect(!handed.grant.needsValidation)
    }

    @Test("the hand-off declines while connections are still to open, and when the connection expired")
    func handOffDeclines() {
        var machine = Machine(.testing(budget: 3, lanes: [.retrieval: .init(waitTimeout: .seconds(60), shedding: nil)]))
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.retrieval, now: at(0))!
        _ = machine.leaseWaiting(.retrieval, now: at(1))!
        // Two of three connections are opening: the general path decides what else to open.
        guard case .settled = machine.release(grant, disposition: .reuse, now: at(2)) else {
            Issue.record("expected the general path")
            return
        }

        var expiring = PoolConfiguration.testing(budget: 1, lanes: [.retrieval: .init(waitTimeout: .seconds(60), shedding: nil)])
        expiring.maxLifetime = .seconds(1)
        expiring.maxLifetimeJitter = 0
        var old = Machine(expiring)
        old.warmUp(1, now: at(0))
        let lease = old.leaseNow(.retrieval, now: at(0))!
        _ = old.leaseWaiting(.retrieval, now: at(1))!
        guard case .settled(let actions) = old.release(lease, disposition: .reuse, now: at(2_000)) else {
            Issue.record("expected the general path")
            return
        }
        #expect(actions.close == [lease.slot])
    }
}
