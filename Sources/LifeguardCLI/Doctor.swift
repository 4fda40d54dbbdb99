import ArgumentParser
import Foundation
import Lifeguard
import LifeguardDoctor
import LifeguardPostgres
import Logging

/// `lifeguard doctor`: watches a server and names the AI pool failures it sees, for any stack.
struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch a PostgreSQL server and say which pool failure is happening, from which application, and what to change.",
        discussion: """
            Samples pg_stat_activity every --interval over --duration, and pg_stat_database at both ends, \
            on one connection (application_name lifeguard-doctor); no Lifeguard is needed in the applications. \
            It names generation holds (transactions idle across a model call), retrieval bursts, agent write \
            storms, cancellation leaks, connections near max_connections, a missing \
            idle_in_transaction_session_timeout and oversized pools. A role with pg_read_all_stats sees every \
            session. Exit status: 0 healthy, 1 a finding of severity warning or above, 2 could not run (bad options, \
            the server unreachable, or a role that cannot see other sessions and found nothing).
            """
    )

    /// Exit status when a finding of severity warning or above was made.
    static let found: Int32 = 1
    /// Exit status when the server could not be watched.
    static let couldNotRun: Int32 = 2

    @Option(help: "postgres://user:password@host:port/database (default: LIFEGUARD_URL or DATABASE_URL).")
    var databaseURL: String?

    @Option(help: "Seconds to watch, 1 to 86400.")
    var duration: Double = 30

    @Option(help: "Seconds between two samples, 0.5 to 2.")
    var interval: Double = 1

    @Flag(help: "Print one JSON object (the schema is in README).")
    var json = false

    @Flag(help: "Refresh the report in place after every sample, like pg_activity.")
    var watch = false

    /// Every problem of the options; the command exits with ``couldNotRun`` on any.
    var problems: [String] {
        var problems: [String] = []
        if !(1...86_400).contains(self.duration) {
            problems.append("--duration must be between 1 and 86400 seconds, got \(self.duration)")
        }
        if !(0.5...2).contains(self.interval) {
            problems.append("--interval must be between 0.5 and 2 seconds, got \(self.interval)")
        } else if (1...86_400).contains(self.duration) && self.duration < self.interval {
            problems.append("--duration \(self.duration) s is shorter than --interval \(self.interval) s: it leaves one sample; watch for longer")
        }
        if self.json && self.watch { problems.append("--json and --watch exclude each other") }
        if self.databaseURL == nil && !PostgresPool.Configuration.environmentNamesURL() {
            problems.append("give --database-url postgres://user:password@host:port/database, or set LIFEGUARD_URL or DATABASE_URL")
        }
        return problems
    }

    func validate() throws {
        guard self.problems.isEmpty else {
            var standardError = FileHandle.standardError
            for problem in self.problems { print("lifeguard doctor: \(problem)", to: &standardError) }
            throw ExitCode(Self.couldNotRun)
        }
    }

    func run() async throws {
        let configuration: PostgresPool.Configuration
        do {
            configuration = try self.databaseURL.map { try PostgresPool.Configuration(url: $0) } ?? PostgresPool.Configuration()
        } catch {
            var standardError = FileHandle.standardError
            print("lifeguard doctor: \(error)", to: &standardError)
            throw ExitCode(Self.couldNotRun)
        }
        var logger = Logger(label: "lifeguard-doctor")
        logger.logLevel = .critical
        let sampler = ServerSampler(
            configuration: configuration, duration: .milliseconds(Int64(self.duration * 1_000)),
            interval: .milliseconds(Int64(self.interval * 1_000)))
        let target = configuration.description
        // In place on a terminal; elsewhere (a file, a pipe) only the last report.
        let watch = self.watch && isatty(STDOUT_FILENO) == 1
        let observation: Observation
        do {
            observation = try await sampler.observe(logger: logger) { seen in
                guard watch else { return }
                // Home, clear, the report so far.
                // A closed terminal or pipe ends nothing but the drawing.
                try? FileHandle.standardOutput.write(contentsOf: Data(("\u{1B}[H\u{1B}[2J" + DoctorReport(seen, target: target).text + "\n").utf8))
            }
        } catch {
            var standardError = FileHandle.standardError
            // The connection's own error, not the pool's wording around it.
            let cause = (error as? LifeguardError)?.underlying ?? error
            print("lifeguard doctor: cannot watch \(target): \(PostgresPoolError.describe(cause))", to: &standardError)
            throw ExitCode(Self.couldNotRun)
        }
        let report = DoctorReport(observation, target: target)
        if self.json {
            print(report.json)
        } else if !watch {
            print(report.text)
        }
        if report.findings.contains(where: { $0.severity >= .warning }) { throw ExitCode(Self.found) }
        if !report.healthy { throw ExitCode(Self.couldNotRun) }
    }
}
