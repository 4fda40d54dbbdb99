import Lifeguard
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization
import Tracing

/// Opens, validates, resets and closes PostgresNIO connections for the pool.
///
/// A ``PostgresPool`` makes its own; you do not call it. A lease's body gets a ``PostgresLease``
/// over the connection (``withLease(of:lane:isolation:_:)``), and its transactions are
/// `BEGIN` … `COMMIT` (``inTransaction(on:isolation:_:)``).
public final class PostgresConnectionFactory: TransactionalConnectionFactory {
    /// What a lease's body gets.
    public typealias Lease = PostgresLease

    let configuration: PostgresPool.Configuration
    @usableFromInline let logger: Logger
    /// Cancels a cancelled task's running statement on the server; `nil` when
    /// `serverSideCancellation` is off.
    @usableFromInline let canceller: ServerCanceller?
    /// Spans for statements, when a tracer records.
    @usableFromInline let tracing: StatementTracing?
    let eventLoopGroup: any EventLoopGroup
    /// Sends the CancelRequests of this factory's connections.
    let cancelRequests: CancelRequestSender
    /// Whether prepared statements can be used, for every connection of the pool.
    let preparedStatements = PreparedStatementSupport()
    private let nextConnectionID = Atomic<Int>(0)
    /// Whether the pooler in front (if any) has lately been slow to give statements a server.
    let poolerSuspicion = PoolerSuspicion()
    /// The probe of ``poolerIsUnavailable()`` under way, if any.
    private let poolerProbe = Mutex<Task<Bool, Never>?>(nil)

    init(configuration: PostgresPool.Configuration, logger: Logger, eventLoopGroup: any EventLoopGroup, tracer: (any Tracer)? = nil) {
        self.configuration = configuration
        self.tracing = tracer.map { StatementTracing(tracer: $0, configuration: configuration) }
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.cancelRequests = CancelRequestSender(configuration: configuration, eventLoopGroup: eventLoopGroup)
        self.canceller = configuration.serverSideCancellation
            ? ServerCanceller(logger: logger, backendExitTimeout: configuration.backendExitTimeout) : nil
    }

    /// Runs `body` with a ``PostgresLease`` over `connection`, and ends the lease when it returns.
    ///
    /// - Parameters:
    ///   - connection: The leased connection.
    ///   - lane: The lease's lane.
    ///   - isolation: The caller's actor, inherited.
    ///   - body: The lease's body.
    /// - Returns: What `body` returns.
    @inlinable
    public func withLease<Value>(
        of connection: PooledPostgresConnection, lane: Lane, isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresLease) async throws -> Value
    ) async throws -> Value {
        let lease = PostgresLease(connection: connection, lane: lane, canceller: self.canceller, logger: self.logger, tracing: self.tracing)
        defer { lease.end() }
        return try await body(lease)
    }

    /// `BEGIN`, then `COMMIT` when `body` returns, `ROLLBACK` when it throws or the task is
    /// cancelled.
    ///
    /// - Parameters:
    ///   - lease: The lease to run the transaction on.
    ///   - isolation: The caller's actor, inherited.
    ///   - body: Runs statements through the lease, inside the transaction.
    /// - Returns: What `body` returns, once committed.
    /// - Throws: What `body` throws (after the rollback), `CancellationError`, or the `COMMIT`'s
    ///   error (the server's refusal: nothing committed; or
    ///   ``PostgresPoolError/Code/commitOutcomeUnknown`` when the connection was lost during
    ///   `COMMIT`).
    public func inTransaction<Value>(
        on lease: PostgresLease, isolation: isolated (any Actor)? = #isolation, _ body: (PostgresLease) async throws -> Value
    ) async throws -> Value {
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

    /// Sends the CancelRequests of cancelled statements while the pool runs.
    public func runBackgroundWork() async {
        await self.canceller?.run()
    }

    /// The pool has stopped: no more statements to cancel.
    public func stopBackgroundWork() {
        self.canceller?.finish()
    }

    /// Opens a PostgresNIO connection with our `application_name` and timeout, over a channel
    /// of our own that carries a ``ProtocolTap``: what the server says on the wire that
    /// PostgresNIO keeps to itself is then ours to read.
    func openConnection() async throws -> (PostgresConnection, any Channel, WireState) {
        let password = try await self.password()
        let wire = WireState()
        let timeout = self.configuration.connectTimeout.timeAmount
        let eventLoop = self.eventLoopGroup.any()
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ProtocolTap(state: wire)) }
            }
        let channel: any Channel
        let tls: PostgresConnectionTLS
        if let directory = self.configuration.unixSocketDirectory {
            channel = try await bootstrap.connect(unixDomainSocketPath: "\(directory)/.s.PGSQL.\(self.configuration.port)").get()
            tls = .disable
        } else {
            channel = try await bootstrap.connect(host: self.configuration.host ?? "localhost", port: self.configuration.port).get()
            tls = try self.configuration.makeTLS()
        }
        var postgres = PostgresConnection.Configuration(
            establishedChannel: channel, tls: tls,
            username: self.configuration.username, password: password, database: self.configuration.database)
        postgres.options.connectTimeout = timeout
        if let host = self.configuration.host, self.configuration.unixSocketDirectory == nil, !host.isIPAddress {
            postgres.options.tlsServerName = host
        }
        postgres.options.additionalStartupParameters = [("application_name", self.configuration.applicationName)]
        let id = self.nextConnectionID.wrappingAdd(1, ordering: .relaxed).newValue
        do {
            let connection = try await PostgresConnection.connect(on: eventLoop, configuration: postgres, id: id, logger: self.logger)
            return (connection, channel, wire)
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }

    /// Whether the pooler in front of the server has no server to give: a fresh login's first
    /// statement is refused (PgBouncer refuses it while its logins to the server fail), or no
    /// login is possible. A first statement that merely waits (every server busy) is no proof
    /// of an outage. Callers at the same time share one probe.
    func poolerIsUnavailable() async -> Bool {
        let probe = self.poolerProbe.withLock { probe in
            if let probe { return probe }
            let task = Task { await self.probePooler() }
            probe = task
            return task
        }
        let unavailable = await probe.value
        self.poolerProbe.withLock { if $0 == probe { $0 = nil } }
        return unavailable
    }

    private func probePooler() async -> Bool {
        do {
            let probe = try await self.connect(probing: true)
            await probe.terminate(within: .seconds(1), logger: self.logger)
            return false
        } catch let error as PostgresPoolError {
            return !error.isFirstStatementUnanswered
        } catch {
            return true
        }
    }

    /// The password for the next connect: the provider's, within the connect timeout (a
    /// provider that never answers must not hold a slot of the budget), or the configured one.
    func password() async throws -> String? {
        guard let provider = self.configuration.passwordProvider else { return self.configuration.password }
        let timeout = self.configuration.connectTimeout
        let answer = Mutex<CheckedContinuation<String, any Error>?>(nil)
        let settle: @Sendable (Result<String, any Error>) -> Void = { result in
            answer.withLock { continuation in
                continuation?.resume(with: result)
                continuation = nil
            }
        }
        // Unstructured, so that a provider that ignores cancellation cannot hold this connect.
        var tasks: [Task<Void, Never>] = []
        defer { for task in tasks { task.cancel() } }
        return try await withCheckedThrowingContinuation { continuation in
            answer.withLock { $0 = continuation }
            tasks = [
                Task {
                    do { settle(.success(try await provider())) } catch { settle(.failure(error)) }
                },
                Task {
                    guard (try? await Task.sleep(for: timeout)) != nil else { return }
                    settle(.failure(PostgresPoolError(
                        code: .connectFailed, detail: "the password provider did not answer within connect_timeout (\(timeout))",
                        target: self.target)))
                },
            ]
        }
    }

    /// Opens a plain PostgresNIO connection, for tests and tools that watch the server.
    func openPostgresConnection() async throws -> PostgresConnection {
        try await self.openConnection().0
    }

    /// The server as configured, for errors.
    var target: String {
        if let directory = self.configuration.unixSocketDirectory { return "\(directory)/.s.PGSQL.\(self.configuration.port)" }
        let host = self.configuration.host ?? "localhost"
        return host.contains(":") ? "[\(host)]:\(self.configuration.port)" : "\(host):\(self.configuration.port)"
    }

    public func connect() async throws -> PooledPostgresConnection {
        try await self.connect(probing: false)
    }

    /// The most times a connect's first statement is given another `connect_timeout` because
    /// the pooler in front is busy rather than without a server.
    static let busyPoolerRounds = 10

    /// Opens a connection. `probing`: for ``poolerIsUnavailable()``, one `connect_timeout` for
    /// the first statement and no probe of its own.
    private func connect(probing: Bool) async throws -> PooledPostgresConnection {
        let (postgres, channel, wire): (PostgresConnection, any Channel, WireState)
        do {
            (postgres, channel, wire) = try await self.openConnection()
        } catch {
            throw PostgresPoolError.connectFailed(to: self.target, user: self.configuration.username, error)
        }
        // The login may come from a proxy that has no server behind it now (PgBouncer accepts
        // logins during an outage and holds queries up to its query_wait_timeout): a connection
        // counts as open once the server answered a statement. Without an answer within the
        // connect timeout, a fresh login asks the pooler whether it has servers at all: while
        // they are only busy, the first statement waits another connect timeout.
        let connectTimeout = self.configuration.connectTimeout
        let watcher = Task {
            for _ in 0..<(probing ? 1 : Self.busyPoolerRounds) {
                guard (try? await Task.sleep(for: connectTimeout)) != nil else { return }
                if !probing, !(await self.poolerIsUnavailable()) { continue }
                break
            }
            if !Task.isCancelled { channel.close(promise: nil) }
        }
        let serverPID: Int32?
        do {
            // Its wait ends when the channel closes too: PostgresNIO never completes a statement
            // whose channel closed under it (a server killed as we connect).
            let answer = CancellableWait.Wait<PostgresQueryResult>()
            channel.closeFuture.whenComplete { _ in answer.finish(.failure(PooledPostgresConnection.ConnectionClosed(backendPID: 0))) }
            let first: EventLoopFuture<PostgresQueryResult> = postgres.query("SELECT pg_backend_pid()", logger: self.logger, file: #fileID, line: #line)
            let result = try await withUnsafeThrowingContinuation { continuation in
                // `Wait` resumes the continuation once, whichever of the two comes first.
                answer.start(continuation)
                first.whenComplete { answer.finish($0) }
            }
            serverPID = try result.rows.first?.decode(Int32.self)
            watcher.cancel()
        } catch {
            watcher.cancel()
            try? await postgres.close()
            if let psql = error as? PSQLError, let serverInfo = psql.serverInfo {
                throw PostgresPoolError(
                    code: .connectFailed, sqlState: serverInfo[.sqlState], serverMessage: serverInfo[.message],
                    detail: "the login succeeded, the first statement failed", target: self.target)
            }
            var unanswered = PostgresPoolError(
                code: .connectFailed,
                detail: "the login succeeded but the server did not answer a first statement within connect_timeout (\(connectTimeout))"
                    + ": behind PgBouncer, the server behind it may be down (\(PostgresPoolError.describe(error)))",
                target: self.target)
            unanswered.isFirstStatementUnanswered = probing
            throw unanswered
        }
        guard let keyData = wire.keyData else {
            try? await postgres.close()
            throw PostgresPoolError(code: .connectionLost, serverMessage: "the server sent no BackendKeyData: statements could not be cancelled")
        }
        // A pooler answers the login with its own key data, so the backend that answers the
        // first statement has another pid; a statement outside a transaction may then wait in
        // the pooler for a server.
        let isBehindPooler = serverPID != keyData.processID
        if isBehindPooler {
            let answerTimeout = self.configuration.connectTimeout.timeAmount
            try? await channel.eventLoop.submit {
                try channel.pipeline.syncOperations.handler(type: ProtocolTap.self)
                    .watchAnswers(within: answerTimeout, suspicion: self.poolerSuspicion, askingWhetherUnavailable: { await self.poolerIsUnavailable() })
            }.get()
        }
        return PooledPostgresConnection(
            postgres: postgres, channel: channel, wire: wire, keyData: keyData, isBehindPooler: isBehindPooler,
            resetsAfterEveryLease: self.configuration.sessionReset == .afterEveryLease,
            canceller: self.cancelRequests, preparedStatements: self.preparedStatements)
    }

    public func validate(_ connection: PooledPostgresConnection) async throws {
        try connection.checkOpen()
        _ = try await connection.postgres.query("SELECT 1", logger: self.logger).collect()
    }

    public func reset(_ connection: PooledPostgresConnection) async throws {
        // A cancel still on its way must land before our ROLLBACK, not on it or after it.
        while connection.hasOutstandingCancels {
            try await Task.sleep(for: .milliseconds(1))
        }
        // The last statement's result must have come in full (an abandoned stream was
        // cancelled; the pool's reset timeout bounds this wait).
        if case .lost = await connection.wire.settle() {
            throw PooledPostgresConnection.ConnectionClosed(backendPID: connection.backendPID)
        }
        try connection.checkOpen()
        if connection.wire.isInTransaction {
            _ = try await connection.postgres.query("ROLLBACK", logger: self.logger).collect()
        }
        // Behind a pooler the reset would run on whichever server connection it hands out.
        if connection.resetsAfterEveryLease, !connection.isBehindPooler {
            _ = try await connection.postgres.query(PostgresQuery(unsafeSQL: PostgresPool.SessionReset.statement), logger: self.logger).get()
        }
        connection.markClean()
    }

    public func close(_ connection: PooledPostgresConnection) async {
        await connection.terminate(within: self.configuration.backendExitTimeout, logger: self.logger)
    }

    public func condition(of connection: PooledPostgresConnection) -> ConnectionCondition {
        connection.condition
    }

    public func activity(of connection: PooledPostgresConnection) -> LeaseActivity {
        connection.activity
    }
}
