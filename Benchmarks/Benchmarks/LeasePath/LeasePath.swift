// The lease path on package-benchmark (ordo-one/benchmark), with thresholds checked in under
// Benchmarks/Thresholds/ as swift-nio keeps its own. Allocations per lease are the checked
// figure: they repeat exactly on any machine. The files hold them per 1,000 leases (the
// scaling factor): 1225 is 1.225 per lease. Wall-clock time is reported but only a doubling
// fails (this machine is shared and switches between states 2–3× apart); instruction counts,
// the stable measure of time on the lease path, are scripts/instructions.sh --check.
//
//   swift package --package-path Benchmarks benchmark                      # run and print
//   swift package --package-path Benchmarks benchmark thresholds check     # fail on a regression
//   swift package --package-path Benchmarks --allow-writing-to-package-directory \
//       benchmark thresholds update                                        # rewrite the thresholds
import Benchmark
import CoreMetrics
import Lifeguard
import LifeguardTestUtils
import Logging

/// A pool over in-memory connections: one lane with every connection, waits without limit, run
/// for the benchmark's duration.
func withPool(
    connections: Int, statistics: Bool, _ body: (ConnectionPool<InMemoryConnectionFactory, SystemPoolClock>) async throws -> Void
) async throws {
    var configuration = PoolConfiguration(budget: connections)
    configuration.lanes = [.retrieval: LaneConfiguration(waitTimeout: .seconds(600), maxWaiters: 100_000, shedding: nil)]
    configuration.recordsStatistics = statistics
    var logger = Logger(label: "benchmark")
    logger.logLevel = .critical
    let pool = try ConnectionPool(
        configuration: configuration, factory: InMemoryConnectionFactory(), logger: logger, metricsFactory: NOOPMetricsHandler.instance)
    let runner = Task { await pool.run() }
    // Every connection open before the measurement.
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<connections {
            group.addTask { try await pool.withConnection(lane: .retrieval) { _ in try await Task.sleep(for: .milliseconds(10)) } }
        }
        try await group.waitForAll()
    }
    try await body(pool)
    pool.shutdown(gracePeriod: .zero)
    await runner.value
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.mallocCountTotal, .wallClock],
        warmupIterations: 1,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 50,
        thresholds: [
            // Per lease: none uncontended, one when it waits (the waiting task's second slab,
            // BENCHMARKS.md); exact, as swift-nio checks its own.
            .mallocCountTotal: .init(absolute: [.p90: 0]),
            .wallClock: .init(relative: [.p90: 100.0]),
        ]
    )

    // Names without spaces: they name the threshold files (LeasePath.NAME.p90.json).
    for statistics in [true, false] {
        let suffix = statistics ? "" : "-StatisticsOff"
        Benchmark("Uncontended\(suffix)") { benchmark in
            try await withPool(connections: 8, statistics: statistics) { pool in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    try await pool.withConnection(lane: .retrieval) { blackHole($0.id) }
                }
                benchmark.stopMeasurement()
            }
        }

        // 64 tasks on 8 connections, the body suspends once. The tasks' own allocations (64 per
        // iteration of 1,000 leases) and how often a waiter's frame needs a second slab move the
        // count a little from run to run: 5% of tolerance.
        Benchmark(
            "Tasks64On8Suspending\(suffix)",
            configuration: .init(thresholds: [.mallocCountTotal: .init(relative: [.p90: 5.0]), .wallClock: .init(relative: [.p90: 100.0])])
        ) { benchmark in
            try await withPool(connections: 8, statistics: statistics) { pool in
                let cyclesPerTask = benchmark.scaledIterations.count / 64
                benchmark.startMeasurement()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<64 {
                        group.addTask {
                            for _ in 0..<cyclesPerTask {
                                try await pool.withConnection(lane: .retrieval) { connection in
                                    await Task.yield()
                                    blackHole(connection.id)
                                }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                benchmark.stopMeasurement()
            }
        }
    }
}
