// select-benchmark: `SELECT 1` through 20 connections against a real PostgreSQL, side by side in
// one run: Lifeguard's `PostgresPool`, PostgresNIO's `PostgresClient`, and `pgbench` (C and
// libpq, the practical ceiling), with 20 and with 64 concurrent tasks.
//
//   DATABASE_URL=postgres://…?sslmode=disable swift run -c release --package-path Benchmarks select-benchmark [--quick]
//   options: --duration SECONDS (5; --quick: 2)  --rounds N (3; --quick: 1)  --pgbench PATH
//   profiling: --only DESIGN TASKS [--queries N]: one design alone, for a duration or N queries
//   --statement SQL: the plain designs run this instead of `SELECT 1` (a write, behind PgBouncer)
//
// Each task runs `SELECT 1` and reads its row, back to back, for the duration: as a plain
// statement (PostgresNIO's unnamed statement: parsed, described and planned every time) and as a
// prepared statement (`PostgresPreparedStatement`: parsed once per connection). Figures are
// queries per second, the median of the rounds (min…max), the designs interleaved round by round
// (which goes first alternates), and the client process's CPU time per query (user and system,
// all its threads). Lifeguard runs with serverSideCancellation off, as PostgresClient has none.
import BenchmarkProbes
import Foundation
import Lifeguard
import LifeguardPostgres
import Logging
import PostgresNIO
import ArgumentParser
import BenchSupport
import Synchronization

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "select-benchmark", abstract: "SELECT 1 through Lifeguard, PostgresClient and pgbench, side by side.")

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "2 s per row and 1 round instead of 5 s and 3.") var quick = false
    @Option(name: .customLong("duration"), help: "Seconds per row (default 5, 2 with --quick).") var seconds: Double?
    @Option(name: .customLong("rounds"), help: "Rounds (default 3, 1 with --quick).") var roundsGiven: Int?
    @Option(help: "pgbench to compare with (default: the one on PATH).") var pgbench: String?
    /// Runs one design at one concurrency and nothing else (for profiling).
    @Option(name: .customLong("only"), parsing: .upToNextOption,
            help: "DESIGN [TASKS]: one design alone (lifeguard, postgresclient, lifeguard-prepared, postgresclient-prepared), 20 tasks unless given.")
    var onlyGiven: [String] = []
    /// With `--only`: run exactly this many queries instead of for a duration (for counting
    /// instructions per query under qemu-user, as `scripts/instructions.sh` does per lease).
    @Option(help: "With --only: this many queries instead of a duration.") var queries: Int?
    /// The plain designs' statement, `SELECT 1` unless given: a write, to see what Lifeguard's
    /// hold-back of writes behind a pooler costs (create its table first).
    @Option(help: "The plain designs' statement.") var statement = "SELECT 1"

    var duration: Double { self.seconds ?? (self.quick ? 2 : 5) }
    var rounds: Int { self.roundsGiven ?? (self.quick ? 1 : 3) }
    var only: (design: String, tasks: Int)? {
        guard let design = self.onlyGiven.first else { return nil }
        return (design, self.onlyGiven.dropFirst().first.flatMap { Int($0) } ?? 20)
    }
    var databaseURL: String { self.database.url }
}

let connections = 20

/// A design that runs `SELECT 1`.
protocol SelectTarget: Sendable {
    var name: String { get }
    func selectOne() async throws
}

/// `SELECT 1` as a prepared statement.
struct SelectOne: PostgresPreparedStatement {
    static let sql = "SELECT 1"
    typealias Row = Int32
    func makeBindings() throws -> PostgresBindings { PostgresBindings() }
    func decodeRow(_ row: PostgresRow) throws -> Int32 { try row.decode(Int32.self) }
}

struct LifeguardTarget: SelectTarget {
    let pool: PostgresPool
    let prepared: Bool
    let statement: String
    var name: String { self.prepared ? "Lifeguard, prepared" : "Lifeguard" }

    func selectOne() async throws {
        try await self.pool.withConnection(lane: .retrieval) { lease in
            if self.prepared {
                try await lease.execute(SelectOne())
            } else {
                try await lease.execute(PostgresQuery(unsafeSQL: self.statement))
            }
        }
    }
}

struct PostgresClientTarget: SelectTarget {
    let client: PostgresClient
    let logger: Logger
    let prepared: Bool
    let statement: String
    var name: String { self.prepared ? "PostgresClient, prepared" : "PostgresClient" }

    func selectOne() async throws {
        if self.prepared {
            for try await _ in try await self.client.execute(SelectOne(), logger: self.logger) {}
            return
        }
        let logger = self.logger
        let statement = self.statement
        try await self.client.withConnection { connection in
            for try await _ in try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) {}
        }
    }
}

/// This process's CPU time so far, user and system, in microseconds.
func processCPUMicroseconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
}

/// One measurement: queries per second, and the client's CPU time per query.
struct Measurement {
    var rate: Double
    var cpuMicrosecondsPerQuery: Double
}

/// `tasks` tasks running `SELECT 1` back to back for `duration` seconds.
func measure(_ target: some SelectTarget, tasks: Int, duration: Double) async throws -> Measurement {
    let end = ContinuousClock.now.advanced(by: .milliseconds(Int(duration * 1_000)))
    let start = ContinuousClock.now
    let cpuAtStart = processCPUMicroseconds()
    let total = try await withThrowingTaskGroup(of: Int.self) { group in
        for _ in 0..<tasks {
            group.addTask {
                var count = 0
                while ContinuousClock.now < end {
                    try await target.selectOne()
                    count += 1
                }
                return count
            }
        }
        return try await group.reduce(0, +)
    }
    let cpu = processCPUMicroseconds() - cpuAtStart
    let elapsed = start.duration(to: .now)
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return Measurement(rate: Double(total) / seconds, cpuMicrosecondsPerQuery: cpu / Double(max(total, 1)))
}

/// `queries` queries (rounded down to a multiple of `tasks`) from `tasks` tasks.
func runQueries(_ target: some SelectTarget, tasks: Int, queries: Int) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<tasks {
            group.addTask {
                for _ in 0..<(queries / tasks) { try await target.selectOne() }
            }
        }
        try await group.waitForAll()
    }
}

/// Allocations per query (the whole process: pool, driver, NIO, runtime) over `queries`
/// queries from `tasks` tasks.
func allocationsPerQuery(_ target: some SelectTarget, tasks: Int, queries: Int) async throws -> Double {
    malloc_counter_start()
    try await runQueries(target, tasks: tasks, queries: queries)
    return Double(malloc_counter_stop()) / Double(queries / tasks * tasks)
}

/// pgbench's transactions per second for `SELECT 1` with 20 clients on 2 threads, through
/// `queryMode` (`simple`, pgbench's default, or `prepared`).
///
/// Spawned with `posix_spawn`, its signal mask emptied: pgbench ends a `-T` run on `SIGALRM`,
/// which this process's threads block (through Foundation's `Process`, pgbench never ended).
func pgbenchQueriesPerSecond(path: String, queryMode: String, configuration: PostgresPool.Configuration, duration: Double) throws -> Double? {
    let directory = FileManager.default.temporaryDirectory
    let script = directory.appendingPathComponent("lifeguard-select1-\(getpid()).sql")
    let output = directory.appendingPathComponent("lifeguard-pgbench-\(getpid()).txt")
    try "SELECT 1;\n".write(to: script, atomically: true, encoding: .utf8)
    defer {
        try? FileManager.default.removeItem(at: script)
        try? FileManager.default.removeItem(at: output)
    }
    let arguments = [
        path, "-n", "-M", queryMode, "-f", script.path, "-c", "\(connections)", "-j", "2", "-T", "\(max(1, Int(duration.rounded())))",
        "-h", configuration.host ?? "127.0.0.1", "-p", "\(configuration.port)", "-U", configuration.username,
        configuration.database ?? configuration.username,
    ]
    var environment = ProcessInfo.processInfo.environment
    environment["PGPASSWORD"] = configuration.password ?? ""
    environment["PGSSLMODE"] = "disable"
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for pointer in argv + envp { free(pointer) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, output.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
    var pid: pid_t = 0
    guard posix_spawn(&pid, path, &actions, &attributes, &argv, &envp) == 0 else { return nil }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
    // "tps = 41234.567890 (without initial connection time)"
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }) else { return nil }
    return Double(line.dropFirst("tps = ".count).prefix { $0.isNumber || $0 == "." })
}

func findPgbench(_ given: String?) -> String? {
    if let given { return given }
    let candidates = ["/usr/lib/postgresql/17/bin/pgbench", "/usr/lib/postgresql/16/bin/pgbench", "/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench"]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

struct Row {
    let name: String
    var rounds: [Measurement] = []
    var median: Double { Self.median(self.rounds.map(\.rate)) }
    var cpuMedian: Double { Self.median(self.rounds.map(\.cpuMicrosecondsPerQuery)) }
    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
}

func format(_ rate: Double) -> String { "\(Int((rate / 100).rounded()) * 100)" }
func ratio(_ value: Double) -> String { "\((value * 100).rounded() / 100)×" }

func run() async throws {
    let options = Options.parseOrExit()
    var logger = Logger(label: "select-benchmark")
    logger.logLevel = .critical  // 64 tasks on 20 connections wait, on purpose

    var configuration = try PostgresPool.Configuration(url: options.databaseURL)
    guard configuration.tlsMode == .disable else {
        print("select-benchmark compares with PostgresClient over plain TCP: add ?sslmode=disable to the URL of a local server")
        exit(2)
    }
    configuration.serverSideCancellation = false
    configuration.budget = connections
    configuration.lanes = [.retrieval: LaneConfiguration(waitTimeout: .seconds(30), maxWaiters: 10_000, shedding: nil)]
    configuration.pool.minimumIdle = connections
    let pool = try PostgresPool(configuration: configuration, logger: logger)

    var clientConfiguration = PostgresClient.Configuration(
        host: configuration.host ?? "127.0.0.1", port: configuration.port, username: configuration.username,
        password: configuration.password, database: configuration.database, tls: .disable)
    clientConfiguration.options.maximumConnections = connections
    clientConfiguration.options.minimumConnections = connections
    let client = PostgresClient(configuration: clientConfiguration, backgroundLogger: logger)

    let pgbench = findPgbench(options.pgbench)
    /// Lifeguard and PostgresClient, for plain statements and for prepared ones, with the query
    /// mode of the pgbench run they are compared to.
    let pairs: [(lifeguard: LifeguardTarget, client: PostgresClientTarget, pgbenchMode: String)] = [false, true].map { prepared in
        (LifeguardTarget(pool: pool, prepared: prepared, statement: options.statement),
         PostgresClientTarget(client: client, logger: logger, prepared: prepared, statement: options.statement),
         prepared ? "prepared" : "simple")
    }

    print("select-benchmark: SELECT 1 through \(connections) connections, \(options.rounds) round(s) of \(options.duration) s per row, "
        + "queries per second (median)")
    try await withThrowingTaskGroup(of: Void.self) { runners in
        runners.addTask { await pool.run() }
        runners.addTask { await client.run() }
        // Warm both up: every connection open, every statement prepared on every connection.
        // With `--only`, the pair of its kind only: PostgresClient's prepared statements fail
        // behind PgBouncer before 1.21 (42P05).
        let warmed = options.only.map { only in only.design.hasSuffix("prepared") ? [pairs[1]] : [pairs[0]] } ?? pairs
        for pair in warmed {
            _ = try await measure(pair.lifeguard, tasks: 64, duration: 1)
            _ = try await measure(pair.client, tasks: 64, duration: 1)
        }

        if let only = options.only {
            let targets: [String: any SelectTarget] = [
                "lifeguard": pairs[0].lifeguard, "postgresclient": pairs[0].client,
                "lifeguard-prepared": pairs[1].lifeguard, "postgresclient-prepared": pairs[1].client,
            ]
            guard let target = targets[only.design] else {
                print("--only: one of \(targets.keys.sorted().joined(separator: ", "))")
                exit(2)
            }
            if let queries = options.queries {
                try await runQueries(target, tasks: only.tasks, queries: queries)
                print("\(target.name), \(only.tasks) tasks: \(queries / only.tasks * only.tasks) queries")
                pool.shutdown(gracePeriod: .seconds(5))
                runners.cancelAll()
                return
            }
            for _ in 0..<options.rounds {
                let measured = try await measure(target, tasks: only.tasks, duration: options.duration)
                print("\(target.name), \(only.tasks) tasks: \(format(measured.rate)) q/s, client CPU \(Int(measured.cpuMicrosecondsPerQuery.rounded())) µs/query")
            }
            pool.shutdown(gracePeriod: .seconds(5))
            runners.cancelAll()
            return
        }
        var rows: [String: Row] = [:]
        func record(_ target: some SelectTarget, tasks: Int) async throws {
            rows["\(target.name) \(tasks)", default: Row(name: target.name)].rounds.append(
                try await measure(target, tasks: tasks, duration: options.duration))
        }
        var ceilings: [String: [Double]] = [:]
        for round in 0..<options.rounds {
            for pair in pairs {
                // Which pool goes first alternates, row by row and round by round.
                for (index, tasks) in [20, 64].enumerated() {
                    if (round + index).isMultiple(of: 2) {
                        try await record(pair.lifeguard, tasks: tasks)
                        try await record(pair.client, tasks: tasks)
                    } else {
                        try await record(pair.client, tasks: tasks)
                        try await record(pair.lifeguard, tasks: tasks)
                    }
                }
                if let pgbench, let rate = try pgbenchQueriesPerSecond(
                    path: pgbench, queryMode: pair.pgbenchMode, configuration: configuration, duration: options.duration) {
                    ceilings[pair.pgbenchMode, default: []].append(rate)
                }
            }
        }
        print("")
        print("| statement | tasks | design | queries/s (median) | min…max | ÷ PostgresClient | ÷ pgbench | client CPU µs/query |")
        print("|---|---|---|---|---|---|---|---|")
        for pair in pairs {
            let ceiling = ceilings[pair.pgbenchMode].map(Row.median)
            for tasks in [20, 64] {
                let client = rows["\(pair.client.name) \(tasks)"]!
                for row in [rows["\(pair.lifeguard.name) \(tasks)"]!, client] {
                    let rates = row.rounds.map(\.rate)
                    let toCeiling = ceiling.map { ratio(row.median / $0) } ?? "—"
                    print("| \(pair.pgbenchMode == "prepared" ? "prepared" : "plain") | \(tasks) | \(row.name) | \(format(row.median)) | "
                        + "\(format(rates.min()!))…\(format(rates.max()!)) | \(ratio(row.median / client.median)) | \(toCeiling) | "
                        + "\(Int(row.cpuMedian.rounded())) |")
                }
            }
        }
        print("\nAllocations per query, 20 tasks (whole process):")
        for pair in pairs {
            for target in [pair.lifeguard, pair.client] as [any SelectTarget] {
                let allocations = try await allocationsPerQuery(target, tasks: 20, queries: 20_000)
                print("- \(target.name): \((allocations * 10).rounded() / 10)")
            }
        }
        if pgbench != nil {
            for mode in ["simple", "prepared"] {
                let rates = ceilings[mode] ?? []
                guard !rates.isEmpty else { continue }
                print("\npgbench -n -M \(mode) -f select1.sql -c \(connections) -j 2: \(format(Row.median(rates))) q/s "
                    + "(\(format(rates.min()!))…\(format(rates.max()!)))", terminator: "")
            }
            print("")
        } else {
            print("\npgbench: not found (install postgresql's client tools or pass --pgbench PATH)")
        }
        print("\nTargets: Lifeguard ≥ 1.5× PostgresClient at 20 and 64 tasks; ≥ 0.6× pgbench (aim).")
        pool.shutdown(gracePeriod: .seconds(5))
        runners.cancelAll()
    }
}

try await run()
