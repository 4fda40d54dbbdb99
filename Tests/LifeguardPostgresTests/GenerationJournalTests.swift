import Foundation
import Lifeguard
@testable import LifeguardPostgres
import Synchronization
import Testing

/// Journal tests run in the real-server suite, one at a time (it stops the server once).
extension PostgresPoolTests {
    func withJournal(_ name: String, _ body: (PostgresPool, GenerationJournal) async throws -> Void) async throws {
        let configuration = try TestDatabase.configuration(application: "lg-\(name)", budget: 6)
        try await TestDatabase.withPool(configuration) { pool in
            let journal = try GenerationJournal(pool: pool, table: "lg_journal_\(name)")
            try await pool.query("DROP TABLE IF EXISTS lg_journal_\(unescaped: name)", lane: .write)
            try await journal.migrate()
            try await journal.migrate()  // idempotent
            try await body(pool, journal)
        }
    }

    @Test("journal: pending in one short transaction, generation with no connection held, done in another")
    func journalHappyPath() async throws {
        try await self.withJournal("happy") { pool, journal in
            let entry = try await journal.run(key: "q-1", request: "{\"question\":\"why\"}") { request in
                #expect(pool.status().leased == 0, "no connection is held during the generation")
                let pending = try await Task { try await journal.entry(key: "q-1") }.value
                #expect(pending?.status == .pending)
                return "because (\(request.count) bytes asked)"
            }
            #expect(entry.status == .done)
            #expect(entry.result == "because (18 bytes asked)")
            let stored = try await journal.entry(key: "q-1")
            #expect(stored == entry)
            #expect(try await journal.orphans(olderThan: .zero).isEmpty)
            #expect(pool.statistics().findings.filter { $0.kind == .leaseDuringGeneration }.count == 1,
                    "the check above leased inside the generation step, and was reported")
        }
    }

    @Test("journal: a generated result whose write meets a saturated write lane after the caller's deadline has passed is still persisted, once the lane frees: not thrown away with its row left pending")
    func journalPersistsThroughSaturation() async throws {
        var configuration = try TestDatabase.configuration(application: "lg-journal-busy", budget: 4)
        configuration.lanes[.write] = .init(limit: 1, waitTimeout: .milliseconds(100))
        try await TestDatabase.withPool(configuration) { pool in
            let journal = try GenerationJournal(pool: pool, table: "lg_journal_busy")
            try await pool.query("DROP TABLE IF EXISTS lg_journal_busy", lane: .write)
            try await journal.migrate()
            let holder = Mutex<Task<Void, any Error>?>(nil)
            let entry = try await RequestDeadline.withDeadline(in: .milliseconds(150)) {
                try await journal.run(key: "busy-1", request: "q") { _ in
                    // The write lane's one connection taken by someone else until 300 ms after this
                    // returns: the result's write waits past its 100 ms waitTimeout and past the
                    // deadline. (Held until let go, not for a fixed time: on a loaded machine a
                    // timed hold could end before this task saw it held, and it would wait for ever.)
                    let (release, letGo) = AsyncStream<Void>.makeStream()
                    let task = Task.detached {
                        try await pool.withConnection(lane: .write) { lease in
                            try await lease.execute("SELECT 1")
                            for await _ in release { break }
                        }
                    }
                    holder.withLock { $0 = task }
                    await pool.status(where: { $0.lanes[.write]?.leased == 1 })
                    Task.detached {
                        try? await Task.sleep(for: .milliseconds(300))
                        letGo.finish()
                    }
                    return "answer"
                }
            }
            #expect(entry.status == .done)
            #expect(try await journal.entry(key: "busy-1")?.result == "answer", "the server holds the result")
            try await holder.withLock { $0 }?.value
        }
    }

    @Test("journal: a task killed between the windows leaves a pending row that orphans finds; recover and fail resolve it")
    func journalOrphans() async throws {
        try await self.withJournal("orphans") { _, journal in
            // The first window ran, then the process died: nothing else happens to the record.
            _ = try await journal.begin(key: "lost-1", request: "a")
            _ = try await journal.begin(key: "lost-2", request: "b")
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await journal.orphans(olderThan: .seconds(3600)).isEmpty)
            let orphans = try await journal.orphans(olderThan: .milliseconds(10))
            #expect(orphans.map(\.key) == ["lost-1", "lost-2"])
            #expect(try await journal.recover(key: "lost-1", result: "regenerated").status == .done)
            let failed = try await journal.fail(key: "lost-2", reason: "gave up")
            #expect(failed.status == .failed && failed.failure == "gave up")
            #expect(try await journal.orphans(olderThan: .zero).isEmpty)
            // A result is never written twice: completing again returns the first one.
            #expect(try await journal.complete(key: "lost-1", result: "other").result == "regenerated")
            #expect(try await journal.complete(key: "lost-2", result: "late").status == .failed)
        }
    }

    @Test("journal: 20 concurrent duplicates of one key generate once and all see the first record")
    func journalIdempotency() async throws {
        try await self.withJournal("idempotent") { _, journal in
            let generations = Counter()
            let entries = try await withThrowingTaskGroup(of: GenerationJournal.Entry.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        try await journal.run(key: "same", request: "r") { _ in
                            generations.value.add(1, ordering: .relaxed)
                            try await Task.sleep(for: .milliseconds(50))
                            return "the answer"
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(generations.value.load(ordering: .relaxed) == 1)
            // The one that generated, and any duplicate that came after it committed, see `done`;
            // duplicates that came while it generated see `pending`. All see the first record.
            #expect(entries.contains { $0.status == .done })
            #expect(entries.allSatisfy { $0.key == "same" && ($0.status == .pending || $0.result == "the answer") })
            #expect(try await journal.entry(key: "same")?.result == "the answer")
            // Asked again later, the key returns its record without generating.
            let again = try await journal.run(key: "same", request: "r") { _ in
                Issue.record("generated twice")
                return "another"
            }
            #expect(again.result == "the answer")
        }
    }

    @Test("journal: a task cancelled during the generation leaves its record cancelled; a failed generation leaves it failed")
    func journalCancellation() async throws {
        try await self.withJournal("cancel") { _, journal in
            let started = Counter()
            let task = Task {
                try await journal.run(key: "slow", request: "r") { _ in
                    started.value.store(1, ordering: .relaxed)
                    try await Task.sleep(for: .seconds(30))
                    return "never"
                }
            }
            for _ in 0..<500 where started.value.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(2)) }
            task.cancel()
            await #expect(throws: CancellationError.self) { try await task.value }
            #expect(try await journal.entry(key: "slow")?.status == .cancelled)

            struct ModelDown: Error {}
            await #expect(throws: ModelDown.self) {
                try await journal.run(key: "broken", request: "r") { _ in throw ModelDown() }
            }
            let failed = try await journal.entry(key: "broken")
            #expect(failed?.status == .failed)
            #expect(failed?.failure?.contains("ModelDown") == true)
        }
    }

    @Test("journal: a table name that is not a plain identifier is refused")
    func journalTableName() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-journal-name", budget: 2)
        try await TestDatabase.withPool(configuration) { pool in
            #expect(throws: LifeguardError.self) { try GenerationJournal(pool: pool, table: "x; DROP TABLE y") }
            #expect(throws: Never.self) { try GenerationJournal(pool: pool, table: "app.journal") }
        }
    }
}

/// A counter that concurrent tasks share.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
