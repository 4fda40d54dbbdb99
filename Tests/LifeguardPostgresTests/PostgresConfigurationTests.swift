import Lifeguard
@testable import LifeguardPostgres
import NIOCore
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

    @Test("server-side cancellation takes no connection of the budget: the lanes share all of it")
    func cancellationOutsideBudget() throws {
        var configuration = try PostgresPool.Configuration(url: "postgres://u@h/d")
        configuration.budget = 20
        configuration.lanes = [.retrieval: .init(reserved: 12), .write: .init(reserved: 8)]
        try configuration.validate()
        configuration.budget = 1
        configuration.lanes = [.retrieval: .init(reserved: 1)]
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

    /// Backend frames: BackendKeyData, a DataRow (skipped), CommandComplete, an ErrorResponse,
    /// ReadyForQuery; then the same cut at every position, and byte by byte.
    static let backendStream: [UInt8] = {
        func frame(_ type: Character, _ body: [UInt8]) -> [UInt8] {
            let length = UInt32(body.count + 4)
            return [type.asciiValue!] + withUnsafeBytes(of: length.bigEndian, Array.init) + body
        }
        return frame("K", [0, 0, 0x30, 0x39, 0, 0, 0, 7]) + frame("D", Array(repeating: 9, count: 300)) + frame("C", Array("INSERT 0 1\0".utf8))
            + frame("E", Array("SERROR\0C23503\0Mviolates\0\0".utf8)) + frame("Z", [UInt8(ascii: "I")])
    }()

    @Test("the protocol tap reads frames however the stream is cut", arguments: [0, 1, 5, 7, 300, 311, 329])
    func frameReader(cut: Int) {
        func read(_ chunks: [[UInt8]]) -> WireState {
            let wire = WireState()
            var reader = FrameReader(untypedFrames: false)
            for chunk in chunks {
                var buffer = ByteBuffer(bytes: chunk)
                #expect(reader.read(&buffer) { type, body in wire.received(type: type, body: &body) })
            }
            return wire
        }
        let stream = Self.backendStream
        for wire in [read([Array(stream[..<cut]), Array(stream[cut...])]), read(stream.map { [$0] })] {
            #expect(wire.keyData == WireState.KeyData(processID: 12345, secretKey: 7))
            #expect(wire.isSettled)
        }
    }

    @Test("an error after CommandComplete is a refused commit; one before it is the statement's own")
    func refusedCommit() async {
        let wire = WireState()
        func receive(_ type: Character, _ body: String = "") {
            var buffer = ByteBuffer(string: body)
            wire.received(type: type.asciiValue!, body: &buffer)
        }
        receive("Z", "I")   // the startup's
        wire.sent(type: UInt8(ascii: "S"))
        #expect(!wire.isSettled)
        receive("C")
        receive("E", "C23503\0Mviolates\0\0")
        receive("Z", "I")
        #expect(await wire.settle() == .refused(ServerErrorFields(severity: nil, sqlState: "23503", message: "violates", detail: nil)))
        wire.sent(type: UInt8(ascii: "S"))
        receive("E", "C42P01\0Mno such table\0\0")
        receive("Z", "I")
        #expect(await wire.settle() == .ready(.idle))
        // A FATAL after CommandComplete is the session's end, not a refusal: after a COMMIT
        // statement's CommandComplete the transaction has committed.
        wire.sent(type: UInt8(ascii: "S"))
        receive("C")
        receive("E", "SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0")
        wire.channelClosed()
        #expect(await wire.settle() == .lost(ServerErrorFields(
            severity: "FATAL", sqlState: "57P01", message: "terminating connection due to administrator command", detail: nil)))
    }

    @Test("a connection closed after CommandComplete leaves the outcome unknown")
    func lostAfterCompletion() async {
        let wire = WireState()
        var ready = ByteBuffer(string: "I")
        wire.received(type: UInt8(ascii: "Z"), body: &ready)
        wire.sent(type: UInt8(ascii: "S"))
        var empty = ByteBuffer()
        wire.received(type: UInt8(ascii: "C"), body: &empty)
        wire.channelClosed()
        #expect(await wire.settle() == .lost(nil))
    }

    @Test("a password that also stands in another setting never shows (found by the URL fuzz target)")
    func passwordInAnotherSetting() throws {
        let configuration = try PostgresPool.Configuration(url: "postgresql://host=:pw-s3cr3t-0451@postgres:5432?application_name=pw-s3cr3t-0451")
        var dumped = ""
        dump(configuration, to: &dumped)
        #expect(!String(describing: configuration).contains("pw-s3cr3t-0451"))
        #expect(!dumped.contains("pw-s3cr3t-0451"))
    }

    @Test("a password with an unescaped '/', '?' or '#' is refused, and no piece of it shows (found by the URL fuzz target)", arguments: [
        "postgres://app:Zq/xK7-secret@db/app", "postgres://app:Zq?xK7-secret@db/app", "postgres://app:Zq#xK7-secret@db/app",
        "postgres://app@db:5432//:Zq-xK7-secret@?sslmode=prefer",
    ])
    func misplacedCredentials(url: String) {
        let problems = Self.problems(of: url)
        #expect(problems.contains { $0.contains("percent-encode") }, "\(problems)")
        #expect(!String(describing: problems).contains("Zq"), "\(problems)")
        #expect(!String(describing: problems).contains("xK7"), "\(problems)")
    }

    /// The problems a URL is refused with, or `[]` when it is accepted.
    static func problems(of url: String) -> [String] {
        do {
            _ = try PostgresPool.Configuration(url: url)
            return []
        } catch {
            return error.problems
        }
    }

    @Test("bad input is refused at construction, every problem at once, and never reaches the server", arguments: [
        ("postgres://u@h:0/d", "port '0'"), ("postgres://u@h:70000/d", "port '70000'"), ("postgres://u@h:-1/d", "port"),
        ("postgres://u@h:12345678901234567890123/d", "port '12345678901234567890123'"),
        ("postgres://u@h/d?connect_timeout=10000000000", "connect_timeout"),
        ("postgres://u@h/d?application_name=a%00statement_timeout%001", "control character"),
        ("postgres://u%00x@h/d", "control character"), ("postgres://u@h/d%00x", "control character"),
        ("postgres://u@h/d?sslmode=verify-full&sslmode=disable", "more than once"),
        ("postgres://u@h/d%zz", "percent escape"), ("postgres://u@/d?host=", "'host' is empty"),
        ("postgres://u:p%00w@h/d", "NUL"), ("postgres://u@h/d?sslmode=require&sslrootcert=/nonexistent/ca.pem", "sslrootcert"),
        ("postgres://u@h/d?application_name=%ff%fe", "not UTF-8"), ("postgres://\(String(repeating: "u", count: 64))@h/d", "at most 63"),
    ])
    func refusedInput(url: String, problem: String) {
        let problems = Self.problems(of: url)
        #expect(problems.contains { $0.contains(problem) }, "\(problems)")
    }

    @Test("URL problems and setting problems come in one error; 100,000 unknown options make a short message")
    func problemsAtOnce() {
        let problems = Self.problems(of: "postgres://h:70000/d?sslmode=bogus&application_name=\(String(repeating: "x", count: 70))")
        #expect(problems.count == 4, "\(problems)")   // no user, port, sslmode, applicationName
        let options = (0..<100_000).map { "option\($0)=1" }.joined(separator: "&")
        let message = String(describing: Self.problems(of: "postgres://u@h/d?\(options)"))
        #expect(message.utf8.count < 1_000)
    }

    @Test("dump(configuration) and its description never show the password")
    func passwordNeverShown() throws {
        let configuration = try PostgresPool.Configuration(url: "postgres://app:s3cr3t-pw@h/d")
        var dumped = ""
        dump(configuration, to: &dumped)
        #expect(!dumped.contains("s3cr3t-pw"))
        #expect(dumped.contains("***"))
        #expect(!String(describing: configuration).contains("s3cr3t-pw"))
        #expect(!String(reflecting: configuration).contains("s3cr3t-pw"))
    }

    @Test("statements are told apart by their first keywords and the functions that change a session", arguments: [
        ("BEGIN", StatementKind.transactionControl), ("  start transaction", .transactionControl), ("commit", .commit),
        ("ROLLBACK TO SAVEPOINT a", .transactionControl), ("PREPARE TRANSACTION 'x'", .transactionControl), ("end;", .commit),
        ("SET search_path = x", .changesSession), ("set local statement_timeout = 1", .other), ("SET TRANSACTION READ ONLY", .other),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", .changesSession), ("RESET ALL", .changesSession),
        ("CREATE TEMP TABLE t (x int)", .changesSession), ("create local temporary table t (x int)", .changesSession),
        ("CREATE TABLE t (x int)", .other), ("LISTEN c", .changesSession), ("PREPARE p AS SELECT 1", .changesSession),
        ("SELECT pg_advisory_lock(1)", .changesSession), ("select PG_TRY_ADVISORY_LOCK(1)", .changesSession),
        ("SELECT pg_advisory_xact_lock(1)", .read), ("SELECT set_config('a', 'b', false)", .mayChangeSession),
        ("SELECT 1", .read), ("(SELECT 1)", .read), ("VALUES (1)", .read), ("INSERT INTO t VALUES (1) RETURNING x", .other),
        ("WITH d AS (DELETE FROM t RETURNING x) SELECT * FROM d", .other), ("", .other), ("BEGINNING", .other),
        ("/* c */ SET statement_timeout = 1", .changesSession), ("-- c\nSET search_path = x", .changesSession),
        ("DO $$BEGIN EXECUTE 'SET work_mem = 7'; END$$", .mayChangeSession), ("UPDATE pg_settings SET setting = 1", .mayChangeSession),
        ("CREATE TABLE pg_temp.t (x int)", .mayChangeSession), ("SELECT 1 AS x INTO TEMP t", .changesSession),
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", .changesSession), ("SELECT U&\"set\\005fconfig\"('a', 'b', false)", .mayChangeSession),
        ("/* unterminated", .other), ("--", .other),
    ])
    func statementKinds(sql: String, kind: StatementKind) {
        #expect(StatementKind(of: sql) == kind)
    }

    @Test("settings from code are checked like a URL's: empty names, names PostgreSQL would cut, a socket path too long")
    func settingsFromCode() {
        var configuration = PostgresPool.Configuration(host: "", username: "", password: nil, database: "")
        configuration.unixSocketDirectory = "/" + String(repeating: "d", count: 120)
        do {
            try configuration.validate()
            Issue.record("accepted")
        } catch {
            let text = String(describing: error)
            for problem in ["username is empty", "host is empty", "database is empty", "unixSocketDirectory is too long"] {
                #expect(text.contains(problem), "\(problem)")
            }
        }
    }
}
