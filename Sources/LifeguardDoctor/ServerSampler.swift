import Foundation
import Lifeguard
import LifeguardPostgres
import Logging
import PostgresNIO

/// Samples a server for `lifeguard doctor`: its settings once, `pg_stat_activity` every
/// interval, and `pg_stat_database` at the start and the end, on one connection of its own
/// (`application_name` `lifeguard-doctor`, left out of the samples).
public struct ServerSampler: Sendable {
    /// The server to watch.
    public let configuration: PostgresPool.Configuration
    /// How long to watch.
    public let duration: Duration
    /// The time between two samples.
    public let interval: Duration

    /// Creates a sampler.
    ///
    /// - Parameters:
    ///   - configuration: The server and credentials; its pool settings are not used.
    ///   - duration: How long to watch.
    ///   - interval: The time between two samples.
    public init(configuration: PostgresPool.Configuration, duration: Duration, interval: Duration) {
        var configuration = configuration
        configuration.applicationName = "lifeguard-doctor"
        configuration.serverSideCancellation = false
        configuration.budget = 1
        configuration.pool.minimumIdle = 0
        configuration.pool.longHoldThreshold = nil
        configuration.pool.idleInLeaseThreshold = nil
        configuration.lanes = [.retrieval: .init(waitTimeout: .seconds(10))]
        self.configuration = configuration
        self.duration = duration
        self.interval = interval
    }

    /// Watches the server for ``duration``, calling `progress` with what was seen so far after
    /// each sample.
    ///
    /// - Parameters:
    ///   - logger: Receives the connection's failures.
    ///   - progress: Called after each sample.
    /// - Returns: What was seen.
    /// - Throws: The connection's or a query's error: the server could not be watched.
    public func observe(logger: Logger, progress: @Sendable (Observation) -> Void = { _ in }) async throws -> Observation {
        let pool = try PostgresPool(configuration: self.configuration, logger: logger)
        return try await withThrowingTaskGroup(of: Observation?.self) { group in
            group.addTask {
                await pool.run()
                return nil
            }
            defer { pool.shutdown(gracePeriod: .seconds(1)) }
            return try await pool.withConnection(lane: .retrieval) { lease in try await self.observe(on: lease, progress: progress) }
        }
    }

    private func observe(on lease: PostgresLease, progress: @Sendable (Observation) -> Void) async throws -> Observation {
        let settings = try await Self.settings(on: lease)
        var blindSpots: [String] = []
        let seesAll = try await lease.query(
            "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') FROM pg_roles WHERE rolname = current_user"
        ).first?.decode(Bool.self) ?? false
        if !seesAll {
            blindSpots.append(
                "other roles' sessions show no state, wait, statement or times, so they are counted but not judged: no hold, burst, storm or leak of theirs can be seen, and one or two of the server's own processes may be counted among them (grant pg_read_all_stats to the doctor's role: GRANT pg_read_all_stats TO doctor)")
        }
        if settings.versionNumber < 140000 {
            blindSpots.append("abandoned sessions and query_id need PostgreSQL 14 or later (the server is \(settings.versionNumber))")
        }
        let before = try await Self.counters(on: lease, version: settings.versionNumber)
        var observation = Observation(settings: settings, samples: [], countersBefore: before, countersAfter: before, blindSpots: blindSpots)
        let clock = ContinuousClock()
        let start = clock.now
        let end = start.advanced(by: self.duration)
        var next = start
        while true {
            let at = start.duration(to: clock.now)
            let sessions = try await Self.sessions(on: lease, version: settings.versionNumber)
            observation.samples.append(ActivitySample(at: Self.seconds(at), sessions: sessions))
            observation.countersAfter = try await Self.counters(on: lease, version: settings.versionNumber)
            progress(observation)
            next = next.advanced(by: self.interval)
            guard next <= end else { break }
            try await Task.sleep(until: next, clock: clock)
        }
        return observation
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func settings(on lease: PostgresLease) async throws -> ServerSettings {
        var values: [String: String] = [:]
        for row in try await lease.query(
            """
            SELECT name, setting FROM pg_settings WHERE name IN ('server_version_num', 'max_connections',
              'superuser_reserved_connections', 'reserved_connections', 'idle_in_transaction_session_timeout',
              'statement_timeout', 'client_connection_check_interval')
            """)
        {
            let (name, setting) = try row.decode((String, String).self)
            values[name] = setting
        }
        func integer(_ name: String) -> Int? { values[name].flatMap { Int($0) } }
        return ServerSettings(
            versionNumber: integer("server_version_num") ?? 0, maxConnections: integer("max_connections") ?? 0,
            reservedConnections: (integer("superuser_reserved_connections") ?? 0) + (integer("reserved_connections") ?? 0),
            idleInTransactionSessionTimeout: integer("idle_in_transaction_session_timeout") ?? 0,
            statementTimeout: integer("statement_timeout") ?? 0,
            clientConnectionCheckInterval: integer("client_connection_check_interval"))
    }

    static func counters(on lease: PostgresLease, version: Int) async throws -> DatabaseCounters? {
        let sessionColumns = version >= 140000
            ? "sessions_abandoned, sessions_killed, idle_in_transaction_time, active_time, sessions"
            : "NULL::bigint, NULL::bigint, NULL::float8, NULL::float8, NULL::bigint"
        let row = try await lease.query(PostgresQuery(unsafeSQL: """
            SELECT xact_commit, xact_rollback, deadlocks, \(sessionColumns)
            FROM pg_stat_database WHERE datname = current_database()
            """)).first
        guard let row else { return nil }
        let (commits, rollbacks, deadlocks, abandoned, killed, idle, active, sessions) = try row.decode(
            (Int64, Int64, Int64, Int64?, Int64?, Double?, Double?, Int64?).self)
        return DatabaseCounters(
            commits: commits, rollbacks: rollbacks, deadlocks: deadlocks, sessionsAbandoned: abandoned, sessionsKilled: killed,
            idleInTransactionTime: idle, activeTime: active, sessions: sessions)
    }

    static func sessions(on lease: PostgresLease, version: Int) async throws -> [ServerSession] {
        let queryID = version >= 140000 ? "query_id" : "NULL::bigint"
        let rows = try await lease.query(PostgresQuery(unsafeSQL: """
            SELECT pid, coalesce(application_name, ''), coalesce(usename::text, ''), coalesce(host(client_addr), 'local'),
                   coalesce(state, ''), coalesce(wait_event_type, ''), coalesce(wait_event, ''),
                   extract(epoch FROM clock_timestamp() - xact_start)::float8,
                   extract(epoch FROM clock_timestamp() - state_change)::float8,
                   extract(epoch FROM clock_timestamp() - query_start)::float8,
                   coalesce(extract(epoch FROM clock_timestamp() - backend_start), 0)::float8,
                   pg_blocking_pids(pid), left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 100), \(queryID)
            FROM pg_stat_activity
            WHERE (backend_type = 'client backend' OR (backend_type IS NULL AND usename IS NOT NULL)) AND pid <> pg_backend_pid()
            """))
        return try rows.map { row in
            let (pid, application, user, client, state, waitType, wait, transaction, stateAge, queryAge, backendAge, blockedBy, query, id) =
                try row.decode((Int32, String, String, String, String, String, String, Double?, Double?, Double?, Double, [Int32], String, Int64?).self)
            return ServerSession(
                pid: Int(pid), application: application, user: user, client: client, state: state, waitEventType: waitType,
                waitEvent: wait, transactionAge: transaction, stateAge: stateAge, queryAge: queryAge, backendAge: backendAge,
                blockedBy: blockedBy.map(Int.init), query: query, queryID: id)
        }
    }
}
