import DequeModule
import Lifeguard
import LifeguardTestUtils
import Logging
import CoreMetrics
import Synchronization
import _ConnectionPoolModule
import _ConnectionPoolTestUtils

/// A pool the benchmark leases from: the floor, Lifeguard, or PostgresNIO's pool.
protocol LeasingPool: Sendable {
    /// The row label.
    var name: String { get }
    /// Leases a connection for `body` and releases it after.
    func withConnection<Value>(
        isolation: isolated (any Actor)?, _ body: (Int) async throws -> Value
    ) async throws -> Value
    /// Stops the pool and whatever runs it.
    func shutdown() async

    // Each pool implements these two by calling the generic functions of the same names with
    // its concrete self, so that the loops are specialized for it: through the protocol they
    // would measure generic dispatch, not the pool.

    /// Leases and releases `cycles` times in this task.
    func leaseLoop(cycles: Int, body: Body) async throws
    /// Wall-clock nanoseconds per cycle of `tasks` tasks leasing `cycles` times in all.
    func timeCycles(tasks: Int, cycles: Int, body: Body) async throws -> Double
    /// Heap bytes and allocations per task queued in this pool.
    func bytesPerWaiter(holders: Int, waiters: Int) async throws -> (bytes: Double, allocations: Double)
}

/// The floor: the least a pool can do. One `Mutex` over a stack of idle connections and a FIFO
/// of waiting continuations; no policy, no timeouts, no statistics, no cancellation.
final class FloorPool: LeasingPool {
    struct State {
        var idle: [Int]
        var waiters = Deque<CheckedContinuation<Int, Never>>()
    }

    let name = "floor (Mutex, idle stack, FIFO)"
    let state: Mutex<State>

    init(connections: Int) {
        self.state = Mutex(State(idle: Array(0..<connections)))
    }

    func withConnection<Value>(isolation: isolated (any Actor)?, _ body: (Int) async throws -> Value) async throws -> Value {
        let connection: Int
        if let idle = self.state.withLock({ $0.idle.popLast() }) {
            connection = idle
        } else {
            connection = await withCheckedContinuation(isolation: isolation) { (continuation: CheckedContinuation<Int, Never>) in
                let idle = self.state.withLock { state -> Int? in
                    if let idle = state.idle.popLast() { return idle }
                    state.waiters.append(continuation)
                    return nil
                }
                if let idle { continuation.resume(returning: idle) }
            }
        }
        defer {
            let waiter = self.state.withLock { state -> CheckedContinuation<Int, Never>? in
                if let waiter = state.waiters.popFirst() { return waiter }
                state.idle.append(connection)
                return nil
            }
            waiter?.resume(returning: connection)
        }
        return try await body(connection)
    }

    func shutdown() async {}

    func leaseLoop(cycles: Int, body: Body) async throws {
        try await LeaseBenchmark.leaseLoop(self, cycles: cycles, body: body)
    }

    func timeCycles(tasks: Int, cycles: Int, body: Body) async throws -> Double {
        try await LeaseBenchmark.timeCycles(self, tasks: tasks, cycles: cycles, body: body)
    }

    func bytesPerWaiter(holders: Int, waiters: Int) async throws -> (bytes: Double, allocations: Double) {
        try await LeaseBenchmark.bytesPerWaiter(self, holders: holders, waiters: waiters)
    }
}

/// Lifeguard over in-memory connections: one lane with every connection, waits without limit.
final class LifeguardPool: LeasingPool {
    let name: String
    let pool: Lifeguard.ConnectionPool<InMemoryConnectionFactory, SystemPoolClock>
    let runner: Task<Void, Never>

    init(connections: Int, statistics: Bool = true, name: String = "lifeguard") throws {
        var configuration = PoolConfiguration(budget: connections)
        configuration.lanes = [
            .retrieval: LaneConfiguration(waitTimeout: .seconds(600), maxWaiters: 100_000, shedding: nil)
        ]
        configuration.recordsStatistics = statistics
        // Quiet: the memory figure queues 10,000 waiters on purpose, which Lifeguard reports.
        var logger = Logger(label: "benchmark")
        logger.logLevel = .critical
        let pool = try Lifeguard.ConnectionPool(
            configuration: configuration, factory: InMemoryConnectionFactory(), logger: logger,
            metricsFactory: NOOPMetricsHandler.instance)
        self.pool = pool
        self.name = name
        self.runner = Task { await pool.run() }
    }

    // Always inlined, so that the loop calls Lifeguard as a user's function does: with the
    // caller's isolation known where `withConnection` (itself always inlined) runs.
    @inline(__always)
    func withConnection<Value>(isolation: isolated (any Actor)?, _ body: (Int) async throws -> Value) async throws -> Value {
        try await self.pool.withConnection(lane: .retrieval, isolation: isolation) { try await body($0.id) }
    }

    func shutdown() async {
        self.pool.shutdown(gracePeriod: .zero)
        await self.runner.value
    }

    func leaseLoop(cycles: Int, body: Body) async throws {
        try await LeaseBenchmark.leaseLoop(self, cycles: cycles, body: body)
    }

    func timeCycles(tasks: Int, cycles: Int, body: Body) async throws -> Double {
        try await LeaseBenchmark.timeCycles(self, tasks: tasks, cycles: cycles, body: body)
    }

    func bytesPerWaiter(holders: Int, waiters: Int) async throws -> (bytes: Double, allocations: Double) {
        try await LeaseBenchmark.bytesPerWaiter(self, holders: holders, waiters: waiters)
    }
}

/// PostgresNIO's `_ConnectionPoolModule` pool (the one inside `PostgresClient`) over its own mock
/// connections, configured as `PostgresClient` would be for this many connections.
final class PostgresNIOPool: LeasingPool {
    typealias Pool = _ConnectionPoolModule.ConnectionPool<
        MockConnection, Int, _ConnectionPoolModule.ConnectionIDGenerator, ConnectionRequest<MockConnection>, Int,
        MockPingPongBehavior<MockConnection>, NoOpConnectionPoolMetrics<Int>, ContinuousClock
    >

    let name = "_ConnectionPoolModule"
    let pool: Pool
    let runner: Task<Void, Never>

    init(connections: Int) {
        let factory = MockConnectionFactory<ContinuousClock>(autoMaxStreams: 1)
        var configuration = ConnectionPoolConfiguration()
        configuration.minimumConnectionCount = connections
        configuration.maximumConnectionSoftLimit = connections
        configuration.maximumConnectionHardLimit = connections
        let pool = Pool(
            configuration: configuration,
            idGenerator: _ConnectionPoolModule.ConnectionIDGenerator(),
            requestType: ConnectionRequest<MockConnection>.self,
            keepAliveBehavior: MockPingPongBehavior(keepAliveFrequency: nil, connectionType: MockConnection.self),
            observabilityDelegate: NoOpConnectionPoolMetrics(connectionIDType: Int.self),
            clock: ContinuousClock()
        ) { id, pool in
            try await factory.makeConnection(id: id, for: pool)
        }
        self.pool = pool
        self.runner = Task { await pool.run() }
    }

    func withConnection<Value>(isolation: isolated (any Actor)?, _ body: (Int) async throws -> Value) async throws -> Value {
        try await self.pool.withConnection { try await body($0.id) }
    }

    func shutdown() async {
        self.runner.cancel()
        await self.runner.value
    }

    func leaseLoop(cycles: Int, body: Body) async throws {
        try await LeaseBenchmark.leaseLoop(self, cycles: cycles, body: body)
    }

    func timeCycles(tasks: Int, cycles: Int, body: Body) async throws -> Double {
        try await LeaseBenchmark.timeCycles(self, tasks: tasks, cycles: cycles, body: body)
    }

    func bytesPerWaiter(holders: Int, waiters: Int) async throws -> (bytes: Double, allocations: Double) {
        try await LeaseBenchmark.bytesPerWaiter(self, holders: holders, waiters: waiters)
    }
}
