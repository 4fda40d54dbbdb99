/// Lanes: admission (reservations, limits, shared capacity), which waiter is served next, and
/// how many connections the queued demand needs.
extension PoolStateMachine {
    /// Whether a lease of `lane` is allowed now, connections aside.
    ///
    /// A lane below its reservation is always allowed. Above it, a lease takes shared capacity,
    /// which is the budget less every lane's reservation: reservations are never lent out.
    @inline(__always)
    func canAdmit(_ lane: Int) -> Bool {
        // Fields read one by one: a copy of the lane's state would retain its queue and tables.
        let leased = self.lanes[lane].leased
        guard leased < self.lanes[lane].limit else { return false }
        return leased < self.lanes[lane].reserved || self.reservedTotal + self.sharedInUse < self.configuration.budget
    }

    /// The lane whose head waiter is served next: lanes below their reservation first, then the
    /// oldest admissible head across lanes (FIFO).
    func nextLaneToServe() -> Int? {
        var best: Int?
        var bestID = Int.max
        for lane in self.lanes.indices {
            if let head = self.lanes[lane].waiters.first, self.lanes[lane].leased < self.lanes[lane].reserved,
                head.id.value < bestID
            {
                best = lane
                bestID = head.id.value
            }
        }
        if best != nil { return best }
        for lane in self.lanes.indices {
            if let head = self.lanes[lane].waiters.first, head.id.value < bestID, self.canAdmit(lane) {
                best = lane
                bestID = head.id.value
            }
        }
        return best
    }

    /// How many queued requests could be granted now if enough connections were open.
    func admissibleDemand() -> Int {
        let sharedRoom = max(0, self.configuration.budget - self.reservedTotal - self.sharedInUse)
        var guaranteed = 0
        var sharedWanted = 0
        for lane in self.lanes.indices where !self.lanes[lane].waiters.isEmpty {
            let queued = self.lanes[lane].waiters.count
            let (leased, reserved) = (self.lanes[lane].leased, self.lanes[lane].reserved)
            let fromReservation = min(queued, max(0, reserved - leased))
            guaranteed += fromReservation
            sharedWanted += min(queued - fromReservation, max(0, self.lanes[lane].limit - max(leased, reserved)))
        }
        return guaranteed + min(sharedWanted, sharedRoom)
    }

    /// Hands idle connections to waiters, then opens the connections the remaining demand and
    /// `minimumIdle` need, within the budget and the reconnect backoff.
    mutating func rebalance(now: Instant, into actions: inout PoolActions) {
        guard case .running = self.lifecycle else { return }
        while !self.idle.isEmpty, let lane = self.nextLaneToServe() {
            let waiter = self.takeNextWaiter(lane: lane, now: now)
            let grant = self.hand(
                slot: self.idle.removeLast(), to: lane, now: now, waitingSince: waiter.enqueuedAt, callSite: waiter.callSite)
            actions.grants.append(WaiterGrant(waiter: waiter.id, grant: grant))
        }
        let wanted = self.admissibleDemand() + max(0, self.configuration.minimumIdle - self.idle.count)
        var toOpen = min(wanted - self.openingCount, self.configuration.budget - self.connectionCount)
        if let outage = self.outage {
            // One probe at a time, and only once the backoff has passed.
            toOpen = (now < outage.retryAt || self.openingCount > 0) ? 0 : min(toOpen, 1)
            if toOpen == 0, wanted > 0, self.openingCount == 0 {
                self.arm(outage.retryAt, into: &actions)
            }
        }
        for _ in 0..<max(0, toOpen) {
            actions.connect.append(self.allocateSlot())
        }
    }

    /// Fails every waiter that was waiting for a new connection (not for a lane's limit).
    mutating func failWaitersNeedingConnections(now: Instant, with outage: Outage, into actions: inout PoolActions) {
        for lane in self.lanes.indices where self.canAdmit(lane) {
            for waiter in self.removeAllWaiters(lane: lane, now: now) {
                self.recorder.record(.requestEnded(lane: lane, .unavailable, count: 1))
                actions.failures.append(WaiterFailure(
                    waiter: waiter.id,
                    error: .databaseUnavailable(
                        lane: self.lanes[lane].lane,
                        waited: waiter.enqueuedAt.duration(to: now),
                        lastError: outage.lastError)))
            }
        }
    }
}
