import Lifeguard
@testable import LifeguardPostgres
import Logging
import PostgresNIO
import ServiceLifecycle
import Testing

extension PostgresPoolTests {
    @Test("a pool's writeCoalescer() is run by the pool: its writes commit with no run() of its own, and a second run() ends with the pool's")
    func poolRunsItsCoalescer() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer", budget: 3)
        let second = Shared<Task<Void, Never>?>(nil)
        try await TestDatabase.withPool(configuration) { pool in
            try await pool.query("DROP TABLE IF EXISTS lg_pool_coalesced", lane: .write)
            try await pool.query("CREATE TABLE lg_pool_coalesced (n int)", lane: .write)
            let coalescer = try pool.writeCoalescer()
            try await withThrowingTaskGroup(of: Void.self) { writers in
                for n in 0..<20 {
                    writers.addTask { try await coalescer.insert(.init(into: "lg_pool_coalesced", columns: ["n"], values: [n])) }
                }
                try await writers.waitForAll()
            }
            // The pool runs it already: a second run() only waits for that one to stop.
            second.modify { $0 = Task { await coalescer.run() } }
            #expect(try await pool.query("SELECT count(*)::int FROM lg_pool_coalesced", lane: .retrieval)[0].decode(Int.self) == 20)
        }
        let task = second.value
        #expect(await finishes(within: .seconds(30)) { await task?.value } != nil, "the second run() returned with the pool's")
    }

    @Test("graceful shutdown in a ServiceGroup: the pool's coalescer commits every queued write before the pool stops granting leases; later writes fail with shutdown")
    func gracefulShutdownFlushesCoalescerFirst() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer-stop", budget: 3)
        try await Self.createTable("lg_pool_coalesced_stop")
        let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        // A batch waits up to 1 s to fill: the writes are still queued when the shutdown comes.
        let coalescer = try pool.writeCoalescer(configuration: .init(maxDelay: .seconds(1), maxConnections: 1))
        let group = ServiceGroup(services: [pool], logger: TestDatabase.logger)
        let running = Task { try await group.run() }
        let writers = (0..<30).map { n in
            Task { try await coalescer.insert(.init(into: "lg_pool_coalesced_stop", columns: ["n"], values: [n])) }
        }
        // Every write queued (none flushed yet: the batch waits for its delay).
        try await Self.waitUntilQueued(30, in: coalescer)
        #expect(coalescer.counts.queued == 30)
        await group.triggerGracefulShutdown()
        var failures: [String] = []
        for writer in writers {
            if case .failure(let error) = await writer.result { failures.append("\(error)") }
        }
        #expect(failures.isEmpty, "queued before the shutdown, so committed: \(failures)")
        await #expect(throws: LifeguardError.self, "the coalescer takes no writes once shut down") {
            try await coalescer.insert(.init(into: "lg_pool_coalesced_stop", columns: ["n"], values: [99]))
        }
        try await running.value
        let rows = try await TestDatabase.withObserver { observer in
            try await observer.integer("SELECT count(*)::int FROM lg_pool_coalesced_stop")
        }
        #expect(rows == 30)
    }
}

extension PostgresPoolTests {
    /// Creates an empty table `name (n int)`, dropping any left by an earlier run.
    static func createTable(_ name: String) async throws {
        try await TestDatabase.withObserver { observer in
            _ = try await observer.query(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(name)"), logger: TestDatabase.logger)
            _ = try await observer.query(PostgresQuery(unsafeSQL: "CREATE TABLE \(name) (n int)"), logger: TestDatabase.logger)
        }
    }

    /// The rows of `table`, counted by a session of its own.
    static func rows(in table: String) async throws -> Int {
        try await TestDatabase.withObserver { try await $0.integer(PostgresQuery(unsafeSQL: "SELECT count(*)::int FROM \(table)")) }
    }

    /// Returns once `count` writes wait in the coalescer's queue (none flushed yet).
    static func waitUntilQueued(_ count: Int, in coalescer: WriteCoalescer) async throws {
        for _ in 0..<400 where coalescer.counts.queued < count { try await Task.sleep(for: .milliseconds(5)) }
    }
}

/// What `operation` returns, or `nil` if it has not finished within `limit` (it is cancelled):
/// a guard against a hang, far above any time the operation should take.
func finishes<Value: Sendable>(within limit: Duration, _ operation: @escaping @Sendable () async throws -> Value) async -> Value? {
    await withTaskGroup(of: Value?.self) { group in
        group.addTask { try? await operation() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

extension PostgresPoolTests {
    @Test("shutdown() before run(): the coalescer's queued writes still commit once run() starts, then the pool drains")
    func coalescerShutdownBeforeRun() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer-early", budget: 3)
        try await Self.createTable("lg_pool_coalesced_early")
        let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        let coalescer = try pool.writeCoalescer(configuration: .init(maxConnections: 1))
        let writers = (0..<10).map { n in
            Task { try await coalescer.insert(.init(into: "lg_pool_coalesced_early", columns: ["n"], values: [n])) }
        }
        try await Self.waitUntilQueued(10, in: coalescer)
        pool.shutdown()
        let ran = await finishes(within: .seconds(30)) { await pool.run() }
        #expect(ran != nil, "run() returned")
        for writer in writers { _ = try await writer.value }
        let rows = try await Self.rows(in: "lg_pool_coalesced_early")
        #expect(rows == 10)
    }

    @Test("a pool's coalescer made after its run() ended fails its writes with shutdown, at once")
    func coalescerAfterRunEnded() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer-late", budget: 2)
        let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        let run = Task { await pool.run() }
        _ = try await pool.query("SELECT 1", lane: .retrieval)
        run.cancel()
        await run.value
        let coalescer = try pool.writeCoalescer()
        let code = await finishes(within: .seconds(30)) { () -> String in
            do {
                try await coalescer.write("SELECT 1")
                return "succeeded"
            } catch {
                return (error as? LifeguardError).map { "\($0.code)" } ?? "\(error)"
            }
        }
        #expect(code == "\(LifeguardError.Code.shutdown)", "got \(String(describing: code))")
    }

    @Test("the grace period bounds a coalescer's flush: a write blocked by a lock fails, nothing of it commits, and run() returns")
    func gracePeriodBoundsTheFlush() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer-grace", budget: 3)
        try await Self.createTable("lg_pool_coalesced_grace")
        try await TestDatabase.withObserver { observer in
            _ = try await observer.query("BEGIN", logger: TestDatabase.logger)
            _ = try await observer.query("LOCK TABLE lg_pool_coalesced_grace IN ACCESS EXCLUSIVE MODE", logger: TestDatabase.logger)
            let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
            let coalescer = try pool.writeCoalescer(configuration: .init(maxConnections: 1))
            let run = Task { await pool.run() }
            let writer = Task { try await coalescer.insert(.init(into: "lg_pool_coalesced_grace", columns: ["n"], values: [1])) }
            // The batch is on the server, waiting for the lock.
            for _ in 0..<400 where pool.status().leased == 0 { try await Task.sleep(for: .milliseconds(5)) }
            let started = ContinuousClock.now
            pool.shutdown(gracePeriod: .milliseconds(300))
            let ended = await finishes(within: .seconds(30)) { await run.value }
            print("run() returned \(started.duration(to: .now)) after a shutdown with a 300 ms grace period")
            #expect(ended != nil, "run() returned while the lock was still held")
            #expect(await outcome { try await writer.value }.failure != nil)
            _ = try await observer.query("ROLLBACK", logger: TestDatabase.logger)
            #expect(try await observer.integer("SELECT count(*)::int FROM lg_pool_coalesced_grace") == 0)
        }
    }

    @Test("shutdown flushes a batch waiting out maxDelay at once, instead of after the delay")
    func shutdownCutsTheDelay() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer-delay", budget: 3)
        try await Self.createTable("lg_pool_coalesced_delay")
        let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        let coalescer = try pool.writeCoalescer(configuration: .init(maxDelay: .seconds(300), maxConnections: 1))
        let run = Task { await pool.run() }
        let writers = (0..<5).map { n in
            Task { try await coalescer.insert(.init(into: "lg_pool_coalesced_delay", columns: ["n"], values: [n])) }
        }
        try await Self.waitUntilQueued(5, in: coalescer)
        pool.shutdown()
        #expect(await finishes(within: .seconds(30)) { await run.value } != nil, "not after the 300 s delay")
        for writer in writers { _ = try await writer.value }
        let rows = try await Self.rows(in: "lg_pool_coalesced_delay")
        #expect(rows == 5)
    }
}

extension PostgresPoolTests {
    @Test("a second shutdown with a zero grace period ends a running statement at once, with or without a coalescer (the server's backends gone)",
          arguments: [false, true])
    func secondShutdownEndsTheGracePeriod(withCoalescer: Bool) async throws {
        let application = "lg-second-shutdown-\(withCoalescer)"
        let configuration = try TestDatabase.configuration(application: application, budget: 2)
        let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        if withCoalescer { _ = try pool.writeCoalescer() }
        let run = Task { await pool.run() }
        let statement = Task { try await pool.query("SELECT pg_sleep(20)", lane: .retrieval) }
        try await TestDatabase.withObserver { observer in
            func running() async throws -> Int {
                try await observer.integer(
                    "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = \(application) AND query = 'SELECT pg_sleep(20)' AND state = 'active'")
            }
            for _ in 0..<400 where try await running() == 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(try await running() == 1)
            pool.shutdown(gracePeriod: .seconds(30))
            try await Task.sleep(for: .milliseconds(100))
            let started = ContinuousClock.now
            pool.shutdown(gracePeriod: .zero)
            #expect(await finishes(within: .seconds(10)) { await run.value } != nil, "run() returned without waiting for the 30 s")
            print("run() returned \(started.duration(to: .now)) after shutdown(gracePeriod: .zero)")
            for _ in 0..<400 where try await running() > 0 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(try await running() == 0, "the statement no longer runs on the server")
        }
        #expect(await outcome { try await statement.value }.failure != nil)
    }
}

extension PostgresPoolTests {
    @Test("cancelling the pool's run fails the coalescer's queued writes with shutdown, as documented, never sent (counted on the server); not with CancellationError, which says the writer was cancelled")
    func cancelledRunFailsQueuedWritesWithShutdown() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer-cancel", budget: 2)
        try await Self.createTable("lg_pool_coalesced_cancel")
        let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        let coalescer = try pool.writeCoalescer(configuration: .init(maxDelay: .seconds(2), maxConnections: 1))
        let run = Task { await pool.run() }
        let writers = (0..<20).map { n in
            Task { try await coalescer.insert(.init(into: "lg_pool_coalesced_cancel", columns: ["n"], values: [n])) }
        }
        try await Self.waitUntilQueued(20, in: coalescer)
        run.cancel()
        #expect(await finishes(within: .seconds(10)) { await run.value } != nil)
        var codes: [String] = []
        for writer in writers {
            switch await writer.result {
            case .success: codes.append("committed")
            case .failure(let error as LifeguardError): codes.append("\(error.code)")
            case .failure(let error): codes.append("\(type(of: error))")
            }
        }
        #expect(codes == Array(repeating: "\(LifeguardError.Code.shutdown)", count: 20))
        #expect(try await Self.rows(in: "lg_pool_coalesced_cancel") == 0)
    }
}

extension PostgresPoolTests {
    @Test("shutdown flushes the writers waiting for room in a full queue too: they were submitted before it (rows counted on the server)")
    func shutdownFlushesWritersWaitingForRoom() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-coalescer-room-stop", budget: 3)
        try await Self.createTable("lg_coalescer_room_stop")
        try await TestDatabase.withPool(configuration) { pool in
            let coalescer = try pool.writeCoalescer(configuration: .init(maxBatch: 1, maxQueued: 1, maxConnections: 1))
            // The one flusher is busy for 300 ms; one row is queued, two wait for room.
            let busy = Task { try await coalescer.write("SELECT pg_sleep(0.3)") }
            for _ in 0..<400 {
                if coalescer.counts.queued == 0, await Self.isSleeping("lg-coalescer-room-stop") { break }
                try await Task.sleep(for: .milliseconds(5))
            }
            let writers = (0..<3).map { n in
                Task { try await coalescer.insert(.init(into: "lg_coalescer_room_stop", columns: ["n"], values: [n])) }
            }
            for _ in 0..<400 where coalescer.counts.waitingForRoom < 2 { try await Task.sleep(for: .milliseconds(5)) }
            #expect(coalescer.counts == (queued: 1, waitingForRoom: 2))
            coalescer.shutdown()
            try await busy.value
            var failures: [String] = []
            for writer in writers {
                if case .failure(let error) = await writer.result { failures.append("\(error)") }
            }
            #expect(failures.isEmpty, "submitted before the shutdown, so flushed: \(failures)")
        }
        #expect(try await Self.rows(in: "lg_coalescer_room_stop") == 3)
    }

    /// Whether a backend of `application` is in `pg_sleep` (seen by a session of its own).
    static func isSleeping(_ application: String) async -> Bool {
        let sleeping = try? await TestDatabase.withObserver { observer in
            try await observer.integer(PostgresQuery(unsafeSQL:
                "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = '\(application)' AND query LIKE 'SELECT pg_sleep%' AND state = 'active'"))
        }
        return (sleeping ?? 0) > 0
    }
}

extension PostgresPoolTests {
    @Test("a write PostgreSQL's protocol cannot carry (over 65,535 bind parameters) is refused at once, never queued; its would-be batch-mates commit (rows counted)")
    func oversizedWriteIsRefusedAlone() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-coalescer-oversized", budget: 3)
        try await Self.createTable("lg_coalescer_oversized")
        try await TestDatabase.withPool(configuration) { pool in
            let coalescer = try pool.writeCoalescer(configuration: .init(maxBatch: 4, maxDelay: .milliseconds(200), maxConnections: 1))
            var binds = PostgresBindings()
            for n in 0..<70_000 { binds.append(n) }
            let oversized = PostgresQuery(unsafeSQL: "SELECT 1", binds: binds)
            let good = (0..<3).map { n in
                Task { try await coalescer.insert(.init(into: "lg_coalescer_oversized", columns: ["n"], values: [n])) }
            }
            await #expect(throws: LifeguardError.self, "refused before it is queued") { try await coalescer.write(oversized) }
            await #expect(throws: LifeguardError.self, "an insert of as many columns too") {
                try await coalescer.insert(.init(
                    into: "lg_coalescer_oversized", columns: Array(repeating: "n", count: 65_536),
                    values: Array(repeating: 1, count: 65_536)))
            }
            for write in good { try await write.value }
        }
        #expect(try await Self.rows(in: "lg_coalescer_oversized") == 3)
    }

    @Test("coalescer settings out of range are refused at construction, all at once: flushers past any budget, an unknown lane, a delay past a year; no more flushers run than the lane can lease")
    func coalescerSettingsOutOfRange() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-coalescer-settings", budget: 3)
        let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        do {
            _ = try WriteCoalescer(pool: pool, configuration: .init(maxDelay: .seconds(Int64.max), maxConnections: .max, lane: Lane("nope")))
            Issue.record("expected invalidConfiguration")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.problems.count == 3, "\(error.problems)")
        }
        let capped = try WriteCoalescer(pool: pool, configuration: .init(maxConnections: 50_000))
        #expect(capped.queue.flushers == 3, "the budget's 3 connections")
    }
}
