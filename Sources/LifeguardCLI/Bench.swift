import ArgumentParser
import Foundation
import Histogram
import Lifeguard
import LifeguardBench
import LifeguardLab
import LifeguardPostgres
import Logging
import PostgresNIO
import Synchronization

/// `lifeguard bench`: a scenario against a real PostgreSQL, through Lifeguard and through
/// PostgresNIO's `PostgresClient`, with the same budget, in one run.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a scenario against a real PostgreSQL through Lifeguard and PostgresClient, same budget, one run.",
        discussion: """
            Service times are `pg_sleep`, model and tool calls are sleeps with no connection held, and \
            arrivals are open-loop (Poisson) or, with --users, a closed loop; measured from the client. \
            Lifeguard runs with its default lanes for the lanes the requests use (reads on .retrieval, \
            writes on .write), its fan-outs through `fanOut`; PostgresClient is one pool. The output has \
            the columns of `simulate`; --json the same keys. `cancel` counts leases cancelled while \
            waiting for or holding a connection, counted alike for both pools. Requests still running 30 s \
            after the arrivals end are cancelled and counted as `unfinished`.
            """
    )

    @Option(help: "postgres://user:password@host:port/database (default: LIFEGUARD_URL or DATABASE_URL).")
    var databaseURL: String?

    @OptionGroup var workload: ScenarioOptions

    @Option(help: "The pools, comma-separated: lifeguard, postgresclient, lifeguard-cluster (a URL's hosts as a PostgresCluster: reads on standbys). Default: lifeguard,postgresclient.")
    var pool: String = "lifeguard,postgresclient"

    @Option(help: "How the requests are written: naive (a transaction held across the model call) or windows (three short windows; `lifeguard` means the same here).")
    var design: String = DesignKind.windows.rawValue

    @Option(help: "Seconds of arrivals per pool, 1 to 3600.")
    var duration: Double = 30

    @Option(help: "Connections each pool may open, 2 to 1000. Default: the scenario's (20).")
    var budget: Int?

    @OptionGroup var loop: ClosedLoopOptions

    @Flag(help: "Print one JSON object per pool, with the keys of `simulate --json`.")
    var json = false

    var pools: [String] { self.pool.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func validate() throws {
        guard !self.pools.isEmpty, self.pools.allSatisfy({ ["lifeguard", "postgresclient", "lifeguard-cluster"].contains($0) }),
            Set(self.pools).count == self.pools.count
        else {
            throw ValidationError(
                "--pool must be a comma-separated list of lifeguard, postgresclient, lifeguard-cluster, each once, got '\(self.pool)'")
        }
        guard DesignKind(rawValue: self.design) != nil else {
            throw ValidationError("--design must be naive, windows or lifeguard, got '\(self.design)'")
        }
        guard (1...3_600).contains(self.duration) else {
            throw ValidationError("--duration must be between 1 and 3600 seconds, got \(self.duration)")
        }
        if let budget, !(2...1_000).contains(budget) { throw ValidationError("--budget must be between 2 and 1000, got \(budget)") }
        if self.databaseURL == nil && !PostgresPool.Configuration.environmentNamesURL() {
            throw ValidationError("give --database-url postgres://user:password@host:port/database, or set LIFEGUARD_URL or DATABASE_URL")
        }
    }

    func run() async throws {
        var scenario = self.workload.base.scaled(by: self.workload.rate)
        scenario.duration = self.duration
        if let budget { scenario.budget = budget }
        scenario.closedLoop = self.loop.closedLoop
        let design = DesignKind(rawValue: self.design)!
        var configuration = try self.databaseURL.map { try PostgresPool.Configuration(url: $0) } ?? PostgresPool.Configuration()
        configuration.applicationName = "lifeguard-bench"
        var logger = Logger(label: "lifeguard-bench")
        logger.logLevel = .critical
        var results: [SimulationResult] = []
        for pool in self.pools {
            let target: any BenchTarget
            do {
                switch pool {
                case "lifeguard":
                    target = try LifeguardTarget(
                        configuration: configuration, lanesUsed: scenario.lanesUsed(by: design), budget: scenario.budget, logger: logger)
                case "lifeguard-cluster":
                    target = try ClusterTarget(
                        configuration: configuration, lanesUsed: scenario.lanesUsed(by: design), budget: scenario.budget, logger: logger)
                default:
                    target = try PostgresClientTarget(configuration: configuration, budget: scenario.budget, logger: logger)
                }
            } catch let error as LifeguardError {
                throw ValidationError("--pool \(pool): \(error.problems.joined(separator: "; "))")
            }
            let runner = Task { await target.run() }
            // Both pools open their connections before the first arrival: a cold start is not
            // what is compared.
            try await Task.sleep(for: .seconds(2))
            do {
                try await target.withConnection(lane: .retrieval) { execute in try await execute("SELECT 1") }
            } catch {
                target.shutdown()
                runner.cancel()
                await runner.value
                var standardError = FileHandle.standardError
                print("lifeguard bench: \(pool) cannot run a statement on \(configuration.description): \(PostgresPoolError.describe(error))",
                      to: &standardError)
                throw ExitCode(Check.cannotConnect)
            }
            // Over a host list, each server's own count of what it committed during the run.
            let committedBefore = configuration.hosts.count > 1 ? await ServerTransactions.read(configuration, logger: logger) : nil
            var result = await BenchRun(scenario: scenario, design: design, target: target, label: pool).run()
            result.pool = pool
            target.shutdown()
            runner.cancel()
            await runner.value
            if let committedBefore {
                // A backend's statistics reach the server at its exit at the latest.
                try await Task.sleep(for: .milliseconds(500))
                result.committedByServer = ServerTransactions.difference(
                    from: committedBefore, to: await ServerTransactions.read(configuration, logger: logger))
            }
            results.append(result)
        }
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            for result in results { print(String(decoding: try encoder.encode(result), as: UTF8.self)) }
        } else {
            print(SimulationTable(scenario: scenario, results: results, firstColumn: self.pools).text)
            for result in results {
                guard let committed = result.committedByServer else { continue }
                let total = max(1, committed.values.reduce(0, +))
                let servers = committed.sorted { $0.key < $1.key }
                    .map { "\($0.key) \($0.value) (\(Int((Double($0.value) / Double(total) * 100).rounded()))%)" }
                print("\(result.pool ?? ""): transactions committed per server (each server's pg_stat_database): \(servers.joined(separator: ", "))")
            }
        }
    }
}
