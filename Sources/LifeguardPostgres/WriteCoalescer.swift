import Lifeguard
import Logging
import PostgresNIO
import ServiceLifecycle

/// Group commit for agents' small writes: many callers' statements run in one short transaction
/// on one connection of the write lane, and each caller's `write` returns once its own statement
/// committed.
///
/// Row inserts given as an ``Insert`` (``insert(_:)``) go further: the inserts of a batch into
/// the same table and columns are merged into one multi-row `INSERT`, so a batch of them costs
/// one round trip instead of one per row. Every statement given to ``write(_:)`` is its own
/// round trip, because PostgresNIO does not pipeline.
///
/// A batch is flushed when it reaches ``Configuration/maxBatch`` writes or
/// ``Configuration/maxDelay`` after its first write, whichever comes first. A statement that
/// fails fails its own caller only: the transaction is rolled back and the rest of the batch
/// runs again without it. The queue is bounded (``Configuration/maxQueued``): when it is full,
/// `write` waits for room (back-pressure) rather than queueing without limit.
///
/// ```swift
/// let coalescer = try pool.writeCoalescer()   // run by the pool's run()
/// try await coalescer.insert(.init(into: "agent_steps", columns: ["agent", "step", "state"], values: [agent, step, state]))
/// try await coalescer.write("UPDATE agents SET step = \(step) WHERE id = \(agent)")
/// ```
///
/// Statements must stand alone: no `BEGIN`/`COMMIT`, and nothing that depends on another
/// caller's statement in the same batch.
public final class WriteCoalescer: Service, PoolCompanion, Sendable {
    /// How writes are grouped.
    public struct Configuration: Sendable, Hashable {
        /// The most writes in one transaction. Default: 64.
        public var maxBatch: Int
        /// How long the first write of a batch waits for others. Default: 0: batches form from
        /// the writes that arrive while the previous batches commit. Measured with
        /// `agent-storm-benchmark`: 2 ms multiplied the write latency at 200 writes/s (0.4 →
        /// 2.9 ms p50) for batches of 1.4, and bought nothing under a burst, where batches fill
        /// anyway.
        public var maxDelay: Duration
        /// The most writes waiting to be flushed; beyond it `write` waits for room.
        /// Default: 10,000.
        public var maxQueued: Int
        /// How many batches may be in flight at once, each on its own connection; more than the
        /// lane can lease are not used. Default: 2: one commits while the next fills.
        public var maxConnections: Int
        /// The lane of the coalescer's leases. Default: ``Lifeguard/Lane/write``.
        public var lane: Lane

        /// Creates a configuration.
        ///
        /// - Parameters:
        ///   - maxBatch: The most writes in one transaction. Default: 64.
        ///   - maxDelay: How long a batch waits to fill. Default: 0.
        ///   - maxQueued: The bound of the queue. Default: 10,000.
        ///   - maxConnections: Batches in flight at once. Default: 2.
        ///   - lane: The lane of the leases. Default: `.write`.
        public init(
            maxBatch: Int = 64, maxDelay: Duration = .zero, maxQueued: Int = 10_000, maxConnections: Int = 2,
            lane: Lane = .write
        ) {
            self.maxBatch = maxBatch
            self.maxDelay = maxDelay
            self.maxQueued = maxQueued
            self.maxConnections = maxConnections
            self.lane = lane
        }
    }

    /// One row to insert, which the coalescer may merge with other rows for the same table,
    /// columns and conflict clause into one multi-row `INSERT`.
    ///
    /// `table`, `columns` and `onConflict` are SQL text written into the statement as they are:
    /// they must come from your code, never from user input. The values are sent as bind
    /// parameters. When a merged statement fails, the batch runs again one statement per row,
    /// so that only the failing row's caller fails (a unique violation, or `ON CONFLICT DO
    /// UPDATE` reaching one row twice in one statement, costs that second pass, nothing else).
    public struct Insert: Sendable {
        /// The table, e.g. `agent_steps` or `app.agent_steps`.
        public let table: String
        /// The columns, in the order of ``values``.
        public let columns: [String]
        /// The row's values; `nil` is SQL `NULL`.
        public let values: [(any PostgresThrowingDynamicTypeEncodable & Sendable)?]
        /// What follows `ON CONFLICT`, e.g. `(agent, step) DO NOTHING`; `nil` for no clause.
        public let onConflict: String?

        /// Creates a row insert.
        ///
        /// - Parameters:
        ///   - table: The table (SQL text from your code).
        ///   - columns: The columns (SQL text from your code), as many as `values`.
        ///   - values: The row's values, bound as parameters; `nil` is `NULL`.
        ///   - onConflict: What follows `ON CONFLICT`, if anything.
        public init(
            into table: String, columns: [String], values: [(any PostgresThrowingDynamicTypeEncodable & Sendable)?],
            onConflict: String? = nil
        ) {
            self.table = table
            self.columns = columns
            self.values = values
            self.onConflict = onConflict
        }

        /// The statement's text up to `VALUES`, and after it: rows with equal parts merge.
        var statementParts: (head: String, tail: String) {
            ("INSERT INTO \(self.table) (\(self.columns.joined(separator: ", "))) VALUES ",
             self.onConflict.map { " ON CONFLICT \($0)" } ?? "")
        }
    }

    /// What a caller asked to write.
    enum Write: Sendable {
        case statement(PostgresQuery)
        case insert(Insert)
    }

    /// A write of a batch, with its number.
    typealias Pending = CoalescerStateMachine<Write>.Submitted

    /// The coalescer's settings.
    public let configuration: Configuration
    let pool: PostgresPool
    /// The queue, its flushers and their decisions; this type adds what a batch does.
    let queue: CoalescingQueue<Write, SystemPoolClock>

    /// Creates a coalescer; it flushes nothing until ``run()`` runs.
    ///
    /// - Throws: ``LifeguardError/Code/invalidConfiguration`` listing every bad setting: a
    ///   count below 1, `maxQueued` below `maxBatch`, `maxDelay` negative or past a year,
    ///   a lane the pool lacks, `maxConnections` beyond 100,000.
    public init(pool: PostgresPool, configuration: Configuration = Configuration()) throws(LifeguardError) {
        var problems: [String] = []
        if configuration.maxBatch < 1 { problems.append("WriteCoalescer maxBatch is \(configuration.maxBatch); it must be at least 1") }
        if configuration.maxDelay < .zero || configuration.maxDelay > PoolConfiguration.longestDuration {
            problems.append("WriteCoalescer maxDelay is \(configuration.maxDelay); it must be 0 or more and at most a year")
        }
        if configuration.maxQueued < configuration.maxBatch {
            problems.append("WriteCoalescer maxQueued (\(configuration.maxQueued)) is below maxBatch (\(configuration.maxBatch)); raise it")
        }
        let laneCapacity = pool.capacity(of: configuration.lane)
        if laneCapacity == nil {
            let known = pool.configuration.lanes.keys.map(\.name).sorted().joined(separator: ", ")
            problems.append("WriteCoalescer lane '\(configuration.lane)' is not one of the pool's lanes (\(known)); use one of them")
        }
        if configuration.maxConnections < 1 || configuration.maxConnections > PoolConfiguration.largestBudget {
            problems.append(
                "WriteCoalescer maxConnections is \(configuration.maxConnections); it must be from 1 to \(PoolConfiguration.largestBudget)")
        }
        // An unknown lane is among the problems.
        guard problems.isEmpty, let laneCapacity else { throw LifeguardError.invalidConfiguration(problems) }
        self.pool = pool
        self.configuration = configuration
        let lane = configuration.lane
        self.queue = CoalescingQueue(
            configuration: .init(
                maxBatch: configuration.maxBatch, maxDelay: configuration.maxDelay, maxQueued: configuration.maxQueued,
                // More flushers than the lane can lease would only wait for each other's connections.
                flushers: min(configuration.maxConnections, laneCapacity)),
            clock: pool.clock, logger: pool.logger, stopped: { LifeguardError.shutdown(lane: lane) })
    }

    /// Queues `statement` and returns once it committed.
    ///
    /// - Throws: The statement's own error, or its refusal at `COMMIT` (a deferred
    ///   constraint; the rest of its batch is unaffected); the batch's error when its
    ///   connection was lost before `COMMIT` was sent (then the statement did not commit);
    ///   ``PostgresPoolError/Code/commitOutcomeUnknown`` when it was lost during `COMMIT` (it
    ///   may have committed); ``LifeguardError/Code/invalidConfiguration`` at once for a
    ///   transaction-control statement (`BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, …) or one
    ///   of more than 65,535 bind parameters (the protocol's limit);
    ///   ``LifeguardError/Code/shutdown`` once the coalescer stopped, or
    ///   `CancellationError` when the task was cancelled before its statement was sent.
    public func write(_ statement: PostgresQuery) async throws {
        guard statement.binds.count <= Self.maxParameters else {
            // PostgresNIO would refuse it at sending, after it joined a batch.
            throw LifeguardError.invalidConfiguration([
                "WriteCoalescer.write got a statement with \(statement.binds.count) bind parameters; PostgreSQL's protocol carries at most \(Self.maxParameters)"
            ])
        }
        if [.transactionControl, .commit].contains(StatementKind(of: statement.sql)) {
            // Inside a batch's transaction it would commit or undo its batch-mates' writes.
            throw LifeguardError.invalidConfiguration([
                "WriteCoalescer.write got a transaction-control statement; statements must stand alone (the coalescer runs them in its own transactions)"
            ])
        }
        try await self.queue.submit(.statement(statement))
    }

    /// Queues a row insert, which may share one multi-row `INSERT` with the batch's other rows
    /// for the same table, and returns once it committed.
    ///
    /// - Throws: ``LifeguardError/Code/invalidConfiguration`` at once when `columns` is empty,
    ///   has more than 65,535 entries, or the number of values differs from it; otherwise as
    ///   ``write(_:)``.
    public func insert(_ row: Insert) async throws {
        guard !row.columns.isEmpty, row.columns.count == row.values.count else {
            throw LifeguardError.invalidConfiguration([
                "WriteCoalescer insert into \(row.table) has \(row.columns.count) columns and \(row.values.count) values; give one value per column"
            ])
        }
        guard row.columns.count <= Self.maxParameters else {
            throw LifeguardError.invalidConfiguration([
                "WriteCoalescer insert into \(row.table) has \(row.columns.count) columns; PostgreSQL's protocol carries at most \(Self.maxParameters) bind parameters"
            ])
        }
        try await self.queue.submit(.insert(row))
    }

    /// How many writes are queued, and how many wait for room.
    package var counts: (queued: Int, waitingForRoom: Int) { self.queue.counts }

    /// Flushes batches until the task is cancelled or a graceful shutdown is triggered. After a
    /// graceful shutdown it flushes what was submitted (queued, or waiting for room) and fails
    /// later writes with ``LifeguardError/Code/shutdown``; cancelled, it returns at once
    /// (batches under way end first) and fails the writes not sent with that error.
    ///
    /// A coalescer from `PostgresPool.writeCoalescer(configuration:)` is run by its pool; a
    /// second `run()` of the same coalescer only waits for the first to return.
    public func run() async {
        await self.queue.run(flushingWith: { batch in await self.flush(batch) })
    }

    /// Stops taking writes and fails those not sent with ``LifeguardError/Code/shutdown``: for
    /// a coalescer that will not flush any more (its pool's run ended without starting it).
    package func abandon() {
        self.queue.abandon()
    }

    /// Stops accepting writes; what was submitted is still flushed, at once (a batch waiting
    /// out `maxDelay` goes now).
    public func shutdown() {
        self.queue.shutdown()
    }

    /// How a batch's transaction ended.
    enum BatchOutcome {
        case committed
        /// The statement at this index failed with this error; the transaction was rolled back.
        case statementFailed(Int, any Error)
        /// The server refused the `COMMIT` (a deferred constraint): nothing was committed, and
        /// which write is at fault is unknown.
        case commitRefused(any Error)
    }

    /// Whether `error` is the server's refusal of a statement, as opposed to a lost connection.
    static func isServerRefusal(_ error: any Error) -> Bool {
        if let error = error as? PSQLError { return error.serverInfo != nil }
        if let error = error as? PostgresPoolError { return error.code == .commitFailed }
        return false
    }

    /// One statement of a flush and the batch's writes it carries.
    struct PlannedStatement {
        var query: PostgresQuery
        /// Indexes into the batch.
        var members: [Int]
    }

    /// The most bind parameters in one statement (the protocol counts them in 16 bits).
    static let maxParameters = 65_535

    /// The statements that carry `writes`: each statement alone, and when `merging`, the row
    /// inserts with equal table, columns and conflict clause merged into multi-row `INSERT`s
    /// (at the place of their first row). Rows whose values fail to encode are returned apart.
    static func plan(_ writes: [Write], merging: Bool) -> (statements: [PlannedStatement], unencodable: [(Int, any Error)]) {
        var statements: [PlannedStatement] = []
        var unencodable: [(Int, any Error)] = []
        /// The rows of each merged insert, by statement text; its statement goes where the
        /// first row was.
        var groups: [String: [Int]] = [:]
        for (index, write) in writes.enumerated() {
            switch write {
            case .statement(let query):
                statements.append(PlannedStatement(query: query, members: [index]))
            case .insert(let row):
                let parts = row.statementParts
                let key = parts.head + parts.tail
                if merging, groups[key] != nil {
                    groups[key]!.append(index)
                } else {
                    if merging { groups[key] = [index] }
                    statements.append(PlannedStatement(query: "", members: [index]))
                }
            }
        }
        // Write the insert statements, splitting merged ones at the parameter limit.
        var written: [PlannedStatement] = []
        for statement in statements {
            guard case .insert(let first) = writes[statement.members[0]] else {
                written.append(statement)
                continue
            }
            let parts = first.statementParts
            let rows = merging ? groups[parts.head + parts.tail]! : statement.members
            let rowsPerStatement = max(1, Self.maxParameters / first.columns.count)
            for chunk in stride(from: 0, to: rows.count, by: rowsPerStatement) {
                var members = Array(rows[chunk..<min(chunk + rowsPerStatement, rows.count)])
                // A row whose values fail to encode leaves the statement, which is written again
                // without it (rare: only throwing encoders, e.g. JSON, fail).
                while !members.isEmpty {
                    do {
                        written.append(try Self.insertStatement(parts, members.map { writes[$0] }, members: members))
                        break
                    } catch {
                        unencodable.append((members[error.index], error.error))
                        members.remove(at: error.index)
                    }
                }
            }
        }
        return (written, unencodable)
    }

    /// A row of ``insertStatement(_:_:members:)`` whose values failed to encode.
    struct UnencodableRow: Error {
        /// The row's position among the statement's rows.
        let index: Int
        let error: any Error
    }

    /// One `INSERT` of `rows`, all with the same statement parts.
    ///
    /// - Throws: ``UnencodableRow`` for the first row whose values fail to encode.
    static func insertStatement(
        _ parts: (head: String, tail: String), _ rows: [Write], members: [Int]
    ) throws(UnencodableRow) -> PlannedStatement {
        var sql = parts.head
        var bindings = PostgresBindings()
        for (index, write) in rows.enumerated() {
            guard case .insert(let row) = write else { continue }
            let offset = bindings.count
            do {
                for value in row.values {
                    if let value { try bindings.append(value) } else { bindings.appendNull() }
                }
            } catch {
                throw UnencodableRow(index: index, error: error)
            }
            sql += (index == 0 ? "(" : ", (") + (1...row.columns.count).map { "$\(offset + $0)" }.joined(separator: ", ") + ")"
        }
        return PlannedStatement(query: PostgresQuery(unsafeSQL: sql + parts.tail, binds: bindings), members: members)
    }

    /// Runs a batch in one transaction (a batch that is one statement runs alone, in its own
    /// implicit transaction). A failing statement that carries one write fails its caller, and
    /// the rest run again without it; a failing merged `INSERT` makes the batch run again one
    /// statement per row, to find the row at fault; a refused `COMMIT` (a deferred constraint)
    /// makes each write run alone, so that only the one at fault fails.
    ///
    /// A lost connection fails everyone still in the batch: before `COMMIT` was sent, with the
    /// error (nothing committed); during `COMMIT`, or during a statement running alone, with
    /// ``PostgresPoolError/Code/commitOutcomeUnknown`` (it may have committed).
    func flush(_ batch: [Pending]) async {
        var remaining = batch
        var merging = true
        while !remaining.isEmpty {
            let (statements, unencodable) = Self.plan(remaining.map(\.write), merging: merging)
            if !unencodable.isEmpty {
                for (index, error) in unencodable.sorted(by: { $0.0 > $1.0 }) {
                    self.queue.resolve(remaining.remove(at: index).id, with: .failure(error))
                }
                continue
            }
            do {
                let outcome = try await self.pool.withConnection(lane: self.configuration.lane) { lease -> BatchOutcome in
                    if statements.count == 1 {
                        do {
                            try await lease.execute(statements[0].query)
                            return .committed
                        } catch where Self.isServerRefusal(error) {
                            return .statementFailed(0, error)
                        } catch is CancellationError {
                            throw CancellationError()
                        } catch let error as PostgresPoolError where error.code == .commitOutcomeUnknown {
                            throw error
                        } catch {
                            throw PostgresPoolError(
                                code: .commitOutcomeUnknown,
                                detail: "the statement failed with \(PostgresPoolError.describe(error))", backendPID: lease.backendPID)
                        }
                    }
                    try await lease.execute("BEGIN")
                    for (index, statement) in statements.enumerated() {
                        do {
                            try await lease.execute(statement.query)
                        } catch where Self.isServerRefusal(error) {
                            // The server refused this statement: only its writes are at fault.
                            try await lease.execute("ROLLBACK")
                            return .statementFailed(index, error)
                        }
                    }
                    do {
                        try await lease.commit()
                    } catch where Self.isServerRefusal(error) {
                        return .commitRefused(error)
                    }
                    return .committed
                }
                switch outcome {
                case .committed:
                    for pending in remaining { self.queue.resolve(pending.id, with: .success(())) }
                    remaining = []
                case .statementFailed(let index, let error):
                    let members = statements[index].members
                    if members.count == 1 {
                        self.queue.resolve(remaining.remove(at: members[0]).id, with: .failure(error))
                    } else {
                        merging = false
                    }
                case .commitRefused(let error):
                    if remaining.count == 1 {
                        self.queue.resolve(remaining.removeFirst().id, with: .failure(error))
                    } else {
                        for pending in remaining { await self.flush([pending]) }
                        remaining = []
                    }
                }
            } catch {
                // The run was cancelled with this batch in flight: not committed (a commit
                // whose answer was lost throws commitOutcomeUnknown instead), and the writers
                // were not cancelled themselves.
                let reported: any Error = error is CancellationError ? LifeguardError.shutdown(lane: self.configuration.lane) : error
                for pending in remaining { self.queue.resolve(pending.id, with: .failure(reported)) }
                remaining = []
            }
        }
    }
}
