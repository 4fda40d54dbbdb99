/// A position in PostgreSQL's write-ahead log (a `pg_lsn`, written `16/B374D848`): where a
/// commit ended on the primary, and how far a standby has replayed.
///
/// It is what read-your-writes carries: a write returns the position after its commit
/// (``PostgresCluster/withTransactionReturningPosition(lane:fileID:line:function:_:)``), and a
/// read that passes it (``PostgresCluster/withConnection(lane:readingAfter:fileID:line:function:_:)``)
/// sees that write. Its ``description`` is a token a user can carry across requests (a cookie,
/// a header) and read back with ``init(_:)``; it names no table, row or user.
public struct WALPosition: Sendable, Hashable, Comparable, LosslessStringConvertible {
    /// The position as PostgreSQL counts it: bytes from the log's start.
    public let bytes: UInt64

    /// Creates a position from its byte offset.
    ///
    /// - Parameter bytes: Bytes from the log's start.
    public init(bytes: UInt64) {
        self.bytes = bytes
    }

    /// Reads a position as PostgreSQL writes it (`16/B374D848`: two hexadecimal halves); `nil`
    /// for anything else, so that a token from a client cannot be taken for another value.
    ///
    /// - Parameter description: The text, e.g. from a cookie.
    public init?(_ description: String) {
        let halves = description.split(separator: "/", omittingEmptySubsequences: false)
        // Hexadecimal digits in ASCII only: no sign, no space, no other script's digits.
        let isHexadecimal = { (half: Substring) in
            half.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains($0)
                || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
        }
        guard halves.count == 2, halves.allSatisfy({ (1...8).contains($0.utf8.count) && isHexadecimal($0) }),
              let high = UInt32(halves[0], radix: 16), let low = UInt32(halves[1], radix: 16) else { return nil }
        self.bytes = UInt64(high) << 32 | UInt64(low)
    }

    /// The position as PostgreSQL writes it: `16/B374D848`.
    public var description: String {
        String(self.bytes >> 32, radix: 16, uppercase: true) + "/" + String(self.bytes & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    /// Whether `lhs` comes before `rhs` in the log.
    ///
    /// - Parameters:
    ///   - lhs: A position.
    ///   - rhs: Another position.
    /// - Returns: `true` when `lhs` is earlier.
    public static func < (lhs: WALPosition, rhs: WALPosition) -> Bool {
        lhs.bytes < rhs.bytes
    }
}
