/// The settings of a ``ConnectionPool``: its budget, its lanes and how it keeps connections healthy.
///
/// Every setting has a documented default. ``validate()`` reports every problem at once;
/// ``ConnectionPool/init(configuration:factory:clock:logger:metricsFactory:tracer:)`` calls it, so a pool never runs with a
/// bad configuration.
public struct PoolConfiguration: Sendable, Hashable {
    /// The number of server connections this pool may open at once (per database host).
    /// Default: 10.
    public var budget: Int

    /// The lanes requests can use, with their limits.
    ///
    /// Default: ``Lane/retrieval`` and ``Lane/write`` with the whole budget as limit, and
    /// ``Lane/generation`` capped at 2 connections. A request for a lane not listed here fails
    /// with ``LifeguardError/Code/unknownLane``.
    public var lanes: [Lane: LaneConfiguration]

    /// The pool's name where observers tell pools apart: its trace spans, the `pool` dimension
    /// of its `lifeguard_*` metrics and the OpenTelemetry metrics
    /// (`db.client.connection.pool.name`). Give each pool of a process its own. Default: `lifeguard`.
    public var name: String

    /// Which names the pool's metrics go out under: Lifeguard's own (`lifeguard_*`, the
    /// dashboards and alerts of DESIGN.md), OpenTelemetry's database client conventions
    /// (`db.client.connection.*`), or both. Default: ``MetricNames/lifeguard``.
    public var metricNames: MetricNames

    /// Idle connections the pool keeps open even when nothing asks for them. Default: 0.
    public var minimumIdle: Int

    /// An idle connection above ``minimumIdle`` is closed after this long without use;
    /// `nil` never closes idle connections. Checked about once a second. Default: 60 s.
    public var idleTimeout: Duration?

    /// A connection is closed and replaced after this long, when it is next idle; `nil` keeps
    /// connections forever. Set it below any proxy's own limit (RDS Proxy: 24 h). Default: 30 min.
    public var maxLifetime: Duration?

    /// Each connection's lifetime is shortened by a random part of this fraction of
    /// ``maxLifetime`` so that connections opened together are not all replaced together.
    /// Between 0 and 1. Default: 0.1.
    public var maxLifetimeJitter: Double

    /// An idle connection is pinged after this long without use, so that a dead connection is
    /// found before a request gets it; `nil` turns keepalive off. Default: 30 s.
    public var keepaliveInterval: Duration?

    /// A connection idle for longer than this is validated (pinged) before it is handed out;
    /// `nil` never validates. Default: 10 s.
    public var validationThreshold: Duration?

    /// How long a validation or keepalive ping may take before the connection is closed.
    /// Default: 2 s.
    public var pingTimeout: Duration

    /// How long resetting a connection after an abandoned lease (a body that threw or was
    /// cancelled) may take before the connection is closed and replaced. Default: 2 s.
    public var resetTimeout: Duration

    /// The first delay before reconnecting after a failed connection attempt; it doubles with
    /// each further failure, with jitter. Default: 50 ms.
    public var reconnectInitialDelay: Duration

    /// The longest delay between reconnection attempts. Default: 2 s.
    public var reconnectMaximumDelay: Duration

    /// On graceful shutdown, how long leases may run before their connections are closed.
    /// Default: 10 s.
    public var shutdownGracePeriod: Duration

    /// How often ``ConnectionPool/run()`` publishes what changed through swift-metrics (and
    /// checks for incidents: slow waits, the leak signal). Default: 1 s.
    public var metricsInterval: Duration

    /// A lease held longer than this is reported once, with its lane and call site;
    /// `nil` turns the report off. Default: 5 s.
    public var longHoldThreshold: Duration?

    /// A lease with no statement running for longer than this is reported once as a probable
    /// generation hold (a connection held across a model call), with its call site; `nil`
    /// turns the report off. Needs a factory that tracks activity. Default: 1 s.
    public var idleInLeaseThreshold: Duration?

    /// What a lease requested inside a ``GenerationStep`` does: `.warn` grants it and reports
    /// its call site once, `.forbid` refuses it. Default: `.warn`.
    public var leaseDuringGeneration: LeaseDuringGeneration

    /// Whether the pool records waits, holds and in-use levels (``ConnectionPool/statistics()``,
    /// metrics, sizing advice). Outcome counts are kept either way. Default: true; turning it
    /// off is for measuring what recording costs.
    public var recordsStatistics: Bool

    /// The length of a statistics window: ``ConnectionPool/statistics()`` covers the current
    /// window and the one before it. Default: 60 s.
    public var statisticsWindow: Duration

    /// Creates a configuration with the default settings and the given budget.
    ///
    /// - Parameter budget: The number of server connections this pool may open. Default: 10.
    public init(budget: Int = 10) {
        self.budget = budget
        self.name = "lifeguard"
        self.metricNames = .lifeguard
        self.lanes = [
            .retrieval: LaneConfiguration(),
            .write: LaneConfiguration(),
            .generation: LaneConfiguration(limit: 2),
        ]
        self.minimumIdle = 0
        self.idleTimeout = .seconds(60)
        self.maxLifetime = .seconds(30 * 60)
        self.maxLifetimeJitter = 0.1
        self.keepaliveInterval = .seconds(30)
        self.validationThreshold = .seconds(10)
        self.pingTimeout = .seconds(2)
        self.resetTimeout = .seconds(2)
        self.reconnectInitialDelay = .milliseconds(50)
        self.reconnectMaximumDelay = .seconds(2)
        self.shutdownGracePeriod = .seconds(10)
        self.metricsInterval = .seconds(1)
        self.statisticsWindow = .seconds(60)
        self.recordsStatistics = true
        self.longHoldThreshold = .seconds(5)
        self.idleInLeaseThreshold = .seconds(1)
        self.leaseDuringGeneration = .warn
    }

    /// Checks every setting and reports all problems at once.
    ///
    /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration`` whose
    ///   ``LifeguardError/problems`` lists each problem and the setting to change.
    public func validate() throws(LifeguardError) {
        var problems: [String] = []
        if self.budget < 1 || self.budget > Self.largestBudget {
            problems.append("budget is \(self.budget); it must be from 1 to \(Self.largestBudget)")
        }
        if self.name.isEmpty {
            problems.append("name is empty; name the pool (its spans and metrics carry the name)")
        }
        if self.lanes.isEmpty {
            problems.append("lanes is empty; configure at least one lane")
        }
        for (lane, settings) in self.lanes.sorted(by: { $0.key.name < $1.key.name }) {
            let name = "lanes[\"\(lane.name)\"]"
            if lane.name.isEmpty {
                problems.append("a lane has an empty name; give every lane a name")
            }
            if settings.reserved < 0 {
                problems.append("\(name).reserved is \(settings.reserved); it must be 0 or more")
            }
            if let limit = settings.limit {
                if limit < 1 {
                    problems.append("\(name).limit is \(limit); it must be at least 1 (or nil for the whole budget)")
                } else if settings.reserved > limit {
                    problems.append("\(name).reserved (\(settings.reserved)) exceeds its limit (\(limit)); lower reserved or raise limit")
                }
            }
            Self.requirePositive(settings.waitTimeout, "\(name).waitTimeout", &problems)
            if settings.maxWaiters < 0 {
                problems.append("\(name).maxWaiters is \(settings.maxWaiters); it must be 0 or more")
            }
            if let shedding = settings.shedding {
                Self.requirePositive(shedding.target, "\(name).shedding.target", &problems)
                Self.requirePositive(shedding.interval, "\(name).shedding.interval", &problems)
                Self.requirePositive(shedding.longestOverload, "\(name).shedding.longestOverload", &problems)
                if shedding.sustainedFor < .zero || shedding.sustainedFor > Self.longestDuration {
                    problems.append("\(name).shedding.sustainedFor is \(shedding.sustainedFor); it must be 0 or more and at most a year")
                }
            }
        }
        let reservedTotal = self.lanes.values.reduce(0) { min($0 + min(max(0, $1.reserved), Self.largestBudget), Int.max / 2) }
        if self.budget >= 1 && reservedTotal > self.budget {
            problems.append("the lanes reserve \(reservedTotal) connections but the budget is \(self.budget); lower the reservations or raise budget")
        }
        if self.minimumIdle < 0 || self.minimumIdle > max(self.budget, 0) {
            problems.append("minimumIdle is \(self.minimumIdle); it must be between 0 and the budget (\(self.budget))")
        }
        Self.requirePositive(self.idleTimeout, "idleTimeout", &problems)
        Self.requirePositive(self.maxLifetime, "maxLifetime", &problems)
        Self.requirePositive(self.keepaliveInterval, "keepaliveInterval", &problems)
        Self.requirePositive(self.validationThreshold, "validationThreshold", &problems)
        Self.requirePositive(self.pingTimeout, "pingTimeout", &problems)
        Self.requirePositive(self.resetTimeout, "resetTimeout", &problems)
        Self.requirePositive(self.reconnectInitialDelay, "reconnectInitialDelay", &problems)
        Self.requirePositive(self.statisticsWindow, "statisticsWindow", &problems)
        Self.requirePositive(self.metricsInterval, "metricsInterval", &problems)
        Self.requirePositive(self.longHoldThreshold, "longHoldThreshold", &problems)
        Self.requirePositive(self.idleInLeaseThreshold, "idleInLeaseThreshold", &problems)
        if !(0...1).contains(self.maxLifetimeJitter) {
            problems.append("maxLifetimeJitter is \(self.maxLifetimeJitter); it must be between 0 and 1")
        }
        if self.reconnectMaximumDelay < self.reconnectInitialDelay {
            problems.append("reconnectMaximumDelay (\(self.reconnectMaximumDelay)) is below reconnectInitialDelay (\(self.reconnectInitialDelay)); raise it")
        }
        if self.shutdownGracePeriod < .zero || self.shutdownGracePeriod > Self.longestDuration {
            problems.append("shutdownGracePeriod is \(self.shutdownGracePeriod); it must be from 0 to a year")
        }
        if !problems.isEmpty {
            throw LifeguardError(invalidConfiguration: problems)
        }
    }

    /// The largest budget accepted: PostgreSQL's `max_connections` stops at 262,143, and no
    /// process needs more than this.
    public static let largestBudget = 100_000

    /// The longest duration any setting accepts: a year. Longer ones would overflow the
    /// pool's clock arithmetic, and mean "never" anyway (use `nil` where a setting allows it).
    package static let longestDuration: Duration = .seconds(365 * 86_400)

    private static func requirePositive(_ value: Duration?, _ name: String, _ problems: inout [String]) {
        if let value, value <= .zero || value > Self.longestDuration {
            problems.append("\(name) is \(value); it must be positive and at most a year (or nil where allowed)")
        }
    }
}

/// The names a pool's metrics go out under (``PoolConfiguration/metricNames``).
public struct MetricNames: OptionSet, Sendable, Hashable {
    public let rawValue: Int

    /// Creates a set of names from its raw value.
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Lifeguard's own: `lifeguard_pool_wait_seconds`, `lifeguard_lease_hold_seconds`,
    /// `lifeguard_lease_outcomes_total`, `lifeguard_connections`, `lifeguard_waiters`,
    /// `lifeguard_utilization`, `lifeguard_capacity`, `lifeguard_generation_holds_total`,
    /// `lifeguard_long_holds_total`, `lifeguard_cancellations_total`, by lane.
    public static let lifeguard = MetricNames(rawValue: 1 << 0)

    /// OpenTelemetry's semantic conventions for database client connection pools, each with
    /// `db.client.connection.pool.name` (``PoolConfiguration/name``):
    /// `db.client.connection.count` (with `db.client.connection.state` `idle` or `used`),
    /// `db.client.connection.max` (the budget), `db.client.connection.idle.max` (the budget:
    /// every connection may idle), `db.client.connection.idle.min` (`minimumIdle`),
    /// `db.client.connection.pending_requests` (waiters, all lanes), the counter
    /// `db.client.connection.timeouts` (leases that failed `waitTimeout`, at once or after
    /// waiting), and the histograms, in seconds, `db.client.connection.create_time` (opening a
    /// connection), `db.client.connection.wait_time` and `db.client.connection.use_time`
    /// (waiting for a lease, and holding it). Prometheus writes the dots as underscores.
    public static let openTelemetry = MetricNames(rawValue: 1 << 1)
}
