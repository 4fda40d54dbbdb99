import ArgumentParser

/// The `lifeguard` command-line tool.
@main
struct LifeguardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lifeguard",
        abstract: "A PostgreSQL connection pool for Swift servers that run AI pipelines: tools to check, size and test it.",
        version: LifeguardVersion.current,
        subcommands: [Version.self, Check.self, Inspect.self, Simulate.self, Size.self, Bench.self, Doctor.self]
    )
}

/// The version of this package.
enum LifeguardVersion {
    static let current = "0.1.0"
}

/// `lifeguard version`
struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print Lifeguard's version.")

    func run() {
        print("lifeguard \(LifeguardVersion.current)")
    }
}
