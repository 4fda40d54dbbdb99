/// An error from the pool: what happened, where, and which setting to change.
///
/// Errors carry the lane, how long the request waited, the depth of its queue and the setting
/// that governs the failure, so that a log line is enough to act on. They never carry a password.
/// New codes can be added without breaking users: switch over ``code`` with a `default`.
public struct LifeguardError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case waitTimeout, overloaded, shed, deadlineExceeded, databaseUnavailable, shutdown, invalidConfiguration,
                unknownLane, leaseEnded, leaseDuringGeneration, notRunning
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No connection became available within the lane's `waitTimeout`.
        public static let waitTimeout = Code(.waitTimeout)
        /// The lane's queue was full (`maxWaiters`): the request was rejected at once.
        public static let overloaded = Code(.overloaded)
        /// The lane was overloaded (its queue stood above the shedding target for an interval),
        /// and the request was not served within the target.
        public static let shed = Code(.shed)
        /// The caller's deadline (``RequestDeadline``) could not be met: the request was
        /// rejected at once because the wait to expect exceeded the time left, or the deadline
        /// came while it waited.
        public static let deadlineExceeded = Code(.deadlineExceeded)
        /// The database cannot be reached: the last connection attempt failed and the pool is
        /// backing off. ``LifeguardError/underlying`` holds the last connect error.
        public static let databaseUnavailable = Code(.databaseUnavailable)
        /// The pool is shutting down or has shut down.
        public static let shutdown = Code(.shutdown)
        /// The configuration is invalid; ``LifeguardError/problems`` lists every problem.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The request named a lane the pool was not configured with.
        public static let unknownLane = Code(.unknownLane)
        /// A connection was used after its lease ended (it escaped its `withConnection` closure).
        public static let leaseEnded = Code(.leaseEnded)
        /// A lease was requested inside a ``GenerationStep`` and the configuration forbids it
        /// (``PoolConfiguration/leaseDuringGeneration``).
        public static let leaseDuringGeneration = Code(.leaseDuringGeneration)

        /// The request waited its lane's `waitTimeout` on a pool whose `run()` had not
        /// started: nothing opens connections until it runs.
        public static let notRunning = Code(.notRunning)

        public var description: String { self.base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// The lane of the request, when the failure concerns one.
    public let lane: Lane?
    /// How long the request waited before it failed.
    public let waited: Duration?
    /// How many requests were waiting in the lane when this one failed.
    public let queueDepth: Int?
    /// The setting that governs this failure, e.g. `lanes["retrieval"].waitTimeout`.
    public let setting: String?
    /// For a request rejected at once (``Code/deadlineExceeded`` or ``Code/shed``): the wait it
    /// could expect (the requests ahead of it and its own, times the lane's recent hold time,
    /// over the lane's capacity).
    public let expectedWait: Duration?
    /// For ``Code/deadlineExceeded``: the time that was left before the caller's deadline.
    public let remaining: Duration?
    /// For ``Code/waitTimeout`` rejected at once: the longest wait to expect that the lane
    /// admits: its `waitTimeout` less the wait's spread around what is expected (a fifth of it
    /// for 400 leases ahead or fewer, less for more).
    public let admissionLimit: Duration?
    /// Every problem found in an invalid configuration.
    public let problems: [String]
    /// For ``Code/waitTimeout`` when no connection was open: how many were still opening.
    /// The database was slow to accept them or unreachable (its connect timeout decides), not
    /// the pool saturated.
    public let connectionsOpening: Int?
    /// The error behind this one, e.g. the last connection error while the database is
    /// unavailable. Its description is included in ``description``.
    public let underlying: (any Error & Sendable)?

    init(
        code: Code,
        lane: Lane? = nil,
        waited: Duration? = nil,
        queueDepth: Int? = nil,
        setting: String? = nil,
        expectedWait: Duration? = nil,
        remaining: Duration? = nil,
        admissionLimit: Duration? = nil,
        problems: [String] = [],
        underlying: (any Error & Sendable)? = nil,
        connectionsOpening: Int? = nil
    ) {
        self.code = code
        self.lane = lane
        self.waited = waited
        self.queueDepth = queueDepth
        self.setting = setting
        self.expectedWait = expectedWait
        self.remaining = remaining
        self.admissionLimit = admissionLimit
        self.problems = problems
        self.underlying = underlying
        self.connectionsOpening = connectionsOpening
    }

    init(invalidConfiguration problems: [String]) {
        self.init(code: .invalidConfiguration, problems: problems)
    }

    /// An invalid configuration, for adapters that validate settings of their own.
    ///
    /// - Parameter problems: Every problem found, each naming the setting to change.
    public static func invalidConfiguration(_ problems: [String]) -> LifeguardError {
        LifeguardError(invalidConfiguration: problems)
    }

    /// A connection used after its lease ended, for adapters that hand out their own lease type.
    ///
    /// - Parameter lane: The lane of the lease that ended.
    public static func leaseEnded(lane: Lane) -> LifeguardError {
        LifeguardError(code: .leaseEnded, lane: lane)
    }

    static func waitTimeout(
        lane: Lane, waited: Duration, queueDepth: Int, expectedWait: Duration? = nil, admissionLimit: Duration? = nil,
        connectionsOpening: Int? = nil, lastConnectError: (any Error & Sendable)? = nil
    ) -> LifeguardError {
        LifeguardError(
            code: .waitTimeout, lane: lane, waited: waited, queueDepth: queueDepth,
            setting: "lanes[\"\(lane.name)\"].waitTimeout", expectedWait: expectedWait, admissionLimit: admissionLimit,
            underlying: lastConnectError, connectionsOpening: connectionsOpening)
    }

    @usableFromInline static func notRunning(lane: Lane, waited: Duration, queueDepth: Int) -> LifeguardError {
        LifeguardError(code: .notRunning, lane: lane, waited: waited, queueDepth: queueDepth, setting: "run()")
    }

    static func overloaded(lane: Lane, queueDepth: Int) -> LifeguardError {
        LifeguardError(
            code: .overloaded, lane: lane, waited: .zero, queueDepth: queueDepth,
            setting: "lanes[\"\(lane.name)\"].maxWaiters")
    }

    static func leaseDuringGeneration(lane: Lane, callSite: String, step: String) -> LifeguardError {
        LifeguardError(
            code: .leaseDuringGeneration, lane: lane, setting: "leaseDuringGeneration",
            problems: ["a connection was asked for at \(callSite) inside the generation step begun at \(step)"])
    }

    static func shed(lane: Lane, waited: Duration, queueDepth: Int, expectedWait: Duration? = nil) -> LifeguardError {
        LifeguardError(
            code: .shed, lane: lane, waited: waited, queueDepth: queueDepth, setting: "lanes[\"\(lane.name)\"].shedding",
            expectedWait: expectedWait)
    }

    static func deadlineExceeded(
        lane: Lane, waited: Duration, queueDepth: Int, expectedWait: Duration?, remaining: Duration
    ) -> LifeguardError {
        LifeguardError(
            code: .deadlineExceeded, lane: lane, waited: waited, queueDepth: queueDepth, setting: "RequestDeadline",
            expectedWait: expectedWait, remaining: remaining)
    }

    /// The database cannot be reached, for adapters: no connection opens, or (behind a
    /// pooler) no server takes a statement.
    ///
    /// - Parameters:
    ///   - lane: The lane of the request.
    ///   - waited: How long the request waited before this was known.
    ///   - lastError: What the connect, or the statement, met last.
    public static func databaseUnavailable(lane: Lane, waited: Duration, lastError: (any Error & Sendable)?) -> LifeguardError {
        LifeguardError(code: .databaseUnavailable, lane: lane, waited: waited, underlying: lastError)
    }

    /// The pool, or a component in front of it, has shut down, for adapters.
    ///
    /// - Parameter lane: The lane of the request, if any.
    public static func shutdown(lane: Lane?) -> LifeguardError {
        LifeguardError(code: .shutdown, lane: lane)
    }

    public var description: String {
        switch self.code {
        case .invalidConfiguration:
            return "Lifeguard: invalid configuration (\(self.problems.count) problem\(self.problems.count == 1 ? "" : "s")):\n"
                + self.problems.map { "  - \($0)" }.joined(separator: "\n")
        case .waitTimeout where self.connectionsOpening != nil:
            return "Lifeguard: lane '\(self.laneName)' found no connection within \(Self.format(self.waited)): no connection is "
                + "open yet and \(self.connectionsOpening ?? 0) still opening. The database is slow to accept connections or "
                + "unreachable (a host that never answers fails at its connect timeout), the pool's size is not the cause"
                + (self.underlying.map { "; the last attempt failed: \(String(describing: $0))" } ?? ".")
        case .waitTimeout where self.expectedWait != nil:
            return "Lifeguard: lane '\(self.laneName)' rejected the request at once: \(self.queueDepth ?? 0) requests are ahead "
                + "and the wait to expect is \(Self.format(self.expectedWait)), more than the \(Self.format(self.admissionLimit)) it admits "
                + "(its \(self.setting ?? "waitTimeout") less the wait's spread). "
                + "The pool is saturated: shorten what holds connections, raise the lane's limit or the budget, or raise the wait timeout."
        case .waitTimeout:
            return "Lifeguard: lane '\(self.laneName)' found no connection within \(Self.format(self.waited)) "
                + "(\(self.queueDepth ?? 0) waiting). The pool is saturated: shorten what holds connections, "
                + "raise the lane's limit or the budget, or raise \(self.setting ?? "waitTimeout")."
        case .notRunning:
            return "Lifeguard: lane '\(self.laneName)' waited \(Self.format(self.waited)) for a connection, but the pool is "
                + "not running: nothing opens connections until run() runs. Run the pool (add it to your ServiceGroup, "
                + "or `async let _ = pool.run()`) before leasing."
        case .overloaded:
            return "Lifeguard: lane '\(self.laneName)' rejected the request at once: \(self.queueDepth ?? 0) requests "
                + "are already waiting, the queue's bound. Shed load upstream or raise \(self.setting ?? "maxWaiters")."
        case .shed:
            let what = self.expectedWait.map { "at once: it would have waited about \(Self.format($0))" }
                ?? "after \(Self.format(self.waited))"
            return "Lifeguard: lane '\(self.laneName)' shed the request \(what) "
                + "(\(self.queueDepth ?? 0) waiting). The lane is overloaded: its queue has stood above the shedding target, "
                + "so requests may wait only the target. Retry later or shed upstream; make room in the lane (raise its "
                + "limit or the budget, shorten what holds connections), or tune \(self.setting ?? "shedding")."
        case .deadlineExceeded:
            if let expectedWait = self.expectedWait {
                return "Lifeguard: lane '\(self.laneName)' rejected the request at once: its deadline leaves "
                    + "\(Self.format(self.remaining)) but \(self.queueDepth ?? 0) requests are ahead and the wait to expect "
                    + "is \(Self.format(expectedWait)), more than a request may expect to wait in it "
                    + "(the time left less the wait's spread). Give the request more time, or make room in the lane."
            }
            return "Lifeguard: lane '\(self.laneName)' reached the request's deadline after waiting "
                + "\(Self.format(self.waited)) (\(self.queueDepth ?? 0) waiting). Give the request more time, or make room in the lane."
        case .databaseUnavailable:
            let cause = self.underlying.map { ": \(String(describing: $0))" } ?? ""
            return "Lifeguard: lane '\(self.laneName)' failed fast after \(Self.format(self.waited)): "
                + "the database is unavailable, the pool is reconnecting with backoff\(cause)"
        case .shutdown:
            return "Lifeguard: the pool is shut down or shutting down; no new leases are granted."
        case .unknownLane:
            return "Lifeguard: lane '\(self.laneName)' is not configured. \(self.problems.joined(separator: " "))"
        case .leaseDuringGeneration:
            return "Lifeguard: lane '\(self.laneName)' refused a lease: \(self.problems.first ?? "inside a generation step"). "
                + "No connection may be held across a model call: lease before or after it (three short windows)."
        case .leaseEnded:
            return "Lifeguard: a connection was used after its lease ended; use it only inside withConnection's closure."
        default:
            return "Lifeguard: \(self.code)"
        }
    }

    private var laneName: String { self.lane?.name ?? "-" }

    private static func format(_ duration: Duration?) -> String {
        guard let duration else { return "-" }
        let milliseconds = Double(duration.components.seconds) * 1_000
            + Double(duration.components.attoseconds) / 1e15
        if milliseconds >= 1_000 {
            return "\((milliseconds / 10).rounded() / 100) s"
        }
        return "\((milliseconds * 10).rounded() / 10) ms"
    }
}

extension LifeguardError: Equatable {
    /// Errors are equal when everything but ``underlying`` is; underlying errors compare by
    /// their descriptions.
    public static func == (lhs: LifeguardError, rhs: LifeguardError) -> Bool {
        lhs.code == rhs.code && lhs.lane == rhs.lane && lhs.waited == rhs.waited && lhs.queueDepth == rhs.queueDepth
            && lhs.setting == rhs.setting && lhs.expectedWait == rhs.expectedWait && lhs.remaining == rhs.remaining
            && lhs.admissionLimit == rhs.admissionLimit
            && lhs.problems == rhs.problems && lhs.connectionsOpening == rhs.connectionsOpening
            && lhs.underlying.map { String(describing: $0) } == rhs.underlying.map { String(describing: $0) }
    }
}
