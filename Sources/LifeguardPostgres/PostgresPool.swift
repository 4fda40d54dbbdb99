import CoreMetrics
import Lifeguard
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle

/// A Lifeguard pool of PostgreSQL connections: lanes, bounded fail-fast waits, connections
/// reset after abandoned leases, and cancellation that reaches the server.
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
public final class PostgresPool: Service, Sendable {
    /// The pool's configuration.
    public let configuration: Configuration
    @usableFromInline let pool: ConnectionPool<PostgresConnectionFactory, SystemPoolClock>
    @usableFromInline let canceller: ServerCanceller?
    @usableFromInline let logger: Logger
    /// The write coalescers this pool runs.
    let coalescers = PoolCoalescers()

    /// Creates a pool. It opens no connection until ``run()`` runs.
    ///
    /// - Parameters:
    ///   - configuration: Server, budget and lanes.
    ///   - eventLoopGroup: Where connections run. Default: NIO's shared group.
    ///   - logger: Receives connection failures and the pool's lifecycle. Never a password.
    ///     At `.debug` or `.trace` it also gets PostgresNIO's logs of each statement; above,
    ///     statements do not touch it.
    ///   - metricsFactory: Where the pool's metrics go, once per `metricsInterval` (1 s) while ``run()``
    ///     runs; default: swift-metrics' bootstrapped backend (`MetricsSystem.factory`).
    /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``
    ///   listing every problem.
    public init(
        configuration: Configuration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(LifeguardError) {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        let factory = PostgresConnectionFactory(configuration: configuration, logger: logger, eventLoopGroup: eventLoopGroup)
        self.pool = try ConnectionPool(
            configuration: configuration.pool, factory: factory, logger: logger, metricsFactory: metricsFactory)
        self.canceller = configuration.serverSideCancellation
            ? ServerCanceller(logger: logger, backendExitTimeout: configuration.backendExitTimeout) : nil
    }

    /// Runs the pool until it has shut down (graceful shutdown through ServiceLifecycle, or
    /// ``shutdown(gracePeriod:)``), with the write coalescers made by
    /// ``writeCoalescer(configuration:)``; cancelling the task closes every connection at once.
    ///
    /// On shutdown the coalescers stop taking writes and flush their queues first; then the
    /// pool stops granting leases and drains.
    public func run() async {
        guard self.coalescers.beginRun() else {
            self.logger.error("Lifeguard: run() was called twice on the same pool; the second call returns at once")
            return
        }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                if let canceller = self.canceller {
                    group.addTask { await canceller.run() }
                }
                group.addTask {
                    await self.pool.run(shutsDownOnGracefulShutdown: false)
                    self.canceller?.finish()
                    self.coalescers.finish()
                }
                for await coalescer in self.coalescers.added {
                    self.coalescers.started(coalescer)
                    group.addTask {
                        await coalescer.run()
                        self.coalescers.ended { self.pool.shutdown(gracePeriod: $0) }
                    }
                }
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
    }

    /// Stops granting leases and drains the pool; ``run()`` returns once every connection is
    /// closed. The pool's write coalescers first flush their queues (the pool stops granting
    /// leases once they are done), all within the grace period.
    ///
    /// - Parameter gracePeriod: How long the coalescers' flushes and running leases may
    ///   continue; `nil` uses the configuration's `shutdownGracePeriod`.
    public func shutdown(gracePeriod: Duration? = nil) {
        let pool = self.pool
        self.coalescers.shutdown(gracePeriod: gracePeriod ?? self.configuration.pool.shutdownGracePeriod) {
            pool.shutdown(gracePeriod: $0)
        }
    }

    /// A write coalescer that this pool runs: its batches flush while ``run()`` runs, and on
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
        self.coalescers.add(coalescer)
        return coalescer
    }

    /// A snapshot of connections, leases and queues.
    public func status() -> PoolStatus {
        self.pool.status()
    }

    /// Leases a connection in a lane for the duration of `body`.
    ///
    /// The connection comes back on every path. When `body` throws, the task is cancelled, or
    /// the lease left a transaction open, the connection is rolled back before reuse, or closed
    /// if that fails. A statement running when the task is cancelled is cancelled on the server.
    ///
    /// - Parameters:
    ///   - lane: The kind of work; its limits and wait timeout apply.
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Runs statements through the lease.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    /// - Returns: What `body` returns.
    /// - Throws: ``LifeguardError`` when no connection could be leased, `CancellationError`,
    ///   or what `body` throws.
    @inlinable @inline(__always)
    public func withConnection<Value>(
        lane: Lane,
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresLease) async throws -> Value
    ) async throws -> Value {
        try await self.pool.withConnection(lane: lane, fileID: fileID, line: line, function: function) { connection in
            try await self.withLease(of: connection, lane: lane, body)
        }
    }

    /// Runs `body` with a lease over `connection`, and ends the lease when it returns.
    @inlinable
    func withLease<Value>(
        of connection: PooledPostgresConnection, lane: Lane, isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresLease) async throws -> Value
    ) async throws -> Value {
        let lease = PostgresLease(connection: connection, lane: lane, canceller: self.canceller, logger: self.logger)
        defer { lease.end() }
        return try await body(lease)
    }

    /// Runs a pipeline in three short windows: `retrieve` on a lease of `retrieval`, released
    /// when it returns; `generate` with no connection held (a ``Lifeguard/GenerationStep``: a
    /// lease requested there is reported or refused); `persist` in a transaction on a lease of
    /// `write`.
    ///
    /// ```swift
    /// let id = try await pool.threeWindows(
    ///     retrieve: { lease in try await lease.query("SELECT body FROM docs WHERE topic = \(topic) LIMIT 8") },
    ///     generate: { rows in try await model.answer(question, context: rows) },
    ///     persist: { lease, answer in try await lease.execute("INSERT INTO answers (body) VALUES (\(answer))") })
    /// ```
    ///
    /// - Parameters:
    ///   - retrieval: The lane of the first window. Default: ``Lifeguard/Lane/retrieval``.
    ///   - write: The lane of the last window. Default: ``Lifeguard/Lane/write``.
    ///   - fileID: The caller's file, for reports. Leave the default.
    ///   - line: The caller's line, for reports. Leave the default.
    ///   - function: The caller's function, for reports. Leave the default.
    ///   - retrieve: Reads what the model needs.
    ///   - generate: Calls the model, with no connection held.
    ///   - persist: Writes the result, in a transaction.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    /// - Returns: What `persist` returns, once committed.
    public func threeWindows<Context, Answer, Saved>(
        retrieval: Lane = .retrieval,
        write: Lane = .write,
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        retrieve: (PostgresLease) async throws -> Context,
        generate: (Context) async throws -> Answer,
        persist: (PostgresLease, Answer) async throws -> Saved
    ) async throws -> Saved {
        let context = try await self.withConnection(lane: retrieval, fileID: fileID, line: line, function: function) {
            try await retrieve($0)
        }
        let answer = try await GenerationStep.run(fileID: fileID, line: line, function: function) {
            try await generate(context)
        }
        return try await self.withTransaction(lane: write, fileID: fileID, line: line, function: function) {
            try await persist($0, answer)
        }
    }

    /// Runs `body` in a transaction: `BEGIN`, then `COMMIT` when `body` returns, `ROLLBACK`
    /// when it throws or the task is cancelled.
    ///
    /// - Parameters:
    ///   - lane: The kind of work; usually ``Lane/write``.
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Runs statements through the lease, inside the transaction.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    /// - Returns: What `body` returns, once committed.
    /// - Throws: What `body` throws (after the rollback), `CancellationError`, the `COMMIT`'s
    ///   error (the server's refusal: nothing committed; or
    ///   ``PostgresPoolError/Code/commitOutcomeUnknown`` when the connection was lost during
    ///   `COMMIT`), or ``LifeguardError`` when no connection could be leased.
    public func withTransaction<Value>(
        lane: Lane,
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresLease) async throws -> Value
    ) async throws -> Value {
        try await self.withConnection(lane: lane, fileID: fileID, line: line, function: function) { lease in
            try await lease.execute("BEGIN")
            let value: Value
            do {
                value = try await body(lease)
            } catch {
                try? await lease.runIgnoringCancellation("ROLLBACK")
                throw error
            }
            if Task.isCancelled {
                try? await lease.runIgnoringCancellation("ROLLBACK")
                throw CancellationError()
            }
            try await lease.commit()
            return value
        }
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
    /// - Throws: As ``withConnection(lane:fileID:line:function:isolation:_:)``.
    @discardableResult
    public func query(
        _ query: PostgresQuery, lane: Lane, fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function
    ) async throws -> [PostgresRow] {
        try await self.withConnection(lane: lane, fileID: fileID, line: line, function: function) { lease in
            try await lease.query(query, file: "\(fileID)", line: Int(line))
        }
    }

    /// Runs `body` for each input on a lease of `lane`, at most `maxConcurrent` at a time,
    /// so that one complex retrieval cannot take the whole lane.
    /// The request is admitted or rejected whole (see
    /// ``Lifeguard/ConnectionPool/fanOut(lane:maxConcurrent:_:fileID:line:function:_:)``).
    ///
    /// ```swift
    /// let passages = try await pool.fanOut(lane: .retrieval, maxConcurrent: 4, embeddings) { lease, embedding in
    ///     try await lease.query("SELECT id FROM passages ORDER BY embedding <-> \(embedding) LIMIT 5")
    /// }
    /// ```
    ///
    /// - Parameters:
    ///   - lane: The lane of every lease.
    ///   - maxConcurrent: The most leases this request holds at once, at least 1.
    ///   - inputs: One lease runs for each.
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Runs statements for one input.
    /// - Returns: The outputs, in the order of `inputs`.
    /// - Throws: The first error (the other leases are cancelled): ``LifeguardError`` when a
    ///   lease failed, or what `body` threw.
    public func fanOut<Input: Sendable, Output: Sendable>(
        lane: Lane,
        maxConcurrent: Int,
        _ inputs: [Input],
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        _ body: @escaping @Sendable (PostgresLease, Input) async throws -> Output
    ) async throws -> [Output] {
        try await self.pool.fanOut(
            lane: lane, maxConcurrent: maxConcurrent, inputs, fileID: fileID, line: line, function: function
        ) { connection, input in
            try await self.withLease(of: connection, lane: lane) { lease in try await body(lease, input) }
        }
    }

    /// What the pool observed: waits, holds, outcomes by lane, utilization, watchdog findings.
    public func statistics() -> PoolStatistics {
        self.pool.statistics()
    }

    /// Pool sizes advised from ``statistics()`` by Little's law, with the reasoning.
    public func sizingAdvice() -> SizingAdvice {
        self.pool.sizingAdvice()
    }

    /// A human-readable report of ``statistics()`` and ``sizingAdvice()``.
    public func report() -> String {
        self.pool.report()
    }
}
