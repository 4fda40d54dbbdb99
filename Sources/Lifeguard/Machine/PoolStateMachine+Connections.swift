/// Connections: opening with backoff, resets, keepalive, idle timeout and lifetime.
extension PoolStateMachine {
    /// Takes a free slot (or a new one) for a connection being opened.
    mutating func allocateSlot() -> Int {
        let id = self.nextConnectionID
        self.nextConnectionID += 1
        let slot: Int
        if let reused = self.freeSlots.popLast() {
            slot = reused
            self.slots[slot] = Slot(id: id, state: .opening)
        } else {
            slot = self.slots.count
            self.slots.append(Slot(id: id, state: .opening))
        }
        self.connectionCount += 1
        self.openingCount += 1
        return slot
    }

    mutating func freeSlot(_ slot: Int) {
        self.slots[slot].state = .free
        self.freeSlots.append(slot)
        self.connectionCount -= 1
    }

    /// A connection was opened into `slot`.
    package mutating func connectionEstablished(slot: Int, now: Instant) -> PoolActions {
        var actions = PoolActions()
        precondition(self.slots[slot].state == .opening, "connectionEstablished for a slot that is not opening")
        self.openingCount -= 1
        self.outage = nil
        self.recorder.record(.connectionOpened)
        self.slots[slot].lastActive = now
        if let lifetime = self.configuration.maxLifetime {
            let shortening = lifetime * (self.configuration.maxLifetimeJitter * self.random.nextUnitInterval())
            self.slots[slot].expiresAt = now.advanced(by: lifetime - shortening)
        }
        guard case .running = self.lifecycle else {
            self.beginClose(slot: slot, reason: .shutdown, into: &actions)
            return actions
        }
        self.slots[slot].state = .idle
        self.idle.append(slot)
        self.rebalance(now: now, into: &actions)
        return actions
    }

    /// Opening a connection into `slot` failed: back off, and fail fast the requests that were
    /// waiting for a new connection.
    package mutating func connectionFailed(slot: Int, error: any Error & Sendable, now: Instant) -> PoolActions {
        var actions = PoolActions()
        precondition(self.slots[slot].state == .opening, "connectionFailed for a slot that is not opening")
        self.openingCount -= 1
        self.freeSlot(slot)
        self.recorder.record(.connectFailed)
        let failures = (self.outage?.failures ?? 0) + 1
        let outage = Outage(failures: failures, lastError: error, retryAt: now.advanced(by: self.backoff(afterFailures: failures)))
        self.outage = outage
        // Other attempts still under way may succeed; the last one to fail fails the waiters.
        if self.openingCount == 0 {
            self.failWaitersNeedingConnections(now: now, with: outage, into: &actions)
        }
        self.rebalance(now: now, into: &actions)
        self.finishIfDrained(into: &actions)
        return actions
    }

    /// The delay before the next attempt: exponential, capped, with "equal jitter" (half fixed,
    /// half random) so that many processes do not reconnect in step.
    mutating func backoff(afterFailures failures: Int) -> Duration {
        let initial = self.configuration.reconnectInitialDelay
        let maximum = self.configuration.reconnectMaximumDelay
        var base = initial
        for _ in 1..<min(failures, 32) where base < maximum {
            base = base * 2
        }
        base = min(base, maximum)
        return base / 2 + (base / 2) * self.random.nextUnitInterval()
    }

    /// A reset of an abandoned lease's connection finished.
    package mutating func resetCompleted(slot: Int, succeeded: Bool, now: Instant) -> PoolActions {
        precondition(self.slots[slot].state == .resetting, "resetCompleted for a slot that is not resetting")
        return self.checkCompleted(slot: slot, succeeded: succeeded, failure: .resetFailed, now: now)
    }

    /// A keepalive ping of an idle connection finished.
    package mutating func pingCompleted(slot: Int, succeeded: Bool, now: Instant) -> PoolActions {
        precondition(self.slots[slot].state == .pinging, "pingCompleted for a slot that is not pinging")
        return self.checkCompleted(slot: slot, succeeded: succeeded, failure: .broken, now: now)
    }

    private mutating func checkCompleted(
        slot: Int, succeeded: Bool, failure: PoolEvent.CloseReason, now: Instant
    ) -> PoolActions {
        var actions = PoolActions()
        if !succeeded {
            self.beginClose(slot: slot, reason: failure, into: &actions)
        } else if case .running = self.lifecycle {
            if self.isExpired(slot, now: now) {
                self.beginClose(slot: slot, reason: .expired, into: &actions)
            } else {
                self.slots[slot].state = .idle
                self.slots[slot].lastActive = now
                self.idle.append(slot)
                self.unusableEnded &+= 1
            }
        } else {
            self.beginClose(slot: slot, reason: .shutdown, into: &actions)
        }
        self.rebalance(now: now, into: &actions)
        return actions
    }

    /// A connection finished closing: its slot is free, and a replacement may be opened.
    package mutating func connectionClosed(slot: Int, now: Instant) -> PoolActions {
        var actions = PoolActions()
        precondition(self.slots[slot].state == .closing, "connectionClosed for a slot that is not closing")
        self.unusableEnded &+= 1
        self.freeSlot(slot)
        self.rebalance(now: now, into: &actions)
        self.finishIfDrained(into: &actions)
        return actions
    }

    /// Closes idle connections past their lifetime or idle timeout, and pings those idle past
    /// the keepalive interval. Least recently used first.
    mutating func houseKeepIdleConnections(now: Instant, into actions: inout PoolActions) {
        var index = 0
        while index < self.idle.count {
            let slot = self.idle[index]
            let idleFor = self.slots[slot].lastActive.map { $0.duration(to: now) } ?? .zero
            if self.isExpired(slot, now: now) {
                self.idle.remove(at: index)
                self.beginClose(slot: slot, reason: .expired, into: &actions)
            } else if let timeout = self.configuration.idleTimeout, idleFor >= timeout,
                self.idle.count > self.configuration.minimumIdle
            {
                self.idle.remove(at: index)
                self.beginClose(slot: slot, reason: .idle, into: &actions)
            } else if let interval = self.configuration.keepaliveInterval, idleFor >= interval {
                self.idle.remove(at: index)
                self.slots[slot].state = .pinging
                actions.ping.append(slot)
            } else {
                index += 1
            }
        }
    }
}
