import Histogram

/// Counts what the state machine observes (``PoolEvent``s, through ``record(_:)``) and the
/// shell's incidents, under the pool's own lock: no lock or allocation of its own on the lease
/// path.
///
/// What a lease changes is kept in one flat array of counters per window (see ``Layout``), so
/// that a lease's start or end writes five entries behind one uniqueness check:
/// - Waits and holds are counted in ``LatencyBuckets`` (microseconds, the buckets of an
///   HdrHistogram with two significant digits, up to an hour: 26 KB per histogram), and become
///   HdrHistograms when a snapshot is taken.
/// - In-use counts are time-weighted exactly, for the pool and for each lane, as stamps per
///   level: entering a level at `t` subtracts `t` from its entry, leaving it at `t` adds `t`.
///   The time spent at a level is then its entry, plus `now` for the level it is at now
///   (wrapping arithmetic), and a change of level costs two writes and no clock arithmetic.
///
/// Statistics cover two rotating windows: the current one and the one before, so a snapshot
/// always spans between one and two window lengths.
struct StatisticsRecorder {
    typealias Instant = PoolInstant

    /// Where each statistic lives in ``Window/counters``: the pool's level stamps
    /// (`0...budget`), each lane's level stamps (`0...limit`), then each lane's wait buckets
    /// (immediate grants count as zero) and hold buckets.
    struct Layout {
        let budget: Int
        let laneLimits: [Int]
        let laneLevelStarts: [Int]
        let latencyStart: Int
        let count: Int

        init(budget: Int, laneLimits: [Int]) {
            self.budget = budget
            self.laneLimits = laneLimits
            var starts: [Int] = []
            var next = budget + 1
            for limit in laneLimits {
                starts.append(next)
                next += limit + 1
            }
            self.laneLevelStarts = starts
            self.latencyStart = next
            self.count = next + 2 * laneLimits.count * LatencyBuckets.count
        }

        var poolLevels: Range<Int> { 0..<(self.budget + 1) }

        func levels(ofLane lane: Int) -> Range<Int> {
            self.laneLevelStarts[lane]..<(self.laneLevelStarts[lane] + self.laneLimits[lane] + 1)
        }

        @inline(__always)
        func waitBucketsStart(ofLane lane: Int) -> Int {
            self.latencyStart &+ 2 &* lane &* LatencyBuckets.count
        }

        @inline(__always)
        func holdBucketsStart(ofLane lane: Int) -> Int {
            self.waitBucketsStart(ofLane: lane) &+ LatencyBuckets.count
        }

        func waitBuckets(ofLane lane: Int) -> Range<Int> {
            let start = self.waitBucketsStart(ofLane: lane)
            return start..<(start + LatencyBuckets.count)
        }

        func holdBuckets(ofLane lane: Int) -> Range<Int> {
            let start = self.holdBucketsStart(ofLane: lane)
            return start..<(start + LatencyBuckets.count)
        }
    }

    struct LaneWindow {
        var outcomes = PoolStatistics.Outcomes()
        var arrivals: UInt64 = 0
        var cancelledLeases: UInt64 = 0
        var longHolds: UInt64 = 0
        var generationHolds: UInt64 = 0
    }

    struct Window {
        var start: Instant
        var lanes: [LaneWindow]
        /// Level stamps and latency buckets, as ``Layout`` places them.
        var counters: [UInt64]
        var connections = PoolStatistics.ConnectionCounts()

        /// A window starting at `start` with the pool at in-use level `total` and each lane at
        /// `lanes[i]`.
        init(start: Instant, layout: Layout, total: Int, lanes: [Int]) {
            self.start = start
            self.lanes = Array(repeating: LaneWindow(), count: lanes.count)
            self.counters = Array(repeating: 0, count: layout.count)
            self.counters[total] = 0 &- start.stamp
            for lane in lanes.indices {
                self.counters[layout.laneLevelStarts[lane] + lanes[lane]] = 0 &- start.stamp
            }
        }

        /// The waits of a lane in this window, immediate grants included.
        func waits(ofLane lane: Int, layout: Layout) -> Histogram<UInt64> {
            LatencyBuckets.histogram(self.counters[layout.waitBuckets(ofLane: lane)])
        }

        /// Nanoseconds spent at each of the levels `levels` (a range of ``counters``), `current`
        /// being the level at `now`; `now` is `nil` for a window that has ended.
        func nanosecondsAtLevel(_ levels: Range<Int>, current: Int, now: Instant?) -> [UInt64] {
            var times = Array(self.counters[levels])
            if let now { times[current] &+= now.stamp }
            return times
        }
    }

    let windowLength: Duration
    let layout: Layout
    var current: Window
    var previous: Window?
    /// The most recent watchdog findings, newest last, at most ``findingsKept``.
    var findings: [WatchdogFinding] = []
    static let findingsKept = 32
    /// The most recent incidents, newest last, at most ``findingsKept``.
    var incidents: [Incident] = []
    /// The call sites already reported for leasing during a generation step.
    private var generationLeaseSites: Set<String> = []

    /// Counts what happened.
    @inline(__always)
    mutating func record(_ event: PoolEvent) {
        switch event {
        case .arrived(let lane, let count):
            self.current.lanes[lane].arrivals += UInt64(count)
        case .requestEnded(let lane, let end, let count):
            self.current.lanes[lane].outcomes.count(end, UInt64(count))
        case .leaseCancelled(let lane):
            self.current.lanes[lane].cancelledLeases += 1
        case .leaseBegan(let lane, let laneLevel, let total, let waitingSince, let now):
            self.leaseBegan(lane: lane, laneLevel: laneLevel, total: total, waitingSince: waitingSince, now: now)
        case .leaseEnded(let lane, let laneLevel, let total, let leasedAt, let now):
            self.leaseEnded(lane: lane, laneLevel: laneLevel, total: total, leasedAt: leasedAt, now: now)
        case .connectionOpened:
            self.current.connections.opened += 1
        case .connectFailed:
            self.current.connections.connectFailures += 1
        case .connectionClosed(let reason):
            self.recordClose(reason)
        case .finding(let finding, let lane):
            self.record(finding, lane: lane)
        case .incident(let incident):
            self.record(incident)
        }
    }

    /// Records a lease asked for during a generation step, once per call site: `true` when
    /// its call site had not been reported yet.
    mutating func recordFirstAtItsCallSite(_ finding: WatchdogFinding, lane: Int) -> Bool {
        guard self.generationLeaseSites.insert(finding.callSite).inserted else { return false }
        self.record(finding, lane: lane)
        return true
    }

    private mutating func record(_ incident: Incident) {
        self.incidents.append(incident)
        if self.incidents.count > Self.findingsKept {
            self.incidents.removeFirst(self.incidents.count - Self.findingsKept)
        }
    }

    init(laneLimits: [Int], budget: Int, windowLength: Duration, now: Instant) {
        self.windowLength = windowLength
        self.layout = Layout(budget: budget, laneLimits: laneLimits)
        self.current = Window(start: now, layout: self.layout, total: 0, lanes: Array(repeating: 0, count: laneLimits.count))
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        return UInt64(seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
    }

    /// A lease of `lane` began at `now`, the lane being at in-use level `laneLevel` and the pool
    /// at `total` before it; it waited since `waitingSince`, or not at all when `nil`.
    @inline(__always)
    private mutating func leaseBegan(lane: Int, laneLevel: Int, total: Int, waitingSince: Instant?, now: Instant) {
        let waited = waitingSince.map { $0.nanoseconds(to: now) } ?? 0
        self.record(
            lane: lane, laneLevel: laneLevel, total: total, step: 1,
            bucket: self.layout.waitBucketsStart(ofLane: lane) &+ LatencyBuckets.index(ofNanoseconds: waited), now: now)
    }

    /// A lease of `lane` that began at `leasedAt` ended at `now`, the lane being at in-use level
    /// `laneLevel` and the pool at `total` before it ended.
    @inline(__always)
    private mutating func leaseEnded(lane: Int, laneLevel: Int, total: Int, leasedAt: Instant, now: Instant) {
        let held = leasedAt.nanoseconds(to: now)
        self.record(
            lane: lane, laneLevel: laneLevel, total: total, step: -1,
            bucket: self.layout.holdBucketsStart(ofLane: lane) &+ LatencyBuckets.index(ofNanoseconds: held), now: now)
    }

    /// Stamps a change by `step` of the pool's and one lane's in-use levels at `now`, and counts
    /// one wait or hold in `bucket`.
    ///
    /// Levels stay within `0...limit` and buckets within their histogram by construction, so the
    /// writes go through one uniqueness check and no bounds checks (debug builds keep them).
    @inline(__always)
    private mutating func record(lane: Int, laneLevel: Int, total: Int, step: Int, bucket: Int, now: Instant) {
        let stamp = now.stamp
        let laneLevels = self.layout.laneLevelStarts[lane] &+ laneLevel
        self.current.counters.withUnsafeMutableBufferPointer { counters in
            counters[total] &+= stamp
            counters[total &+ step] &-= stamp
            counters[laneLevels] &+= stamp
            counters[laneLevels &+ step] &-= stamp
            counters[bucket] &+= 1
        }
    }

    private mutating func record(_ finding: WatchdogFinding, lane: Int) {
        switch finding.kind {
        case .longHold: self.current.lanes[lane].longHolds += 1
        case .generationHold, .leaseDuringGeneration: self.current.lanes[lane].generationHolds += 1
        }
        self.findings.append(finding)
        if self.findings.count > Self.findingsKept {
            self.findings.removeFirst(self.findings.count - Self.findingsKept)
        }
    }

    private mutating func recordClose(_ reason: PoolEvent.CloseReason) {
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

    /// Ends the current window at `now` and starts a new one, the pool being at in-use level
    /// `total` and each lane at `lanes[i]`.
    mutating func rotate(total: Int, lanes: [Int], now: Instant) {
        self.current.counters[total] &+= now.stamp
        for lane in lanes.indices {
            self.current.counters[self.layout.laneLevelStarts[lane] + lanes[lane]] &+= now.stamp
        }
        self.previous = self.current
        self.current = Window(start: now, layout: self.layout, total: total, lanes: lanes)
    }

    /// The statistics of both windows, with the levels accounted up to `now`.
    func snapshot(laneNames: [String], total: Int, lanes: [Int], capacity: Int, now: Instant) -> PoolStatistics {
        // The previous window's stamps were closed when it rotated; the current one's are
        // closed at `now`.
        let windows = [self.previous, self.current].compactMap { $0 }
        func nanosecondsAtLevel(_ levels: Range<Int>, current: Int) -> [UInt64] {
            var times = Array(repeating: UInt64(0), count: levels.count)
            for (index, window) in windows.enumerated() {
                let closed = window.nanosecondsAtLevel(levels, current: current, now: index == windows.count - 1 ? now : nil)
                for level in times.indices { times[level] &+= closed[level] }
            }
            return times
        }
        let start = windows[0].start
        let seconds = max(Double(Self.nanoseconds(start.duration(to: now))) / 1e9, 1e-9)

        var allWaits = LatencyBuckets.makeHistogram()
        var allHolds = LatencyBuckets.makeHistogram()
        var allOutcomes = PoolStatistics.Outcomes()
        var laneStatistics: [PoolStatistics.LaneStatistics] = []
        for lane in laneNames.indices {
            var waits = LatencyBuckets.makeHistogram()
            var holds = LatencyBuckets.makeHistogram()
            var outcomes = PoolStatistics.Outcomes()
            var arrivals: UInt64 = 0
            var cancelledLeases: UInt64 = 0
            var longHolds: UInt64 = 0
            var generationHolds: UInt64 = 0
            for window in windows {
                let laneWindow = window.lanes[lane]
                LatencyBuckets.add(window.counters[self.layout.waitBuckets(ofLane: lane)], to: &waits)
                LatencyBuckets.add(window.counters[self.layout.holdBuckets(ofLane: lane)], to: &holds)
                outcomes.add(laneWindow.outcomes)
                arrivals += laneWindow.arrivals
                cancelledLeases += laneWindow.cancelledLeases
                longHolds += laneWindow.longHolds
                generationHolds += laneWindow.generationHolds
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
                inUse: Self.occupancy(nanosecondsAtLevel(self.layout.levels(ofLane: lane), current: lanes[lane]), now: lanes[lane]),
                cancelledLeases: cancelledLeases,
                longHolds: longHolds,
                generationHolds: generationHolds))
        }
        let levels = nanosecondsAtLevel(self.layout.poolLevels, current: total)
        var connections = PoolStatistics.ConnectionCounts()
        for window in windows {
            connections.add(window.connections)
        }
        let inUse = Self.occupancy(levels, now: total)
        return PoolStatistics(
            windowSeconds: seconds,
            budget: self.layout.budget,
            capacity: capacity,
            lanes: laneStatistics,
            wait: Self.distribution(allWaits),
            hold: Self.distribution(allHolds),
            outcomes: allOutcomes,
            inUse: inUse,
            utilizationP50: Double(Self.level(atFraction: 0.5, of: levels)) / Double(self.layout.budget),
            utilizationP99: Double(Self.level(atFraction: 0.99, of: levels)) / Double(self.layout.budget),
            connections: connections,
            findings: self.findings,
            incidents: self.incidents)
    }

    static func distribution(_ histogram: Histogram<UInt64>) -> PoolStatistics.Distribution {
        guard histogram.totalCount > 0 else {
            return .init(count: 0, p50: 0, p99: 0, p999: 0, max: 0, mean: 0, bins: Self.bins(histogram))
        }
        func milliseconds(_ microseconds: UInt64) -> Double { Double(microseconds) / 1_000 }
        return .init(
            count: histogram.totalCount,
            p50: milliseconds(histogram.valueAtPercentile(50)),
            p99: milliseconds(histogram.valueAtPercentile(99)),
            p999: milliseconds(histogram.valueAtPercentile(99.9)),
            max: milliseconds(histogram.max),
            mean: histogram.mean / 1_000,
            bins: Self.bins(histogram))
    }

    /// The counts of `histogram` (microseconds) in the ranges of ``PoolStatistics/Bin/boundsMilliseconds``.
    static func bins(_ histogram: Histogram<UInt64>) -> [PoolStatistics.Bin] {
        let bounds = PoolStatistics.Bin.boundsMilliseconds
        var counts = [UInt64](repeating: 0, count: bounds.count + 1)
        for value in histogram.recordedValues() {
            let milliseconds = Double(value.value) / 1_000
            let bin = bounds.firstIndex { milliseconds <= $0 } ?? bounds.count
            counts[bin] &+= value.count
        }
        return counts.indices.map { .init(upToMilliseconds: $0 < bounds.count ? bounds[$0] : nil, count: counts[$0]) }
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
    /// Counts `count` requests that ended as `end`.
    @inline(__always)
    mutating func count(_ end: PoolEvent.RequestEnd, _ count: UInt64) {
        switch end {
        case .granted: self.granted += count
        case .timeout: self.timeout += count
        case .overloaded: self.overloaded += count
        case .shed: self.shed += count
        case .deadlineExceeded: self.deadlineExceeded += count
        case .cancelled: self.cancelled += count
        case .unavailable: self.unavailable += count
        case .shutdown: self.shutdown += count
        }
    }

    mutating func add(_ other: Self) {
        self.granted += other.granted
        self.timeout += other.timeout
        self.overloaded += other.overloaded
        self.shed += other.shed
        self.deadlineExceeded += other.deadlineExceeded
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
