/// A snapshot of a pool's connections and queues, taken under its lock.
public struct PoolStatus: Sendable, Hashable, CustomStringConvertible {
    /// One lane's share of the pool.
    public struct LaneStatus: Sendable, Hashable {
        /// Connections this lane holds now.
        public var leased: Int
        /// Requests waiting in this lane's queue.
        public var waiters: Int
        /// The lane's reservation.
        public var reserved: Int
        /// The lane's effective limit (capped by the budget).
        public var limit: Int
        /// Whether the lane is overloaded: its queue stood above the shedding target, and
        /// requests that cannot be served within it are shed (see ``Shedding``).
        public var isOverloaded: Bool = false
    }

    /// The number of connections the pool may open.
    public var budget: Int
    /// Open or opening connections, whatever their state (they all count against the budget).
    public var connections: Int
    /// Connections ready to be leased.
    public var idle: Int
    /// Connections held by leases.
    public var leased: Int
    /// Connections being opened.
    public var opening: Int
    /// Requests waiting, over all lanes.
    public var waiters: Int
    /// Per lane.
    public var lanes: [Lane: LaneStatus]
    /// Whether the last connection attempt succeeded (or none failed yet).
    public var isDatabaseAvailable: Bool
    /// Whether the pool stopped granting leases (shutting down or shut down).
    public var isShuttingDown: Bool

    public var description: String {
        let lanes = self.lanes.sorted { $0.key.name < $1.key.name }
            .map {
                "\($0.key.name) \($0.value.leased)/\($0.value.limit) (+\($0.value.waiters) waiting"
                    + "\($0.value.isOverloaded ? ", overloaded" : ""))"
            }
            .joined(separator: ", ")
        return "connections \(self.connections)/\(self.budget): \(self.leased) leased, \(self.idle) idle, "
            + "\(self.opening) opening; \(self.waiters) waiting; lanes: \(lanes)"
    }
}

extension PoolStateMachine {
    /// The pool's state as users see it.
    package var status: PoolStatus {
        var lanes: [Lane: PoolStatus.LaneStatus] = [:]
        for state in self.lanes {
            lanes[state.lane] = .init(
                leased: state.leased, waiters: state.waiters.count, reserved: state.reserved, limit: state.limit,
                // A lane with nothing leased and nobody waiting is not overloaded, whatever its
                // shedder remembers until the next request.
                isOverloaded: (state.shedder?.isOverloaded ?? false) && (state.leased > 0 || !state.waiters.isEmpty))
        }
        let isShuttingDown: Bool
        if case .running = self.lifecycle { isShuttingDown = false } else { isShuttingDown = true }
        return PoolStatus(
            budget: self.configuration.budget,
            connections: self.connectionCount,
            idle: self.idle.count,
            leased: self.leasedCount,
            opening: self.openingCount,
            waiters: self.waiterCount,
            lanes: lanes,
            isDatabaseAvailable: self.outage == nil,
            isShuttingDown: isShuttingDown)
    }
}

extension PoolStateMachine {
    /// What a statistics snapshot needs, copied under the lock; the snapshot is computed after.
    struct StatisticsInputs {
        let recorder: StatisticsRecorder
        let laneNames: [String]
        let total: Int
        let lanes: [Int]
        let capacity: Int
        /// Connections that came back from a reset, ping or close, ever (see
        /// ``PoolStateMachine/unusableEnded``).
        var unusableEnded: UInt64 = 0

        func snapshot(now: Instant) -> PoolStatistics {
            self.recorder.snapshot(laneNames: self.laneNames, total: self.total, lanes: self.lanes, capacity: self.capacity, now: now)
        }
    }

    var statisticsInputs: StatisticsInputs {
        let unusable = self.slots.reduce(0) { count, slot in
            switch slot.state {
            case .resetting, .pinging, .closing: count + 1
            default: count
            }
        }
        return StatisticsInputs(
            recorder: self.statistics,
            laneNames: self.lanes.map(\.lane.name),
            total: self.leasedCount,
            lanes: self.lanes.map(\.leased),
            capacity: self.configuration.budget - unusable,
            unusableEnded: self.unusableEnded)
    }

    /// The statistics of the current and previous windows, up to `now`.
    package func statisticsSnapshot(now: Instant) -> PoolStatistics {
        self.statisticsInputs.snapshot(now: now)
    }
}
