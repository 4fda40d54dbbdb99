import Foundation
import Lifeguard

/// A duration drawn at random, in seconds.
public enum Distribution: Sendable, Hashable, CustomStringConvertible {
    /// Always the same.
    case constant(Double)
    /// Uniform between the two bounds.
    case uniform(Double, Double)
    /// Lognormal, given by its median and its 99th percentile (model calls: a long right tail).
    case lognormal(median: Double, p99: Double)

    package func sample(_ random: inout SplitMix64) -> Double {
        switch self {
        case .constant(let value):
            return value
        case .uniform(let low, let high):
            return low + (high - low) * random.nextUnitInterval()
        case .lognormal(let median, let p99):
            // Box–Muller for a standard normal; z(0.99) = 2.326.
            let sigma = (p99 / median).logarithm / 2.326
            let u1 = max(random.nextUnitInterval(), 1e-12)
            let u2 = random.nextUnitInterval()
            let normal = (-2 * u1.logarithm).squareRoot() * (2 * Double.pi * u2).cosine
            return median * (sigma * normal).exponential
        }
    }

    /// The mean, for sizing.
    public var mean: Double {
        switch self {
        case .constant(let value): value
        case .uniform(let low, let high): (low + high) / 2
        case .lognormal(let median, let p99): median * (((p99 / median).logarithm / 2.326).squared / 2).exponential
        }
    }

    public var description: String {
        switch self {
        case .constant(let value): "\(Self.milliseconds(value)) ms"
        case .uniform(let low, let high): "\(Self.milliseconds(low))–\(Self.milliseconds(high)) ms"
        case .lognormal(let median, let p99): "lognormal, median \(Self.milliseconds(median)) ms, p99 \(Self.milliseconds(p99)) ms"
        }
    }

    static func milliseconds(_ seconds: Double) -> String {
        let value = seconds * 1_000
        return value == value.rounded() ? "\(Int(value))" : "\((value * 10).rounded() / 10)"
    }
}

/// What one request does, step by step, in the logical lanes of the design that runs it.
public enum Step: Sendable, Hashable {
    /// `count` leases of `lane` at once (a fan-out when more than one), each held for `hold`.
    case query(lane: Lane, count: Int, hold: Distribution)
    /// Work with no connection: a model call or a tool call.
    case think(Distribution)
    /// Opens a transaction: a lease of `lane` held until ``commit``, across the steps between.
    case begin(lane: Lane)
    /// Work on the connection the open transaction holds.
    case onHeld(Distribution)
    /// Ends the open transaction and releases its connection.
    case commit
}

/// A kind of request and how often it arrives (open-loop, Poisson).
public struct RequestKind: Sendable, Hashable {
    /// Its name in reports, e.g. `rag` or `agent`.
    public var name: String
    /// Arrivals per second.
    public var rate: Double
    /// The steps, per design.
    public var steps: [DesignKind: [Step]]
}

/// The designs the simulator compares.
public enum DesignKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// One pool, one lane; the generation holds a connection in a transaction.
    case naive
    /// One pool, one lane; three short windows: no connection across the model call.
    case windows
    /// Lanes, three short windows, adaptive shedding and fan-outs.
    case lifeguard
}

/// A workload of DESIGN.md: kinds of requests, a budget, a duration, a fraction cancelled.
public struct Scenario: Sendable, Hashable {
    /// Its name: `retrieval-burst`, `generation-hold`, `agent-storm`, `cancel-storm` or `seed`.
    public var name: String
    /// The kinds of requests.
    public var kinds: [RequestKind]
    /// Connections the pool may open.
    public var budget: Int
    /// Simulated seconds of arrivals.
    public var duration: Double
    /// The fraction of requests cancelled at a uniformly random moment of their life.
    public var cancelFraction: Double
    /// Seeds every random draw: the same seed gives the same run.
    public var seed: UInt64
    /// A closed loop instead of Poisson arrivals: a fixed set of users, each issuing a request
    /// and only once it ended (served or rejected), after a think time, the next. `nil`: open
    /// loop, arrivals at the kinds' rates.
    public var closedLoop: ClosedLoop? = nil

    /// A fixed set of users who each wait for their answer before asking again: an HTTP
    /// server's concurrent requests, a team of agents. The kinds' rates weigh which kind a user
    /// issues next.
    public struct ClosedLoop: Sendable, Hashable {
        /// The least time between a request's end and the same user's next one: a rejection
        /// travels back to the caller and its next request comes in, about a millisecond
        /// through an HTTP server. Without it, callers rejected at once would ask again at no cost.
        public static let leastThink = 0.001

        /// How many users.
        public var users: Int
        /// The time between a request's end and the user's next request.
        public var think: Distribution

        /// Creates a closed loop.
        ///
        /// - Parameters:
        ///   - users: How many users.
        ///   - think: The time between one request's end and the next. Default: none.
        public init(users: Int, think: Distribution = .constant(0)) {
            self.users = users
            self.think = think
        }
    }

    /// Multiplies every arrival rate by `factor`.
    public func scaled(by factor: Double) -> Scenario {
        var scaled = self
        for index in scaled.kinds.indices { scaled.kinds[index].rate *= factor }
        return scaled
    }

    /// The scenarios' names.
    public static let names = ["retrieval-burst", "generation-hold", "agent-storm", "cancel-storm", "seed", "rag"]

    /// A scenario of DESIGN.md by name, with its default parameters; `nil` for an unknown name.
    public static func named(_ name: String) -> Scenario? {
        switch name {
        case "retrieval-burst":
            Scenario(name: name, kinds: [Self.retrievalBurst(rate: 60)], budget: 20, duration: 60, cancelFraction: 0, seed: 1)
        case "generation-hold":
            Scenario(name: name, kinds: [Self.rag(rate: 4, retrieval: false)], budget: 20, duration: 600, cancelFraction: 0, seed: 1)
        case "agent-storm":
            Scenario(name: name, kinds: [Self.agent(rate: 10)], budget: 20, duration: 120, cancelFraction: 0, seed: 1)
        case "cancel-storm":
            Scenario(
                name: name, kinds: [Self.retrievalBurst(rate: 40), Self.rag(rate: 2, retrieval: true)], budget: 20,
                duration: 120, cancelFraction: 0.3, seed: 1)
        case "seed":
            Scenario(
                name: name, kinds: [Self.rag(rate: 6, retrieval: true), Self.agent(rate: 2)], budget: 20, duration: 600,
                cancelFraction: 0.05, seed: 1)
        case "rag":
            // Issue 19's pipeline, sized for a closed loop (`--users`): the reads fan out 8 to
            // 12 ways, and a short model call keeps the pool busy enough to queue.
            Scenario(
                name: name, kinds: (8...12).map { Self.rag(rate: 6, reads: $0, model: Self.shortModelCall) }, budget: 20,
                duration: 60, cancelFraction: 0, seed: 1)
        default:
            nil
        }
    }

    /// The kinds' names in order, each once, with its total rate: kinds that share a name are
    /// one kind of request in reports.
    public var kindsByName: [(name: String, rate: Double)] {
        var merged: [(name: String, rate: Double)] = []
        for kind in self.kinds {
            if let index = merged.firstIndex(where: { $0.name == kind.name }) {
                merged[index].rate += kind.rate
            } else {
                merged.append((kind.name, kind.rate))
            }
        }
        return merged
    }

    /// The kind a closed loop's user issues next, for a uniform draw in [0, 1): kinds are
    /// weighed by their rates.
    package func kindIndex(drawn unit: Double) -> Int {
        let total = self.kinds.reduce(0) { $0 + max(0, $1.rate) }
        guard total > 0 else { return 0 }
        var draw = unit * total
        for (index, kind) in self.kinds.enumerated() {
            draw -= max(0, kind.rate)
            if draw < 0 { return index }
        }
        return self.kinds.count - 1
    }

    /// The lanes the requests of `design` use: `.retrieval` for reads, `.write` for the rest.
    public func lanesUsed(by design: DesignKind) -> Set<Lane> {
        var lanes = Set<Lane>()
        for kind in self.kinds {
            for step in kind.steps[design] ?? [] {
                switch step {
                case .query(let lane, _, _), .begin(let lane): lanes.insert(lane == .retrieval ? .retrieval : .write)
                case .think, .onHeld, .commit: break
                }
            }
        }
        return lanes
    }

    static let read = Distribution.constant(0.015)
    static let write = Distribution.constant(0.001)
    static let modelCall = Distribution.lognormal(median: 3, p99: 15)
    static let shortModelCall = Distribution.lognormal(median: 0.3, p99: 1.2)

    /// 8 parallel reads of 15 ms, issued at once.
    static func retrievalBurst(rate: Double) -> RequestKind {
        let steps: [Step] = [.query(lane: .retrieval, count: 8, hold: read)]
        return RequestKind(name: "retrieval-burst", rate: rate, steps: [.naive: steps, .windows: steps, .lifeguard: steps])
    }

    /// A RAG request: log it, (retrieve,) call the model, persist the answer. `naive` opens a
    /// transaction at the log and commits after the persist, across the model call.
    static func rag(rate: Double, retrieval: Bool) -> RequestKind {
        var kind = Self.rag(rate: rate, reads: retrieval ? 8 : 0, model: Self.modelCall)
        kind.name = retrieval ? "rag" : "generation"
        return kind
    }

    /// A RAG request of `reads` parallel reads and a model call of `model`. Kinds of one name
    /// are reported as one (the `rag` scenario's five fan-out widths).
    static func rag(rate: Double, reads: Int, model: Distribution) -> RequestKind {
        let retrieve: [Step] = reads > 0 ? [.query(lane: .retrieval, count: reads, hold: read)] : []
        let windows: [Step] = [.query(lane: .write, count: 1, hold: write)] + retrieve
            + [.think(model), .query(lane: .write, count: 1, hold: write)]
        let naive: [Step] = [.begin(lane: .write), .onHeld(write)] + retrieve + [.think(model), .onHeld(write), .commit]
        return RequestKind(name: "rag", rate: rate, steps: [.naive: naive, .windows: windows, .lifeguard: windows])
    }

    /// An agent of 8 steps: a tool call of 200–800 ms, then 2 small writes.
    static func agent(rate: Double) -> RequestKind {
        let step: [Step] = [.think(.uniform(0.2, 0.8)), .query(lane: .write, count: 1, hold: write), .query(lane: .write, count: 1, hold: write)]
        let steps = Array(repeating: step, count: 8).flatMap { $0 }
        return RequestKind(name: "agent", rate: rate, steps: [.naive: steps, .windows: steps, .lifeguard: steps])
    }
}

extension Double {
    var logarithm: Double { Foundation.log(self) }
    var exponential: Double { Foundation.exp(self) }
    var cosine: Double { Foundation.cos(self) }
    var squared: Double { self * self }
}
