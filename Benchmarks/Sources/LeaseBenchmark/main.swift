// lease-benchmark: what a pool costs on the lease path, with no database, side by side in one
// run: the floor (a minimal pool built here), Lifeguard, and PostgresNIO's `_ConnectionPoolModule`
// (the pool inside `PostgresClient`) with its own mock connections.
//
//   swift run -c release --package-path Benchmarks lease-benchmark            # about 2 minutes
//   swift run -c release --package-path Benchmarks lease-benchmark --quick    # about 30 s
//   valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=/dev/null \
//       Benchmarks/.build/release/lease-benchmark --only lifeguard --cycles 100000
//
// `--only POOL [--tasks N] [--body nothing|yield] [--cycles N]` runs one loop and nothing else
// (for callgrind, which counts only that loop, or perf).
//
// Every time is the median of several rounds (the spread is min…max), each round tens of
// milliseconds, the pools interleaved round by round. Ratios compare figures of the same run.
import ArgumentParser
import BenchmarkProbes
import Glibc

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease-benchmark", abstract: "What a pool costs on the lease path, with no database: the floor, Lifeguard and _ConnectionPoolModule side by side.")

    /// The pools `--only` can run.
    static let pools = ["floor", "lifeguard", "lifeguard-nostats", "postgresnio"]

    /// What each lease's body does, as `--body` names it.
    enum BodyOption: String, ExpressibleByArgument, CaseIterable {
        case nothing, yield
        var body: Body { self == .yield ? .yield : .nothing }
    }

    @Flag(help: "Fewer and shorter rounds: about 30 s instead of 2 minutes.") var quick = false
    @Flag(name: .customLong("memory"), help: "Only the memory each waiter costs.") var memoryOnly = false
    @Option(name: .customLong("only"), help: "Run one loop of this pool and nothing else (\(Options.pools.joined(separator: ", "))), for callgrind, perf or instruction counts.")
    var onlyPool: String?
    @Option(name: .customLong("tasks"), help: "With --only: tasks leasing at once.") var onlyTasks = 1
    @Option(name: .customLong("body"), help: "With --only: what each lease's body does.") var bodyOption = BodyOption.nothing
    @Option(name: .customLong("cycles"), help: "With --only: lease and release cycles.") var onlyCycles = 100_000

    var onlyBody: Body { self.bodyOption.body }

    func validate() throws {
        if let onlyPool, !Self.pools.contains(onlyPool) {
            throw ValidationError("--only takes \(Self.pools.joined(separator: ", ")), got '\(onlyPool)'")
        }
        guard self.onlyTasks >= 1, self.onlyCycles >= 1 else {
            throw ValidationError("--tasks and --cycles must be at least 1")
        }
    }
}

func makePools(connections: Int) throws -> [any LeasingPool] {
    [FloorPool(connections: connections), try LifeguardPool(connections: connections), PostgresNIOPool(connections: connections)]
}

func shutdown(_ pools: [any LeasingPool]) async {
    for pool in pools { await pool.shutdown() }
}

/// Prints a case's rows as a Markdown table: ns/cycle, spread, cycles/s, ratio to the floor and
/// how many times faster Lifeguard is than `_ConnectionPoolModule`.
func printTable(_ title: String, _ rows: [Row]) {
    print("\n### \(title)\n")
    print("| pool | ns/cycle (median) | spread (min…max) | cycles/s | × floor |")
    print("|---|---|---|---|---|")
    for row in rows {
        print("| \(row.name) | \(format(row.median)) | \(row.spread) | \(perSecond(row.median)) | \(ratio(row.median / rows[0].median)) |")
    }
    print("\nLifeguard is \(ratio(rows[2].median / rows[1].median)) faster than _ConnectionPoolModule.")
}

/// One loop of one pool and nothing else, warmed up first; under callgrind
/// (`--collect-atstart=no`) only the loop's instructions are counted.
func runOnly(_ options: Options) async throws {
    let pool: any LeasingPool
    switch options.onlyPool {
    case "floor": pool = FloorPool(connections: 8)
    case "lifeguard": pool = try LifeguardPool(connections: 8)
    case "lifeguard-nostats": pool = try LifeguardPool(connections: 8, statistics: false)
    case "postgresnio": pool = PostgresNIOPool(connections: 8)
    default:
        print("--only takes floor, lifeguard, lifeguard-nostats or postgresnio")
        exit(2)
    }
    _ = try await pool.timeCycles(tasks: options.onlyTasks, cycles: 10_000, body: options.onlyBody)
    callgrind_toggle_collect()
    let nanoseconds = try await pool.timeCycles(tasks: options.onlyTasks, cycles: options.onlyCycles, body: options.onlyBody)
    callgrind_toggle_collect()
    print("\(pool.name): \(options.onlyCycles) cycles, \(options.onlyTasks) tasks, \(options.onlyBody.rawValue): \(format(nanoseconds))/cycle")
    await pool.shutdown()
}

/// Heap bytes and allocations per queued waiter, 10,000 waiters on 8 busy connections.
func printMemoryPerWaiter() async throws {
    let waiters = 10_000
    print("\n### Memory: heap bytes per queued waiter, \(waiters) waiters on 8 busy connections\n")
    print("| pool | bytes per waiter | beyond a task waiting at a bare continuation | allocations per waiter |")
    print("|---|---|---|---|")
    let bare = try await bytesPerWaiter(FloorPool?.none, holders: 8, waiters: waiters)
    print("| (no pool: the task itself, waiting at a continuation) | \(Int(bare.bytes.rounded())) | — | \(bare.allocations) |")
    for pool in try makePools(connections: 8) {
        let waiting = try await pool.bytesPerWaiter(holders: 8, waiters: waiters)
        print("| \(pool.name) | \(Int(waiting.bytes.rounded())) | \(Int((waiting.bytes - bare.bytes).rounded())) | \(waiting.allocations) |")
        await pool.shutdown()
    }

}

/// The whole benchmark, nonisolated: closures formed on the main actor would hop to it on
/// every cycle and measure the hop instead of the pool.
func runBenchmark(_ options: Options) async throws {
    let rounds = options.quick ? 3 : 7
    let round: Duration = options.quick ? .milliseconds(30) : .milliseconds(100)
    print("lease-benchmark\(options.quick ? " --quick" : ""): \(rounds) rounds of ~\(round) per row; "
        + "time per lease+release cycle, all tasks together")

    var findings: [String] = []
    func target(_ met: Bool, _ text: String) { findings.append("- \(met ? "met" : "NOT MET"): \(text)") }

    // Uncontended and contended, on 8 connections.
    let pools = try makePools(connections: 8)
    let uncontended = try await measure(pools, tasks: 1, body: .nothing, rounds: rounds, round: round)
    printTable("Uncontended: 1 task, 8 connections", uncontended)
    target(uncontended[1].median <= 150 && uncontended[1].median <= 3 * uncontended[0].median,
        "uncontended ≤ 150 ns and ≤ 3× the floor: \(format(uncontended[1].median)), \(ratio(uncontended[1].median / uncontended[0].median))")
    var tenfold = uncontended[2].median >= 10 * uncontended[1].median

    // The cost of statistics and metrics on the uncontended path.
    let off = try LifeguardPool(connections: 8, statistics: false, name: "lifeguard, statistics off")
    let on = try LifeguardPool(connections: 8, statistics: true, name: "lifeguard, statistics + metrics on")
    // Many short rounds: the cost is the median of the per-round ratios, each between two rows
    // measured a few milliseconds apart.
    let statisticsRows = try await measure([off, on], tasks: 1, body: .nothing, rounds: options.quick ? 9 : 31, round: options.quick ? .milliseconds(25) : .milliseconds(50))
    let ratios = zip(statisticsRows[1].rounds, statisticsRows[0].rounds).map { ($0 / $1 - 1) * 100 }.sorted()
    let cost = ratios[ratios.count / 2]
    func percent(_ value: Double) -> String { "\((value * 10).rounded() / 10)%" }
    print("\n### Statistics and metrics on vs off, uncontended\n")
    print("off \(format(statisticsRows[0].median)), on \(format(statisticsRows[1].median)): \(cost >= 0 ? "+" : "")\(percent(cost)) "
        + "(median of \(ratios.count) per-round ratios; quartiles \(percent(ratios[ratios.count / 4]))…\(percent(ratios[ratios.count * 3 / 4])))")
    target(cost <= 10, "statistics and metrics cost ≤ 10%: \(percent(cost))")
    await off.shutdown()
    await on.shutdown()

    for body in [Body.nothing, .yield] {
        let rows = try await measure(pools, tasks: 64, body: body, rounds: rounds, round: round)
        printTable("Contended: 64 tasks on 8 connections, \(body.rawValue)", rows)
        target(rows[1].median <= 2 * rows[0].median,
            "contended, \(body.rawValue), ≤ 2× the floor: \(ratio(rows[1].median / rows[0].median))")
        tenfold = tenfold && rows[2].median >= 10 * rows[1].median
    }

    // Allocations.
    print("\n### Allocations per cycle (malloc, calloc, realloc and aligned allocations, whole process)\n")
    print("| pool | uncontended | 64 tasks on 8, body does nothing | 64 tasks on 8, body suspends once |")
    print("|---|---|---|---|")
    for pool in pools {
        let alone = try await allocationsPerCycle(pool, tasks: 1, cycles: 100_000, body: .nothing)
        let crowded = try await allocationsPerCycle(pool, tasks: 64, cycles: 64_000, body: .nothing)
        let suspending = try await allocationsPerCycle(pool, tasks: 64, cycles: 64_000, body: .yield)
        func figure(_ value: Double) -> String { "\((value * 100).rounded() / 100)" }
        print("| \(pool.name) | \(figure(alone)) | \(figure(crowded)) | \(figure(suspending)) |")
        if pool is LifeguardPool { target(alone < 0.01, "zero allocations per uncontended cycle: \(alone)") }
    }
    await shutdown(pools)

    // The curve.
    print("\n### The curve: tasks × connections, body does nothing (median ns/cycle; × floor)\n")
    print("| tasks | connections | floor | lifeguard | _ConnectionPoolModule | lifeguard faster by |")
    print("|---|---|---|---|---|---|")
    for connections in [8, 64] {
        let pools = try makePools(connections: connections)
        for tasks in [1, 2, 8, 64, 1_024] {
            let rows = try await measure(pools, tasks: tasks, body: .nothing, rounds: rounds, round: round)
            print("| \(tasks) | \(connections) | \(format(rows[0].median)) | \(format(rows[1].median)) (\(ratio(rows[1].median / rows[0].median))) "
                + "| \(format(rows[2].median)) (\(ratio(rows[2].median / rows[0].median))) | \(ratio(rows[2].median / rows[1].median)) |")
            tenfold = tenfold && rows[2].median >= 10 * rows[1].median
        }
        await shutdown(pools)
    }
    target(tenfold, "every row ≥ 10× faster than _ConnectionPoolModule (see the tables)")

    try await printMemoryPerWaiter()

    print("\n### Targets\n")
    for finding in findings { print(finding) }
}

let options = Options.parseOrExit()
try await Task.detached {
    if options.memoryOnly {
        try await printMemoryPerWaiter()
    } else if options.onlyPool != nil {
        try await runOnly(options)
    } else {
        try await runBenchmark(options)
    }
}.value
