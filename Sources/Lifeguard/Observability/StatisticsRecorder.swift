import Histogram

/// Records what the state machine decides, under the pool's own lock: no lock or allocation of
/// its own on the lease path.
///
/// Waits and holds go into HdrHistograms (microseconds, two significant digits, up to an hour:
/// about 25 KB each). In-use counts are time-weighted exactly: the time spent at each level is
/// added up in an array indexed by level. Statistics cover two rotating windows: the current
/// one and the one before, so a snapshot always spans between one and two window lengths.
struct StatisticsRecorder {
    typealias Instant = PoolInstant

    static let highestTrackableMicroseconds: UInt64 = 3_600_000_000

    enum CloseReason {
        case idle, expired, broken, resetFailed, shutdown
    }

    struct LaneWindow {
        /// Waits of requests that had to queue; those granted at once are ``immediateGrants``.
        var waits = StatisticsRecorder.makeHistogram()
        /// Requests granted at once (a wait of zero), kept apart from `waits` because counting
        /// is cheaper than recording on the lease path.
        var immediateGrants: UInt64 = 0
        var holds = StatisticsRecorder.makeHistogram()
        var outcomes = PoolStatistics.Outcomes()
        var arrivals: UInt64 = 0
        var cancelledLeases: UInt64 = 0
        var longHolds: UInt64 = 0
        var generationHolds: UInt64 = 0
        /// Nanoseconds spent with each number of this lane's connections leased.
        var nanosecondsAtLevel: [UInt64]

        /// Every wait, the immediate grants (zero) included.
        var allWaits: Histogram<UInt64> {
            var all = self.waits
            if self.immediateGrants > 0 { all.record(0, count: self.immediateGrants) }
            return all
        }
    }

    struct Window {
        var start: Instant
        var lanes: [LaneWindow]
        /// Nanoseconds spent with each number of connections leased, over all lanes.
        var nanosecondsAtLevel: [UInt64]
        var connections = PoolStatistics.ConnectionCounts()

        init(start: Instant, laneLimits: [Int], budget: Int) {
            self.start = start
            self.lanes = laneLimits.map { LaneWindow(nanosecondsAtLevel: Array(repeating: 0, count: $0 + 1)) }
            self.nanosecondsAtLevel = Array(repeating: 0, count: budget + 1)
        }
    }

    let windowLength: Duration
    let laneLimits: [Int]
    let budget: Int
    var current: Window
    var previous: Window?
    /// The most recent watchdog findings, newest last, at most ``findingsKept``.
    var findings: [WatchdogFinding] = []
    static let findingsKept = 32
    /// The most recent incidents, newest last, at most ``findingsKept``.
    var incidents: [Incident] = []

    mutating func record(_ incident: Incident) {
        self.incidents.append(incident)
        if self.incidents.count > Self.findingsKept {
            self.incidents.removeFirst(self.incidents.count - Self.findingsKept)
        }
    }
    /// When the in-use levels last changed (or were last accounted for).
    var levelsSince: Instant

    init(laneLimits: [Int], budget: Int, windowLength: Duration, now: Instant) {
        self.windowLength = windowLength
        self.laneLimits = laneLimits
        self.budget = budget
        self.current = Window(start: now, laneLimits: laneLimits, budget: budget)
        self.levelsSince = now
    }

    static func makeHistogram() -> Histogram<UInt64> {
        Histogram(highestTrackableValue: Self.highestTrackableMicroseconds, numberOfSignificantValueDigits: .two)
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        return UInt64(seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
    }

    static func record(nanoseconds: Int64, in histogram: inout Histogram<UInt64>) {
        histogram.record(min(UInt64(max(0, nanoseconds)) / 1_000, Self.highestTrackableMicroseconds))
    }

    /// Adds the time since the last change to the current levels; call before a level changes.
    mutating func accountLevels(total: Int, lanes: [Int], now: Instant) {
        let elapsed = UInt64(max(0, self.levelsSince.nanoseconds(to: now)))
        self.levelsSince = now
        guard elapsed > 0 else { return }
        self.current.nanosecondsAtLevel[total] &+= elapsed
        for lane in lanes.indices {
            self.current.lanes[lane].nanosecondsAtLevel[lanes[lane]] &+= elapsed
        }
    }

    mutating func record(_ finding: WatchdogFinding, lane: Int) {
        switch finding.kind {
        case .longHold: self.current.lanes[lane].longHolds += 1
        case .generationHold: self.current.lanes[lane].generationHolds += 1
        }
        self.findings.append(finding)
        if self.findings.count > Self.findingsKept {
            self.findings.removeFirst(self.findings.count - Self.findingsKept)
        }
    }

    mutating func recordClose(_ reason: CloseReason) {
        switch reason {
        case .idle: self.current.connections.closedIdle += 1
        case .expired: self.current.connections.closedExpired += 1
        case .broken: self.current.connections.closedBroken += 1
        case .resetFailed: self.current.connections.closedResetFailed += 1
        case .shutdown: self.current.connections.closedShutdown += 1
        }
    }

    /// Whether the current window is full.
    func isRotationDue(now: Instant) -> Bool {
        self.current.start.duration(to: now) >= self.windowLength
    }

    /// Starts a new window; the levels must be accounted up to `now` first.
    mutating func rotate(now: Instant) {
        self.previous = self.current
        self.current = Window(start: now, laneLimits: self.laneLimits, budget: self.budget)
    }

    /// The statistics of both windows, with the levels accounted up to `now`.
    func snapshot(laneNames: [String], total: Int, lanes: [Int], capacity: Int, now: Instant) -> PoolStatistics {
        var recorder = self
        recorder.accountLevels(total: total, lanes: lanes, now: now)
        let windows = [recorder.previous, recorder.current].compactMap { $0 }
        let start = windows[0].start
        let seconds = max(Double(Self.nanoseconds(start.duration(to: now))) / 1e9, 1e-9)

        var allWaits = Self.makeHistogram()
        var allHolds = Self.makeHistogram()
        var allOutcomes = PoolStatistics.Outcomes()
        var laneStatistics: [PoolStatistics.LaneStatistics] = []
        for lane in laneNames.indices {
            var waits = Self.makeHistogram()
            var holds = Self.makeHistogram()
            var outcomes = PoolStatistics.Outcomes()
            var arrivals: UInt64 = 0
            var cancelledLeases: UInt64 = 0
            var longHolds: UInt64 = 0
            var generationHolds: UInt64 = 0
            var levels = Array(repeating: UInt64(0), count: self.laneLimits[lane] + 1)
            for window in windows {
                let laneWindow = window.lanes[lane]
                waits.add(laneWindow.allWaits)
                holds.add(laneWindow.holds)
                outcomes.add(laneWindow.outcomes)
                arrivals += laneWindow.arrivals
                cancelledLeases += laneWindow.cancelledLeases
                longHolds += laneWindow.longHolds
                generationHolds += laneWindow.generationHolds
                for level in levels.indices { levels[level] &+= laneWindow.nanosecondsAtLevel[level] }
            }
            allWaits.add(waits)
            allHolds.add(holds)
            allOutcomes.add(outcomes)
            laneStatistics.append(PoolStatistics.LaneStatistics(
                lane: laneNames[lane],
                wait: Self.distribution(waits),
                hold: Self.distribution(holds),
                outcomes: outcomes,
                arrivalsPerSecond: Double(arrivals) / seconds,
                inUse: Self.occupancy(levels, now: lanes[lane]),
                cancelledLeases: cancelledLeases,
                longHolds: longHolds,
                generationHolds: generationHolds))
        }
        var levels = Array(repeating: UInt64(0), count: self.budget + 1)
        var connections = PoolStatistics.ConnectionCounts()
        for window in windows {
            for level in levels.indices { levels[level] &+= window.nanosecondsAtLevel[level] }
            connections.add(window.connections)
        }
        let inUse = Self.occupancy(levels, now: total)
        return PoolStatistics(
            windowSeconds: seconds,
            budget: self.budget,
            capacity: capacity,
            lanes: laneStatistics,
            wait: Self.distribution(allWaits),
            hold: Self.distribution(allHolds),
            outcomes: allOutcomes,
            inUse: inUse,
            utilizationP50: Double(Self.level(atFraction: 0.5, of: levels)) / Double(self.budget),
            utilizationP99: Double(Self.level(atFraction: 0.99, of: levels)) / Double(self.budget),
            connections: connections,
            findings: self.findings,
            incidents: self.incidents)
    }

    static func distribution(_ histogram: Histogram<UInt64>) -> PoolStatistics.Distribution {
        guard histogram.totalCount > 0 else {
            return .init(count: 0, p50: 0, p99: 0, p999: 0, max: 0, mean: 0)
        }
        func milliseconds(_ microseconds: UInt64) -> Double { Double(microseconds) / 1_000 }
        return .init(
            count: histogram.totalCount,
            p50: milliseconds(histogram.valueAtPercentile(50)),
            p99: milliseconds(histogram.valueAtPercentile(99)),
            p999: milliseconds(histogram.valueAtPercentile(99.9)),
            max: milliseconds(histogram.max),
            mean: histogram.mean / 1_000)
    }

    /// The time-weighted distribution of a level; its maximum is the highest level at which
    /// any time was spent.
    static func occupancy(_ levels: [UInt64], now: Int) -> PoolStatistics.Occupancy {
        let highest = levels.lastIndex { $0 > 0 } ?? 0
        return .init(now: now, p50: Self.level(atFraction: 0.5, of: levels), p99: Self.level(atFraction: 0.99, of: levels), max: Swift.max(highest, now))
    }

    /// The smallest level at or below which `fraction` of the time was spent.
    static func level(atFraction fraction: Double, of levels: [UInt64]) -> Int {
        let total = levels.reduce(0, &+)
        guard total > 0 else { return 0 }
        let target = Double(total) * fraction
        var cumulative: UInt64 = 0
        for (level, time) in levels.enumerated() {
            cumulative &+= time
            if Double(cumulative) >= target { return level }
        }
        return levels.count - 1
    }
}

extension PoolStatistics.Outcomes {
    mutating func add(_ other: Self) {
        self.granted += other.granted
        self.timeout += other.timeout
        self.overloaded += other.overloaded
        self.shed += other.shed
        self.cancelled += other.cancelled
        self.unavailable += other.unavailable
        self.shutdown += other.shutdown
    }
}

extension PoolStatistics.ConnectionCounts {
    mutating func add(_ other: Self) {
        self.opened += other.opened
        self.connectFailures += other.connectFailures
        self.closedIdle += other.closedIdle
        self.closedExpired += other.closedExpired
        self.closedBroken += other.closedBroken
        self.closedResetFailed += other.closedResetFailed
        self.closedShutdown += other.closedShutdown
    }
}
