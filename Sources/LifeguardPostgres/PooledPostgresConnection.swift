import Lifeguard
import Logging
import PostgresNIO
import Synchronization

/// A PostgresNIO connection as the pool keeps it: its backend process id, and what the leases
/// did with it (an open transaction, a statement in flight, a failure, a server-side cancel), so
/// that the pool resets it only when it is dirty.
///
/// The statement that starts or ends a transaction is recognised by its first keyword. Anything
/// the lease cannot see (the raw `PostgresConnection` was used, a statement failed, a cancel was
/// sent) makes the connection dirty, and a dirty connection is reset with `ROLLBACK` before reuse.
@usableFromInline
final class PooledPostgresConnection: Sendable, CustomStringConvertible {
    struct Tracking {
        var isInTransaction = false
        var isDirty = false
        /// The statement running now, by number, if any.
        var statementInFlight: Int?
        var nextStatement = 0
        /// Cancel requests sent or about to be sent for this connection; a reset waits for them
        /// so that a late cancel cannot hit the next user's statement.
        var cancelsOutstanding = 0
        /// When the last statement ended (or the connection opened).
        var lastStatementEnded = PoolInstant.now
    }

    let postgres: PostgresConnection
    /// The server process serving this connection (`pg_backend_pid()`), the target of cancels.
    let backendPID: Int32
    private let tracking = Mutex(Tracking())

    init(postgres: PostgresConnection, backendPID: Int32) {
        self.postgres = postgres
        self.backendPID = backendPID
    }

    @usableFromInline var description: String { "connection(pid \(self.backendPID))" }

    var condition: ConnectionCondition {
        if self.postgres.isClosed { return .broken }
        return self.tracking.withLock { state in
            state.isInTransaction || state.isDirty || state.statementInFlight != nil || state.cancelsOutstanding > 0
                ? .needsReset : .reusable
        }
    }

    var isInTransaction: Bool { self.tracking.withLock { $0.isInTransaction } }

    /// Busy while a statement runs; otherwise idle since the last one ended.
    var activity: LeaseActivity {
        self.tracking.withLock { state in
            state.statementInFlight != nil ? .busy : .idle(since: state.lastStatementEnded)
        }
    }

    /// The error for a statement on a connection the server or the network already closed.
    struct ConnectionClosed: Error, CustomStringConvertible {
        let backendPID: Int32
        var description: String { "the connection to PostgreSQL (backend pid \(self.backendPID)) is closed" }
    }

    /// Throws when the connection is closed. PostgresNIO never completes a statement written to
    /// a closed channel, so nothing may be sent on one.
    func checkOpen() throws {
        if self.postgres.isClosed { throw ConnectionClosed(backendPID: self.backendPID) }
    }

    /// Marks a statement as running; returns its number.
    func beginStatement() -> Int {
        self.tracking.withLock { state in
            state.nextStatement += 1
            state.statementInFlight = state.nextStatement
            return state.nextStatement
        }
    }

    /// Marks a statement as done and records its effect on the transaction.
    func endStatement(_ number: Int, sql: String, succeeded: Bool) {
        let effect = TransactionEffect(of: sql)
        let now = PoolInstant.now
        self.tracking.withLock { state in
            if state.statementInFlight == number { state.statementInFlight = nil }
            state.lastStatementEnded = now
            switch (succeeded, effect) {
            case (true, .begins): state.isInTransaction = true
            case (true, .ends), (false, .ends): state.isInTransaction = false
            case (true, .none): break
            case (false, _): state.isDirty = true
            }
        }
    }

    /// The lease used the raw connection: the pool can no longer tell its state.
    func markDirty() {
        self.tracking.withLock { $0.isDirty = true }
    }

    /// Whether statement `number` is still running.
    func isRunning(_ number: Int) -> Bool {
        self.tracking.withLock { $0.statementInFlight == number }
    }

    /// Registers a cancel request for statement `number`; `false` when it is no longer running.
    func beginCancel(of number: Int) -> Bool {
        self.tracking.withLock { state in
            guard state.statementInFlight == number else { return false }
            state.cancelsOutstanding += 1
            state.isDirty = true
            return true
        }
    }

    func endCancel() {
        self.tracking.withLock { $0.cancelsOutstanding -= 1 }
    }

    var hasOutstandingCancels: Bool { self.tracking.withLock { $0.cancelsOutstanding > 0 } }

    /// Forgets every mark once the connection was reset.
    func markClean() {
        self.tracking.withLock { state in
            state.isInTransaction = false
            state.isDirty = false
            state.statementInFlight = nil
        }
    }
}

/// What a statement does to the transaction state, judged by its first keyword.
enum TransactionEffect: Equatable {
    case begins
    case ends
    case none

    /// Reads the statement's first word, and the second when it decides: ASCII bytes compared
    /// in place, case-insensitively, against each keyword. Every statement a lease runs goes
    /// through it, so it builds no string: an earlier version that uppercased each word into a
    /// `String` cost about 1,200 instructions per `SELECT 1`.
    init(of sql: String) {
        var sql = sql
        self = sql.withUTF8 { Self.classify($0) }
    }

    private static func classify(_ bytes: UnsafeBufferPointer<UInt8>) -> TransactionEffect {
        var index = 0
        func nextWord() -> Range<Int> {
            while index < bytes.count, isSeparator(bytes[index]) { index += 1 }
            let start = index
            while index < bytes.count, !isSeparator(bytes[index]) { index += 1 }
            return start..<index
        }
        func word(_ range: Range<Int>, is keyword: StaticString) -> Bool {
            guard range.count == keyword.utf8CodeUnitCount else { return false }
            return keyword.withUTF8Buffer { keyword in
                // Clearing bit 5 uppercases an ASCII letter; no other byte becomes one.
                zip(bytes[range], keyword).allSatisfy { $0 & 0xDF == $1 }
            }
        }
        let first = nextWord()
        guard let initial = first.first.map({ bytes[$0] & 0xDF }) else { return .none }
        switch initial {
        case UInt8(ascii: "B") where word(first, is: "BEGIN"), UInt8(ascii: "S") where word(first, is: "START"):
            return .begins
        case UInt8(ascii: "C") where word(first, is: "COMMIT"), UInt8(ascii: "E") where word(first, is: "END"),
            UInt8(ascii: "A") where word(first, is: "ABORT"):
            return .ends
        case UInt8(ascii: "R") where word(first, is: "ROLLBACK"):
            // ROLLBACK TO SAVEPOINT stays in the transaction.
            return word(nextWord(), is: "TO") ? .none : .ends
        case UInt8(ascii: "P") where word(first, is: "PREPARE"):
            return word(nextWord(), is: "TRANSACTION") ? .ends : .none
        default:
            return .none
        }
    }

    private static func isSeparator(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || (byte >= 0x09 && byte <= 0x0D) || byte == UInt8(ascii: ";")
    }
}
