import Lifeguard
@testable import LifeguardPostgres
import PropertyBased
import Testing

/// A bounded fuzz run over everything a user types into a configuration: URLs assembled from
/// the pieces that broke parsers before (ports out of range, escapes, control characters,
/// repeated options), and settings set to any value. Nothing may trap, an accepted
/// configuration must be one the server can take, and the password never shows.
@Suite("Input fuzzing: URLs and settings")
struct InputFuzzTests {
    static let secret = "pw-s3cr3t-0451"

    static let pieces = [
        "postgres://", "postgresql://", "http://", "u", "user", ":", ":\(secret)@", "@", "h", "db.example", "[::1]", "127.0.0.1",
        ":5432", ":0", ":65535", ":65536", ":-1", ":99999999999999999999999", "/", "/d", "?", "&", "=", "#",
        "sslmode=", "disable", "verify-full", "bogus", "host=", "/tmp", "connect_timeout=", "10000000000", "-3", "5",
        "application_name=", "app", "%", "%0", "%00", "%zz", "%41", "%0A", "\u{0}", "\n", "\t", "é", " ", "sslrootcert=",
        "option", "sslmode=disable&sslmode=require",
    ]

    @Test("any URL either fails with the problems listed or gives a configuration the server can take; the password never shows")
    func urls() async {
        await propertyCheck(count: 3_000, input: Gen.element(of: Self.pieces).array(of: 0...14)) { pieces in
            // Thousands of cases: let the other suites' tasks run on the cooperative pool's two threads.
            await Task.yield()
            let url = pieces.compactMap { $0 }.joined()
            do {
                let configuration = try PostgresPool.Configuration(url: url)
                try configuration.validate()
                #expect((1...65_535).contains(configuration.port), "\(url)")
                #expect(configuration.connectTimeout <= .seconds(86_400), "\(url)")
                for value in [configuration.applicationName, configuration.username, configuration.database ?? ""] {
                    #expect(!value.unicodeScalars.contains { $0.properties.generalCategory == .control }, "\(url)")
                }
                #expect(!String(describing: configuration).contains(Self.secret), "\(url)")
                var dumped = ""
                dump(configuration, to: &dumped)
                #expect(!dumped.contains(Self.secret), "\(url)")
            } catch let error as LifeguardError {
                #expect(!error.problems.isEmpty)
                #expect(!String(describing: error).contains(Self.secret), "\(url)")
                #expect(String(describing: error).utf8.count < 4_000)
            } catch {
                Issue.record("\(url): \(error)")
            }
        }
    }

    @Test("settings set to any number are checked, never trap, and the pool is built only from valid ones")
    func settings() async {
        let numbers = Gen.element(of: [Int.min, -1, 0, 1, 2, 65_535, 65_536, 100_000, 100_001, Int.max])
        let durations = Gen.element(of: [Duration.seconds(Int64.min), .zero, .nanoseconds(1), .seconds(1), .seconds(86_400 * 400), .seconds(Int64.max)])
        await propertyCheck(count: 2_000, input: numbers, numbers, durations, durations) { port, budget, timeout, wait in
            // Thousands of cases: let the other suites' tasks run on the cooperative pool's two threads.
            await Task.yield()
            var configuration = PostgresPool.Configuration(host: "127.0.0.1", username: "u", password: Self.secret, database: "d")
            configuration.port = port ?? 0
            configuration.budget = budget ?? 0
            configuration.connectTimeout = timeout ?? .zero
            configuration.lanes[.retrieval]?.waitTimeout = wait ?? .zero
            configuration.lanes[.write]?.reserved = budget ?? 0
            do {
                _ = try PostgresPool(configuration: configuration, logger: .init(label: "fuzz"))
                #expect((1...65_535).contains(configuration.port))
            } catch let error as LifeguardError {
                #expect(!error.problems.isEmpty)
                #expect(!String(describing: error).contains(Self.secret))
            } catch {
                Issue.record("\(error)")
            }
        }
    }
}
