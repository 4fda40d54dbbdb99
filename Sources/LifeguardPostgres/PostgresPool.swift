import CoreMetrics
import Lifeguard
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle
import Tracing

/// A Lifeguard pool of PostgreSQL connections: lanes, bounded fail-fast waits, connections
/// reset after abandoned leases, and cancellation that reaches the server.
///
/// It is the core's ``Lifeguard/ConnectionPool`` on PostgresNIO connections, so everything the
/// core offers is here as it is there (`withConnection`, `withTransaction`, `fanOut`,
/// `threeWindows`, `status()`, `statistics()`, `sizingAdvice()`, `report()`, `run()`,
/// `shutdown(gracePeriod:)`); a lease's body gets a ``PostgresLease``. A lease comes back on
/// every path: when its body throws, its task is cancelled, or it left a transaction open, the
/// connection is rolled back before reuse, or closed if that fails; a statement running when
/// the task is cancelled is cancelled on the server.
///
/// ```swift
/// var configuration = try PostgresPool.Configuration(url: "postgres://app:secret@db:5432/app")
/// configuration.budget = 20
/// configuration.lanes[.retrieval] = .init(reserved: 8, limit: 16, waitTimeout: .milliseconds(500))
/// let pool = try PostgresPool(configuration: configuration, logger: logger)
/// // Run it in a ServiceGroup, or: async let _ = pool.run()
/// let titles = try await pool.withConnection(lane: .retrieval) { lease in
///     try await lease.query("SELECT title FROM docs LIMIT 5").map { try $0.decode(String.self) }
/// }
/// ```
public typealias PostgresPool = ConnectionPool<PostgresConnectionFactory, SystemPoolClock>

extension PostgresPool {
    /// Creates a pool. It opens no connection until `run()` runs.
    ///
    /// - Parameters:
    ///   - configuration: Server, budget and lanes.
    ///   - eventLoopGroup: Where connections run. Default: NIO's shared group.
    ///   - logger: Receives connection failures and the pool's lifecycle. Never a password.
    ///     At `.debug` or `.trace` it also gets PostgresNIO's logs of each statement; above,
    ///     statements do not touch it.
    ///   - metricsFactory: Where the pool's metrics go, once per `metricsInterval` (1 s) while
    ///     `run()` runs; default: swift-metrics' bootstrapped backend (`MetricsSystem.factory`).
    ///   - tracer: Records a span per lease and one per statement, its child (OpenTelemetry's
    ///     database conventions; see ``Lifeguard/ConnectionPool/init(configuration:factory:clock:logger:metricsFactory:tracer:)``).
    ///     Default: the tracer bootstrapped with swift-distributed-tracing's
    ///     `InstrumentationSystem` when the pool is created; none records nothing, at no cost.
    /// - Throws: ``Lifeguard/LifeguardError`` with code
    ///   ``Lifeguard/LifeguardError/Code/invalidConfiguration`` listing every problem.
    public convenience init(
        configuration: Configuration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil,
        tracer: (any Tracer)? = nil
    ) throws(LifeguardError) {
        try configuration.validate()
        let tracer = Self.recordingTracer(tracer)
        let factory = PostgresConnectionFactory(
            configuration: configuration, logger: logger, eventLoopGroup: eventLoopGroup, tracer: tracer)
        try self.init(
            configuration: configuration.pool, factory: factory, clock: SystemPoolClock(), logger: logger,
            metricsFactory: metricsFactory, tracer: tracer ?? NoOpTracer())
    }

    /// The server, session and pool settings this pool was made with.
    public var postgresConfiguration: Configuration { self.factory.configuration }

    /// A write coalescer that this pool runs: its batches flush while `run()` runs, and on
    /// shutdown it flushes its queue before the pool stops granting leases. There is no second
    /// service to run (a coalescer made with ``WriteCoalescer/init(pool:configuration:)`` is
    /// yours to run).
    ///
    /// ```swift
    /// let steps = try pool.writeCoalescer()
    /// try await steps.insert(.init(into: "agent_steps", columns: ["agent", "step"], values: [agent, step]))
    /// ```
    ///
    /// - Parameter configuration: How writes are grouped.
    /// - Returns: The coalescer.
    /// - Throws: ``Lifeguard/LifeguardError/Code/invalidConfiguration`` listing every bad setting.
    public func writeCoalescer(configuration: WriteCoalescer.Configuration = .init()) throws(LifeguardError) -> WriteCoalescer {
        let coalescer = try WriteCoalescer(pool: self, configuration: configuration)
        self.add(companion: coalescer)
        return coalescer
    }

    /// Runs one statement on a leased connection and returns its rows.
    ///
    /// - Parameters:
    ///   - query: The statement.
    ///   - lane: The kind of work.
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    /// - Returns: The rows, collected.
    /// - Throws: As `withConnection(lane:fileID:line:function:isolation:_:)`.
    @discardableResult
    public func query(
        _ query: PostgresQuery, lane: Lane, fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function
    ) async throws -> [PostgresRow] {
        try await self.withConnection(lane: lane, fileID: fileID, line: line, function: function) { lease in
            try await lease.query(query, file: "\(fileID)", line: Int(line))
        }
    }
}
