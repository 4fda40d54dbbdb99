import Lifeguard
@testable import LifeguardPostgres
import Testing

@Suite("PostgreSQL configuration")
struct PostgresConfigurationTests {
    @Test("a write coalescer's bad settings are all reported at once")
    func coalescerConfiguration() throws {
        let pool = try PostgresPool(
            configuration: PostgresPool.Configuration(url: "postgres://app@localhost/app"), logger: .init(label: "test"))
        do {
            _ = try WriteCoalescer(pool: pool, configuration: .init(maxBatch: 0, maxDelay: .milliseconds(-1), maxQueued: -1, maxConnections: 0))
            Issue.record("expected invalidConfiguration")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.problems.count == 4)
        }
    }

    @Test("a URL gives host, port, user, database and options; the password never shows")
    func parseURL() throws {
        let configuration = try PostgresPool.Configuration(
            url: "postgresql://app%40corp:s3cr%2Ft@db.internal:6543/rag%20docs?sslmode=verify-full&application_name=api&connect_timeout=3")
        #expect(configuration.host == "db.internal")
        #expect(configuration.port == 6543)
        #expect(configuration.username == "app@corp")
        #expect(configuration.password == "s3cr/t")
        #expect(configuration.database == "rag docs")
        #expect(configuration.tlsMode == .verifyFull)
        #expect(configuration.applicationName == "api")
        #expect(configuration.connectTimeout == .seconds(3))
        #expect(!configuration.description.contains("s3cr"))
        #expect(configuration.description.contains("***"))
    }

    @Test("defaults: port 5432, sslmode prefer, application_name lifeguard, IPv6 hosts")
    func defaults() throws {
        let configuration = try PostgresPool.Configuration(url: "postgres://app@[::1]/app")
        #expect(configuration.host == "::1")
        #expect(configuration.port == 5432)
        #expect(configuration.tlsMode == .prefer)
        #expect(configuration.applicationName == "lifeguard")
        #expect(configuration.password == nil)
    }

    @Test("every problem of a URL is reported at once, without the password")
    func badURL() {
        do {
            _ = try PostgresPool.Configuration(url: "mysql://:hunter2@/db?sslmode=sometimes&colour=blue")
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.problems.count == 5)
            let text = String(describing: error)
            #expect(text.contains("scheme"))
            #expect(text.contains("sslmode 'sometimes'"))
            #expect(text.contains("unknown URL option 'colour'"))
            #expect(!text.contains("hunter2"))
        }
    }

    @Test("DATABASE_URL is read from the environment, and its absence is explained")
    func environment() throws {
        let configuration = try PostgresPool.Configuration(environment: ["DATABASE_URL": "postgres://u:p@h/d"])
        #expect(configuration.host == "h")
        #expect(throws: LifeguardError.self) { try PostgresPool.Configuration(environment: [:]) }
    }

    @Test("the control connection of server-side cancellation counts in the budget")
    func controlConnectionInBudget() throws {
        var configuration = try PostgresPool.Configuration(url: "postgres://u@h/d")
        configuration.budget = 20
        configuration.lanes = [.retrieval: .init(reserved: 12), .write: .init(reserved: 8)]
        do {
            try configuration.validate()
            Issue.record("20 reserved of 19 usable must be rejected")
        } catch {
            #expect(String(describing: error).contains("control connection"))
        }
        configuration.serverSideCancellation = false
        try configuration.validate()
    }

    @Test("every sslmode maps to a TLS setting: disable is plain, prefer may fall back, the rest require TLS",
          arguments: PostgresPool.Configuration.TLSMode.allCases)
    func tlsModes(mode: PostgresPool.Configuration.TLSMode) throws {
        let configuration = try PostgresPool.Configuration(url: "postgres://u@h/d?sslmode=\(mode.rawValue)")
        let tls = try configuration.makeTLS()
        #expect(tls.isAllowed == (mode != .disable))
        #expect(tls.isEnforced == (mode != .disable && mode != .prefer))
    }

    @Test("statements that open and close transactions are recognised", arguments: [
        ("BEGIN", TransactionEffect.begins), ("  start transaction isolation level serializable", .begins),
        ("COMMIT", .ends), ("end", .ends), ("ROLLBACK", .ends), ("rollback to savepoint a", .none),
        ("abort;", .ends), ("PREPARE TRANSACTION 'x'", .ends), ("SELECT 1", .none), ("", .none),
        ("\tCommit\n", .ends), ("ROLLBACK;TO x", .none), ("prepare foo AS SELECT 1", .none), ("ENDING", .none),
        ("BEGINNING", .none), ("STAR", .none), ("   ", .none), ("Ünicode BEGIN", .none), ("begin work", .begins),
    ])
    func transactionEffects(sql: String, effect: TransactionEffect) {
        #expect(TransactionEffect(of: sql) == effect)
    }
}
