import CoreMetrics

/// A cluster's metrics per host (`pool` = the cluster's pool name, `host` = `name:port`),
/// published by the lag sampler after each sample of the host: whether it answers, whether it
/// is a standby, its replay lag in bytes and seconds, whether the lag is past the bound, and
/// the leases the cluster ran on it.
struct ClusterHostMetrics: Sendable {
    let available, standby, lagBytes, lagSeconds, lagging: Gauge
    let leases: Counter

    init(pool: String, host: String, factory: any MetricsFactory) {
        let dimensions = [("pool", pool), ("host", host)]
        self.available = Gauge(label: "lifeguard_host_available", dimensions: dimensions, factory: factory)
        self.standby = Gauge(label: "lifeguard_host_standby", dimensions: dimensions, factory: factory)
        self.lagBytes = Gauge(label: "lifeguard_host_replication_lag_bytes", dimensions: dimensions, factory: factory)
        self.lagSeconds = Gauge(label: "lifeguard_host_replication_lag_seconds", dimensions: dimensions, factory: factory)
        self.lagging = Gauge(label: "lifeguard_host_lagging", dimensions: dimensions, factory: factory)
        self.leases = Counter(label: "lifeguard_host_leases_total", dimensions: dimensions, factory: factory)
    }

    /// Sets the gauges from `status`, and counts `newLeases` more leases.
    func publish(_ status: PostgresCluster.HostStatus, newLeases: Int) {
        self.available.record(status.downBecause == nil && status.role != "unknown" ? 1 : 0)
        self.standby.record(status.role == "standby" ? 1 : 0)
        self.lagBytes.record(status.lag?.bytes ?? 0)
        self.lagSeconds.record(Double(status.lag?.time.components.seconds ?? 0)
            + Double(status.lag?.time.components.attoseconds ?? 0) / 1e18)
        self.lagging.record(status.isLagging ? 1 : 0)
        if newLeases > 0 { self.leases.increment(by: Int64(newLeases)) }
    }
}
