import Foundation
import Lifeguard
@testable import LifeguardLab
import Testing

@Suite("Simulator on the real state machine")
struct SimulatorTests {
    func run(_ name: String, _ design: DesignKind, duration: Double? = nil, seed: UInt64 = 1) -> SimulationResult {
        var scenario = Scenario.named(name)!
        if let duration { scenario.duration = duration }
        scenario.seed = seed
        var simulator = Simulator(scenario: scenario, design: design)
        return simulator.run()
    }

    @Test("the same seed gives the same result; another seed another")
    func deterministic() {
        let first = self.run("seed", .lifeguard, duration: 60)
        let again = self.run("seed", .lifeguard, duration: 60)
        let other = self.run("seed", .lifeguard, duration: 60, seed: 2)
        #expect(first == again)
        #expect(first != other)
    }

    @Test("seed: the naive design collapses (pool wait p99 in seconds), lifeguard keeps it at or under 50 ms, nothing leaks")
    func seedScenario() throws {
        let naive = self.run("seed", .naive)
        let windows = self.run("seed", .windows)
        let lifeguard = self.run("seed", .lifeguard)
        for result in [naive, windows, lifeguard] {
            let data = try JSONEncoder().encode(result)
            print(String(decoding: data, as: UTF8.self))
            #expect(result.leaked == 0)
        }
        #expect((naive.waitMilliseconds[Simulator.sharedLane.name]?.p99 ?? 0) >= 1_000)
        for (_, wait) in lifeguard.waitMilliseconds {
            #expect(wait.p99 <= 50)
        }
        #expect(lifeguard.throughputPerSecond > naive.throughputPerSecond)
    }

    /// Runs a simulation on a Dispatch thread: seconds of CPU on one of the cooperative pool's
    /// two threads starved the shell tests running beside it (their in-memory connections did
    /// not open within their 5 s).
    static func offThePool(_ scenario: Scenario, _ design: DesignKind) async -> SimulationResult {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var simulator = Simulator(scenario: scenario, design: design)
                continuation.resume(returning: simulator.run())
            }
        }
    }

    @Test(
        "rag, closed loop: where one FIFO pool serves every user within the wait budget, lifeguard rejects at most 1% and serves as much",
        .serialized, arguments: [40, 80])
    func closedLoopIsServedNotShed(users: Int) async {
        var scenario = Scenario.named("rag")!
        scenario.duration = 15
        scenario.closedLoop = .init(users: users)
        let windows = await Self.offThePool(scenario, .windows)
        let lifeguard = await Self.offThePool(scenario, .lifeguard)
        print("users \(users): windows \(windows.throughputPerSecond)/s, wait p99 \(windows.waitMilliseconds.mapValues(\.p99)); "
            + "lifeguard \(lifeguard.throughputPerSecond)/s, wait p99 \(lifeguard.waitMilliseconds.mapValues(\.p99)), failed \(lifeguard.failedRequests)")
        #expect(windows.waitMilliseconds.values.allSatisfy { $0.p99 <= 500 })
        #expect(lifeguard.rejectedFraction <= 0.01)
        #expect(lifeguard.throughputPerSecond >= 0.98 * windows.throughputPerSecond)
        #expect(lifeguard.leaked == 0)
    }
}
