import Foundation
import Testing

@Suite("lifeguard simulate: the same seed gives the same result")
struct SimulateDeterminismTests {
    /// The `lifeguard` executable that `swift build` put next to the test bundle.
    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lifeguard")
    }

    /// Runs `lifeguard simulate` in a process of its own, so with a hash seed of its own, and
    /// returns what it printed.
    static func simulate(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["simulate"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test("a closed loop of cancelled fan-outs, run in three processes: one result (a request's leases end in a fixed order)")
    func sameResultInEveryProcess() throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.executable.path),
            "build the package first (swift build): \(Self.executable.path) is missing")
        let arguments = ["--scenario", "cancel-storm", "--users", "120", "--duration", "3", "--design", "lifeguard", "--json"]
        let first = try Self.simulate(arguments)
        #expect(first.contains("\"completed\""))
        for _ in 0..<3 {
            #expect(try Self.simulate(arguments) == first)
        }
    }
}
