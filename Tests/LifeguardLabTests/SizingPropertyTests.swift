@testable import Lifeguard
@testable import LifeguardLab
import Testing

extension SizingTests {
    @Test("the budget is the burst sizes of retrieval and writes, grows with the load, and holding across the model call always needs more",
          arguments: [0.1, 1, 10, 40, 250, 2_000] as [Double])
    func budgetFollowsTheLoad(rate: Double) {
        let workload = Sizing.Workload(requestsPerSecond: rate)
        let sizing = Sizing(workload)
        #expect(sizing.budget == max(1, sizing.retrieval.peak + sizing.write.peak))
        #expect(sizing.budgetHoldingAcrossGeneration == sizing.budget + sizing.generationHold.peak)
        #expect(sizing.generationHold.peak > 0)
        // Each burst size covers the average and three standard deviations of a Poisson count.
        for component in [sizing.retrieval, sizing.write, sizing.generationHold] {
            #expect(Double(component.peak) >= component.average + 3 * component.average.squareRoot() - 1e-9)
            #expect(Double(component.peak) < component.average + 3 * component.average.squareRoot() + 1)
        }
        let twice = Sizing(Sizing.Workload(requestsPerSecond: rate * 2))
        #expect(twice.budget >= sizing.budget)
        #expect(twice.retrieval.average == 2 * sizing.retrieval.average)
    }

    @Test("sizing with no load still gives a pool of one connection, and the text says so")
    func noLoad() {
        let sizing = Sizing(Sizing.Workload(requestsPerSecond: 0, agentWritesPerSecond: 0))
        #expect(sizing.budget == 1)
        #expect(sizing.text.contains("budget (three short windows): 1"))
    }
}

@Suite("Report figures")
struct FiguresTests {
    @Test("whole from 100, one decimal from 10, two below; a huge or non-finite value is printed as it is, never trapping")
    func format() {
        #expect(Figures.format(123.4) == "123")
        #expect(Figures.format(45.67) == "45.7")
        #expect(Figures.format(7.891) == "7.89")
        #expect(Figures.format(0) == "0.0")
        for extreme in [Double.infinity, -.infinity, .nan, 1e300, -1e300, .greatestFiniteMagnitude] {
            #expect(!Figures.format(extreme).isEmpty)
        }
    }
}

@Suite("Simulation outcomes")
struct SimulationOutcomesTests {
    @Test("made from a pool's outcomes: every rejection carried over, cancelled leases counted with cancelled waits")
    func fromPoolStatistics() {
        var pool = PoolStatistics.Outcomes()
        pool.granted = 10
        pool.timeout = 1
        pool.shed = 2
        pool.overloaded = 3
        pool.deadlineExceeded = 4
        pool.cancelled = 5
        let outcomes = SimulationResult.Outcomes(pool, cancelledLeases: 6)
        #expect(outcomes.granted == 10 && outcomes.timeout == 1 && outcomes.shed == 2)
        #expect(outcomes.overloaded == 3 && outcomes.deadlineExceeded == 4)
        #expect(outcomes.cancelled == 11)
    }
}
