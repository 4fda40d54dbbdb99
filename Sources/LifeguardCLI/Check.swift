import ArgumentParser
import Foundation
import Lifeguard
import LifeguardPostgres
import Logging
import PostgresNIO

/// `lifeguard check`: can this server take the pool we plan to run against it?
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to PostgreSQL and tell whether a pool's budget fits its connection limit.",
        discussion: """
            Reports the server version, max_connections and the connections reserved for superusers, \
            the backends open now by application_name, and whether `budget × instances` fits in what \
            is left. Behind a pooler in transaction mode (PgBouncer) the budget counts connections to \
            the pooler, not to the server: it says so and what to compare instead, and does not judge. \
            Exit status: 0 when it fits (or behind a pooler), 1 when it does not fit, 2 when the server \
            cannot be reached or refuses the login (the reason is printed), 64 for bad options.
            """
    )

    @Option(name: .customLong("database-url"), help: "postgres://user:password@host:port/database (default: $LIFEGUARD_URL or $DATABASE_URL).")
    var databaseURL: String?

    @Option(help: "Connections each instance of the application may open (1...10000; default: $LIFEGUARD_BUDGET, else 10).")
    var budget: Int?

    @Option(help: "Instances of the application that share the server (1...10000).")
    var instances: Int = 1

    func validate() throws {
        if let budget = self.budget, !(1...10_000).contains(budget) {
            throw ValidationError("--budget must be between 1 and 10000, got \(budget)")
        }
        guard (1...10_000).contains(self.instances) else {
            throw ValidationError("--instances must be between 1 and 10000, got \(self.instances)")
        }
        if self.databaseURL == nil && !PostgresPool.Configuration.environmentNamesURL() {
            throw ValidationError("give --database-url postgres://user:password@host:port/database, or set LIFEGUARD_URL or DATABASE_URL")
        }
    }

    func run() async throws {
        var configuration: PostgresPool.Configuration
        do {
            configuration = try self.databaseURL.map { try PostgresPool.Configuration(url: $0) } ?? PostgresPool.Configuration()
        } catch {
            throw ValidationError(String(describing: error))
        }
        let budget = min(self.budget ?? configuration.budget, 10_000)
        configuration.applicationName = "lifeguard-check"
        configuration.serverSideCancellation = false
        configuration.budget = 1
        configuration.lanes = [.retrieval: .init(waitTimeout: .seconds(10))]
        var logger = Logger(label: "lifeguard-check")
        logger.logLevel = .critical
        let pool = try PostgresPool(configuration: configuration, logger: logger)
        let report: CheckReport
        do {
            report = try await withThrowingTaskGroup(of: CheckReport?.self) { group in
                group.addTask {
                    await pool.run()
                    return nil
                }
                defer { pool.shutdown(gracePeriod: .seconds(1)) }
                return try await pool.withConnection(lane: .retrieval) { lease in
                    var target = configuration.description
                    if configuration.hosts.count > 1 {
                        // Which of the hosts is judged, as the server says.
                        let (address, port, standby) = try await lease.query(
                            "SELECT coalesce(host(inet_server_addr()), 'local'), coalesce(inet_server_port(), 0), pg_is_in_recovery()"
                        )[0].decode((String, Int, Bool).self)
                        target = "\(address):\(port), \(standby ? "a standby" : "a primary"), the server target_session_attrs="
                            + "\(configuration.targetSessionAttributes.rawValue) chose of the URL's \(configuration.hosts.count) hosts "
                            + "(a PostgresCluster opens its budget on every host: check each)"
                    }
                    return try await CheckReport.read(from: lease, target: target, budget: budget, instances: self.instances)
                }
            }
        } catch {
            var standardError = FileHandle.standardError
            print("lifeguard check: cannot check \(configuration.description): \(PostgresPoolError.describe(error))", to: &standardError)
            throw ExitCode(Self.cannotConnect)
        }
        print(report.text)
        if !report.fits {
            throw ExitCode(Self.doesNotFit)
        }
    }

    /// The exit status when the budget does not fit.
    static let doesNotFit: Int32 = 1
    /// The exit status when the server cannot be reached or refuses the login.
    static let cannotConnect: Int32 = 2
}

extension FileHandle: @retroactive TextOutputStream {
    /// Writes `string` to the file, for `print(_:to:)`.
    public func write(_ string: String) {
        self.write(Data(string.utf8))
    }
}

/// What `lifeguard check` found, and its verdict.
struct CheckReport: Equatable {
    var target: String
    var serverVersion: String
    var maxConnections: Int
    var reservedForSuperusers: Int
    /// Open backends by `application_name` (client backends only), most first.
    var backendsByApplication: [(application: String, count: Int)]
    var budget: Int
    var instances: Int
    /// Whether a pooler in transaction mode (PgBouncer) stands between the check and the server.
    var isBehindPooler = false

    static func == (lhs: CheckReport, rhs: CheckReport) -> Bool {
        lhs.text == rhs.text
    }

    /// Connections applications may open: `max_connections` less the superuser reserve.
    var available: Int { self.maxConnections - self.reservedForSuperusers }
    /// What the planned pools ask for.
    var planned: Int { self.budget * self.instances }
    /// Backends open now, excluding this check's own.
    var openNow: Int {
        self.backendsByApplication.filter { $0.application != "lifeguard-check" }.reduce(0) { $0 + $1.count }
    }
    /// Whether the planned budget fits next to what is open now. Behind a pooler the budget
    /// is not the server's to fit: the check does not judge it.
    var fits: Bool { self.isBehindPooler || self.planned <= self.available - self.openNow }

    var text: String {
        var lines: [String] = []
        lines.append("server:            \(self.serverVersion)")
        lines.append("target:            \(self.target)")
        lines.append("max_connections:   \(self.maxConnections) (\(self.reservedForSuperusers) reserved for superusers: \(self.available) for applications)")
        lines.append("backends now:      \(self.openNow) (this check's own not counted)")
        for (application, count) in self.backendsByApplication where application != "lifeguard-check" {
            lines.append("  \(application.isEmpty ? "(no application_name)" : application): \(count)")
        }
        let left = self.available - self.openNow
        let plan = "budget \(self.budget) × \(self.instances) instance\(self.instances == 1 ? "" : "s") = \(self.planned)"
        if self.isBehindPooler {
            lines.append("pooler:            a pooler in transaction mode (PgBouncer?) stands in front of the server: "
                + "the session's cancel key is not its server process")
            lines.append("verdict:           not judged: \(plan) connections to the pooler, not to the server. "
                + "The pooler's max_client_conn must take them (with its other clients); the server sees only "
                + "the pooler's server pool (default_pool_size per database and user), which must fit in the "
                + "\(max(0, left)) connections left (the backends above include the pooler's own).")
        } else if self.fits {
            lines.append("verdict:           fits: \(plan) of the \(left) connections left")
        } else {
            let perInstance = left / self.instances
            let lower = perInstance >= 1
                ? "Lower the budget to \(perInstance) per instance, raise max_connections, or put PgBouncer in front."
                : "Not even one connection per instance is left: raise max_connections, close other applications' "
                    + "connections, run fewer instances, or put PgBouncer in front."
            lines.append("verdict:           DOES NOT FIT: \(plan), but only \(max(0, left)) connections are left. " + lower)
        }
        return lines.joined(separator: "\n")
    }

    /// Reads the server's limits and its backends through a lease.
    static func read(from lease: PostgresLease, target: String, budget: Int, instances: Int) async throws -> CheckReport {
        // Behind a pooler these statements may each run on another server connection: they
        // read the server's settings and its whole pg_stat_activity, so it does not matter.
        let version = try await lease.query("SELECT version()")[0].decode(String.self)
        let maxConnections = try await lease.query("SELECT current_setting('max_connections')::int")[0].decode(Int.self)
        let reserved = try await lease.query("SELECT current_setting('superuser_reserved_connections')::int")[0].decode(Int.self)
        let rows = try await lease.query("""
            SELECT coalesce(application_name, ''), count(*)::int FROM pg_stat_activity
            WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC, 1
            """)
        let backends = try rows.map { row in try row.decode((String, Int).self) }.map { (application: $0.0, count: $0.1) }
        return CheckReport(
            target: target, serverVersion: version, maxConnections: maxConnections, reservedForSuperusers: reserved,
            backendsByApplication: backends, budget: budget, instances: instances, isBehindPooler: lease.isBehindPooler)
    }
}
