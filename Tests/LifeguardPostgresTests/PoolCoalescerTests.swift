import Lifeguard
@testable import LifeguardPostgres
import Logging
import PostgresNIO
import ServiceLifecycle
import Testing

extension PostgresPoolTests {
    @Test("a pool's writeCoalescer() is run by the pool: its writes commit with no run() of its own, and a second run() returns at once")
    func poolRunsItsCoalescer() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer", budget: 3)
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
            await coalescer.run()   // the pool runs it already: returns at once
            #expect(try await pool.query("SELECT count(*)::int FROM lg_pool_coalesced", lane: .retrieval)[0].decode(Int.self) == 20)
        }
    }

    @Test("graceful shutdown in a ServiceGroup: the pool's coalescer commits every queued write before the pool stops granting leases; later writes fail with shutdown")
    func gracefulShutdownFlushesCoalescerFirst() async throws {
        let configuration = try TestDatabase.configuration(application: "lg-pool-coalescer-stop", budget: 3)
        try await TestDatabase.withPool(configuration) { setup in
            try await setup.query("DROP TABLE IF EXISTS lg_pool_coalesced_stop", lane: .write)
            try await setup.query("CREATE TABLE lg_pool_coalesced_stop (n int)", lane: .write)
        }
        let pool = try PostgresPool(configuration: configuration, logger: TestDatabase.logger)
        // A batch waits up to 1 s to fill: the writes are still queued when the shutdown comes.
        let coalescer = try pool.writeCoalescer(configuration: .init(maxDelay: .seconds(1), maxConnections: 1))
        let group = ServiceGroup(services: [pool], logger: TestDatabase.logger)
        let running = Task { try await group.run() }
        let writers = (0..<30).map { n in
            Task { try await coalescer.insert(.init(into: "lg_pool_coalesced_stop", columns: ["n"], values: [n])) }
        }
        // Every write queued (none flushed yet: the batch waits for its delay).
        for _ in 0..<400 where coalescer.state.withLock({ $0.queue.count }) < 30 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(coalescer.state.withLock { $0.queue.count } == 30)
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
