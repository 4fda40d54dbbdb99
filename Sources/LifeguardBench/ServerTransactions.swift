import Lifeguard
import LifeguardPostgres
import Logging

/// What each server of a host list committed, by its own count (`pg_stat_database.xact_commit`
/// of the database): read before and after a pool's run, the difference says which servers
/// served the run's transactions, judged by the servers and not by the pool.
public enum ServerTransactions {
    /// Each host's committed transactions and role, keyed `host:port standby` or
    /// `host:port primary`; a host that cannot be read (down, failed over) is left out.
    ///
    /// - Parameters:
    ///   - configuration: The servers (its hosts, or its one host) and credentials.
    ///   - logger: For the one-connection pool per host.
    public static func read(_ configuration: PostgresPool.Configuration, logger: Logger) async -> [String: Int] {
        var counts: [String: Int] = [:]
        let hosts = configuration.hosts.isEmpty ? [nil] : configuration.hosts.map(Optional.some)
        for host in hosts {
            var single = configuration
            if let host { single.hosts = [host] }
            single.targetSessionAttributes = .any
            single.applicationName = "lifeguard-bench-observer"
            single.budget = 1
            single.lanes = [.retrieval: .init(waitTimeout: .seconds(10))]
            single.pool.minimumIdle = 0
            guard let (name, committed) = try? await Self.committed(on: single, logger: logger) else { continue }
            counts[name] = committed
        }
        return counts
    }

    /// One server's role and committed transactions, on a connection of its own.
    static func committed(on configuration: PostgresPool.Configuration, logger: Logger) async throws -> (String, Int) {
        let pool = try PostgresPool(configuration: configuration, logger: logger)
        return try await withThrowingTaskGroup(of: (String, Int)?.self) { group in
            group.addTask {
                await pool.run()
                return nil
            }
            defer { pool.shutdown(gracePeriod: .seconds(1)) }
            return try await pool.withConnection(lane: .retrieval) { lease in
                // A fresh snapshot of the statistics, not the one this session saw last.
                try await lease.execute("SELECT pg_stat_clear_snapshot()")
                let (inRecovery, committed) = try await lease.query(
                    "SELECT pg_is_in_recovery(), xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )[0].decode((Bool, Int64).self)
                let host = configuration.hosts.first?.description ?? configuration.description
                return ("\(host) \(inRecovery ? "standby" : "primary")", Int(committed))
            }
        }
    }

    /// The transactions committed between two readings, per server (a server's role may have
    /// changed between them: it is keyed as in `after`).
    public static func difference(from before: [String: Int], to after: [String: Int]) -> [String: Int] {
        var difference: [String: Int] = [:]
        for (name, committed) in after {
            let host = name.split(separator: " ").first.map(String.init) ?? name
            let earlier = before.first { $0.key.split(separator: " ").first.map(String.init) == host }?.value ?? committed
            difference[name] = max(0, committed &- earlier)
        }
        return difference
    }
}
