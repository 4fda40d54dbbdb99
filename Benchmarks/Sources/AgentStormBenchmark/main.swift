// agent-storm-benchmark: DESIGN.md's `agent-storm` against a real PostgreSQL, one lease per
// write vs the WriteCoalescer (statements through `write`, rows through `insert`), same budget,
// one run.
//
// 50 agents run for the duration; each step of an agent is a tool call of 200–800 ms (a sleep,
// no connection held) followed by 2 small writes (an INSERT of the agent's state). Reported
// per design: write latency p50/p99 (from asking to committed), writes/s, pool wait p99 of the
// write lane, and the connection-seconds the writes held.
//
//   DATABASE_URL=postgres://… swift run -c release --package-path Benchmarks agent-storm-benchmark [--quick]
//   options: --duration SECONDS (20; --quick: 8)  --agents N (50)  --budget N (20)
import Foundation
import Histogram
import Lifeguard
import LifeguardPostgres
import Logging
import PostgresNIO
import ArgumentParser
import BenchSupport
import Synchronization

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "agent-storm-benchmark", abstract: "Agents' small writes: one lease per write against the WriteCoalescer, against PostgreSQL.")

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "8 s per design instead of 20.") var quick = false
    /// The burst shape of the coalescer's acceptance test instead: 200 agents writing 25 rows
    /// each, back to back, with no tool calls.
    @Flag(help: "The coalescer's burst instead: 200 agents writing 25 rows each, back to back.") var burst = false
    @Option(name: .customLong("duration"), help: "Seconds per design (default 20, 8 with --quick).") var seconds: Double?
    @Option(help: "Agents running at once.") var agents = 50
    @Option(help: "The pool's budget.") var budget = 20

    var duration: Double { self.seconds ?? (self.quick ? 8 : 20) }
    var databaseURL: String { self.database.url }
}

/// Write latencies and failures, shared by the agents of one run.
final class Recorder: Sendable {
    struct Tally {
        var latencies = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var failures = 0
    }
    let tally = Mutex(Tally())
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func makePool(_ options: Options, logger: Logger, burst: Bool) throws -> PostgresPool {
    var configuration = try PostgresPool.Configuration(url: options.databaseURL)
    configuration.budget = options.budget
    if burst {
        // 200 agents at once overload the write lane: let every write wait, to compare costs.
        configuration.lanes[.write] = LaneConfiguration(waitTimeout: .seconds(30), maxWaiters: 10_000, shedding: nil)
    }
    configuration.pool.longHoldThreshold = nil
    configuration.pool.idleInLeaseThreshold = nil
    return try PostgresPool(configuration: configuration, logger: logger)
}

/// Runs the agents for `duration` seconds (or, in a burst, 25 writes each with no tool calls),
/// each write through `write`.
func storm(
    agents: Int, duration: Double, burst: Bool,
    write: @escaping @Sendable (_ agent: Int, _ step: Int, _ part: Int) async throws -> Void
) async -> Recorder.Tally {
    let recorder = Recorder()
    let end = ContinuousClock.now.advanced(by: .milliseconds(Int(duration * 1000)))
    await withDiscardingTaskGroup { group in
        for agent in 0..<agents {
            group.addTask {
                var step = 0
                while burst ? step < 25 : ContinuousClock.now < end {
                    if !burst { try? await Task.sleep(for: .milliseconds(Int.random(in: 200...800))) }
                    for part in 0..<(burst ? 1 : 2) {
                        let asked = ContinuousClock.now
                        do {
                            try await write(agent, step, part)
                            let latency = seconds(asked.duration(to: .now))
                            recorder.tally.withLock { _ = $0.latencies.record(UInt64(latency * 1e6)) }
                        } catch {
                            recorder.tally.withLock { $0.failures += 1 }
                        }
                    }
                    step += 1
                }
            }
        }
    }
    return recorder.tally.withLock { $0 }
}

func run() async throws {
    var options = Options.parseOrExit()
    if options.burst { options.agents = 200 }
    var logger = Logger(label: "agent-storm-benchmark")
    logger.logLevel = .error
    print("agent-storm: \(options.agents) agents, each step a tool call of 200–800 ms then 2 small writes; "
        + "budget \(options.budget); \(Int(options.duration)) s per design")
    print("")
    print("| design | write p50 / p99 | writes/s | pool wait p99 (write lane) | connection-seconds | failures |")
    print("|---|---|---|---|---|---|")
    for design in ["one lease per write", "WriteCoalescer.write", "WriteCoalescer.insert"] {
        let pool = try makePool(options, logger: logger, burst: options.burst)
        let runner = Task { await pool.run() }
        try await pool.query("CREATE TABLE IF NOT EXISTS lg_agent_state (agent int, step int, part int, state text)", lane: .write)
        try await pool.query("TRUNCATE lg_agent_state", lane: .write)
        let before = pool.statistics()[.write]!
        let started = ContinuousClock.now
        let tally: Recorder.Tally
        if design == "one lease per write" {
            tally = await storm(agents: options.agents, duration: options.duration, burst: options.burst) { agent, step, part in
                try await pool.query(
                    "INSERT INTO lg_agent_state (agent, step, part, state) VALUES (\(agent), \(step), \(part), 'thinking')", lane: .write)
            }
        } else {
            let coalescer = try WriteCoalescer(pool: pool)
            let flushing = Task { await coalescer.run() }
            let mergesRows = design == "WriteCoalescer.insert"
            tally = await storm(agents: options.agents, duration: options.duration, burst: options.burst) { agent, step, part in
                if mergesRows {
                    try await coalescer.insert(.init(
                        into: "lg_agent_state", columns: ["agent", "step", "part", "state"], values: [agent, step, part, "thinking"]))
                } else {
                    try await coalescer.write(
                        "INSERT INTO lg_agent_state (agent, step, part, state) VALUES (\(agent), \(step), \(part), 'thinking')")
                }
            }
            coalescer.shutdown()
            await flushing.value
        }
        let after = pool.statistics()[.write]!
        let holdSeconds = (Double(after.hold.count) * after.hold.mean - Double(before.hold.count) * before.hold.mean) / 1000
        let rows = try await pool.query("SELECT count(*) FROM lg_agent_state", lane: .retrieval)[0].decode(Int.self)
        let elapsed = seconds(started.duration(to: .now))
        pool.shutdown(gracePeriod: .seconds(5))
        await runner.value
        func ms(_ percentile: Double) -> String { Figures.format(Double(tally.latencies.valueAtPercentile(percentile)) / 1000) }
        print("| \(design) | \(ms(50)) / \(ms(99)) ms | \(Figures.format(Double(rows) / elapsed)) "
            + "| \(Figures.format(after.wait.p99)) ms | \(Figures.format(holdSeconds)) s (\(after.hold.count - before.hold.count) leases) "
            + "| \(tally.failures) |")
    }
}


try await Task.detached { try await run() }.value
