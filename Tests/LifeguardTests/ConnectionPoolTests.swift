import Logging
import ServiceLifecycle
import Synchronization
import Testing
@testable import Lifeguard
import LifeguardTestUtils

/// Runs a pool over an in-memory factory for the duration of `body`, then shuts it down and
/// waits for `run()` to return.
func withRunningPool<Value>(
    _ configuration: PoolConfiguration,
    factory: InMemoryConnectionFactory = InMemoryConnectionFactory(),
    _ body: (ConnectionPool<InMemoryConnectionFactory>, InMemoryConnectionFactory) async throws -> Value
) async throws -> Value {
    let pool = try ConnectionPool(configuration: configuration, factory: factory, logger: Logger(label: "test"))
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await pool.run() }
        do {
            let value = try await body(pool, factory)
            pool.shutdown(gracePeriod: .seconds(1))
            try await group.waitForAll()
            return value
        } catch {
            pool.shutdown(gracePeriod: .zero)
            throw error
        }
    }
}

struct Boom: Error {}

extension LaneConfiguration {
    /// For tests through the shell where waiting is not the subject: a 10 s wait timeout, so that
    /// a busy machine (the tests run in parallel on the cooperative pool) cannot fail them.
    static var patient: LaneConfiguration { .init(waitTimeout: .seconds(10)) }
}

@Suite("Connection pool shell (in-memory connections)")
struct ConnectionPoolTests {
    @Test("a lease runs its body and returns the connection clean, without a reset")
    func cleanLease() async throws {
        try await withRunningPool(.testing(budget: 2, lanes: [.write: .patient])) { pool, factory in
            let first = try await pool.withConnection(lane: .write) { connection in connection.id }
            let second = try await pool.withConnection(lane: .write) { connection in connection.id }
            #expect(first == second, "the idle connection is reused")
            #expect(factory.resetCount == 0)
            #expect(pool.status().leased == 0)
        }
    }

    @Test("a body that throws inside a transaction gets its connection reset before reuse")
    func throwingBodyResets() async throws {
        try await withRunningPool(.testing(budget: 1, lanes: [.write: .patient])) { pool, factory in
            await #expect(throws: Boom.self) {
                try await pool.withConnection(lane: .write) { connection in
                    connection.setInTransaction(true)
                    throw Boom()
                }
            }
            let inTransaction = try await pool.withConnection(lane: .write) { $0.isInTransaction }
            #expect(!inTransaction)
            #expect(factory.resetCount == 1)
        }
    }

    @Test("a connection whose reset fails is closed and replaced, never reused")
    func failedResetReplaces() async throws {
        try await withRunningPool(.testing(budget: 1, lanes: [.write: .patient])) { pool, factory in
            factory.update { $0.resetFails = true }
            _ = try? await pool.withConnection(lane: .write) { _ in throw Boom() }
            let next = try await pool.withConnection(lane: .write) { $0 }
            #expect(next.id == 1)
            #expect(factory.opened[0].isClosed)
        }
    }

    @Test("a waiter fails with waitTimeout when the lane stays full")
    func waitTimeoutThroughShell() async throws {
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init(waitTimeout: .milliseconds(50))])
        configuration.minimumIdle = 1
        try await withRunningPool(configuration) { pool, _ in
            for _ in 0..<1_000 where pool.status().idle == 0 { try await Task.sleep(for: .milliseconds(2)) }
            try await pool.withConnection(lane: .write) { _ in
                do {
                    try await pool.withConnection(lane: .write) { _ in }
                    Issue.record("expected a timeout")
                } catch let error as LifeguardError {
                    #expect(error.code == .waitTimeout)
                    #expect(error.lane == .write)
                    #expect(error.waited! >= .milliseconds(50))
                }
            }
        }
    }

    @Test("an unknown lane is rejected with the configured lanes listed")
    func unknownLane() async throws {
        try await withRunningPool(.testing(budget: 1, lanes: [.write: .patient])) { pool, _ in
            do {
                try await pool.withConnection(lane: .retrieval) { _ in }
            } catch let error as LifeguardError {
                #expect(error.code == .unknownLane)
                #expect(String(describing: error).contains("write"))
            }
        }
    }

    @Test("a broken idle connection is never handed out: the lease gets a fresh one")
    func brokenIdleConnection() async throws {
        try await withRunningPool(.testing(budget: 2, lanes: [.write: .patient])) { pool, _ in
            let first = try await pool.withConnection(lane: .write) { $0 }
            first.breakConnection()
            let second = try await pool.withConnection(lane: .write) { $0 }
            #expect(second !== first)
            #expect(first.isClosed)
        }
    }

    @Test("while the database refuses connections, requests fail fast with its error, then recover")
    func databaseUnavailable() async throws {
        var configuration = PoolConfiguration.testing(budget: 2, lanes: [.write: .init(waitTimeout: .seconds(5))])
        configuration.reconnectInitialDelay = .milliseconds(20)
        configuration.reconnectMaximumDelay = .milliseconds(40)
        try await withRunningPool(configuration) { pool, factory in
            factory.update { $0.connectFailure = .init("connection refused (test)") }
            let started = ContinuousClock.now
            do {
                try await pool.withConnection(lane: .write) { _ in }
                Issue.record("expected databaseUnavailable")
            } catch let error as LifeguardError {
                #expect(error.code == .databaseUnavailable)
                #expect(String(describing: error).contains("connection refused (test)"))
            }
            // Failing fast: nowhere near the 5 s wait timeout.
            #expect(started.duration(to: .now) < .seconds(5))
            factory.update { $0.connectFailure = nil }
            var recovered = false
            for _ in 0..<100 where !recovered {
                recovered = (try? await pool.withConnection(lane: .write) { _ in true }) ?? false
                if !recovered { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(recovered)
        }
    }

    @Test("cancellation storm: queued, leased and racing cancellations leave nothing leased and nothing leaked")
    func cancellationStorm() async throws {
        // Long waits on purpose, shedding off: every request that is not cancelled must complete.
        let configuration = PoolConfiguration.testing(budget: 4, lanes: [
            .write: .init(reserved: 1, waitTimeout: .seconds(10), maxWaiters: 10_000, shedding: nil),
            .retrieval: .init(waitTimeout: .seconds(10), maxWaiters: 10_000, shedding: nil),
        ])
        try await withRunningPool(configuration) { pool, factory in
            let completed = await withTaskGroup(of: Bool.self) { group in
                for index in 0..<2_000 {
                    let task = Task {
                        try await pool.withConnection(lane: index % 2 == 0 ? .write : .retrieval) { connection in
                            connection.setInTransaction(true)
                            connection.use()
                            try await Task.sleep(for: .microseconds(200))
                            connection.setInTransaction(false)
                        }
                    }
                    if index % 10 < 3 {
                        group.addTask {
                            try? await Task.sleep(for: .microseconds(Int.random(in: 0...400)))
                            task.cancel()
                            return false
                        }
                    }
                    group.addTask { (try? await task.value) != nil }
                }
                return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            let status = pool.status()
            #expect(status.leased == 0)
            #expect(status.waiters == 0)
            #expect(status.connections <= 4)
            // Let pending resets finish, then every open connection is clean and idle.
            for _ in 0..<100 where pool.status().idle != pool.status().connections {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(pool.status().idle == pool.status().connections)
            #expect(factory.opened.filter { !$0.isClosed }.allSatisfy { !$0.isInTransaction })
            #expect(completed >= 1_000)
        }
        // After shutdown every connection is closed.
    }

    @Test("a cancelled task gets CancellationError at once, idle connection or full pool, and leaves nothing queued")
    func cancelledBeforeLease() async throws {
        let configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .patient])
        try await withRunningPool(configuration) { pool, _ in
            for holdsTheOnlyConnection in [false, true] {
                let (held, holding) = AsyncStream<Void>.makeStream()
                let (release, releasing) = AsyncStream<Void>.makeStream()
                let holder = Task {
                    guard holdsTheOnlyConnection else { return }
                    try await pool.withConnection(lane: .write) { _ in
                        holding.finish()
                        for await _ in release {}
                    }
                }
                if holdsTheOnlyConnection { for await _ in held {} }
                let cancelled = Task {
                    withUnsafeCurrentTask { $0?.cancel() }
                    var ran = false
                    await #expect(throws: CancellationError.self) {
                        try await pool.withConnection(lane: .write) { _ in ran = true }
                    }
                    #expect(!ran)
                }
                await cancelled.value
                #expect(pool.status().waiters == 0)
                releasing.finish()
                try await holder.value
            }
            #expect(pool.status().leased == 0)
        }
    }

    @Test("graceful shutdown lets a running lease finish, then closes everything and run() returns")
    func gracefulShutdown() async throws {
        let factory = InMemoryConnectionFactory()
        let pool = try ConnectionPool(
            configuration: .testing(budget: 2, lanes: [.write: .patient]), factory: factory, logger: Logger(label: "test"))
        let runner = Task { await pool.run() }
        let lease = Task {
            try await pool.withConnection(lane: .write) { _ in
                try await Task.sleep(for: .milliseconds(200))
                return "finished"
            }
        }
        for _ in 0..<500 where pool.status().leased == 0 { try await Task.sleep(for: .milliseconds(2)) }
        pool.shutdown(gracePeriod: .seconds(5))
        await #expect(throws: LifeguardError.self) { try await pool.withConnection(lane: .write) { _ in } }
        #expect(try await lease.value == "finished")
        await runner.value
        #expect(factory.openCount == 0)
        #expect(pool.status().isShuttingDown)
    }

    @Test("in a ServiceGroup, graceful shutdown lets the running lease finish, then closes everything")
    func serviceGroupGracefulShutdown() async throws {
        let factory = InMemoryConnectionFactory()
        let pool = try ConnectionPool(
            configuration: .testing(budget: 2, lanes: [.write: .patient]), factory: factory, logger: Logger(label: "test"))
        let group = ServiceGroup(services: [pool], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        let lease = Task {
            try await pool.withConnection(lane: .write) { _ in
                try await Task.sleep(for: .milliseconds(200))
                return "finished"
            }
        }
        for _ in 0..<500 where pool.status().leased == 0 { try await Task.sleep(for: .milliseconds(2)) }
        await group.triggerGracefulShutdown()
        #expect(try await lease.value == "finished")
        try await running.value
        #expect(factory.openCount == 0)
    }

    @Test("cancelling run() closes every connection at once")
    func cancelRun() async throws {
        let factory = InMemoryConnectionFactory()
        var configuration = PoolConfiguration.testing(budget: 3, lanes: [.write: .patient])
        configuration.minimumIdle = 3
        let pool = try ConnectionPool(configuration: configuration, factory: factory, logger: Logger(label: "test"))
        let runner = Task { await pool.run() }
        for _ in 0..<200 where pool.status().idle < 3 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(factory.openCount == 3)
        runner.cancel()
        await runner.value
        #expect(factory.openCount == 0)
    }
}

extension ConnectionPoolTests {
    @Test("a lease asked for before run() waits its lane's waitTimeout, then says the pool is not running")
    func leaseBeforeRun() async throws {
        var configuration = PoolConfiguration()
        configuration.lanes[.retrieval] = .init(waitTimeout: .milliseconds(50))
        let pool = try ConnectionPool(configuration: configuration, factory: InMemoryConnectionFactory(), logger: Logger(label: "test"))
        do {
            try await pool.withConnection(lane: .retrieval) { _ in }
            Issue.record("a pool that never ran granted a lease")
        } catch let error as LifeguardError {
            #expect(error.code == .notRunning)
            #expect(String(describing: error).contains("run()"))
        }
    }
}
