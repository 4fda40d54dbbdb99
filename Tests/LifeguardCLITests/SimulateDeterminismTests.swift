import Foundation
import Testing

@Suite("lifeguard simulate: the same seed gives the same result", .timeLimit(.minutes(3)))
struct SimulateDeterminismTests {
    /// The `lifeguard` executable that `swift build` put next to the test bundle.
    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lifeguard")
    }

    /// Runs `lifeguard simulate` in a process of its own, so with a hash seed of its own, and
    /// returns what it printed. It waits without blocking a thread of the cooperative pool (the
    /// other suites run on it meanwhile), and its output goes to a file, not a pipe that could
    /// fill.
    static func simulate(_ arguments: [String]) async throws -> String {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("lifeguard-simulate-\(UUID().uuidString).json")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: output) }
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["simulate"] + arguments
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = FileHandle.nullDevice
        await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
            process.terminationHandler = { _ in finished.resume() }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                finished.resume()
            }
        }
        return try String(contentsOf: output, encoding: .utf8)
    }

    @Test("a closed loop of cancelled fan-outs, run in three processes: one result (a request's leases end in a fixed order)")
    func sameResultInEveryProcess() async throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.executable.path),
            "build the package first (swift build): \(Self.executable.path) is missing")
        let arguments = ["--scenario", "cancel-storm", "--users", "120", "--duration", "3", "--design", "lifeguard", "--json"]
        let first = try await Self.simulate(arguments)
        #expect(first.contains("\"completed\""))
        for _ in 0..<3 {
            #expect(try await Self.simulate(arguments) == first)
        }
    }
}
