// overload-benchmark: the `retrieval-burst` scenario against a real PostgreSQL, above the
// retrieval lane's capacity, with adaptive shedding off and on, same budget, one run.
//
// Each arrival (open-loop, Poisson) is a request of 8 parallel reads of 15 ms (`pg_sleep`),
// issued at the same instant through `fanOut`. A request completes when all 8 did; the first
// failed lease fails it (and cancels the rest). Driven by `lifeguard bench`'s driver
// (LifeguardBench's BenchRun). Reported per design: pool wait of the leases that were granted
// (measured in the client, from asking to entering the body), goodput (requests completed
// while the arrivals ran, per second, and as a share of the lane's capacity) and rejected
// requests/s.
//
//   DATABASE_URL=postgres://… swift run -c release --package-path Benchmarks overload-benchmark [--quick]
//   options: --duration SECONDS (30; --quick: 10)  --load FACTOR (1.5)  --connections N (16)
import Foundation
import Lifeguard
import LifeguardBench
import LifeguardLab
import LifeguardPostgres
import Logging
import PostgresNIO
import ArgumentParser
import BenchSupport

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "overload-benchmark", abstract: "retrieval-burst above a lane's capacity, shedding off against its designs, against PostgreSQL.")

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "10 s per design instead of 30.") var quick = false
    @Option(name: .customLong("duration"), help: "Seconds per design (default 30, 10 with --quick).") var seconds: Double?
    @Option(help: "Arrivals as a multiple of the retrieval lane's capacity.") var load = 1.5
    /// Connections of the retrieval lane, the whole budget.
    @Option(help: "Connections of the retrieval lane, the whole budget.") var connections = 16

    var duration: Double { self.seconds ?? (self.quick ? 10 : 30) }
    var databaseURL: String { self.database.url }
}

let fanOut = 8
let serviceSeconds = 0.015

struct Design {
    let name: String
    let shedding: Shedding?
}

func makePool(_ options: Options, shedding: Shedding?, logger: Logger) throws -> PostgresPool {
    var configuration = try PostgresPool.Configuration(url: options.databaseURL)
    configuration.budget = options.connections
    configuration.lanes = [.retrieval: LaneConfiguration(shedding: shedding)]
    configuration.pool.minimumIdle = options.connections
    configuration.pool.longHoldThreshold = nil
    configuration.pool.idleInLeaseThreshold = nil
    return try PostgresPool(configuration: configuration, logger: logger)
}

/// The hold of one 15 ms read, measured in the body: what a connection is busy for per query.
func calibrate(_ pool: PostgresPool) async throws -> Double {
    var total = 0.0
    let rounds = 100
    for _ in 0..<rounds {
        total += try await pool.withConnection(lane: .retrieval) { lease in
            let start = ContinuousClock.now
            try await lease.query("SELECT pg_sleep(\(serviceSeconds))")
            return seconds(start.duration(to: .now))
        }
    }
    return total / Double(rounds)
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// `retrieval-burst` (8 parallel reads of 15 ms per request, Poisson arrivals) at `rate`
/// requests per second for `duration` seconds, through `pool`, with the driver of
/// `lifeguard bench`.
func drive(_ pool: PostgresPool, rate: Double, duration: Double, label: String) async -> SimulationResult {
    let base = Scenario.named("retrieval-burst")!
    var scenario = base.scaled(by: rate / base.kinds.reduce(0) { $0 + $1.rate })
    scenario.duration = duration
    scenario.budget = pool.configuration.budget
    return await BenchRun(scenario: scenario, design: .lifeguard, target: LifeguardTarget(pool: pool), label: label).run()
}

func run() async throws {
    let options = Options.parseOrExit()
    var logger = Logger(label: "overload-benchmark")
    logger.logLevel = .error
    let designs = [
        Design(name: "shedding off", shedding: nil),
        Design(name: "shedding, sustained overload (default)", shedding: Shedding()),
        Design(name: "shedding, standing queue (50 ms target)", shedding: Shedding(engagement: .standingQueue)),
        Design(name: "standing queue, newest first", shedding: Shedding(servesNewestFirst: true, engagement: .standingQueue)),
    ]
    print("retrieval-burst: \(fanOut) parallel reads of \(Int(serviceSeconds * 1000)) ms per request, Poisson arrivals, "
        + "\(options.connections) connections for the retrieval lane (the whole budget), "
        + "\(Int(options.duration)) s per design")
    var rows: [(Design, SimulationResult, Double, Double, PoolStatistics.LaneStatistics?)] = []
    for design in designs {
        let pool = try makePool(options, shedding: design.shedding, logger: logger)
        let runner = Task { await pool.run() }
        let hold = try await calibrate(pool)
        let capacity = Double(options.connections) / (Double(fanOut) * hold)
        let rate = capacity * options.load
        print("  \(design.name): hold per read \(Figures.format(hold * 1000)) ms → capacity \(Figures.format(capacity)) requests/s; "
            + "offering \(Figures.format(rate))/s …")
        let result = await drive(pool, rate: rate, duration: options.duration, label: design.name)
        let lane = pool.statistics()[.retrieval]
        pool.shutdown(gracePeriod: .seconds(5))
        await runner.value
        rows.append((design, result, capacity, rate, lane))
    }

    print("")
    print("| design | offered /s | admitted wait p50 / p99 / p99.9 | goodput /s (of capacity) | rejected /s | failures |")
    print("|---|---|---|---|---|---|")
    for (design, result, capacity, rate, _) in rows {
        let waits = result.waitMilliseconds[Lane.retrieval.name] ?? .init(p50: 0, p99: 0, p999: 0)
        let goodput = result.throughputPerSecond
        let rejected = result.failedRequests.values.reduce(0, +)
        let failures = result.failedRequests.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("| \(design.name) | \(Figures.format(rate)) | \(Figures.format(waits.p50)) / \(Figures.format(waits.p99)) / \(waits.p999.map { Figures.format($0) } ?? "–") ms "
            + "| \(Figures.format(goodput)) (\(Int((goodput / capacity * 100).rounded()))%) "
            + "| \(Figures.format(Double(rejected) / options.duration)) | \(failures.isEmpty ? "none" : failures) |")
    }
    print("")
    print("The pool's own statistics for the lane (leases, not requests):")
    for (design, _, _, _, lane) in rows {
        guard let lane else { continue }
        let o = lane.outcomes
        print("  \(design.name): wait p99 \(Figures.format(lane.wait.p99)) ms, hold p50 \(Figures.format(lane.hold.p50)) ms; "
            + "granted \(o.granted), shed \(o.shed), timeout \(o.timeout), overloaded \(o.overloaded), cancelled \(o.cancelled)")
    }
}


try await Task.detached { try await run() }.value
