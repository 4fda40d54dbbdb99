@testable import Lifeguard
@testable import LifeguardPostgres
import MetricsTestKit
import PostgresNIO
import Testing

extension PostgresPoolTests {
    @Test("a PostgresPool sends its metrics to the metricsFactory it was given: the connections gauge is what the server sees")
    func metricsFactoryReachesPostgresUsers() async throws {
        let metrics = TestMetrics()
        let configuration = try TestDatabase.configuration(application: "lg-metrics", budget: 4)
        try await TestDatabase.withObserver { observer in
            try await TestDatabase.withPool(configuration, metricsFactory: metrics) { pool in
                // Three leases at once: three connections.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<3 {
                        group.addTask { try await pool.withConnection(lane: .retrieval) { try await $0.execute("SELECT pg_sleep(0.1)") } }
                    }
                    try await group.waitForAll()
                }
                pool.exportMetrics()
                let backends = try await observer.integer(
                    "SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'lg-metrics'")
                let states = ["idle", "leased", "opening"]
                let open = try states.map { try metrics.expectGauge("lifeguard_connections", [("pool", "lifeguard"), ("state", $0)]).lastValue ?? 0 }
                #expect(Int(open.reduce(0, +)) == backends)
                #expect(backends == 3)
                let granted = try metrics.expectCounter("lifeguard_lease_outcomes_total", [("pool", "lifeguard"), ("lane", "retrieval"), ("outcome", "granted")])
                #expect(granted.totalValue == 3)
            }
        }
    }
}
