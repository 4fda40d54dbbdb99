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
    /// The hosts, which answer and as what.
    let hosts: Mutex<HostTable>
    /// Whether connections must be of a role, or there are hosts to choose from: roles are
    /// then read at connect and watched afterwards. Off for one host and any server, where
    /// the lease path does not pay for it.
    let watchesRoles: Bool
    /// Probes the hosts that are down while the pool runs.
    private let hostProbes = AsyncStream<Void>.makeStream()

    init(configuration: PostgresPool.Configuration, logger: Logger, eventLoopGroup: any EventLoopGroup, tracer: (any Tracer)? = nil) {
        self.configuration = configuration
        self.tracing = tracer.map { StatementTracing(tracer: $0, configuration: configuration) }
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.cancelRequests = CancelRequestSender(configuration: configuration, eventLoopGroup: eventLoopGroup)
        self.canceller = configuration.serverSideCancellation
            ? ServerCanceller(logger: logger, backendExitTimeout: configuration.backendExitTimeout) : nil
        self.hosts = Mutex(HostTable(hosts: configuration.unixSocketDirectory == nil ? configuration.hosts : []))
        self.watchesRoles = configuration.otherHosts.count > 0 || configuration.targetSessionAttributes != .any
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

    /// Sends the CancelRequests of cancelled statements while the pool runs, and with several
    /// hosts probes those that are down every `hostRecheckInterval`.
    public func runBackgroundWork() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.canceller?.run() }
            guard self.hosts.withLock({ $0.entries.count }) > 1 else { return }
            let interval = self.configuration.hostRecheckInterval
            let ticks = self.hostProbes.continuation
            group.addTask {
                while (try? await Task.sleep(for: interval)) != nil {
                    if case .terminated = ticks.yield() { return }
                }
            }
            for await _ in self.hostProbes.stream {
                await self.probeDownHosts()
            }
            group.cancelAll()
        }
    }

    /// The pool has stopped: no more statements to cancel, no more hosts to probe.
    public func stopBackgroundWork() {
        self.canceller?.finish()
        self.hostProbes.continuation.finish()
    }

    /// Opens and closes a connection to each host that is down, so that a host that answers
    /// again is used again (and its role known) without a request waiting on it.
    private func probeDownHosts() async {
        let down = self.hosts.withLock { $0.downHosts }
        await withDiscardingTaskGroup { group in
            for index in down {
                group.addTask {
                    guard let (probe, _) = try? await self.connect(toHost: index, probing: true) else { return }
                    await probe.terminate(within: .seconds(1), logger: self.logger)
                }
            }
        }
    }

    /// Opens a PostgresNIO connection with our `application_name` and timeout, over a channel
    /// of our own that carries a ``ProtocolTap``: what the server says on the wire that
    /// PostgresNIO keeps to itself is then ours to read.
    func openConnection(to host: PostgresPool.Configuration.Host? = nil) async throws -> (PostgresConnection, any Channel, WireState) {
        let host = host ?? self.configuration.hosts.first
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
            channel = try await bootstrap.connect(host: host?.name ?? "localhost", port: host?.port ?? self.configuration.port).get()
            tls = try self.configuration.makeTLS()
        }
        var postgres = PostgresConnection.Configuration(
            establishedChannel: channel, tls: tls,
            username: self.configuration.username, password: password, database: self.configuration.database)
        postgres.options.connectTimeout = timeout
        if let name = host?.name, self.configuration.unixSocketDirectory == nil, !name.isIPAddress {
            postgres.options.tlsServerName = name
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

    /// The server as configured, for errors: its hosts, comma-separated.
    var target: String {
        if let directory = self.configuration.unixSocketDirectory { return "\(directory)/.s.PGSQL.\(self.configuration.port)" }
        return self.configuration.hosts.map(\.description).joined(separator: ",")
    }

    /// One host, for errors.
    func target(ofHost index: Int) -> String {
        self.hosts.withLock { $0.entries[index].host }?.description ?? self.target
    }

    public func connect() async throws -> PooledPostgresConnection {
        try await self.connect(probing: false)
    }

    /// The most times a connect's first statement is given another `connect_timeout` because
    /// the pooler in front is busy rather than without a server.
    static let busyPoolerRounds = 10

    /// Opens a connection to the first host, in the order of ``HostTable/candidates(in:for:)``,
    /// whose server is what `targetSessionAttributes` asks for. A host that fails is marked
    /// down; one of another role is closed and the next tried. With `prefer-standby`, the
    /// first primary found is kept until every standby was tried.
    ///
    /// `probing`: for ``poolerIsUnavailable()``, one `connect_timeout` for the first statement
    /// and no probe of its own.
    private func connect(probing: Bool) async throws -> PooledPostgresConnection {
        let target = self.configuration.targetSessionAttributes
        let shuffles = self.configuration.loadBalanceHosts == .random
        let (candidates, fenced) = self.hosts.withLock { hosts in
            (hosts.candidates(in: shuffles ? hosts.entries.indices.shuffled() : Array(hosts.entries.indices), for: target), hosts.fenced)
        }
        var refusals = fenced.map { "\(self.target(ofHost: $0.index)): \($0.reason)" }
        var lastError: (any Error)?
        var fallback: PooledPostgresConnection?
        for index in candidates {
            let (connection, role): (PooledPostgresConnection, ServerRole)
            do {
                (connection, role) = try await self.connect(toHost: index, probing: probing)
            } catch {
                lastError = error
                refusals.append("\(self.target(ofHost: index)): \(error)")
                continue
            }
            if target == .preferStandby && !role.inRecovery {
                if fallback == nil { fallback = connection } else { await connection.terminate(within: .seconds(1), logger: self.logger) }
                continue
            }
            guard role.satisfies(target) else {
                refusals.append("\(self.target(ofHost: index)): \(role.name)")
                await connection.terminate(within: .seconds(1), logger: self.logger)
                continue
            }
            if let fallback { await fallback.terminate(within: .seconds(1), logger: self.logger) }
            return connection
        }
        if let fallback { return fallback }
        if candidates.count == 1 && fenced.isEmpty, let lastError { throw lastError }
        throw PostgresPoolError(
            code: .connectFailed,
            detail: "no host is \(target == .any ? "reachable" : "a server of target_session_attrs=\(target.rawValue)"): \(refusals.joined(separator: "; "))",
            target: self.target)
    }

    /// Opens a connection to one host, and reads its server's role with the first statement;
    /// the host table learns whether it answered, and as what.
    func connect(toHost index: Int, probing: Bool) async throws -> (PooledPostgresConnection, ServerRole) {
        do {
            return try await self.establish(toHost: index, probing: probing)
        } catch {
            self.hosts.withLock { $0.failed(index, because: PostgresPoolError.describe(error)) }
            throw error
        }
    }

    private func establish(toHost hostIndex: Int, probing: Bool) async throws -> (PooledPostgresConnection, ServerRole) {
        let host = self.hosts.withLock { $0.entries[hostIndex].host }
        let target = host?.description ?? self.target
        let (postgres, channel, wire): (PostgresConnection, any Channel, WireState)
        do {
            (postgres, channel, wire) = try await self.openConnection(to: host)
        } catch {
            throw PostgresPoolError.connectFailed(to: target, user: self.configuration.username, error)
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
        let role: ServerRole
        do {
            // Its wait ends when the channel closes too: PostgresNIO never completes a statement
            // whose channel closed under it (a server killed as we connect).
            let answer = CancellableWait.Wait<PostgresQueryResult>()
            channel.closeFuture.whenComplete { _ in answer.finish(.failure(PooledPostgresConnection.ConnectionClosed(backendPID: 0))) }
            // The role comes with it, from any server version (in_hot_standby is reported at
            // startup only from PostgreSQL 14 on, default_transaction_read_only from 14 on).
            let first: EventLoopFuture<PostgresQueryResult> = postgres.query(
                "SELECT pg_backend_pid(), pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'",
                logger: self.logger, file: #fileID, line: #line)
            let result = try await withUnsafeThrowingContinuation { continuation in
                // `Wait` resumes the continuation once, whichever of the two comes first.
                answer.start(continuation)
                first.whenComplete { answer.finish($0) }
            }
            let row = try result.rows.first?.decode((Int32, Bool, Bool).self)
            serverPID = row?.0
            role = ServerRole(inRecovery: row?.1 ?? false, readOnlyByDefault: row?.2 ?? false)
            watcher.cancel()
        } catch {
            watcher.cancel()
            try? await postgres.close()
            if let psql = error as? PSQLError, let serverInfo = psql.serverInfo {
                throw PostgresPoolError(
                    code: .connectFailed, sqlState: serverInfo[.sqlState], serverMessage: serverInfo[.message],
                    detail: "the login succeeded, the first statement failed", target: target)
            }
            var unanswered = PostgresPoolError(
                code: .connectFailed,
                detail: "the login succeeded but the server did not answer a first statement within connect_timeout (\(connectTimeout))"
                    + ": behind PgBouncer, the server behind it may be down (\(PostgresPoolError.describe(error)))",
                target: target)
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
        let epoch = self.hosts.withLock { $0.answered(hostIndex, role: role) }
        let connection = PooledPostgresConnection(
            postgres: postgres, channel: channel, wire: wire, keyData: keyData, isBehindPooler: isBehindPooler,
            resetsAfterEveryLease: self.configuration.sessionReset == .afterEveryLease,
            canceller: self.cancelRequests.to(host), preparedStatements: self.preparedStatements,
            host: PooledPostgresConnection.HostOrigin(index: hostIndex, epoch: epoch, role: role))
        return (connection, role)
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
        let condition = connection.condition
        guard self.watchesRoles, condition != .broken else { return condition }
        return self.isOfCurrentRole(connection) ? condition : .broken
    }

    /// Whether `connection`'s server is still of the role it had at connect, and its host has
    /// not changed role since: a write refused as read-only (SQLSTATE 25006) or a change of
    /// `in_hot_standby` reported by the server (a promotion) says it has, and the host's other
    /// connections, opened before, are then of the old role too.
    func isOfCurrentRole(_ connection: PooledPostgresConnection) -> Bool {
        let origin = connection.host
        let signals = connection.wire.roleSignals
        // A refusal as read-only is news only from a server that took writes at connect, to a
        // pool that asks for one (elsewhere a write on a standby is the statement's mistake).
        let wantsWrites = [.readWrite, .primary].contains(self.configuration.targetSessionAttributes)
        let refusedWrite = signals.refusedAsReadOnly && wantsWrites && origin.role.satisfies(.readWrite)
        let changed = refusedWrite || (signals.inHotStandby.map { $0 != origin.role.inRecovery } ?? false)
        let (isCurrent, noticed) = self.hosts.withLock { hosts -> (Bool, Bool) in
            let noticed = changed && hosts.epoch(of: origin.index) == origin.epoch
            if noticed { hosts.roleChanged(origin.index) }
            return (hosts.epoch(of: origin.index) == origin.epoch, noticed)
        }
        if noticed {
            self.logger.notice("Lifeguard: a host's role changed; its connections opened before are closed", metadata: [
                "host": "\(self.target(ofHost: origin.index))",
                "signal": "\(refusedWrite ? "a statement refused as read-only (SQLSTATE 25006)" : "in_hot_standby reported \(signals.inHotStandby == true ? "on" : "off")")",
            ])
        }
        return isCurrent
    }

    public func activity(of connection: PooledPostgresConnection) -> LeaseActivity {
        connection.activity
    }
}
