import Foundation
import Lifeguard
import PostgresNIO

/// A crash-safe record of generations, so that no connection waits on a model and nothing is
/// lost when a process dies between the windows.
///
/// ``run(key:request:fileID:line:function:generate:)`` persists the request as `pending` in one
/// short transaction, runs the generation with no connection held, and persists the result as
/// `done` in a second one (retried for a moment if the pool is saturated, and unbound by the
/// caller's deadline, which the model may have used up). A process that dies in between
/// leaves the request `pending`:
/// ``orphans(olderThan:)`` lists such requests, and ``recover(key:result:)`` or
/// ``fail(key:reason:)`` resolves them. The idempotency key makes a retried request return the
/// first record instead of generating again, and a result is written at most once per key.
///
/// The table (create it with ``migrate()``, or apply ``ddl(table:)`` with your migrations):
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS lifeguard_generation_journal (
///     idempotency_key text PRIMARY KEY,
///     request text NOT NULL,
///     status text NOT NULL CHECK (status IN ('pending', 'done', 'cancelled', 'failed')),
///     result text,
///     failure text,
///     created_at timestamptz NOT NULL DEFAULT now(),
///     updated_at timestamptz NOT NULL DEFAULT now()
/// );
/// CREATE INDEX IF NOT EXISTS lifeguard_generation_journal_pending
///     ON lifeguard_generation_journal (created_at) WHERE status = 'pending';
/// ```
public struct GenerationJournal: Sendable {
    /// Where a request stands.
    public enum Status: String, Sendable, Hashable, Codable {
        /// Persisted; its result is not (yet): generating, or orphaned by a crash.
        case pending
        /// Its result is persisted.
        case done
        /// Its task was cancelled during the generation.
        case cancelled
        /// The generation failed, or an orphan was given up.
        case failed
    }

    /// One request and what became of it.
    public struct Entry: Sendable, Hashable {
        /// The idempotency key.
        public var key: String
        /// The request, as given to ``GenerationJournal/run(key:request:fileID:line:function:generate:)``.
        public var request: String
        /// Where it stands.
        public var status: Status
        /// The result, once `done`.
        public var result: String?
        /// Why it failed, once `failed`.
        public var failure: String?
        /// When the request was first persisted (server time).
        public var createdAt: Date
        /// When its status last changed (server time).
        public var updatedAt: Date
    }

    /// The journal's table, possibly schema-qualified.
    public let table: String
    let pool: PostgresPool
    let lane: Lane

    /// Creates a journal on `table`.
    ///
    /// - Parameters:
    ///   - pool: Where the journal's short transactions run.
    ///   - table: The table's name, possibly schema-qualified. Default:
    ///     `lifeguard_generation_journal`.
    ///   - lane: The lane of the journal's writes. Default: ``Lifeguard/Lane/write``.
    /// - Throws: ``LifeguardError/Code/invalidConfiguration`` when `table` is not a plain SQL
    ///   identifier (letters, digits, `_`, one optional schema).
    public init(pool: PostgresPool, table: String = "lifeguard_generation_journal", lane: Lane = .write) throws(LifeguardError) {
        let identifier = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/
        guard table.wholeMatch(of: identifier) != nil else {
            throw LifeguardError.invalidConfiguration([
                "GenerationJournal table is \"\(table)\"; use a plain identifier, optionally schema-qualified (schema.table)"
            ])
        }
        self.pool = pool
        self.table = table
        self.lane = lane
    }

    /// The statements that create the journal's table and its index of pending requests.
    public static func ddl(table: String = "lifeguard_generation_journal") -> [String] {
        let index = table.replacingOccurrences(of: ".", with: "_") + "_pending"
        return [
            """
            CREATE TABLE IF NOT EXISTS \(table) (
                idempotency_key text PRIMARY KEY,
                request text NOT NULL,
                status text NOT NULL CHECK (status IN ('pending', 'done', 'cancelled', 'failed')),
                result text,
                failure text,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX IF NOT EXISTS \(index) ON \(table) (created_at) WHERE status = 'pending'",
        ]
    }

    /// Creates the table and its index if they do not exist.
    public func migrate() async throws {
        try await self.pool.withTransaction(lane: self.lane) { lease in
            for statement in Self.ddl(table: self.table) {
                try await lease.execute(PostgresQuery(unsafeSQL: statement))
            }
        }
    }

    /// Runs one generation through the journal: the request persisted as `pending`, `generate`
    /// with no connection held (a ``Lifeguard/GenerationStep``), the result persisted as `done`.
    ///
    /// A key seen before returns its first record without generating: `done` with its result,
    /// or `pending` while another task generates it (or after a crash; see
    /// ``orphans(olderThan:)``). When the task is cancelled during the generation the record is
    /// marked `cancelled`, and when `generate` throws it is marked `failed`, each in a short write
    /// (best effort: the orphan sweep covers a write that did not happen).
    ///
    /// - Parameters:
    ///   - key: The idempotency key: the same request retried must use the same key.
    ///   - request: The request, e.g. as JSON.
    ///   - fileID: The caller's file, for reports. Leave the default.
    ///   - line: The caller's line, for reports. Leave the default.
    ///   - function: The caller's function, for reports. Leave the default.
    ///   - generate: The model call.
    /// - Returns: The record: `done` with the result when this call generated it.
    /// - Throws: What `generate` throws, `CancellationError`, or the journal's database errors.
    public func run(
        key: String,
        request: String,
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        generate: (String) async throws -> String
    ) async throws -> Entry {
        let (entry, isNew) = try await self.begin(key: key, request: request)
        guard isNew else { return entry }
        let result: String
        do {
            result = try await GenerationStep.run(fileID: fileID, line: line, function: function) {
                try await generate(request)
            }
        } catch {
            // The task may be cancelled: record the outcome from a task of its own.
            let cancelled = error is CancellationError || Task.isCancelled
            let journal = self
            _ = try? await Task {
                cancelled ? try await journal.cancel(key: key) : try await journal.fail(key: key, reason: "\(error)")
            }.value
            throw error
        }
        return try await self.persist(key: key, result: result)
    }

    /// Persists a generated result as ``complete(key:result:)`` does, from a task of its own,
    /// without the caller's deadline, and again after a pause when the pool refused it for
    /// saturation (up to five tries over about 1.5 s): the generation is the expensive part, and
    /// a write lane busy for a moment, or a deadline the model used up, must not throw its result
    /// away and leave the request `pending` for a retry that would only find it so.
    func persist(key: String, result: String) async throws -> Entry {
        let journal = self
        return try await Task {
            try await RequestDeadline.$current.withValue(nil) {
                var pause = Duration.milliseconds(100)
                for _ in 1..<5 {
                    do {
                        return try await journal.complete(key: key, result: result)
                    } catch let error as LifeguardError where Self.isSaturation(error) {
                        try await Task.sleep(for: pause)
                        pause *= 2
                    }
                }
                return try await journal.complete(key: key, result: result)
            }
        }.value
    }

    /// Whether the pool refused a lease because it was busy, not because it is shutting down,
    /// misconfigured or cut off from the database.
    static func isSaturation(_ error: LifeguardError) -> Bool {
        [.waitTimeout, .shed, .overloaded, .deadlineExceeded].contains(error.code)
    }

    /// Persists a request as `pending`, in one short transaction, unless its key was seen before.
    ///
    /// - Returns: The record, and whether it is new (`false`: the key's first record, unchanged).
    public func begin(key: String, request: String) async throws -> (entry: Entry, isNew: Bool) {
        try await self.pool.withConnection(lane: self.lane) { lease in
            let inserted = try await lease.query(
                "INSERT INTO \(unescaped: self.table) (idempotency_key, request, status) VALUES (\(key), \(request), 'pending') ON CONFLICT (idempotency_key) DO NOTHING RETURNING \(unescaped: Self.columns)"
            )
            if let row = inserted.first { return (try Self.entry(row), true) }
            let existing = try await lease.query(
                "SELECT \(unescaped: Self.columns) FROM \(unescaped: self.table) WHERE idempotency_key = \(key)")
            guard let row = existing.first else {
                // Deleted between the two statements: try again.
                throw JournalRace(key: key)
            }
            return (try Self.entry(row), false)
        }
    }

    /// Persists the result of a `pending` request as `done`. A request that is no longer
    /// pending keeps what it has: a result is never written twice.
    ///
    /// - Returns: The record as stored: with this result, or with the one written first.
    public func complete(key: String, result: String) async throws -> Entry {
        try await self.transition(key: key, to: .done, result: result, failure: nil)
    }

    /// Resolves an orphan with a result (``complete(key:result:)`` under the name an operator
    /// looks for).
    public func recover(key: String, result: String) async throws -> Entry {
        try await self.complete(key: key, result: result)
    }

    /// Marks a `pending` request `failed`, e.g. an orphan given up.
    public func fail(key: String, reason: String) async throws -> Entry {
        try await self.transition(key: key, to: .failed, result: nil, failure: reason)
    }

    /// Marks a `pending` request `cancelled`.
    public func cancel(key: String) async throws -> Entry {
        try await self.transition(key: key, to: .cancelled, result: nil, failure: nil)
    }

    /// The record of a key, if any.
    public func entry(key: String) async throws -> Entry? {
        try await self.pool.withConnection(lane: self.lane) { lease in
            try await lease.query("SELECT \(unescaped: Self.columns) FROM \(unescaped: self.table) WHERE idempotency_key = \(key)")
                .first.map(Self.entry)
        }
    }

    /// Requests still `pending` that were persisted longer than `age` ago (server time), oldest
    /// first: their process most likely died between the windows.
    public func orphans(olderThan age: Duration) async throws -> [Entry] {
        let seconds = Double(age.components.seconds) + Double(age.components.attoseconds) / 1e18
        return try await self.pool.withConnection(lane: self.lane) { lease in
            try await lease.query(
                "SELECT \(unescaped: Self.columns) FROM \(unescaped: self.table) WHERE status = 'pending' AND created_at <= now() - make_interval(secs => \(seconds)) ORDER BY created_at"
            ).map(Self.entry)
        }
    }

    // MARK: - Rows

    static let columns = "idempotency_key, request, status, result, failure, created_at, updated_at"

    func transition(key: String, to status: Status, result: String?, failure: String?) async throws -> Entry {
        try await self.pool.withConnection(lane: self.lane) { lease in
            let updated = try await lease.query(
                "UPDATE \(unescaped: self.table) SET status = \(status.rawValue), result = \(result), failure = \(failure), updated_at = now() WHERE idempotency_key = \(key) AND status = 'pending' RETURNING \(unescaped: Self.columns)"
            )
            if let row = updated.first { return try Self.entry(row) }
            let existing = try await lease.query(
                "SELECT \(unescaped: Self.columns) FROM \(unescaped: self.table) WHERE idempotency_key = \(key)")
            guard let row = existing.first else { throw JournalMissingKey(key: key) }
            return try Self.entry(row)
        }
    }

    static func entry(_ row: PostgresRow) throws -> Entry {
        let (key, request, status, result, failure, createdAt, updatedAt) = try row.decode(
            (String, String, String, String?, String?, Date, Date).self)
        return Entry(
            key: key, request: request, status: Status(rawValue: status) ?? .failed, result: result, failure: failure,
            createdAt: createdAt, updatedAt: updatedAt)
    }
}

/// A journal operation named a key that has no record.
public struct JournalMissingKey: Error, Sendable, CustomStringConvertible {
    /// The key.
    public let key: String
    public var description: String { "GenerationJournal: no record for key \"\(self.key)\"; begin it first" }
}

/// A journal record was deleted while it was being read; the operation can be retried.
public struct JournalRace: Error, Sendable, CustomStringConvertible {
    /// The key.
    public let key: String
    public var description: String { "GenerationJournal: the record for key \"\(self.key)\" was deleted meanwhile; retry" }
}
