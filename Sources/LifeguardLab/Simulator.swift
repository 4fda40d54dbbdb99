import HeapModule
import Histogram
import Lifeguard

/// A discrete-event simulation of a scenario under one design, on the real `PoolStateMachine`
/// with a virtual clock: the same policy code as production, no threads, no sleeps, and the
/// same result for the same seed.
///
/// Connections open in 5 ms, resets take 1 ms; a lease holds its connection for the step's
/// drawn hold time. Requests arrive open-loop (Poisson), so a slow pool cannot hide its queue,
/// or from a closed loop of users (``Scenario/ClosedLoop``), as an HTTP server's requests do.
public struct Simulator {
    /// The pool configuration a design runs with, for a budget.
    ///
    /// - Parameter lanesUsed: The lanes the scenario's requests use (`nil`: reads and writes).
    ///   `lifeguard` configures those only, with Lifeguard's default lane settings and no
    ///   reservation: reserving 2 of 20 connections for writes of 1 ms took a tenth of the
    ///   reads' capacity (`rag`, 40 users: read wait p99 114 ms against 61 ms without).
    public static func configuration(for design: DesignKind, budget: Int, duration: Double, lanesUsed: Set<Lane>? = nil) -> PoolConfiguration {
        var configuration = PoolConfiguration(budget: budget)
        switch design {
        case .naive, .windows:
            // One lane for everything, waits as long as a typical pool lets them (30 s).
            configuration.lanes = [Self.sharedLane: LaneConfiguration(waitTimeout: .seconds(30), maxWaiters: 100_000, shedding: nil)]
        case .lifeguard:
            let used = lanesUsed ?? [.retrieval, .write]
            var lanes: [Lane: LaneConfiguration] = [:]
            if used.contains(.retrieval) { lanes[.retrieval] = LaneConfiguration() }
            if !used.subtracting([.retrieval]).isEmpty || lanes.isEmpty {
                lanes[.write] = LaneConfiguration()
            }
            configuration.lanes = lanes
        }
        configuration.idleTimeout = nil
        configuration.maxLifetime = nil
        configuration.keepaliveInterval = nil
        configuration.validationThreshold = nil
        configuration.statisticsWindow = .seconds(max(1, Int(duration.rounded(.up)) + 60))
        return configuration
    }

    /// The lane of the single-lane designs.
    public static let sharedLane = Lane("all")

    static let connectNanoseconds: Int64 = 5_000_000
    static let resetNanoseconds: Int64 = 1_000_000

    enum Event {
        case arrival(kind: Int)
        case connected(slot: Int)
        case resetDone(slot: Int)
        case closed(slot: Int)
        case pinged(slot: Int)
        /// The machine's timer fires (unless it was cancelled since).
        case tick(TimerID)
        case holdDone(request: Int, lease: Int)
        case thinkDone(request: Int)
        case cancel(request: Int)
        /// A user of a closed loop issues its next request.
        case userReady
    }

    struct Scheduled: Comparable {
        let time: Int64
        let sequence: Int
        let event: Event
        static func < (lhs: Self, rhs: Self) -> Bool { (lhs.time, lhs.sequence) < (rhs.time, rhs.sequence) }
        static func == (lhs: Self, rhs: Self) -> Bool { (lhs.time, lhs.sequence) == (rhs.time, rhs.sequence) }
    }

    /// One lease a request waits for or holds.
    struct LeaseState {
        var waiter: WaiterID?
        var grant: Grant?
        var hold: Int64
        var lane: Int
        var done = false
    }

    struct RequestState {
        let kind: Int
        let arrivedAt: Int64
        var steps: ArraySlice<Step>
        var durations: [Int64]
        var leases: [Int: LeaseState] = [:]
        var nextLease = 0
        var pendingLeases = 0
        var held: Grant?
        var heldLane: Int?
        var cancelled = false
        var finished = false
    }

    let scenario: Scenario
    let design: DesignKind
    var machine: PoolStateMachine
    var random: SplitMix64
    var now: Int64 = 0
    var events = Heap<Scheduled>()
    var sequence = 0
    var requests: [Int: RequestState] = [:]
    var nextRequest = 0
    var waiterOwners: [WaiterID: (request: Int, lease: Int)] = [:]
    /// The most requests in flight at once (a closed loop never has more than its users).
    var mostInFlight = 0
    /// Timers the machine cancelled whose tick is still on the event queue.
    var cancelledTimers: Set<TimerID> = []
    var endToEnd = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .two)
    var completed = 0
    /// Completed before the arrivals ended: what a request completed seconds late in the drain
    /// after them is not.
    var completedInWindow = 0
    var failed: [String: Int] = [:]
    var cancelled = 0
    let laneMap: [Lane: Int]

    /// Prepares a run of `scenario` under `design`.
    public init(scenario: Scenario, design: DesignKind) {
        self.scenario = scenario
        self.design = design
        let configuration = Self.configuration(
            for: design, budget: scenario.budget, duration: scenario.duration, lanesUsed: scenario.lanesUsed(by: design))
        self.machine = PoolStateMachine(configuration: configuration, seed: scenario.seed, now: PoolInstant(nanoseconds: 0))
        self.random = SplitMix64(seed: scenario.seed &* 0x9E37_79B9 &+ 7)
        var laneMap: [Lane: Int] = [:]
        for lane in [Lane.retrieval, .write, .generation, Self.sharedLane] {
            let target = design == .lifeguard ? lane : Self.sharedLane
            if let index = self.machine.laneIndex(of: target) ?? self.machine.laneIndex(of: .write) {
                laneMap[lane] = index
            }
        }
        self.laneMap = laneMap
    }

    /// Runs the scenario to its end: arrivals for `duration`, then until every request ended.
    ///
    /// - Parameter progress: Called about every simulated second with the fraction done.
    public mutating func run(progress: ((Double) -> Void)? = nil) -> SimulationResult {
        if let loop = self.scenario.closedLoop {
            // The users start spread over one think time (at once when there is none).
            let spread = loop.think.mean
            for _ in 0..<max(0, loop.users) {
                self.schedule(.userReady, at: Int64(self.random.nextUnitInterval() * spread * 1e9))
            }
        } else {
            for kind in self.scenario.kinds.indices {
                self.scheduleArrival(kind: kind)
            }
        }
        let end = Int64(self.scenario.duration * 1e9)
        var lastProgress: Int64 = 0
        while let next = self.events.popMin() {
            self.now = next.time
            if let progress, self.now - lastProgress >= 1_000_000_000 {
                lastProgress = self.now
                progress(min(1, Double(self.now) / Double(end)))
            }
            self.handle(next.event, end: end)
            if self.now > end && self.requests.isEmpty { break }
        }
        return self.result()
    }

    // MARK: - Events

    mutating func schedule(_ event: Event, at time: Int64) {
        self.sequence += 1
        self.events.insert(Scheduled(time: time, sequence: self.sequence, event: event))
    }

    mutating func scheduleArrival(kind: Int) {
        let rate = self.scenario.kinds[kind].rate
        guard rate > 0 else { return }
        let gap = -(1 - self.random.nextUnitInterval()).logarithm / rate
        self.schedule(.arrival(kind: kind), at: self.now + Int64(gap * 1e9))
    }

    mutating func handle(_ event: Event, end: Int64) {
        let instant = PoolInstant(nanoseconds: self.now)
        switch event {
        case .arrival(let kind):
            guard self.now <= end else { return }
            self.arrive(kind: kind)
            self.scheduleArrival(kind: kind)
        case .connected(let slot):
            self.apply(self.machine.connectionEstablished(slot: slot, now: instant))
        case .resetDone(let slot):
            self.apply(self.machine.resetCompleted(slot: slot, succeeded: true, now: instant))
        case .closed(let slot):
            self.apply(self.machine.connectionClosed(slot: slot, now: instant))
        case .pinged(let slot):
            self.apply(self.machine.pingCompleted(slot: slot, succeeded: true, now: instant))
        case .tick(let timer):
            // A timer superseded by a sooner one was cancelled, as the pool's shell cancels it.
            guard self.cancelledTimers.remove(timer) == nil else { return }
            self.apply(self.machine.tick(timer: timer, now: instant))
        case .holdDone(let request, let lease):
            self.holdDone(request: request, lease: lease)
        case .thinkDone(let request):
            guard self.requests[request].map({ !$0.cancelled }) ?? false else { return }
            self.advance(request)
        case .cancel(let request):
            self.cancel(request)
        case .userReady:
            guard self.now <= end else { return }
            self.arrive(kind: self.nextKindOfUser())
        }
    }

    /// The kind a closed loop's user issues next, drawn by the kinds' rates.
    mutating func nextKindOfUser() -> Int {
        self.scenario.kindIndex(drawn: self.random.nextUnitInterval())
    }

    /// In a closed loop, a request ended (served, rejected or cancelled): its user asks again
    /// after a think time.
    mutating func userIsFree() {
        guard let loop = self.scenario.closedLoop else { return }
        self.schedule(.userReady, at: self.now + Int64(max(Scenario.ClosedLoop.leastThink, loop.think.sample(&self.random)) * 1e9))
    }

    /// Carries out what the machine asked for, on the virtual clock.
    mutating func apply(_ actions: PoolActions) {
        for slot in actions.connect { self.schedule(.connected(slot: slot), at: self.now + Self.connectNanoseconds) }
        for slot in actions.reset { self.schedule(.resetDone(slot: slot), at: self.now + Self.resetNanoseconds) }
        for slot in actions.close { self.schedule(.closed(slot: slot), at: self.now + Self.resetNanoseconds) }
        for slot in actions.ping { self.schedule(.pinged(slot: slot), at: self.now + Self.resetNanoseconds) }
        if let cancelled = actions.cancelledTimer { self.cancelledTimers.insert(cancelled) }
        if let timer = actions.timer { self.schedule(.tick(timer.id), at: max(self.now, timer.instant.nanoseconds)) }
        for granted in actions.grants {
            guard let owner = self.waiterOwners.removeValue(forKey: granted.waiter) else { continue }
            self.granted(granted.grant, request: owner.request, lease: owner.lease)
        }
        for failure in actions.failures {
            guard let owner = self.waiterOwners.removeValue(forKey: failure.waiter) else { continue }
            self.fail(owner.request, because: failure.error.code.description)
        }
        for id in actions.cancelled { self.waiterOwners.removeValue(forKey: id) }
    }

    // MARK: - Requests

    mutating func arrive(kind: Int) {
        let steps = self.scenario.kinds[kind].steps[self.design] ?? []
        var durations: [Int64] = []
        for step in steps {
            switch step {
            case .query(_, _, let hold): durations.append(Int64(hold.sample(&self.random) * 1e9))
            case .think(let time), .onHeld(let time): durations.append(Int64(time.sample(&self.random) * 1e9))
            case .begin, .commit: durations.append(0)
            }
        }
        let id = self.nextRequest
        self.nextRequest += 1
        self.requests[id] = RequestState(kind: kind, arrivedAt: self.now, steps: steps[...], durations: durations)
        self.mostInFlight = max(self.mostInFlight, self.requests.count)
        if self.random.nextUnitInterval() < self.scenario.cancelFraction {
            // A uniformly random moment of its life, as drawn (waits come on top).
            let life = durations.reduce(0, +)
            self.schedule(.cancel(request: id), at: self.now + Int64(self.random.nextUnitInterval() * Double(life)))
        }
        self.advance(id)
    }

    /// Starts the request's next step, or finishes it.
    mutating func advance(_ id: Int) {
        guard var request = self.requests[id], !request.cancelled else { return }
        guard let step = request.steps.first else {
            self.finish(id, request)
            return
        }
        let stepIndex = request.durations.count - request.steps.count
        let duration = request.durations[stepIndex]
        request.steps.removeFirst()
        self.requests[id] = request
        switch step {
        case .think, .onHeld:
            self.schedule(.thinkDone(request: id), at: self.now + duration)
        case .begin(let lane):
            self.requests[id]?.heldLane = self.laneMap[lane]
            self.lease(request: id, lane: lane, count: 1, hold: -1)
        case .commit:
            if let held = request.held {
                self.requests[id]?.held = nil
                self.apply(self.machine.release(held, disposition: .reuse, now: PoolInstant(nanoseconds: self.now)).actions)
            }
            self.advance(id)
        case .query(let lane, let count, _):
            self.lease(request: id, lane: lane, count: count, hold: duration)
        }
    }

    /// Asks for `count` leases of `lane` (a fan-out when more than one); `hold` < 0 keeps the
    /// connection as the request's open transaction.
    mutating func lease(request id: Int, lane: Lane, count: Int, hold: Int64) {
        guard let laneIndex = self.laneMap[lane] else { return }
        let instant = PoolInstant(nanoseconds: self.now)
        let fansOut = count > 1 && self.design == .lifeguard
        if fansOut, let rejection = self.machine.admitFanOut(lane: laneIndex, leases: count, deadline: nil, now: instant) {
            self.fail(id, because: rejection.code.description)
            return
        }
        self.requests[id]?.pendingLeases = count
        for _ in 0..<count {
            guard self.requests[id].map({ !$0.cancelled && !$0.finished }) ?? false else { return }
            let token = self.requests[id]!.nextLease
            self.requests[id]!.nextLease += 1
            self.requests[id]!.leases[token] = LeaseState(hold: hold, lane: laneIndex)
            switch self.machine.lease(lane: laneIndex, now: instant, admittedWhole: fansOut) {
            case .granted(let grant):
                self.granted(grant, request: id, lease: token)
            case .wait(let waiter, let actions):
                self.requests[id]!.leases[token]?.waiter = waiter
                self.waiterOwners[waiter] = (id, token)
                self.apply(actions)
            case .failed(let error):
                self.fail(id, because: error.code.description)
                return
            }
        }
    }

    mutating func granted(_ grant: Grant, request id: Int, lease token: Int) {
        guard let request = self.requests[id], !request.cancelled, !request.finished, let lease = request.leases[token] else {
            // The request ended meanwhile: the connection goes straight back.
            self.apply(self.machine.release(grant, disposition: .reuse, now: PoolInstant(nanoseconds: self.now)).actions)
            return
        }
        self.requests[id]!.leases[token]?.grant = grant
        self.requests[id]!.leases[token]?.waiter = nil
        if lease.hold < 0 {
            self.requests[id]!.held = grant
            self.requests[id]!.leases[token] = nil
            self.advance(id)
        } else {
            self.schedule(.holdDone(request: id, lease: token), at: self.now + lease.hold)
        }
    }

    mutating func holdDone(request id: Int, lease token: Int) {
        guard let lease = self.requests[id]?.leases.removeValue(forKey: token), let grant = lease.grant else { return }
        self.apply(self.machine.release(grant, disposition: .reuse, now: PoolInstant(nanoseconds: self.now)).actions)
        guard self.requests[id] != nil else { return }
        self.requests[id]!.pendingLeases -= 1
        if self.requests[id]!.pendingLeases == 0 {
            self.advance(id)
        }
    }

    /// Ends a request that failed: what it waits for is withdrawn, what it holds is reset.
    mutating func fail(_ id: Int, because reason: String) {
        guard self.requests[id] != nil else { return }
        self.failed[reason, default: 0] += 1
        self.abandon(id, cancelled: false)
    }

    mutating func cancel(_ id: Int) {
        guard let request = self.requests[id], !request.finished else { return }
        self.cancelled += 1
        self.abandon(id, cancelled: true)
    }

    mutating func abandon(_ id: Int, cancelled: Bool) {
        guard var request = self.requests.removeValue(forKey: id) else { return }
        self.userIsFree()
        request.cancelled = true
        let instant = PoolInstant(nanoseconds: self.now)
        // In the order they were leased: a dictionary's order changes with each process's hash
        // seed, and the order of the releases decides which waiter gets which connection.
        for token in request.leases.keys.sorted() {
            let lease = request.leases[token]!
            if let waiter = lease.waiter {
                self.waiterOwners.removeValue(forKey: waiter)
                self.apply(self.machine.cancelWaiter(waiter, lane: lease.lane, now: instant))
            } else if let grant = lease.grant {
                self.apply(self.machine.release(grant, disposition: .reset, now: instant, cancelled: cancelled).actions)
            }
        }
        if let held = request.held {
            self.apply(self.machine.release(held, disposition: .reset, now: instant, cancelled: cancelled).actions)
        }
    }

    mutating func finish(_ id: Int, _ request: RequestState) {
        self.requests.removeValue(forKey: id)
        self.userIsFree()
        self.completed += 1
        if self.now <= Int64(self.scenario.duration * 1e9) { self.completedInWindow += 1 }
        _ = self.endToEnd.record(UInt64(max(0, self.now - request.arrivedAt) / 1_000))
    }

    // MARK: - Result

    func result() -> SimulationResult {
        let statistics = self.machine.statisticsSnapshot(now: PoolInstant(nanoseconds: self.now))
        var waits: [String: SimulationResult.Percentiles] = [:]
        for lane in statistics.lanes {
            waits[lane.lane] = .init(p50: lane.wait.p50, p99: lane.wait.p99, p999: lane.wait.p999)
        }
        let outcomes = SimulationResult.Outcomes(
            statistics.outcomes, cancelledLeases: statistics.lanes.reduce(0) { $0 + $1.cancelledLeases })
        func milliseconds(_ percentile: Double) -> Double {
            self.endToEnd.totalCount == 0 ? 0 : Double(self.endToEnd.valueAtPercentile(percentile)) / 1_000
        }
        return SimulationResult(
            scenario: self.scenario.name,
            design: self.design,
            throughputPerSecond: Double(self.completedInWindow) / self.scenario.duration,
            waitMilliseconds: waits,
            endToEndMilliseconds: .init(p50: milliseconds(50), p99: milliseconds(99)),
            utilizationP99: statistics.utilizationP99,
            outcomes: outcomes,
            leaked: self.machine.status.leased,
            completed: self.completed,
            failedRequests: self.failed,
            cancelledRequests: self.cancelled)
    }
}
