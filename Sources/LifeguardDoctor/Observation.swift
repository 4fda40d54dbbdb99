/// What `lifeguard doctor` saw of a server over its run: the settings that matter, a series of
/// `pg_stat_activity` samples, the database's counters at the start and the end, and what it
/// could not see. A value: the findings are computed from it alone (``Diagnosis``).
public struct Observation: Sendable, Hashable, Codable {
    /// The server's settings that bear on connection pools.
    public var settings: ServerSettings
    /// The samples, in time order.
    public var samples: [ActivitySample]
    /// `pg_stat_database` of the watched database at the first sample; `nil` if unreadable.
    public var countersBefore: DatabaseCounters?
    /// The same at the last sample.
    public var countersAfter: DatabaseCounters?
    /// What the doctor's role could not see, in words (e.g. other users' query texts).
    public var blindSpots: [String]

    /// Creates an observation.
    ///
    /// - Parameters:
    ///   - settings: The server's settings.
    ///   - samples: The samples, in time order.
    ///   - countersBefore: The database's counters at the start.
    ///   - countersAfter: The database's counters at the end.
    ///   - blindSpots: What could not be seen.
    public init(
        settings: ServerSettings, samples: [ActivitySample], countersBefore: DatabaseCounters?,
        countersAfter: DatabaseCounters?, blindSpots: [String]
    ) {
        self.settings = settings
        self.samples = samples
        self.countersBefore = countersBefore
        self.countersAfter = countersAfter
        self.blindSpots = blindSpots
    }

    /// Seconds from the first sample to the last.
    public var duration: Double {
        guard let first = self.samples.first, let last = self.samples.last else { return 0 }
        return max(0, last.at - first.at)
    }
}

/// One sample of `pg_stat_activity`: every client backend but the doctor's own.
public struct ActivitySample: Sendable, Hashable, Codable {
    /// Seconds since the first sample.
    public var at: Double
    /// The sessions.
    public var sessions: [ServerSession]

    /// Creates a sample.
    ///
    /// - Parameters:
    ///   - at: Seconds since the first sample.
    ///   - sessions: The client backends seen.
    public init(at: Double, sessions: [ServerSession]) {
        self.at = at
        self.sessions = sessions
    }
}

/// One client backend as `pg_stat_activity` showed it. Ages are seconds before the sample.
public struct ServerSession: Sendable, Hashable, Codable {
    /// The backend's process id.
    public var pid: Int
    /// `application_name` (empty when the client set none).
    public var application: String
    /// The role it logged in as.
    public var user: String
    /// The client's address, or `local` for a Unix socket.
    public var client: String
    /// `active`, `idle`, `idle in transaction`, `idle in transaction (aborted)`, … (empty when
    /// hidden from the doctor's role).
    public var state: String
    /// `wait_event_type` (`Lock`, `Client`, `IO`, …), empty when not waiting.
    public var waitEventType: String
    /// `wait_event` (`ClientRead`, `transactionid`, …), empty when not waiting.
    public var waitEvent: String
    /// Age of its transaction, if one is open.
    public var transactionAge: Double?
    /// Time in its current state.
    public var stateAge: Double?
    /// Age of its current (or last) statement.
    public var queryAge: Double?
    /// Age of the connection.
    public var backendAge: Double
    /// The sessions that block it (`pg_blocking_pids`).
    public var blockedBy: [Int]
    /// The first words of its current (or last) statement.
    public var query: String
    /// `query_id`, when the server computes it (`compute_query_id`).
    public var queryID: Int64?

    /// Creates a session.
    ///
    /// - Parameters:
    ///   - pid: Process id.
    ///   - application: `application_name`.
    ///   - user: Role.
    ///   - client: Client address or `local`.
    ///   - state: `state`.
    ///   - waitEventType: `wait_event_type`.
    ///   - waitEvent: `wait_event`.
    ///   - transactionAge: Seconds since `xact_start`.
    ///   - stateAge: Seconds since `state_change`.
    ///   - queryAge: Seconds since `query_start`.
    ///   - backendAge: Seconds since `backend_start`.
    ///   - blockedBy: `pg_blocking_pids(pid)`.
    ///   - query: The statement's first words.
    ///   - queryID: `query_id`.
    public init(
        pid: Int, application: String, user: String = "", client: String = "local", state: String,
        waitEventType: String = "", waitEvent: String = "", transactionAge: Double? = nil, stateAge: Double? = nil,
        queryAge: Double? = nil, backendAge: Double = 60, blockedBy: [Int] = [], query: String = "", queryID: Int64? = nil
    ) {
        self.pid = pid
        self.application = application
        self.user = user
        self.client = client
        self.state = state
        self.waitEventType = waitEventType
        self.waitEvent = waitEvent
        self.transactionAge = transactionAge
        self.stateAge = stateAge
        self.queryAge = queryAge
        self.backendAge = backendAge
        self.blockedBy = blockedBy
        self.query = query
        self.queryID = queryID
    }

    /// The name findings group it under: the application, or the user and address without one.
    public var source: String {
        self.application.isEmpty ? "(no application_name) \(self.user)@\(self.client)" : self.application
    }
}

/// The server's settings that bear on pools.
public struct ServerSettings: Sendable, Hashable, Codable {
    /// `server_version_num`.
    public var versionNumber: Int
    /// `max_connections`.
    public var maxConnections: Int
    /// Connections ordinary roles cannot take: `superuser_reserved_connections` plus, from
    /// PostgreSQL 16, `reserved_connections`.
    public var reservedConnections: Int
    /// `idle_in_transaction_session_timeout` in milliseconds; 0 is off.
    public var idleInTransactionSessionTimeout: Int
    /// `statement_timeout` in milliseconds; 0 is off.
    public var statementTimeout: Int
    /// `client_connection_check_interval` in milliseconds (PostgreSQL 14+); 0 is off, `nil`
    /// on older servers.
    public var clientConnectionCheckInterval: Int?

    /// Creates settings.
    ///
    /// - Parameters:
    ///   - versionNumber: `server_version_num`.
    ///   - maxConnections: `max_connections`.
    ///   - reservedConnections: Reserved connections.
    ///   - idleInTransactionSessionTimeout: Milliseconds, 0 off.
    ///   - statementTimeout: Milliseconds, 0 off.
    ///   - clientConnectionCheckInterval: Milliseconds, 0 off.
    public init(
        versionNumber: Int, maxConnections: Int, reservedConnections: Int, idleInTransactionSessionTimeout: Int,
        statementTimeout: Int, clientConnectionCheckInterval: Int?
    ) {
        self.versionNumber = versionNumber
        self.maxConnections = maxConnections
        self.reservedConnections = reservedConnections
        self.idleInTransactionSessionTimeout = idleInTransactionSessionTimeout
        self.statementTimeout = statementTimeout
        self.clientConnectionCheckInterval = clientConnectionCheckInterval
    }

    /// Connections ordinary roles can open.
    public var availableConnections: Int { max(0, self.maxConnections - self.reservedConnections) }
}

/// The watched database's cumulative counters (`pg_stat_database`); the session counters are
/// `nil` before PostgreSQL 14.
public struct DatabaseCounters: Sendable, Hashable, Codable {
    /// `xact_commit`.
    public var commits: Int64
    /// `xact_rollback`.
    public var rollbacks: Int64
    /// `deadlocks`.
    public var deadlocks: Int64
    /// `sessions_abandoned`: sessions ended because the client went away.
    public var sessionsAbandoned: Int64?
    /// `sessions_killed`: sessions ended by an operator (or a timeout).
    public var sessionsKilled: Int64?
    /// `idle_in_transaction_time`, milliseconds.
    public var idleInTransactionTime: Double?
    /// `active_time`, milliseconds.
    public var activeTime: Double?
    /// `sessions`: sessions started, ever.
    public var sessions: Int64?

    /// Creates counters.
    ///
    /// - Parameters:
    ///   - commits: `xact_commit`.
    ///   - rollbacks: `xact_rollback`.
    ///   - deadlocks: `deadlocks`.
    ///   - sessionsAbandoned: `sessions_abandoned`.
    ///   - sessionsKilled: `sessions_killed`.
    ///   - idleInTransactionTime: `idle_in_transaction_time` (ms).
    ///   - activeTime: `active_time` (ms).
    ///   - sessions: `sessions`.
    public init(
        commits: Int64, rollbacks: Int64, deadlocks: Int64, sessionsAbandoned: Int64? = nil, sessionsKilled: Int64? = nil,
        idleInTransactionTime: Double? = nil, activeTime: Double? = nil, sessions: Int64? = nil
    ) {
        self.commits = commits
        self.rollbacks = rollbacks
        self.deadlocks = deadlocks
        self.sessionsAbandoned = sessionsAbandoned
        self.sessionsKilled = sessionsKilled
        self.idleInTransactionTime = idleInTransactionTime
        self.activeTime = activeTime
        self.sessions = sessions
    }
}
