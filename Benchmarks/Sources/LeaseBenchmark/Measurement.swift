import BenchmarkProbes
import Synchronization

/// What a lease's body does.
enum Body: String {
    case nothing = "body does nothing"
    /// `await Task.yield()`: stands in for a query, which suspends the task once.
    case yield = "body suspends once"
}

@inline(never)
func blackHole(_ value: Int) {
    precondition(value != .min)
}

/// Leases and releases `cycles` times in this task. One loop per body, so that a body that does
/// nothing is a closure that does nothing.
func leaseLoop(_ pool: some LeasingPool, cycles: Int, body: Body) async throws {
    var sink = 0
    switch body {
    case .nothing:
        for _ in 0..<cycles {
            sink &+= try await pool.withConnection(isolation: nil) { $0 }
        }
    case .yield:
        for _ in 0..<cycles {
            sink &+= try await pool.withConnection(isolation: nil) { connection in
                await Task.yield()
                return connection
            }
        }
    }
    blackHole(sink)
}

/// Runs `tasks` tasks leasing and releasing `cycles` times in all; returns the wall-clock
/// nanoseconds per cycle.
func timeCycles(_ pool: some LeasingPool, tasks: Int, cycles: Int, body: Body) async throws -> Double {
    let perTask = max(1, cycles / tasks)
    let start = ContinuousClock.now
    if tasks == 1 {
        try await LeaseBenchmark.leaseLoop(pool, cycles: perTask, body: body)
    } else {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<tasks {
                group.addTask { try await LeaseBenchmark.leaseLoop(pool, cycles: perTask, body: body) }
            }
            try await group.waitForAll()
        }
    }
    return nanoseconds(start.duration(to: .now)) / Double(perTask * tasks)
}

func nanoseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1e9 + Double(duration.components.attoseconds) / 1e9
}

/// How many cycles make a round of about `round` on this pool: measured on a short run, which
/// also warms the pool up (its connections open, its caches fill).
func cyclesPerRound(_ pool: some LeasingPool, tasks: Int, body: Body, round: Duration) async throws -> Int {
    var probe = max(tasks * 4, 2_000)
    var perCycle = try await pool.timeCycles(tasks: tasks, cycles: probe, body: body)
    // Once more when the first run was mostly start-up.
    if perCycle * Double(probe) < nanoseconds(round) / 10 {
        probe *= 10
        perCycle = try await pool.timeCycles(tasks: tasks, cycles: probe, body: body)
    }
    let cycles = Int(nanoseconds(round) / max(perCycle, 1))
    return min(max(cycles, tasks * 4), 20_000_000)
}

/// One row of figures: a pool's rounds in one case.
struct Row {
    let name: String
    var rounds: [Double] = []
    var median: Double { self.rounds.sorted()[self.rounds.count / 2] }
    var spread: String { "\(format(self.rounds.min()!))…\(format(self.rounds.max()!))" }
}

func format(_ nanoseconds: Double) -> String {
    if nanoseconds >= 10_000 { return "\(Int((nanoseconds / 1_000).rounded())) µs" }
    if nanoseconds >= 1_000 { return "\((nanoseconds / 100).rounded() / 10) µs" }
    return "\(Int(nanoseconds.rounded())) ns"
}

func ratio(_ value: Double) -> String {
    value >= 10 ? "\(Int(value.rounded()))×" : "\((value * 100).rounded() / 100)×"
}

func perSecond(_ nanoseconds: Double) -> String {
    let rate = 1e9 / nanoseconds
    if rate >= 1e6 { return "\((rate / 1e5).rounded() / 10) M" }
    return "\(Int((rate / 1e3).rounded())) k"
}

/// Measures `pools` in one case, interleaved round by round so that noise on this shared
/// machine falls on every pool alike.
func measure(
    _ pools: [any LeasingPool], tasks: Int, body: Body, rounds: Int, round: Duration
) async throws -> [Row] {
    var cycles: [Int] = []
    for pool in pools { cycles.append(try await cyclesPerRound(pool, tasks: tasks, body: body, round: round)) }
    var rows = pools.map { Row(name: $0.name) }
    for _ in 0..<rounds {
        for (index, pool) in pools.enumerated() {
            rows[index].rounds.append(try await pool.timeCycles(tasks: tasks, cycles: cycles[index], body: body))
        }
    }
    return rows
}

/// Allocations per cycle of `pool`, counted over `cycles` cycles after a warm-up.
func allocationsPerCycle(_ pool: some LeasingPool, tasks: Int, cycles: Int, body: Body) async throws -> Double {
    _ = try await pool.timeCycles(tasks: tasks, cycles: cycles / 10, body: body)
    malloc_counter_start()
    _ = try await pool.timeCycles(tasks: tasks, cycles: cycles, body: body)
    return Double(malloc_counter_stop()) / Double(cycles)
}

/// A count tasks share.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
    func increment() { self.value.add(1, ordering: .relaxed) }
    var count: Int { self.value.load(ordering: .relaxed) }
}

/// A gate tasks wait at until it opens.
final class Gate: Sendable {
    let state = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let open = self.state.withLock { state -> Bool in
                if !state.open { state.waiting.append(continuation) }
                return state.open
            }
            if open { continuation.resume() }
        }
    }

    func open() {
        let waiting = self.state.withLock { state in
            state.open = true
            defer { state.waiting = [] }
            return state.waiting
        }
        for continuation in waiting { continuation.resume() }
    }
}

/// Heap bytes per task waiting in `pool`'s queue: `holders` tasks hold every connection while
/// `waiters` more queue up; `nil` for `pool` measures tasks waiting at a bare gate instead (what
/// a suspended task costs with no pool at all).
func bytesPerWaiter<Pool: LeasingPool>(_ pool: Pool?, holders: Int, waiters: Int) async throws -> (bytes: Double, allocations: Double) {
    let release = Gate()
    let started = Counter()
    return try await withThrowingTaskGroup(of: Void.self) { group in
        if let pool {
            for _ in 0..<holders {
                group.addTask {
                    _ = try await pool.withConnection(isolation: nil) { connection in
                        started.increment()
                        await release.wait()
                        return connection
                    }
                }
            }
            while started.count < holders { await Task.yield() }
        }
        try await Task.sleep(for: .milliseconds(100))
        let before = malloc_bytes_in_use()
        malloc_counter_start()
        let queued = Counter()
        for _ in 0..<waiters {
            group.addTask {
                queued.increment()
                if let pool {
                    _ = try await pool.withConnection(isolation: nil) { $0 }
                } else {
                    await release.wait()
                }
            }
        }
        while queued.count < waiters { try await Task.sleep(for: .milliseconds(10)) }
        // Let every task reach its wait.
        try await Task.sleep(for: .milliseconds(300))
        let after = malloc_bytes_in_use()
        let allocations = malloc_counter_stop()
        release.open()
        try await group.waitForAll()
        return (Double(Int(after) - Int(before)) / Double(waiters), Double(allocations) / Double(waiters))
    }
}
