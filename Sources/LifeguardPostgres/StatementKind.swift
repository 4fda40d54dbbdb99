/// What a statement may do beyond its result, judged from its text: its first keywords (after
/// comments), and the few functions and names that change a session. The lease reads it for
/// every statement, so it builds no string: ASCII bytes compared in place, case-insensitively.
///
/// Text cannot be a proof: a function that runs `SET` inside, or dynamic SQL built in a way
/// not listed here, goes unseen. It errs on the side of `changesSession` and `mayChangeSession`,
/// which only cost a reconnect.
enum StatementKind: Equatable {
    /// Starts, rolls back or marks a transaction: `BEGIN`, `ROLLBACK`, `SAVEPOINT`, …
    case transactionControl
    /// Commits the open transaction: `COMMIT`, `END`. Its CommandComplete comes once the
    /// transaction has committed, so a connection lost after it was sent leaves the outcome
    /// unknown, never "nothing committed".
    case commit
    /// Changes the session beyond the transaction, for whoever uses the connection next: `SET`
    /// (not `SET LOCAL`), `RESET`, `CREATE TEMP`, `LISTEN`, `PREPARE`, `DECLARE`, `LOAD`, `INTO
    /// TEMP`, session advisory locks.
    case changesSession
    /// May change the session, depending on what it runs or its arguments: `DO` and `CALL`
    /// blocks, `set_config` (local or not), names in `pg_temp`, `pg_settings`, `U&` names.
    case mayChangeSession
    /// Starts with `SELECT`, `VALUES`, `TABLE` or `SHOW`: a read, unless a function it calls
    /// writes (which the text cannot tell).
    case read
    /// Anything else, writes among them.
    case other

    /// Whether the statement may write: anything but a read or transaction control. A write
    /// behind a suspect pooler waits for a server, and one lost in flight has an unknown outcome.
    var mayWrite: Bool { self != .read && self != .transactionControl }

    init(of sql: String) {
        var sql = sql
        self = sql.withUTF8 { Self.classify($0) }
    }

    private static func classify(_ bytes: UnsafeBufferPointer<UInt8>) -> StatementKind {
        var index = 0
        /// Skips separators and comments (`-- …` to the line's end, `/* … */`).
        func skipSpace() {
            while index < bytes.count {
                if isSeparator(bytes[index]) {
                    index += 1
                } else if bytes[index] == UInt8(ascii: "-"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "-") {
                    while index < bytes.count, bytes[index] != 0x0A { index += 1 }
                } else if bytes[index] == UInt8(ascii: "/"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "*") {
                    index += 2
                    while index + 1 < bytes.count, !(bytes[index] == UInt8(ascii: "*") && bytes[index + 1] == UInt8(ascii: "/")) { index += 1 }
                    index = min(index + 2, bytes.count)
                } else {
                    return
                }
            }
        }
        func nextWord() -> Range<Int> {
            skipSpace()
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
        switch true {
        case word(first, is: "COMMIT"), word(first, is: "END"):
            return .commit
        case word(first, is: "BEGIN"), word(first, is: "START"),
            word(first, is: "ROLLBACK"), word(first, is: "ABORT"), word(first, is: "SAVEPOINT"), word(first, is: "RELEASE"):
            return .transactionControl
        case word(first, is: "PREPARE"):
            return word(nextWord(), is: "TRANSACTION") ? .transactionControl : .changesSession
        case word(first, is: "SET"):
            let second = nextWord()
            return word(second, is: "LOCAL") || word(second, is: "TRANSACTION") || word(second, is: "CONSTRAINTS") ? .other : .changesSession
        case word(first, is: "RESET"), word(first, is: "LISTEN"), word(first, is: "DECLARE"), word(first, is: "LOAD"):
            return .changesSession
        case word(first, is: "DO"), word(first, is: "CALL"):
            // DO and CALL run code that may do anything, SET included.
            return .mayChangeSession
        case word(first, is: "CREATE"):
            var second = nextWord()
            if word(second, is: "OR") {
                _ = nextWord()   // REPLACE
                second = nextWord()
            }
            let temporary = word(second, is: "TEMP") || word(second, is: "TEMPORARY")
                || ((word(second, is: "LOCAL") || word(second, is: "GLOBAL")) && { let third = nextWord(); return word(third, is: "TEMP") || word(third, is: "TEMPORARY") }())
            if temporary { return .changesSession }
        default:
            break
        }
        if contains(bytes, "advisory_lock") || contains(bytes, "into temp") {
            return .changesSession
        }
        if contains(bytes, "set_config") || contains(bytes, "pg_temp") || contains(bytes, "pg_settings") || contains(bytes, "u&") {
            return .mayChangeSession
        }
        if word(first, is: "SELECT") || word(first, is: "VALUES") || word(first, is: "TABLE") || word(first, is: "SHOW") {
            return .read
        }
        return .other
    }

    /// Whether `needle` (lowercase ASCII) occurs in `bytes`, case-insensitively.
    private static func contains(_ bytes: UnsafeBufferPointer<UInt8>, _ needle: StaticString) -> Bool {
        needle.withUTF8Buffer { needle in
            guard bytes.count >= needle.count, let head = needle.first else { return false }
            var start = 0
            while start + needle.count <= bytes.count {
                if bytes[start] | 0x20 == head, zip(bytes[start..<start + needle.count], needle).allSatisfy({ $0 | 0x20 == $1 | 0x20 }) {
                    return true
                }
                start += 1
            }
            return false
        }
    }

    private static func isSeparator(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || (byte >= 0x09 && byte <= 0x0D) || byte == UInt8(ascii: ";") || byte == UInt8(ascii: "(")
    }
}
