import Foundation
public import Lifeguard

/// Everything the pool's dashboard draws, taken at one instant: the statistics of the window,
/// the connections by state and each lane's queue now, and the sizing advice.
///
/// Served as JSON at `GET /pool/snapshot` by `router.addPoolRoutes(pool)`.
public struct PoolSnapshot: Sendable, Encodable {
    /// Connections by state, now.
    public struct Connections: Sendable, Encodable {
        /// The most the pool may open.
        public var budget: Int
        /// Ready to be leased.
        public var idle: Int
        /// Held by leases.
        public var leased: Int
        /// Being opened.
        public var opening: Int
        /// Open but neither idle nor leased: being reset, checked or closed.
        public var other: Int
    }

    /// One lane, now.
    public struct LaneNow: Sendable, Encodable {
        /// The lane's name.
        public var lane: String
        /// Connections it holds.
        public var leased: Int
        /// Requests in its queue.
        public var waiters: Int
        /// Its reservation.
        public var reserved: Int
        /// Its limit.
        public var limit: Int
        /// Whether it is shedding (see ``Lifeguard/Shedding``).
        public var isOverloaded: Bool
        /// Its `waitTimeout`, in milliseconds: the wait budget of its requests.
        public var waitTimeoutMilliseconds: Double
    }

    /// When the snapshot was taken, in seconds since 1970.
    public var takenAt: Double
    /// The statistics of the window (``Lifeguard/ConnectionPool/statistics()``).
    public var statistics: PoolStatistics
    /// Connections by state.
    public var connections: Connections
    /// Lanes, by name.
    public var lanes: [LaneNow]
    /// Requests waiting, over all lanes.
    public var waiters: Int
    /// Whether the last connection attempt succeeded.
    public var isDatabaseAvailable: Bool
    /// Whether the pool is shutting down.
    public var isShuttingDown: Bool
    /// What to change, from the statistics.
    public var advice: SizingAdvice
    /// The wait above which a wait is an incident, in milliseconds (50 ms).
    public var incidentWaitMilliseconds: Double

    /// Takes a snapshot of `pool`.
    ///
    /// - Parameter pool: The pool.
    public init<Factory, Clock>(pool: ConnectionPool<Factory, Clock>) {
        let status = pool.status()
        let statistics = pool.statistics()
        self.takenAt = Date().timeIntervalSince1970
        self.statistics = statistics
        self.connections = Connections(
            budget: status.budget, idle: status.idle, leased: status.leased, opening: status.opening,
            other: max(0, status.connections - status.idle - status.leased - status.opening))
        self.lanes = status.lanes.sorted { $0.key.name < $1.key.name }.map { lane, now in
            LaneNow(
                lane: lane.name, leased: now.leased, waiters: now.waiters, reserved: now.reserved, limit: now.limit,
                isOverloaded: now.isOverloaded,
                waitTimeoutMilliseconds: pool.configuration.lanes[lane].map { Double($0.waitTimeout.wholeNanoseconds) / 1e6 } ?? 0)
        }
        self.waiters = status.waiters
        self.isDatabaseAvailable = status.isDatabaseAvailable
        self.isShuttingDown = status.isShuttingDown
        self.advice = SizingAdvice(statistics: statistics)
        self.incidentWaitMilliseconds = SizingAdvice.incidentWaitMilliseconds
    }
}
