import Lifeguard
import PostgresNIO
import Tracing

/// Spans for statements, after OpenTelemetry's database conventions (stable since semconv 1.33):
/// kind client, named `{db.operation.name} {target}` (`SELECT rag_documents`), or the operation
/// alone, or `postgresql`; with `db.system.name` (`postgresql`), `db.namespace` (the database),
/// `db.operation.name`, `db.collection.name`, `server.address`, `server.port`, and on failure
/// `db.response.status_code` (the SQLSTATE) and `error.type` (the SQLSTATE, or the error's
/// type). `db.query.text` only with ``PostgresPool/Configuration/recordsQueryText``: parameters
/// are sent apart from the text, but a text built by hand may hold values.
@usableFromInline
struct StatementTracing: Sendable {
    let tracer: any Tracer
    let namespace: String?
    let serverAddress: String?
    let serverPort: Int?
    let recordsQueryText: Bool

    init(tracer: any Tracer, configuration: PostgresPool.Configuration) {
        self.tracer = tracer
        self.namespace = configuration.database ?? configuration.username
        self.serverAddress = configuration.host ?? configuration.unixSocketDirectory
        self.serverPort = configuration.host == nil ? nil : configuration.port
        self.recordsQueryText = configuration.recordsQueryText
    }

    /// Runs `body`, the statement `sql`, in its span.
    func withSpan<Value>(
        sql: String, file: String, line: Int, isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Value
    ) async throws -> Value {
        let summary = StatementSummary(sql)
        let name = summary.operation.map { operation in summary.target.map { "\(operation) \($0)" } ?? operation } ?? "postgresql"
        let span = self.tracer.startSpan(
            name, context: InstrumentationContext.current ?? .topLevel, ofKind: .client, at: DefaultTracerClock.now,
            function: name, file: file, line: UInt(max(0, line)))
        span.updateAttributes { attributes in
            attributes["db.system.name"] = "postgresql"
            attributes["db.namespace"] = self.namespace
            attributes["db.operation.name"] = summary.operation
            attributes["db.collection.name"] = summary.target
            attributes["server.address"] = self.serverAddress
            attributes["server.port"] = self.serverPort
            if self.recordsQueryText { attributes["db.query.text"] = sql }
        }
        do {
            let value = try await body()
            span.end()
            return value
        } catch {
            let sqlState = (error as? PSQLError)?.serverInfo?[.sqlState] ?? (error as? PostgresPoolError)?.sqlState
            span.updateAttributes { attributes in
                attributes["db.response.status_code"] = sqlState
                attributes["error.type"] = sqlState ?? Self.errorType(error)
            }
            span.recordError(error)
            span.setStatus(SpanStatus(code: .error))
            span.end()
            throw error
        }
    }

    static func errorType(_ error: any Error) -> String {
        switch error {
        case let error as PostgresPoolError: error.code.description
        case let error as LifeguardError: error.code.description
        case is CancellationError: "cancelled"
        default: String(reflecting: type(of: error))
        }
    }
}

/// A statement's operation (its first keyword, upper-cased) and target (the table after `FROM`,
/// `INTO` or `UPDATE`, as written), read from its text for span names. Comments, quoted text
/// and parenthesised parts are skipped; what cannot be read is `nil`.
struct StatementSummary: Equatable {
    var operation: String?
    var target: String?

    init(_ sql: String) {
        let words = Self.topLevelWords(sql, limit: 64)
        guard let first = words.first, first.allSatisfy(\.isLetter) else { return }
        self.operation = first.uppercased()
        let after: String? =
            switch self.operation {
            case "SELECT", "DELETE": "FROM"
            case "INSERT": "INTO"
            case "UPDATE": "UPDATE"
            default: nil
            }
        guard let after else { return }
        if let index = words.firstIndex(where: { $0.uppercased() == after }), index + 1 < words.count {
            let target = words[index + 1]
            // `UPDATE ONLY t`, `DELETE FROM ONLY t`.
            let name = target.uppercased() == "ONLY" && index + 2 < words.count ? words[index + 2] : target
            if name.first.map({ $0.isLetter || $0 == "_" || $0 == "\"" }) == true { self.target = name }
        }
    }

    /// The first `limit` words outside comments, quotes and parentheses (each parenthesised
    /// part a word `(`); a quoted identifier (`"My Table"`) is one word, with its quotes.
    static func topLevelWords(_ sql: String, limit: Int) -> [String] {
        var words: [String] = []
        var current = ""
        var depth = 0
        var characters = sql.makeIterator()
        var pending: Character?
        func next() -> Character? {
            if let character = pending {
                pending = nil
                return character
            }
            return characters.next()
        }
        func flush() {
            if !current.isEmpty, depth == 0 { words.append(current) }
            current = ""
        }
        while words.count < limit, let character = next() {
            switch character {
            case "-":
                guard let following = next() else { break }
                if following == "-" {
                    while let skipped = next(), skipped != "\n" {}
                    flush()
                } else {
                    flush()
                    pending = following
                }
            case "/":
                guard let following = next() else { break }
                if following == "*" {
                    var previous: Character = " "
                    while let skipped = next(), !(previous == "*" && skipped == "/") { previous = skipped }
                    flush()
                } else {
                    flush()
                    pending = following
                }
            case "'":
                flush()
                while let skipped = next(), skipped != "'" {}
            case "\"":
                var quoted = "\""
                while let inner = next() {
                    quoted.append(inner)
                    if inner == "\"" { break }
                }
                if depth == 0 { current += quoted }
            case "(":
                flush()
                // A parenthesised part stands as one word: `FROM (SELECT …) s` has no table.
                if depth == 0 { words.append("(") }
                depth += 1
            case ")":
                flush()
                depth = max(0, depth - 1)
            case _ where character.isWhitespace || character == "," || character == ";":
                flush()
            default:
                if depth == 0 { current.append(character) }
            }
        }
        flush()
        return words
    }
}
