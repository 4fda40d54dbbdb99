/// Time: wait deadlines, housekeeping, reconnect probes, and shutdown with its grace period.
extension PoolStateMachine {
    /// The wake-up `timer` fired, or (with `nil`) the shell wants housekeeping now.
    ///
    /// A timer that fired after a later one superseded it is no longer armed, and leaves the
    /// armed one be. Housekeeping at or after the armed instant does what its timer would:
    /// the timer is cancelled.
    package mutating func tick(timer: TimerID? = nil, now: Instant) -> PoolActions {
        var actions = PoolActions()
        if let armed = self.armedWakeUp {
            if armed.id == timer {
                self.armedWakeUp = nil
            } else if timer == nil, armed.instant <= now {
                self.armedWakeUp = nil
                actions.cancelledTimer = armed.id
            }
        }
        if self.recorder.isRotationDue(now: now) {
            self.recorder.rotate(total: self.leasedCount, lanes: self.lanes.map(\.leased), now: now)
        }
        let earliestWaiterDeadline = self.expireWaiters(now: now, into: &actions)
        switch self.lifecycle {
        case .running:
            self.houseKeepIdleConnections(now: now, into: &actions)
            self.rebalance(now: now, into: &actions)
        case .draining(let deadline):
            if deadline <= now {
                self.closeLeasedConnections(now: now, into: &actions)
            }
        case .stopped:
            break
        }
        self.finishIfDrained(into: &actions)
        if let next = self.nextWakeUp(now: now, earliestWaiterDeadline: earliestWaiterDeadline) {
            self.arm(next, into: &actions)
        }
        return actions
    }

    /// The earliest instant at which something is due: a waiter's deadline (`earliestWaiterDeadline`,
    /// a millisecond from now at the soonest), the grace period's end, a reconnect probe, or
    /// housekeeping while connections are open.
    ///
    /// Each tick passes over every queue, so ticks are a millisecond apart at least: when waits
    /// time out at the edge of `waitTimeout`, deadlines come a fraction of a millisecond apart,
    /// and a tick for each (twice over 1,600 waiters, under the pool's lock) took the CPU and
    /// the lock that the leases needed, so that more waits timed out. A wait ends at most a
    /// millisecond past its deadline.
    func nextWakeUp(now: Instant, earliestWaiterDeadline: Instant?) -> Instant? {
        var next: Instant?
        func consider(_ instant: Instant) {
            if next == nil || instant < next! { next = instant }
        }
        if let deadline = earliestWaiterDeadline {
            consider(max(deadline, now.advanced(by: Self.shortestTickInterval)))
        }
        switch self.lifecycle {
        case .running:
            if let outage = self.outage, self.openingCount == 0,
                self.admissibleDemand() + self.configuration.minimumIdle > self.idle.count
            {
                consider(outage.retryAt)
            }
            if self.connectionCount > 0 {
                consider(now.advanced(by: Self.housekeepingInterval))
            }
        case .draining(let deadline):
            consider(deadline)
        case .stopped:
            break
        }
        return next
    }

    /// Stops granting leases: fails every waiter, closes idle connections, and lets leases run
    /// until `gracePeriod` has passed, when their connections are closed. While draining, a
    /// second call may end the grace period sooner (with `.zero`: now), never later.
    package mutating func shutdown(gracePeriod: Duration, now: Instant) -> PoolActions {
        var actions = PoolActions()
        let deadline = now.advanced(by: gracePeriod)
        switch self.lifecycle {
        case .running:
            for lane in self.lanes.indices {
                for waiter in self.removeAllWaiters(lane: lane, now: now) {
                    self.recorder.record(.requestEnded(lane: lane, .shutdown, count: 1))
                    actions.failures.append(WaiterFailure(waiter: waiter.id, error: .shutdown(lane: self.lanes[lane].lane)))
                }
            }
            while let slot = self.idle.popLast() {
                self.beginClose(slot: slot, reason: .shutdown, into: &actions)
            }
        case .draining(let current):
            // A second shutdown may end the grace period sooner, never later.
            guard deadline < current else { return actions }
        case .stopped:
            return actions
        }
        self.lifecycle = .draining(deadline: deadline)
        if gracePeriod <= .zero {
            self.closeLeasedConnections(now: now, into: &actions)
        } else if self.leasedCount > 0 {
            self.arm(deadline, into: &actions)
        }
        self.finishIfDrained(into: &actions)
        return actions
    }

    /// Closes the connections of running leases: their owners' next use fails.
    mutating func closeLeasedConnections(now: Instant, into actions: inout PoolActions) {
        for slot in self.slots.indices {
            if case .leased(let lane) = self.slots[slot].state {
                self.unlease(slot: slot, lane: lane, now: now)
                self.beginClose(slot: slot, reason: .shutdown, into: &actions)
            }
        }
    }

    /// Moves a draining pool to stopped once its last connection is closed.
    mutating func finishIfDrained(into actions: inout PoolActions) {
        if case .draining = self.lifecycle, self.connectionCount == 0 {
            self.lifecycle = .stopped
            actions.finished = true
        }
    }
}

extension PoolStateMachine {
    /// The slots of every connection still held, for a pool whose ``ConnectionPool/run()`` was
    /// cancelled: the slots are freed and the shell closes their connections directly.
    mutating func connectionsToCloseNow(now: Instant) -> [Int] {
        var connections: [Int] = []
        for slot in self.slots.indices where self.slots[slot].state != .free {
            if case .leased(let lane) = self.slots[slot].state {
                self.unlease(slot: slot, lane: lane, now: now)
            }
            if self.slots[slot].state == .opening {
                self.openingCount -= 1
            } else {
                connections.append(slot)
            }
            self.freeSlot(slot)
        }
        self.idle.removeAll()
        self.lifecycle = .stopped
        return connections
    }
}
