import ArgumentParser
import Foundation
@testable import LifeguardCLI
import LifeguardPostgres
import Logging
import Testing

@Suite("lifeguard CLI", .timeLimit(.minutes(3)))
struct CheckTests {
    func report(budget: Int, instances: Int) -> CheckReport {
        CheckReport(
            target: "postgres://app:***@db:5432/app?sslmode=prefer",
            serverVersion: "PostgreSQL 15.18",
            maxConnections: 100,
            reservedForSuperusers: 3,
            backendsByApplication: [("api", 30), ("lifeguard-check", 1), ("", 2)],
            budget: budget,
            instances: instances)
    }

    @Test("a budget that fits next to the open backends is accepted")
    func fits() {
        let report = self.report(budget: 20, instances: 3)
        #expect(report.openNow == 32)
        #expect(report.fits)
        #expect(report.text.contains("fits: budget 20 × 3 instances = 60 of the 65 connections left"))
    }

    @Test("a budget that does not fit is refused with what to change")
    func doesNotFit() {
        let report = self.report(budget: 20, instances: 4)
        #expect(!report.fits)
        #expect(report.text.contains("DOES NOT FIT"))
        #expect(report.text.contains("Lower the budget to 16 per instance"))
    }

    @Test("behind PgBouncer the budget is not compared with the server's max_connections, nor is PgBouncer advised")
    func behindPooler() {
        var report = self.report(budget: 20, instances: 100)
        report.isBehindPooler = true
        #expect(report.fits)
        #expect(!report.text.contains("DOES NOT FIT"))
        #expect(!report.text.contains("put PgBouncer in front"))
        #expect(report.text.contains("not judged: budget 20 × 100 instances = 2000 connections to the pooler"))
        #expect(report.text.contains("default_pool_size"))
    }

    @Test("check reads the test server directly and through PgBouncer, and tells which is which",
          .enabled(if: ProcessInfo.processInfo.environment["PGBOUNCER_URL"] != nil, "needs DATABASE_URL and PGBOUNCER_URL: run ./scripts/test.sh"))
    func realServerAndPooler() async throws {
        let environment = ProcessInfo.processInfo.environment
        for (url, behindPooler) in [(try #require(environment["DATABASE_URL"]), false), (try #require(environment["PGBOUNCER_URL"]), true)] {
            var configuration = try PostgresPool.Configuration(url: url)
            configuration.budget = 1
            configuration.lanes = [.retrieval: .init(waitTimeout: .seconds(10))]
            let pool = try PostgresPool(configuration: configuration, logger: Logger(label: "lifeguard-check-test"))
            let report = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await pool.run() }
                defer { pool.shutdown(gracePeriod: .seconds(1)) }
                return try await pool.withConnection(lane: .retrieval) { lease in
                    try await CheckReport.read(from: lease, target: configuration.description, budget: 20, instances: 1_000)
                }
            }
            #expect(report.isBehindPooler == behindPooler, "\(report.text)")
            #expect(report.maxConnections == 200)
            #expect(report.fits == behindPooler, "20 × 1,000 connections fit no server of 200, and are not judged behind PgBouncer")
            print("lifeguard check \(behindPooler ? "through PgBouncer" : "direct"):\n\(report.text)")
        }
    }

    @Test("a budget that leaves not one connection per instance never advises a budget of 0")
    func nothingLeft() {
        let report = self.report(budget: 20, instances: 100)
        #expect(!report.fits)
        #expect(!report.text.contains("budget to 0"))
        #expect(report.text.contains("Not even one connection per instance is left"))
    }

    @Test("check and bench exit with 2, not 1 (does not fit), when nothing can connect, and say why", arguments: ["check", "bench"])
    func cannotConnect(command: String) async throws {
        // Port 1 on the loopback: nothing listens there.
        let url = "postgres://nobody:secret-0451@127.0.0.1:1/none?sslmode=disable"
        let parsed = try LifeguardCommand.parseAsRoot(command == "check"
            ? ["check", "--database-url", url]
            : ["bench", "--database-url", url, "--scenario", "retrieval-burst", "--pool", "lifeguard", "--duration", "1"])
        guard var runnable = parsed as? any AsyncParsableCommand else {
            Issue.record("\(command) is not async")
            return
        }
        do {
            try await runnable.run()
            Issue.record("expected \(command) to fail")
        } catch let exit as ExitCode {
            #expect(exit.rawValue == 2)
        }
    }

    @Test("bad flags name the flag and the accepted range", arguments: [
        (["check", "--budget", "0", "--database-url", "postgres://u@h/d"], "--budget must be between 1 and 10000"),
        (["check", "--instances=-3", "--database-url", "postgres://u@h/d"], "--instances must be between 1 and 10000"),
        (["check", "--budget", "many"], "--budget"),
        (["simulate", "--scenario", "nope"], "--scenario must be one of retrieval-burst, generation-hold, agent-storm, cancel-storm, seed"),
        (["simulate", "--scenario", "seed", "--design", "naive,fast"], "--design must be a comma-separated list of naive, windows, lifeguard"),
        (["simulate", "--scenario", "seed", "--rate", "0"], "--rate must be between 0.01 and 1000"),
        (["simulate", "--scenario", "seed", "--duration", "0"], "--duration must be between 1 and 86400 seconds"),
        (["simulate", "--scenario", "seed", "--budget=-1"], "--budget must be between 1 and 10000"),
        (["size", "--requests-per-second", "0"], "--requests-per-second must be between"),
        (["size", "--requests-per-second", "10", "--fan-out", "0"], "--fan-out must be between 1 and 1000"),
        (["size", "--requests-per-second", "100000", "--fan-out", "1000", "--read-ms", "600000"], "more than any PostgreSQL server serves"),
        (["bench", "--scenario", "seed", "--pool", "hikari", "--database-url", "postgres://u@h/d"], "--pool must be a comma-separated list of lifeguard, postgresclient"),
        (["bench", "--scenario", "seed", "--duration", "0", "--database-url", "postgres://u@h/d"], "--duration must be between 1 and 3600 seconds"),
        (["bench", "--scenario", "seed", "--budget", "1", "--database-url", "postgres://u@h/d"], "--budget must be between 2 and 1000"),
    ])
    func badFlags(arguments: [String], message: String) {
        do {
            _ = try LifeguardCommand.parseAsRoot(arguments)
            Issue.record("expected \(arguments) to be rejected")
        } catch {
            #expect(LifeguardCommand.message(for: error).contains(message))
        }
    }

    @Test("version prints the package version")
    func version() throws {
        let command = try LifeguardCommand.parseAsRoot(["version"])
        #expect(command is Version)
    }

    @Test("inspect explains a file that is missing or not statistics")
    func inspectErrors() throws {
        for arguments in [["inspect", "/nonexistent/statistics.json"], ["inspect", "/etc/hostname"]] {
            let command = try LifeguardCommand.parseAsRoot(arguments)
            do {
                var runnable = command
                try runnable.run()
                Issue.record("expected \(arguments) to fail")
            } catch {
                let message = LifeguardCommand.message(for: error)
                #expect(message.contains("cannot read") || message.contains("not a Lifeguard statistics JSON"))
            }
        }
    }

    @Test("simulate prints the designs side by side; --json one object per design with the documented keys")
    func simulate() throws {
        let command = try LifeguardCommand.parseAsRoot(["simulate", "--scenario", "retrieval-burst", "--duration", "5"]) as! Simulate
        try command.run()
        let json = try LifeguardCommand.parseAsRoot(["simulate", "--scenario", "retrieval-burst", "--duration", "5", "--design", "lifeguard", "--json"])
        #expect((json as? Simulate)?.designs == [.lifeguard])
    }
}
