import ArgumentParser
import Foundation
import Hummingbird
import Lifeguard
import LifeguardHummingbird
import LifeguardPostgres
import Logging
import PostgresNIO
import Prometheus
import ServiceLifecycle
import Synchronization

/// A retrieval-augmented service on Hummingbird 2 and Lifeguard: `/search` fans out over a
/// seeded table, `/answer` writes a generation in three short windows through the generation
/// journal, `/agents/:agent/steps` writes agent state through the write coalescer, and
/// `/pool` shows the pool live. `--pool postgresclient` serves the same routes through
/// PostgresNIO's `PostgresClient`, for comparison.
@main
struct RAGService: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rag-service",
        abstract: "A RAG service on Hummingbird 2 and Lifeguard, with the pool's live dashboard at /pool.")

    @Option(help: "postgres://user:password@host:port/database (default: LIFEGUARD_URL or DATABASE_URL). The pool's other settings come from LIFEGUARD_* variables (README, \"Configuration without code\").")
    var databaseURL: String?

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on.")
    var port = 8080

    @Option(help: "Connections the pool may open (default: LIFEGUARD_BUDGET, else 20).")
    var budget: Int?

    @Option(help: "The fake model's latency, in milliseconds.")
    var modelMilliseconds = 300

    @Option(help: "The time each request has, in milliseconds (its leases wait at most that long).")
    var requestBudgetMilliseconds = 2_000

    @Option(help: "The pool behind the routes: lifeguard or postgresclient.")
    var pool = "lifeguard"

    @Flag(help: "Create and seed the tables, then exit.")
    var seedOnly = false

    func validate() throws {
        guard (1...65_535).contains(self.port) else { throw ValidationError("--port is \(self.port); it must be 1 to 65535") }
        if let budget = self.budget, !(2...1_000).contains(budget) {
            throw ValidationError("--budget is \(budget); it must be 2 to 1000")
        }
        guard (0...600_000).contains(self.modelMilliseconds) else {
            throw ValidationError("--model-milliseconds is \(self.modelMilliseconds); it must be 0 to 600000")
        }
        guard (1...600_000).contains(self.requestBudgetMilliseconds) else {
            throw ValidationError("--request-budget-milliseconds is \(self.requestBudgetMilliseconds); it must be 1 to 600000")
        }
        guard ["lifeguard", "postgresclient"].contains(self.pool) else {
            throw ValidationError("--pool is '\(self.pool)'; it must be lifeguard or postgresclient")
        }
    }

    func run() async throws {
        let logger = Logger(label: "rag-service")
        // The pool's configuration as README's "Configuration without code" has it: the
        // LIFEGUARD_* variables, the URL from --database-url, LIFEGUARD_URL or DATABASE_URL.
        var environment = ProcessInfo.processInfo.environment
        if let url = self.databaseURL { environment["LIFEGUARD_URL"] = url }
        guard PostgresPool.Configuration.environmentNamesURL(environment) else {
            throw ValidationError("no database: pass --database-url or set LIFEGUARD_URL or DATABASE_URL (scripts/postgres.sh start prints one)")
        }
        if environment["LIFEGUARD_BUDGET"] == nil { environment["LIFEGUARD_BUDGET"] = "20" }
        if let budget = self.budget { environment["LIFEGUARD_BUDGET"] = String(budget) }
        if environment["LIFEGUARD_APPLICATION_NAME"] == nil { environment["LIFEGUARD_APPLICATION_NAME"] = "rag-service" }
        let configuration = try PostgresPool.Configuration(environment: environment)
        let settings = Settings(
            model: .milliseconds(self.modelMilliseconds), requestBudget: .milliseconds(self.requestBudgetMilliseconds))

        let registry = PrometheusCollectorRegistry()
        let router = Router()
        router.add(middleware: RequestDeadlineMiddleware(budget: settings.requestBudget))
        // Ready once the tables are seeded: the load script waits for it.
        let seeded = Seeded()
        router.get("/health") { _, _ in
            seeded.isDone ? Response(status: .ok) : Response(status: .serviceUnavailable)
        }
        router.addMetricsRoute(registry)

        let backend: any RAGBackend
        switch self.pool {
        case "postgresclient":
            backend = PlainBackend(client: try PlainBackend.makeClient(configuration, budget: configuration.budget, logger: logger), settings: settings)
        default:
            let pool = try PostgresPool(
                configuration: configuration, logger: logger, metricsFactory: PrometheusMetricsFactory(registry: registry))
            backend = try LifeguardBackend(pool: pool, settings: settings)
            router.addPoolRoutes(pool)
        }
        backend.addRoutes(to: router)
        let services = backend.services
        let seed: @Sendable () async throws -> Void = { try await backend.seed() }
        if self.seedOnly {
            try await Self.seedOnly(services: services, logger: logger, seed)
            return
        }

        let app = Application(
            router: router,
            configuration: .init(address: .hostname(self.host, port: self.port), serverName: "rag-service"),
            services: services,
            onServerRunning: { [host, port, pool] _ in
                logger.info("rag-service listening on http://\(host):\(port) (pool: \(pool)); dashboard at /pool")
                Task {
                    // Until the database lets it: /health answers 503 meanwhile.
                    var delay = Duration.seconds(1)
                    while !Task.isCancelled {
                        do {
                            try await seed()
                            seeded.markDone()
                            return
                        } catch {
                            logger.error("seeding the tables failed, trying again in \(delay): \(PostgresPoolError.describe(error))")
                        }
                        try? await Task.sleep(for: delay)
                        delay = min(delay * 2, .seconds(10))
                    }
                }
            },
            logger: logger)
        try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }

    /// Runs `services` just long enough to seed the tables.
    static func seedOnly(services: [any Service], logger: Logger, _ seed: @escaping @Sendable () async throws -> Void) async throws {
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await seed()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

/// Whether the tables are seeded.
final class Seeded: Sendable {
    private let done = Atomic(false)
    var isDone: Bool { self.done.load(ordering: .acquiring) }
    func markDone() { self.done.store(true, ordering: .releasing) }
}

/// What the routes take from the command line.
struct Settings: Sendable {
    /// How long the fake model takes to answer.
    var model: Duration
    /// How long each request has.
    var requestBudget: Duration
    /// How many parallel reads a search makes.
    var fanOut = 8
    /// How many topics the seeded table has.
    static let topics = 64
    /// Rows per topic.
    static let rowsPerTopic = 50
}

/// The seeded schema, the same for both backends.
enum Schema {
    static let statements: [PostgresQuery] = [
        """
        CREATE TABLE IF NOT EXISTS rag_documents (
            id bigserial PRIMARY KEY, topic int NOT NULL, title text NOT NULL, body text NOT NULL)
        """,
        "CREATE INDEX IF NOT EXISTS rag_documents_topic ON rag_documents (topic, id)",
        """
        CREATE TABLE IF NOT EXISTS rag_agent_log (
            step bigserial PRIMARY KEY, agent text NOT NULL, state text NOT NULL,
            written_at timestamptz NOT NULL DEFAULT now())
        """,
        """
        CREATE TABLE IF NOT EXISTS rag_answers_plain (
            key text PRIMARY KEY, question text NOT NULL, status text NOT NULL, answer text)
        """,
    ]

    static var fill: PostgresQuery {
        """
        INSERT INTO rag_documents (topic, title, body)
        SELECT n % \(Settings.topics), 'document ' || n, repeat('passage ' || n || ' ', 20)
        FROM generate_series(1, \(Settings.topics * Settings.rowsPerTopic)) AS n
        WHERE NOT EXISTS (SELECT 1 FROM rag_documents)
        """
    }

    /// The topics a question's search reads: `fanOut` of them, from the question's hash.
    static func topics(for question: String, count: Int) -> [Int] {
        var hash: UInt64 = 1_469_598_103_934_665_603
        for byte in question.utf8 { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
        return (0..<count).map { Int((hash &+ UInt64($0) &* 7_919) % UInt64(Settings.topics)) }
    }

    static func fakeAnswer(_ question: String, passages: [String]) -> String {
        "An answer to '\(question.prefix(200))' from \(passages.count) passages"
    }
}

/// One search hit.
struct Passage: ResponseCodable {
    var id: Int64
    var title: String
}

/// What `/search` returns.
struct SearchResult: ResponseCodable {
    var question: String
    var passages: [Passage]
}

/// What `/answer` returns.
struct AnswerResult: ResponseCodable {
    var key: String
    var status: String
    var answer: String?
}

/// A text parameter: at most `limit` characters and no control characters (PostgreSQL refuses a
/// NUL in text; the others have no business in a question, key or name), or a 400 that says so.
func checkedText(_ value: String, _ name: String, limit: Int) throws -> String {
    guard !value.isEmpty, value.count <= limit else {
        throw HTTPError(.badRequest, message: "\(name) must have 1 to \(limit) characters")
    }
    guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
        throw HTTPError(.badRequest, message: "\(name) must not contain control characters")
    }
    return value
}

extension Request {
    /// The question of a `/search` or `/answer` request (`?q=`), at most 1,000 characters.
    var question: String {
        get throws {
            guard let question = self.uri.queryParameters["q"].map(String.init) else {
                throw HTTPError(.badRequest, message: "give a question: ?q=...")
            }
            return try checkedText(question, "the question (?q=)", limit: 1_000)
        }
    }

    /// The idempotency key of an `/answer` request (`?key=`, at most 200 characters), or a new
    /// one: a request retried with its key is answered from the journal, not generated again.
    var answerKey: String {
        get throws {
            guard let key = self.uri.queryParameters["key"].map(String.init) else { return UUID().uuidString }
            return try checkedText(key, "the key (?key=)", limit: 200)
        }
    }
}

/// One step of `POST /agents/:agent/steps?state=`: the agent (at most 100 characters) and its
/// state (at most 1,000). Each step is its own row.
struct AgentStep {
    let agent: String
    let state: String

    init(_ request: Request, _ context: BasicRequestContext) throws {
        let raw = try context.parameters.require("agent")
        self.agent = try checkedText(raw.removingPercentEncoding ?? raw, "the agent's name", limit: 100)
        self.state = try checkedText(request.uri.queryParameters["state"].map(String.init) ?? "step", "the state (?state=)", limit: 1_000)
    }
}
