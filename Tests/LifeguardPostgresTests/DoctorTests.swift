import Foundation
@testable import LifeguardDoctor
@testable import LifeguardPostgres
import Logging
import NIOPosix
import PostgresNIO
import Synchronization
import Testing

@Suite("lifeguard doctor's rules, on samples made by hand")
struct DoctorRuleTests {
    static let settings = ServerSettings(
        versionNumber: 150000, maxConnections: 100, reservedConnections: 3, idleInTransactionSessionTimeout: 0,
        statementTimeout: 0, clientConnectionCheckInterval: 0)

    static func observe(_ samples: [[ServerSession]], before: DatabaseCounters? = nil, after: DatabaseCounters? = nil) -> Diagnosis {
        Diagnosis(Observation(
            settings: settings, samples: samples.enumerated().map { ActivitySample(at: Double($0.offset) * 0.5, sessions: $0.element) },
            countersBefore: before, countersAfter: after, blindSpots: []))
    }

    @Test("short queries of a busy pool: no finding of severity warning or above")
    func healthy() {
        let samples = (0..<10).map { index in
            (0..<10).map { pid in
                ServerSession(pid: pid, application: "oltp", state: pid < index % 4 ? "active" : "idle", stateAge: 0.01, queryAge: 0.01)
            }
        }
        let diagnosis = Self.observe(samples)
        #expect(diagnosis.isHealthy, "\(diagnosis.findings)")
        #expect(Set(diagnosis.findings.map(\.kind)) == [.noIdleInTransactionTimeout, .noClientConnectionCheck])
    }

    @Test("a transaction idle in ClientRead for seconds, seen twice: a generation hold of that application and query")
    func generationHold() {
        let held = { (idle: Double) in
            ServerSession(
                pid: 7, application: "rag", state: "idle in transaction", waitEventType: "Client", waitEvent: "ClientRead",
                transactionAge: idle + 0.1, stateAge: idle, query: "UPDATE answers SET", queryID: 42)
        }
        let diagnosis = Self.observe([[held(0.4)], [held(0.9)], [held(1.4)], [held(1.9)]])
        let finding = diagnosis.findings.first { $0.kind == .generationHold }
        #expect(finding?.application == "rag")
        #expect(finding?.query == "UPDATE answers SET")
        #expect(finding?.queryID == 42)
        // A transaction idle for a moment between statements is not one.
        #expect(!Self.observe([[held(0.2)], [held(0.7)]]).findings.contains { $0.kind == .generationHold })
    }

    @Test("active sessions jumping by ten or more between samples: a retrieval burst; one pool start-up is not")
    func retrievalBurst() {
        let idle = (0..<12).map { ServerSession(pid: $0, application: "rag", state: "idle") }
        let burst = (0..<12).map { ServerSession(pid: $0, application: "rag", state: "active", query: "SELECT chunk FROM docs") }
        #expect(Self.observe([idle, burst, idle]).findings.contains { $0.kind == .retrievalBurst && $0.application == "rag" })
        let started = (0..<12).map { ServerSession(pid: $0, application: "rag", state: "idle", backendAge: 0.2) }
        #expect(!Self.observe([[], started, idle]).findings.contains { $0.kind == .retrievalBurst })
    }

    @Test("sessions waiting on each other's locks: an agent write storm; deadlocks alone too")
    func writeStorm() {
        let waiting = (1..<6).map {
            ServerSession(pid: $0, application: "agents", state: "active", waitEventType: "Lock", waitEvent: "transactionid", blockedBy: [0])
        }
        #expect(Self.observe([waiting]).findings.contains { $0.kind == .agentWriteStorm && $0.application == "agents" })
        let before = DatabaseCounters(commits: 10, rollbacks: 0, deadlocks: 0)
        let after = DatabaseCounters(commits: 20, rollbacks: 2, deadlocks: 2)
        #expect(Self.observe([[]], before: before, after: after).findings.contains { $0.kind == .agentWriteStorm && $0.severity == .critical })
    }

    @Test("idle in an aborted transaction, or sessions abandoned: a cancellation leak")
    func cancellationLeak() {
        let aborted = ServerSession(pid: 3, application: "chat", state: "idle in transaction (aborted)", stateAge: 2)
        #expect(Self.observe([[aborted]]).findings.contains { $0.kind == .cancellationLeak && $0.application == "chat" })
        // A statement past an interactive caller's patience: a long statement, told apart (a
        // report may run that long), at info.
        let overdue = ServerSession(pid: 4, application: "chat", state: "active", queryAge: 45, query: "SELECT embedding <=> $1")
        let finding = Self.observe([[overdue]]).findings.first { $0.kind == .longStatement }
        #expect(finding?.query == "SELECT embedding <=> $1")
        #expect(finding?.severity == .info)
        #expect(!Self.observe([[ServerSession(pid: 4, application: "chat", state: "active", queryAge: 5)]]).findings.contains { $0.kind == .longStatement })
        // A pool warming up (20 connections opened over the run, each in use) is no leak.
        let warming = (0..<12).map { index in
            (0..<(index * 2)).map { ServerSession(pid: $0, application: "api", state: "idle", stateAge: 0.01, backendAge: Double(12 - index)) }
        }
        #expect(!Self.observe(warming).findings.contains { $0.kind == .cancellationLeak })
        let before = DatabaseCounters(commits: 1, rollbacks: 0, deadlocks: 0, sessionsAbandoned: 0)
        let after = DatabaseCounters(commits: 1, rollbacks: 0, deadlocks: 0, sessionsAbandoned: 4)
        #expect(Self.observe([[]], before: before, after: after).findings.contains { $0.kind == .cancellationLeak && $0.application == nil })
    }

    @Test("a statement or a role name carrying an escape sequence reaches the report as text, not as a terminal command")
    func escapeSequencesAreShownNotSent() {
        let hostile = { (age: Double) in
            ServerSession(
                pid: 1, application: "rag", user: "evil\u{1B}[2J\u{202E}", state: "idle in transaction", waitEvent: "ClientRead",
                transactionAge: age, stateAge: age, query: "SELECT '\u{1B}]0;owned\u{07}'")
        }
        let report = DoctorReport(
            Observation(settings: Self.settings, samples: [.init(at: 0, sessions: [hostile(3)]), .init(at: 1, sessions: [hostile(4)])],
                        countersBefore: nil, countersAfter: nil, blindSpots: []), target: "test")
        #expect(report.findings.contains { $0.kind == .generationHold })
        #expect(!report.text.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 || $0.value == 0x202E })
        #expect(report.text.contains("SELECT '?]0;owned?'"))
    }

    @Test("sessions started five a second or more (pg_stat_database.sessions): connection churn, named after the application with the young connections")
    func churn() {
        let young = [ServerSession(pid: 1, application: "lambda", state: "active", backendAge: 0.1)]
        let before = DatabaseCounters(commits: 0, rollbacks: 0, deadlocks: 0, sessions: 100)
        let after = DatabaseCounters(commits: 0, rollbacks: 0, deadlocks: 0, sessions: 160)
        let samples = (0..<11).map { _ in young }  // 5 s at 0.5 s
        let finding = Self.observe(samples, before: before, after: after).findings.first { $0.kind == .connectionChurn }
        #expect(finding?.application == "lambda")
        #expect(finding?.severity == .critical)  // 12 a second
        let calm = DatabaseCounters(commits: 0, rollbacks: 0, deadlocks: 0, sessions: 110)
        #expect(!Self.observe(samples, before: before, after: calm).findings.contains { $0.kind == .connectionChurn })
    }

    @Test("connections near max_connections: warning at 80%, critical at 90% of what applications may open")
    func nearLimit() {
        func sessions(_ count: Int) -> [ServerSession] { (0..<count).map { ServerSession(pid: $0, application: "api", state: "idle") } }
        #expect(Self.observe([sessions(80)]).findings.first { $0.kind == .nearConnectionLimit }?.severity == .warning)
        #expect(Self.observe([sessions(90)]).findings.first { $0.kind == .nearConnectionLimit }?.severity == .critical)
        #expect(!Self.observe([sessions(70)]).findings.contains { $0.kind == .nearConnectionLimit })
        // Sessions of other roles, hidden from the doctor's (no state): counted all the same,
        // but how they use their connections is not judged.
        let hidden = (0..<90).map { ServerSession(pid: $0, application: "api", state: "") }
        #expect(Self.observe([hidden]).findings.first { $0.kind == .nearConnectionLimit }?.severity == .critical)
        #expect(!Self.observe([hidden]).findings.contains { $0.kind == .oversizedPool })
        // 70 connections, at most 2 active: an oversized pool.
        #expect(Self.observe([sessions(70)]).findings.contains { $0.kind == .oversizedPool && $0.application == "api" })
    }
}

extension PostgresPoolTests {
    /// A connection of its own to `url`, as `application`.
    static func connection(to url: String, application: String) async throws -> PostgresConnection {
        var configuration = try PostgresPool.Configuration(url: url)
        configuration.applicationName = application
        let factory = PostgresConnectionFactory(configuration: configuration, logger: TestDatabase.logger, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        return try await factory.openPostgresConnection()
    }

    /// Watches the server at `url` for `seconds` (every 0.5 s) while `load` runs, and returns
    /// the report.
    static func doctor(_ url: String, seconds: Int, while load: @escaping @Sendable () async throws -> Void) async throws -> DoctorReport {
        let configuration = try PostgresPool.Configuration(url: url)
        let sampler = ServerSampler(configuration: configuration, duration: .seconds(seconds), interval: .milliseconds(500))
        return try await withThrowingTaskGroup(of: Observation?.self) { group in
            group.addTask {
                try await load()
                return nil
            }
            // The load starts first.
            try await Task.sleep(for: .milliseconds(200))
            let observation = try await sampler.observe(logger: TestDatabase.logger)
            try await group.waitForAll()
            return DoctorReport(observation, target: configuration.description)
        }
    }

    static func sleep(_ connection: PostgresConnection, _ statement: PostgresQuery) async throws {
        _ = try await connection.query(statement, logger: TestDatabase.logger).get()
    }

    @Test("doctor names a generation hold: three sessions holding a transaction across a 5 s sleep of their client (Python processes with psycopg when scripts/test.sh installed it)", .onServersOfItsOwn)
    func doctorFindsGenerationHold() async throws {
        try await TestDatabase.withServerOfItsOwn(named: "doctor") { url, _ in
            let python = ProcessInfo.processInfo.environment["LIFEGUARD_PYTHON"]
            let report = try await Self.doctor(url, seconds: 4) {
                if let python {
                    // Another process, another stack: the model call is Python's sleep.
                    let script = """
                        import sys, time, psycopg
                        with psycopg.connect(sys.argv[1], application_name="rag-naive") as connection:
                            connection.execute("SELECT count(*) FROM pg_class")
                            time.sleep(5)
                            connection.commit()
                        """
                    let processes = try (0..<3).map { _ in try Self.python(python, script, url) }
                    // Not waitUntilExit: it would block one of the few threads the sampler runs on.
                    while processes.contains(where: \.isRunning) { try await Task.sleep(for: .milliseconds(100)) }
                    return
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<3 {
                        group.addTask {
                            let connection = try await Self.connection(to: url, application: "rag-naive")
                            try await Self.sleep(connection, "BEGIN")
                            try await Self.sleep(connection, "SELECT count(*) FROM pg_class")
                            try await Task.sleep(for: .seconds(5))  // the model call
                            try await Self.sleep(connection, "COMMIT")
                            try await connection.closeGracefully()
                        }
                    }
                    try await group.waitForAll()
                }
            }
            print(report.text)
            let hold = report.findings.first { $0.kind == .generationHold }
            #expect(hold?.application == "rag-naive")
            #expect(hold?.query?.hasPrefix("SELECT count(*) FROM pg_class") == true)
            #expect(hold?.severity == .critical)
            #expect(report.findings.contains { $0.kind == .noIdleInTransactionTimeout && $0.severity == .warning })
            #expect(!report.healthy)
        }
    }

    @Test("doctor names a retrieval burst: 40 parallel reads on fresh connections, twice", .onServersOfItsOwn)
    func doctorFindsRetrievalBurst() async throws {
        try await TestDatabase.withServerOfItsOwn(named: "doctor") { url, _ in
            let report = try await Self.doctor(url, seconds: 5) {
                for _ in 0..<2 {
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for _ in 0..<40 {
                            group.addTask {
                                let connection = try await Self.connection(to: url, application: "retriever")
                                try await Self.sleep(connection, "SELECT pg_sleep(1.2)")
                                try await connection.closeGracefully()
                            }
                        }
                        try await group.waitForAll()
                    }
                    try await Task.sleep(for: .milliseconds(600))
                }
            }
            print(report.text)
            let burst = report.findings.first { $0.kind == .retrievalBurst }
            #expect(burst?.application == "retriever")
            #expect(burst?.query?.hasPrefix("SELECT pg_sleep") == true)
            #expect(report.applications.first { $0.source == "retriever" }.map { $0.peakActive >= 30 } == true)
        }
    }

    @Test("doctor names an agent write storm: 50 agents updating one hot row in bursts", .onServersOfItsOwn)
    func doctorFindsWriteStorm() async throws {
        try await TestDatabase.withServerOfItsOwn(named: "doctor") { url, _ in
            let setup = try await Self.connection(to: url, application: "setup")
            try await Self.sleep(setup, "CREATE TABLE agent_state (id int PRIMARY KEY, steps int)")
            try await Self.sleep(setup, "INSERT INTO agent_state VALUES (1, 0)")
            try await setup.close()
            let report = try await Self.doctor(url, seconds: 4) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<50 {
                        group.addTask {
                            let connection = try await Self.connection(to: url, application: "agents")
                            let end = ContinuousClock.now.advanced(by: .seconds(4.5))
                            while ContinuousClock.now < end {
                                // A burst: every agent writes its steps, then thinks.
                                for _ in 0..<5 {
                                    try await Self.sleep(connection, "BEGIN")
                                    try await Self.sleep(connection, "UPDATE agent_state SET steps = steps + 1 WHERE id = 1")
                                    try await Self.sleep(connection, "SELECT pg_sleep(0.01)")
                                    try await Self.sleep(connection, "COMMIT")
                                }
                                try await Task.sleep(for: .milliseconds(300))
                            }
                            try await connection.closeGracefully()
                        }
                    }
                    try await group.waitForAll()
                }
            }
            print(report.text)
            let storm = report.findings.first { $0.kind == .agentWriteStorm }
            #expect(storm?.application == "agents")
            #expect(storm?.query?.hasPrefix("UPDATE agent_state") == true)
        }
    }

    @Test("doctor names a cancellation leak: sessions left idle in aborted transactions, and clients killed mid-query (Python, psycopg)", .onServersOfItsOwn)
    func doctorFindsCancellationLeak() async throws {
        try await TestDatabase.withServerOfItsOwn(named: "doctor") { url, _ in
            let python = ProcessInfo.processInfo.environment["LIFEGUARD_PYTHON"]
            let report = try await Self.doctor(url, seconds: 5) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<3 {
                        group.addTask {
                            // A statement cancelled inside a transaction, and nobody rolls back.
                            let connection = try await Self.connection(to: url, application: "chat-api")
                            try await Self.sleep(connection, "BEGIN")
                            _ = try? await connection.query("SELECT 1 / 0", logger: TestDatabase.logger).get()
                            try await Task.sleep(for: .seconds(4))
                            try await connection.closeGracefully()
                        }
                    }
                    if let python {
                        group.addTask { try await Self.killedMidQuery(python: python, url: url, clients: 3) }
                    }
                    try await group.waitForAll()
                }
            }
            print(report.text)
            #expect(report.findings.contains { $0.kind == .cancellationLeak && $0.application == "chat-api" })
            if python != nil {
                #expect(report.findings.contains { $0.kind == .cancellationLeak && $0.application == "py-worker" && $0.summary.contains("went away") })
            } else {
                print("LIFEGUARD_PYTHON is not set (scripts/test.sh sets it): the clients killed mid-query were not tried")
            }
        }
    }

    /// Starts `clients` Python processes that run a 2 s statement through psycopg, and kills
    /// them (SIGKILL) half a second in: the server runs the statements for nobody.
    static func killedMidQuery(python: String, url: String, clients: Int) async throws {
        let script = """
            import sys, psycopg
            connection = psycopg.connect(sys.argv[1], application_name="py-worker")
            connection.execute("SELECT pg_sleep(2)")
            """
        let processes = try (0..<clients).map { _ in try Self.python(python, script, url) }
        try await Task.sleep(for: .seconds(1))
        for process in processes { kill(process.processIdentifier, SIGKILL) }
        while processes.contains(where: \.isRunning) { try await Task.sleep(for: .milliseconds(20)) }
    }

    /// Starts `python -c script url`.
    static func python(_ python: String, _ script: String, _ url: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script, url]
        try process.run()
        return process
    }

    @Test("doctor reports nothing on a healthy load: 8 connections of short queries and short transactions", .onServersOfItsOwn)
    func doctorStaysQuietOnHealthyLoad() async throws {
        try await TestDatabase.withServerOfItsOwn(named: "doctor") { url, _ in
            let setup = try await Self.connection(to: url, application: "setup")
            try await Self.sleep(setup, "CREATE TABLE events (id serial PRIMARY KEY, body text)")
            try await setup.close()
            let connections = try await withThrowingTaskGroup(of: PostgresConnection.self) { group in
                for _ in 0..<8 { group.addTask { try await Self.connection(to: url, application: "oltp") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let report = try await Self.doctor(url, seconds: 4) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for connection in connections {
                        group.addTask {
                            let end = ContinuousClock.now.advanced(by: .seconds(4.3))
                            while ContinuousClock.now < end {
                                try await Self.sleep(connection, "SELECT id FROM events ORDER BY id DESC LIMIT 5")
                                try await Self.sleep(connection, "BEGIN")
                                try await Self.sleep(connection, "INSERT INTO events (body) VALUES ('step')")
                                try await Self.sleep(connection, "COMMIT")
                                try await Task.sleep(for: .milliseconds(5))
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            for connection in connections { try await connection.closeGracefully() }
            print(report.text)
            #expect(report.healthy, "\(report.findings.map { "\($0.kind): \($0.evidence)" })")
            #expect(report.findings.allSatisfy { $0.severity == .info })
            let oltp = report.applications.first { $0.source == "oltp" }
            #expect(oltp?.peakBackends == 8)
            // The JSON: every key the README documents.
            let json = try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any]
            #expect(Set(json?.keys.map { $0 } ?? []) == ["target", "duration_s", "samples", "settings", "healthy", "findings", "applications", "blind_spots"])
        }
    }

    @Test("doctor with the least privilege: a role without pg_read_all_stats is told what it cannot see; with it, it sees another role's hold", .onServersOfItsOwn)
    func doctorWithLeastPrivilege() async throws {
        try await TestDatabase.withServerOfItsOwn(named: "doctor") { url, _ in
            let setup = try await Self.connection(to: url, application: "setup")
            try await Self.sleep(setup, "CREATE ROLE watcher LOGIN PASSWORD 'watcher-password'")
            try await setup.closeGracefully()
            var watcher = try PostgresPool.Configuration(url: url)
            watcher.username = "watcher"
            watcher.password = "watcher-password"
            let hold: @Sendable () async throws -> Void = {
                let connection = try await Self.connection(to: url, application: "rag-naive")
                try await Self.sleep(connection, "BEGIN")
                try await Self.sleep(connection, "SELECT 1")
                try await Task.sleep(for: .seconds(3))
                try await Self.sleep(connection, "COMMIT")
                try await connection.closeGracefully()
            }
            func watch() async throws -> DoctorReport {
                let sampler = ServerSampler(configuration: watcher, duration: .milliseconds(2_500), interval: .milliseconds(500))
                return try await withThrowingTaskGroup(of: Observation?.self) { group in
                    group.addTask {
                        try await hold()
                        return nil
                    }
                    try await Task.sleep(for: .milliseconds(200))
                    let observation = try await sampler.observe(logger: TestDatabase.logger)
                    try await group.waitForAll()
                    return DoctorReport(observation, target: watcher.description)
                }
            }
            let blind = try await watch()
            print(blind.text)
            #expect(blind.blindSpots.contains { $0.contains("pg_read_all_stats") })
            #expect(!blind.healthy, "a report made blind says healthy")
            #expect(blind.applications.contains { $0.source == "rag-naive" }, "the other role's session is not even counted")
            #expect(!blind.findings.contains { $0.kind == .generationHold })
            let grant = try await Self.connection(to: url, application: "setup")
            try await Self.sleep(grant, "GRANT pg_read_all_stats TO watcher")
            try await grant.closeGracefully()
            let seeing = try await watch()
            #expect(seeing.blindSpots.isEmpty)
            #expect(seeing.findings.contains { $0.kind == .generationHold && $0.application == "rag-naive" })
        }
    }
}
