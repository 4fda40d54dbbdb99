extension PoolStateMachine {
    /// A running lease, for the watchdog.
    struct RunningLease {
        let slot: Int
        let connectionID: Int
        let lane: Int
        let leasedAt: PoolInstant
        let callSite: CallSite?
    }

    /// The leases running now.
    var runningLeases: [RunningLease] {
        self.slots.indices.compactMap { slot in
            guard case .leased(let lane) = self.slots[slot].state, let leasedAt = self.slots[slot].leasedAt else { return nil }
            return RunningLease(slot: slot, connectionID: self.slots[slot].id, lane: lane, leasedAt: leasedAt, callSite: self.slots[slot].callSite)
        }
    }

    /// Records a finding unless this lease was already reported for it; `true` when it is new.
    mutating func report(_ kind: WatchdogFinding.Kind, of lease: RunningLease, idleSince: PoolInstant?, now: PoolInstant) -> WatchdogFinding? {
        guard self.slots[lease.slot].id == lease.connectionID, self.slots[lease.slot].leasedAt == lease.leasedAt,
            case .leased = self.slots[lease.slot].state, self.slots[lease.slot].reported & kind.bit == 0
        else { return nil }
        self.slots[lease.slot].reported |= kind.bit
        let finding = WatchdogFinding(
            kind: kind, lane: self.lanes[lease.lane].lane.name, callSite: lease.callSite,
            heldNanoseconds: lease.leasedAt.nanoseconds(to: now), idleNanoseconds: idleSince.map { $0.nanoseconds(to: now) })
        self.recorder.record(.finding(finding, lane: lease.lane))
        return finding
    }

    /// Records a lease requested during a generation step; `true` when its call site had not
    /// been reported yet.
    mutating func recordLeaseDuringGeneration(_ finding: WatchdogFinding, lane: Lane) -> Bool {
        guard let index = self.laneIndex(of: lane) else { return false }
        return self.recorder.recordFirstAtItsCallSite(finding, lane: index)
    }
}
