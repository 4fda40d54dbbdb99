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

    /// 200 agents writing 25 rows each through `write`.
    func agentStorm(table: String, _ write: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { agents in
            for agent in 0..<200 {
                agents.addTask {
                    for step in 0..<25 {
                        try await write("INSERT INTO \(unescaped: table) (agent, step) VALUES (\(agent), \(step))")
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
            try await self.agentStorm(table: "lg_single") { statement in try await pool.query(statement, lane: .write) }
            perWrite = self.writeConnectionSeconds(pool) - before
            #expect(try await pool.query("SELECT count(*) FROM lg_single", lane: .retrieval)[0].decode(Int.self) == 5_000)
        }
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_coalesced", lane: .write)
            try await pool.query("CREATE TABLE lg_coalesced (agent int, step int)", lane: .write)
            let coalescer = try WriteCoalescer(pool: pool)
            let flushing = Task { await coalescer.run() }
            let before = self.writeConnectionSeconds(pool)
            try await self.agentStorm(table: "lg_coalesced") { statement in try await coalescer.write(statement) }
            let coalesced = self.writeConnectionSeconds(pool) - before
            coalescer.shutdown()
            await flushing.value
            #expect(try await pool.query("SELECT count(*) FROM lg_coalesced", lane: .retrieval)[0].decode(Int.self) == 5_000)
            let share = coalesced / perWrite
            print("coalescer: \(coalesced) connection-seconds vs \(perWrite) with one lease per write (\(Int((share * 1000).rounded()) / 10)%)")
            // The target is 5%; measured here 10–11% (debug build, test server without fsync) and
            // 9–13% in release (BENCHMARKS.md): every statement is still a round trip, which
            // PostgresNIO does not pipeline. This bound catches a coalescer that stops batching.
            #expect(share < 0.25)
        }
    }

    @Test("coalescer: a poisoned statement fails only its own caller; the rest of its batch commits")
    func coalescerPoison() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-poison", budget: 4)
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_poison", lane: .write)
            try await pool.query("CREATE TABLE lg_poison (id int PRIMARY KEY)", lane: .write)
            // One connection and a long delay: the ten writes form one batch.
            let coalescer = try WriteCoalescer(
                pool: pool, configuration: .init(maxBatch: 64, maxDelay: .milliseconds(200), maxConnections: 1))
            let flushing = Task { await coalescer.run() }
            let results = await withTaskGroup(of: (Int, Bool).self) { writers in
                for id in 0..<10 {
                    writers.addTask {
                        // Writer 5 divides by zero: its statement fails on the server.
                        let statement: PostgresQuery = id == 5
                            ? "INSERT INTO lg_poison VALUES (1 / 0)" : "INSERT INTO lg_poison VALUES (\(id))"
                        do {
                            try await coalescer.write(statement)
                            return (id, true)
                        } catch {
                            return (id, false)
                        }
                    }
                }
                return await writers.reduce(into: [Int: Bool]()) { $0[$1.0] = $1.1 }
            }
            coalescer.shutdown()
            await flushing.value
            #expect(results.filter { !$0.value }.map(\.key) == [5])
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
                observed = coalescer.state.withLock { ($0.queue.count, $0.waitingForRoom.count) }
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
}
