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
    _ body: (ConnectionPool<InMemoryConnectionFactory, SystemPoolClock>, InMemoryConnectionFactory) async throws -> Value
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

/// Runs a pool on `clock` over an in-memory factory on the same clock for the duration of
/// `body`; then shuts it down at once, moves the clock past whatever still sleeps on it (a
/// reset, say), and waits for `run()` to return.
func withRunningPool<Value>(
    _ configuration: PoolConfiguration,
    clock: ManualClock,
    factory: InMemoryConnectionFactory? = nil,
    _ body: (ConnectionPool<InMemoryConnectionFactory, ManualClock>, InMemoryConnectionFactory) async throws -> Value
) async throws -> Value {
    let factory = factory ?? InMemoryConnectionFactory(clock: clock)
    let pool = try ConnectionPool(configuration: configuration, factory: factory, clock: clock, logger: Logger(label: "test"))
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await pool.run() }
        do {
            let value = try await body(pool, factory)
            pool.shutdown(gracePeriod: .zero)
            clock.advance(by: .seconds(3_600))
            try await group.waitForAll()
            return value
        } catch {
            pool.shutdown(gracePeriod: .zero)
            clock.advance(by: .seconds(3_600))
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

@Suite("Connection pool shell (in-memory connections)", .timeLimit(.minutes(3)))
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
        let clock = ManualClock()
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init(waitTimeout: .milliseconds(50))])
        configuration.minimumIdle = 1
        try await withRunningPool(configuration, clock: clock) { pool, _ in
            await pool.status { $0.idle == 1 }
            try await pool.withConnection(lane: .write) { _ in
                let waiter = Task { try await pool.withConnection(lane: .write) { _ in } }
                // The pool's timer for the waiter's deadline: it has queued.
                await clock.sleeper(until: clock.now.advanced(by: .milliseconds(50)))
                clock.advance(by: .milliseconds(50))
                do {
                    try await waiter.value
                    Issue.record("expected a timeout")
                } catch let error as LifeguardError {
                    #expect(error.code == .waitTimeout)
                    #expect(error.lane == .write)
                    #expect(error.waited! >= .milliseconds(50))
                }
            }
        }
    }

    @Test("a wait deadline that a sooner one supersedes leaves no timer behind; the sooner one fires")
    func supersededTimerIsCancelled() async throws {
        let clock = ManualClock()
        // Deadlines sooner than the 1 s housekeeping, so that they are the timers armed.
        let configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init(waitTimeout: .milliseconds(800))])
        try await withRunningPool(configuration, clock: clock) { pool, _ in
            try await pool.withConnection(lane: .write) { _ in
                let started = clock.now
                let patient = Task { try await pool.withConnection(lane: .write) { _ in } }
                await clock.sleeper(until: started.advanced(by: .milliseconds(800)))
                let hurried = Task {
                    try await RequestDeadline.withDeadline(at: started.advanced(by: .milliseconds(400))) {
                        try await pool.withConnection(lane: .write) { _ in }
                    }
                }
                await clock.sleeper(until: started.advanced(by: .milliseconds(400)))
                #expect(pool.status().waiters == 2)
                #expect(!clock.sleeperDeadlines.contains(started.advanced(by: .milliseconds(800))), "the later timer was cancelled")
                clock.advance(by: .milliseconds(400))
                await #expect(throws: LifeguardError.self) { try await hurried.value }
                // The patient waiter's deadline is armed again, and fires at its time.
                await clock.sleeper(until: started.advanced(by: .milliseconds(800)))
                clock.advance(by: .milliseconds(400))
                do {
                    try await patient.value
                    Issue.record("expected a timeout")
                } catch let error as LifeguardError {
                    #expect(error.code == .waitTimeout)
                    #expect(error.waited == .milliseconds(800))
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
        let clock = ManualClock()
        var configuration = PoolConfiguration.testing(budget: 2, lanes: [.write: .init(waitTimeout: .seconds(5))])
        configuration.reconnectInitialDelay = .milliseconds(20)
        configuration.reconnectMaximumDelay = .milliseconds(40)
        try await withRunningPool(configuration, clock: clock) { pool, factory in
            factory.update { $0.connectFailure = .init("connection refused (test)") }
            let started = clock.now
            do {
                try await pool.withConnection(lane: .write) { _ in }
                Issue.record("expected databaseUnavailable")
            } catch let error as LifeguardError {
                #expect(error.code == .databaseUnavailable)
                #expect(String(describing: error).contains("connection refused (test)"))
            }
            // Failing fast: nowhere near the 5 s wait timeout (the clock has not moved).
            #expect(started.duration(to: clock.now) < .seconds(5))
            factory.update { $0.connectFailure = nil }
            // Past the backoff (at most its maximum delay), a request waits for the probe it
            // starts, which now connects.
            clock.advance(by: .milliseconds(40))
            let recovered = (try? await pool.withConnection(lane: .write) { _ in true }) ?? false
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
            await pool.status { $0.idle == $0.connections }
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
        let clock = ManualClock()
        let factory = InMemoryConnectionFactory(clock: clock)
        let pool = try ConnectionPool(
            configuration: .testing(budget: 2, lanes: [.write: .patient]), factory: factory, clock: clock, logger: Logger(label: "test"))
        let runner = Task { await pool.run() }
        let lease = Task {
            try await pool.withConnection(lane: .write) { _ in
                try await clock.sleep(for: .milliseconds(200))
                return "finished"
            }
        }
        await clock.sleeper(until: clock.now.advanced(by: .milliseconds(200)))
        pool.shutdown(gracePeriod: .seconds(5))
        await #expect(throws: LifeguardError.self) { try await pool.withConnection(lane: .write) { _ in } }
        clock.advance(by: .milliseconds(200))
        #expect(try await lease.value == "finished")
        await runner.value
        #expect(factory.openCount == 0)
        #expect(pool.status().isShuttingDown)
    }

    @Test("a second shutdown with a shorter grace period closes the running lease at once, and run() returns", .timeLimit(.minutes(1)))
    func secondShutdownShortens() async throws {
        let clock = ManualClock()
        let factory = InMemoryConnectionFactory(clock: clock)
        let pool = try ConnectionPool(
            configuration: .testing(budget: 2, lanes: [.write: .patient]), factory: factory, clock: clock, logger: Logger(label: "test"))
        let runner = Task { await pool.run() }
        let lease = Task {
            try await pool.withConnection(lane: .write) { _ in try await clock.sleep(for: .seconds(60)) }
        }
        await clock.sleeper(until: clock.now.advanced(by: .seconds(60)))
        pool.shutdown(gracePeriod: .seconds(30))
        pool.shutdown(gracePeriod: .zero)
        await runner.value
        #expect(factory.openCount == 0, "the running lease's connection was closed without waiting for the 30 s")
        clock.advance(by: .seconds(60))
        _ = try? await lease.value
    }

    @Test("in a ServiceGroup, graceful shutdown lets the running lease finish, then closes everything")
    func serviceGroupGracefulShutdown() async throws {
        let clock = ManualClock()
        let factory = InMemoryConnectionFactory(clock: clock)
        let pool = try ConnectionPool(
            configuration: .testing(budget: 2, lanes: [.write: .patient]), factory: factory, clock: clock, logger: Logger(label: "test"))
        let group = ServiceGroup(services: [pool], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        let lease = Task {
            try await pool.withConnection(lane: .write) { _ in
                try await clock.sleep(for: .milliseconds(200))
                return "finished"
            }
        }
        await clock.sleeper(until: clock.now.advanced(by: .milliseconds(200)))
        await group.triggerGracefulShutdown()
        await pool.status { $0.isShuttingDown }
        clock.advance(by: .milliseconds(200))
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
        await pool.status { $0.idle == 3 }
        #expect(factory.openCount == 3)
        runner.cancel()
        await runner.value
        #expect(factory.openCount == 0)
    }
}

extension ConnectionPoolTests {
    @Test("a lease asked for before run() waits its lane's waitTimeout, then says the pool is not running")
    func leaseBeforeRun() async throws {
        let clock = ManualClock()
        var configuration = PoolConfiguration()
        configuration.lanes[.retrieval] = .init(waitTimeout: .milliseconds(50))
        let pool = try ConnectionPool(
            configuration: configuration, factory: InMemoryConnectionFactory(clock: clock), clock: clock, logger: Logger(label: "test"))
        let lease = Task { try await pool.withConnection(lane: .retrieval) { _ in } }
        await clock.sleeper(until: clock.now.advanced(by: .milliseconds(50)))
        clock.advance(by: .milliseconds(50))
        do {
            try await lease.value
            Issue.record("a pool that never ran granted a lease")
        } catch let error as LifeguardError {
            #expect(error.code == .notRunning)
            #expect(String(describing: error).contains("run()"))
        }
    }
}
