import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
@testable import Lifeguard
import LifeguardHummingbird
import LifeguardTestUtils
import Prometheus
import Synchronization
import Testing

/// A connect error whose description names a host, a user and a password, as some drivers'
/// errors do: none of it may reach an HTTP client.
struct LeakyConnectError: Error, CustomStringConvertible {
    var description: String { "could not connect to db.internal:5432 as app with password hunter2-secret" }
}

/// Runs `body` with `pool` running, and shuts it down on every path: a test that throws must not
/// leave `run()` waiting for ever.
func withRunning<Value: Sendable>(
    _ pool: ConnectionPool<InMemoryConnectionFactory, SystemPoolClock>,
    _ body: () async throws -> Value
) async throws -> Value {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await pool.run() }
        let value: Value
        do {
            value = try await body()
        } catch {
            pool.shutdown()
            throw error
        }
        pool.shutdown()
        try await group.waitForAll()
        return value
    }
}

@Suite("Hummingbird: errors as HTTP, a deadline per request, the pool's routes", .timeLimit(.minutes(3)))
struct LifeguardHummingbirdTests {
    static let errors: [(LifeguardError, HTTPResponse.Status, retryAfter: String?)] = [
        (.shed(lane: .retrieval, waited: .zero, queueDepth: 40, expectedWait: .milliseconds(1_200)), .serviceUnavailable, "2"),
        (.overloaded(lane: .write, queueDepth: 1_000), .serviceUnavailable, "1"),
        (.waitTimeout(lane: .retrieval, waited: .milliseconds(500), queueDepth: 12), .serviceUnavailable, "1"),
        (.waitTimeout(lane: .retrieval, waited: .zero, queueDepth: 12, expectedWait: .milliseconds(450),
                      admissionLimit: .milliseconds(400)), .serviceUnavailable, "1"),
        (LifeguardError(code: .databaseUnavailable, lane: .retrieval, waited: .zero, underlying: LeakyConnectError()),
         .serviceUnavailable, "1"),
        (.shutdown(lane: .retrieval), .serviceUnavailable, "5"),
        (.deadlineExceeded(lane: .retrieval, waited: .zero, queueDepth: 3, expectedWait: .milliseconds(200),
                           remaining: .milliseconds(100)), .gatewayTimeout, nil),
        (.invalidConfiguration(["budget is 0; postgres://app:hunter2-secret@db"]), .internalServerError, nil),
    ]

    @Test("a LifeguardError thrown by a route is a 503 with Retry-After (shed, overloaded, waitTimeout, databaseUnavailable, shutdown), a 504 (deadlineExceeded) or a 500, with a JSON body naming the lane and never a cause, setting or password")
    func errorsBecomeHTTPResponses() async throws {
        let router = Router()
        router.get("/fail/:index") { _, context -> String in
            let index = try context.parameters.require("index", as: Int.self)
            throw Self.errors[index].0
        }
        let app = Application(router: router)
        try await app.test(.router) { client in
            for (index, (error, status, retryAfter)) in Self.errors.enumerated() {
                try await client.execute(uri: "/fail/\(index)", method: .get) { response in
                    #expect(response.status == status, "\(error.code)")
                    #expect(response.headers[.retryAfter] == retryAfter, "\(error.code)")
                    let body = String(buffer: response.body)
                    #expect(!body.contains("hunter2"), "\(error.code): \(body)")
                    #expect(!body.contains("db.internal"), "\(error.code): \(body)")
                    let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: [String: Any]]
                    let details = json?["error"]
                    if status == .internalServerError {
                        #expect(details?["code"] as? String == "internalError")
                        #expect(details?["lane"] == nil)
                    } else {
                        #expect(details?["code"] as? String == error.code.description)
                        #expect(details?["lane"] as? String == error.lane?.name)
                        #expect((details?["message"] as? String)?.contains("lane '\(error.lane?.name ?? "")'") == true
                            || error.code == .databaseUnavailable || error.code == .shutdown, "\(body)")
                    }
                }
            }
        }
    }

    @Test("the deadline middleware gives each request the earlier of its budget and the client's X-Request-Timeout-Ms; a header never lengthens the budget, and a malformed one is ignored")
    func deadlineMiddleware() async throws {
        let router = Router()
        router.add(middleware: RequestDeadlineMiddleware(budget: .seconds(2)))
        router.get("/left") { _, _ -> String in
            guard let deadline = RequestDeadline.current else { return "none" }
            let left = PoolInstant.now.duration(to: deadline)
            return String(Double(left.components.seconds) * 1_000 + Double(left.components.attoseconds) / 1e15)
        }
        let headerOnly = Router()
        headerOnly.add(middleware: RequestDeadlineMiddleware(budget: nil))
        headerOnly.get("/left") { _, _ -> String in RequestDeadline.current == nil ? "none" : "set" }

        @Sendable func left(_ client: some TestClientProtocol, header: String?) async throws -> Double {
            let headers: HTTPFields = header.map { [HTTPField.Name("X-Request-Timeout-Ms")!: $0] } ?? [:]
            return try await client.execute(uri: "/left", method: .get, headers: headers) { Double(String(buffer: $0.body)) ?? -1 }
        }
        try await Application(router: router).test(.router) { client in
            let budget = try await left(client, header: nil)
            #expect((1_500...2_000).contains(budget), "\(budget)")
            let asked = try await left(client, header: "150")
            #expect((50...150).contains(asked), "\(asked)")
            let longer = try await left(client, header: "60000")
            #expect((1_500...2_000).contains(longer), "\(longer)")
            for malformed in ["-5", "0", "abc", "1e9", "99999999999999999999"] {
                let ignored = try await left(client, header: malformed)
                #expect((1_500...2_000).contains(ignored), "\(malformed): \(ignored)")
            }
        }
        try await Application(router: headerOnly).test(.router) { client in
            try await client.execute(uri: "/left", method: .get) { #expect(String(buffer: $0.body) == "none") }
            try await client.execute(uri: "/left", method: .get, headers: [HTTPField.Name("X-Request-Timeout-Ms")!: "300"]) {
                #expect(String(buffer: $0.body) == "set")
            }
        }
    }

    @Test("a request whose lease cannot be served within its deadline gets a 504 at once, and the pool counts it as deadlineExceeded")
    func deadlineExceededThroughThePool() async throws {
        var configuration = PoolConfiguration(budget: 1)
        // A long waitTimeout: the suite runs hundreds of tests at once on two cores, and the
        // pool's first connection can take a while to open; the deadline decides here.
        configuration.lanes = [.retrieval: .init(waitTimeout: .seconds(20))]
        let pool = try ConnectionPool(configuration: configuration, factory: InMemoryConnectionFactory(), logger: .init(label: "test"))
        let router = Router()
        router.add(middleware: RequestDeadlineMiddleware(budget: .seconds(5)))
        let refusal = Mutex<LifeguardError?>(nil)
        router.get("/query") { _, _ -> String in
            do {
                return try await pool.withConnection(lane: .retrieval) { _ in "served" }
            } catch let error as LifeguardError {
                refusal.withLock { $0 = error }
                throw error
            }
        }
        try await withRunning(pool) {
            // Teach the lane a 400 ms hold, then hold its one connection again.
            try await pool.withConnection(lane: .retrieval) { _ in try await Task.sleep(for: .milliseconds(400)) }
            // Held until the test lets go, not for a fixed time: on a loaded machine the test may
            // not run again before a timed hold ended, and then waited for ever to see it.
            let (release, letGo) = AsyncStream<Void>.makeStream()
            defer { letGo.finish() }
            let held = Task {
                try await pool.withConnection(lane: .retrieval) { _ in
                    for await _ in release { break }
                }
            }
            await pool.status(where: { $0.leased == 1 })
            try await Application(router: router).test(.router) { client in
                // 400 ms to expect, 100 ms allowed: refused at once.
                try await client.execute(uri: "/query", method: .get, headers: [HTTPField.Name("X-Request-Timeout-Ms")!: "100"]) { response in
                    #expect(response.status == .gatewayTimeout)
                    #expect(String(buffer: response.body).contains("deadlineExceeded"))
                }
                // At once, for its wait to expect, not after waiting out the 100 ms.
                let error = refusal.withLock { $0 }
                #expect(error?.waited == .zero)
                #expect(error?.expectedWait != nil)
            }
            letGo.finish()
            try await held.value
            #expect(pool.statistics()[.retrieval]?.outcomes.deadlineExceeded == 1)
        }
    }

    @Test("the pool's routes: /pool/statistics is the pool's PoolStatistics, /pool/report its report, /pool/snapshot what the dashboard draws, /pool the page, /metrics the Prometheus registry the pool exports to")
    func poolRoutes() async throws {
        var configuration = PoolConfiguration(budget: 4)
        configuration.lanes = [.retrieval: .init(waitTimeout: .seconds(20)), .write: .init(waitTimeout: .seconds(20))]
        configuration.metricsInterval = .milliseconds(100)
        configuration.metricNames = [.lifeguard, .openTelemetry]
        let registry = PrometheusCollectorRegistry()
        let pool = try ConnectionPool(
            configuration: configuration, factory: InMemoryConnectionFactory(), logger: .init(label: "test"),
            metricsFactory: PrometheusMetricsFactory(registry: registry))
        let router = Router()
        router.addPoolRoutes(pool)
        router.addMetricsRoute(registry)
        try await withRunning(pool) {
            for _ in 0..<7 { try await pool.withConnection(lane: .retrieval) { _ in } }
            try await pool.withConnection(lane: .write) { _ in }
            try await Application(router: router).test(.router) { client in
                try await client.execute(uri: "/pool/statistics", method: .get) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
                    let statistics = try JSONDecoder().decode(PoolStatistics.self, from: Data(buffer: response.body))
                    #expect(statistics[.retrieval]?.outcomes.granted == 7)
                    #expect(statistics[.write]?.outcomes.granted == 1)
                    #expect(statistics.hold.bins?.reduce(0) { $0 + $1.count } == 8)
                }
                try await client.execute(uri: "/pool/report", method: .get) { response in
                    #expect(response.headers[.contentType]?.hasPrefix("text/plain") == true)
                    #expect(String(buffer: response.body) == pool.report() || String(buffer: response.body).contains("retrieval"))
                }
                try await client.execute(uri: "/pool/snapshot", method: .get) { response in
                    let json = try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]
                    let connections = json?["connections"] as? [String: Int]
                    #expect(connections?["budget"] == 4)
                    #expect((connections?["idle"] ?? 0) >= 1)
                    #expect((json?["lanes"] as? [[String: Any]])?.compactMap { $0["lane"] as? String } == ["retrieval", "write"])
                    #expect(json?["advice"] != nil)
                    #expect(json?["incidentWaitMilliseconds"] as? Double == 50)
                }
                try await client.execute(uri: "/pool", method: .get) { response in
                    #expect(response.headers[.contentType] == "text/html; charset=utf-8")
                    let page = String(buffer: response.body)
                    #expect(page.contains("<title>Lifeguard pool</title>"))
                    // Self-contained: no script, style, image or font from elsewhere.
                    for outside in ["src=", "href=", "<link", "@import", "url("] {
                        #expect(!page.contains(outside), "\(outside)")
                    }
                }
                // The pool exports every metricsInterval while it runs.
                var metrics = ""
                for _ in 0..<50 where !metrics.contains("lifeguard_lease_outcomes_total") {
                    try await Task.sleep(for: .milliseconds(100))
                    metrics = try await client.execute(uri: "/metrics", method: .get) { String(buffer: $0.body) }
                }
                #expect(metrics.contains(#"lifeguard_lease_outcomes_total{pool="lifeguard",lane="retrieval",outcome="granted"} 7"#), "\(metrics)")
                // OpenTelemetry's names beside them, with Prometheus's underscores for dots.
                #expect(metrics.contains(#"db_client_connection_max{db_client_connection_pool_name="lifeguard"} 4"#), "\(metrics)")
                #expect(metrics.contains(#"db_client_connection_use_time_count{db_client_connection_pool_name="lifeguard"} 8"#), "\(metrics)")
            }
        }
    }
}
