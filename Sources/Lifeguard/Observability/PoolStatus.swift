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
