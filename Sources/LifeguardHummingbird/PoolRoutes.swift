import Foundation
public import Hummingbird
public import Lifeguard
public import Prometheus

extension RouterMethods {
    /// Mounts the pool's routes: its live dashboard and what it reads, as JSON and as text.
    ///
    /// | route | what |
    /// |---|---|
    /// | `GET /pool` | the live dashboard, one self-contained page that updates every second |
    /// | `GET /pool/statistics` | ``Lifeguard/PoolStatistics`` as JSON, the same keys `lifeguard inspect` reads |
    /// | `GET /pool/report` | ``Lifeguard/ConnectionPool/report()``: statistics, findings and sizing advice as text |
    /// | `GET /pool/snapshot` | what the dashboard draws: statistics, connections by state, lanes' queues, sizing advice |
    ///
    /// ```swift
    /// let router = Router()
    /// router.addPoolRoutes(pool)                      // /pool, /pool/statistics, …
    /// router.addMetricsRoute(registry)                // /metrics
    /// ```
    ///
    /// These routes show how the pool is used (call sites, lane names, load): mount them where
    /// only operators reach them, or behind your authentication middleware (`router.group`).
    ///
    /// - Parameters:
    ///   - pool: The pool to show.
    ///   - path: Where to mount them. Default: `pool`.
    /// - Returns: The router, to chain calls.
    @discardableResult
    public func addPoolRoutes<Factory, Clock>(_ pool: ConnectionPool<Factory, Clock>, at path: RouterPath = "pool") -> Self {
        let group = self.group(path)
        group.get { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: PoolDashboard.html)))
        }
        group.get("statistics") { _, _ in
            try PoolRoutesEncoding.json(pool.statistics())
        }
        group.get("snapshot") { _, _ in
            try PoolRoutesEncoding.json(PoolSnapshot(pool: pool))
        }
        group.get("report") { _, _ in
            PoolRoutesEncoding.text(pool.report())
        }
        return self
    }

    /// Mounts `GET /metrics`: everything in `registry`, in Prometheus' text format.
    ///
    /// Give the pool a factory on the same registry, or bootstrap swift-metrics with one:
    ///
    /// ```swift
    /// let registry = PrometheusCollectorRegistry()
    /// let pool = try PostgresPool(configuration: configuration, logger: logger,
    ///                             metricsFactory: PrometheusMetricsFactory(registry: registry))
    /// router.addMetricsRoute(registry)
    /// ```
    ///
    /// - Parameters:
    ///   - registry: The registry to expose.
    ///   - path: Where to mount it. Default: `metrics`.
    /// - Returns: The router, to chain calls.
    @discardableResult
    public func addMetricsRoute(_ registry: PrometheusCollectorRegistry, at path: RouterPath = "metrics") -> Self {
        self.get(path) { _, _ in
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16_384)
            registry.emit(into: &buffer)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        return self
    }
}

/// How the pool's routes encode what they send.
enum PoolRoutesEncoding {
    static func json(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Figures are finite; a non-finite one (no data yet) goes out as a string, not an error.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    static func text(_ value: String) -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "text/plain; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: value)))
    }
}
