import InMemoryTracing
@testable import Lifeguard
@testable import LifeguardPostgres
import PostgresNIO
import Testing
import Tracing

extension PostgresPoolTests {
    @Test("statements are client spans under their lease's, after OpenTelemetry's database conventions; a failed one carries its SQLSTATE; no text unless asked")
    func statementSpans() async throws {
        let tracer = InMemoryTracer()
        var configuration = try TestDatabase.configuration(application: "lg-tracing", budget: 2)
        try await TestDatabase.withPool(configuration, tracer: tracer) { pool in
            try await pool.withConnection(lane: .write) { lease in
                try await lease.execute("CREATE TABLE IF NOT EXISTS traced_rows (id int)")
                try await lease.execute("INSERT INTO traced_rows VALUES (\(1))")
                _ = try await lease.query("SELECT id FROM traced_rows WHERE id = \(1)")
                await #expect(throws: PSQLError.self) { try await lease.execute("SELECT * FROM no_such_table_here") }
            }
        }
        let spans = tracer.finishedSpans
        let lease = try #require(spans.first { $0.operationName == "lease write" })
        let names = spans.filter { $0.parentSpanID == lease.spanID }.map(\.operationName)
        #expect(names == ["CREATE", "INSERT traced_rows", "SELECT traced_rows", "SELECT no_such_table_here"])
        let select = try #require(spans.first { $0.operationName == "SELECT traced_rows" })
        #expect(select.kind == .client)
        #expect(select.attributes.get("db.system.name") == .string("postgresql"))
        #expect(select.attributes.get("db.namespace") == .string(configuration.database ?? ""))
        #expect(select.attributes.get("db.operation.name") == .string("SELECT"))
        #expect(select.attributes.get("db.collection.name") == .string("traced_rows"))
        #expect(select.attributes.get("server.address") == .string(configuration.host ?? ""))
        #expect(select.attributes.get("server.port") == .int64(Int64(configuration.port)))
        #expect(select.attributes.get("db.query.text") == nil)
        #expect(select.status == nil)
        let failed = try #require(spans.first { $0.operationName == "SELECT no_such_table_here" })
        #expect(failed.attributes.get("db.response.status_code") == .string("42P01"))
        #expect(failed.attributes.get("error.type") == .string("42P01"))
        #expect(failed.status?.code == .error)

        // Opted in: the text, never the parameters (sent apart from it).
        let opted = InMemoryTracer()
        configuration.recordsQueryText = true
        try await TestDatabase.withPool(configuration, tracer: opted) { pool in
            _ = try await pool.query("SELECT \("secret-value")::text AS v", lane: .retrieval)
        }
        let text = try #require(opted.finishedSpans.first { $0.operationName == "SELECT" })
        #expect(text.attributes.get("db.query.text") == .string("SELECT $1::text AS v"))
    }

    @Test("a statement summary reads the operation and the target through comments, quotes and subqueries")
    func statementSummaries() {
        let cases: [(String, String?, String?)] = [
            ("SELECT 1", "SELECT", nil),
            ("select id from docs where id = $1", "SELECT", "docs"),
            ("/* hint */ -- note\n  SELECT count(*) FROM (SELECT 1 FROM a) s", "SELECT", nil),
            ("SELECT 'from x' AS f FROM public.docs", "SELECT", "public.docs"),
            ("INSERT INTO \"Agent Log\" (a) VALUES ($1)", "INSERT", "\"Agent Log\""),
            ("UPDATE ONLY agents SET state = $1", "UPDATE", "agents"),
            ("DELETE FROM sessions WHERE x", "DELETE", "sessions"),
            ("WITH t AS (SELECT 1) SELECT * FROM t", "WITH", nil),
            ("INSERT INTO t(a) VALUES (1)", "INSERT", "t"),
            ("BEGIN", "BEGIN", nil),
            ("", nil, nil),
            ("$1", nil, nil),
        ]
        for (sql, operation, target) in cases {
            let summary = StatementSummary(sql)
            #expect(summary.operation == operation, "\(sql)")
            #expect(summary.target == target, "\(sql)")
        }
    }
}
