import ArgumentParser
import LifeguardLab

/// `--scenario`, `--rate` and `--seed`, shared by `simulate` and `bench`: which workload, how
/// much of it, and the draws.
struct ScenarioOptions: ParsableArguments {
    @Option(help: "The scenario: \(Scenario.names.joined(separator: ", ")).")
    var scenario: String

    @Option(help: "Multiply the scenario's arrival rates (3 = three times the traffic); 0.01 to 1000.")
    var rate: Double = 1

    @Option(help: "Seeds the random draws: the same seed gives the same result.")
    var seed: UInt64 = 1

    func validate() throws {
        guard Scenario.named(self.scenario) != nil else {
            throw ValidationError("--scenario must be one of \(Scenario.names.joined(separator: ", ")), got '\(self.scenario)'")
        }
        guard (0.01...1_000).contains(self.rate) else {
            throw ValidationError("--rate must be between 0.01 and 1000, got \(self.rate)")
        }
    }

    /// The scenario by name with the seed, at its own rates (``rate`` not applied).
    var base: Scenario {
        var scenario = Scenario.named(self.scenario)!
        scenario.seed = self.seed
        return scenario
    }
}
