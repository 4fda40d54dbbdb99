/// Pool sizes advised from what the pool observed, by Little's law, with the reasoning spelled out.
///
/// Per lane, Little's law gives the average number of connections in use: arrivals per second
/// times the mean hold time. Bursts (a retrieval fanning out) sit far above that average, so
/// the advice reserves the observed p99 in-use plus one, and limits the lane at its observed
/// peak plus a quarter. Generation holds come first: no pool size fixes a connection held
/// across a model call. A wait p99 above 50 ms is an incident, not a warning.
public struct SizingAdvice: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The advice for one lane.
    public struct LaneAdvice: Sendable, Hashable, Codable {
        /// The lane's name.
        public var lane: String
        /// Observed arrivals per second.
        public var arrivalsPerSecond: Double
        /// Observed mean hold, in milliseconds.
        public var meanHoldMilliseconds: Double
        /// Little's law: the average number of connections in use.
        public var averageInUse: Double
        /// Observed p99 of connections in use (time-weighted).
        public var p99InUse: Int
        /// Advised reservation.
        public var reserved: Int
        /// Advised limit.
        public var limit: Int
        /// Advised wait timeout, in milliseconds.
        public var waitTimeoutMilliseconds: Int
        /// The arithmetic, in words.
        public var reasoning: String
    }

    /// The shortest wait timeout advised, in milliseconds: ``LaneConfiguration``'s default.
    static let defaultWaitTimeoutMilliseconds = Double(LaneConfiguration().waitTimeout.wholeNanoseconds / 1_000_000)

    /// The wait p99 above which a lane is in an incident, in milliseconds.
    public static let incidentWaitMilliseconds = 50.0

    /// By lane, in name order.
    public var lanes: [LaneAdvice]
    /// Advised budget: the reservations, plus shared room for the overall p99 beyond them.
    public var budget: Int
    /// What to fix first, most important first: generation holds, then incidents.
    public var warnings: [String]

    /// Advice from a statistics snapshot.
    ///
    /// - Parameter statistics: What the pool observed (``ConnectionPool/statistics()``).
    public init(statistics: PoolStatistics) {
        var warnings: [String] = []
        var lanes: [LaneAdvice] = []
        // Statistics may come from a file (`lifeguard inspect`): every figure is clamped to a
        // sane range before any arithmetic, so that no input can trap.
        for lane in statistics.lanes {
            let averageInUse = Self.clamped(lane.arrivalsPerSecond) * Self.clamped(lane.hold.mean) / 1_000
            let p99InUse = min(max(0, lane.inUse.p99), Self.largestCount)
            let reserved = lane.outcomes.granted <= 0 ? 0 : p99InUse + 1
            let observedPeak = min(max(0, lane.inUse.max), Self.largestCount)
            // The limit covers the reservation and the peak observed, with a quarter to spare.
            let peak = max(observedPeak, reserved)
            let limit = max(1, reserved, peak + (peak + 3) / 4)
            // The default wait budget (what a caller can wait, the seed's 500 ms), longer for
            // long holds (four of them, up to 1 s): a budget cut to the holds rejects what a
            // plain pool serves in time.
            let waitTimeout = Int(min(1_000, max(Self.defaultWaitTimeoutMilliseconds, (4 * Self.clamped(lane.hold.p99)).rounded(.up))))
            let reasoning = "\(lane.lane): \(Figures.format(lane.arrivalsPerSecond)) arrivals/s × \(Figures.format(lane.hold.mean)) ms hold "
                + "= \(Figures.format(averageInUse)) in use on average, p99 in-use \(p99InUse), peak \(observedPeak): "
                + "reserve \(reserved), limit \(limit), waitTimeout \(waitTimeout) ms"
            lanes.append(LaneAdvice(
                lane: lane.lane, arrivalsPerSecond: lane.arrivalsPerSecond, meanHoldMilliseconds: lane.hold.mean,
                averageInUse: averageInUse, p99InUse: p99InUse, reserved: reserved, limit: limit,
                waitTimeoutMilliseconds: waitTimeout, reasoning: reasoning))
            if lane.generationHolds > 0 {
                let sites = Set(statistics.findings.filter { $0.kind == .generationHold && $0.lane == lane.lane }.map(\.callSite)).sorted()
                warnings.insert(
                    "\(lane.lane): \(lane.generationHolds) generation hold\(lane.generationHolds == 1 ? "" : "s") "
                        + "(a connection held idle across a model call\(sites.isEmpty ? "" : ", at \(sites.joined(separator: ", "))"). "
                        + "Fix these first: no pool size fixes them. Release the connection before the call and lease again after.",
                    at: 0)
            }
            if lane.wait.p99 > Self.incidentWaitMilliseconds {
                warnings.append(
                    "\(lane.lane): INCIDENT: wait p99 \(Figures.format(lane.wait.p99)) ms is above \(Int(Self.incidentWaitMilliseconds)) ms; "
                        + "its requests queued for connections (p99 in-use \(p99InUse) in this lane, "
                        + "\(min(max(0, statistics.inUse.p99), Self.largestCount)) of the budget of \(statistics.budget) overall).")
            }
        }
        let reservedTotal = lanes.reduce(0) { min($0 + $1.reserved, Self.largestCount) }
        self.lanes = lanes
        self.budget = max(1, reservedTotal, min(max(0, statistics.inUse.p99), Self.largestCount) + 1)
        self.warnings = warnings
    }

    /// The advice as text: warnings first, then the arithmetic per lane and the budget.
    public var description: String {
        var lines: [String] = []
        lines += self.warnings.map { "! \($0)" }
        lines += self.lanes.map { "- \($0.reasoning)" }
        let reservations = self.lanes.reduce(0) { min($0 + $1.reserved, Self.largestCount) }
        lines.append("budget: \(self.budget) (the reservations, \(reservations), or the overall p99 in-use + 1, whichever is larger)")
        return lines.joined(separator: "\n")
    }

    /// The largest connection count the advice works with: the largest budget a pool accepts.
    static let largestCount = PoolConfiguration.largestBudget

    /// A figure made safe for arithmetic: not negative, not NaN, at most 10^15.
    static func clamped(_ value: Double) -> Double {
        value.isNaN ? 0 : min(max(value, 0), 1e15)
    }

    /// A percentage of `fraction`, safe for any input.
    static func percent(_ fraction: Double) -> Int {
        Int((clamped(fraction) * 100).rounded())
    }

}

extension PoolStatistics {
    /// A human-readable report: per lane waits, holds, outcomes and in-use, then the sizing advice.
    public var report: String {
        var lines: [String] = []
        lines.append("Lifeguard pool: budget \(self.budget), capacity \(self.capacity), over the last \(Figures.format(self.windowSeconds)) s; "
            + "utilization p50 \(SizingAdvice.percent(self.utilizationP50))%, p99 \(SizingAdvice.percent(self.utilizationP99))%")
        for lane in self.lanes {
            let outcomes = lane.outcomes
            lines.append("  \(lane.lane): wait p50/p99/p99.9 \(Figures.format(lane.wait.p50))/\(Figures.format(lane.wait.p99))/"
                + "\(Figures.format(lane.wait.p999)) ms, hold p50/p99/max \(Figures.format(lane.hold.p50))/"
                + "\(Figures.format(lane.hold.p99))/\(Figures.format(lane.hold.max)) ms, in use p99 \(lane.inUse.p99) (now \(lane.inUse.now)); "
                + "granted \(outcomes.granted), timeout \(outcomes.timeout), overloaded \(outcomes.overloaded), shed \(outcomes.shed), "
                + "deadline exceeded \(outcomes.deadlineExceeded), "
                + "cancelled \(outcomes.cancelled), unavailable \(outcomes.unavailable)")
        }
        let connections = self.connections
        lines.append("  connections: opened \(connections.opened), connect failures \(connections.connectFailures), closed idle \(connections.closedIdle), "
            + "expired \(connections.closedExpired), broken \(connections.closedBroken), reset failed \(connections.closedResetFailed)")
        lines.append("Advice:")
        lines.append(SizingAdvice(statistics: self).description)
        return lines.joined(separator: "\n")
    }
}
