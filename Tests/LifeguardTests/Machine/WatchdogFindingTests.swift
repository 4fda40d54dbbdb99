import Testing
@testable import Lifeguard

@Suite("State machine: the watchdog's findings, once per lease")
struct WatchdogFindingTests {
    static let site = CallSite(fileID: "App/Answer.swift", line: 42, function: "answer(_:)")

    @Test("a running lease is listed with its call site and reported once per kind; a new lease of the same connection is reported again")
    func reportedOncePerLease() throws {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        machine.warmUp(1, now: at(0))
        guard case .granted(let grant) = machine.lease(lane: machine.lane(.write), now: at(0), callSite: Self.site) else {
            Issue.record("expected a grant")
            return
        }
        let lease = try #require(machine.runningLeases.first)
        #expect(machine.runningLeases.count == 1)
        #expect(lease.callSite?.location == Self.site.location && lease.leasedAt == at(0))

        let reported = machine.report(.longHold, of: lease, idleSince: nil, now: at(2_500))
        let finding = try #require(reported)
        #expect(finding.callSite == "App/Answer.swift:42" && finding.function == "answer(_:)")
        #expect(finding.lane == "write" && finding.heldSeconds == 2.5 && finding.idleSeconds == nil)
        let again = machine.report(.longHold, of: lease, idleSince: nil, now: at(5_000))
        #expect(again == nil, "once per lease and kind")
        let otherKind = machine.report(.generationHold, of: lease, idleSince: at(1_000), now: at(5_000))
        let idle = try #require(otherKind)
        #expect(idle.idleSeconds == 4, "another kind is reported")

        _ = machine.release(grant, disposition: .reuse, now: at(6_000))
        #expect(machine.runningLeases.isEmpty)
        let ended = machine.report(.longHold, of: lease, idleSince: nil, now: at(6_000))
        #expect(ended == nil, "a lease that ended is not reported")
        let regranted = machine.leaseNow(.write, now: at(7_000))
        #expect(regranted != nil)
        let next = try #require(machine.runningLeases.first)
        let renewed = machine.report(.longHold, of: next, idleSince: nil, now: at(9_000))
        #expect(renewed != nil, "the next lease is new")

        let statistics = machine.statisticsSnapshot(now: at(9_000))
        #expect(statistics[.write]?.longHolds == 2 && statistics[.write]?.generationHolds == 1)
        #expect(statistics.findings.count == 3)
        #expect(statistics.findings.last?.callSite == "unknown", "a lease with no call site is reported as unknown")
    }

    @Test("a lease asked for during a generation step is recorded once per call site, on its lane")
    func leaseDuringGenerationOncePerSite() {
        var machine = Machine(.testing(budget: 1, lanes: [.write: .init()]))
        let finding = WatchdogFinding(
            kind: .leaseDuringGeneration, lane: "write", callSite: Self.site, heldNanoseconds: 0, idleNanoseconds: nil,
            generationStep: "App/Generate.swift:10")
        let first = machine.recordLeaseDuringGeneration(finding, lane: .write)
        let second = machine.recordLeaseDuringGeneration(finding, lane: .write)
        let unknownLane = machine.recordLeaseDuringGeneration(finding, lane: .retrieval)
        #expect(first && !second && !unknownLane)
        #expect(machine.statisticsSnapshot(now: at(1)).findings.map(\.generationStep) == ["App/Generate.swift:10"])
    }
}
