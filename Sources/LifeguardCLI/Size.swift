import ArgumentParser
import Foundation
import Lifeguard
import LifeguardLab

/// `lifeguard size`: a budget and lane settings from the workload, by Little's law.
struct Size: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Size the pool from the workload by Little's law, for the burst, with the arithmetic shown."
    )

    @Option(help: "RAG requests per second at the peak, 0.01 to 100000.")
    var requestsPerSecond: Double

    @Option(help: "Parallel retrieval queries per request, 1 to 1000.")
    var fanOut: Int = 8

    @Option(help: "Milliseconds one retrieval query holds its connection, 0.01 to 600000.")
    var readMs: Double = 15

    @Option(help: "Writes per request (log, persist), 0 to 1000.")
    var writesPerRequest: Int = 2

    @Option(help: "Milliseconds one write holds its connection, 0.01 to 600000.")
    var writeMs: Double = 1

    @Option(help: "Agent writes per second at the peak, 0 to 1000000.")
    var agentWritesPerSecond: Double = 0

    @Option(help: "Seconds a model call takes on average, 0 to 3600.")
    var generationS: Double = 3

    @Flag(help: "Print the sizing as JSON.")
    var json = false

    func validate() throws {
        func text(_ value: Double) -> String {
            value == value.rounded() && abs(value) < 1e15 ? "\(Int(value))" : "\(value)"
        }
        func check(_ value: Double, _ range: ClosedRange<Double>, _ flag: String) throws {
            guard range.contains(value) else {
                throw ValidationError("--\(flag) must be between \(text(range.lowerBound)) and \(text(range.upperBound)), got \(text(value))")
            }
        }
        try check(self.requestsPerSecond, 0.01...100_000, "requests-per-second")
        try check(Double(self.fanOut), 1...1_000, "fan-out")
        try check(self.readMs, 0.01...600_000, "read-ms")
        try check(Double(self.writesPerRequest), 0...1_000, "writes-per-request")
        try check(self.writeMs, 0.01...600_000, "write-ms")
        try check(self.agentWritesPerSecond, 0...1_000_000, "agent-writes-per-second")
        try check(self.generationS, 0...3_600, "generation-s")
        let budget = self.sizing.budget
        guard budget <= PoolConfiguration.largestBudget else {
            throw ValidationError(
                "this workload keeps \(budget) connections busy at its burst, more than any PostgreSQL server serves "
                    + "(a pool's budget stops at \(PoolConfiguration.largestBudget)): shorten the queries, lower the fan-out, "
                    + "or spread the load over replicas")
        }
    }

    var sizing: Sizing {
        Sizing(Sizing.Workload(
            requestsPerSecond: self.requestsPerSecond, fanOut: self.fanOut, readSeconds: self.readMs / 1_000,
            writesPerRequest: self.writesPerRequest, writeSeconds: self.writeMs / 1_000,
            agentWritesPerSecond: self.agentWritesPerSecond, generationSeconds: self.generationS))
    }

    func run() throws {
        let sizing = self.sizing
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(sizing), as: UTF8.self))
        } else {
            print(sizing.text)
            print("")
            print(sizing.swiftSnippet)
        }
    }
}
