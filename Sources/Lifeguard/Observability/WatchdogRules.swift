/// The watchdog's rules, as one value: how often it looks, which running leases it reports
/// (held too long; idle too long, a probable generation hold), and what a lease asked for
/// inside a ``GenerationStep`` gets. The shell gathers what they need (the running leases, what
/// each connection last did) and carries out what they say; each finding is reported once per
/// lease by the state machine, which counts it.
struct WatchdogRules: Sendable {
    /// ``PoolConfiguration/longHoldThreshold`` in nanoseconds; `Int64.max` when off.
    let longHold: Int64
    /// ``PoolConfiguration/idleInLeaseThreshold`` in nanoseconds; `Int64.max` when off.
    let idleInLease: Int64
    let leaseDuringGeneration: LeaseDuringGeneration
    /// How often the watchdog looks at running leases: a quarter of the shortest threshold, at
    /// most every 250 ms; `nil` when both reports are off.
    let interval: Duration?

    init(_ configuration: PoolConfiguration) {
        self.longHold = configuration.longHoldThreshold?.wholeNanoseconds ?? .max
        self.idleInLease = configuration.idleInLeaseThreshold?.wholeNanoseconds ?? .max
        self.leaseDuringGeneration = configuration.leaseDuringGeneration
        let thresholds = [configuration.longHoldThreshold, configuration.idleInLeaseThreshold].compactMap { $0 }
        self.interval = thresholds.min().map { min($0 / 4, .milliseconds(250)) }
    }

    /// The reports due for a running lease at `now`, given what its connection last did: a
    /// long hold, and a generation hold with the instant since which the lease has been idle
    /// (no statement since then, nor since the lease began).
    func due(for lease: PoolStateMachine.RunningLease, activity: LeaseActivity, now: PoolInstant) -> [(WatchdogFinding.Kind, PoolInstant?)] {
        var due: [(WatchdogFinding.Kind, PoolInstant?)] = []
        if lease.leasedAt.nanoseconds(to: now) > self.longHold {
            due.append((.longHold, nil))
        }
        if case .idle(let since) = activity {
            let idleSince = max(since, lease.leasedAt)
            if idleSince.nanoseconds(to: now) > self.idleInLease {
                due.append((.generationHold, idleSince))
            }
        }
        return due
    }

    /// What a lease asked for at `callSite` inside the generation step begun at `step` gets:
    /// refused with ``LifeguardError/Code/leaseDuringGeneration`` under `.forbid`, or granted
    /// and reported (once per call site) under `.warn`.
    func leaseDuringGeneration(step: CallSite, lane: Lane, callSite: CallSite?) -> Result<WatchdogFinding, LifeguardError> {
        if case .forbid = self.leaseDuringGeneration {
            return .failure(.leaseDuringGeneration(lane: lane, callSite: callSite?.location ?? "unknown", step: step.location))
        }
        return .success(WatchdogFinding(
            kind: .leaseDuringGeneration, lane: lane.name, callSite: callSite, heldNanoseconds: 0, idleNanoseconds: nil,
            generationStep: step.location))
    }
}
