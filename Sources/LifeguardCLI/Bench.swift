import ArgumentParser
import Foundation
import Histogram
import Lifeguard
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
            arrivals are open-loop (Poisson), measured from the client. The output has the columns of \
            `simulate`; --json the same keys. `cancel` counts leases cancelled while waiting for or holding \
            a connection, counted alike for both pools.
            """
    )

    @Option(help: "postgres://user:password@host:port/database (default: DATABASE_URL).")
    var databaseURL: String?

    @Option(help: "The scenario: \(Scenario.names.joined(separator: ", ")).")
    var scenario: String

    @Option(help: "The pools, comma-separated: lifeguard, postgresclient. Default: both.")
    var pool: String = "lifeguard,postgresclient"

    @Option(help: "The design the requests follow: naive, windows or lifeguard (lanes and fan-out apply to Lifeguard only).")
    var design: String = DesignKind.lifeguard.rawValue

    @Option(help: "Multiply the scenario's arrival rates; 0.01 to 1000.")
    var rate: Double = 1

    @Option(help: "Seconds of arrivals per pool, 1 to 3600.")
    var duration: Double = 30

    @Option(help: "Connections each pool may open, 2 to 1000. Default: the scenario's (20).")
    var budget: Int?

    @Option(help: "Seeds the random draws.")
    var seed: UInt64 = 1

    @Flag(help: "Print one JSON object per pool, with the keys of `simulate --json`.")
    var json = false

    var pools: [String] { self.pool.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func validate() throws {
        guard Scenario.named(self.scenario) != nil else {
            throw ValidationError("--scenario must be one of \(Scenario.names.joined(separator: ", ")), got '\(self.scenario)'")
        }
        guard !self.pools.isEmpty, self.pools.allSatisfy({ ["lifeguard", "postgresclient"].contains($0) }) else {
            throw ValidationError("--pool must be a comma-separated list of lifeguard, postgresclient, got '\(self.pool)'")
        }
        guard DesignKind(rawValue: self.design) != nil else {
            throw ValidationError("--design must be naive, windows or lifeguard, got '\(self.design)'")
        }
        guard (0.01...1_000).contains(self.rate) else { throw ValidationError("--rate must be between 0.01 and 1000, got \(self.rate)") }
        guard (1...3_600).contains(self.duration) else {
            throw ValidationError("--duration must be between 1 and 3600 seconds, got \(self.duration)")
        }
        if let budget, !(2...1_000).contains(budget) { throw ValidationError("--budget must be between 2 and 1000, got \(budget)") }
        if self.databaseURL == nil && ProcessInfo.processInfo.environment["DATABASE_URL"] == nil {
            throw ValidationError("give --database-url postgres://user:password@host:port/database, or set DATABASE_URL")
        }
    }

    func run() async throws {
        var scenario = Scenario.named(self.scenario)!.scaled(by: self.rate)
        scenario.duration = self.duration
        if let budget { scenario.budget = budget }
        scenario.seed = self.seed
        let design = DesignKind(rawValue: self.design)!
        var configuration = try self.databaseURL.map { try PostgresPool.Configuration(url: $0) } ?? PostgresPool.Configuration()
        configuration.applicationName = "lifeguard-bench"
        var logger = Logger(label: "lifeguard-bench")
        logger.logLevel = .critical
        var results: [SimulationResult] = []
        for pool in self.pools {
            let target: any BenchTarget = pool == "lifeguard"
                ? try LifeguardTarget(configuration: configuration, design: design, budget: scenario.budget, logger: logger)
                : try PostgresClientTarget(configuration: configuration, budget: scenario.budget, logger: logger)
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
            let result = await BenchRun(scenario: scenario, design: design, target: target, label: pool).run()
            target.shutdown()
            runner.cancel()
            await runner.value
            results.append(result)
        }
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            for result in results { print(String(decoding: try encoder.encode(result), as: UTF8.self)) }
        } else {
            print(SimulationTable(scenario: scenario, results: results, firstColumn: self.pools).text)
        }
    }
}

/// A pool the benchmark drives: leases run statements; the wait is measured by the caller.
protocol BenchTarget: Sendable {
    func run() async
    func shutdown()
    /// Runs `body` on a connection of `lane`; `group` is the request, for fan-outs.
    func withConnection<Value: Sendable>(
        lane: Lane, _ body: @Sendable (_ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Value
    ) async throws -> Value
    /// Lifeguard's statistics, when the target is Lifeguard.
    var statistics: PoolStatistics? { get }
}

struct LifeguardTarget: BenchTarget {
    let pool: PostgresPool
    let laneMap: [Lane: Lane]

    init(configuration: PostgresPool.Configuration, design: DesignKind, budget: Int, logger: Logger) throws {
        var configuration = configuration
        configuration.budget = budget
        let core = Simulator.configuration(for: design, budget: budget, duration: 3_600)
        configuration.lanes = core.lanes
        configuration.pool.minimumIdle = budget  // warm, like the PostgresClient beside it
        configuration.pool.longHoldThreshold = nil
        configuration.pool.idleInLeaseThreshold = nil
        self.pool = try PostgresPool(configuration: configuration, logger: logger)
        self.laneMap = Dictionary(uniqueKeysWithValues: [Lane.retrieval, .write, .generation].map { lane in
            (lane, design == .lifeguard ? lane : Simulator.sharedLane)
        })
    }

    func run() async { await self.pool.run() }
    func shutdown() { self.pool.shutdown(gracePeriod: .seconds(5)) }
    var statistics: PoolStatistics? { self.pool.statistics() }

    func withConnection<Value: Sendable>(
        lane: Lane, _ body: @Sendable (_ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Value
    ) async throws -> Value {
        try await self.pool.withConnection(lane: self.laneMap[lane] ?? lane) { lease in
            try await body { statement in try await lease.execute(statement) }
        }
    }
}

struct PostgresClientTarget: BenchTarget {
    let client: PostgresClient
    let logger: Logger

    init(configuration: PostgresPool.Configuration, budget: Int, logger: Logger) throws {
        guard configuration.tlsMode == .disable else {
            throw ValidationError("--pool postgresclient runs with sslmode=disable only; add ?sslmode=disable to the URL of a local server")
        }
        var client = PostgresClient.Configuration(
            host: configuration.host ?? "localhost", port: configuration.port, username: configuration.username,
            password: configuration.password, database: configuration.database, tls: .disable)
        client.options.maximumConnections = budget
        client.options.minimumConnections = budget
        self.client = PostgresClient(configuration: client, backgroundLogger: logger)
        self.logger = logger
    }

    func run() async { await self.client.run() }
    func shutdown() {}
    var statistics: PoolStatistics? { nil }

    func withConnection<Value: Sendable>(
        lane: Lane, _ body: @Sendable (_ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Value
    ) async throws -> Value {
        let logger = self.logger
        return try await self.client.withConnection { connection in
            try await body { statement in
                for try await _ in try await connection.query(statement, logger: logger) {}
            }
        }
    }
}
