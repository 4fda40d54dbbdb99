import Lifeguard
import Logging
import PostgresNIO
import Synchronization

/// A connection leased from a ``PostgresPool`` for the duration of a `withConnection` or
/// `withTransaction` closure.
///
/// Run statements through the lease, not through the raw connection: the lease sees each one,
/// so it knows when a transaction is open (the connection is then reset before reuse) and when a
/// statement is running (a cancelled task then cancels it on the server). A lease must not
/// escape its closure; using it afterwards throws ``LifeguardError/Code/leaseEnded``.
public final class PostgresLease: Sendable {
    let connection: PooledPostgresConnection
    let canceller: ServerCanceller?
    let logger: Logger
    /// Spans for the statements, when a tracer records.
    let tracing: StatementTracing?
    /// The lane this lease belongs to.
    public let lane: Lane
    private let hasEnded = Atomic<Bool>(false)
    /// Behind a pooler: a statement that may change the session ran in the open transaction,
    /// so its changes are undone before that transaction commits.
    private let sessionChangedInTransaction = Atomic<Bool>(false)

    /// The logger PostgresNIO gets with each statement: the pool's, or a silent one when the
    /// pool's would drop what PostgresNIO logs there. PostgresNIO logs a statement at `.debug`
    /// and `.trace` only, but it adds the connection's ID to the logger's metadata for every
    /// statement, and a handler such as swift-log's `StreamLogHandler` renders all its metadata
    /// again on every change: 2,700–4,800 client instructions per statement, 2–3% of a
    /// `SELECT 1` (counted under qemu-user). Read per statement, so a handler whose level
    /// changes at run time is followed.
    private var statementLogger: Logger {
        self.logger.logLevel > .debug ? Self.silentLogger : self.logger
    }

    private static let silentLogger = Logger(label: "lifeguard.statement", factory: { _ in SwiftLogNoOpLogHandler() })

    @usableFromInline
    init(connection: PooledPostgresConnection, lane: Lane, canceller: ServerCanceller?, logger: Logger, tracing: StatementTracing?) {
        self.connection = connection
        self.lane = lane
        self.canceller = canceller
        self.logger = logger
        self.tracing = tracing
    }

    /// The server process that serves this connection (`pg_backend_pid()`), from the session's
    /// cancel key. Behind a pooler (``isBehindPooler``) it is the pooler's number for this
    /// client instead: the server process changes from transaction to transaction.
    public var backendPID: Int32 { self.connection.backendPID }

    /// Whether a pooler in transaction mode (PgBouncer) stands between this connection and the
    /// server, learned at connect: the server's `pg_backend_pid()` differs from the session's
    /// cancel key. Behind one, statements that change the session are refused (see
    /// ``PostgresPoolError/Code/sessionStateBehindPooler``).
    public var isBehindPooler: Bool { self.connection.isBehindPooler }

    /// Whether a transaction opened through this lease is still open, as far as the lease saw.
    public var isInTransaction: Bool { self.connection.isInTransaction }

    /// The underlying PostgresNIO connection, for what the lease does not offer (LISTEN, COPY).
    ///
    /// A handle kept past the lease could still run statements under the next lease's feet,
    /// and the pool could not tell, so a connection whose raw handle was taken is never
    /// reused: when the lease ends it is closed (and replaced), and the handle then fails.
    /// Statements through the raw handle are not awaited to their commit as the lease's are.
    ///
    /// - Throws: ``LifeguardError/Code/leaseEnded`` after the lease ended.
    public func rawConnection() throws -> PostgresConnection {
        try self.checkActive()
        self.connection.retire()
        return self.connection.postgres
    }

    /// Runs a statement and returns all its rows.
    ///
    /// - Parameters:
    ///   - query: The statement, with its bindings (`"SELECT * FROM t WHERE id = \(id)"`).
    ///   - file: The caller's file, for PostgresNIO's logs. Leave the default.
    ///   - line: The caller's line, for PostgresNIO's logs. Leave the default.
    /// - Returns: The rows, collected.
    /// - Throws: The server's error (`PSQLError`), `CancellationError` if the task was cancelled
    ///   before or while the statement ran, or ``LifeguardError/Code/leaseEnded``.
    @discardableResult
    public func query(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws -> [PostgresRow] {
        try self.checkActive()
        try Task.checkCancellation()
        // Collected on the connection's event loop and handed over once: no row sequence to
        // iterate from the task (see `execute`).
        return try await self.run(sql: query.sql, file: file, line: line) {
            try await self.result(of: self.connection.postgres.query(query, logger: self.statementLogger, file: file, line: line)).rows
        }
    }

    /// Runs a statement and discards its rows.
    ///
    /// - Parameters:
    ///   - query: The statement.
    ///   - file: The caller's file, for PostgresNIO's logs. Leave the default.
    ///   - line: The caller's line, for PostgresNIO's logs. Leave the default.
    /// - Throws: As ``query(_:file:line:)``.
    public func execute(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws {
        try self.checkActive()
        try Task.checkCancellation()
        // PostgresNIO's future-based query reads the result to its end on the connection's
        // event loop and resumes the task once. Its async one returns a row sequence as soon as
        // the server describes the result; reading that sequence resumes the task again, and
        // builds a back-pressure state machine per statement with generic metadata lookups.
        // Measured: 4–12% more `SELECT 1`s per second, 5–8 µs less client CPU for each.
        try await self.run(sql: query.sql, file: file, line: line) {
            _ = try await self.result(of: self.connection.postgres.query(query, logger: self.statementLogger, file: file, line: line) { _ in })
        }
    }

    /// Runs a statement and streams its rows to `consume`.
    ///
    /// The statement counts as running until `consume` returns (PostgresNIO returns the row
    /// sequence before the server has executed the statement): cancelling the task while it
    /// runs cancels the statement on the server.
    ///
    /// When `consume` returns before the result's end: a read (`SELECT`, `VALUES`, `TABLE`,
    /// `SHOW`), or any statement inside a transaction, is cancelled on the server and its
    /// connection replaced; any other statement outside a transaction (`INSERT … RETURNING`)
    /// runs to its end first, so that what it wrote is committed when this returns. A `SELECT`
    /// of a function that writes counts as a read: read its result to the end, or run it in
    /// a transaction. When `consume` throws, the rest is cancelled.
    ///
    /// - Parameters:
    ///   - query: The statement.
    ///   - consume: Reads the rows; they are not available after it returns.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    ///   - file: The caller's file, for PostgresNIO's logs. Leave the default.
    ///   - line: The caller's line, for PostgresNIO's logs. Leave the default.
    /// - Returns: What `consume` returns.
    /// - Throws: As ``query(_:file:line:)``, or what `consume` throws.
    public func withRows<Value>(
        _ query: PostgresQuery,
        isolation: isolated (any Actor)? = #isolation,
        file: String = #fileID,
        line: Int = #line,
        _ consume: (PostgresRowSequence) async throws -> Value
    ) async throws -> Value {
        try self.checkActive()
        try Task.checkCancellation()
        return try await self.run(query, file: file, line: line, consume)
    }

    /// Runs a prepared statement and returns its rows, decoded.
    ///
    /// PostgresNIO prepares the statement on this connection the first time a lease runs it,
    /// and after that only binds and executes it: the server parses and plans it once per
    /// connection, and each run is one round trip with fewer messages than a plain statement.
    /// The lease sees the statement as it sees a plain one, so the connection stays clean (no
    /// reset when the lease ends), and cancelling the task cancels the statement on the server.
    ///
    /// Behind PgBouncer in transaction mode, prepared statements need its
    /// `max_prepared_statements` setting (PgBouncer 1.21 or later). Without it, the first
    /// statement found missing (SQLSTATE 26000 or 42P05) switches the pool to running its
    /// prepared statements unnamed, with a warning logged once.
    ///
    /// - Parameters:
    ///   - statement: The statement and its bindings.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    ///   - file: The caller's file, for PostgresNIO's logs. Leave the default.
    ///   - line: The caller's line, for PostgresNIO's logs. Leave the default.
    /// - Returns: The rows, decoded by the statement's `decodeRow(_:)`.
    /// - Throws: As ``query(_:file:line:)``, or what `decodeRow(_:)` throws.
    @discardableResult
    public func query<Statement: PostgresPreparedStatement>(
        _ statement: Statement,
        isolation: isolated (any Actor)? = #isolation,
        file: String = #fileID,
        line: Int = #line
    ) async throws -> [Statement.Row] {
        try self.checkActive()
        try Task.checkCancellation()
        return try await self.runPrepared(statement, file: file, line: line)
    }

    /// Runs a prepared statement and discards its rows.
    ///
    /// - Parameters:
    ///   - statement: The statement and its bindings.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    ///   - file: The caller's file, for PostgresNIO's logs. Leave the default.
    ///   - line: The caller's line, for PostgresNIO's logs. Leave the default.
    /// - Throws: As ``query(_:file:line:)``, or what `decodeRow(_:)` throws.
    public func execute<Statement: PostgresPreparedStatement>(
        _ statement: Statement,
        isolation: isolated (any Actor)? = #isolation,
        file: String = #fileID,
        line: Int = #line
    ) async throws {
        try self.checkActive()
        try Task.checkCancellation()
        _ = try await self.runPrepared(statement, file: file, line: line)
    }

    /// Runs a prepared statement, or, where the server side cannot keep prepared statements
    /// (PgBouncer in transaction mode before 1.21 moves a client between server connections,
    /// so a statement prepared on one is missing on the next: SQLSTATE 26000, or 42P05 when a
    /// name is prepared twice), the same statement unnamed, parsed each time. The first such
    /// error switches the whole pool to unnamed statements, logged once; the statement that
    /// met it runs again unnamed when no transaction is open (neither error ran it).
    private func runPrepared<Statement: PostgresPreparedStatement>(
        _ statement: Statement, isolation: isolated (any Actor)? = #isolation, file: String, line: Int
    ) async throws -> [Statement.Row] {
        let unnamed = {
            try await self.run(sql: Statement.sql, file: file, line: line) {
                let query = PostgresQuery(unsafeSQL: Statement.sql, binds: try statement.makeBindings())
                return try await self.result(of: self.connection.postgres.query(query, logger: self.statementLogger, file: file, line: line))
                    .rows.map { try statement.decodeRow($0) }
            }
        }
        // Behind a pooler, names prepared on one server connection are missing on the next, or
        // name another client's statement there: unnamed statements are sound everywhere.
        if !self.connection.preparedStatements.areSupported || self.connection.isBehindPooler {
            return try await unnamed()
        }
        do {
            return try await self.run(sql: Statement.sql, file: file, line: line) {
                var rows: [Statement.Row] = []
                for try await row in try await self.connection.postgres.execute(statement, logger: self.statementLogger, file: file, line: line) {
                    rows.append(row)
                }
                return rows
            }
        } catch let error as PSQLError where ["26000", "42P05"].contains(error.serverInfo?[.sqlState] ?? "") {
            if self.connection.preparedStatements.markUnsupported() {
                self.logger.warning(
                    "Lifeguard: the server side does not keep prepared statements (PgBouncer in transaction mode before 1.21?); running them unnamed from now on",
                    metadata: ["sqlstate": "\(error.serverInfo?[.sqlState] ?? "")"])
            }
            // PostgresNIO now holds a broken prepared state for this name on this connection.
            self.connection.retire()
            if self.connection.isInTransaction { throw error }
            return try await unnamed()
        }
    }

    /// Awaits a statement's result. With server-side cancellation, until the statement ends: a
    /// cancelled task's statement is cancelled on the server and fails at once, and the
    /// canceller must see it running until then. Without, a cancelled task stops waiting at
    /// once, as reading a row sequence would, and the statement runs on: the connection is
    /// reset after it.
    private func result<Value: Sendable>(of future: EventLoopFuture<Value>) async throws -> Value {
        try await CancellableWait.value(of: future, on: self.connection, endsOnCancellation: self.canceller == nil)
    }

    /// Runs `COMMIT`. A failure that is not the server's answer (the connection was lost
    /// while `COMMIT` ran) leaves the transaction's outcome unknown, and says so.
    ///
    /// - Throws: The server's refusal (`PSQLError`, e.g. a deferred constraint's 23503: nothing
    ///   was committed), ``PostgresPoolError/Code/commitOutcomeUnknown``, or
    ///   `CancellationError` when the task was cancelled before `COMMIT` was sent.
    func commit() async throws {
        try Task.checkCancellation()
        do {
            try await self.execute("COMMIT")
        } catch let error as PSQLError where error.serverInfo != nil {
            throw error
        } catch let error as PostgresPoolError where error.code == .commitFailed || error.code == .commitOutcomeUnknown {
            throw error
        } catch {
            throw PostgresPoolError(
                code: .commitOutcomeUnknown, serverMessage: nil,
                detail: "the COMMIT failed with \(PostgresPoolError.describe(error))", backendPID: self.backendPID)
        }
    }

    /// Runs a statement even when the task is cancelled: for `ROLLBACK` after a failure.
    func runIgnoringCancellation(_ query: PostgresQuery) async throws {
        try self.checkActive()
        try await self.run(query, file: #fileID, line: #line) { rows in
            for try await _ in rows {}
        }
    }

    private func run<Value>(
        _ query: PostgresQuery,
        isolation: isolated (any Actor)? = #isolation,
        file: String,
        line: Int,
        _ consume: (PostgresRowSequence) async throws -> Value
    ) async throws -> Value {
        try await self.run(sql: query.sql, file: file, line: line) {
            let rows = try await self.connection.postgres.query(query, logger: self.statementLogger, file: file, line: line)
            let value: Value
            do {
                value = try await consume(rows)
            } catch {
                // Nobody will read the rest: cancel it on the server, replace the connection.
                if !self.connection.wire.hasFinishedExecuting { self.connection.abandonResult() }
                throw error
            }
            // `consume` returned before the server finished sending the result. A read is
            // cancelled on the server and its connection replaced. A statement that may write,
            // outside a transaction, runs to its end instead (PostgresNIO reads the rest once
            // the iterator is gone), so that its writes commit before the lease reports success.
            if !self.connection.wire.hasFinishedExecuting,
               self.connection.isInTransaction || StatementKind(of: query.sql) == .read {
                self.connection.abandonResult()
            }
            return value
        }
    }

    /// Runs one statement's `body` as the statement in flight on this connection: cancelling
    /// the task cancels it on the server. It reports success only once the server answered the
    /// statement's Sync: a statement outside a transaction has then committed (PostgresNIO
    /// reports a statement without rows at its CommandComplete, before the commit), and a
    /// commit the server refused (a deferred constraint) throws its SQLSTATE.
    /// Runs `body`, the statement `sql`, in its span when a tracer records (see ``StatementTracing``).
    private func run<Value>(
        sql: String,
        file: String,
        line: Int,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Value
    ) async throws -> Value {
        guard let tracing = self.tracing else { return try await self.runStatement(sql: sql, body) }
        return try await tracing.withSpan(sql: sql, file: file, line: line) {
            try await self.runStatement(sql: sql, body)
        }
    }

    private func runStatement<Value>(
        sql: String,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Value
    ) async throws -> Value {
        let kind = StatementKind(of: sql)
        guard self.connection.isBehindPooler else { return try await self.runStatement(kind: kind, body) }
        if kind == .mayChangeSession { return try await self.runUndoingSessionChanges(body) }
        if kind == .commit, self.sessionChangedInTransaction.load(ordering: .relaxed) {
            try await self.undoSessionChanges()
        }
        // A ROLLBACK undid the changes with the rest of the transaction.
        defer { if !self.connection.isInTransaction { self.sessionChangedInTransaction.store(false, ordering: .relaxed) } }
        return try await self.runStatement(kind: kind, body)
    }

    /// Behind a pooler in transaction mode, runs a statement that may change the session (`DO`,
    /// `CALL`, `set_config`, …) so that what it changes in the server session, which the
    /// pooler hands to other clients next, is undone before its transaction commits: outside
    /// a transaction, in one of its own (`BEGIN`, the statement, the reset, `COMMIT`); inside
    /// one, the reset runs before that transaction's `COMMIT` (a `ROLLBACK` undoes the rest).
    /// A `DO` or `CALL` that commits inside therefore fails with 2D000 behind a pooler.
    private func runUndoingSessionChanges<Value>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Value
    ) async throws -> Value {
        if self.connection.isInTransaction {
            let value = try await self.runStatement(kind: .other, body)
            self.sessionChangedInTransaction.store(true, ordering: .relaxed)
            return value
        }
        try await self.runInternal("BEGIN", kind: .transactionControl)
        let value: Value
        do {
            value = try await self.runStatement(kind: .other, body)
            try await self.undoSessionChanges()
        } catch {
            try? await self.runInternal("ROLLBACK", kind: .transactionControl)
            throw error
        }
        try await self.runInternal("COMMIT", kind: .commit)
        return value
    }

    /// Behind a pooler, inside a transaction: resets what statements changed in the session
    /// (``PostgresPool/SessionReset/afterEveryLease``'s reset) before the transaction commits.
    /// A transaction that already failed rolls back at its `COMMIT`, undoing them anyway.
    private func undoSessionChanges() async throws {
        self.sessionChangedInTransaction.store(false, ordering: .relaxed)
        guard !self.connection.wire.isInFailedTransaction else { return }
        try await self.runInternal(PostgresPool.SessionReset.statement, kind: .other)
    }

    /// Runs one of the lease's own statements, classified as `kind`.
    private func runInternal(_ sql: String, kind: StatementKind) async throws {
        try await self.runStatement(kind: kind) {
            _ = try await self.result(of: self.connection.postgres.query(PostgresQuery(unsafeSQL: sql), logger: self.statementLogger) { _ in })
        }
    }

    private func runStatement<Value>(
        kind: StatementKind,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Value
    ) async throws -> Value {
        try self.connection.checkOpen()
        if kind == .changesSession || kind == .mayChangeSession {
            if kind == .changesSession, self.connection.isBehindPooler {
                // Behind a pooler in transaction mode the session is a server connection that
                // other clients get next: closing ours would not clean it.
                throw PostgresPoolError(
                    code: .sessionStateBehindPooler,
                    detail: "refused before it was sent", backendPID: self.backendPID)
            }
            // SET, temporary tables, session advisory locks, LISTEN, PREPARE: whoever leases
            // the connection next would inherit them. It is closed when this lease ends.
            self.connection.retire()
        }
        if self.connection.isBehindPooler {
            // While the pooler is suspect, a statement that may write waits for a server before
            // it is sent (see ProtocolTap).
            self.connection.wire.setNextMayWrite(kind.mayWrite)
        }
        let statement = self.connection.beginStatement()
        let value: Value
        do {
            value = try await withTaskCancellationHandler {
                try await body()
            } onCancel: {
                self.canceller?.cancel(self.connection, statement: statement)
            }
        } catch {
            // The server's error comes before its ReadyForQuery, in the same read as a rule:
            // await it, so that the connection is known clean (or not) when the lease ends.
            if error is PSQLError, self.connection.wire.isSettled == false, (error as? PSQLError)?.serverInfo != nil {
                _ = await self.connection.wire.settle()
            }
            if error is PooledPostgresConnection.ConnectionClosed, case .refused(let refusal) = await self.connection.wire.settle() {
                // The server refused the statement's commit (a deferred constraint), and
                // PostgresNIO closed the connection for the error after CommandComplete before
                // it reported the statement's end: the refusal is what happened.
                self.connection.endStatement(statement)
                throw PostgresPoolError(code: .commitFailed, serverError: refusal, backendPID: self.backendPID)
            }
            self.connection.endStatement(statement)
            if self.connection.wire.wasUnanswered { throw self.noServerAnswered(kind) }
            if self.connection.isBehindPooler, let refusal = self.poolerRefusal(error) { throw refusal }
            // The server's "canceling statement due to user request", or a connection the
            // canceller closed because the cancel could not reach the statement, is our own
            // doing: report the cancellation the way Swift code expects it.
            if Task.isCancelled {
                let postgresError = error as? PSQLError
                if postgresError?.serverInfo?[.sqlState] == "57014"
                    || (self.connection.wire.isClosed && (error is PooledPostgresConnection.ConnectionClosed || postgresError?.serverInfo == nil)) {
                    throw CancellationError()
                }
            }
            throw error
        }
        if self.connection.isResultAbandoned {
            // Nothing to wait for: the reset awaits the rest of the result.
            self.connection.endStatement(statement)
            return value
        }
        switch await self.connection.wire.settle() {
        case .ready:
            self.connection.endStatement(statement)
            return value
        case .refused(let error):
            // PostgresNIO takes an error after CommandComplete for a broken protocol and closes
            // the connection; never hand it out meanwhile.
            self.connection.retire()
            self.connection.endStatement(statement)
            throw PostgresPoolError(code: .commitFailed, serverError: error, backendPID: self.backendPID)
        case .lost(let error):
            self.connection.endStatement(statement)
            if self.connection.wire.wasUnanswered { throw self.noServerAnswered(kind) }
            let code: PostgresPoolError.Code = self.connection.isInTransaction && kind != .commit ? .connectionLost : .commitOutcomeUnknown
            throw PostgresPoolError(code: code, sqlState: error?.sqlState, serverMessage: error?.message, detail: error?.detail, backendPID: self.backendPID)
        }
    }

    /// The error for a statement that no server took (behind a pooler during an outage: the
    /// pooler refused a fresh login's first statement, and the connection was closed while
    /// the statement waited): the database is unavailable. A statement held back before it
    /// was sent, or a read, changes nothing; a write that was already with the pooler when the
    /// trouble began may still run once a server is back, so its outcome is unknown.
    private func noServerAnswered(_ kind: StatementKind) -> any Error {
        let timeout = self.connection.wire.unansweredWithin ?? .zero
        let detail = "no server took the statement within connect_timeout (\(timeout)), and the pooler in front of PostgreSQL "
            + "(PgBouncer?) refuses new sessions: the database behind it is unavailable"
        if self.connection.wire.unansweredWasSent, kind.mayWrite {
            return PostgresPoolError(
                code: .commitOutcomeUnknown,
                detail: detail + "; the statement was with the pooler already and may still run once a server is back "
                    + "(within the pooler's query_wait_timeout)",
                backendPID: self.backendPID)
        }
        let cause = PostgresPoolError(code: .connectionLost, detail: detail + "; the statement was not run", backendPID: self.backendPID)
        return LifeguardError.databaseUnavailable(lane: self.lane, waited: timeout, lastError: cause)
    }

    /// PgBouncer's own refusal of a statement it found no server for (SQLSTATE 08P01, such as
    /// "server login has been failing" or `query_wait_timeout`): the statement was never sent
    /// to a server, and the database is unavailable, as when no server answers at all.
    private func poolerRefusal(_ error: any Error) -> LifeguardError? {
        guard let psql = error as? PSQLError, let server = psql.serverInfo, server[.sqlState] == "08P01" else { return nil }
        let cause = PostgresPoolError(
            code: .connectionLost, sqlState: server[.sqlState], serverMessage: server[.message],
            detail: "the pooler in front of PostgreSQL refused the statement before any server ran it", backendPID: self.backendPID)
        return LifeguardError.databaseUnavailable(lane: self.lane, waited: .zero, lastError: cause)
    }

    @usableFromInline
    func end() {
        self.hasEnded.store(true, ordering: .releasing)
    }

    private func checkActive() throws {
        if self.hasEnded.load(ordering: .acquiring) {
            throw LifeguardError.leaseEnded(lane: self.lane)
        }
    }
}
