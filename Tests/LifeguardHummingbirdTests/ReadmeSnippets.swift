import Foundation
import Hummingbird
import Lifeguard
import LifeguardHummingbird
import LifeguardPostgres
import Logging
import PostgresNIO
import Prometheus
import ServiceLifecycle
import Testing

/// README's Swift snippets marked `<!-- compiled: … -->`, line for line (their imports are at the
/// top of this file): they compile here, and a test fails when README's text drifts from them.
/// They are compiled, not run.
enum ReadmeSnippets {
    static func usage(tenant: String, requestID: String, answer: String) async throws {
        var configuration = try PostgresPool.Configuration(url: "postgres://app:secret@db:5432/app?sslmode=verify-full")
        configuration.budget = 20   // connections this process may open
        configuration.lanes[.retrieval]  = .init(reserved: 8, limit: 16, waitTimeout: .milliseconds(500))
        configuration.lanes[.write]      = .init(reserved: 4, limit: 8, waitTimeout: .milliseconds(500))
        configuration.lanes[.generation] = .init(reserved: 0, limit: 2, waitTimeout: .milliseconds(100))
        let pool = try PostgresPool(configuration: configuration, logger: Logger(label: "db"))

        // Run it with your other services; graceful shutdown drains it.
        let services = ServiceGroup(services: [pool /*, your HTTP server */], logger: Logger(label: "app"))
        async let _ = services.run()

        let titles = try await pool.withConnection(lane: .retrieval) { lease in
            try await lease.query("SELECT title FROM docs WHERE tenant = \(tenant) LIMIT 8").map { try $0.decode(String.self) }
        }
        try await pool.withTransaction(lane: .write) { lease in
            try await lease.execute("INSERT INTO answers (request, body) VALUES (\(requestID), \(answer))")
        }
        _ = titles
    }

    static func hummingbird() async throws {
        let registry = PrometheusCollectorRegistry()
        let pool = try PostgresPool(configuration: try PostgresPool.Configuration(), logger: Logger(label: "db"),
                                    metricsFactory: PrometheusMetricsFactory(registry: registry))
        let router = Router()
        router.add(middleware: RequestDeadlineMiddleware(budget: .seconds(2)))   // each request's leases wait at most until then
        router.addPoolRoutes(pool)          // GET /pool (live dashboard), /pool/statistics, /pool/report, /pool/snapshot
        router.addMetricsRoute(registry)    // GET /metrics
        router.get("/search") { request, _ in
            try await pool.fanOut(lane: .retrieval, maxConcurrent: 8, Array(0..<8)) { lease, topic in
                try await lease.query("SELECT title FROM docs WHERE topic = \(topic) LIMIT 3").count
            }.description
        }
        let app = Application(router: router, services: [pool])
        try await app.runService()
    }
}

@Suite("README: its compiled snippets")
struct ReadmeSnippetTests {
    @Test("every README snippet marked compiled appears line for line in ReadmeSnippets.swift, which compiles")
    func snippetsMatchReadme() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let compiled = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let compiledLines = compiled.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let marker = "<!-- compiled: Tests/LifeguardHummingbirdTests/ReadmeSnippets.swift -->\n```swift\n"
        var blocks = 0
        var rest = readme[...]
        while let start = rest.range(of: marker) {
            guard let end = rest[start.upperBound...].range(of: "\n```") else { break }
            let block = rest[start.upperBound..<end.lowerBound]
            blocks += 1
            var at = 0
            for line in block.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) where !line.isEmpty {
                if line.hasPrefix("import ") {
                    #expect(compiledLines.contains(line), "README imports what this file does not: \(line)")
                    continue
                }
                guard let found = compiledLines[at...].firstIndex(of: line) else {
                    Issue.record("README's line is not in ReadmeSnippets.swift (in order): \(line)")
                    continue
                }
                at = found + 1
            }
            rest = rest[end.upperBound...]
        }
        #expect(blocks == 2)
    }
}
