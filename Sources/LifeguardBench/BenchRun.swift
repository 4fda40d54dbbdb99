import Foundation
import Histogram
import Lifeguard
import LifeguardLab
import PostgresNIO
import Synchronization

/// One pool's run of a scenario against the server: open-loop arrivals or a closed loop of
/// users, each request's steps as `pg_sleep` statements and sleeps, measured from the client.
/// The driver of `lifeguard bench` and of `overload-benchmark`.
public struct BenchRun: Sendable {
    /// The requests, their arrivals (open or closed loop), duration and seed.
    public let scenario: Scenario
    /// How the requests are written (which steps of each kind run).
    public let design: DesignKind
    /// The pool driven.
    public let target: any BenchTarget
    /// The name on the progress bar.
    public let label: String
    /// How long requests still running when arrivals end may take before they are cancelled
    /// and counted as `unfinished`: a pool that deadlocks (every connection held by a
    /// transaction waiting for another) would otherwise never end the run.
    public var drainLimit: Duration = .seconds(30)

    /// A run of `scenario`'s requests, written as `design`, through `target`.
    ///
    /// - Parameters:
    ///   - scenario: The requests and their arrivals.
    ///   - design: How the requests are written.
    ///   - target: The pool, running already.
    ///   - label: The name on the progress bar (standard error).
    public init(scenario: Scenario, design: DesignKind, target: any BenchTarget, label: String) {
        self.scenario = scenario
        self.design = design
        self.target = target
        self.label = label
    }

    /// What the requests saw, shared by them.
    final class Tally: Sendable {
        struct State {
            var waits: [String: Histogram<UInt64>] = [:]
            var endToEnd = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
            var completed = 0
            /// Completed before the arrivals ended.
            var completedInWindow = 0
            /// When the arrivals end.
            var windowEnds = ContinuousClock.now
            var failed: [String: Int] = [:]
            var cancelled = 0
            /// Leases cancelled while waiting for or holding a connection, counted alike for
            /// every pool (a request cancelled between leases cancels none).
            var cancelledLeases: UInt64 = 0
            var granted: UInt64 = 0
            var inUse = 0
            var levelSince = ContinuousClock.now
            var nanosecondsAtLevel: [UInt64] = []
            /// Set when the drain limit passed: what is cancelled then is `unfinished`.
            var drainExpired = false
        }
        let state = Mutex(State())

        func leaseBegan(lane: String, waited: Duration) {
            self.state.withLock { state in
                let microseconds = UInt64(max(0, BenchRun.seconds(waited) * 1e6))
                state.waits[lane, default: Histogram(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)]
                    .record(microseconds)
                state.granted += 1
                Self.account(&state)
                state.inUse += 1
            }
        }

        func leaseCancelled() {
            self.state.withLock { $0.cancelledLeases += 1 }
        }

        func leaseEnded() {
            self.state.withLock { state in
                Self.account(&state)
                state.inUse -= 1
            }
        }

        static func account(_ state: inout State) {
            let now = ContinuousClock.now
            while state.nanosecondsAtLevel.count <= state.inUse { state.nanosecondsAtLevel.append(0) }
            state.nanosecondsAtLevel[state.inUse] += UInt64(max(0, BenchRun.seconds(state.levelSince.duration(to: now)) * 1e9))
            state.levelSince = now
        }
    }

    /// `duration` in seconds.
    package static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Runs the requests, waits for them to end (within ``drainLimit``), and reports what the
    /// client saw, with the keys and columns of `lifeguard simulate`: goodput, waits per lane,
    /// end-to-end times, rejections (from the pool's statistics, when it keeps them),
    /// failures by cause, cancellations.
    public func run() async -> SimulationResult {
        let tally = Tally()
        let started = ContinuousClock.now
        let label = self.label
        let duration = self.scenario.duration
        let progress = Task {
            // A progress bar on standard error, once a second, until the run ends.
            while !Task.isCancelled {
                let done = min(1, Self.seconds(started.duration(to: .now)) / duration)
                let filled = Int(done * 30)
                let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
                FileHandle.standardError.write(Data("\rbench \(label): [\(bar)] \(Int(done * 100))%".utf8))
                try? await Task.sleep(for: .seconds(1))
            }
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        }
        let windowEnds = started.advanced(by: .nanoseconds(Int64(duration * 1e9)))
        tally.state.withLock { $0.windowEnds = windowEnds }
        let drainEnds = windowEnds + self.drainLimit
        await withTaskGroup(of: Void.self) { run in
            run.addTask {
                // Past the drain limit, what still runs is cancelled, counted as unfinished.
                try? await Task.sleep(until: drainEnds, clock: .continuous)
                guard !Task.isCancelled else { return }
                tally.state.withLock { $0.drainExpired = true }
            }
            run.addTask {
                if let loop = self.scenario.closedLoop {
                    await self.runClosedLoop(loop, started: started, tally: tally)
                } else {
                    await self.runOpenLoop(started: started, tally: tally)
                }
            }
            // The requests end first, or the drain limit: then the other is cancelled.
            await run.next()
            run.cancelAll()
        }
        progress.cancel()
        await progress.value
        return self.result(tally)
    }

    /// Poisson arrivals per kind, for the scenario's duration; each request a task of its own.
    func runOpenLoop(started: ContinuousClock.Instant, tally: Tally) async {
        let target = self.target
        let design = self.design
        await withTaskGroup(of: Void.self) { requests in
            for (index, kind) in self.scenario.kinds.enumerated() where kind.rate > 0 {
                let steps = kind.steps[design] ?? []
                let rate = kind.rate
                let duration = self.scenario.duration
                let cancelFraction = self.scenario.cancelFraction
                let seed = Self.seed(self.scenario.seed, kind: index)
                requests.addTask {
                    // One arrival process per kind, drawn in order from the scenario's seed:
                    // every pool run with the same seed gets the same requests at the same times.
                    var random = SplitMix64(seed: seed)
                    var next = 0.0
                    await withTaskGroup(of: Void.self) { arrivals in
                        while true {
                            next += -log(1 - random.nextUnitInterval()) / rate
                            guard next < duration else { break }
                            let drawn = Self.draw(steps, using: &random)
                            let cancelAfter = random.nextUnitInterval() < cancelFraction
                                ? random.nextUnitInterval() * Self.nominalLife(steps) : nil
                            try? await Task.sleep(until: started.advanced(by: .nanoseconds(Int64(next * 1e9))), clock: .continuous)
                            guard !Task.isCancelled else { break }
                            arrivals.addTask { await Self.perform(drawn, cancelAfter: cancelAfter, target: target, tally: tally) }
                        }
                    }
                }
            }
        }
    }

    /// A closed loop: each user issues a request (its kind drawn by the kinds' rates), waits for
    /// its end, thinks (at least ``Scenario/ClosedLoop/leastThink``, as in `simulate`), and asks again until the duration
    /// ends. Each user's draws come from its own stream of the scenario's seed.
    func runClosedLoop(_ loop: Scenario.ClosedLoop, started: ContinuousClock.Instant, tally: Tally) async {
        let target = self.target
        let scenario = self.scenario
        let steps = scenario.kinds.map { $0.steps[self.design] ?? [] }
        guard !steps.isEmpty else { return }
        let ends = started.advanced(by: .nanoseconds(Int64(self.scenario.duration * 1e9)))
        let cancelFraction = self.scenario.cancelFraction
        let seed = self.scenario.seed
        await withTaskGroup(of: Void.self) { users in
            for user in 0..<loop.users {
                users.addTask {
                    var random = SplitMix64(seed: Self.seed(seed, kind: 1_000 + user))
                    // The users start spread over one think time (at once when there is none).
                    try? await Task.sleep(for: .nanoseconds(Int64(random.nextUnitInterval() * loop.think.mean * 1e9)))
                    while ContinuousClock.now < ends, !Task.isCancelled {
                        let kind = steps[scenario.kindIndex(drawn: random.nextUnitInterval())]
                        let drawn = Self.draw(kind, using: &random)
                        let cancelAfter = random.nextUnitInterval() < cancelFraction
                            ? random.nextUnitInterval() * Self.nominalLife(kind) : nil
                        await Self.perform(drawn, cancelAfter: cancelAfter, target: target, tally: tally)
                        try? await Task.sleep(for: .nanoseconds(Int64(max(Scenario.ClosedLoop.leastThink, loop.think.sample(&random)) * 1e9)))
                    }
                }
            }
        }
    }

    func result(_ tally: Tally) -> SimulationResult {
        let statistics = self.target.statistics
        return tally.state.withLock { state in
            Tally.account(&state)
            var waits: [String: SimulationResult.Percentiles] = [:]
            func milliseconds(_ histogram: Histogram<UInt64>, _ percentile: Double) -> Double {
                Double(histogram.valueAtPercentile(percentile)) / 1_000
            }
            for (lane, histogram) in state.waits {
                let p50 = milliseconds(histogram, 50)
                let p99 = milliseconds(histogram, 99)
                let p999 = milliseconds(histogram, 99.9)
                waits[lane] = SimulationResult.Percentiles(p50: p50, p99: p99, p999: p999)
            }
            // Rejections from the pool's statistics (a pool without them rejects nothing by
            // policy); leases granted and cancelled as the bench counted them, for every pool.
            var outcomes = statistics.map { SimulationResult.Outcomes($0.outcomes, cancelledLeases: 0) } ?? .init()
            outcomes.granted = state.granted
            outcomes.cancelled = state.cancelledLeases
            let total = state.nanosecondsAtLevel.reduce(0, +)
            var cumulative: UInt64 = 0
            var p99Level = 0
            for (level, time) in state.nanosecondsAtLevel.enumerated() {
                cumulative += time
                if Double(cumulative) >= Double(total) * 0.99 {
                    p99Level = level
                    break
                }
            }
            let endToEnd = state.endToEnd
            func endToEndMilliseconds(_ percentile: Double) -> Double {
                endToEnd.totalCount == 0 ? 0 : milliseconds(endToEnd, percentile)
            }
            return SimulationResult(
                scenario: self.scenario.name, design: self.design,
                // As `simulate` counts it: requests completed while the arrivals ran, per second
                // of them. A pool whose queue grows without bound serves its backlog after the
                // arrivals end; those completions, seconds late, are not goodput.
                throughputPerSecond: Double(state.completedInWindow) / self.scenario.duration,
                waitMilliseconds: waits,
                endToEndMilliseconds: .init(p50: endToEndMilliseconds(50), p99: endToEndMilliseconds(99)),
                utilizationP99: Double(p99Level) / Double(self.target.leaseCapacity ?? self.scenario.budget),
                outcomes: outcomes, leaked: state.inUse, completed: state.completed, failedRequests: state.failed,
                cancelledRequests: state.cancelled)
        }
    }

    /// The seed of a request kind's arrival process: the scenario's seed, spread per kind.
    static func seed(_ seed: UInt64, kind: Int) -> UInt64 {
        seed &+ UInt64(kind + 1) &* 0x9E37_79B9_7F4A_7C15
    }

    /// A request's steps with every duration drawn.
    enum DrawnStep: Sendable, Equatable {
        case query(lane: Lane, seconds: [Double])
        case think(seconds: Double)
        case begin(lane: Lane)
        case onHeld(seconds: Double)
        case commit
    }

    /// Draws a request's durations, in step order.
    static func draw(_ steps: [Step], using random: inout SplitMix64) -> [DrawnStep] {
        steps.map { step in
            switch step {
            case .query(let lane, let count, let hold): .query(lane: lane, seconds: (0..<count).map { _ in hold.sample(&random) })
            case .think(let time): .think(seconds: time.sample(&random))
            case .begin(let lane): .begin(lane: lane)
            case .onHeld(let time): .onHeld(seconds: time.sample(&random))
            case .commit: .commit
            }
        }
    }

    /// The drawn-free length of a request's steps, for the moment of a cancellation.
    static func nominalLife(_ steps: [Step]) -> Double {
        steps.reduce(0) { total, step in
            switch step {
            case .query(_, _, let hold): total + hold.mean
            case .think(let time), .onHeld(let time): total + time.mean
            case .begin, .commit: total
            }
        }
    }

    /// Runs one request, cancelled after `cancelAfter` seconds if given; counts it as completed,
    /// failed (by error), cancelled, or `unfinished` when the drain limit cancelled it.
    static func perform(_ steps: [DrawnStep], cancelAfter: Double?, target: any BenchTarget, tally: Tally) async {
        let arrived = ContinuousClock.now
        let request = Task {
            try await Self.run(steps[...], target: target, tally: tally, held: nil)
        }
        let canceller = cancelAfter.map { seconds in
            Task {
                try await Task.sleep(for: .nanoseconds(Int64(seconds * 1e9)))
                request.cancel()
            }
        }
        let outcome = await withTaskCancellationHandler { await request.result } onCancel: { request.cancel() }
        canceller?.cancel()
        tally.state.withLock { state in
            switch outcome {
            case .success:
                state.completed += 1
                if ContinuousClock.now <= state.windowEnds { state.completedInWindow += 1 }
                _ = state.endToEnd.record(UInt64(Self.seconds(arrived.duration(to: .now)) * 1e6))
            case .failure where state.drainExpired:
                state.failed["unfinished", default: 0] += 1
            case .failure(let error) where error is CancellationError || request.isCancelled:
                state.cancelled += 1
            case .failure(let error):
                state.failed[(error as? LifeguardError)?.code.description ?? "\(type(of: error))", default: 0] += 1
            }
        }
    }

    /// Runs steps in order; `held` runs statements on the open transaction's connection.
    static func run(
        _ steps: ArraySlice<DrawnStep>, target: any BenchTarget, tally: Tally,
        held: (@Sendable (PostgresQuery) async throws -> Void)?
    ) async throws {
        var steps = steps
        while let step = steps.popFirst() {
            try Task.checkCancellation()
            switch step {
            case .think(let seconds):
                try await Task.sleep(for: .nanoseconds(Int64(seconds * 1e9)))
            case .onHeld(let seconds):
                try await held?(Self.sleep(seconds))
            case .query(let lane, let holds) where holds.count == 1:
                try await Self.lease(lane, target: target, tally: tally) { execute in try await execute(Self.sleep(holds[0])) }
            case .query(let lane, let holds):
                try await Self.fanOut(lane, holds: holds, target: target, tally: tally)
            case .begin(let lane):
                let rest = steps.prefix { $0 != .commit }
                steps = steps.dropFirst(rest.count + 1)
                try await Self.lease(lane, target: target, tally: tally) { execute in
                    try await execute("BEGIN")
                    try await Self.run(rest, target: target, tally: tally, held: execute)
                    try await execute("COMMIT")
                }
            case .commit:
                break
            }
        }
    }

    /// Runs `body` on a lease of `lane`, tallying its wait, its hold and its cancellation: a
    /// lease counts as cancelled when its task was cancelled by the time it ended, whether the
    /// pool stopped its statement or let it finish.
    static func lease(
        _ lane: Lane, target: any BenchTarget, tally: Tally,
        _ body: @Sendable (_ execute: @escaping @Sendable (PostgresQuery) async throws -> Void) async throws -> Void
    ) async throws {
        let asked = ContinuousClock.now
        do {
            try await target.withConnection(lane: lane) { execute in
                tally.leaseBegan(lane: lane.name, waited: asked.duration(to: .now))
                defer { tally.leaseEnded() }
                try await body(execute)
            }
        } catch {
            if error is CancellationError || Task.isCancelled { tally.leaseCancelled() }
            throw error
        }
        if Task.isCancelled { tally.leaseCancelled() }
    }

    /// Runs one `pg_sleep` per hold, in parallel, through the target's fan-out, tallying each
    /// lease's wait from the moment the request asked. When the fan-out fails, the leases it did
    /// not finish count as cancelled (its siblings are cancelled, waiting or holding), unless it
    /// was rejected whole before any lease began.
    static func fanOut(_ lane: Lane, holds: [Double], target: any BenchTarget, tally: Tally) async throws {
        let asked = ContinuousClock.now
        let counts = Mutex((began: 0, finished: 0))
        do {
            try await target.fanOut(lane: lane, count: holds.count) { index, execute in
                tally.leaseBegan(lane: lane.name, waited: asked.duration(to: .now))
                counts.withLock { $0.began += 1 }
                defer { tally.leaseEnded() }
                try await execute(Self.sleep(holds[index]))
                if !Task.isCancelled { counts.withLock { $0.finished += 1 } }
            }
        } catch {
            let (began, finished) = counts.withLock { ($0.began, $0.finished) }
            let rejectedWhole = began == 0 && !(error is CancellationError || Task.isCancelled)
            for _ in 0..<(rejectedWhole ? 0 : holds.count - finished) { tally.leaseCancelled() }
            throw error
        }
    }

    static func sleep(_ seconds: Double) -> PostgresQuery {
        "SELECT pg_sleep(\(seconds))"
    }
}
