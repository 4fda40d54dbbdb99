@testable import Lifeguard
import LifeguardTestUtils

typealias Machine = PoolStateMachine
typealias Actions = PoolActions

/// The tests' manual clock: every instant is an offset from its origin.
let testClock = ManualClock()

func at(_ milliseconds: Int) -> PoolInstant {
    testClock.instant(at: .milliseconds(milliseconds))
}

struct ConnectionFailure: Error, Equatable, CustomStringConvertible {
    var description: String { "connection refused" }
}

extension PoolConfiguration {
    /// A configuration with only the given lanes and no background health checks, so that a
    /// test sees only the actions it provokes.
    static func testing(budget: Int, lanes: [Lane: LaneConfiguration]) -> PoolConfiguration {
        var configuration = PoolConfiguration(budget: budget)
        configuration.lanes = lanes
        configuration.idleTimeout = nil
        configuration.maxLifetime = nil
        configuration.keepaliveInterval = nil
        configuration.validationThreshold = nil
        return configuration
    }
}

extension Machine {
    init(_ configuration: PoolConfiguration) {
        try! configuration.validate()
        self.init(configuration: configuration, seed: 42, now: at(0))
    }

    func lane(_ lane: Lane) -> Int { self.laneIndex(of: lane)! }

    /// Opens every connection the actions ask for; returns everything that followed.
    mutating func establish(_ actions: Actions, now: PoolInstant) -> Actions {
        var merged = Actions()
        for slot in actions.connect {
            let next = self.connectionEstablished(slot: slot, now: now)
            merged.grants += next.grants
            merged.connect += next.connect
            merged.close += next.close
        }
        return merged
    }

    /// Leases and expects an immediate grant.
    mutating func leaseNow(_ lane: Lane, now: PoolInstant) -> Grant? {
        if case .granted(let grant) = self.lease(lane: self.lane(lane), now: now) { return grant }
        return nil
    }

    /// Leases and expects to wait; returns the waiter and its actions.
    mutating func leaseWaiting(_ lane: Lane, now: PoolInstant) -> (WaiterID, Actions)? {
        if case .wait(let id, let actions) = self.lease(lane: self.lane(lane), now: now) { return (id, actions) }
        return nil
    }

    mutating func leaseFailure(_ lane: Lane, now: PoolInstant) -> LifeguardError? {
        if case .failed(let error) = self.lease(lane: self.lane(lane), now: now) { return error }
        return nil
    }

    /// Opens `count` idle connections.
    mutating func warmUp(_ count: Int, now: PoolInstant) {
        for _ in 0..<count {
            let slot = self.allocateSlot()
            _ = self.connectionEstablished(slot: slot, now: now)
        }
    }
}
