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

    static func severalHosts() throws -> (PostgresPool.Configuration, PostgresPool.Configuration) {
        let writes = try PostgresPool.Configuration(
            url: "postgres://app:secret@db1:5432,db2:5432/app?target_session_attrs=read-write")
        let reads = try PostgresPool.Configuration(
            url: "postgres://app:secret@db2:5432,db1:5432/app?target_session_attrs=prefer-standby&load_balance_hosts=random")
        return (writes, reads)
    }

    static func cluster(logger: Logger) async throws -> String {
        let cluster = try PostgresCluster(configuration: .init(pool: try .init(url: "postgres://app:secret@db1,db2/app")), logger: logger)
        let (_, written) = try await cluster.withTransactionReturningPosition(lane: .write) { lease in
            try await lease.execute("UPDATE docs SET title = 'new' WHERE id = 1")
        }
        let title = try await cluster.withConnection(lane: .retrieval, readingAfter: written) { lease in
            try await lease.query("SELECT title FROM docs WHERE id = 1")[0].decode(String.self)
        }
        return title
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

/// The getting-started article's Swift snippets (`LifeguardPostgres.docc/GettingStarted.md`),
/// line for line, in order: every one of its `swift` blocks compiles here.
enum GettingStartedSnippets {
    static func steps(tenant: String, requestID: String, answer: String) async throws {
        var configuration = try PostgresPool.Configuration(url: "postgres://app:secret@127.0.0.1:5432/app")
        configuration.budget = 10
        configuration.lanes[.retrieval] = .init(reserved: 4, limit: 8, waitTimeout: .milliseconds(500))
        configuration.lanes[.write] = .init(reserved: 2, limit: 4, waitTimeout: .milliseconds(500))
        let pool = try PostgresPool(configuration: configuration, logger: Logger(label: "db"))

        let services = ServiceGroup(services: [pool], gracefulShutdownSignals: [.sigterm], logger: Logger(label: "app"))
        async let _ = services.run()

        let titles = try await pool.withConnection(lane: .retrieval) { lease in
            try await lease.query("SELECT title FROM docs WHERE tenant = \(tenant) LIMIT 8").map { try $0.decode(String.self) }
        }
        try await pool.withTransaction(lane: .write) { lease in
            try await lease.execute("INSERT INTO answers (request, body) VALUES (\(requestID), \(answer))")
        }

        let counts = try await pool.fanOut(lane: .retrieval, maxConcurrent: 4, ["rust", "swift", "go"]) { lease, topic in
            try await lease.query("SELECT count(*) FROM docs WHERE topic = \(topic)").count
        }

        let router = Router()
        router.add(middleware: RequestDeadlineMiddleware(budget: .seconds(2)))
        router.addPoolRoutes(pool)   // /pool, /pool/statistics, /pool/report, /pool/snapshot
        router.get("/titles") { request, _ in
            try await pool.withConnection(lane: .retrieval) { lease in
                try await lease.query("SELECT title FROM docs LIMIT 8").map { try $0.decode(String.self) }
            }.joined(separator: "\n")
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 8080)), services: [pool])
        try await app.runService()
        _ = (titles, counts)
    }
}

/// The `Lifeguard` catalog's landing page's snippet (`Lifeguard.docc/Lifeguard.md`), on a
/// factory of its own.
enum LandingPageSnippets {
    /// A connection with one call, for the snippet.
    struct SearchConnection: Sendable {
        func search(_ text: String) async throws -> [String] { [text] }
    }

    /// The snippet's `MyConnectionFactory`.
    struct MyConnectionFactory: ConnectionFactory {
        func connect() async throws -> SearchConnection { SearchConnection() }
        func validate(_ connection: SearchConnection) async throws {}
        func reset(_ connection: SearchConnection) async throws {}
        func close(_ connection: SearchConnection) async {}
    }

    static func landingPage() async throws {
        var configuration = PoolConfiguration(budget: 20)
        configuration.lanes[.retrieval] = LaneConfiguration(reserved: 8, limit: 16, waitTimeout: .milliseconds(500))
        let pool = try ConnectionPool(configuration: configuration, factory: MyConnectionFactory(), logger: Logger(label: "db"))
        // Run it: `await pool.run()` in a task, or as a service of a ServiceGroup.
        let rows = try await pool.withConnection(lane: .retrieval) { connection in
            try await connection.search("…")
        }
        _ = rows
    }
}

/// The imports of `blocks` among `compiled`'s, and their other lines in `compiled`, in order,
/// from its line that starts with `start` on.
private func expectCompiled(_ blocks: [Substring], in compiled: String, from document: String, startingAt start: String = "") {
    let compiledLines = compiled.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    var at = compiledLines.firstIndex { $0.hasPrefix(start) } ?? compiledLines.endIndex
    for block in blocks {
        for line in block.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) where !line.isEmpty {
            if line.hasPrefix("import ") {
                #expect(compiledLines.contains(line), "\(document) imports what ReadmeSnippets.swift does not: \(line)")
                continue
            }
            guard let found = compiledLines[at...].firstIndex(of: line) else {
                Issue.record("\(document)'s line is not in ReadmeSnippets.swift (in order): \(line)")
                continue
            }
            at = found + 1
        }
    }
}

/// The code blocks of `text` that follow `opening`.
private func blocks(of text: String, after opening: String) -> [Substring] {
    var found: [Substring] = []
    var rest = text[...]
    while let start = rest.range(of: opening), let end = rest[start.upperBound...].range(of: "\n```") {
        found.append(rest[start.upperBound..<end.lowerBound])
        rest = rest[end.upperBound...]
    }
    return found
}

@Suite("README and the getting-started article: their compiled snippets", .timeLimit(.minutes(3)))
struct ReadmeSnippetTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("every README snippet marked compiled appears line for line in ReadmeSnippets.swift, which compiles")
    func snippetsMatchReadme() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let compiled = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let readmeBlocks = blocks(of: readme, after: "<!-- compiled: Tests/LifeguardHummingbirdTests/ReadmeSnippets.swift -->\n```swift\n")
        #expect(readmeBlocks.count == 4)
        // Each README block on its own: the usage function, the Hummingbird one, several hosts, a cluster.
        for block in readmeBlocks { expectCompiled([block], in: compiled, from: "README") }
    }

    @Test("every Swift snippet of the getting-started article appears line for line, in order, in ReadmeSnippets.swift")
    func snippetsMatchGettingStarted() throws {
        let article = try String(
            contentsOf: Self.root.appendingPathComponent("Sources/LifeguardPostgres/LifeguardPostgres.docc/GettingStarted.md"), encoding: .utf8)
        let compiled = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let articleBlocks = blocks(of: article, after: "```swift\n")
        #expect(articleBlocks.count == 5)
        expectCompiled(articleBlocks, in: compiled, from: "GettingStarted.md", startingAt: "enum GettingStartedSnippets")
    }

    @Test("the Swift snippets of the libraries' landing pages appear line for line in ReadmeSnippets.swift")
    func snippetsMatchLandingPages() throws {
        let compiled = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let pages = [
            ("Lifeguard", "enum LandingPageSnippets"),
            ("LifeguardHummingbird", "static func hummingbird"),
        ]
        for (library, start) in pages {
            let page = try String(contentsOf: Self.root.appendingPathComponent("Sources/\(library)/\(library).docc/\(library).md"), encoding: .utf8)
            let pageBlocks = blocks(of: page, after: "```swift\n")
            #expect(pageBlocks.count == 1, "\(library).md")
            expectCompiled(pageBlocks, in: compiled, from: "\(library).md", startingAt: start)
        }
    }
}
