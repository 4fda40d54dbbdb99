import Testing
@testable import Lifeguard
import LifeguardTestUtils

/// The admission policy of issue 19: reject early only what would fail slow, and shed to the
/// latency target only when work arrives faster than the lane completes it.
@Suite("State machine: admission that rejects only what would fail slow")
struct AdmissionPolicyTests {
    func isOverloaded(_ machine: Machine) -> Bool {
        machine.lanes[machine.lane(.retrieval)].shedder?.isOverloaded ?? false
    }

    /// `capacity` connections, all leased at 0 ms.
    func fullMachine(capacity: Int, _ lane: LaneConfiguration = .init()) -> (Machine, [Grant]) {
        var machine = Machine(.testing(budget: capacity, lanes: [.retrieval: lane]))
        machine.warmUp(capacity, now: at(0))
        let grants = (0..<capacity).map { _ in machine.leaseNow(.retrieval, now: at(0))! }
        return (machine, grants)
    }

    @Test("a closed loop's standing queue (each caller back once served) never enters overload, however long it stands")
    func closedLoopIsNotOverload() {
        // 4 connections, 12 callers: 8 always wait; each hold is 40 ms, so the oldest waits ~80 ms.
        var (machine, grants) = self.fullMachine(capacity: 4)
        var holders = grants.map { ($0, 0) }
        for _ in 0..<8 {
            let decision = machine.lease(lane: machine.lane(.retrieval), now: at(0))
            guard case .wait = decision else { Issue.record("not queued: \(decision)"); return }
        }
        var rejected = 0
        for time in stride(from: 10, through: 3_000, by: 10) {
            // Every 10 ms one holder of 40 ms releases; its waiter is served, and the caller
            // released comes back at once.
            let (grant, _) = holders.removeFirst()
            let served = machine.release(grant, disposition: .reuse, now: at(time))
            holders.append((served.grants[0].grant, time))
            switch machine.lease(lane: machine.lane(.retrieval), now: at(time)) {
            case .wait: break
            case .granted(let grant): holders.append((grant, time))
            case .failed: rejected += 1
            }
            #expect(!self.isOverloaded(machine), "overloaded at \(time) ms")
        }
        #expect(rejected == 0)
        #expect(machine.statisticsSnapshot(now: at(3_000))[.retrieval]?.outcomes.shed == 0)
    }

    @Test("an open loop that outpaces the lane grows its queue past the wait budget: the lane enters overload and sheds to the target; once arrivals fall, it leaves")
    func growingQueueIsOverload() {
        var (machine, grants) = self.fullMachine(capacity: 2)
        // Two arrivals every 10 ms, one completion every 10 ms: the queue grows by one each 10 ms.
        var holders = grants
        var rejections: [LifeguardError.Code] = []
        func step(at time: Int, arrivals: Int) {
            if !holders.isEmpty {
                let served = machine.release(holders.removeFirst(), disposition: .reuse, now: at(time))
                holders += served.grants.map(\.grant)
            }
            for _ in 0..<arrivals {
                switch machine.lease(lane: machine.lane(.retrieval), now: at(time)) {
                case .granted(let grant): holders.append(grant)
                case .failed(let error): rejections.append(error.code)
                case .wait: break
                }
            }
            let ticked = machine.tick(now: at(time))
            holders += ticked.grants.map(\.grant)
            rejections += ticked.failures.map(\.error.code)
        }
        var enteredAt: Int?
        for time in stride(from: 10, through: 1_500, by: 10) {
            step(at: time, arrivals: 2)
            if enteredAt == nil, self.isOverloaded(machine) { enteredAt = time }
        }
        // Expected waits grow by 10 ms every 10 ms: past the 500 ms budget after about 500 ms.
        #expect(enteredAt != nil)
        #expect((enteredAt ?? 10_000) <= 900, "entered at \(String(describing: enteredAt))")
        #expect(rejections.contains(.shed))
        // Arrivals fall to one every 50 ms, a quarter of what the lane completes: the queue
        // drains and the lane leaves overload.
        for time in stride(from: 1_510, through: 3_000, by: 10) {
            step(at: time, arrivals: time % 50 == 0 ? 1 : 0)
        }
        // The queue has been empty for more than an interval: the next request that must
        // queue finds the lane out of overload, with its whole waitTimeout.
        while holders.count < 2 { holders.append(machine.leaseNow(.retrieval, now: at(3_001))!) }
        let (waiter, _) = machine.leaseWaiting(.retrieval, now: at(3_001))!
        #expect(!self.isOverloaded(machine))
        #expect(machine.lanes[machine.lane(.retrieval)].waiters.first { $0.id == waiter }?.deadline == at(3_501))
    }

    @Test("with engagement .standingQueue, a standing queue alone enters overload (the strict latency target)")
    func standingQueueEngagement() {
        var (machine, grants) = self.fullMachine(capacity: 4, .init(shedding: Shedding(engagement: .standingQueue)))
        var holders = grants
        for _ in 0..<8 { _ = machine.leaseWaiting(.retrieval, now: at(0))! }
        for time in stride(from: 10, through: 300, by: 10) {
            let served = machine.release(holders.removeFirst(), disposition: .reuse, now: at(time))
            holders += served.grants.map(\.grant)
            _ = machine.lease(lane: machine.lane(.retrieval), now: at(time))
        }
        #expect(self.isOverloaded(machine))
    }

    @Test("a request whose wait to expect exceeds the lane's waitTimeout is rejected at once with waitTimeout, saying what it would have waited")
    func rejectedAtOnceBeyondTheWaitBudget() {
        var (machine, grants) = self.fullMachine(capacity: 1, .init(waitTimeout: .milliseconds(500), shedding: nil))
        // Holds of 200 ms lately.
        let again = machine.release(grants[0], disposition: .reuse, now: at(200))
        #expect(again.grants.isEmpty)
        _ = machine.leaseNow(.retrieval, now: at(200))!
        // The requests ahead and this one, times 200 ms: 200 and 400 ms, within 500 ms: they wait.
        _ = machine.leaseWaiting(.retrieval, now: at(201))!
        _ = machine.leaseWaiting(.retrieval, now: at(202))!
        // Two ahead: 3 × 200 = 600 ms: it would time out after waiting it all; rejected now.
        let error = machine.leaseFailure(.retrieval, now: at(203))
        #expect(error?.code == .waitTimeout)
        #expect(error?.waited == .zero)
        #expect(error?.expectedWait == .milliseconds(600))
        #expect(error.map { String(describing: $0).contains("at once") } == true)
        #expect(machine.statisticsSnapshot(now: at(203))[.retrieval]?.outcomes.timeout == 1)
    }
}

extension PoolStateMachine.LeaseDecision {
    var grant: Grant? {
        if case .granted(let grant) = self { return grant }
        return nil
    }
}
