import PostgresNIO

/// What went wrong with a statement or a connection, in PostgreSQL's own terms: the SQLSTATE
/// and the server's message when the server said something, the host, and whether a write's
/// outcome is known. Never a password.
///
/// PostgresNIO's `PSQLError` prints "Generic description to prevent accidental leakage" for
/// every failure; this error says what happened and what to do.
public struct PostgresPoolError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case commitFailed
            case commitOutcomeUnknown
            case connectionLost
            case connectFailed
            case sessionStateBehindPooler
        }

        private let base: Base

        /// The server refused to commit a statement run outside a transaction, after it had
        /// executed: a deferred constraint, a serialization failure at commit. Nothing of the
        /// statement was committed; ``PostgresPoolError/sqlState`` says why.
        public static let commitFailed = Code(base: .commitFailed)
        /// The connection was lost after the statement (or `COMMIT`) was sent and before the
        /// server said whether it committed. It may or may not have: check before repeating
        /// a write that must not happen twice.
        public static let commitOutcomeUnknown = Code(base: .commitOutcomeUnknown)
        /// The connection was lost while a statement ran inside a transaction: the
        /// transaction is gone, nothing of it committed.
        public static let connectionLost = Code(base: .connectionLost)
        /// A connection could not be opened: ``PostgresPoolError/sqlState`` and
        /// ``PostgresPoolError/serverMessage`` give the server's reason (a wrong password is
        /// 28P01, an unknown database 3D000), ``PostgresPoolError/detail`` the network's or
        /// TLS's.
        public static let connectFailed = Code(base: .connectFailed)
        /// Behind a pooler in transaction mode (PgBouncer), a statement that changes the
        /// session (`SET`, `RESET`, `LISTEN`, `PREPARE`, `DECLARE`, `LOAD`, temporary tables,
        /// session advisory locks) was refused before it was sent: the session is a server
        /// connection that other clients of the pooler get next, and closing ours would not
        /// clean it. Use `SET LOCAL` or `set_config(…, true)` and transaction advisory locks
        /// inside a transaction, or connect to PostgreSQL directly for session features.
        public static let sessionStateBehindPooler = Code(base: .sessionStateBehindPooler)

        /// The code's name.
        public var description: String { self.base.rawValue }
    }

    /// The kind of failure.
    public let code: Code
    /// The server's SQLSTATE (e.g. `23503` for a foreign key violation), when it sent one.
    public let sqlState: String?
    /// The server's message, when it sent one.
    public let serverMessage: String?
    /// The server's detail, when it sent one.
    public let detail: String?
    /// The backend process of the connection.
    public let backendPID: Int32?
    /// The server as configured (`host:port`, or the socket folder), for ``Code/connectFailed``.
    public let target: String?
    /// A connect whose login succeeded but whose first statement got no answer at all within
    /// the connect timeout (as behind a pooler whose servers are all busy).
    var isFirstStatementUnanswered = false

    init(
        code: Code, sqlState: String? = nil, serverMessage: String? = nil, detail: String? = nil, backendPID: Int32? = nil,
        target: String? = nil
    ) {
        self.code = code
        self.sqlState = sqlState
        self.serverMessage = serverMessage
        self.detail = detail
        self.backendPID = backendPID
        self.target = target
    }

    /// A connect to `target` that failed with `error`: the server's words when it sent
    /// some, else the network's or TLS's.
    static func connectFailed(to target: String, user: String, _ error: any Error) -> PostgresPoolError {
        let psql = error as? PSQLError
        var detail: String?
        if psql?.serverInfo == nil {
            let cause = psql?.underlying ?? (psql == nil ? error : nil)
            detail = cause.map { String(describing: $0) } ?? psql.map { "PostgresNIO \($0.code)" }
        }
        return PostgresPoolError(
            code: .connectFailed, sqlState: psql?.serverInfo?[.sqlState], serverMessage: psql?.serverInfo?[.message],
            detail: detail.map { "\($0) (user \(user))" } ?? "user \(user)", target: target)
    }

    init(code: Code, serverError: ServerErrorFields, backendPID: Int32?) {
        self.init(code: code, sqlState: serverError.sqlState, serverMessage: serverError.message, detail: serverError.detail, backendPID: backendPID)
    }

    /// What happened, the server's words, and what to do.
    public var description: String {
        let server = [self.sqlState.map { "SQLSTATE \($0)" }, self.serverMessage, self.detail.map { "detail: \($0)" }]
            .compactMap { $0 }.joined(separator: ": ")
        let pid = self.backendPID.map { " (backend pid \($0))" } ?? ""
        switch self.code {
        case .commitFailed:
            return "PostgreSQL refused to commit the statement\(pid): \(server); nothing of it was committed"
        case .commitOutcomeUnknown:
            return "the connection\(pid) was lost before PostgreSQL said whether the statement committed"
                + (server.isEmpty ? "" : " (\(server))")
                + "; it may or may not have: check before repeating a write that must happen once"
        case .sessionStateBehindPooler:
            return "the statement changes the session, and a pooler in transaction mode (PgBouncer) stands in front of PostgreSQL: "
                + "the next client of its server connection would inherit the change, so it was not sent (\(self.detail ?? "")). "
                + "Use SET LOCAL or set_config(…, true) inside a transaction, transaction advisory locks, or a direct connection"
        case .connectFailed:
            let said = [self.sqlState.map { "SQLSTATE \($0)" }, self.serverMessage].compactMap { $0 }.joined(separator: ": ")
            return "could not connect to PostgreSQL at \(self.target ?? "?"): " + (said.isEmpty ? self.detail ?? "" : "\(said) (\(self.detail ?? ""))")
        default:
            return "the connection\(pid) was lost while the statement ran" + (server.isEmpty ? "" : ": \(server)")
        }
    }
}

extension PostgresPoolError {
    /// An error as a person needs it, for logs and tools: a `PSQLError` with its code,
    /// SQLSTATE and server message (its own description is a fixed sentence), anything else as
    /// it describes itself. A password is in none of them.
    ///
    /// - Parameter error: Any error from the pool or PostgresNIO.
    /// - Returns: One line.
    public static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return String(describing: error) }
        var parts = ["PostgresNIO \(error.code)"]
        if let state = error.serverInfo?[.sqlState] { parts.append("SQLSTATE \(state)") }
        if let message = error.serverInfo?[.message] { parts.append(message) }
        if let underlying = error.underlying { parts.append(String(describing: underlying)) }
        return parts.joined(separator: ": ")
    }
}

/// The fields of a server's ErrorResponse that an error report needs.
struct ServerErrorFields: Sendable, Equatable {
    var severity: String?
    var sqlState: String?
    var message: String?
    var detail: String?
}
