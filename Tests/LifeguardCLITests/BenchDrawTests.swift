import Lifeguard
@testable import LifeguardCLI
@testable import LifeguardBench
import LifeguardLab
import Testing

@Suite("lifeguard bench: seeded draws")
struct BenchDrawTests {
    /// The `seed` scenario's requests as `lifeguard bench` draws them: the first `count`
    /// arrivals of each kind, in order.
    func requests(seed: UInt64, count: Int = 50) -> [[BenchRun.DrawnStep]] {
        let scenario = Scenario.named("seed")!
        var drawn: [[BenchRun.DrawnStep]] = []
        for (index, kind) in scenario.kinds.enumerated() {
            var random = SplitMix64(seed: BenchRun.seed(seed, kind: index))
            for _ in 0..<count {
                drawn.append(BenchRun.draw(kind.steps[.lifeguard] ?? [], using: &random))
            }
        }
        return drawn
    }

    @Test("the same seed draws the same requests, so every pool compared runs the same workload")
    func sameSeedSameRequests() {
        #expect(self.requests(seed: 1) == self.requests(seed: 1))
        #expect(self.requests(seed: 1) != self.requests(seed: 2))
    }

    @Test("draws follow the steps: one hold per query of a fan-out, a model call per generation")
    func drawsFollowSteps() {
        let scenario = Scenario.named("seed")!
        var random = SplitMix64(seed: 7)
        for kind in scenario.kinds {
            let steps = kind.steps[.lifeguard] ?? []
            let drawn = BenchRun.draw(steps, using: &random)
            #expect(drawn.count == steps.count)
            for (step, draw) in zip(steps, drawn) {
                switch (step, draw) {
                case (.query(let lane, let count, _), .query(let drawnLane, let seconds)):
                    #expect(lane == drawnLane && seconds.count == count && seconds.allSatisfy { $0 > 0 })
                case (.think, .think(let seconds)), (.onHeld, .onHeld(let seconds)):
                    #expect(seconds > 0)
                case (.begin(let lane), .begin(let drawnLane)):
                    #expect(lane == drawnLane)
                case (.commit, .commit):
                    break
                default:
                    Issue.record("\(step) drawn as \(draw)")
                }
            }
        }
    }

    @Test("each request kind has an arrival process of its own")
    func kindsDiffer() {
        #expect(BenchRun.seed(1, kind: 0) != BenchRun.seed(1, kind: 1))
        #expect(BenchRun.seed(1, kind: 0) != BenchRun.seed(2, kind: 0))
    }
}
