/// One thing `lifeguard doctor` found: which pattern, how bad, from which application, the
/// evidence, and what to change.
public struct Finding: Sendable, Hashable, Codable {
    /// The patterns the doctor names.
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        /// Sessions idle in a transaction (`ClientRead`) for seconds, again and again: a
        /// connection held across a model call.
        case generationHold = "generation-hold"
        /// An application's active connections jumping within a second, or connections opened
        /// in a burst: a retrieval fan-out.
        case retrievalBurst = "retrieval-burst"
        /// Sessions waiting on row locks behind each other, deadlocks, rollbacks: agents writing
        /// state in bursts.
        case agentWriteStorm = "agent-write-storm"
        /// Sessions abandoned by their clients, left idle in an aborted transaction, or an
        /// application's connections growing while its work does not: cancellations that leak.
        case cancellationLeak = "cancellation-leak"
        /// Sessions started at a high rate: connections opened and closed instead of kept.
        case connectionChurn = "connection-churn"
        /// Statements running for 30 s or more: a batch, or work whose caller has gone.
        case longStatement = "long-statement"
        /// The server's connections near `max_connections`.
        case nearConnectionLimit = "near-connection-limit"
        /// `idle_in_transaction_session_timeout` is off: a held transaction is never ended.
        case noIdleInTransactionTimeout = "no-idle-in-transaction-timeout"
        /// `client_connection_check_interval` is off: a statement whose client is gone runs on.
        case noClientConnectionCheck = "no-client-connection-check"
        /// One application holds many of the server's connections and uses few.
        case oversizedPool = "oversized-pool"
    }

    /// How urgent a finding is.
    public enum Severity: String, Sendable, Hashable, Codable, Comparable, CaseIterable {
        /// Worth knowing; not a failure.
        case info
        /// A pattern that hurts under load.
        case warning
        /// Hurting now.
        case critical

        private var rank: Int {
            switch self {
            case .info: 0
            case .warning: 1
            case .critical: 2
            }
        }

        public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rank < rhs.rank }
    }

    /// The pattern.
    public var kind: Kind
    /// How urgent.
    public var severity: Severity
    /// The application it comes from (`application_name`, or user and address), `nil` for the
    /// server as a whole.
    public var application: String?
    /// One sentence: what happens.
    public var summary: String
    /// The figures behind it.
    public var evidence: [String]
    /// The statement involved: its first words, and `query_id` when the server computes it.
    public var query: String?
    /// `query_id` of the statement, when computed (`compute_query_id`).
    public var queryID: Int64?
    /// What to change, in the terms of each common stack.
    public var fix: [String]

    /// Creates a finding.
    ///
    /// - Parameters:
    ///   - kind: The pattern.
    ///   - severity: How urgent.
    ///   - application: Where it comes from, or `nil`.
    ///   - summary: What happens.
    ///   - evidence: The figures.
    ///   - query: The statement's first words.
    ///   - queryID: Its `query_id`.
    ///   - fix: What to change.
    public init(
        kind: Kind, severity: Severity, application: String?, summary: String, evidence: [String],
        query: String? = nil, queryID: Int64? = nil, fix: [String]
    ) {
        self.kind = kind
        self.severity = severity
        self.application = application
        self.summary = summary
        self.evidence = evidence
        self.query = query
        self.queryID = queryID
        self.fix = fix
    }
}
