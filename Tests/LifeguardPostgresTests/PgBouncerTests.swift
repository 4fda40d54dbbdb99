import Foundation
import Lifeguard
@testable import LifeguardPostgres
import NIOPosix
import PostgresNIO
import Testing

extension TestDatabase {
    /// PgBouncer in transaction mode in front of the test server, two server connections
    /// (`scripts/pgbouncer.sh`, started by `scripts/test.sh`).
    static let bouncerURL = ProcessInfo.processInfo.environment["PGBOUNCER_URL"]

    /// A configuration through PgBouncer with its own `application_name`.
    static func bouncerConfiguration(application: String, budget: Int) throws -> PostgresPool.Configuration {
        var configuration = try PostgresPool.Configuration(url: bouncerURL!)
        configuration.applicationName = application
        configuration.budget = budget
        configuration.lanes = configuration.lanes.mapValues { lane in
            var patient = lane
            patient.waitTimeout = .seconds(10)
            return patient
        }
        return configuration
    }

    /// Makes the pool open `count` connections (leases held at once), then leaves them idle.
    static func openConnections(_ count: Int, in pool: PostgresPool) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<count {
                group.addTask { try await pool.withConnection(lane: .retrieval) { lease in try await lease.execute("SELECT pg_sleep(0.1)") } }
            }
            try await group.waitForAll()
        }
    }

    /// A plain connection through PgBouncer: another client of it.
    static func bouncerClient() async throws -> PostgresConnection {
        let configuration = try self.bouncerConfiguration(application: "lg-other-client", budget: 1)
        return try await PostgresConnectionFactory(configuration: configuration, logger: logger, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
            .openPostgresConnection()
    }
}

/// The same promises behind PgBouncer in transaction mode (PgBouncer 1.18, Debian's).
extension PostgresPoolTests {
    @Test("behind PgBouncer, cancelling a task cancels its own statement and never another client's",
          .throughTheTestPgBouncer)
    func bouncerCancelsOnlyItsOwn() async throws {
        let configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-cancel", budget: 2)
        let others = [try await TestDatabase.bouncerClient(), try await TestDatabase.bouncerClient()]
        func closeOthers() async { for other in others { try? await other.close() } }
        do { try await TestDatabase.withPool(configuration) { pool in
            // Warm: our connection to PgBouncer is open before the others take both server connections.
            try await pool.query("SELECT 1", lane: .retrieval)
            let othersSleep = others.map { other in
                Task { try await other.query("SELECT pg_sleep(1.5)", logger: TestDatabase.logger).collect().count }
            }
            try await Task.sleep(for: .milliseconds(200))
            let started = ContinuousClock.now
            let ours = Task { try await pool.query("SELECT pg_sleep(30)", lane: .retrieval) }
            try await Task.sleep(for: .milliseconds(300))
            ours.cancel()
            let ourResult = await ours.result
            let ended = started.duration(to: .now)
            for other in othersSleep {
                let rows = try await other.value   // throws if PgBouncer's backend got our cancel
                #expect(rows == 1)
            }
            #expect(throws: CancellationError.self) { try ourResult.get() }
            print("behind PgBouncer: our cancelled pg_sleep(30) ended after \(ended)")
            #expect(ended < .seconds(15), "our statement was not cancelled: it ran \(ended)")
        } } catch {
            await closeOthers()
            throw error
        }
        await closeOthers()
    }

    @Test("behind PgBouncer 1.18 in transaction mode, prepared statements fall back to unnamed ones: every run succeeds",
          .throughTheTestPgBouncer)
    func bouncerPreparedStatements() async throws {
        let configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-prepared", budget: 3)
        try await TestDatabase.withPool(configuration) { pool in
            let results = try await withThrowingTaskGroup(of: [Int].self) { group in
                for task in 0..<6 {
                    group.addTask {
                        var sums: [Int] = []
                        for number in 0..<20 {
                            let sum = try await pool.withConnection(lane: .retrieval) { lease in
                                try await lease.query(AddOne(number: task * 100 + number))
                            }
                            sums += sum
                        }
                        return sums
                    }
                }
                var all: [Int] = []
                for try await sums in group { all += sums }
                return all
            }
            var expected: [Int] = []
            for task in 0..<6 { for number in 0..<20 { expected.append(task * 100 + number + 1) } }
            #expect(results.sorted() == expected)
        }
    }

    @Test("behind PgBouncer with its server down, a new connection fails within connect_timeout instead of waiting query_wait_timeout (120 s)",
          .throughTheTestPgBouncer)
    func bouncerOutageFailsFast() async throws {
        var configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-outage", budget: 2)
        configuration.connectTimeout = .seconds(2)
        try TestDatabase.server("pause")
        defer { _ = try? TestDatabase.server("resume") }
        try await TestDatabase.withPool(configuration) { pool in
            let started = ContinuousClock.now
            await #expect(throws: LifeguardError.self) { try await pool.query("SELECT 1", lane: .retrieval) }
            let waited = started.duration(to: .now)
            print("behind PgBouncer, server down: the request failed after \(waited)")
            #expect(waited < .seconds(20))
        }
    }
}

extension PostgresPoolTests {
    @Test("behind PgBouncer with its server down, a statement on a connection already open fails within connect_timeout; a write reported unavailable never runs later",
          .throughTheTestPgBouncer)
    func bouncerOutageOpenConnection() async throws {
        var configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-outage-open", budget: 2)
        configuration.connectTimeout = .seconds(2)
        try await TestDatabase.withPool(configuration) { pool in
            try await TestDatabase.untilServes(pool)
            try await pool.query("CREATE TABLE IF NOT EXISTS lg_bouncer_open (x int)", lane: .write)
            try await pool.query("TRUNCATE lg_bouncer_open", lane: .write)
            // Both connections open and idle: the next statements take them, no connect.
            async let first: Void = pool.withConnection(lane: .retrieval) { lease in try await lease.execute("SELECT pg_sleep(0.2)") }
            async let second: Void = pool.withConnection(lane: .retrieval) { lease in try await lease.execute("SELECT pg_sleep(0.2)") }
            _ = try await (first, second)
            try TestDatabase.server("pause")
            let started = ContinuousClock.now
            async let read = outcome { try await pool.query("SELECT 1", lane: .retrieval) }
            async let write = outcome { try await pool.query("INSERT INTO lg_bouncer_open VALUES (1)", lane: .write) }
            let (readResult, writeResult) = await (read, write)
            let waited = started.duration(to: .now)
            try TestDatabase.server("resume")
            print("behind PgBouncer, server down, connections open: the requests failed after \(waited)")
            #expect(waited < .seconds(8), "the statements waited \(waited) for a server")
            #expect((try? readResult.get()) == nil)
            // No server answered in time, or PgBouncer refused at once (it had just failed to
            // log in to the server: "server login has been failing", 08P01): unavailable.
            #expect((readResult.failure as? LifeguardError)?.code == .databaseUnavailable, "\(String(describing: readResult.failure))")
            // The write was with PgBouncer when the server went: its outcome is unknown, or
            // (held back once the pooler was suspect, or refused by PgBouncer) it never ran.
            #expect((writeResult.failure as? PostgresPoolError)?.code == .commitOutcomeUnknown
                        || (writeResult.failure as? LifeguardError)?.code == .databaseUnavailable,
                    "\(String(describing: writeResult.failure))")
            try await TestDatabase.untilServes(pool)
            try await Task.sleep(for: .seconds(1))
            let rows = try await pool.query("SELECT count(*)::int FROM lg_bouncer_open", lane: .retrieval)[0].decode(Int.self)
            // The promise: a write reported unavailable never ran and never runs. One whose
            // outcome is unknown may have (it was with PgBouncer when the server went).
            if (writeResult.failure as? LifeguardError)?.code == .databaseUnavailable {
                #expect(rows == 0, "the INSERT reported unavailable ran once the server came back")
            } else {
                #expect(rows <= 1, "the INSERT ran \(rows) times")
                print("behind PgBouncer, a write of unknown outcome: \(rows) rows once the server came back")
            }
        }
    }

    @Test("a connection knows whether a pooler stands between it and the server",
          .throughTheTestPgBouncer)
    func poolerDetection() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        var directConfiguration = try PostgresPool.Configuration(url: TestDatabase.serverURL!)
        directConfiguration.applicationName = "lg-pooler-detect"
        let direct = try await PostgresConnectionFactory(configuration: directConfiguration, logger: TestDatabase.logger, eventLoopGroup: group).connect()
        let bounced = try await PostgresConnectionFactory(
            configuration: TestDatabase.bouncerConfiguration(application: "lg-pooler-detect", budget: 1), logger: TestDatabase.logger, eventLoopGroup: group
        ).connect()
        #expect(!direct.isBehindPooler)
        #expect(bounced.isBehindPooler)
        await direct.terminate(within: .seconds(5), logger: TestDatabase.logger)
        await bounced.terminate(within: .seconds(5), logger: TestDatabase.logger)
    }

    @Test("behind PgBouncer with every server taken by other clients, a statement waits for one: a busy pooler is no outage",
          .throughTheTestPgBouncer)
    func bouncerBusyIsNoOutage() async throws {
        var configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-busy", budget: 2)
        configuration.connectTimeout = .seconds(1)
        try await TestDatabase.withPool(configuration) { pool in
            try await TestDatabase.untilServes(pool)
            try await TestDatabase.openConnections(2, in: pool)
            // PgBouncer has two servers; two other clients hold them in open transactions.
            let others = [try await TestDatabase.bouncerClient(), try await TestDatabase.bouncerClient()]
            for other in others {
                _ = try await other.query("BEGIN", logger: TestDatabase.logger)
                _ = try await other.query("SELECT 1", logger: TestDatabase.logger)
            }
            let read = Task { await outcome { try await pool.query("SELECT 1", lane: .retrieval) } }
            let write = Task { await outcome { try await pool.query("CREATE TABLE IF NOT EXISTS lg_bouncer_busy (x int)", lane: .write) } }
            try await Task.sleep(for: .seconds(3))
            for other in others { _ = try await other.query("COMMIT", logger: TestDatabase.logger) }
            let (readResult, writeResult) = (await read.value, await write.value)
            for other in others { try await other.close() }
            #expect(readResult.failure == nil, "\(String(describing: readResult.failure))")
            #expect(writeResult.failure == nil, "\(String(describing: writeResult.failure))")
            try await pool.query("SELECT 1", lane: .retrieval)
        }
    }

    @Test("behind PgBouncer with every server taken by our own transactions, a new connection waits for one: no outage, no failing fast",
          .throughTheTestPgBouncer)
    func bouncerBusyNewConnection() async throws {
        var configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-busy-new", budget: 4)
        configuration.connectTimeout = .seconds(1)
        try await TestDatabase.withPool(configuration) { pool in
            try await TestDatabase.untilServes(pool)
            let holders = (0..<2).map { _ in
                Task {
                    try await pool.withTransaction(lane: .write) { lease in
                        try await lease.execute("SELECT 1")
                        try await Task.sleep(for: .seconds(3))
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            // The pool's idle connection, if any, is taken first; the next needs a new one.
            async let first = outcome { try await pool.query("SELECT 1", lane: .retrieval) }
            async let second = outcome { try await pool.query("SELECT 2", lane: .retrieval) }
            let (firstResult, secondResult) = await (first, second)
            for holder in holders { _ = try await holder.value }
            #expect(firstResult.failure == nil, "\(String(describing: firstResult.failure))")
            #expect(secondResult.failure == nil, "\(String(describing: secondResult.failure))")
            try await pool.query("SELECT 3", lane: .retrieval)
        }
    }

    @Test("behind PgBouncer, a write reported failed during an outage never runs, whenever the server comes back; one sent once the pooler was suspect is never of unknown outcome",
          .throughTheTestPgBouncer)
    func bouncerOutageResumeRace() async throws {
        var configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-race", budget: 3)
        configuration.connectTimeout = .seconds(2)
        try await TestDatabase.withPool(configuration) { pool in
            try await TestDatabase.untilServes(pool)
            try await pool.query("CREATE TABLE IF NOT EXISTS lg_bouncer_race (id int)", lane: .write)
            try await pool.query("TRUNCATE lg_bouncer_race", lane: .write)
            var reported: [(id: Int, afterSuspicion: Bool, failure: (any Error)?)] = []
            for (round, offset) in [0.0, 1.2, 1.5, 1.8, 2.1, 2.5].enumerated() {
                try await TestDatabase.untilServes(pool)
                try await TestDatabase.openConnections(3, in: pool)
                try TestDatabase.server("pause")
                let early = Task { await outcome { try await pool.query("INSERT INTO lg_bouncer_race VALUES (\(round * 2))", lane: .write) } }
                try await Task.sleep(for: .milliseconds(300))
                let late = Task { await outcome { try await pool.query("INSERT INTO lg_bouncer_race VALUES (\(round * 2 + 1))", lane: .write) } }
                try await Task.sleep(for: .seconds(offset))
                try TestDatabase.server("resume")
                reported.append((round * 2, false, await early.value.failure))
                reported.append((round * 2 + 1, true, await late.value.failure))
            }
            try await TestDatabase.untilServes(pool)
            try await Task.sleep(for: .seconds(2))
            var committed = Set<Int>()
            for row in try await pool.query("SELECT id FROM lg_bouncer_race", lane: .retrieval) { committed.insert(try row.decode(Int.self)) }
            for (id, afterSuspicion, failure) in reported {
                guard let failure else {
                    #expect(committed.contains(id), "write \(id) was reported done and is missing")
                    continue
                }
                if (failure as? PostgresPoolError)?.code == .commitOutcomeUnknown {
                    #expect(!afterSuspicion, "write \(id), sent once the pooler was suspect, has an unknown outcome")
                } else {
                    #expect(!committed.contains(id), "write \(id) was reported failed (\(PostgresPoolError.describe(failure))) and committed")
                }
            }
        }
    }

    @Test("behind PgBouncer, a statement that would change the shared server session is refused unsent; SET LOCAL and transaction locks work",
          .throughTheTestPgBouncer)
    func bouncerRefusesSessionState() async throws {
        let configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-session", budget: 1)
        try await TestDatabase.withPool(configuration) { pool in
            try await TestDatabase.untilServes(pool)
            for statement: PostgresQuery in ["SET statement_timeout = 4321", "SELECT pg_advisory_lock(9123001)", "LISTEN lg_channel", "PREPARE lg_p AS SELECT 1"] {
                await #expect(throws: PostgresPoolError.self, "\(statement.sql)") {
                    do {
                        try await pool.query(statement, lane: .write)
                    } catch let error as PostgresPoolError {
                        #expect(error.code == .sessionStateBehindPooler)
                        throw error
                    }
                }
            }
            let seen = try await pool.withTransaction(lane: .write) { lease in
                try await lease.execute("SET LOCAL statement_timeout = 1234")
                try await lease.execute("SELECT pg_advisory_xact_lock(9123001)")
                return try await lease.query("SHOW statement_timeout")[0].decode(String.self)
            }
            #expect(seen == "1234ms")
            // The server's view: nothing of it outlives the transaction, on any server connection.
            for _ in 0..<4 {
                #expect(try await pool.query("SHOW statement_timeout", lane: .retrieval)[0].decode(String.self) == "0")
            }
            let locks = try await TestDatabase.withObserver { observer in
                try await observer.integer("SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory'")
            }
            #expect(locks == 0)
        }
    }

    @Test("behind PgBouncer, DO blocks and set_config run, and what they change in the shared server session is undone before their transaction commits",
          .throughTheTestPgBouncer)
    func bouncerUndoesSessionChanges() async throws {
        let configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-undo", budget: 1)
        // Another client holds one of PgBouncer's two server connections in a transaction: every
        // statement of ours runs on the other one, so the next statement sees what the last left.
        let other = try await TestDatabase.bouncerClient()
        do {
            try await TestDatabase.withPool(configuration) { pool in
                try await TestDatabase.untilServes(pool)
                _ = try await other.query("BEGIN", logger: TestDatabase.logger).collect()
                _ = try await other.query("SELECT 1", logger: TestDatabase.logger).collect()
                try await pool.query("CREATE TABLE IF NOT EXISTS lg_bouncer_do (id int)", lane: .write)
                try await pool.query("TRUNCATE lg_bouncer_do", lane: .write)
                let setLockTimeout: PostgresQuery = "DO $$BEGIN PERFORM set_config('lock_timeout', '4321ms', false); INSERT INTO lg_bouncer_do VALUES (1); END$$"
                // Outside a transaction: the block's work is committed, its setting is not left behind.
                try await pool.query(setLockTimeout, lane: .write)
                #expect(try await pool.query("SHOW lock_timeout", lane: .write)[0].decode(String.self) == "0")
                try await pool.query("SELECT set_config('statement_timeout', '1234ms', false)", lane: .write)
                #expect(try await pool.query("SHOW statement_timeout", lane: .write)[0].decode(String.self) == "0")
                // Inside one: the setting holds until the commit, as the block meant, and not after.
                let inside = try await pool.withTransaction(lane: .write) { lease in
                    try await lease.execute(setLockTimeout)
                    return try await lease.query("SHOW lock_timeout")[0].decode(String.self)
                }
                #expect(inside == "4321ms")
                #expect(try await pool.query("SHOW lock_timeout", lane: .write)[0].decode(String.self) == "0")
                let rows = try await TestDatabase.withObserver { observer in
                    try await observer.integer("SELECT count(*)::int FROM lg_bouncer_do")
                }
                #expect(rows == 2, "both blocks' rows are committed")
            }
        } catch {
            try? await other.close()
            throw error
        }
        try await other.close()
    }

    @Test("behind PgBouncer, a statement that runs longer than connect_timeout is not taken for an outage",
          .throughTheTestPgBouncer)
    func bouncerLongStatement() async throws {
        var configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-long", budget: 2)
        configuration.connectTimeout = .seconds(1)
        try await TestDatabase.withPool(configuration) { pool in
            try await TestDatabase.untilServes(pool)
            try await pool.query("SELECT pg_sleep(2.5)", lane: .retrieval)
            try await pool.withTransaction(lane: .write) { lease in
                try await lease.execute("SELECT pg_sleep(1.5)")
                try await lease.execute("SELECT pg_sleep(1.5)")
            }
            // A statement that waits for a lock as it is parsed (behind a migration's ALTER
            // TABLE) has a server: it waits for the lock, not for an outage.
            try await pool.query("CREATE TABLE IF NOT EXISTS lg_bouncer_locked (x int)", lane: .write)
            try await TestDatabase.withObserver { other in
                _ = try await other.query("BEGIN", logger: TestDatabase.logger)
                _ = try await other.query("LOCK TABLE lg_bouncer_locked IN ACCESS EXCLUSIVE MODE", logger: TestDatabase.logger)
                let read = Task { try await pool.query("SELECT count(*) FROM lg_bouncer_locked", lane: .retrieval) }
                try await Task.sleep(for: .seconds(2.5))
                _ = try await other.query("COMMIT", logger: TestDatabase.logger)
                _ = try await read.value
            }
        }
    }

    @Test("behind PgBouncer with its server down, a cancelled task's statement stops waiting and never runs later",
          .throughTheTestPgBouncer)
    func bouncerOutageCancel() async throws {
        let configuration = try TestDatabase.bouncerConfiguration(application: "lg-bouncer-outage-cancel", budget: 2)
        try await TestDatabase.withPool(configuration) { pool in
            try await TestDatabase.untilServes(pool)
            try await pool.query("CREATE TABLE IF NOT EXISTS lg_bouncer_late (x int)", lane: .write)
            try await pool.query("TRUNCATE lg_bouncer_late", lane: .write)
            try TestDatabase.server("pause")
            let started = ContinuousClock.now
            let write = Task { try await pool.query("INSERT INTO lg_bouncer_late VALUES (1)", lane: .write) }
            try await Task.sleep(for: .milliseconds(500))
            write.cancel()
            let result = await write.result
            let ended = started.duration(to: .now)
            try TestDatabase.server("resume")
            #expect(throws: (any Error).self) { try result.get() }
            #expect(ended < .seconds(15), "the cancelled task waited \(ended)")
            try await Task.sleep(for: .seconds(1))
            var rows = -1
            for _ in 0..<100 {
                if let count = try? await pool.query("SELECT count(*)::int FROM lg_bouncer_late", lane: .retrieval)[0].decode(Int.self) {
                    rows = count
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(rows == 0, "the cancelled INSERT ran once the server came back")
        }
    }
}
