import Foundation
import Lifeguard

/// Pool sizes from Little's law, per component of an AI pipeline, sized for the burst rather
/// than the average, with the arithmetic in words.
///
/// Each component holds `arrivals/s × connections per arrival × seconds held` connections on
/// average (L = λW). Arrivals are random, so the pool is sized for the peak: the average plus
/// three times its square root (square-root staffing: with Poisson arrivals, the busy count
/// stays under it about 99.9% of the time).
public struct Sizing: Sendable, Hashable, Codable {
    /// The workload.
    public struct Workload: Sendable, Hashable, Codable {
        /// RAG requests per second at the peak.
        public var requestsPerSecond: Double
        /// Parallel retrieval queries per request.
        public var fanOut: Int
        /// How long one retrieval query holds its connection, in seconds.
        public var readSeconds: Double
        /// Writes per request (log, persist).
        public var writesPerRequest: Int
        /// How long one write holds its connection, in seconds.
        public var writeSeconds: Double
        /// Agent writes per second, at the peak.
        public var agentWritesPerSecond: Double
        /// How long a model call takes on average, in seconds: what a connection held across it
        /// holds.
        public var generationSeconds: Double

        /// Creates a workload.
        public init(
            requestsPerSecond: Double, fanOut: Int = 8, readSeconds: Double = 0.015, writesPerRequest: Int = 2,
            writeSeconds: Double = 0.001, agentWritesPerSecond: Double = 0, generationSeconds: Double = 3
        ) {
            self.requestsPerSecond = requestsPerSecond
            self.fanOut = fanOut
            self.readSeconds = readSeconds
            self.writesPerRequest = writesPerRequest
            self.writeSeconds = writeSeconds
            self.agentWritesPerSecond = agentWritesPerSecond
            self.generationSeconds = generationSeconds
        }
    }

    /// One component's share.
    public struct Component: Sendable, Hashable, Codable {
        /// `retrieval`, `write` or `generation hold`.
        public var name: String
        /// Connections busy on average (L = λW).
        public var average: Double
        /// Connections to size for: the average plus three times its square root, rounded up.
        public var peak: Int
        /// The arithmetic, in words.
        public var reasoning: String
    }

    /// The workload sized.
    public var workload: Workload
    /// Retrieval's connections.
    public var retrieval: Component
    /// Writes' connections.
    public var write: Component
    /// What holding a connection across the model call would take: the size three short
    /// windows save.
    public var generationHold: Component
    /// The recommended budget: retrieval and writes, with three short windows.
    public var budget: Int
    /// The budget a pool that holds connections across the model call would need.
    public var budgetHoldingAcrossGeneration: Int

    /// Sizes the pool for `workload`.
    public init(_ workload: Workload) {
        self.workload = workload
        func component(_ name: String, rate: Double, perArrival: Int, seconds: Double, what: String) -> Component {
            let average = rate * Double(perArrival) * seconds
            let peak = Int((average + 3 * average.squareRoot()).rounded(.up))
            let reasoning = "\(name): \(Figures.format(rate)) \(what)/s × \(perArrival) × \(Figures.format(seconds * 1_000)) ms = "
                + "\(Figures.format(average)) busy on average; for the burst, \(Figures.format(average)) + 3 × √\(Figures.format(average)) → \(peak)"
            return Component(name: name, average: average, peak: peak, reasoning: reasoning)
        }
        self.retrieval = component(
            "retrieval", rate: workload.requestsPerSecond, perArrival: workload.fanOut, seconds: workload.readSeconds, what: "requests")
        let writeRate = workload.requestsPerSecond * Double(workload.writesPerRequest) + workload.agentWritesPerSecond
        self.write = component("write", rate: writeRate, perArrival: 1, seconds: workload.writeSeconds, what: "writes")
        self.generationHold = component(
            "generation hold", rate: workload.requestsPerSecond, perArrival: 1, seconds: workload.generationSeconds, what: "requests")
        self.budget = max(1, self.retrieval.peak + self.write.peak)
        self.budgetHoldingAcrossGeneration = self.budget + self.generationHold.peak
    }

    /// The table and the reasoning, for a terminal.
    public var text: String {
        var lines = [
            "component         average   size for the burst",
            "retrieval         \(Self.pad(Figures.format(self.retrieval.average), 9)) \(self.retrieval.peak)",
            "write             \(Self.pad(Figures.format(self.write.average), 9)) \(self.write.peak)",
            "budget (three short windows): \(self.budget)",
            "",
        ]
        lines += [self.retrieval.reasoning, self.write.reasoning, self.generationHold.reasoning]
        lines.append(
            "Holding a connection across the model call would need \(self.budgetHoldingAcrossGeneration) connections, "
                + "\(self.generationHold.peak) of them waiting on the model: use three short windows instead.")
        return lines.joined(separator: "\n")
    }

    /// A Swift configuration with these sizes.
    public var swiftSnippet: String {
        """
        var configuration = try PostgresPool.Configuration(url: databaseURL)
        configuration.budget = \(self.budget)
        configuration.lanes = [
            .retrieval: LaneConfiguration(reserved: \(self.retrieval.peak)),
            .write: LaneConfiguration(reserved: \(self.write.peak)),
        ]
        """
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }
}
