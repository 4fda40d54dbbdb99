import Lifeguard
/// What one design did with one scenario, in the JSON schema `simulate --json` and
/// `bench --json` share.
public struct SimulationResult: Sendable, Hashable, Codable {
    /// Three percentiles, in milliseconds.
    public struct Percentiles: Sendable, Hashable, Codable {
        /// The median.
        public var p50: Double
        /// The 99th percentile.
        public var p99: Double
        /// The 99.9th percentile, where reported.
        public var p999: Double?

        /// Creates percentiles.
        public init(p50: Double, p99: Double, p999: Double? = nil) {
            self.p50 = p50
            self.p99 = p99
            self.p999 = p999
        }
    }

    /// How leases ended, over all lanes.
    public struct Outcomes: Sendable, Hashable, Codable {
        /// Leases granted.
        public var granted: UInt64 = 0
        /// Waits that ended at the lane's `waitTimeout`.
        public var timeout: UInt64 = 0
        /// Requests shed by overload control.
        public var shed: UInt64 = 0
        /// Requests refused because the queue was full.
        public var overloaded: UInt64 = 0
        /// Requests whose deadline could not be met.
        public var deadlineExceeded: UInt64 = 0
        /// Cancelled while waiting or while holding a connection.
        public var cancelled: UInt64 = 0

        /// No outcomes yet.
        public init() {}

        /// A pool's outcomes (``Lifeguard/PoolStatistics/outcomes``), over all lanes; here
        /// `cancelled` counts leases ended by a cancellation as well as cancelled waits.
        public init(_ pool: PoolStatistics.Outcomes, cancelledLeases: UInt64) {
            self.granted = pool.granted
            self.timeout = pool.timeout
            self.shed = pool.shed
            self.overloaded = pool.overloaded
            self.deadlineExceeded = pool.deadlineExceeded
            self.cancelled = pool.cancelled + cancelledLeases
        }

        enum CodingKeys: String, CodingKey {
            case granted, timeout, shed, overloaded, cancelled
            case deadlineExceeded = "deadline_exceeded"
        }
    }

    /// The scenario's name.
    public var scenario: String
    /// The design the requests followed.
    public var design: DesignKind
    /// Goodput: requests completed while the arrivals ran, per second of arrivals (a backlog
    /// served after them does not count).
    public var throughputPerSecond: Double
    /// Pool wait by lane.
    public var waitMilliseconds: [String: Percentiles]
    /// From a request's arrival to its end.
    public var endToEndMilliseconds: Percentiles
    /// Time-weighted 99th percentile of leased ÷ budget.
    public var utilizationP99: Double
    /// How leases ended.
    public var outcomes: Outcomes
    /// Connections still leased when every request has ended: must be 0.
    public var leaked: Int
    /// Requests completed.
    public var completed: Int
    /// Requests failed, by the error that failed them.
    public var failedRequests: [String: Int]
    /// Requests cancelled.
    public var cancelledRequests: Int
    /// The pool that ran it, in `bench` (`lifeguard` or `postgresclient`); `nil` in `simulate`.
    public var pool: String? = nil
    /// In `bench` over a host list: the transactions each server committed during the run, by
    /// its own count (`pg_stat_database.xact_commit`), keyed `host:port primary` or
    /// `host:port standby`; `nil` otherwise.
    public var committedByServer: [String: Int]? = nil

    /// Failed requests over request attempts (completed, failed or cancelled): a caller
    /// rejected and asking again counts once per attempt.
    public var rejectedFraction: Double {
        let failed = self.failedRequests.values.reduce(0, +)
        return Double(failed) / Double(max(1, failed + self.completed + self.cancelledRequests))
    }

    /// Creates a result.
    public init(
        scenario: String, design: DesignKind, throughputPerSecond: Double, waitMilliseconds: [String: Percentiles],
        endToEndMilliseconds: Percentiles, utilizationP99: Double, outcomes: Outcomes, leaked: Int, completed: Int,
        failedRequests: [String: Int], cancelledRequests: Int
    ) {
        self.scenario = scenario
        self.design = design
        self.throughputPerSecond = throughputPerSecond
        self.waitMilliseconds = waitMilliseconds
        self.endToEndMilliseconds = endToEndMilliseconds
        self.utilizationP99 = utilizationP99
        self.outcomes = outcomes
        self.leaked = leaked
        self.completed = completed
        self.failedRequests = failedRequests
        self.cancelledRequests = cancelledRequests
    }

    enum CodingKeys: String, CodingKey {
        case scenario, design, outcomes, leaked, completed, pool
        case throughputPerSecond = "throughput_per_s"
        case waitMilliseconds = "wait_ms"
        case endToEndMilliseconds = "e2e_ms"
        case utilizationP99 = "utilization_p99"
        case failedRequests = "failed_requests"
        case cancelledRequests = "cancelled_requests"
        case committedByServer = "committed_by_server"
    }
}
