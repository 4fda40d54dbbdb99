import Lifeguard
@testable import LifeguardPostgres
import PostgresNIO
import Testing

/// Coalescer tests run in the real-server suite, one at a time (it stops the server once).
extension PostgresPoolTests {
    /// Connection-seconds spent on the write lane: leases × mean hold.
    func writeConnectionSeconds(_ pool: PostgresPool) -> Double {
        let hold = pool.statistics()[.write]!.hold
        return Double(hold.count) * hold.mean / 1_000
    }

    /// 200 agents writing 25 rows (agent, step) each through `write`.
    func agentStorm(_ write: @escaping @Sendable (_ agent: Int, _ step: Int) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { agents in
            for agent in 0..<200 {
                agents.addTask {
                    for step in 0..<25 {
                        try await write(agent, step)
                    }
                }
            }
            try await agents.waitForAll()
        }
    }

    @Test("coalescer: 5,000 writes from 200 agents are all durable, for a fraction of the connection-seconds of one lease per write")
    func coalescerStorm() async throws {
        // One lease per write from 200 agents overloads the write lane: no shedding, so that
        // every write of the comparison completes.
        let configuration = try TestDatabase.configuration(application: "lg-coalesce", budget: 20, lanes: [
            .write: .init(waitTimeout: .seconds(30), maxWaiters: 10_000, shedding: nil),
            .retrieval: .init(waitTimeout: .seconds(10)),
        ])
        var perWrite = 0.0
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_single", lane: .write)
            try await pool.query("CREATE TABLE lg_single (agent int, step int)", lane: .write)
            let before = self.writeConnectionSeconds(pool)
            try await self.agentStorm { agent, step in
                try await pool.query("INSERT INTO lg_single (agent, step) VALUES (\(agent), \(step))", lane: .write)
            }
            perWrite = self.writeConnectionSeconds(pool) - before
            #expect(try await pool.query("SELECT count(*) FROM lg_single", lane: .retrieval)[0].decode(Int.self) == 5_000)
        }
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_coalesced", lane: .write)
            try await pool.query("CREATE TABLE lg_coalesced (agent int, step int)", lane: .write)
            let coalescer = try WriteCoalescer(pool: pool)
            let flushing = Task { await coalescer.run() }
            let before = self.writeConnectionSeconds(pool)
            try await self.agentStorm { agent, step in
                try await coalescer.insert(.init(into: "lg_coalesced", columns: ["agent", "step"], values: [agent, step]))
            }
            let coalesced = self.writeConnectionSeconds(pool) - before
            coalescer.shutdown()
            await flushing.value
            #expect(try await pool.query("SELECT count(*) FROM lg_coalesced", lane: .retrieval)[0].decode(Int.self) == 5_000)
            let share = coalesced / perWrite
            print("coalescer: \(coalesced) connection-seconds vs \(perWrite) with one lease per write (\((share * 1000).rounded() / 10)%)")
            // Merged into multi-row INSERTs, a batch is one round trip.
            #expect(share < 0.05)
        }
    }

    /// Ten writers whose writes form one batch (one connection, a long delay); returns the
    /// writers whose write failed, and the coalescer, shut down.
    func oneBatchOfTen(
        _ pool: PostgresPool, _ write: @escaping @Sendable (WriteCoalescer, Int) async throws -> Void
    ) async throws -> (failed: [Int], coalescer: WriteCoalescer) {
        let coalescer = try WriteCoalescer(
            pool: pool, configuration: .init(maxBatch: 64, maxDelay: .milliseconds(200), maxConnections: 1))
        let flushing = Task { await coalescer.run() }
        let failed = await withTaskGroup(of: Int?.self) { writers in
            for id in 0..<10 {
                writers.addTask {
                    do {
                        try await write(coalescer, id)
                        return nil
                    } catch {
                        return id
                    }
                }
            }
            var failed: [Int] = []
            for await id in writers { if let id { failed.append(id) } }
            return failed
        }
        coalescer.shutdown()
        await flushing.value
        return (failed.sorted(), coalescer)
    }

    @Test("coalescer: a poisoned statement fails only its own caller; the rest of its batch commits")
    func coalescerPoison() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-poison", budget: 4)
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_poison", lane: .write)
            try await pool.query("CREATE TABLE lg_poison (id int PRIMARY KEY)", lane: .write)
            let (failed, coalescer) = try await self.oneBatchOfTen(pool) { coalescer, id in
                // Writer 5 divides by zero: its statement fails on the server.
                try await coalescer.write(id == 5 ? "INSERT INTO lg_poison VALUES (1 / 0)" : "INSERT INTO lg_poison VALUES (\(id))")
            }
            #expect(failed == [5])
            let ids = try await pool.query("SELECT id FROM lg_poison ORDER BY id", lane: .retrieval).map { try $0.decode(Int.self) }
            #expect(ids == [0, 1, 2, 3, 4, 6, 7, 8, 9])
            // After shutdown, writes are refused.
            await #expect(throws: LifeguardError.self) { try await coalescer.write("SELECT 1") }
        }
    }

    @Test("coalescer: a full queue makes writers wait for room instead of queueing without bound")
    func coalescerBackPressure() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-backpressure", budget: 3)
        try await TestDatabase.withPool(configuration) { pool in
            let coalescer = try WriteCoalescer(
                pool: pool, configuration: .init(maxBatch: 1, maxQueued: 1, maxConnections: 1))
            let flushing = Task { await coalescer.run() }
            let writers = (0..<4).map { _ in Task { try await coalescer.write("SELECT pg_sleep(0.2)") } }
            // One statement runs, one is queued, the other two wait for room.
            var observed = (queued: 0, waiting: 0)
            for _ in 0..<200 {
                let counts = coalescer.counts
                observed = (counts.queued, counts.waitingForRoom)
                if observed.waiting == 2 { break }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(observed.queued == 1)
            #expect(observed.waiting == 2)
            for writer in writers { try await writer.value }
            coalescer.shutdown()
            await flushing.value
        }
    }

    @Test("coalescer: rows merged into one INSERT; a duplicate key fails only its own caller")
    func coalescerMergedPoison() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-merged-poison", budget: 4)
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_merged", lane: .write)
            try await pool.query("CREATE TABLE lg_merged (id int PRIMARY KEY, note text)", lane: .write)
            try await pool.query("INSERT INTO lg_merged VALUES (5, 'there first')", lane: .write)
            let (failed, coalescer) = try await self.oneBatchOfTen(pool) { coalescer, id in
                // Row 5 exists already; row 7 has a NULL note.
                let note: String? = id == 7 ? nil : "row \(id)"
                try await coalescer.insert(.init(into: "lg_merged", columns: ["id", "note"], values: [id, note]))
            }
            #expect(failed == [5])
            let rows = try await pool.query("SELECT id, note FROM lg_merged ORDER BY id", lane: .retrieval)
                .map { try $0.decode((Int, String?).self) }
            #expect(rows.map(\.0) == Array(0..<10))
            #expect(rows.first { $0.0 == 5 }?.1 == "there first")
            #expect(rows.first { $0.0 == 7 }?.1 == nil)
            // A row with the wrong number of values is refused at once.
            await #expect(throws: LifeguardError.self) {
                try await coalescer.insert(.init(into: "lg_merged", columns: ["id", "note"], values: [1]))
            }
        }
    }
}

@Suite("WriteCoalescer plan")
struct WriteCoalescerPlanTests {
    @Test("rows for the same table and columns merge at their first row's place; other statements stay as they are")
    func merging() {
        let writes: [WriteCoalescer.Write] = [
            .insert(.init(into: "a", columns: ["x", "y"], values: [1, "one"])),
            .statement("UPDATE b SET x = 1"),
            .insert(.init(into: "a", columns: ["x", "y"], values: [2, nil])),
            .insert(.init(into: "a", columns: ["x", "y"], values: [3, "three"], onConflict: "(x) DO NOTHING")),
        ]
        let merged = WriteCoalescer.plan(writes, merging: true).statements
        #expect(merged.map(\.members) == [[0, 2], [1], [3]])
        #expect(merged[0].query.sql == "INSERT INTO a (x, y) VALUES ($1, $2), ($3, $4)")
        #expect(merged[0].query.binds.count == 4)
        #expect(merged[2].query.sql == "INSERT INTO a (x, y) VALUES ($1, $2) ON CONFLICT (x) DO NOTHING")
        let oneByOne = WriteCoalescer.plan(writes, merging: false).statements
        #expect(oneByOne.map(\.members) == [[0], [1], [2], [3]])
        #expect(oneByOne[2].query.sql == "INSERT INTO a (x, y) VALUES ($1, $2)")
    }

    /// A value that fails to encode, as a JSON value can.
    struct Unencodable: PostgresThrowingDynamicTypeEncodable, Sendable {
        struct Refused: Error {}
        var psqlType: PostgresDataType { .jsonb }
        var psqlFormat: PostgresFormat { .binary }
        func encode<JSONEncoder: PostgresJSONEncoder>(into byteBuffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) throws {
            throw Refused()
        }
    }

    @Test("a row whose value fails to encode is set apart; the other rows still merge")
    func unencodable() {
        let writes: [WriteCoalescer.Write] = [
            .insert(.init(into: "a", columns: ["x", "y"], values: [1, "one"])),
            .insert(.init(into: "a", columns: ["x", "y"], values: [2, Unencodable()])),
            .insert(.init(into: "a", columns: ["x", "y"], values: [3, "three"])),
        ]
        let (statements, unencodable) = WriteCoalescer.plan(writes, merging: true)
        #expect(unencodable.map(\.0) == [1])
        #expect(unencodable.first?.1 is Unencodable.Refused)
        #expect(statements.map(\.members) == [[0, 2]])
        #expect(statements[0].query.sql == "INSERT INTO a (x, y) VALUES ($1, $2), ($3, $4)")
        #expect(statements[0].query.binds.count == 4)
    }

    @Test("a merged INSERT stops at 65,535 bind parameters")
    func parameterLimit() {
        let columns = (0..<1_000).map { "c\($0)" }
        let row = WriteCoalescer.Insert(into: "wide", columns: columns, values: Array(repeating: 1, count: 1_000))
        let statements = WriteCoalescer.plan(Array(repeating: .insert(row), count: 100), merging: true).statements
        #expect(statements.map(\.members.count) == [65, 35])
        #expect(statements.allSatisfy { $0.query.binds.count <= 65_535 })
    }
}

extension PostgresPoolTests {
    @Test("coalescer: one deferred foreign-key violation among 30 concurrent writes fails only its caller; the other 29 commit")
    func coalescerDeferredViolation() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-coalesce-deferred", budget: 3)
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_coalesce_child", lane: .write)
            try await pool.query("CREATE TABLE IF NOT EXISTS lg_coalesce_parent (id int PRIMARY KEY)", lane: .write)
            try await pool.query("INSERT INTO lg_coalesce_parent VALUES (1) ON CONFLICT DO NOTHING", lane: .write)
            try await pool.query("""
                CREATE TABLE lg_coalesce_child (id int, parent int REFERENCES lg_coalesce_parent (id) DEFERRABLE INITIALLY DEFERRED)
                """, lane: .write)
            let coalescer = try WriteCoalescer(pool: pool, configuration: .init(maxDelay: .milliseconds(200), maxConnections: 1))
            let flushing = Task { await coalescer.run() }
            let failures = await withTaskGroup(of: (Int, String?)?.self) { writers in
                for id in 0..<30 {
                    writers.addTask {
                        do {
                            try await coalescer.write("INSERT INTO lg_coalesce_child VALUES (\(id), \(id == 17 ? 999 : 1))")
                            return nil
                        } catch {
                            return (id, Self.sqlState(of: error))
                        }
                    }
                }
                var failures: [(Int, String?)] = []
                for await failure in writers { if let failure { failures.append(failure) } }
                return failures
            }
            coalescer.shutdown()
            await flushing.value
            #expect(failures.map(\.0) == [17])
            #expect(failures.first?.1 == "23503")
            let committed = try await pool.query("SELECT count(*)::int FROM lg_coalesce_child", lane: .retrieval)[0].decode(Int.self)
            #expect(committed == 29)
        }
    }

    @Test("coalescer: under backend kills, no write is reported failed that committed, and none reported done that did not")
    func coalescerUnderKills() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-coalesce-kills", budget: 4)
        try await TestDatabase.withObserver { observer in try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_coalesce_kills", lane: .write)
            try await pool.query("CREATE TABLE lg_coalesce_kills (id int PRIMARY KEY)", lane: .write)
            let coalescer = try WriteCoalescer(pool: pool, configuration: .init(maxConnections: 2))
            let flushing = Task { await coalescer.run() }
            let stop = Shared(false)
            let killer = Task {
                while !stop.value {
                    _ = try? await observer.query("""
                        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                        WHERE application_name = 'lg-coalesce-kills' AND state IN ('active', 'idle in transaction')
                        """, logger: TestDatabase.logger).collect()
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
            let outcomes = await withTaskGroup(of: [(Int, String)].self) { writers in
                for writer in 0..<30 {
                    writers.addTask {
                        var outcomes: [(Int, String)] = []
                        for n in 0..<40 {
                            let id = writer * 1_000 + n
                            do {
                                try await coalescer.write("INSERT INTO lg_coalesce_kills VALUES (\(id))")
                                outcomes.append((id, "done"))
                            } catch let error as PostgresPoolError where error.code == .commitOutcomeUnknown {
                                outcomes.append((id, "unknown"))
                            } catch {
                                outcomes.append((id, "failed: \(PostgresPoolError.describe(error))"))
                            }
                        }
                        return outcomes
                    }
                }
                var all: [(Int, String)] = []
                for await outcomes in writers { all += outcomes }
                return all
            }
            stop.value = true
            await killer.value
            coalescer.shutdown()
            await flushing.value
            var committed = Set<Int>()
            try await TestDatabase.untilServes(pool)
            for row in try await pool.query("SELECT id FROM lg_coalesce_kills", lane: .retrieval) { committed.insert(try row.decode(Int.self)) }
            let doneMissing = outcomes.filter { $0.1 == "done" && !committed.contains($0.0) }
            let failedCommitted = outcomes.filter { $0.1.hasPrefix("failed") && committed.contains($0.0) }
            let counts = Dictionary(grouping: outcomes, by: { $0.1.hasPrefix("failed") ? "failed" : $0.1 }).mapValues(\.count)
            print("coalescer under kills: \(counts), \(committed.count) committed")
            #expect(doneMissing.isEmpty, "reported done, not committed: \(doneMissing.prefix(5))")
            #expect(failedCommitted.isEmpty, "reported failed, yet committed: \(failedCommitted.prefix(5))")
        } }
    }

    @Test("coalescer: cancelling run() with idle flushers returns, and a write still queued fails with shutdown")
    func coalescerCancelledRun() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-coalesce-cancel", budget: 2)
        try await TestDatabase.withPool(configuration) { pool in
            let coalescer = try WriteCoalescer(pool: pool)
            let flushing = Task { await coalescer.run() }
            try await Task.sleep(for: .milliseconds(100))   // both flushers idle
            flushing.cancel()
            let returned = Shared(false)
            Task { await flushing.value; returned.value = true }
            for _ in 0..<1_000 where !returned.value {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(returned.value, "run() did not return within 10 s of its cancellation")
            await #expect(throws: LifeguardError.self) { try await coalescer.write("SELECT 1") }
        }
    }
}

extension PostgresPoolTests {
    @Test("coalescer: a transaction-control statement is refused at once; it would undo its batch-mates' acknowledged writes",
          arguments: ["ROLLBACK", "commit", " begin", "END", "ABORT", "SAVEPOINT s", "RELEASE s", "START TRANSACTION", "PREPARE TRANSACTION 'x'"])
    func coalescerRefusesTransactionControl(statement: String) async throws {
        let configuration = try TestDatabase.configuration(application: "lg-coalesce-control", budget: 2)
        try await TestDatabase.withPool(configuration) { pool in
            let coalescer = try WriteCoalescer(pool: pool)
            let flushing = Task { await coalescer.run() }
            do {
                try await coalescer.write(PostgresQuery(unsafeSQL: statement))
                Issue.record("\(statement) was accepted")
            } catch let error as LifeguardError {
                #expect(error.code == .invalidConfiguration)
            }
            coalescer.shutdown()
            await flushing.value
        }
    }
}
