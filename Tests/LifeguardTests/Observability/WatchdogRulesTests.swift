import Testing
@testable import Lifeguard

@Suite("Watchdog rules")
struct WatchdogRulesTests {
    static let site = CallSite(fileID: "App/Answer.swift", line: 12, function: "answer()")
    static let step = CallSite(fileID: "App/Answer.swift", line: 10, function: "answer()")

    func lease(at leasedAt: Int) -> PoolStateMachine.RunningLease {
        .init(slot: 0, connectionID: 0, lane: 0, leasedAt: at(leasedAt), callSite: Self.site)
    }

    func rules(longHold: Duration? = .seconds(5), idle: Duration? = .seconds(1), generation: LeaseDuringGeneration = .warn) -> WatchdogRules {
        var configuration = PoolConfiguration()
        configuration.longHoldThreshold = longHold
        configuration.idleInLeaseThreshold = idle
        configuration.leaseDuringGeneration = generation
        return WatchdogRules(configuration)
    }

    @Test("it looks four times per shortest threshold, at most every 250 ms, and not at all with both reports off")
    func interval() {
        #expect(self.rules().interval == .milliseconds(250))
        #expect(self.rules(longHold: .milliseconds(400), idle: nil).interval == .milliseconds(100))
        #expect(self.rules(longHold: nil, idle: nil).interval == nil)
    }

    @Test("a lease held past longHoldThreshold is due a long-hold report, not before")
    func longHold() {
        let rules = self.rules()
        #expect(rules.due(for: self.lease(at: 0), activity: .busy, now: at(5_000)).isEmpty)
        #expect(rules.due(for: self.lease(at: 0), activity: .busy, now: at(5_001)).map(\.0) == [.longHold])
    }

    @Test("idle past idleInLeaseThreshold, counted from the later of its last statement and the lease's start, is a generation hold")
    func generationHold() {
        let rules = self.rules()
        // The connection's last statement was before this lease: idle since the lease began.
        let due = rules.due(for: self.lease(at: 100), activity: .idle(since: at(0)), now: at(1_101))
        #expect(due.map(\.0) == [.generationHold])
        #expect(due.first?.1 == at(100))
        #expect(rules.due(for: self.lease(at: 100), activity: .idle(since: at(500)), now: at(1_101)).isEmpty)
        #expect(rules.due(for: self.lease(at: 100), activity: .busy, now: at(9_000)).map(\.0) == [.longHold], "busy is no generation hold")
        #expect(rules.due(for: self.lease(at: 100), activity: .unknown, now: at(2_000)).isEmpty, "no activity tracked: nothing to say")
    }

    @Test("with a threshold off, its report never comes")
    func thresholdsOff() {
        let rules = self.rules(longHold: nil, idle: nil)
        #expect(rules.due(for: self.lease(at: 0), activity: .idle(since: at(0)), now: at(86_400_000)).isEmpty)
    }

    @Test("a lease inside a generation step: refused naming both call sites under .forbid, reported with both under .warn")
    func leaseDuringGeneration() {
        switch self.rules(generation: .forbid).leaseDuringGeneration(step: Self.step, lane: .write, callSite: Self.site) {
        case .failure(let error):
            #expect(error.code == .leaseDuringGeneration)
            #expect(String(describing: error).contains("App/Answer.swift:12"))
            #expect(String(describing: error).contains("App/Answer.swift:10"))
        case .success:
            Issue.record("expected a refusal")
        }
        switch self.rules().leaseDuringGeneration(step: Self.step, lane: .write, callSite: Self.site) {
        case .success(let finding):
            #expect(finding.kind == .leaseDuringGeneration)
            #expect(finding.callSite == "App/Answer.swift:12")
            #expect(finding.generationStep == "App/Answer.swift:10")
            #expect(finding.lane == "write")
        case .failure(let error):
            Issue.record("expected a report, got \(error)")
        }
    }
}
