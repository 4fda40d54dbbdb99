// lease-benchmark: what the uncontended lease path costs, side by side in one run.
//
// - floor: a minimal pool with no policy (one Mutex, a stack of idle connections), behind the
//   same kind of async `withConnection`;
// - lifeguard, statistics off;
// - lifeguard, statistics on and metrics exported every second (the default), to a no-op
//   metrics backend so that the figure is the pool's, not a backend's.
// Each figure is the median of several rounds of one task leasing and releasing in a loop,
// with the spread (min…max) of the rounds.
import Lifeguard
import LifeguardTestUtils
import Logging
import CoreMetrics
import Synchronization

/// The floor: the least a pool can do.
final class FloorPool: Sendable {
    let idle = Mutex<[Int]>(Array(0..<8))

    func withConnection<Value>(isolation: isolated (any Actor)? = #isolation, _ body: (Int) async throws -> Value) async rethrows -> Value {
        let connection = self.idle.withLock { $0.popLast()! }
        defer { self.idle.withLock { $0.append(connection) } }
        return try await body(connection)
    }
}

func nanosecondsPerCycle(iterations: Int, _ cycle: () async throws -> Int) async rethrows -> Double {
    var sink = 0
    let start = ContinuousClock.now
    for _ in 0..<iterations { sink &+= try await cycle() }
    let elapsed = start.duration(to: .now)
    precondition(sink >= 0)
    return (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9) / Double(iterations)
}

func makePool(statistics: Bool) throws -> ConnectionPool<InMemoryConnectionFactory> {
    var configuration = PoolConfiguration(budget: 8)
    configuration.lanes = [.retrieval: .init()]
    configuration.recordsStatistics = statistics
    return try ConnectionPool(
        configuration: configuration, factory: InMemoryConnectionFactory(), logger: Logger(label: "benchmark"),
        metricsFactory: NOOPMetricsHandler.instance)
}

struct Row {
    let name: String
    var rounds: [Double] = []
    var median: Double { self.rounds.sorted()[self.rounds.count / 2] }
}

/// The whole benchmark, nonisolated: closures formed on the main actor would hop to it on
/// every cycle and measure the hop instead of the pool.
func runBenchmark(quick: Bool) async throws {
    // Many short rounds rather than a few long ones: the cost of statistics is the median of
    // the per-round ratios, each between two rows measured a few milliseconds apart.
    let iterations = quick ? 100_000 : 200_000
    let roundCount = quick ? 9 : 31

    let floor = FloorPool()
    let off = try makePool(statistics: false)
    let on = try makePool(statistics: true)
    let runners = [Task { await off.run() }, Task { await on.run() }]
    _ = try await off.withConnection(lane: .retrieval) { $0.id }
    _ = try await on.withConnection(lane: .retrieval) { $0.id }

    var rows = [Row(name: "floor (Mutex + idle stack)"), Row(name: "lifeguard, statistics off"), Row(name: "lifeguard, statistics + metrics on")]
    for _ in 0..<roundCount {
        // Interleaved, so that noise on this shared machine falls on every row alike.
        rows[0].rounds.append(await nanosecondsPerCycle(iterations: iterations) { await floor.withConnection { $0 } })
        rows[1].rounds.append(try await nanosecondsPerCycle(iterations: iterations) { try await off.withConnection(lane: .retrieval) { $0.id } })
        rows[2].rounds.append(try await nanosecondsPerCycle(iterations: iterations) { try await on.withConnection(lane: .retrieval) { $0.id } })
    }

    func format(_ value: Double) -> String { "\(Int(value.rounded()))" }
    print("uncontended lease+release, 1 task, \(iterations) cycles × \(roundCount) rounds (median, min…max ns/cycle)")
    for row in rows {
        let sorted = row.rounds.sorted()
        let name = row.name + String(repeating: " ", count: max(0, 38 - row.name.count))
        let ratio = (row.median / rows[0].median * 10).rounded() / 10
        print("  \(name) \(format(row.median)) ns  (\(format(sorted.first!))…\(format(sorted.last!)))  \(ratio)× floor")
    }
    let ratios = zip(rows[2].rounds, rows[1].rounds).map { ($0 / $1 - 1) * 100 }.sorted()
    func percent(_ value: Double) -> String { "\((value * 10).rounded() / 10)%" }
    print(
        "statistics + metrics cost: \(percent(ratios[ratios.count / 2])) over statistics off "
            + "(median of per-round ratios; quartiles \(percent(ratios[ratios.count / 4]))…\(percent(ratios[ratios.count * 3 / 4]))); target: at most 10%")
    print("statistics: \(on.statistics()[.retrieval]!.outcomes.granted) leases recorded, hold p99 \(on.statistics()[.retrieval]!.hold.p99) ms")
    off.shutdown(gracePeriod: .zero)
    on.shutdown(gracePeriod: .zero)
    for runner in runners { await runner.value }
}

try await Task.detached { try await runBenchmark(quick: CommandLine.arguments.contains("--quick")) }.value
