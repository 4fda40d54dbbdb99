import Lifeguard
import LifeguardLab
import LifeguardPostgres
import Logging
import PostgresNIO

/// A pool the benchmark drives: leases run statements; the wait is measured by the caller.
public protocol BenchTarget: Sendable {
    /// Runs the pool until ``shutdown()`` (or the task's cancellation).
    func run() async
    /// Lets ``run()`` return.
    func shutdown()
    /// Runs `body` on a connection of `lane`; `body` runs statements through `execute`.
    func withConnection<Value: Sendable>(
        lane: Lane, _ body: @Sendable (_ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Value
    ) async throws -> Value
    /// Runs `body` `count` times in parallel, each on a connection of `lane` (one request's
    /// parallel reads), with its index; the first error cancels the rest and is thrown.
    func fanOut(
        lane: Lane, count: Int,
        _ body: @escaping @Sendable (_ index: Int, _ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Void
    ) async throws
    /// Lifeguard's statistics, when the target is Lifeguard.
    var statistics: PoolStatistics? { get }
    /// The most connections the target leases at once, over all its hosts; `nil`: the
    /// scenario's budget. Utilization is measured against it.
    var leaseCapacity: Int? { get }
}

extension BenchTarget {
    public var leaseCapacity: Int? { nil }
}

/// Lifeguard as a user configures it for the scenario: the lanes the requests use, with
/// Lifeguard's default lane settings (`Simulator.configuration(for:budget:duration:lanesUsed:)`
/// for the `lifeguard` design), whatever the requests' design.
public struct LifeguardTarget: BenchTarget {
    /// The pool driven.
    public let pool: PostgresPool
    /// The lane each of the scenario's lanes is leased on (a lane the pool lacks goes to
    /// `.write`).
    let laneMap: [Lane: Lane]

    /// Lifeguard as configured for a scenario: `configuration`'s server and settings, with
    /// `budget` connections, opened before the first request, and Lifeguard's default lanes
    /// for `lanesUsed` (the watchdog's reports off).
    ///
    /// - Throws: ``Lifeguard/LifeguardError`` for a configuration the pool refuses.
    public init(configuration: PostgresPool.Configuration, lanesUsed: Set<Lane>, budget: Int, logger: Logger) throws {
        let configured = Self.configuration(configuration, lanesUsed: lanesUsed, budget: budget)
        self.pool = try PostgresPool(configuration: configured.configuration, logger: logger)
        self.laneMap = configured.laneMap
    }

    /// `configuration` with `budget` connections, opened before the first request, and
    /// Lifeguard's default lanes for `lanesUsed`; and the lane each of the scenario's lanes is
    /// leased on.
    static func configuration(
        _ configuration: PostgresPool.Configuration, lanesUsed: Set<Lane>, budget: Int
    ) -> (configuration: PostgresPool.Configuration, laneMap: [Lane: Lane]) {
        var configuration = configuration
        configuration.budget = budget
        let core = Simulator.configuration(for: .lifeguard, budget: budget, duration: 3_600, lanesUsed: lanesUsed)
        configuration.lanes = core.lanes
        configuration.pool.minimumIdle = budget  // warm, like the PostgresClient beside it
        configuration.pool.longHoldThreshold = nil
        configuration.pool.idleInLeaseThreshold = nil
        let laneMap = Dictionary(uniqueKeysWithValues: [Lane.retrieval, .write, .generation].map { lane in
            (lane, core.lanes[lane] != nil ? lane : .write)
        })
        return (configuration, laneMap)
    }

    /// A pool configured by the caller (its lanes as given), driven as it is.
    ///
    /// - Parameter pool: The pool; the benchmark runs and shuts it down.
    public init(pool: PostgresPool) {
        self.pool = pool
        self.laneMap = [:]
    }

    public func fanOut(
        lane: Lane, count: Int,
        _ body: @escaping @Sendable (_ index: Int, _ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Void
    ) async throws {
        _ = try await self.pool.fanOut(lane: self.laneMap[lane] ?? lane, maxConcurrent: count, Array(0..<count)) { lease, index in
            try await body(index) { statement in try await lease.execute(statement) }
        }
    }

    public func run() async { await self.pool.run() }
    /// Shuts the pool down with a grace period of 5 s.
    public func shutdown() { self.pool.shutdown(gracePeriod: .seconds(5)) }
    public var statistics: PoolStatistics? { self.pool.statistics() }

    public func withConnection<Value: Sendable>(
        lane: Lane, _ body: @Sendable (_ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Value
    ) async throws -> Value {
        try await self.pool.withConnection(lane: self.laneMap[lane] ?? lane) { lease in
            try await body { statement in try await lease.execute(statement) }
        }
    }
}

/// PostgresNIO's `PostgresClient`, one pool of `budget` connections opened at once, the
/// plain pool Lifeguard is measured against. Lanes are ignored; a fan-out is a task group.
public struct PostgresClientTarget: BenchTarget {
    let client: PostgresClient
    let logger: Logger

    /// A client of `budget` connections to `configuration`'s server.
    ///
    /// - Throws: ``Lifeguard/LifeguardError/Code/invalidConfiguration`` unless TLS is off
    ///   (`sslmode=disable`): the client is set up here without TLS.
    public init(configuration: PostgresPool.Configuration, budget: Int, logger: Logger) throws {
        guard configuration.tlsMode == .disable else {
            throw LifeguardError.invalidConfiguration([
                "PostgresClient runs here with sslmode=disable only; add ?sslmode=disable to the URL of a local server"
            ])
        }
        var client = PostgresClient.Configuration(
            host: configuration.host ?? "localhost", port: configuration.port, username: configuration.username,
            password: configuration.password, database: configuration.database, tls: .disable)
        client.options.maximumConnections = budget
        client.options.minimumConnections = budget
        self.client = PostgresClient(configuration: client, backgroundLogger: logger)
        self.logger = logger
    }

    public func run() async { await self.client.run() }
    /// Nothing: the client's ``run()`` ends when its task is cancelled.
    public func shutdown() {}
    /// `nil`: the client keeps no statistics.
    public var statistics: PoolStatistics? { nil }

    public func fanOut(
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

    public func withConnection<Value: Sendable>(
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

/// Lifeguard's `PostgresCluster` over the hosts of the URL: the lanes of
/// ``LifeguardTarget``, `budget` connections per host, `.retrieval` on a standby within the lag
/// bound (the primary when none is usable), every other lane on the primary.
public struct ClusterTarget: BenchTarget {
    /// The cluster driven.
    public let cluster: PostgresCluster
    let laneMap: [Lane: Lane]

    /// A cluster over `configuration`'s hosts, configured as ``LifeguardTarget`` configures its
    /// pool.
    ///
    /// - Throws: ``Lifeguard/LifeguardError`` for a configuration the cluster refuses.
    public init(configuration: PostgresPool.Configuration, lanesUsed: Set<Lane>, budget: Int, logger: Logger) throws {
        let single = LifeguardTarget.configuration(configuration, lanesUsed: lanesUsed, budget: budget)
        var cluster = PostgresCluster.Configuration(pool: single.configuration)
        cluster.laneHosts = cluster.laneHosts.filter { single.configuration.lanes[$0.key] != nil }
        self.cluster = try PostgresCluster(configuration: cluster, logger: logger)
        self.laneMap = single.laneMap
    }

    public func run() async { await self.cluster.run() }
    /// Shuts both pools down with a grace period of 5 s.
    public func shutdown() { self.cluster.shutdown(gracePeriod: .seconds(5)) }
    /// The primary pool's statistics.
    public var statistics: PoolStatistics? { self.cluster.primary.statistics() }
    /// Both pools' budgets.
    public var leaseCapacity: Int? { self.cluster.primary.configuration.budget + (self.cluster.standbys?.configuration.budget ?? 0) }

    public func fanOut(
        lane: Lane, count: Int,
        _ body: @escaping @Sendable (_ index: Int, _ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Void
    ) async throws {
        _ = try await self.cluster.fanOut(lane: self.laneMap[lane] ?? lane, maxConcurrent: count, Array(0..<count)) { lease, index in
            try await body(index) { statement in try await lease.execute(statement) }
        }
    }

    public func withConnection<Value: Sendable>(
        lane: Lane, _ body: @Sendable (_ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Value
    ) async throws -> Value {
        try await self.cluster.withConnection(lane: self.laneMap[lane] ?? lane) { lease in
            try await body { statement in try await lease.execute(statement) }
        }
    }
}
