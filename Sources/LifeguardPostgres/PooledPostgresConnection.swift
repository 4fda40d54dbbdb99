import Lifeguard
import Logging
import PostgresNIO
import NIOCore
import Synchronization

/// A PostgresNIO connection as the pool keeps it: what the server said on the wire (its
/// transaction status, whether every statement's result has come in), and what the leases did
/// with it (a statement in flight, a cancel sent, the raw connection handed out), so that the
/// pool resets it only when it is dirty and closes it only once its backend is gone.
///
/// The pool keeps these; a lease's body gets a ``PostgresLease`` over one.
public final class PooledPostgresConnection: Sendable, CustomStringConvertible {
    struct Tracking {
        /// A cancel was sent, or a statement failed in a way the wire cannot tell.
        var isDirty = false
        /// A lease stopped reading a result the server was still sending.
        var isResultAbandoned = false
        /// The raw connection was handed out, or the connection is being closed: it is never
        /// reused, and whoever still holds the raw handle finds it closed.
        var isRetired = false
        /// The statement running now, by number, if any.
        var statementInFlight: Int?
        var nextStatement = 0
        /// The last statement before the last reset (or the connect).
        var lastStatementBeforeReset = 0
        /// Cancel requests sent or about to be sent for this connection; a reset waits for them
        /// so that a late cancel cannot hit the next user's statement.
        var cancelsOutstanding = 0
        /// When the last statement ended (or the connection opened).
        var lastStatementEnded = PoolInstant.now
        /// Ends the wait of the statement in flight, if the connection closes under it.
        var onClose: (@Sendable (any Error) -> Void)?
        var isClosed = false
    }

    let postgres: PostgresConnection
    /// The channel under `postgres`, ours: the tap on it fills `wire`.
    let channel: any Channel
    /// What the server said on the wire.
    let wire: WireState
    /// The session's cancel key.
    let keyData: WireState.KeyData
    /// Whether a pooler (PgBouncer) stands between us and the server: the server's backend
    /// pid differs from the key data's, and statements outside a transaction may wait in the
    /// pooler for a server.
    let isBehindPooler: Bool
    /// Whether every lease that ran a statement is followed by a reset of the session
    /// (``PostgresPool/SessionReset/afterEveryLease``).
    let resetsAfterEveryLease: Bool
    /// Whether the pool's server side keeps prepared statements, shared by its connections.
    let preparedStatements: PreparedStatementSupport
    private let cancelRequests: CancelRequestSender
    private let tracking = Mutex(Tracking())
    /// The host the connection went to, its epoch then, and its server's role at connect.
    let host: HostOrigin

    /// Where a connection went: its host (an index into the factory's ``HostTable``), the
    /// host's epoch at connect, and the role its server had then.
    struct HostOrigin: Sendable {
        let index: Int
        let epoch: Int
        let role: ServerRole
    }

    init(
        postgres: PostgresConnection, channel: any Channel, wire: WireState, keyData: WireState.KeyData, isBehindPooler: Bool,
        resetsAfterEveryLease: Bool = false, canceller: CancelRequestSender, preparedStatements: PreparedStatementSupport,
        host: HostOrigin
    ) {
        self.host = host
        self.resetsAfterEveryLease = resetsAfterEveryLease
        self.postgres = postgres
        self.channel = channel
        self.wire = wire
        self.keyData = keyData
        self.isBehindPooler = isBehindPooler
        self.cancelRequests = canceller
        self.preparedStatements = preparedStatements
        let pid = keyData.processID
        channel.closeFuture.whenComplete { _ in
            let waiting = self.tracking.withLock { state in
                state.isClosed = true
                defer { state.onClose = nil }
                return state.onClose
            }
            waiting?(ConnectionClosed(backendPID: pid))
        }
    }

    /// Calls `ended` if the connection closes before ``unwatchClose()``; at once if it is closed.
    func watchClose(_ ended: @escaping @Sendable (any Error) -> Void) {
        let closed = self.tracking.withLock { state in
            if !state.isClosed { state.onClose = ended }
            return state.isClosed
        }
        if closed { ended(ConnectionClosed(backendPID: self.backendPID)) }
    }

    func unwatchClose() {
        self.tracking.withLock { $0.onClose = nil }
    }

    /// The server process serving this connection: the process id of its BackendKeyData
    /// (behind PgBouncer, PgBouncer's own number for this client).
    var backendPID: Int32 { self.keyData.processID }

    /// The connection and its backend's pid, for logs.
    public var description: String { "connection(pid \(self.backendPID))" }

    var condition: ConnectionCondition {
        if self.postgres.isClosed || self.wire.isClosed { return .broken }
        let tracked = self.tracking.withLock { state -> ConnectionCondition? in
            if state.isRetired { return .broken }
            let ranStatements = self.resetsAfterEveryLease && state.nextStatement != state.lastStatementBeforeReset
            return state.isDirty || ranStatements || state.statementInFlight != nil || state.cancelsOutstanding > 0 ? .needsReset : nil
        }
        if let tracked { return tracked }
        return self.wire.isIdleOutsideTransaction ? .reusable : .needsReset
    }

    /// Whether a transaction is open on the server, as of its last ReadyForQuery.
    var isInTransaction: Bool { self.wire.isInTransaction }

    /// Busy while a statement runs; otherwise idle since the last one ended.
    var activity: LeaseActivity {
        self.tracking.withLock { state in
            state.statementInFlight != nil ? .busy : .idle(since: state.lastStatementEnded)
        }
    }

    /// The error for a statement on a connection the server or the network already closed.
    struct ConnectionClosed: Error, CustomStringConvertible {
        let backendPID: Int32
        var description: String { "the connection to PostgreSQL (backend pid \(self.backendPID)) is closed" }
    }

    /// Throws when the connection is closed. PostgresNIO never completes a statement written to
    /// a closed channel, so nothing may be sent on one.
    func checkOpen() throws {
        if self.postgres.isClosed || self.wire.isClosed { throw ConnectionClosed(backendPID: self.backendPID) }
    }

    /// Marks a statement as running; returns its number.
    func beginStatement() -> Int {
        self.tracking.withLock { state in
            state.nextStatement += 1
            state.statementInFlight = state.nextStatement
            return state.nextStatement
        }
    }

    /// Marks a statement as done.
    func endStatement(_ number: Int) {
        let now = PoolInstant.now
        self.tracking.withLock { state in
            if state.statementInFlight == number { state.statementInFlight = nil }
            state.lastStatementEnded = now
        }
    }

    /// The lease handed out the raw connection: whoever holds it could use it after the lease,
    /// under the next lease's feet. The connection is never reused.
    func retire() {
        self.tracking.withLock { $0.isRetired = true }
    }

    /// Whether statement `number` is still running.
    func isRunning(_ number: Int) -> Bool {
        self.tracking.withLock { $0.statementInFlight == number }
    }

    /// Registers a cancel request for statement `number`; `false` when it is no longer running.
    func beginCancel(of number: Int) -> Bool {
        self.tracking.withLock { state in
            guard state.statementInFlight == number else { return false }
            state.cancelsOutstanding += 1
            state.isDirty = true
            return true
        }
    }

    func endCancel() {
        self.tracking.withLock { $0.cancelsOutstanding -= 1 }
    }

    var hasOutstandingCancels: Bool { self.tracking.withLock { $0.cancelsOutstanding > 0 } }

    /// Sends one CancelRequest for this session.
    func sendCancelRequest() async throws {
        try await self.cancelRequests.send(self.keyData)
    }

    /// The lease stopped reading a result the server is still sending. Reading the rest
    /// through PostgresNIO could take seconds, so the connection is closed instead (which
    /// cancels the statement on the server and drops the rest unread), and replaced.
    func abandonResult() {
        self.tracking.withLock { state in
            state.isResultAbandoned = true
            state.isRetired = true
        }
    }

    /// Whether a lease stopped reading a result the server was still sending.
    var isResultAbandoned: Bool { self.tracking.withLock { $0.isResultAbandoned } }

    /// Forgets every mark once the connection was reset.
    func markClean() {
        self.tracking.withLock { state in
            state.isDirty = false
            state.isResultAbandoned = false
            state.statementInFlight = nil
            state.lastStatementBeforeReset = state.nextStatement
        }
    }

    /// Ends the session so that the server's backend is gone when this returns: a statement
    /// still running is cancelled, a Terminate is sent, and the server's own close of the
    /// socket is awaited, at most `timeout`. Closing the socket at once would leave a backend
    /// that runs on (a `pg_sleep` notices no closed socket) while the pool opens its
    /// replacement, over the budget.
    func terminate(within timeout: Duration, logger: Logger) async {
        self.retire()
        if !self.wire.isClosed {
            if !self.wire.isSettled {
                try? await self.sendCancelRequest()
            }
            let channel = self.channel
            channel.eventLoop.execute {
                try? channel.pipeline.syncOperations.handler(type: ProtocolTap.self).sendTerminate()
            }
            let wire = self.wire
            let gone = await withTaskGroup(of: Bool.self) { group in
                group.addTask { await wire.awaitClosed(); return true }
                group.addTask {
                    // Closing the channel is what ends the other child's wait.
                    guard (try? await Task.sleep(for: timeout)) != nil else { return true }
                    channel.close(promise: nil)
                    return false
                }
                let first = await group.next()!
                group.cancelAll()
                return first
            }
            if !gone {
                logger.warning(
                    "Lifeguard: the server did not end the session within its exit timeout; closing the socket, its backend may still run",
                    metadata: ["pid": "\(self.backendPID)", "timeout": "\(timeout)"])
            }
        }
        do {
            try await self.postgres.close()
        } catch {
            logger.trace("Lifeguard: the connection was already closed", metadata: ["error": "\(String(describing: error))"])
        }
    }
}


/// Whether the server side keeps a connection's prepared statements: true until a statement
/// prepared on a connection is found missing, as behind PgBouncer in transaction mode.
final class PreparedStatementSupport: Sendable {
    private let supported = Atomic<Bool>(true)

    var areSupported: Bool { self.supported.load(ordering: .relaxed) }

    /// Records that they are not; `true` for the first caller only.
    func markUnsupported() -> Bool {
        self.supported.exchange(false, ordering: .relaxed)
    }
}
