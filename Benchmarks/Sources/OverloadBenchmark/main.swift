// overload-benchmark: the `retrieval-burst` scenario against a real PostgreSQL, above the
// retrieval lane's capacity, with adaptive shedding off and on, same budget, one run.
//
// Each arrival (open-loop, Poisson) is a request of 8 parallel reads of 15 ms (`pg_sleep`),
// issued at the same instant through `fanOut`. A request completes when all 8 did; the first
// failed lease fails it (and cancels the rest). Reported per design: pool wait of the leases
// that were granted (measured in the client, from asking to entering the body), goodput
// (completed requests/s, and as a share of the lane's capacity) and rejected requests/s.
//
//   DATABASE_URL=postgres://… swift run -c release --package-path Benchmarks overload-benchmark [--quick]
//   options: --duration SECONDS (30; --quick: 10)  --load FACTOR (1.5)  --connections N (16)
import Foundation
import Histogram
import Lifeguard
import LifeguardPostgres
import Logging
import PostgresNIO
import ArgumentParser
import BenchSupport
import Synchronization

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

/// What the clients saw during one design's run.
struct Tally {
    var waits = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var completed = 0
    var failed: [String: Int] = [:]
    var arrivals = 0

    var failedTotal: Int { self.failed.values.reduce(0, +) }
}

/// The tally, shared by the requests of one run.
final class Recorder: Sendable {
    let tally = Mutex(Tally())
}

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

/// Open-loop Poisson arrivals at `rate` per second for `duration` seconds; waits for every
/// request to end.
func drive(_ pool: PostgresPool, rate: Double, duration: Double) async -> Tally {
    let recorder = Recorder()
    let start = ContinuousClock.now
    await withDiscardingTaskGroup { group in
        var next = 0.0
        while true {
            next += -log(1 - Double.random(in: 0..<1)) / rate
            guard next < duration else { break }
            try? await Task.sleep(until: start.advanced(by: .nanoseconds(Int64(next * 1e9))), clock: .continuous)
            recorder.tally.withLock { $0.arrivals += 1 }
            group.addTask {
                let asked = ContinuousClock.now
                do {
                    _ = try await pool.fanOut(lane: .retrieval, maxConcurrent: fanOut, Array(0..<fanOut)) { lease, _ in
                        let waited = asked.duration(to: .now)
                        recorder.tally.withLock { _ = $0.waits.record(UInt64(max(0, seconds(waited) * 1e6))) }
                        try await lease.query("SELECT pg_sleep(\(serviceSeconds))")
                    }
                    recorder.tally.withLock { $0.completed += 1 }
                } catch let error as LifeguardError {
                    recorder.tally.withLock { $0.failed[error.code.description, default: 0] += 1 }
                } catch {
                    recorder.tally.withLock { $0.failed["\(type(of: error))", default: 0] += 1 }
                }
            }
        }
    }
    return recorder.tally.withLock { $0 }
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
    var rows: [(Design, Tally, Double, Double, PoolStatistics.LaneStatistics?)] = []
    for design in designs {
        let pool = try makePool(options, shedding: design.shedding, logger: logger)
        let runner = Task { await pool.run() }
        let hold = try await calibrate(pool)
        let capacity = Double(options.connections) / (Double(fanOut) * hold)
        let rate = capacity * options.load
        print("  \(design.name): hold per read \(Figures.format(hold * 1000)) ms → capacity \(Figures.format(capacity)) requests/s; "
            + "offering \(Figures.format(rate))/s …")
        let tally = await drive(pool, rate: rate, duration: options.duration)
        let lane = pool.statistics()[.retrieval]
        pool.shutdown(gracePeriod: .seconds(5))
        await runner.value
        rows.append((design, tally, capacity, rate, lane))
    }

    print("")
    print("| design | offered /s | admitted wait p50 / p99 / p99.9 | goodput /s (of capacity) | rejected /s | failures |")
    print("|---|---|---|---|---|---|")
    for (design, tally, capacity, rate, _) in rows {
        let waits = tally.waits
        func ms(_ percentile: Double) -> String { Figures.format(Double(waits.valueAtPercentile(percentile)) / 1000) }
        let goodput = Double(tally.completed) / options.duration
        let failures = tally.failed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("| \(design.name) | \(Figures.format(rate)) | \(ms(50)) / \(ms(99)) / \(ms(99.9)) ms "
            + "| \(Figures.format(goodput)) (\(Int((goodput / capacity * 100).rounded()))%) "
            + "| \(Figures.format(Double(tally.failedTotal) / options.duration)) | \(failures.isEmpty ? "none" : failures) |")
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
