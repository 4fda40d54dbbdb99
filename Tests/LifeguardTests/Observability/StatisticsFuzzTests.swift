import Foundation
import PropertyBased
import Testing
@testable import Lifeguard

/// A bounded fuzz run over what `lifeguard inspect` reads: a statistics JSON whose numbers are
/// replaced by extremes (1e300, negatives, Int.max). Decoding may refuse it; whatever decodes
/// must give a report and an advice without trapping, and advise nothing negative.
@Suite("Input fuzzing: statistics JSON")
struct StatisticsFuzzTests {
    static let extremes: [any Sendable] = [1e300, -1e300, Int.max, Int.min, -1, 0, 1, 1.5, 1e-300, 9_007_199_254_740_993]

    /// `value` with every number replaced, in walk order, by an extreme that `choices` picks.
    static func replacingNumbers(in value: Any, choices: [Int], next: inout Int) -> Any {
        switch value {
        case let dictionary as [String: Any]:
            return dictionary.mapValues { replacingNumbers(in: $0, choices: choices, next: &next) }
        case let array as [Any]:
            return array.map { replacingNumbers(in: $0, choices: choices, next: &next) }
        case is NSNumber where !(value is Bool):
            defer { next += 1 }
            let choice = choices[next % choices.count]
            return choice < extremes.count ? extremes[choice] : value
        default:
            return value
        }
    }

    @Test("statistics with extreme numbers either fail to decode or give a report and an advice without trapping")
    func extremeStatistics() async throws {
        let encoded = try JSONEncoder().encode(SizingAdviceTests().statistics)
        await propertyCheck(count: 2_000, input: Gen.int(in: 0...14).array(of: 1...40)) { choices in
            // Thousands of cases: let the other suites' tasks run on the cooperative pool's two threads.
            await Task.yield()
            guard let sample = try? JSONSerialization.jsonObject(with: encoded) else { return }
            var next = 0
            let mutated = Self.replacingNumbers(in: sample, choices: choices, next: &next)
            guard let data = try? JSONSerialization.data(withJSONObject: mutated),
                  let statistics = try? JSONDecoder().decode(PoolStatistics.self, from: data)
            else { return }
            let advice = SizingAdvice(statistics: statistics)
            #expect(advice.budget >= 1)
            #expect(advice.lanes.allSatisfy { $0.reserved >= 0 && $0.limit >= 1 && $0.waitTimeoutMilliseconds >= 100 })
            #expect(!statistics.report.isEmpty)
        }
    }

    @Test("pool settings set to any number are checked and never trap")
    func extremeSettings() async {
        let numbers = Gen.element(of: [Int.min, -1, 0, 1, 3, 100_000, 100_001, Int.max])
        let durations = Gen.element(of: [Duration.seconds(Int64.min), .zero, .nanoseconds(1), .seconds(1), .seconds(86_400 * 400), .seconds(Int64.max)])
        await propertyCheck(count: 2_000, input: numbers, numbers, numbers, durations) { budget, reserved, limit, duration in
            // Thousands of cases: let the other suites' tasks run on the cooperative pool's two threads.
            await Task.yield()
            var configuration = PoolConfiguration()
            configuration.budget = budget ?? 0
            configuration.lanes[.retrieval] = .init(reserved: reserved ?? 0, limit: limit, waitTimeout: duration ?? .zero)
            configuration.lanes[.write] = .init(reserved: reserved ?? 0)
            configuration.idleTimeout = duration ?? .zero
            configuration.minimumIdle = limit ?? 0
            do {
                try configuration.validate()
                #expect((1...PoolConfiguration.largestBudget).contains(configuration.budget))
            } catch let error as LifeguardError {
                #expect(!error.problems.isEmpty)
            } catch {
                Issue.record("validate() threw \(error)")
            }
        }
    }
}
