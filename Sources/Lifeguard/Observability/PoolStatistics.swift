/// What the pool observed over its statistics window: waits, holds, outcomes and utilization,
/// by lane and overall.
///
/// Taken with ``ConnectionPool/statistics()``. Durations are in milliseconds. Utilization and
/// in-use figures are time-weighted over the window: "p99 in-use 11" means that 1% of the time
/// more than 11 connections were leased, which is what sizing must cover (the average hides it).
public struct PoolStatistics: Sendable, Hashable, Codable {
    /// A distribution of durations, in milliseconds.
    public struct Distribution: Sendable, Hashable, Codable {
        /// How many values were recorded.
        public var count: UInt64
        /// Median, in milliseconds.
        public var p50: Double
        /// 99th percentile, in milliseconds.
        public var p99: Double
        /// 99.9th percentile, in milliseconds.
        public var p999: Double
        /// The largest value, in milliseconds.
        public var max: Double
        /// The mean, in milliseconds.
        public var mean: Double
        /// How many values fell in each of ``Bin/boundsMilliseconds``' ranges, for a histogram
        /// (`nil` in statistics saved before bins were recorded).
        public var bins: [Bin]?
    }

    /// One range of a ``Distribution``'s histogram.
    public struct Bin: Sendable, Hashable, Codable {
        /// The range's upper bound in milliseconds (its lower bound is the previous bin's), or
        /// `nil` for the last range, which has none.
        public var upToMilliseconds: Double?
        /// How many values fell in the range.
        public var count: UInt64

        /// The upper bounds of the bins, in milliseconds: from 1 ms (a lease that waited on
        /// nothing, a short query) to a minute (a generation held in a transaction), in steps
        /// of 1, 2 and 5; a last bin holds the rest.
        public static let boundsMilliseconds: [Double] = [
            1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000,
        ]
    }

    /// How requests for connections ended.
    public struct Outcomes: Sendable, Hashable, Codable {
        /// Requests that got a connection.
        public var granted: UInt64 = 0
        /// Requests that waited out the lane's `waitTimeout`.
        public var timeout: UInt64 = 0
        /// Requests rejected at once because the lane's queue was full.
        public var overloaded: UInt64 = 0
        /// Requests shed by overload control: they waited the shedding target of an overloaded
        /// lane.
        public var shed: UInt64 = 0
        /// Requests whose caller's deadline (``RequestDeadline``) could not be met: rejected at
        /// once, or reached while waiting.
        public var deadlineExceeded: UInt64 = 0
        /// Requests whose task was cancelled while they waited.
        public var cancelled: UInt64 = 0
        /// Requests failed fast because the database was unreachable.
        public var unavailable: UInt64 = 0
        /// Requests refused because the pool was shutting down.
        public var shutdown: UInt64 = 0
    }

    /// Time-weighted distribution of a count of leased connections.
    public struct Occupancy: Sendable, Hashable, Codable {
        /// Leased now.
        public var now: Int
        /// Leased at most this many half of the time.
        public var p50: Int
        /// Leased at most this many 99% of the time.
        public var p99: Int
        /// The most leased at once.
        public var max: Int
    }

    /// One lane's statistics.
    public struct LaneStatistics: Sendable, Hashable, Codable {
        /// The lane's name.
        public var lane: String
        /// Time from asking for a connection to getting it (0 when one was idle).
        public var wait: Distribution
        /// How long leases held their connection.
        public var hold: Distribution
        /// How requests ended.
        public var outcomes: Outcomes
        /// Requests per second over the window.
        public var arrivalsPerSecond: Double
        /// Connections this lane held.
        public var inUse: Occupancy
        /// Leases that ended because their task was cancelled (the connection was reset).
        public var cancelledLeases: UInt64
        /// Leases held longer than `longHoldThreshold`.
        public var longHolds: UInt64
        /// Leases idle longer than `idleInLeaseThreshold`: probable holds across a model call.
        public var generationHolds: UInt64
    }

    /// Connections opened and closed, and why.
    public struct ConnectionCounts: Sendable, Hashable, Codable {
        /// Connections opened.
        public var opened: UInt64 = 0
        /// Attempts to open one that failed.
        public var connectFailures: UInt64 = 0
        /// Closed after `idleTimeout`.
        public var closedIdle: UInt64 = 0
        /// Closed at the end of their `maxLifetime`.
        public var closedExpired: UInt64 = 0
        /// Closed because they were broken, failed validation or a keepalive ping.
        public var closedBroken: UInt64 = 0
        /// Closed because resetting them after an abandoned lease failed or timed out.
        public var closedResetFailed: UInt64 = 0
        /// Closed by shutdown.
        public var closedShutdown: UInt64 = 0
    }

    /// How much time the statistics cover, in seconds (between one and two windows).
    public var windowSeconds: Double
    /// The pool's budget.
    public var budget: Int
    /// Connections usable now: the budget less those stuck resetting, pinging or closing.
    public var capacity: Int
    /// By lane, in name order.
    public var lanes: [LaneStatistics]
    /// Waits over all lanes.
    public var wait: Distribution
    /// Holds over all lanes.
    public var hold: Distribution
    /// Outcomes over all lanes.
    public var outcomes: Outcomes
    /// Leased connections over all lanes.
    public var inUse: Occupancy
    /// Leased connections as a share of the budget, time-weighted: median.
    public var utilizationP50: Double
    /// Leased connections as a share of the budget, time-weighted: 99th percentile.
    public var utilizationP99: Double
    /// Connections opened and closed.
    public var connections: ConnectionCounts
    /// The watchdog's most recent findings (at most 32), oldest first, with their call sites.
    public var findings: [WatchdogFinding]
    /// The most recent incidents (at most 32), oldest first: slow waits and leak signals.
    public var incidents: [Incident]

    /// One lane's statistics, if the lane is configured.
    public subscript(lane: Lane) -> LaneStatistics? {
        self.lanes.first { $0.lane == lane.name }
    }
}
