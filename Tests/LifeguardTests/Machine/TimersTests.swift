import Testing
@testable import Lifeguard

@Suite("State machine: timers with ids")
struct TimersTests {
    @Test("a sooner wake-up cancels the later one it supersedes; a superseded timer that fires anyway leaves the armed one")
    func timersHaveIDs() {
        var machine = Machine(.testing(budget: 1, lanes: [.retrieval: .init(waitTimeout: .milliseconds(100))]))
        machine.warmUp(1, now: at(0))
        _ = machine.leaseNow(.retrieval, now: at(0))!
        let (_, patient) = machine.leaseWaiting(.retrieval, now: at(10))!
        let later = patient.timer!
        #expect(later.instant == at(110))
        guard case .wait(_, let hurried) = machine.lease(
            lane: machine.lane(.retrieval), now: at(20), callSite: nil, deadline: at(50), id: WaiterID(value: 99))
        else {
            Issue.record("expected a wait")
            return
        }
        #expect(hurried.timer?.instant == at(50))
        #expect(hurried.cancelledTimer == later.id, "the later timer is cancelled")
        // The cancelled timer fired anyway (a race in the shell): the armed one stays armed.
        _ = machine.tick(timer: later.id, now: at(30))
        #expect(machine.armedWakeUp?.id == hurried.timer?.id)
        let fired = machine.tick(timer: hurried.timer!.id, now: at(50))
        #expect(fired.failures.count == 1)
        #expect(fired.wakeUp == at(110), "the patient waiter's deadline is armed again")
        #expect(fired.timer?.id != later.id, "under a new id")
    }

    @Test("a housekeeping tick past the statistics window rotates it: the snapshot covers the window before and the current one")
    func statisticsWindowRotates() {
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init()])
        configuration.statisticsWindow = .seconds(10)
        var machine = Machine(configuration)
        machine.warmUp(1, now: at(0))
        let first = machine.leaseNow(.write, now: at(1_000))!
        _ = machine.release(first, disposition: .reuse, now: at(1_100))
        _ = machine.tick(now: at(10_000))
        let second = machine.leaseNow(.write, now: at(11_000))!
        _ = machine.release(second, disposition: .reuse, now: at(11_100))
        #expect(machine.statisticsSnapshot(now: at(12_000))[.write]?.hold.count == 2, "both windows")
        _ = machine.tick(now: at(20_000))
        #expect(machine.statisticsSnapshot(now: at(21_000))[.write]?.hold.count == 1, "the oldest window is gone")
    }
}
