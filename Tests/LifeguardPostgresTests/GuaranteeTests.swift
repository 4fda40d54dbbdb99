import Foundation
import Lifeguard
@testable import LifeguardPostgres
import Logging
import PostgresNIO
import Synchronization
import Testing

/// README's "What Lifeguard guarantees", each judged by the server's own view: rows counted
/// after a crash, `pg_stat_activity` sampled while the pool runs. Part of the real-server suite,
/// so that they never run while another test stops the server.
extension PostgresPoolTests {
    /// The SQLSTATE an error carries, whoever raised it.
    static func sqlState(of error: any Error) -> String? {
        if let error = error as? PostgresPoolError { return error.sqlState }
        if let error = error as? PSQLError { return error.serverInfo?[.sqlState] }
        return nil
    }

    @Test("a deferred constraint that fails at a statement's implicit commit reaches its caller as that SQLSTATE, and nothing is committed",
          arguments: ["pool.query", "lease.execute", "lease.query", "lease.withRows"])
    func deferredConstraintOutsideTransaction(path: String) async throws {
        let configuration = try TestDatabase.configuration(application: "lg-deferred", budget: 3)
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_deferred_child", lane: .write)
            try await pool.query("CREATE TABLE IF NOT EXISTS lg_deferred_parent (id int PRIMARY KEY)", lane: .write)
            try await pool.query("""
                CREATE TABLE lg_deferred_child (parent int REFERENCES lg_deferred_parent (id) DEFERRABLE INITIALLY DEFERRED)
                """, lane: .write)
            let insert: PostgresQuery = "INSERT INTO lg_deferred_child VALUES (999)"
            var caught: (any Error)?
            do {
                switch path {
                case "pool.query": try await pool.query(insert, lane: .write)
                case "lease.execute": try await pool.withConnection(lane: .write) { try await $0.execute(insert) }
                case "lease.withRows":
                    try await pool.withConnection(lane: .write) { lease in
                        try await lease.withRows(insert) { rows in for try await _ in rows {} }
                    }
                default: _ = try await pool.withConnection(lane: .write) { try await $0.query(insert) }
                }
            } catch {
                caught = error
            }
            #expect(caught.flatMap(Self.sqlState(of:)) == "23503", "got \(String(describing: caught))")
            let rows = try await pool.query("SELECT count(*)::int FROM lg_deferred_child", lane: .retrieval)[0].decode(Int.self)
            #expect(rows == 0)
            // The pool goes on: the connection was replaced or is clean.
            let answer = try await pool.query("SELECT 42", lane: .retrieval)[0].decode(Int.self)
            #expect(answer == 42)
        }
    }

    @Test("acknowledged writes survive crashes: 16 writers outside transactions, the server killed with pg_ctl stop -m immediate again and again, durable", .onServersOfItsOwn)
    func acknowledgedWritesSurviveCrashes() async throws {
        let rounds = ProcessInfo.processInfo.environment["LIFEGUARD_CRASH_ROUNDS"].flatMap(Int.init) ?? 8
        try await TestDatabase.withDurableServer { url, control in
            var configuration = try PostgresPool.Configuration(url: url)
            configuration.applicationName = "lg-crash"
            configuration.budget = 17
            configuration.lanes[.write] = .init(reserved: 0, limit: 17, waitTimeout: .seconds(2))
            try await TestDatabase.withPool(configuration) { pool in
                try await pool.query("CREATE TABLE lg_acks (writer int, n int, PRIMARY KEY (writer, n))", lane: .write)
                let acknowledged = Shared<[(Int, Int)]>([])
                let stop = Shared(false)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for writer in 0..<16 {
                        group.addTask {
                            var n = 0
                            while !stop.value {
                                n += 1
                                do {
                                    let insert: PostgresQuery = "INSERT INTO lg_acks VALUES (\(writer), \(n))"
                                    if writer % 2 == 0 {
                                        try await pool.query(insert, lane: .write)
                                    } else {
                                        try await pool.withConnection(lane: .write) { try await $0.execute(insert) }
                                    }
                                    acknowledged.modify { $0.append((writer, n)) }
                                } catch {
                                    try? await Task.sleep(for: .milliseconds(5))
                                }
                            }
                        }
                    }
                    for _ in 0..<rounds {
                        try await Task.sleep(for: .milliseconds(400))
                        try control("crash")
                        try await Task.sleep(for: .milliseconds(50))
                        try control("resume")
                    }
                    try await Task.sleep(for: .milliseconds(400))
                    stop.value = true
                    try await group.waitForAll()
                }
                // The server came back last: wait for the pool to reconnect.
                var rows: [PostgresRow] = []
                for attempt in 0..<200 {
                    do {
                        rows = try await pool.query("SELECT writer, n FROM lg_acks", lane: .retrieval)
                        break
                    } catch where attempt < 199 {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                var committed = Set<Int>()
                for row in rows {
                    let (writer, n) = try row.decode((Int, Int).self)
                    committed.insert(writer << 32 | n)
                }
                let acks = acknowledged.value
                let missing = acks.filter { !committed.contains($0.0 << 32 | $0.1) }
                print("crash loop: \(rounds) crashes, \(acks.count) writes acknowledged, \(committed.count) rows on the server, \(missing.count) acknowledged and missing")
                #expect(acks.count > 100)
                #expect(missing.isEmpty, "acknowledged, then missing after a crash: \(missing.prefix(10))")
            }
        }
    }

    @Test("returning early from withRows over 3 million rows: the next lease gets a connection the server no longer streams on",
          arguments: [true, false])
    func abandonedRowStream(serverSideCancellation: Bool) async throws {
        var configuration = try TestDatabase.configuration(application: "lg-abandoned-stream-\(serverSideCancellation)", budget: 2)
        configuration.serverSideCancellation = serverSideCancellation
        try await TestDatabase.withObserver { observer in try await TestDatabase.withPool(configuration) { pool in
            let first = try await pool.withConnection(lane: .retrieval) { lease in
                try await lease.withRows("SELECT g FROM generate_series(1, 3000000) g") { rows in
                    for try await row in rows { return try row.decode(Int.self) }
                    return 0
                }
            }
            #expect(first == 1)
            let (answer, streaming) = try await pool.withConnection(lane: .retrieval) { lease in
                // The connection this lease got (the abandoned one may still be closing: it
                // counts in the budget until its backend is gone).
                let streaming = try await observer.integer("""
                    SELECT count(*)::int FROM pg_stat_activity
                    WHERE pid = \(lease.backendPID) AND query LIKE '%generate_series%' AND state = 'active'
                    """)
                return (try await lease.query("SELECT 42")[0].decode(Int.self), streaming)
            }
            #expect(streaming == 0, "the server still streams the abandoned result on a connection of the pool")
            #expect(answer == 42)
        } }
    }

    @Test("a raw connection kept after its lease ended cannot open a transaction the next leases would run in")
    func escapedRawConnection() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-escaped-raw", budget: 2)
        try await TestDatabase.withObserver { observer in try await TestDatabase.withPool(configuration) { pool in
            let escaped = try await pool.withConnection(lane: .write) { lease in try lease.rawConnection() }
            // Once the pool has dealt with the connection (reset it, or closed it), the escaped
            // handle opens a transaction.
            for _ in 0..<1_000 where pool.status().idle + pool.status().opening == 0 && pool.status().connections > 0 {
                try await Task.sleep(for: .milliseconds(2))
            }
            try await Task.sleep(for: .milliseconds(20))
            // On a closed connection PostgresNIO 1.33.2 never answers a statement: wait a
            // little, not for the answer.
            let begin = Task { _ = try? await escaped.query("BEGIN", logger: TestDatabase.logger).collect() }
            try await Task.sleep(for: .milliseconds(300))
            begin.cancel()
            for _ in 0..<2 {
                let inside = try await pool.withConnection(lane: .write) { lease in try await lease.isInsidePreviousTransaction() }
                #expect(inside == false)
            }
            let open = try await observer.integer("""
                SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'lg-escaped-raw' AND state LIKE 'idle in transaction%'
                """)
            #expect(open == 0)
        } }
    }

    @Test("with reset timing out behind cancelled pg_sleep leases and no server-side cancellation, the server never holds more backends than the budget")
    func budgetHoldsOnTheServer() async throws {
        var configuration = try TestDatabase.configuration(application: "lg-budget-held", budget: 2)
        configuration.serverSideCancellation = false
        configuration.pool.resetTimeout = .milliseconds(200)
        try await TestDatabase.withObserver { observer in try await TestDatabase.withPool(configuration) { pool in
            let stop = Shared(false)
            let samples = try await withThrowingTaskGroup(of: [Int].self) { group in
                group.addTask {
                    var samples: [Int] = []
                    while !stop.value {
                        samples.append(try await observer.integer(
                            "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'lg-budget-held'"))
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    return samples
                }
                for _ in 0..<12 {
                    let tasks = (0..<2).map { _ in
                        Task { try await pool.withConnection(lane: .retrieval) { try await $0.execute("SELECT pg_sleep(1.5)") } }
                    }
                    try await Task.sleep(for: .milliseconds(60))
                    for task in tasks { task.cancel() }
                    for task in tasks { _ = await task.result }
                    try await Task.sleep(for: .milliseconds(250))
                }
                stop.value = true
                var all: [Int] = []
                for try await samples in group { all += samples }
                return all
            }
            let over = samples.filter { $0 > 2 }
            print("budget 2: \(samples.count) samples, \(over.count) over budget, most held \(samples.max() ?? 0)")
            #expect(samples.count > 20)
            #expect(over.isEmpty, "the server held \(samples.max() ?? 0) backends for a budget of 2")
        } }
    }
}

/// A value tasks share, behind a lock.
final class Shared<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>

    init(_ value: Value) { self.storage = Mutex(value) }

    var value: Value {
        get { self.storage.withLock { $0 } }
        set { self.storage.withLock { $0 = newValue } }
    }

    func modify(_ change: (inout Value) -> Void) { self.storage.withLock { change(&$0) } }
}

/// Findings of the review of issue 18, each judged by the server.
extension PostgresPoolTests {
    @Test("returning early from withRows over an INSERT … RETURNING outside a transaction: its rows are committed when the lease reports success")
    func earlyReturnFromWrite() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-early-write", budget: 2)
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_early_write", lane: .write)
            try await pool.query("CREATE TABLE lg_early_write (g int)", lane: .write)
            let first = try await pool.withConnection(lane: .write) { lease in
                try await lease.withRows("INSERT INTO lg_early_write SELECT generate_series(1, 300000) RETURNING g") { rows in
                    for try await row in rows { return try row.decode(Int.self) }
                    return 0
                }
            }
            #expect(first == 1)
            let committed = try await pool.query("SELECT count(*)::int FROM lg_early_write", lane: .retrieval)[0].decode(Int.self)
            #expect(committed == 300_000)
        }
    }

    @Test("session state set by a lease (SET, temp tables, advisory locks, LISTEN, PREPARE) never reaches the next lease")
    func sessionStateNeverLeaks() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-session-state", budget: 1)
        try await TestDatabase.withObserver { observer in try await TestDatabase.withPool(configuration) { pool in
            try await pool.withConnection(lane: .write) { lease in
                // Behind PgBouncer, statements that change the session are refused unsent (another
                // client would inherit the change); those that only may (set_config, DO) run, and
                // what they changed is reset before their transaction commits.
                let changes: [(statement: PostgresQuery, refusedBehindPgBouncer: Bool)] = [
                    ("SET statement_timeout = '1234ms'", true), ("SET search_path = lg_nowhere", true),
                    ("CREATE TEMP TABLE lg_temp (x int)", true), ("SELECT pg_advisory_lock(4242)", true), ("LISTEN lg_channel", true),
                    ("PREPARE lg_prepared AS SELECT 1", true), ("SELECT set_config('application_name', 'lg-changed', false)", false),
                    ("/* a comment first */ SET work_mem = '7MB'", true), (#"DO $$BEGIN EXECUTE 'SET lock_timeout = ''4321ms'''; END$$"#, false),
                ]
                for change in changes {
                    let refused = TestDatabase.isBehindPgBouncer && change.refusedBehindPgBouncer
                    do {
                        try await lease.execute(change.statement)
                        #expect(!refused, "behind PgBouncer, '\(change.statement.sql)' was sent to a shared server session")
                    } catch let error as PostgresPoolError where refused {
                        #expect(error.code == .sessionStateBehindPooler, "\(error)")
                    }
                }
            }
            let seen = try await pool.withConnection(lane: .write) { lease in
                try await lease.query("""
                    SELECT current_setting('statement_timeout'), current_setting('search_path'),
                           (SELECT count(*)::int FROM pg_class WHERE relname = 'lg_temp' AND relpersistence = 't'),
                           (SELECT count(*)::int FROM pg_listening_channels()),
                           (SELECT count(*)::int FROM pg_prepared_statements WHERE name = 'lg_prepared')
                    """)[0].decode((String, String, Int, Int, Int).self)
            }
            let (workMemory, lockTimeout) = try await pool.withConnection(lane: .write) { lease in
                try await lease.query("SELECT current_setting('work_mem'), current_setting('lock_timeout')")[0].decode((String, String).self)
            }
            #expect(workMemory != "7MB")
            #expect(lockTimeout == "0")
            #expect(seen.0 == "0")
            #expect(seen.1 != "lg_nowhere")
            #expect(seen.2 == 0)
            #expect(seen.3 == 0)
            #expect(seen.4 == 0)
            let locks = try await observer.integer("SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory'")
            #expect(locks == 0, "an advisory lock taken by a finished lease is still held on the server")
            let renamed = try await observer.integer("SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'lg-changed'")
            #expect(renamed == 0, "a session renamed by set_config(…, false) is still on the server")
        } }
    }

    @Test("with sessionReset = .afterEveryLease, session state changed inside functions and triggers never reaches the next lease, on the same backend",
          .disabled(if: TestDatabase.isBehindPgBouncer, "behind PgBouncer in transaction mode the pool owns no server session to reset: session changes are refused by their text instead (README, 'Behind PgBouncer')"))
    func sessionResetAfterEveryLease() async throws {
        var configuration = try TestDatabase.configuration(application: "lg-session-reset", budget: 1)
        configuration.sessionReset = .afterEveryLease
        try await TestDatabase.withObserver { observer in try await TestDatabase.withPool(configuration) { pool in
            _ = try await observer.query("""
                CREATE OR REPLACE FUNCTION lg_changes_session() RETURNS int LANGUAGE plpgsql AS $$
                BEGIN
                    SET statement_timeout = '1234ms';
                    EXECUTE 'CREATE TEMP TABLE IF NOT EXISTS lg_hidden_temp (x int)';
                    PERFORM pg_advisory_lock(4343);
                    EXECUTE 'LISTEN lg_hidden_channel';
                    EXECUTE 'PREPARE lg_hidden_prepared AS SELECT 1';
                    PERFORM nextval('lg_hidden_sequence');
                    RETURN 1;
                END $$
                """, logger: TestDatabase.logger)
            _ = try await observer.query("CREATE SEQUENCE IF NOT EXISTS lg_hidden_sequence", logger: TestDatabase.logger)
            _ = try await observer.query("CREATE TABLE IF NOT EXISTS lg_session_trigger (x int)", logger: TestDatabase.logger)
            _ = try await observer.query("""
                CREATE OR REPLACE FUNCTION lg_trigger_sets() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM set_config('lock_timeout', '4321ms', false); RETURN NEW; END $$
                """, logger: TestDatabase.logger)
            _ = try await observer.query("""
                CREATE OR REPLACE TRIGGER lg_session_trigger BEFORE INSERT ON lg_session_trigger
                FOR EACH ROW EXECUTE FUNCTION lg_trigger_sets()
                """, logger: TestDatabase.logger)
            let first = try await pool.withConnection(lane: .write) { lease in
                try await lease.execute("SELECT lg_changes_session()")
                try await lease.execute("INSERT INTO lg_session_trigger VALUES (1)")
                return lease.backendPID
            }
            let (backend, seen) = try await pool.withConnection(lane: .write) { lease in
                (lease.backendPID, try await lease.query("""
                    SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),
                           (SELECT count(*)::int FROM pg_class WHERE relname = 'lg_hidden_temp' AND relnamespace = pg_my_temp_schema()),
                           (SELECT count(*)::int FROM pg_listening_channels()),
                           (SELECT count(*)::int FROM pg_prepared_statements WHERE name = 'lg_hidden_prepared')
                    """)[0].decode((String, String, Int, Int, Int).self))
            }
            #expect(backend == first, "the connection was replaced, not reset")
            #expect(seen.0 == "0" && seen.1 == "0", "settings inherited: \(seen)")
            #expect(seen.2 == 0 && seen.3 == 0 && seen.4 == 0, "temp table, LISTEN or PREPARE inherited: \(seen)")
            let locks = try await observer.integer("SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = \(first)")
            #expect(locks == 0, "an advisory lock taken by a finished lease is still held on the server")
            await #expect(throws: PSQLError.self, "lastval() of the lease before was kept") {
                try await pool.withConnection(lane: .write) { lease in try await lease.query("SELECT lastval()") }
            }
            // Prepared statements of PostgresNIO survive the reset.
            for _ in 0..<3 {
                let answer = try await pool.withConnection(lane: .write) { lease in try await lease.query(AnswerStatement())[0] }
                #expect(answer == 42)
            }
        } }
    }

    struct AnswerStatement: PostgresPreparedStatement {
        static let sql = "SELECT 42::int"
        typealias Row = Int
        func makeBindings() throws -> PostgresBindings { PostgresBindings() }
        func decodeRow(_ row: PostgresRow) throws -> Int { try row.decode(Int.self) }
    }

    @Test("a withRows consumer that throws mid-stream over 3 million rows: the next lease is served within its default wait")
    func consumerThrowsMidStream() async throws {
        var configuration = try TestDatabase.configuration(application: "lg-consumer-throws", budget: 1)
        configuration.lanes[.retrieval] = .init(waitTimeout: .milliseconds(2_000))
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("SELECT 1", lane: .retrieval)   // the connection is open
            await #expect(throws: Boom.self) {
                try await pool.withConnection(lane: .retrieval) { lease in
                    try await lease.withRows("SELECT g FROM generate_series(1, 3000000) g") { rows in
                        for try await _ in rows { throw Boom() }
                    }
                }
            }
            let answer = try await pool.query("SELECT 42", lane: .retrieval)[0].decode(Int.self)
            #expect(answer == 42)
        }
    }

    struct Boom: Error {}

    @Test("a password provider that never answers fails the connect at connect_timeout, saying so, and frees the slot")
    func hangingPasswordProvider() async throws {
        var configuration = try TestDatabase.configuration(application: "lg-hanging-provider", budget: 1)
        configuration.connectTimeout = .seconds(1)
        configuration.lanes[.retrieval] = .init(waitTimeout: .seconds(3))
        let calls = Shared(0)
        let password = configuration.password
        configuration.passwordProvider = {
            calls.modify { $0 += 1 }
            if calls.value == 1 { try await Task.sleep(for: .seconds(40)) }
            return password ?? ""
        }
        let started = ContinuousClock.now
        try await TestDatabase.withPool(configuration) { pool in
            do {
                try await pool.query("SELECT 1", lane: .retrieval)
                Issue.record("expected the first connect to fail")
            } catch {
                #expect(String(describing: error).contains("password provider"), "\(error)")
            }
            // The slot came back: a second connect asks the provider again and succeeds.
            for _ in 0..<100 {
                if (try? await pool.query("SELECT 1", lane: .retrieval)) != nil { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(calls.value >= 2)
        }
        #expect(started.duration(to: .now) < .seconds(30), "shutdown waited for the hanging provider")
    }
}

extension PostgresPoolTests {
    /// Whether the test server speaks TLS (scripts/postgres.sh gives it a certificate when
    /// openssl is installed).
    static let serverHasTLS: Bool = {
        guard let state = ProcessInfo.processInfo.environment["LIFEGUARD_POSTGRES_STATE"],
              let recorded = try? String(contentsOfFile: state, encoding: .utf8),
              let line = recorded.split(separator: "\n").first(where: { $0.hasPrefix("dir=") })
        else { return false }
        return FileManager.default.fileExists(atPath: "\(line.dropFirst(4))/data/server.crt")
    }()

    @Test("over TLS the tap reads behind the TLS handler: statements settle, a refused commit gives its SQLSTATE, the session is TLS",
          .enabled(if: serverHasTLS, "the test server has no certificate (openssl missing)"))
    func overTLS() async throws {
        var configuration = try TestDatabase.configuration(application: "lg-tls", budget: 2)
        configuration.tlsMode = .require
        try await TestDatabase.withPool(configuration) { pool in
            let ssl = try await pool.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", lane: .retrieval)[0].decode(Bool.self)
            #expect(ssl)
            try await pool.query("DROP TABLE IF EXISTS lg_tls_child", lane: .write)
            try await pool.query("CREATE TABLE IF NOT EXISTS lg_tls_parent (id int PRIMARY KEY)", lane: .write)
            try await pool.query("CREATE TABLE lg_tls_child (parent int REFERENCES lg_tls_parent (id) DEFERRABLE INITIALLY DEFERRED)", lane: .write)
            var state: String?
            do {
                try await pool.query("INSERT INTO lg_tls_child VALUES (7)", lane: .write)
            } catch {
                state = Self.sqlState(of: error)
            }
            #expect(state == "23503")
            let started = ContinuousClock.now
            let sleeper = Task { try await pool.query("SELECT pg_sleep(30)", lane: .retrieval) }
            try await Task.sleep(for: .milliseconds(300))
            sleeper.cancel()
            _ = await sleeper.result
            #expect(started.duration(to: .now) < .seconds(15), "the cancel did not reach the statement")
        }
    }
}
