import Logging
import MetricsTestKit
import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("Metrics export")
struct MetricsExporterTests {
    @Test("counters, timers and gauges carry the design's names and labels, and each export adds only what changed")
    func exportsDeltas() async throws {
        let metrics = TestMetrics()
        let pool = try ConnectionPool(
            configuration: .testing(budget: 2, lanes: [.write: .init(), .retrieval: .init()]),
            factory: InMemoryConnectionFactory(), logger: Logger(label: "test"), metricsFactory: metrics)
        let runner = Task { await pool.run() }
        for _ in 0..<5 { try await pool.withConnection(lane: .write) { _ in } }
        pool.exportMetrics()
        let granted = try metrics.expectCounter("lifeguard_lease_outcomes_total", [("lane", "write"), ("outcome", "granted")])
        #expect(granted.totalValue == 5)
        #expect(try metrics.expectTimer("lifeguard_lease_hold_seconds", [("lane", "write")]).values.count == 5)
        #expect(try metrics.expectTimer("lifeguard_pool_wait_seconds", [("lane", "write")]).values.count == 5)
        #expect(try metrics.expectGauge("lifeguard_connections", [("state", "idle")]).lastValue == 1)
        #expect(try metrics.expectGauge("lifeguard_capacity").lastValue == 2)
        #expect(try metrics.expectGauge("lifeguard_utilization", [("quantile", "0.99")]).lastValue != nil)

        for _ in 0..<3 { try await pool.withConnection(lane: .write) { _ in } }
        pool.exportMetrics()
        pool.exportMetrics()
        #expect(granted.totalValue == 8, "no double counting across exports")
        #expect(try metrics.expectTimer("lifeguard_lease_hold_seconds", [("lane", "write")]).values.count == 8)
        pool.shutdown(gracePeriod: .zero)
        await runner.value
    }
}
