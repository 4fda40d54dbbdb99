import CoreMetrics
import Foundation
import Lifeguard
@testable import LifeguardPostgres
import Logging
import NIOPosix
import PostgresNIO
import Synchronization
import Testing
import Tracing

enum TestDatabase {
    /// The URL the pools under test connect to: the test server's (`DATABASE_URL`), or, when
    /// `LIFEGUARD_TEST_POOL_URL` is set (`scripts/test.sh`'s second pass), a PgBouncer in front
    /// of it.
    static let url = ProcessInfo.processInfo.environment["LIFEGUARD_TEST_POOL_URL"] ?? serverURL
    /// The test server itself, which the tests' observer watches, whatever the pools go through.
    static let serverURL = ProcessInfo.processInfo.environment["DATABASE_URL"]
    static var isAvailable: Bool { url != nil && serverURL != nil }
    /// Whether the pools under test go through PgBouncer in transaction mode: a pool's
    /// connection is then PgBouncer's, not a server backend, and a server backend serves
    /// whichever client PgBouncer gives it to.
    static let isBehindPgBouncer = ProcessInfo.processInfo.environment["LIFEGUARD_TEST_POOL_URL"] != nil
    static let logger: Logger = {
        var logger = Logger(label: "lifeguard-tests")
        logger.logLevel = ProcessInfo.processInfo.environment["LIFEGUARD_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .error
        return logger
    }()

    /// A configuration for the test server with its own `application_name`, so that each test
    /// can count its own backends in `pg_stat_activity`.
    ///
    /// Unless a test gives its lanes, they wait up to 10 s: a first connection (TCP, SCRAM in a
    /// debug build) on a machine busy with the other tests can take longer than the default
    /// 500 ms, and waiting is not what those tests are about.
    static func configuration(application: String, budget: Int, lanes: [Lane: LaneConfiguration]? = nil) throws -> PostgresPool.Configuration {
        var configuration = try PostgresPool.Configuration(url: url!)
        configuration.applicationName = application
        configuration.budget = budget
        configuration.lanes = lanes ?? configuration.lanes.mapValues { lane in
            var patient = lane
            patient.waitTimeout = .seconds(10)
            return patient
        }
        return configuration
    }

    /// Runs `body` with a plain connection outside any pool, to watch the server, and closes it.
    static func withObserver<Value>(_ body: (PostgresConnection) async throws -> Value) async throws -> Value {
        try await self.withObserver(of: serverURL!, body)
    }

    /// Runs a pool for the duration of `body`, then drains it.
    static func withPool<Value>(
        _ configuration: PostgresPool.Configuration,
        logger: Logger = TestDatabase.logger,
        metricsFactory: (any MetricsFactory)? = nil,
        tracer: (any Tracer)? = nil,
        _ body: (PostgresPool) async throws -> Value
    ) async throws -> Value {
        let pool = try PostgresPool(configuration: configuration, logger: logger, metricsFactory: metricsFactory, tracer: tracer)
        return try await self.running({ await pool.run() }, shutdown: { pool.shutdown(gracePeriod: $0) }) { try await body(pool) }
    }

    /// Runs `run` (a pool's, a cluster's) for the duration of `body`, then shuts down with a
    /// grace period of 2 s and waits for `run` to return; when `body` throws, with none.
    static func running<Value>(
        _ run: @escaping @Sendable () async -> Void, shutdown: (Duration) -> Void, _ body: () async throws -> Value
    ) async throws -> Value {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await run() }
            do {
                let value = try await body()
                shutdown(.seconds(2))
                try await group.waitForAll()
                return value
            } catch {
                shutdown(.zero)
                throw error
            }
        }
    }

    /// Runs the throwaway server's script (`pause`, `resume`) and waits for it.
    ///
    /// Spawned with `posix_spawn` and `waitpid`: Foundation's `Process.waitUntilExit` can wait
    /// forever when the script leaves a daemon (the restarted server) behind.
    ///
    /// - Parameters:
    ///   - command: The script's command.
    ///   - environment: Variables set for the script on top of the process's own (e.g. another
    ///     `LIFEGUARD_POSTGRES_STATE`, to run a second cluster).
    /// - Returns: What the script printed on its standard output (`start` prints the URL).
    ///   - script: The script of `scripts/` to run: `postgres.sh` (the primary) or
    ///     `standby.sh` (its streaming standby).
    @discardableResult
    static func server(_ command: String, environment: [String: String] = [:], script name: String = "postgres.sh") throws -> String {
        guard let primaryScript = ProcessInfo.processInfo.environment["LIFEGUARD_POSTGRES_SCRIPT"] else {
            throw ScriptMissing()
        }
        let script = URL(fileURLWithPath: primaryScript).deletingLastPathComponent().appendingPathComponent(name).path
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lifeguard-script-\(UUID().uuidString)").path
        defer { unlink(output) }
        // The server started by `resume` must not inherit the pool's sockets (NIO's are not
        // close-on-exec): a connection the pool closes would stay open in the server's hands.
        let closeInherited = #"for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null; exec /bin/bash "$0" "$@""#
        let arguments = ["/bin/bash", "-c", closeInherited, script, command]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { $1 }
        var envp: [UnsafeMutablePointer<CChar>?] = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, "/bin/bash", &actions, nil, &argv, &envp)
        guard spawned == 0 else { throw ScriptFailed(command: command, status: spawned) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        guard status == 0 else { throw ScriptFailed(command: command, status: status) }
        let printed = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        return printed.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs `body` with a second throwaway cluster of its own, durable (`fsync` and
    /// `synchronous_commit` on, unlike the shared test server), then removes it.
    ///
    /// - Parameter body: Gets the cluster's URL, and a function that runs the script's
    ///   commands (`crash`, `resume`) on that cluster.
    static func withDurableServer<Value>(
        _ body: (_ url: String, _ control: (String) throws -> Void) async throws -> Value
    ) async throws -> Value {
        try await self.withServerOfItsOwn(named: "durable", durable: true, body)
    }

    /// Runs `body` with a throwaway cluster of its own (state `<LIFEGUARD_POSTGRES_STATE>-<name>`),
    /// then removes it: what the test sees of the server is its own doing.
    ///
    /// - Parameters:
    ///   - name: Tells the cluster's state apart from the other tests' clusters.
    ///   - durable: Whether `fsync` and `synchronous_commit` are on.
    ///   - body: Gets the cluster's URL, and a function that runs the script's commands.
    static func withServerOfItsOwn<Value>(
        named name: String, durable: Bool = false,
        _ body: (_ url: String, _ control: (String) throws -> Void) async throws -> Value
    ) async throws -> Value {
        guard let state = ProcessInfo.processInfo.environment["LIFEGUARD_POSTGRES_STATE"] else { throw ScriptMissing() }
        let environment = ["LIFEGUARD_POSTGRES_STATE": state + "-" + name, "LIFEGUARD_POSTGRES_DURABLE": durable ? "1" : "0"]
        let url = try self.server("start", environment: environment)
        defer { _ = try? self.server("stop", environment: environment) }
        return try await body(url) { command in try self.server(command, environment: environment) }
    }

    /// Runs `body` with a primary and its streaming standby of their own (`pg_basebackup -R
    /// -X stream`), then removes both: tests may stop, promote and pause them.
    ///
    /// - Parameter body: Gets the primary's URL, the standby's, and a function that runs a
    ///   script's command on them (`control("postgres.sh", "pause")`, `control("standby.sh",
    ///   "promote")`).
    static func withReplicatedServers<Value>(
        _ body: (_ primary: String, _ standby: String, _ control: (_ script: String, _ command: String) throws -> Void) async throws -> Value
    ) async throws -> Value {
        guard let state = ProcessInfo.processInfo.environment["LIFEGUARD_POSTGRES_STATE"] else { throw ScriptMissing() }
        let environment = ["LIFEGUARD_POSTGRES_STATE": state + "-replicated"]
        let primary = try self.server("start", environment: environment)
        defer { _ = try? self.server("stop", environment: environment) }
        let standby = try self.server("start", environment: environment, script: "standby.sh")
        defer { _ = try? self.server("stop", environment: environment, script: "standby.sh") }
        return try await body(primary, standby) { script, command in try self.server(command, environment: environment, script: script) }
    }

    /// Runs `body` with a plain connection to the server at `url`, outside any pool.
    static func withObserver<Value>(of url: String, _ body: (PostgresConnection) async throws -> Value) async throws -> Value {
        var configuration = try PostgresPool.Configuration(url: url)
        configuration.applicationName = "lifeguard-observer"
        let factory = PostgresConnectionFactory(configuration: configuration, logger: logger, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        let observer = try await factory.openPostgresConnection()
        do {
            let value = try await body(observer)
            try await observer.close()
            return value
        } catch {
            try? await observer.close()
            throw error
        }
    }

    struct ScriptFailed: Error, CustomStringConvertible {
        let command: String
        let status: Int32
        var description: String { "scripts/postgres.sh \(self.command) failed (status \(self.status))" }
    }

    struct ScriptMissing: Error, CustomStringConvertible {
        var description: String { "LIFEGUARD_POSTGRES_SCRIPT is not set: run the tests with ./scripts/test.sh" }
    }
}

extension PostgresConnection {
    /// The single integer a statement returns.
    func integer(_ query: PostgresQuery) async throws -> Int {
        var result = 0
        for try await value in try await self.query(query, logger: TestDatabase.logger).decode(Int.self) {
            result = value
        }
        return result
    }
}

extension PostgresLease {
    /// Whether this connection is inside a transaction that an earlier statement opened.
    ///
    /// `now()` is the start of the current transaction. Outside a transaction block every
    /// statement is a transaction of its own, so two statements a few milliseconds apart see
    /// different `now()`s; inside an open block they see the same one. (`SELECT now() <>
    /// statement_timestamp()` cannot tell: PostgresNIO only speaks the extended protocol, where
    /// the server stamps the statement again at Bind and Execute, after the implicit
    /// transaction began at Parse, so the two differ even on a clean connection.)
    func isInsidePreviousTransaction() async throws -> Bool {
        let first = try await self.query("SELECT now()::text")[0].decode(String.self)
        try await self.execute("SELECT pg_sleep(0.002)")
        let second = try await self.query("SELECT now()::text")[0].decode(String.self)
        return first == second
    }
}

/// What `body` returned or threw.
func outcome<Value>(isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> Value) async -> Result<Value, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}

extension Result {
    /// The error, if it is a failure.
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

extension TestDatabase {
    /// Starts a task that leases a `.retrieval` connection of `pool` and runs `statement` on
    /// it, and returns once the server shows a backend of the pool's application active (at
    /// most 2 s). Made for pools of one connection.
    ///
    /// - Returns: The task, to cancel; the lease's connection (its `backendPID`, which behind
    ///   PgBouncer is PgBouncer's key, not a server pid); and the pid of the server backend
    ///   running the statement, as `pg_stat_activity` shows it.
    static func leaseRunning(
        in pool: PostgresPool, watchedBy observer: PostgresConnection, _ statement: @escaping @Sendable (PostgresLease) async throws -> Void
    ) async throws -> (task: Task<Void, any Error>, connection: Int32, backend: Int32) {
        let started = AsyncStream<Int32>.makeStream()
        let task = Task {
            try await pool.withConnection(lane: .retrieval) { lease in
                started.continuation.yield(lease.backendPID)
                try await statement(lease)
            }
        }
        var iterator = started.stream.makeAsyncIterator()
        let connection = await iterator.next()!
        let application = pool.postgresConfiguration.applicationName
        for _ in 0..<1_000 {
            let backend = try await observer.integer("""
                SELECT coalesce(min(pid), 0)::int FROM pg_stat_activity
                WHERE application_name = \(application) AND state = 'active' AND pid <> pg_backend_pid()
                """)
            if backend != 0 { return (task, connection, Int32(backend)) }
            try await Task.sleep(for: .milliseconds(2))
        }
        return (task, connection, 0)
    }

    /// Whether the server shows backend `pid` running a statement.
    static func isActive(_ pid: Int32, watchedBy observer: PostgresConnection) async throws -> Bool {
        try await observer.integer("SELECT count(*)::int FROM pg_stat_activity WHERE pid = \(pid) AND state = 'active'") == 1
    }

    /// Waits until the pool serves statements again: after an outage it reconnects with
    /// backoff, and PgBouncer retries its login to the server.
    static func untilServes(_ pool: PostgresPool) async throws {
        for attempt in 0..<150 {
            do {
                try await pool.query("SELECT 1", lane: .retrieval)
                return
            } catch where attempt < 149 {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}

extension Trait where Self == ConditionTrait {
    /// For a test on servers of its own (a durable cluster, a primary and its standby), started
    /// by the test and reached directly: the pass behind PgBouncer would only run it again.
    static var onServersOfItsOwn: Self {
        .disabled(if: TestDatabase.isBehindPgBouncer, "runs on servers of its own, reached directly: the pass behind PgBouncer would repeat it")
    }

    /// For a test of the promises behind the test PgBouncer (`PGBOUNCER_URL`, two server
    /// connections), which it reaches itself: the pass behind PgBouncer would only run it again.
    static var throughTheTestPgBouncer: Self {
        .enabled(if: TestDatabase.bouncerURL != nil && !TestDatabase.isBehindPgBouncer, "needs PGBOUNCER_URL (run ./scripts/test.sh); in the pass behind PgBouncer, already run")
    }
}
