import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("State machine: shedding, deadlines and fan-out fairness")
struct OverloadTests {
    let retrieval = Lane.retrieval

    /// One connection, leased at 0 ms, so that every later request queues.
    func busyMachine(budget: Int = 1, _ lane: LaneConfiguration = .init()) -> (Machine, [Grant]) {
        var machine = Machine(.testing(budget: budget, lanes: [.retrieval: lane]))
        machine.warmUp(budget, now: at(0))
        let grants = (0..<budget).map { _ in machine.leaseNow(.retrieval, now: at(0))! }
        return (machine, grants)
    }

    func isOverloaded(_ machine: Machine) -> Bool {
        machine.lanes[machine.lane(.retrieval)].shedder?.isOverloaded ?? false
    }

    func deadline(of waiter: WaiterID, in machine: Machine) -> PoolInstant? {
        machine.lanes[machine.lane(.retrieval)].waiters.first { $0.id == waiter }?.deadline
    }

    @Test("strict engagement: a queue standing above the target for an interval enters overload; new waiters are shed at the target; an interval of empty queue leaves it")
    func entersOverloadAndSheds() {
        var (machine, grants) = self.busyMachine(.init(shedding: Shedding(engagement: .standingQueue)))
        let (first, _) = machine.leaseWaiting(.retrieval, now: at(0))!
        // 60 ms: the head has waited above the 50 ms target, for less than the 100 ms interval.
        let (second, _) = machine.leaseWaiting(.retrieval, now: at(60))!
        #expect(self.isOverloaded(machine) == false)
        #expect(self.deadline(of: second, in: machine) == at(560))
        // 170 ms: above the target since 60 ms, for 110 ms: overloaded. The new waiter may wait
        // only the target; those queued before keep their waitTimeout.
        let (third, actions) = machine.leaseWaiting(.retrieval, now: at(170))!
        #expect(self.isOverloaded(machine) == true)
        #expect(machine.status.lanes[.retrieval]?.isOverloaded == true)
        #expect(String(describing: machine.status).contains("overloaded"))
        #expect(self.deadline(of: third, in: machine) == at(220))
        #expect(actions.wakeUp == at(220))
        #expect(self.deadline(of: first, in: machine) == at(500))

        let shed = machine.tick(now: at(220))
        #expect(shed.failures.map(\.waiter) == [third])
        let error = shed.failures[0].error
        #expect(error.code == .shed)
        #expect(error.waited == .milliseconds(50))
        #expect(error.queueDepth == 3)
        #expect(error.setting == "lanes[\"retrieval\"].shedding")
        #expect(String(describing: error).contains("overloaded"))
        #expect(machine.statisticsSnapshot(now: at(220))[.retrieval]?.outcomes.shed == 1)

        // Those queued before the overload keep their waitTimeout, and are served in order.
        let served = machine.release(grants[0], disposition: .reuse, now: at(230)).actions
        #expect(served.grants.map(\.waiter) == [first])
        let last = machine.release(served.grants[0].grant, disposition: .reuse, now: at(240)).actions
        #expect(last.grants.map(\.waiter) == [second])
        // The queue is empty, but the lane stays overloaded until it has stayed empty for an
        // interval: at 250 ms, a request that would wait behind a connection held ~200 ms lately
        // is shed at once.
        let overloadedAfterDrain = self.isOverloaded(machine)
        #expect(overloadedAfterDrain)
        #expect(machine.leaseFailure(.retrieval, now: at(250))?.code == .shed)
        _ = machine.release(last.grants[0].grant, disposition: .reuse, now: at(255)).actions
        // Empty from 240 ms to 345 ms: the lane has left overload; a request may wait its whole
        // waitTimeout again.
        _ = machine.leaseNow(.retrieval, now: at(345))!
        let (fresh, _) = machine.leaseWaiting(.retrieval, now: at(345))!
        let overloadedLater = self.isOverloaded(machine)
        #expect(!overloadedLater)
        #expect(self.deadline(of: fresh, in: machine) == at(845))
    }

    @Test("a burst whose queue drains within the interval is not overload, however long its waits")
    func burstIsNotOverload() {
        var (machine, grants) = self.busyMachine()
        for _ in 0..<3 { _ = machine.leaseWaiting(.retrieval, now: at(0))! }
        var grant = grants[0]
        for time in [60, 80, 95] {
            let actions = machine.release(grant, disposition: .reuse, now: at(time)).actions
            grant = actions.grants[0].grant
        }
        #expect(self.isOverloaded(machine) == false)
        // A queue that forms again starts a new streak: 60 ms later it is still not overload.
        let (_, _) = machine.leaseWaiting(.retrieval, now: at(100))!
        let (late, _) = machine.leaseWaiting(.retrieval, now: at(160))!
        #expect(self.isOverloaded(machine) == false)
        #expect(self.deadline(of: late, in: machine) == at(660))
    }

    @Test("no shedding when it is off: waiters keep their waitTimeout however long the queue stands")
    func sheddingOff() {
        var (machine, _) = self.busyMachine(.init(shedding: nil))
        for time in stride(from: 0, through: 400, by: 50) { _ = machine.leaseWaiting(.retrieval, now: at(time))! }
        let (late, _) = machine.leaseWaiting(.retrieval, now: at(450))!
        #expect(self.deadline(of: late, in: machine) == at(950))
    }

    @Test("while overloaded and serving newest first, the newest waiter is served first")
    func adaptiveLIFO() {
        var (machine, grants) = self.busyMachine(.init(shedding: Shedding(servesNewestFirst: true, engagement: .standingQueue)))
        _ = machine.leaseWaiting(.retrieval, now: at(0))!
        _ = machine.leaseWaiting(.retrieval, now: at(60))!
        let (newest, _) = machine.leaseWaiting(.retrieval, now: at(170))!
        #expect(self.isOverloaded(machine) == true)
        let actions = machine.release(grants[0], disposition: .reuse, now: at(180)).actions
        #expect(actions.grants.map(\.waiter) == [newest])
    }

    @Test("a deadline that the expected wait exceeds is rejected at once; one reached while waiting fails with deadlineExceeded")
    func deadlines() {
        var machine = Machine(.testing(budget: 2, lanes: [.retrieval: .init()]))
        machine.warmUp(2, now: at(0))
        // One 100 ms hold sets the lane's recent hold time.
        let warm = machine.leaseNow(.retrieval, now: at(0))!
        _ = machine.release(warm, disposition: .reuse, now: at(100)).actions
        let lane = machine.lane(.retrieval)
        _ = machine.leaseNow(.retrieval, now: at(1_000))!
        _ = machine.leaseNow(.retrieval, now: at(1_000))!
        for _ in 0..<3 { _ = machine.leaseWaiting(.retrieval, now: at(1_000))! }

        // 3 ahead + itself, × 100 ms, over 2 connections: 200 ms to expect; 100 ms left.
        let rejected = machine.lease(lane: lane, now: at(1_000), deadline: at(1_100))
        guard case .failed(let error) = rejected else {
            Issue.record("expected a rejection, got \(rejected)")
            return
        }
        #expect(error.code == .deadlineExceeded)
        #expect(error.expectedWait == .milliseconds(200))
        #expect(error.remaining == .milliseconds(100))
        #expect(error.queueDepth == 3)
        #expect(String(describing: error).contains("200.0 ms"))

        // A deadline already passed is rejected at once too.
        guard case .failed(let passed) = machine.lease(lane: lane, now: at(1_000), deadline: at(999)) else {
            Issue.record("expected a rejection")
            return
        }
        #expect(passed.code == .deadlineExceeded)

        // 300 ms left: admitted, and its wait ends at the deadline rather than at waitTimeout.
        guard case .wait(let admitted, let actions) = machine.lease(lane: lane, now: at(1_000), deadline: at(1_300)) else {
            Issue.record("expected to wait")
            return
        }
        #expect(actions.wakeUp == at(1_300))
        let expired = machine.tick(now: at(1_300))
        #expect(expired.failures.map(\.waiter) == [admitted])
        #expect(expired.failures[0].error.code == .deadlineExceeded)
        #expect(expired.failures[0].error.waited == .milliseconds(300))

        let outcomes = machine.statisticsSnapshot(now: at(1_300))[.retrieval]!.outcomes
        #expect(outcomes.deadlineExceeded == 3)
        #expect(outcomes.timeout == 0)
    }

    /// Queues fan-outs of `sizes` leases (named A, B, …) and then one lease with no group (the
    /// next letter), in a lane of `budget` busy connections, and returns the order the lane
    /// serves them in.
    func fanOutOrder(budget: Int, sizes: [Int]) -> (order: String, machine: Machine) {
        var (machine, grants) = self.busyMachine(budget: budget)
        let lane = machine.lane(.retrieval)
        var nameOf: [WaiterID: Character] = [:]
        let names = Array("ABCDEFGH")
        for (index, size) in sizes.enumerated() {
            for _ in 0..<size {
                guard case .wait(let id, _) = machine.lease(lane: lane, now: at(1 + index)) else { return ("", machine) }
                nameOf[id] = names[index]
            }
        }
        guard case .wait(let single, _) = machine.lease(lane: lane, now: at(1 + sizes.count)) else { return ("", machine) }
        nameOf[single] = names[sizes.count]

        var order = ""
        var running = grants
        var time = 10
        while !running.isEmpty {
            let grant = running.removeFirst()
            let actions = machine.release(grant, disposition: .reuse, now: at(time)).actions
            for granted in actions.grants {
                order.append(nameOf[granted.waiter]!)
                running.append(granted.grant)
            }
            time += 1
        }
        return (order, machine)
    }

    @Test("fan-outs wider than their lane are served in the order they came, each whole before the next: taking turns deferred a request's last leases behind everyone")
    func fanOutsWiderThanTheLaneAreFirstComeFirstServed() {
        let (order, machine) = self.fanOutOrder(budget: 2, sizes: [15, 15])
        #expect(order == String(repeating: "A", count: 15) + String(repeating: "B", count: 15) + "C")
        #expect(machine.status.waiters == 0)
    }

    @Test("fan-outs that each fit the lane are served in the order they came, as a FIFO pool serves them: taking turns would finish both later")
    func fanOutsThatFitAreFirstComeFirstServed() {
        let (order, machine) = self.fanOutOrder(budget: 8, sizes: [8, 8])
        #expect(order == "AAAAAAAABBBBBBBBC")
        #expect(machine.status.waiters == 0)
    }

    @Test("an overloaded lane sheds at once what it cannot expect to serve within half its target; a fan-out is admitted or shed whole")
    func shedsAtOnceWhenTheWaitToExpectExceedsTheTarget() {
        // The strict engagement: this queue stands without growing by the lane's capacity.
        var machine = Machine(.testing(budget: 2, lanes: [.retrieval: .init(shedding: Shedding(engagement: .standingQueue))]))
        machine.warmUp(2, now: at(0))
        let lane = machine.lane(.retrieval)
        // Holds of 10 ms: each request ahead adds 5 ms to the wait on 2 connections.
        let warm = machine.leaseNow(.retrieval, now: at(0))!
        _ = machine.release(warm, disposition: .reuse, now: at(10)).actions
        _ = machine.leaseNow(.retrieval, now: at(100))!
        _ = machine.leaseNow(.retrieval, now: at(100))!
        _ = machine.leaseWaiting(.retrieval, now: at(100))!
        _ = machine.leaseWaiting(.retrieval, now: at(160))!
        _ = machine.leaseWaiting(.retrieval, now: at(260))!
        #expect(self.isOverloaded(machine) == true)

        // 3 queued + a fan-out of 2 = 5 × 5 ms = 25 ms: within half the 50 ms target, admitted.
        #expect(machine.admitFanOut(lane: lane, leases: 2, deadline: nil, now: at(261)) == nil)
        // 3 queued + 3 = 30 ms: shed whole, at once, counted per lease.
        let rejection = machine.admitFanOut(lane: lane, leases: 3, deadline: nil, now: at(261))
        #expect(rejection?.code == .shed)
        #expect(rejection?.expectedWait == .milliseconds(30))
        #expect(String(describing: rejection!).contains("at once"))
        // A single lease behind 5 queued would wait 30 ms too: shed at once.
        for _ in 0..<2 { _ = machine.leaseWaiting(.retrieval, now: at(262))! }
        let single = machine.leaseFailure(.retrieval, now: at(262))
        #expect(single?.code == .shed && single?.waited == .zero)
        #expect(machine.statisticsSnapshot(now: at(262))[.retrieval]?.outcomes.shed == 4)

        // Not overloaded: a fan-out is only held to its caller's deadline.
        var calm = Machine(.testing(budget: 2, lanes: [.retrieval: .init()]))
        calm.warmUp(2, now: at(0))
        #expect(calm.admitFanOut(lane: lane, leases: 8, deadline: nil, now: at(1)) == nil)
        // Idle connections serve 2 of 8 at once; with no hold time seen yet, nothing to expect.
        #expect(calm.admitFanOut(lane: lane, leases: 8, deadline: at(2), now: at(1)) == nil)
    }
}
