import ArgumentParser
import LifeguardLab

/// `--users` and `--think`, shared by `simulate` and `bench`: a closed loop instead of Poisson
/// arrivals.
struct ClosedLoopOptions: ParsableArguments {
    @Option(help: "A closed loop of this many users instead of Poisson arrivals: each issues a request, waits for its end (served or rejected), thinks (at least 1 ms), and asks again; 1 to 10000.")
    var users: Int?

    @Option(help: "With --users: each user's think time between requests, in seconds (0 to 3600); the users start spread over one think time. Default: 0.")
    var think: Double = 0

    func validate() throws {
        if let users, !(1...10_000).contains(users) {
            throw ValidationError("--users must be between 1 and 10000, got \(users)")
        }
        guard (0...3_600).contains(self.think) else {
            throw ValidationError("--think must be between 0 and 3600 seconds, got \(self.think)")
        }
        if self.users == nil, self.think != 0 {
            throw ValidationError("--think needs --users (a closed loop)")
        }
    }

    /// The closed loop asked for, if any.
    var closedLoop: Scenario.ClosedLoop? {
        self.users.map { Scenario.ClosedLoop(users: $0, think: .constant(self.think)) }
    }
}
