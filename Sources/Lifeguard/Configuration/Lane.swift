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
    /// with ``LifeguardError/Code/overloaded``. Default: 10,000.
    ///
    /// The wait to expect already bounds the queue in time (a request that could not be served
    /// within `waitTimeout`, less the wait's spread, is rejected at once); this bound is for memory. Each
    /// lease of a fan-out waits on its own: 200 concurrent HTTP requests of 8 reads each are
    /// 1,600 waiters, and a bound of 1,000 rejected their last 600 however short the wait.
    public var maxWaiters: Int

    /// Adaptive shedding: when the lane is overloaded (its queue stands above a target and has
    /// stayed past the wait budget), a request that could not expect to be served within half
    /// the target is shed at once. `nil` turns it off. Default:
    /// ``Shedding/init(target:interval:servesNewestFirst:engagement:sustainedFor:longestOverload:)``
    /// with a 50 ms target over 100 ms intervals, engaged by sustained overload.
    public var shedding: Shedding?

    /// Creates a lane configuration.
    ///
    /// - Parameters:
    ///   - reserved: Connections guaranteed to the lane. Default: 0.
    ///   - limit: The most connections the lane may hold at once; `nil` for the whole budget.
    ///   - waitTimeout: How long a request may wait for a connection. Default: 500 ms.
    ///   - maxWaiters: The bound of the lane's queue. Default: 10,000.
    ///   - shedding: Adaptive shedding, or `nil` for none. Default: a 50 ms target over 100 ms.
    public init(
        reserved: Int = 0,
        limit: Int? = nil,
        waitTimeout: Duration = .milliseconds(500),
        maxWaiters: Int = 10_000,
        shedding: Shedding? = Shedding()
    ) {
        self.reserved = reserved
        self.limit = limit
        self.waitTimeout = waitTimeout
        self.maxWaiters = maxWaiters
        self.shedding = shedding
    }
}

/// Adaptive shedding for a lane, after CoDel: keep the wait of admitted work short under
/// overload and fail the excess at once, instead of letting every request wait.
///
/// The lane watches how long its oldest waiter has waited, and how deep its queue is. A queue
/// that empties now and then is a burst, and is left alone. When the oldest wait stays above
/// `target` for an `interval`, the queue stands; when it has also grown past the lane's wait
/// budget (by default: see ``Engagement``), work arrives faster than the lane completes it and
/// the lane enters *overload*: a request that arrives then and could not expect to be served
/// within half the `target` fails at once with ``LifeguardError/Code/shed``. Under
/// ``Engagement/standingQueue`` the requests admitted may also wait at most `target`, and fail
/// with `shed` if not served by then; under ``Engagement/sustainedOverload`` they keep their
/// `waitTimeout`, so that no request admitted whole fails partway. The lane leaves overload
/// when its queue drains for an interval, its wait to expect stays short for one, or (sustained
/// overload) after ``longestOverload``.
///
/// Whatever the shedding, a request whose wait to expect (the requests ahead, times the lane's
/// recent hold time over its capacity or the interval at which it has been serving, whichever
/// is longer) exceeds the lane's `waitTimeout` less the wait's spread is rejected at once with
/// ``LifeguardError/Code/waitTimeout``, instead of failing after waiting it all. The spread left
/// is a fifth of the budget for a queue of 400 leases or fewer, less for longer ones (whose
/// wait, a sum of many serving intervals, spreads less): so that a fan-out admitted whole
/// rarely fails partway.
public struct Shedding: Sendable, Hashable {
    /// The wait a standing queue may impose, and the wait allowed to requests while the lane is
    /// overloaded. Default: 50 ms, the line above which a wait is an incident. A target at or
    /// above the lane's `waitTimeout` never shortens a wait: `waitTimeout` comes first.
    public var target: Duration

    /// How long the shortest wait must stay above `target` before the lane enters overload.
    /// Default: 100 ms.
    public var interval: Duration

    /// While overloaded, serve the newest request first (adaptive LIFO): it still has its whole
    /// wait ahead, where the oldest are about to be shed anyway. Off by default; see
    /// BENCHMARKS.md for what it changes.
    public var servesNewestFirst: Bool

    /// What makes the lane overloaded. Default: ``Engagement/sustainedOverload``.
    public var engagement: Engagement

    /// With ``Engagement/sustainedOverload``: how long requests must keep failing the lane's
    /// `waitTimeout` (no gap of an `interval` between two) before the lane enters overload.
    /// Default: 1 s, longer than the burst of a closed loop's callers starting at once.
    public var sustainedFor: Duration

    /// With ``Engagement/sustainedOverload``: the longest the lane stays overloaded before it
    /// steps out, sheds nothing, and lets the budget alone judge again; a real overload enters
    /// again after ``sustainedFor``. Callers that are shed and come back at once (a closed
    /// loop) keep a queue standing at the target, so no signal inside the overload tells them
    /// from new work. Default: 10 s.
    public var longestOverload: Duration

    /// What makes a lane with shedding overloaded.
    public enum Engagement: Sendable, Hashable {
        /// A queue that stands above the target for an interval *and* has stayed past what the
        /// lane's `waitTimeout` can serve for ``Shedding/sustainedFor`` (requests rejected at
        /// once for the wait to expect, or timed out, with no gap of an interval): work arrives
        /// faster than the lane completes it. A bounded set of callers (a closed loop: an HTTP
        /// server's concurrent requests, a fixed set of agents) whose waits fit the budget
        /// makes a queue stand, but not past the budget for that long: it is served, not shed.
        /// The lane leaves overload once the wait to expect has stayed under a quarter of the
        /// target for an interval, or after ``Shedding/longestOverload``.
        case sustainedOverload
        /// A queue that stands above the target for an interval, growing or not (CoDel): the
        /// strict latency target. Under a closed loop it can reject what a plain FIFO pool
        /// serves within the wait budget, and stay overloaded, since each caller it rejects
        /// comes back at once.
        case standingQueue
    }

    /// Creates a shedding policy.
    ///
    /// - Parameters:
    ///   - target: The wait allowed under overload. Default: 50 ms.
    ///   - interval: How long the queue must stand before shedding starts. Default: 100 ms.
    ///   - servesNewestFirst: Adaptive LIFO while overloaded. Default: `false`.
    ///   - engagement: What makes the lane overloaded. Default: ``Engagement/sustainedOverload``.
    ///   - sustainedFor: How long the budget must keep being exceeded to enter overload. Default: 1 s.
    ///   - longestOverload: The longest the lane stays overloaded before it reassesses. Default: 10 s.
    public init(
        target: Duration = .milliseconds(50), interval: Duration = .milliseconds(100), servesNewestFirst: Bool = false,
        engagement: Engagement = .sustainedOverload, sustainedFor: Duration = .seconds(1), longestOverload: Duration = .seconds(10)
    ) {
        self.target = target
        self.interval = interval
        self.servesNewestFirst = servesNewestFirst
        self.engagement = engagement
        self.sustainedFor = sustainedFor
        self.longestOverload = longestOverload
    }
}
