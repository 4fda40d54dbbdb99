import Lifeguard
@testable import LifeguardLab
import Testing

@Suite("Scenarios")
struct ScenarioTests {
    @Test("every name gives its scenario, with a budget, a duration and a positive rate; an unknown name none")
    func names() {
        for name in Scenario.names {
            let scenario = Scenario.named(name)
            #expect(scenario?.name == name)
            #expect((scenario?.budget ?? 0) > 0)
            #expect((scenario?.duration ?? 0) > 0)
            #expect((scenario?.kinds.reduce(0) { $0 + $1.rate } ?? 0) > 0)
        }
        #expect(Scenario.named("nope") == nil)
    }

    @Test("scaling multiplies every kind's rate and nothing else")
    func scaling() {
        let seed = Scenario.named("seed")!
        let doubled = seed.scaled(by: 2)
        #expect(doubled.kinds.map(\.rate) == seed.kinds.map { $0.rate * 2 })
        #expect(doubled.budget == seed.budget && doubled.duration == seed.duration && doubled.seed == seed.seed)
    }

    @Test("kinds that share a name are one kind in reports, their rates summed, in first-seen order")
    func kindsByName() {
        let rag = Scenario.named("rag")!
        #expect(rag.kinds.count == 5)
        #expect(rag.kindsByName.map(\.name) == ["rag"])
        #expect(rag.kindsByName.first?.rate == 30)
        #expect(Scenario.named("seed")!.kindsByName.count == 2)
    }

    @Test("a closed loop's draw picks kinds by their rates: a kind of twice the rate, twice as often")
    func kindIndexWeighsRates() {
        var scenario = Scenario.named("seed")!
        scenario.kinds[0].rate = 2
        scenario.kinds[1].rate = 1
        let draws = (0..<3_000).map { scenario.kindIndex(drawn: (Double($0) + 0.5) / 3_000) }
        #expect(draws.filter { $0 == 0 }.count == 2_000)
        #expect(draws.filter { $0 == 1 }.count == 1_000)
        #expect(scenario.kindIndex(drawn: 0) == 0)
        #expect(scenario.kindIndex(drawn: 0.999_999) == 1)
    }

    @Test("the lanes a design uses: reads alone use only retrieval; the windows of a pipeline use retrieval and write")
    func lanesUsed() {
        let burst = Scenario.named("retrieval-burst")!
        #expect(burst.lanesUsed(by: .lifeguard) == [.retrieval])
        let seed = Scenario.named("seed")!
        #expect(seed.lanesUsed(by: .lifeguard) == [.retrieval, .write])
    }
}
