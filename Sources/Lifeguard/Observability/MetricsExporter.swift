import CoreMetrics
import Histogram
import Synchronization

/// Publishes the pool's statistics through swift-metrics, under Lifeguard's names
/// (`lifeguard_pool_wait_seconds`, `lifeguard_lease_hold_seconds`,
/// `lifeguard_lease_outcomes_total`, `lifeguard_connections`, `lifeguard_waiters`,
/// `lifeguard_utilization`, `lifeguard_generation_holds_total`, `lifeguard_long_holds_total`,
/// `lifeguard_cancellations_total`, `lifeguard_capacity`, `lifeguard_database_available`,
/// `lifeguard_connect_failures_total`; each with the pool's `name` as `pool`), OpenTelemetry's
/// (`db.client.connection.*`, see ``MetricNames/openTelemetry``), or both.
///
/// It runs in the pool's run loop, once per `metricsInterval` (1 s), from what the state machine recorded:
/// counters move by what changed since the last export, timers get the waits and holds recorded
/// since then (replayed from the histograms' buckets, at their bucket's value), gauges are set.
/// Nothing of it runs on the lease path.
final class MetricsExporter: Sendable {
    struct LaneMetrics {
        let wait: Timer
        let hold: Timer
        let granted, timeout, shed, overloaded, deadlineExceeded, cancelled, unavailable, shutdown: Counter
        let generationHolds, longHolds, cancellations: Counter
        let waiters: Gauge
    }

    struct PoolMetrics {
        let idle, leased, opening: Gauge
        let utilizationP50, utilizationP99, capacity: Gauge
        let databaseAvailable: Gauge
        let connectFailures: Counter
    }

    /// OpenTelemetry's database client connection pool metrics.
    struct OpenTelemetryMetrics {
        let idle, used, max, idleMax, idleMin, pendingRequests: Gauge
        let timeouts: Counter
        let createTime, waitTime, useTime: Timer

        init(poolName: String, factory: any MetricsFactory) {
            let pool = [("db.client.connection.pool.name", poolName)]
            self.idle = Gauge(label: "db.client.connection.count", dimensions: pool + [("db.client.connection.state", "idle")], factory: factory)
            self.used = Gauge(label: "db.client.connection.count", dimensions: pool + [("db.client.connection.state", "used")], factory: factory)
            self.max = Gauge(label: "db.client.connection.max", dimensions: pool, factory: factory)
            self.idleMax = Gauge(label: "db.client.connection.idle.max", dimensions: pool, factory: factory)
            self.idleMin = Gauge(label: "db.client.connection.idle.min", dimensions: pool, factory: factory)
            self.pendingRequests = Gauge(label: "db.client.connection.pending_requests", dimensions: pool, factory: factory)
            self.timeouts = Counter(label: "db.client.connection.timeouts", dimensions: pool, factory: factory)
            self.createTime = Timer(label: "db.client.connection.create_time", dimensions: pool, preferredDisplayUnit: .seconds, factory: factory)
            self.waitTime = Timer(label: "db.client.connection.wait_time", dimensions: pool, preferredDisplayUnit: .seconds, factory: factory)
            self.useTime = Timer(label: "db.client.connection.use_time", dimensions: pool, preferredDisplayUnit: .seconds, factory: factory)
        }
    }

    /// What was exported last, to export only what changed.
    struct Exported {
        var windowStart: PoolInstant?
        var window: StatisticsRecorder.Window?
    }

    /// Empty without ``MetricNames/lifeguard``.
    let lanes: [LaneMetrics]
    let pool: PoolMetrics?
    let openTelemetry: OpenTelemetryMetrics?
    let budget: Int
    let minimumIdle: Int
    let exported = Mutex(Exported())

    init(laneNames: [String], configuration: PoolConfiguration, factory: any MetricsFactory) {
        self.budget = configuration.budget
        self.minimumIdle = configuration.minimumIdle
        self.openTelemetry = configuration.metricNames.contains(.openTelemetry)
            ? OpenTelemetryMetrics(poolName: configuration.name, factory: factory) : nil
        guard configuration.metricNames.contains(.lifeguard) else {
            self.lanes = []
            self.pool = nil
            return
        }
        let pool = [("pool", configuration.name)]
        self.lanes = laneNames.map { name in
            let lane = pool + [("lane", name)]
            func outcome(_ outcome: String) -> Counter {
                Counter(label: "lifeguard_lease_outcomes_total", dimensions: lane + [("outcome", outcome)], factory: factory)
            }
            return LaneMetrics(
                wait: Timer(label: "lifeguard_pool_wait_seconds", dimensions: lane, factory: factory),
                hold: Timer(label: "lifeguard_lease_hold_seconds", dimensions: lane, factory: factory),
                granted: outcome("granted"), timeout: outcome("timeout"), shed: outcome("shed"),
                overloaded: outcome("overloaded"), deadlineExceeded: outcome("deadline_exceeded"),
                cancelled: outcome("cancelled"), unavailable: outcome("unavailable"), shutdown: outcome("shutdown"),
                generationHolds: Counter(label: "lifeguard_generation_holds_total", dimensions: lane, factory: factory),
                longHolds: Counter(label: "lifeguard_long_holds_total", dimensions: lane, factory: factory),
                cancellations: Counter(label: "lifeguard_cancellations_total", dimensions: lane, factory: factory),
                waiters: Gauge(label: "lifeguard_waiters", dimensions: lane, factory: factory))
        }
        self.pool = PoolMetrics(
            idle: Gauge(label: "lifeguard_connections", dimensions: pool + [("state", "idle")], factory: factory),
            leased: Gauge(label: "lifeguard_connections", dimensions: pool + [("state", "leased")], factory: factory),
            opening: Gauge(label: "lifeguard_connections", dimensions: pool + [("state", "opening")], factory: factory),
            utilizationP50: Gauge(label: "lifeguard_utilization", dimensions: pool + [("quantile", "0.5")], factory: factory),
            utilizationP99: Gauge(label: "lifeguard_utilization", dimensions: pool + [("quantile", "0.99")], factory: factory),
            capacity: Gauge(label: "lifeguard_capacity", dimensions: pool, factory: factory),
            databaseAvailable: Gauge(label: "lifeguard_database_available", dimensions: pool, factory: factory),
            connectFailures: Counter(label: "lifeguard_connect_failures_total", dimensions: pool, factory: factory))
    }

    /// A connection took `duration` to open (OpenTelemetry's `db.client.connection.create_time`).
    func connectionCreated(in duration: Duration) {
        self.openTelemetry?.createTime.recordNanoseconds(duration.wholeNanoseconds)
    }

    /// Exports what changed since the last call.
    func export(_ inputs: PoolStateMachine.StatisticsInputs, status: PoolStatus, laneOrder: [Lane], now: PoolInstant) {
        let recorder = inputs.recorder
        // The windows to export from: the current one, and the previous one too when it was the
        // current one at the last export (it rotated since).
        let (fresh, last) = self.exported.withLock { exported -> ([StatisticsRecorder.Window], StatisticsRecorder.Window?) in
            var fresh = [recorder.current]
            var last = exported.window
            if let start = exported.windowStart, start != recorder.current.start {
                if let previous = recorder.previous, previous.start == start {
                    fresh.insert(previous, at: 0)
                } else {
                    last = nil
                }
            }
            exported = Exported(windowStart: recorder.current.start, window: recorder.current)
            return (fresh, last)
        }
        for (index, window) in fresh.enumerated() {
            // Only the first window can have been partly exported before.
            let before = index == 0 ? last.flatMap { $0.start == window.start ? $0 : nil } : nil
            if let openTelemetry = self.openTelemetry {
                for lane in window.lanes.indices {
                    let waits = recorder.layout.waitBuckets(ofLane: lane)
                    let holds = recorder.layout.holdBuckets(ofLane: lane)
                    Self.replay(window.counters[waits], since: before?.counters[waits], into: openTelemetry.waitTime)
                    Self.replay(window.counters[holds], since: before?.counters[holds], into: openTelemetry.useTime)
                    Self.increment(openTelemetry.timeouts, window.lanes[lane].outcomes.timeout, before?.lanes[lane].outcomes.timeout)
                }
            }
            if let pool = self.pool {
                Self.increment(pool.connectFailures, window.connections.connectFailures, before?.connections.connectFailures)
            }
            for lane in self.lanes.indices {
                let metrics = self.lanes[lane]
                let now = window.lanes[lane]
                let then = before?.lanes[lane]
                let waits = recorder.layout.waitBuckets(ofLane: lane)
                let holds = recorder.layout.holdBuckets(ofLane: lane)
                Self.replay(window.counters[waits], since: before?.counters[waits], into: metrics.wait)
                Self.replay(window.counters[holds], since: before?.counters[holds], into: metrics.hold)
                Self.increment(metrics.granted, now.outcomes.granted, then?.outcomes.granted)
                Self.increment(metrics.timeout, now.outcomes.timeout, then?.outcomes.timeout)
                Self.increment(metrics.shed, now.outcomes.shed, then?.outcomes.shed)
                Self.increment(metrics.overloaded, now.outcomes.overloaded, then?.outcomes.overloaded)
                Self.increment(metrics.deadlineExceeded, now.outcomes.deadlineExceeded, then?.outcomes.deadlineExceeded)
                Self.increment(metrics.cancelled, now.outcomes.cancelled, then?.outcomes.cancelled)
                Self.increment(metrics.unavailable, now.outcomes.unavailable, then?.outcomes.unavailable)
                Self.increment(metrics.shutdown, now.outcomes.shutdown, then?.outcomes.shutdown)
                Self.increment(metrics.generationHolds, now.generationHolds, then?.generationHolds)
                Self.increment(metrics.longHolds, now.longHolds, then?.longHolds)
                Self.increment(
                    metrics.cancellations, now.outcomes.cancelled + now.cancelledLeases,
                    then.map { $0.outcomes.cancelled + $0.cancelledLeases })
            }
        }
        if let openTelemetry = self.openTelemetry {
            openTelemetry.idle.record(status.idle)
            openTelemetry.used.record(status.leased)
            openTelemetry.max.record(self.budget)
            openTelemetry.idleMax.record(self.budget)
            openTelemetry.idleMin.record(self.minimumIdle)
            openTelemetry.pendingRequests.record(status.waiters)
        }
        guard let pool = self.pool else { return }
        for (index, lane) in laneOrder.enumerated() {
            self.lanes[index].waiters.record(status.lanes[lane]?.waiters ?? 0)
        }
        pool.idle.record(status.idle)
        pool.leased.record(status.leased)
        pool.opening.record(status.opening)
        let snapshot = inputs.snapshot(now: now)
        pool.utilizationP50.record(snapshot.utilizationP50)
        pool.utilizationP99.record(snapshot.utilizationP99)
        pool.capacity.record(snapshot.capacity)
        pool.databaseAvailable.record(status.isDatabaseAvailable ? 1 : 0)
    }

    static func increment(_ counter: Counter, _ now: UInt64, _ then: UInt64?) {
        let delta = now &- (then ?? 0)
        if delta > 0 && delta <= now {
            counter.increment(by: Int64(clamping: delta))
        }
    }

    /// Records into `timer` the values counted in `counts` (``LatencyBuckets``) since `before`,
    /// each at its bucket's lowest value.
    static func replay(_ counts: ArraySlice<UInt64>, since before: ArraySlice<UInt64>?, into timer: Timer) {
        for (bucket, (count, then)) in zip(0..., zip(counts, before ?? ArraySlice(repeating: 0, count: counts.count))) where count > then {
            let nanoseconds = Int64(clamping: LatencyBuckets.lowestMicroseconds(at: bucket)) &* 1_000
            for _ in 0..<(count - then) {
                timer.recordNanoseconds(nanoseconds)
            }
        }
    }
}
