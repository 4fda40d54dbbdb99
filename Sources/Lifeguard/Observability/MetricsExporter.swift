import CoreMetrics
import Histogram
import Synchronization

/// Publishes the pool's statistics through swift-metrics, with the names and labels of the
/// design (`lifeguard_pool_wait_seconds`, `lifeguard_lease_hold_seconds`,
/// `lifeguard_lease_outcomes_total`, `lifeguard_connections`, `lifeguard_waiters`,
/// `lifeguard_utilization`, `lifeguard_generation_holds_total`, `lifeguard_long_holds_total`,
/// `lifeguard_cancellations_total`, `lifeguard_capacity`).
///
/// It runs in the pool's run loop, once per `metricsInterval` (1 s), from what the state machine recorded:
/// counters move by what changed since the last export, timers get the waits and holds recorded
/// since then (replayed from the histograms' buckets, at their bucket's value), gauges are set.
/// Nothing of it runs on the lease path.
final class MetricsExporter: Sendable {
    struct LaneMetrics {
        let wait: Timer
        let hold: Timer
        let granted, timeout, shed, overloaded, deadlineExceeded, cancelled: Counter
        let generationHolds, longHolds, cancellations: Counter
        let waiters: Gauge
    }

    /// What was exported last, to export only what changed.
    struct Exported {
        var windowStart: PoolInstant?
        var window: StatisticsRecorder.Window?
    }

    let lanes: [LaneMetrics]
    let idle, leased, opening: Gauge
    let utilizationP50, utilizationP99, capacity: Gauge
    let exported = Mutex(Exported())

    init(laneNames: [String], factory: any MetricsFactory) {
        self.lanes = laneNames.map { name in
            let lane = [("lane", name)]
            func outcome(_ outcome: String) -> Counter {
                Counter(label: "lifeguard_lease_outcomes_total", dimensions: lane + [("outcome", outcome)], factory: factory)
            }
            return LaneMetrics(
                wait: Timer(label: "lifeguard_pool_wait_seconds", dimensions: lane, factory: factory),
                hold: Timer(label: "lifeguard_lease_hold_seconds", dimensions: lane, factory: factory),
                granted: outcome("granted"), timeout: outcome("timeout"), shed: outcome("shed"),
                overloaded: outcome("overloaded"), deadlineExceeded: outcome("deadline_exceeded"),
                cancelled: outcome("cancelled"),
                generationHolds: Counter(label: "lifeguard_generation_holds_total", dimensions: lane, factory: factory),
                longHolds: Counter(label: "lifeguard_long_holds_total", dimensions: lane, factory: factory),
                cancellations: Counter(label: "lifeguard_cancellations_total", dimensions: lane, factory: factory),
                waiters: Gauge(label: "lifeguard_waiters", dimensions: lane, factory: factory))
        }
        self.idle = Gauge(label: "lifeguard_connections", dimensions: [("state", "idle")], factory: factory)
        self.leased = Gauge(label: "lifeguard_connections", dimensions: [("state", "leased")], factory: factory)
        self.opening = Gauge(label: "lifeguard_connections", dimensions: [("state", "opening")], factory: factory)
        self.utilizationP50 = Gauge(label: "lifeguard_utilization", dimensions: [("quantile", "0.5")], factory: factory)
        self.utilizationP99 = Gauge(label: "lifeguard_utilization", dimensions: [("quantile", "0.99")], factory: factory)
        self.capacity = Gauge(label: "lifeguard_capacity", factory: factory)
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
                Self.increment(metrics.generationHolds, now.generationHolds, then?.generationHolds)
                Self.increment(metrics.longHolds, now.longHolds, then?.longHolds)
                Self.increment(
                    metrics.cancellations, now.outcomes.cancelled + now.cancelledLeases,
                    then.map { $0.outcomes.cancelled + $0.cancelledLeases })
            }
        }
        for (index, lane) in laneOrder.enumerated() {
            self.lanes[index].waiters.record(status.lanes[lane]?.waiters ?? 0)
        }
        self.idle.record(status.idle)
        self.leased.record(status.leased)
        self.opening.record(status.opening)
        let snapshot = inputs.snapshot(now: now)
        self.utilizationP50.record(snapshot.utilizationP50)
        self.utilizationP99.record(snapshot.utilizationP99)
        self.capacity.record(snapshot.capacity)
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
