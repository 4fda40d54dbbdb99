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
            arrivals are open-loop (Poisson) or, with --users, a closed loop; measured from the client. \
            Lifeguard runs with its default lanes for the lanes the requests use (reads on .retrieval, \
            writes on .write), its fan-outs through `fanOut`; PostgresClient is one pool. The output has \
            the columns of `simulate`; --json the same keys. `cancel` counts leases cancelled while \
            waiting for or holding a connection, counted alike for both pools. Requests still running 30 s \
            after the arrivals end are cancelled and counted as `unfinished`.
            """
    )

    @Option(help: "postgres://user:password@host:port/database (default: DATABASE_URL).")
    var databaseURL: String?

    @OptionGroup var workload: ScenarioOptions

    @Option(help: "The pools, comma-separated: lifeguard, postgresclient. Default: both.")
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
        guard !self.pools.isEmpty, self.pools.allSatisfy({ ["lifeguard", "postgresclient"].contains($0) }) else {
            throw ValidationError("--pool must be a comma-separated list of lifeguard, postgresclient, got '\(self.pool)'")
        }
        guard DesignKind(rawValue: self.design) != nil else {
            throw ValidationError("--design must be naive, windows or lifeguard, got '\(self.design)'")
        }
        guard (1...3_600).contains(self.duration) else {
            throw ValidationError("--duration must be between 1 and 3600 seconds, got \(self.duration)")
        }
        if let budget, !(2...1_000).contains(budget) { throw ValidationError("--budget must be between 2 and 1000, got \(budget)") }
        if self.databaseURL == nil && ProcessInfo.processInfo.environment["DATABASE_URL"] == nil {
            throw ValidationError("give --database-url postgres://user:password@host:port/database, or set DATABASE_URL")
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
            let target: any BenchTarget = pool == "lifeguard"
                ? try LifeguardTarget(configuration: configuration, lanesUsed: scenario.lanesUsed(by: design), budget: scenario.budget, logger: logger)
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
            var result = await BenchRun(scenario: scenario, design: design, target: target, label: pool).run()
            result.pool = pool
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
    /// Runs `body` on a connection of `lane`.
    func withConnection<Value: Sendable>(
        lane: Lane, _ body: @Sendable (_ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Value
    ) async throws -> Value
    /// Runs `body` `count` times in parallel, each on a connection of `lane` (one request's
    /// parallel reads); the first error cancels the rest and is thrown.
    func fanOut(
        lane: Lane, count: Int,
        _ body: @escaping @Sendable (_ index: Int, _ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Void
    ) async throws
    /// Lifeguard's statistics, when the target is Lifeguard.
    var statistics: PoolStatistics? { get }
}

/// Lifeguard as a user configures it for the scenario: the lanes the requests use, with
/// Lifeguard's default lane settings (``Simulator/configuration(for:budget:duration:lanesUsed:)``
/// for the `lifeguard` design), whatever the requests' design.
struct LifeguardTarget: BenchTarget {
    let pool: PostgresPool
    let laneMap: [Lane: Lane]

    init(configuration: PostgresPool.Configuration, lanesUsed: Set<Lane>, budget: Int, logger: Logger) throws {
        var configuration = configuration
        configuration.budget = budget
        let core = Simulator.configuration(for: .lifeguard, budget: budget, duration: 3_600, lanesUsed: lanesUsed)
        configuration.lanes = core.lanes
        configuration.pool.minimumIdle = budget  // warm, like the PostgresClient beside it
        configuration.pool.longHoldThreshold = nil
        configuration.pool.idleInLeaseThreshold = nil
        self.pool = try PostgresPool(configuration: configuration, logger: logger)
        self.laneMap = Dictionary(uniqueKeysWithValues: [Lane.retrieval, .write, .generation].map { lane in
            (lane, core.lanes[lane] != nil ? lane : .write)
        })
    }

    func fanOut(
        lane: Lane, count: Int,
        _ body: @escaping @Sendable (_ index: Int, _ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Void
    ) async throws {
        _ = try await self.pool.fanOut(lane: self.laneMap[lane] ?? lane, maxConcurrent: count, Array(0..<count)) { lease, index in
            try await body(index) { statement in try await lease.execute(statement) }
        }
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

    func fanOut(
        lane: Lane, count: Int,
        _ body: @escaping @Sendable (_ index: Int, _ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                group.addTask { try await self.withConnection(lane: lane) { execute in try await body(index, execute) } }
            }
            try await group.waitForAll()
        }
    }

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
