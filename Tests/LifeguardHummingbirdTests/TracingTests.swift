import Hummingbird
import HummingbirdTesting
import InMemoryTracing
@testable import Lifeguard
import LifeguardTestUtils
import Logging
import Testing
import Tracing

@Suite("Hummingbird: the pool's spans under TracingMiddleware's", .timeLimit(.minutes(3)))
struct TracingTests {
    @Test("a route's leases (a fan-out's each) are children of the request's span from TracingMiddleware")
    func leasesUnderRequestSpan() async throws {
        let tracer = InMemoryTracer()
        var configuration = PoolConfiguration(budget: 4)
        configuration.lanes = [.retrieval: LaneConfiguration(waitTimeout: .seconds(20))]
        let pool = try ConnectionPool(
            configuration: configuration,
            factory: InMemoryConnectionFactory(), logger: Logger(label: "test"), tracer: tracer)
        let router = Router()
        router.add(middleware: TracingMiddleware())
        router.get("/search") { _, _ -> String in
            let rows = try await pool.fanOut(lane: .retrieval, maxConcurrent: 3, Array(0..<3)) { _, index in index }
            return "\(rows.count)"
        }
        try await withRunning(pool) {
            try await withTracer(tracer) {
                try await Application(router: router).test(.router) { client in
                    try await client.execute(uri: "/search", method: .get) { response in
                        #expect(response.status == .ok)
                    }
                }
            }
        }
        let spans = tracer.finishedSpans
        let request = try #require(spans.first { $0.kind == .server }, "\(spans.map(\.operationName))")
        let leases = spans.filter { $0.operationName == "lease retrieval" }
        #expect(leases.count == 3)
        #expect(leases.allSatisfy { $0.traceID == request.traceID && $0.parentSpanID == request.spanID })
    }
}
