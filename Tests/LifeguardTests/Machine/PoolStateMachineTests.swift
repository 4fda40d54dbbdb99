import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("State machine: leases, lanes and queues")
struct PoolStateMachineTests {
    @Test("an idle connection is granted at once and returns to idle without actions")
    func fastPath() {
        var machine = Machine(.testing(budget: 2, lanes: [.retrieval: .init()]))
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.retrieval, now: at(1))
        #expect(grant?.slot == 0)
        #expect(machine.status.leased == 1)
        let actions = machine.release(grant!, disposition: .reuse, now: at(2)).actions
        #expect(actions == Actions())
        #expect(machine.status.idle == 1 && machine.status.leased == 0)
    }

    @Test("a request with no connection waits, a connection is opened and handed to it")
    func opensOnDemand() {
        var machine = Machine(.testing(budget: 2, lanes: [.retrieval: .init()]))
        let (waiter, actions) = machine.leaseWaiting(.retrieval, now: at(0))!
        #expect(actions.connect == [0])
        #expect(actions.wakeUp == at(500))
        let after = machine.connectionEstablished(slot: 0, now: at(3))
        #expect(after.grants.map(\.waiter) == [waiter])
        #expect(after.grants.first?.grant.slot == 0)
    }

    @Test("reservations are guaranteed: other lanes cannot borrow them even when they are idle")
    func reservationGuarantee() {
        var machine = Machine(.testing(budget: 4, lanes: [
            .retrieval: .init(reserved: 2),
            .write: .init(),
        ]))
        machine.warmUp(4, now: at(0))
        // The write lane may use the 2 shared connections, not the retrieval lane's 2.
        #expect(machine.leaseNow(.write, now: at(1)) != nil)
        #expect(machine.leaseNow(.write, now: at(1)) != nil)
        #expect(machine.leaseWaiting(.write, now: at(1)) != nil)
        #expect(machine.status.idle == 2)
        // Retrieval still gets its 2 at once.
        #expect(machine.leaseNow(.retrieval, now: at(2)) != nil)
        #expect(machine.leaseNow(.retrieval, now: at(2)) != nil)
        #expect(machine.status.leased == 4)
    }

    @Test("capacity above the reservations is shared first come, first served")
    func sharedCapacity() {
        var machine = Machine(.testing(budget: 5, lanes: [
            .retrieval: .init(reserved: 1),
            .write: .init(reserved: 1),
        ]))
        machine.warmUp(5, now: at(0))
        // 3 shared connections: retrieval takes its reservation and all 3 shared ones.
        for _ in 0..<4 { #expect(machine.leaseNow(.retrieval, now: at(1)) != nil) }
        #expect(machine.leaseWaiting(.retrieval, now: at(1)) != nil)
        // Write still has its reservation.
        #expect(machine.leaseNow(.write, now: at(1)) != nil)
        #expect(machine.status.lanes[.retrieval]?.leased == 4)
    }

    @Test("a lane never holds more than its limit, even with idle connections")
    func laneLimit() {
        var machine = Machine(.testing(budget: 6, lanes: [.generation: .init(limit: 2), .write: .init()]))
        machine.warmUp(6, now: at(0))
        let first = machine.leaseNow(.generation, now: at(1))!
        #expect(machine.leaseNow(.generation, now: at(1)) != nil)
        let (waiter, actions) = machine.leaseWaiting(.generation, now: at(1))!
        #expect(actions.connect.isEmpty)
        #expect(machine.status.idle == 4)
        let released = machine.release(first, disposition: .reuse, now: at(2)).actions
        #expect(released.grants.map(\.waiter) == [waiter])
    }

    @Test("waiters of one lane are served in arrival order")
    func fifoWithinLane() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        machine.warmUp(1, now: at(0))
        var grant = machine.leaseNow(.write, now: at(0))!
        let waiters = (1...3).map { machine.leaseWaiting(.write, now: at($0))!.0 }
        var served: [WaiterID] = []
        for step in 0..<3 {
            let actions = machine.release(grant, disposition: .reuse, now: at(10 + step)).actions
            served += actions.grants.map(\.waiter)
            grant = actions.grants[0].grant
        }
        #expect(served == waiters)
    }

    @Test("across lanes the oldest admissible waiter is served first")
    func fifoAcrossLanes() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init(), .retrieval: .init()]))
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.write, now: at(0))!
        let older = machine.leaseWaiting(.retrieval, now: at(1))!.0
        _ = machine.leaseWaiting(.write, now: at(2))!
        let actions = machine.release(grant, disposition: .reuse, now: at(3)).actions
        #expect(actions.grants.map(\.waiter) == [older])
    }

    @Test("a lane below its reservation is served before older waiters of other lanes")
    func reservationServedFirst() {
        var machine = Machine(.testing(budget: 2, lanes: [.write: .init(), .retrieval: .init(reserved: 1)]))
        machine.warmUp(2, now: at(0))
        let writeGrant = machine.leaseNow(.write, now: at(0))!
        let retrievalGrant = machine.leaseNow(.retrieval, now: at(0))!
        _ = machine.leaseWaiting(.write, now: at(1))!
        let retrievalWaiter = machine.leaseWaiting(.retrieval, now: at(2))!.0
        // The retrieval lease ends: the retrieval lane is below its reservation again, so its
        // younger waiter wins over the older write waiter.
        let actions = machine.release(retrievalGrant, disposition: .reuse, now: at(3)).actions
        #expect(actions.grants.map(\.waiter) == [retrievalWaiter])
        _ = writeGrant
    }

    @Test("a waiter fails with waitTimeout at its deadline, saying how long it waited and the queue depth")
    func waitTimeout() {
        var machine = Machine(.testing(budget: 1, lanes: [.retrieval: .init(waitTimeout: .milliseconds(100))]))
        machine.warmUp(1, now: at(0))
        _ = machine.leaseNow(.retrieval, now: at(0))!
        let (first, firstActions) = machine.leaseWaiting(.retrieval, now: at(10))!
        let (second, secondActions) = machine.leaseWaiting(.retrieval, now: at(20))!
        #expect(firstActions.wakeUp == at(110))
        #expect(secondActions.wakeUp == nil, "an earlier wake-up is already armed")
        #expect(machine.tick(now: at(109)).failures.isEmpty)
        let actions = machine.tick(now: at(110))
        #expect(actions.failures == [WaiterFailure(waiter: first, error: .waitTimeout(lane: .retrieval, waited: .milliseconds(100), queueDepth: 2))])
        #expect(actions.wakeUp == at(120), "the next deadline is armed")
        #expect(machine.tick(now: at(120)).failures.map(\.waiter) == [second])
        #expect(machine.status.waiters == 0)
    }

    @Test("a full queue rejects at once with overloaded")
    func boundedWaiters() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init(maxWaiters: 2)]))
        machine.warmUp(1, now: at(0))
        _ = machine.leaseNow(.write, now: at(0))
        #expect(machine.leaseWaiting(.write, now: at(1)) != nil)
        #expect(machine.leaseWaiting(.write, now: at(1)) != nil)
        let error = machine.leaseFailure(.write, now: at(1))
        #expect(error?.code == .overloaded)
        #expect(error?.queueDepth == 2)
        #expect(error?.setting == "lanes[\"write\"].maxWaiters")
    }

    @Test("a cancelled waiter leaves the queue at once; a cancellation after the grant changes nothing")
    func cancellation() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.write, now: at(0))!
        let (cancelled, _) = machine.leaseWaiting(.write, now: at(1))!
        let (served, _) = machine.leaseWaiting(.write, now: at(2))!
        #expect(machine.cancelWaiter(cancelled, lane: machine.lane(.write), now: at(0)).cancelled == [cancelled])
        #expect(machine.status.waiters == 1)
        let actions = machine.release(grant, disposition: .reuse, now: at(3)).actions
        #expect(actions.grants.map(\.waiter) == [served])
        #expect(machine.cancelWaiter(served, lane: machine.lane(.write), now: at(0)) == Actions())
    }

    @Test("a lease whose body failed is reset before reuse; a failed reset closes and replaces the connection")
    func resetAfterAbandonedLease() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.write, now: at(0))!
        let (waiter, _) = machine.leaseWaiting(.write, now: at(1))!
        let released = machine.release(grant, disposition: .reset, now: at(2)).actions
        #expect(released.reset == [0])
        #expect(released.grants.isEmpty, "nobody gets a connection that is being reset")
        let failedReset = machine.resetCompleted(slot: 0, succeeded: false, now: at(3))
        #expect(failedReset.close == [0])
        let closed = machine.connectionClosed(slot: 0, now: at(4))
        #expect(closed.connect.count == 1, "a replacement is opened for the waiter")
        let replaced = machine.establish(closed, now: at(5))
        #expect(replaced.grants.map(\.waiter) == [waiter])
    }

    @Test("a broken connection is closed on release and never handed out again")
    func brokenConnectionClosed() {
        var machine = Machine(.testing(budget: 2, lanes: [.write: .init()]))
        machine.warmUp(1, now: at(0))
        let grant = machine.leaseNow(.write, now: at(0))!
        let actions = machine.release(grant, disposition: .close, now: at(1)).actions
        #expect(actions.close == [0])
        #expect(machine.status.idle == 0)
        #expect(machine.leaseWaiting(.write, now: at(2)) != nil)
    }

    @Test("the budget, reservations and limits hold under any sequence of events", arguments: [1, 2, 3, 4, 5])
    func invariantsUnderRandomEvents(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let lanes: [Lane: LaneConfiguration] = [
            .retrieval: .init(reserved: 2, limit: 5, maxWaiters: 8),
            .write: .init(reserved: 1, limit: 3, maxWaiters: 8),
            .generation: .init(limit: 2, maxWaiters: 8),
        ]
        var machine = Machine(.testing(budget: 6, lanes: lanes))
        var grants: [Grant] = []
        var opening: [Int] = []
        var resetting: [Int] = []
        var closing: [Int] = []
        var waiters: [(WaiterID, Int)] = []
        var now = 0
        func absorb(_ actions: Actions) {
            grants += actions.grants.map(\.grant)
            let resolved = Set(actions.grants.map(\.waiter) + actions.failures.map(\.waiter) + actions.cancelled)
            waiters.removeAll { resolved.contains($0.0) }
            opening += actions.connect
            resetting += actions.reset
            closing += actions.close
        }
        for _ in 0..<5_000 {
            now += Int(random.next() % 40)
            let choice = random.next() % 8
            let lane = Int(random.next() % 3)
            switch choice {
            case 0, 1:
                switch machine.lease(lane: lane, now: at(now)) {
                case .granted(let grant): grants.append(grant)
                case .wait(let id, let actions): waiters.append((id, lane)); absorb(actions)
                case .failed: break
                }
            case 2, 3:
                if !grants.isEmpty {
                    let grant = grants.remove(at: Int(random.next() % UInt64(grants.count)))
                    let disposition: ReleaseDisposition = [.reuse, .reuse, .reset, .close][Int(random.next() % 4)]
                    absorb(machine.release(grant, disposition: disposition, now: at(now)).actions)
                }
            case 4:
                if !opening.isEmpty {
                    let slot = opening.removeFirst()
                    if random.next() % 5 == 0 {
                        absorb(machine.connectionFailed(slot: slot, error: ConnectionFailure(), now: at(now)))
                    } else {
                        absorb(machine.connectionEstablished(slot: slot, now: at(now)))
                    }
                }
            case 5:
                if !resetting.isEmpty {
                    absorb(machine.resetCompleted(slot: resetting.removeFirst(), succeeded: random.next() % 3 != 0, now: at(now)))
                }
            case 6:
                if !closing.isEmpty {
                    absorb(machine.connectionClosed(slot: closing.removeFirst(), now: at(now)))
                }
            default:
                if !waiters.isEmpty, random.next() % 2 == 0 {
                    let (id, lane) = waiters[Int(random.next() % UInt64(waiters.count))]
                    absorb(machine.cancelWaiter(id, lane: lane, now: at(now)))
                } else {
                    absorb(machine.tick(now: at(now)))
                }
            }
            let status = machine.status
            #expect(status.connections <= 6)
            #expect(status.leased == grants.count)
            #expect(status.lanes.values.reduce(0) { $0 + $1.leased } == status.leased)
            for (lane, settings) in lanes {
                #expect(status.lanes[lane]!.leased <= settings.limit!)
            }
            // Reservations are never lent out: every lane's unused reservation is still available.
            let committed = status.lanes.values.reduce(0) { $0 + max($1.leased, $1.reserved) }
            #expect(committed <= 6)
            #expect(status.waiters == waiters.count)
        }
    }
}
