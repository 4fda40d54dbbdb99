import Testing
@testable import Lifeguard

@Suite("Sizing advice")
struct SizingAdviceTests {
    func distribution(p50: Double, p99: Double, mean: Double) -> PoolStatistics.Distribution {
        .init(count: 1_000, p50: p50, p99: p99, p999: p99, max: p99, mean: mean)
    }

    func lane(_ name: String, arrivals: Double, holdMean: Double, holdP99: Double, waitP99: Double, p99InUse: Int, peak: Int, generationHolds: UInt64 = 0) -> PoolStatistics.LaneStatistics {
        .init(
            lane: name, wait: self.distribution(p50: 0, p99: waitP99, mean: waitP99 / 10),
            hold: self.distribution(p50: holdMean, p99: holdP99, mean: holdMean),
            outcomes: .init(granted: 1_000), arrivalsPerSecond: arrivals,
            inUse: .init(now: 0, p50: 1, p99: p99InUse, max: peak), cancelledLeases: 0, longHolds: 0, generationHolds: generationHolds)
    }

    var statistics: PoolStatistics {
        PoolStatistics(
            windowSeconds: 60, budget: 20, capacity: 20,
            lanes: [
                self.lane("generation", arrivals: 1, holdMean: 3_000, holdP99: 15_000, waitP99: 0, p99InUse: 2, peak: 2, generationHolds: 3),
                self.lane("retrieval", arrivals: 42, holdMean: 18, holdP99: 40, waitP99: 120, p99InUse: 11, peak: 14),
            ],
            wait: self.distribution(p50: 0, p99: 100, mean: 10), hold: self.distribution(p50: 18, p99: 40, mean: 18),
            outcomes: .init(granted: 2_000), inUse: .init(now: 0, p50: 2, p99: 12, max: 15),
            utilizationP50: 0.1, utilizationP99: 0.6, connections: .init(),
            findings: [.init(kind: .generationHold, lane: "generation", callSite: "App/Chat.swift:42", function: "answer()", heldSeconds: 3, idleSeconds: 2.5)],
            incidents: [])
    }

    @Test("Little's law per lane, sized for the p99 in-use, with the arithmetic in words")
    func littlesLaw() {
        let advice = SizingAdvice(statistics: self.statistics)
        let retrieval = advice.lanes.first { $0.lane == "retrieval" }!
        #expect(abs(retrieval.averageInUse - 0.756) < 0.001)
        #expect(retrieval.reserved == 12)
        #expect(retrieval.limit == 18, "peak 14 plus a quarter")
        // Not 4 × the hold p99 (160 ms): a wait budget shorter than the default rejects what a
        // plain pool serves within the 500 ms a caller can wait (issue 19's review).
        #expect(retrieval.waitTimeoutMilliseconds == 500, "the default, at least")
        #expect(advice.lanes.first { $0.lane == "generation" }?.waitTimeoutMilliseconds == 1_000, "4 × a long hold p99, at most 1 s")
        #expect(retrieval.reasoning == "retrieval: 42.0 arrivals/s × 18.0 ms hold = 0.76 in use on average, p99 in-use 11, peak 14: reserve 12, limit 18, waitTimeout 500 ms")
        #expect(advice.budget == 15, "reservations 12 + 3")
    }

    @Test("generation holds are the first thing to fix, then incidents")
    func warningsInOrder() {
        let advice = SizingAdvice(statistics: self.statistics)
        #expect(advice.warnings.count == 2)
        #expect(advice.warnings[0].contains("3 generation holds"))
        #expect(advice.warnings[0].contains("App/Chat.swift:42"))
        #expect(advice.warnings[0].contains("no pool size fixes them"))
        #expect(advice.warnings[1].contains("INCIDENT: wait p99 120 ms"))
        let report = self.statistics.report
        #expect(report.contains("retrieval: wait p50/p99/p99.9 0.0/120/120 ms"))
        #expect(report.contains("Advice:"))
    }

    @Test("the reasoning names the peak observed, not the reservation when that is larger, and an incident claims only what the statistics know: this lane's p99 in-use and the pool's")
    func reasoningSaysWhatWasObserved() {
        var statistics = self.statistics
        // p99 and peak both 4: the reservation (p99 + 1) is 5, the peak observed still 4.
        statistics.lanes[1] = self.lane("retrieval", arrivals: 42, holdMean: 18, holdP99: 40, waitP99: 120, p99InUse: 4, peak: 4)
        let advice = SizingAdvice(statistics: statistics)
        let retrieval = advice.lanes.first { $0.lane == "retrieval" }!
        #expect(retrieval.reserved == 5)
        #expect(retrieval.reasoning.contains("peak 4: reserve 5"), "\(retrieval.reasoning)")
        let incident = advice.warnings.first { $0.contains("INCIDENT") } ?? ""
        #expect(!incident.contains("of its limit"), "\(incident)")
        #expect(incident.contains("p99 in-use 4 in this lane, 12 of the budget of 20 overall"), "\(incident)")
    }
}
