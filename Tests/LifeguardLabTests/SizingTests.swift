@testable import LifeguardLab
import Testing

@Suite("Sizing by Little's law")
struct SizingTests {
    @Test("L = λW per component, sized for the burst as L + 3√L, with the arithmetic in words")
    func arithmetic() {
        let sizing = Sizing(Sizing.Workload(
            requestsPerSecond: 40, fanOut: 8, readSeconds: 0.015, writesPerRequest: 2, writeSeconds: 0.001,
            agentWritesPerSecond: 100, generationSeconds: 3))
        // Retrieval: 40 × 8 × 0.015 = 4.8; 4.8 + 3 × 2.19 = 11.4 → 12.
        #expect(abs(sizing.retrieval.average - 4.8) < 1e-9)
        #expect(sizing.retrieval.peak == 12)
        // Writes: (40 × 2 + 100) × 0.001 = 0.18; 0.18 + 3 × 0.42 = 1.45 → 2.
        #expect(abs(sizing.write.average - 0.18) < 1e-9)
        #expect(sizing.write.peak == 2)
        // Holding across the model call: 40 × 3 = 120; 120 + 3 × 10.95 = 152.9 → 153.
        #expect(sizing.generationHold.peak == 153)
        #expect(sizing.budget == 14)
        #expect(sizing.budgetHoldingAcrossGeneration == 167)
        #expect(sizing.retrieval.reasoning == "retrieval: 40.0 requests/s × 8 × 15.0 ms = 4.8 busy on average; for the burst, 4.8 + 3 × √4.8 → 12")
        #expect(sizing.swiftSnippet.contains("configuration.budget = 14"))  // cancellation takes no connection of the budget
    }

    @Test("a distribution's mean: lognormal given by median and p99")
    func means() {
        #expect(Distribution.constant(0.5).mean == 0.5)
        #expect(Distribution.uniform(0.2, 0.8).mean == 0.5)
        let lognormal = Distribution.lognormal(median: 3, p99: 15).mean
        #expect(lognormal > 3.8 && lognormal < 3.9)  // 3 × e^(σ²/2), σ = ln 5 / 2.326
    }
}
