/// A kind of work with its own queue, limits and wait timeout.
///
/// Lanes are queues and accounting, not separate sockets: connections move freely between lanes
/// of the same pool. Three lanes are built in; define more with ``init(_:)``:
///
/// ```swift
/// extension Lane { static let embeddings = Lane("embeddings") }
/// ```
public struct Lane: Hashable, Sendable, CustomStringConvertible {
    /// The lane's name, as it appears in errors, logs and metrics labels.
    public let name: String

    /// Creates a lane with the given name.
    ///
    /// - Parameter name: A short, stable name such as `"retrieval"`; used as a metrics label.
    public init(_ name: String) {
        self.name = name
    }

    /// Reads for retrieval-augmented generation: many short queries, often fanned out in parallel.
    public static let retrieval = Lane("retrieval")
    /// Short writes: request logs, results, agent state.
    public static let write = Lane("write")
    /// A connection someone insists on holding across a model call. Keep it capped small so it
    /// cannot starve the other lanes.
    public static let generation = Lane("generation")

    public var description: String { self.name }
}

/// The limits of one lane.
public struct LaneConfiguration: Sendable, Hashable {
    /// Connections guaranteed to this lane: never lent to another lane, even when idle.
    ///
    /// The sum of all lanes' reservations must fit in the budget. Default: 0.
    public var reserved: Int

    /// The most connections this lane may hold at once; `nil` means the whole budget.
    ///
    /// A limit above the budget is capped by the budget. Capacity above the sum of all
    /// reservations is shared by the lanes first come, first served, up to each lane's limit.
    public var limit: Int?

    /// How long a request may wait in this lane's queue before it fails with
    /// ``LifeguardError/Code/waitTimeout``. Default: 500 ms.
    public var waitTimeout: Duration

    /// The most requests that may wait in this lane's queue; a request beyond it fails at once
    /// with ``LifeguardError/Code/overloaded``. Default: 1,000.
    public var maxWaiters: Int

    /// Creates a lane configuration.
    ///
    /// - Parameters:
    ///   - reserved: Connections guaranteed to the lane. Default: 0.
    ///   - limit: The most connections the lane may hold at once; `nil` for the whole budget.
    ///   - waitTimeout: How long a request may wait for a connection. Default: 500 ms.
    ///   - maxWaiters: The bound of the lane's queue. Default: 1,000.
    public init(
        reserved: Int = 0,
        limit: Int? = nil,
        waitTimeout: Duration = .milliseconds(500),
        maxWaiters: Int = 1_000
    ) {
        self.reserved = reserved
        self.limit = limit
        self.waitTimeout = waitTimeout
        self.maxWaiters = maxWaiters
    }
}
