import InMemoryTracing
import Logging
import Testing
import Tracing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("Lease spans (InMemoryTracing, in-memory connections)", .timeLimit(.minutes(3)))
struct LeaseSpanTests {
    func pool(
        _ configuration: PoolConfiguration, tracer: (any Tracer)?
    ) throws -> ConnectionPool<InMemoryConnectionFactory, SystemPoolClock> {
        try ConnectionPool(configuration: configuration, factory: InMemoryConnectionFactory(), logger: Logger(label: "test"), tracer: tracer)
    }

    func running<Value>(
        _ pool: ConnectionPool<InMemoryConnectionFactory, SystemPoolClock>, _ body: () async throws -> Value
    ) async throws -> Value {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await pool.run() }
            defer { pool.shutdown(gracePeriod: .zero) }
            return try await body()
        }
    }

    @Test("a lease is a span under the caller's: its lane, wait, outcome, pool name and call site")
    func grantedLease() async throws {
        let tracer = InMemoryTracer()
        var configuration = PoolConfiguration.testing(budget: 2, lanes: [.retrieval: .patient])
        configuration.name = "search-pool"
        let pool = try self.pool(configuration, tracer: tracer)
        try await self.running(pool) {
            try await tracer.withSpan("GET /search") { _ in
                try await pool.withConnection(lane: .retrieval) { _ in }
            }
        }
        let spans = tracer.finishedSpans
        let request = try #require(spans.first { $0.operationName == "GET /search" })
        let lease = try #require(spans.first { $0.operationName == "lease retrieval" })
        #expect(lease.parentSpanID == request.spanID)
        #expect(lease.traceID == request.traceID)
        #expect(lease.kind == .internal)
        #expect(lease.attributes.get("lifeguard.lane") == .string("retrieval"))
        #expect(lease.attributes.get("lifeguard.lease.outcome") == .string("granted"))
        #expect(lease.attributes.get("db.client.connection.pool.name") == .string("search-pool"))
        #expect(lease.attributes.get("code.function.name") == .string("grantedLease()"))
        #expect(lease.attributes.get("code.file.path") == .string("LifeguardTests/LeaseSpanTests.swift"))
        guard case .double(let waited) = lease.attributes.get("lifeguard.lease.wait_time") else {
            Issue.record("no wait time: \(lease.attributes)")
            return
        }
        // How long is the machine's business (the first lease opens the connection): a wait, in seconds.
        #expect(waited >= 0)
        #expect(lease.status == nil)
        #expect(lease.errors.isEmpty)
    }

    @Test("a refused lease ends its span with the refusal's code as error.type, and the body's error marks the span")
    func refusedLease() async throws {
        let tracer = InMemoryTracer()
        var configuration = PoolConfiguration.testing(budget: 1, lanes: [.write: .init(waitTimeout: .seconds(5), maxWaiters: 0, shedding: nil)])
        configuration.minimumIdle = 1
        let pool = try self.pool(configuration, tracer: tracer)
        struct Boom: Error {}
        try await self.running(pool) {
            while pool.status().idle == 0 { try await Task.sleep(for: .milliseconds(1)) }
            try await pool.withConnection(lane: .write) { _ in
                // The only connection is held, and the lane queues nobody: refused at once.
                await #expect(throws: LifeguardError.self) {
                    try await pool.withConnection(lane: .write) { _ in }
                }
            }
            await #expect(throws: Boom.self) {
                try await pool.withConnection(lane: .write) { _ in throw Boom() }
            }
        }
        let leases = tracer.finishedSpans.filter { $0.operationName == "lease write" }
        #expect(leases.count == 3)
        let refused = try #require(leases.first { $0.attributes.get("lifeguard.lease.outcome") == .string("overloaded") })
        #expect(refused.attributes.get("error.type") == .string("overloaded"))
        #expect(refused.status?.code == .error)
        #expect(refused.errors.count == 1)
        #expect(refused.attributes.get("lifeguard.lease.wait_time") == nil)
        let failed = try #require(leases.first { span in
            if case .string(let type) = span.attributes.get("error.type") { return type.hasSuffix("Boom") }
            return false
        })
        #expect(failed.attributes.get("lifeguard.lease.outcome") == .string("granted"))
        #expect(failed.status?.code == .error)
    }

    @Test("with no tracer, or the no-op one, the pool keeps none: a lease pays one comparison for tracing")
    func noTracer() throws {
        #expect(try self.pool(.testing(budget: 1, lanes: [.write: .init()]), tracer: nil).tracer == nil)
        #expect(try self.pool(.testing(budget: 1, lanes: [.write: .init()]), tracer: NoOpTracer()).tracer == nil)
        // The task's tracer (swift-distributed-tracing's `withTracer`) counts as bootstrapped.
        let scoped = InMemoryTracer()
        let pool = try withTracer(scoped) { try self.pool(.testing(budget: 1, lanes: [.write: .init()]), tracer: nil) }
        #expect(pool.tracer is InMemoryTracer)
    }
}
