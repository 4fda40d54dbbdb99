import ArgumentParser
import Foundation
import Lifeguard

/// `lifeguard inspect FILE`: the report and sizing advice of a statistics JSON.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the report and sizing advice of a pool's statistics JSON.",
        discussion: """
            The file is the JSON encoding of `pool.statistics()` (a `PoolStatistics`), e.g. served by \
            your application at a debug endpoint. Use - to read standard input.
            """
    )

    @Argument(help: "A statistics JSON file, or - for standard input.")
    var file: String

    @Flag(help: "Print the sizing advice as JSON instead of the report.")
    var json = false

    func run() throws {
        let data: Data
        if self.file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let contents = FileManager.default.contents(atPath: self.file) else {
                throw ValidationError("cannot read '\(self.file)': no such file, or not readable")
            }
            data = contents
        }
        let statistics: PoolStatistics
        do {
            statistics = try JSONDecoder().decode(PoolStatistics.self, from: data)
        } catch {
            throw ValidationError("'\(self.file)' is not a Lifeguard statistics JSON (PoolStatistics): \(error)")
        }
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(SizingAdvice(statistics: statistics)), as: UTF8.self))
        } else {
            print(Self.printable(statistics.report))
        }
    }

    /// `text` with control characters other than newlines escaped: lane names and call sites
    /// come from the file, and must not drive the terminal.
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.flatMap { scalar -> [Unicode.Scalar] in
            scalar == "\n" || scalar.properties.generalCategory != .control ? [scalar] : Array(scalar.escaped(asASCII: true).unicodeScalars)
        }))
    }
}
