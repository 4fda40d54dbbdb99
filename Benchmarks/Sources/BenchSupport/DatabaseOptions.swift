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
