import Foundation

/// `lifeguard doctor`'s report: the diagnosis as text people read, or as JSON.
///
/// The JSON object (`--json`) has these keys: `target` (the server, no password), `duration_s`,
/// `samples`, `settings` (``ServerSettings``' fields), `healthy` (no finding of severity warning
/// or above, and nothing hidden from the doctor's role), `findings` (each with `kind`, `severity` = info, warning, critical,
/// `application` (absent for the server), `summary`, `evidence`, `query` and `query_id`
/// (absent when none), `fix`),
/// `applications` (each with `source`, `users`, `clients`, `peak_backends`, `mean_backends`, `peak_active`,
/// `mean_active`, `active_p99`, `peak_idle_in_transaction`, `advised_budget`,
/// `held_across_other_work`) and
/// `blind_spots` (what the doctor's role could not see).
public struct DoctorReport: Sendable, Codable {
    /// The server watched, without its password.
    public var target: String
    /// Seconds watched.
    public var duration: Double
    /// Samples taken.
    public var samples: Int
    /// The server's settings.
    public var settings: ServerSettings
    /// Whether nothing of severity warning or above was found.
    public var healthy: Bool
    /// The findings, most severe first.
    public var findings: [Finding]
    /// Each application's figures.
    public var applications: [ApplicationProfile]
    /// What could not be seen.
    public var blindSpots: [String]

    enum CodingKeys: String, CodingKey {
        case target, samples, settings, healthy, findings, applications
        case duration = "duration_s"
        case blindSpots = "blind_spots"
    }

    /// The report of `observation` of `target`.
    ///
    /// - Parameters:
    ///   - observation: What was sampled.
    ///   - target: The server, without its password.
    public init(_ observation: Observation, target: String) {
        let diagnosis = Diagnosis(observation)
        self.target = target
        self.duration = diagnosis.duration
        self.samples = diagnosis.sampleCount
        self.settings = observation.settings
        self.healthy = diagnosis.isHealthy
        self.findings = diagnosis.findings
        self.applications = diagnosis.applications
        self.blindSpots = diagnosis.blindSpots
    }

    /// The JSON object, keys sorted.
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// The report as text.
    public var text: String {
        var lines: [String] = []
        let settings = self.settings
        let version = settings.versionNumber >= 100000
            ? "PostgreSQL \(settings.versionNumber / 10000).\(settings.versionNumber % 10000)" : "PostgreSQL \(settings.versionNumber)"
        lines.append("lifeguard doctor: \(self.target), \(Diagnosis.seconds(self.duration)) watched, \(self.samples) samples; "
            + "\(version), max_connections \(settings.maxConnections) (\(settings.reservedConnections) reserved)")
        lines.append("")
        let serious = self.findings.filter { $0.severity >= .warning }
        if serious.isEmpty && !self.blindSpots.isEmpty {
            lines.append("Nothing found in what could be seen; not all could be (below): not a verdict of healthy.")
        } else if serious.isEmpty {
            lines.append("No pool problem seen: no generation hold, retrieval burst, write storm or cancellation leak.")
        } else {
            let critical = serious.filter { $0.severity == .critical }.count
            lines.append("\(serious.count) finding\(serious.count == 1 ? "" : "s") (\(critical) critical, \(serious.count - critical) warning)")
        }
        for finding in self.findings {
            lines.append("")
            lines.append("\(finding.severity.rawValue.uppercased()) \(finding.kind.rawValue)\(finding.application.map { " — \($0)" } ?? " — server")")
            lines.append("  \(finding.summary)")
            for line in finding.evidence { lines.append("  - \(line)") }
            if let query = finding.query, !query.isEmpty {
                lines.append("  query: \(query)\(finding.queryID.map { " (query_id \($0))" } ?? "")")
            }
            lines.append("  what to change:")
            for line in finding.fix { lines.append("  * \(line)") }
        }
        if !self.applications.isEmpty {
            lines.append("")
            lines.append("Applications (pg_stat_activity; mean active is Little's L = arrivals × time in the server):")
            let width = max(11, self.applications.map(\.source.count).max() ?? 0)
            lines.append("  " + "application".padding(toLength: width, withPad: " ", startingAt: 0)
                + "  connections peak/mean  active peak/mean/p99  idle in xact peak  advised budget (+ held)")
            for application in self.applications {
                let connections = "\(application.peakBackends) / \(Diagnosis.count(application.meanBackends))"
                let active = "\(application.peakActive) / \(Diagnosis.count(application.meanActive)) / \(application.activeP99)"
                lines.append("  " + application.source.padding(toLength: width, withPad: " ", startingAt: 0)
                    + "  " + connections.padding(toLength: 21, withPad: " ", startingAt: 0)
                    + "  " + active.padding(toLength: 20, withPad: " ", startingAt: 0)
                    + "  " + "\(application.peakIdleInTransaction)".padding(toLength: 17, withPad: " ", startingAt: 0)
                    + "  \(application.advisedBudget)\(application.heldAcrossOtherWork > 0 ? " (+ \(application.heldAcrossOtherWork))" : "")")
            }
            lines.append("  advised budget: `lifeguard size`'s rule on the mean active L (L + 3√L), at least the active p99; "
                + "(+ held): what transactions held idle across other work add, which three short windows save.")
            for application in self.applications {
                lines.append("  \(application.source): as \(application.users.joined(separator: ", ")) from \(application.clients.joined(separator: ", "))")
            }
        }
        if !self.blindSpots.isEmpty {
            lines.append("")
            lines.append("Could not see:")
            for spot in self.blindSpots { lines.append("  - \(spot)") }
        }
        // What the server holds (query texts, role names) may carry control characters, an
        // escape sequence among them: none reaches the terminal.
        return lines.map(Self.printable).joined(separator: "\n")
    }

    /// `text` with every control or format character shown as `?`.
    static func printable(_ text: String) -> String {
        // Control characters (C0, DEL, C1) and format characters (bidi overrides, zero-width).
        let hidden: (Unicode.Scalar) -> Bool = { [.control, .format].contains($0.properties.generalCategory) }
        guard text.unicodeScalars.contains(where: hidden) else { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.map { hidden($0) ? "?" : $0 }))
    }
}
