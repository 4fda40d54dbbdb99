import ArgumentParser
import Foundation

/// `--database-url`, shared by the benchmark programs that need a server: the URL given, or
/// `$DATABASE_URL`. Its default is never printed (it holds a password).
public struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "The server. Default: $DATABASE_URL (./scripts/postgres.sh url).")
    var given: String?

    public init() {}

    /// The server to run against.
    public var url: String { self.given ?? ProcessInfo.processInfo.environment["DATABASE_URL"] ?? "" }

    public func validate() throws {
        guard !self.url.isEmpty else {
            throw ValidationError("set DATABASE_URL or pass --database-url (./scripts/postgres.sh start && ./scripts/postgres.sh url)")
        }
    }
}

/// A figure for the programs' tables: whole from 100, one decimal from 10, two below.
public func format(_ value: Double) -> String {
    if !value.isFinite || abs(value) >= 1e15 { return "\(value)" }
    if value >= 100 { return "\(Int(value.rounded()))" }
    if value >= 10 { return "\((value * 10).rounded() / 10)" }
    return "\((value * 100).rounded() / 100)"
}
