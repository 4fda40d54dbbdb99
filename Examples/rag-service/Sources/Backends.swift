import ArgumentParser
import Foundation
import Hummingbird
import Lifeguard
import LifeguardPostgres
import Logging
import PostgresNIO
import ServiceLifecycle

/// What the routes need from a pool. Both backends serve the same routes (`addRoutes`), so
/// the load figures compare pools, not handlers.
protocol RAGBackend: Sendable {
    /// The services to run with the app (the pool).
    var services: [any Service] { get }
    /// Creates and fills the tables, if they are not yet.
    func seed() async throws
    /// One read per topic of the question, `fanOut` at once.
    func search(_ question: String) async throws -> [Passage]
    /// Persists the question as pending, calls the model with no connection held, persists
    /// the answer: three short windows with the search before.
    func answer(_ question: String, key: String, passages: [String]) async throws -> AnswerResult
    /// Writes one agent step.
    func log(_ step: AgentStep) async throws
}

extension RAGBackend {
    func addRoutes(to router: Router<BasicRequestContext>) {
        router.get("/search") { request, _ in
            let question = try request.question
            return SearchResult(question: question, passages: try await self.search(question))
        }
        router.post("/answer") { request, _ in
            let (question, key) = (try request.question, try request.answerKey)
            return try await self.answer(question, key: key, passages: try await self.search(question).map(\.title))
        }
        router.post("/agents/:agent/steps") { request, context in
            try await self.log(try AgentStep(request, context))
            return Response(status: .accepted)
        }
    }
}

/// The routes on Lifeguard: fan-outs on `.retrieval`, short write windows on `.write`, the
/// model called with no connection held, agent steps grouped by the write coalescer.
struct LifeguardBackend: RAGBackend {
    let pool: PostgresPool
    let journal: GenerationJournal
    let steps: WriteCoalescer
    let settings: Settings

    init(pool: PostgresPool, settings: Settings) throws {
        self.pool = pool
        self.journal = try GenerationJournal(pool: pool, table: "rag_answers")
        self.steps = try pool.writeCoalescer()
        self.settings = settings
    }

    func seed() async throws {
        try await self.pool.withConnection(lane: .write) { lease in
            for statement in Schema.statements { try await lease.execute(statement) }
            try await lease.execute(Schema.fill)
        }
        try await self.journal.migrate()
    }

    /// One read per topic, `fanOut` at once, admitted or refused as one request.
    func search(_ question: String) async throws -> [Passage] {
        let topics = Schema.topics(for: question, count: self.settings.fanOut)
        let hits = try await self.pool.fanOut(lane: .retrieval, maxConcurrent: self.settings.fanOut, topics) { lease, topic in
            try await lease.query("SELECT id, title FROM rag_documents WHERE topic = \(topic) ORDER BY id LIMIT 3").map { row in
                let (id, title) = try row.decode((Int64, String).self)
                return Passage(id: id, title: title)
            }
        }
        return hits.flatMap { $0 }
    }

    var services: [any Service] { [self.pool] }

    // Window 1 was the search. Window 2: the request persisted as pending (the journal's first
    // transaction). The model runs with no connection held. Window 3: the answer persisted.
    func answer(_ question: String, key: String, passages: [String]) async throws -> AnswerResult {
        let entry = try await self.journal.run(key: key, request: question) { question in
            try await Task.sleep(for: self.settings.model)
            return Schema.fakeAnswer(question, passages: passages)
        }
        // Another request with this key is generating, or one was orphaned (its answer could
        // not be persisted): not an answer. The journal's `orphans(olderThan:)` finds those.
        guard entry.status != .pending else {
            throw HTTPError(.conflict, headers: [.retryAfter: "1"], message: "this key's answer is still being generated, or was lost; retry later")
        }
        return AnswerResult(key: entry.key, status: entry.status.rawValue, answer: entry.result)
    }

    // Agents write state in bursts: each step is one row, grouped with other agents' rows
    // into one INSERT per batch.
    func log(_ step: AgentStep) async throws {
        try await self.steps.insert(.init(into: "rag_agent_log", columns: ["agent", "state"], values: [step.agent, step.state]))
    }
}

/// The same routes on PostgresNIO's `PostgresClient`, one pool for everything: the comparison
/// of BENCHMARKS.md.
struct PlainBackend: RAGBackend {
    let client: PostgresClient
    let settings: Settings

    static func makeClient(_ configuration: PostgresPool.Configuration, budget: Int, logger: Logger) throws -> PostgresClient {
        guard configuration.tlsMode == .disable else {
            throw ValidationError("--pool postgresclient runs without TLS only: add ?sslmode=disable to the URL of a local server")
        }
        var client = PostgresClient.Configuration(
            host: configuration.host ?? "localhost", port: configuration.port, username: configuration.username,
            password: configuration.password, database: configuration.database, tls: .disable)
        client.options.maximumConnections = budget
        return PostgresClient(configuration: client, backgroundLogger: logger)
    }

    func seed() async throws {
        for statement in Schema.statements { try await self.client.query(statement) }
        try await self.client.query(Schema.fill)
    }

    func search(_ question: String) async throws -> [Passage] {
        let topics = Schema.topics(for: question, count: self.settings.fanOut)
        return try await withThrowingTaskGroup(of: [Passage].self) { group in
            for topic in topics {
                group.addTask {
                    var passages: [Passage] = []
                    let rows = try await self.client.query("SELECT id, title FROM rag_documents WHERE topic = \(topic) ORDER BY id LIMIT 3")
                    for try await (id, title) in rows.decode((Int64, String).self) { passages.append(Passage(id: id, title: title)) }
                    return passages
                }
            }
            var all: [Passage] = []
            for try await passages in group { all += passages }
            return all
        }
    }

    var services: [any Service] { [self.client] }

    func answer(_ question: String, key: String, passages: [String]) async throws -> AnswerResult {
        try await self.client.query(
            "INSERT INTO rag_answers_plain (key, question, status) VALUES (\(key), \(question), 'pending') ON CONFLICT DO NOTHING")
        try await Task.sleep(for: self.settings.model)
        let answer = Schema.fakeAnswer(question, passages: passages)
        try await self.client.query("UPDATE rag_answers_plain SET status = 'done', answer = \(answer) WHERE key = \(key)")
        return AnswerResult(key: key, status: "done", answer: answer)
    }

    func log(_ step: AgentStep) async throws {
        try await self.client.query("INSERT INTO rag_agent_log (agent, state) VALUES (\(step.agent), \(step.state))")
    }
}
