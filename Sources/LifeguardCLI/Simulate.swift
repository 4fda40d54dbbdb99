import ArgumentParser
import Foundation
import Lifeguard
import LifeguardBench
import LifeguardLab
import Synchronization

/// `lifeguard simulate`: the designs side by side on a scenario, without a database.
struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Simulate a workload on the real pool policy, designs side by side, without a database.",
        discussion: """
            Runs DESIGN.md's scenario on Lifeguard's state machine with a virtual clock: the same \
            decisions as production, deterministic for a seed. Designs: naive (one pool, generation \
            held in a transaction), windows (one pool, three short windows), lifeguard (lanes, \
            windows, shedding, fan-out admitted whole).
            """
    )

    @OptionGroup var workload: ScenarioOptions

    @Option(help: "The designs to compare, comma-separated: naive, windows, lifeguard. Default: all.")
    var design: String = DesignKind.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Simulated seconds of arrivals, 1 to 86400. Default: the scenario's.")
    var duration: Double?

    @Option(help: "The pool's budget, 1 to 10000. Default: the scenario's (20).")
    var budget: Int?

    @OptionGroup var loop: ClosedLoopOptions

    @Flag(help: "Print one JSON object per design (the schema in README.md) instead of the table.")
    var json = false

    @Option(help: "Also draw, for each design at 12 arrival rates from 0.25× to 3× the --rate, pool wait p99 and requests served and rejected, as an SVG file (open loop only).")
    var svg: String?

    var designs: [DesignKind] {
        self.design.split(separator: ",").compactMap { DesignKind(rawValue: $0.trimmingCharacters(in: .whitespaces)) }
    }

    func validate() throws {
        let names = self.design.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, names.allSatisfy({ DesignKind(rawValue: $0) != nil }) else {
            throw ValidationError("--design must be a comma-separated list of naive, windows, lifeguard, got '\(self.design)'")
        }
        if let duration, !(1...86_400).contains(duration) {
            throw ValidationError("--duration must be between 1 and 86400 seconds, got \(duration)")
        }
        if let budget, !(1...10_000).contains(budget) {
            throw ValidationError("--budget must be between 1 and 10000, got \(budget)")
        }
        if self.svg != nil, self.loop.users != nil {
            throw ValidationError("--svg draws arrival rates, an open loop; it does not take --users")
        }
    }

    func run() throws {
        var base = self.workload.base
        if let duration { base.duration = duration }
        if let budget { base.budget = budget }
        base.closedLoop = self.loop.closedLoop
        let scenario = base.scaled(by: self.workload.rate)
        var results: [SimulationResult] = []
        for design in self.designs {
            results.append(Self.simulate(scenario, design))
        }
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            for result in results {
                print(String(decoding: try encoder.encode(result), as: UTF8.self))
            }
        } else {
            print(SimulationTable(scenario: scenario, results: results).text)
        }
        if let svg {
            let chart = Self.chart(base, rate: self.workload.rate, designs: self.designs)
            guard FileManager.default.createFile(atPath: svg, contents: Data(chart.svg.utf8)) else {
                throw ValidationError("cannot write --svg '\(svg)'")
            }
            print("wrote \(svg)")
        }
    }

    /// The chart's rates: 0.25× to 3× the `--rate`, in steps of 0.25×, fine enough to see
    /// where a design bends.
    static let chartFactors = (1...12).map { Double($0) * 0.25 }

    /// Runs every design at every rate of the chart, on all cores, saying which rate of how
    /// many it has done.
    static func chart(_ base: Scenario, rate: Double, designs: [DesignKind]) -> WaitChart {
        let factors = Self.chartFactors.map { $0 * rate }
        let jobs = designs.flatMap { design in factors.indices.map { (design, $0) } }
        let points = Mutex([DesignKind: [WaitChart.Point]]())
        let done = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: jobs.count) { job in
            let (design, index) = jobs[job]
            let scenario = base.scaled(by: factors[index])
            var simulator = Simulator(scenario: scenario, design: design)
            let result = simulator.run()
            let lanes = Simulator.configuration(for: design, budget: base.budget, duration: base.duration).lanes
            let timeouts = Dictionary(uniqueKeysWithValues: lanes.map { ($0.key.name, BenchRun.seconds($0.value.waitTimeout) * 1_000) })
            let point = WaitChart.Point(rate: factors[index], result: result, duration: base.duration, waitTimeouts: timeouts)
            points.withLock { $0[design, default: []].append(point) }
            let count = done.withLock { count in
                count += 1
                return count
            }
            FileHandle.standardError.write(Data(
                "\rchart: \(count) of \(jobs.count) runs; rate \(index + 1) of \(factors.count) (\(WaitChart.format(factors[index]))×) done for \(design.rawValue)\u{1B}[K".utf8))
        }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        let collected = points.withLock { $0 }
        let series = designs.map { WaitChart.Series(design: $0, points: collected[$0] ?? []) }
        let unit = "1× = " + base.scaled(by: rate).kindsByName.map { "\($0.name) \(WaitChart.format($0.rate))/s" }.joined(separator: " + ")
        return WaitChart(title: "\(base.name), budget \(base.budget): pool wait and goodput by arrival rate", rateUnit: unit, series: series)
    }

    /// Runs one design, with a progress line once it has taken a second.
    static func simulate(_ scenario: Scenario, _ design: DesignKind) -> SimulationResult {
        var simulator = Simulator(scenario: scenario, design: design)
        let started = Date()
        var shown = started
        // Refreshed a few times a second.
        let result = simulator.run { fraction in
            let now = Date()
            if now.timeIntervalSince(started) > 1, now.timeIntervalSince(shown) > 0.25 {
                shown = now
                FileHandle.standardError.write(Data("\rsimulating \(design.rawValue): \(Int(fraction * 100))%".utf8))
            }
        }
        if shown != started { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        return result
    }
}

/// The side-by-side table of `simulate`.
struct SimulationTable {
    let scenario: Scenario
    let results: [SimulationResult]
    /// What the first column names, per result: the design by default, the pool for `bench`.
    var firstColumn: [String]? = nil

    /// The first column's width: its longest entry, at least 10.
    var firstWidth: Int {
        max(10, (self.firstColumn ?? self.results.map(\.design.rawValue)).map(\.count).max() ?? 0)
    }

    var text: String {
        var kinds = self.scenario.kindsByName.map { "\($0.name) \(Figures.format($0.rate))/s" }.joined(separator: " + ")
        if let loop = self.scenario.closedLoop {
            kinds = "closed loop of \(loop.users) users, think \(loop.think), issuing " + self.scenario.kindsByName.map(\.name).joined(separator: " + ")
        }
        var lines = [
            "scenario \(self.scenario.name): \(kinds); budget \(self.scenario.budget); \(Figures.format(self.scenario.duration)) s of arrivals; "
                + "\(Int(self.scenario.cancelFraction * 100))% cancelled; seed \(self.scenario.seed)",
            "",
            "design     done/s  pool wait p50 / p99 by lane (ms)           e2e p50 / p99 (ms)   util p99  granted  timeout  shed  overl.  cancel  leaked  failed requests",
        ]
        if self.firstColumn != nil { lines[2] = "pool  " + lines[2].dropFirst(6) }
        lines[2] = Self.pad(String(lines[2].prefix(6)), self.firstWidth) + " " + lines[2].dropFirst(11)
        for (index, result) in self.results.enumerated() {
            let waits = result.waitMilliseconds.sorted { $0.key < $1.key }
                .map { "\($0.key) \(Figures.format($0.value.p50))/\(Figures.format($0.value.p99))" }.joined(separator: ", ")
            let failed = result.failedRequests.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            let outcomes = result.outcomes
            lines.append(
                Self.pad(self.firstColumn?[index] ?? result.design.rawValue, self.firstWidth) + " " + Self.pad(Figures.format(result.throughputPerSecond), 7) + " "
                    + Self.pad(waits, 42) + " "
                    + Self.pad("\(Figures.format(result.endToEndMilliseconds.p50)) / \(Figures.format(result.endToEndMilliseconds.p99))", 20) + " "
                    + Self.pad("\(Int((result.utilizationP99 * 100).rounded()))%", 9) + " "
                    + Self.pad("\(outcomes.granted)", 8) + " " + Self.pad("\(outcomes.timeout)", 8) + " "
                    + Self.pad("\(outcomes.shed)", 5) + " " + Self.pad("\(outcomes.overloaded)", 7) + " "
                    + Self.pad("\(outcomes.cancelled)", 7) + " " + Self.pad("\(result.leaked)", 7) + " "
                    + (failed.isEmpty ? "none" : failed + " (\(Figures.format(result.rejectedFraction * 100))% of requests)"))
        }
        return lines.joined(separator: "\n")
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }
}
