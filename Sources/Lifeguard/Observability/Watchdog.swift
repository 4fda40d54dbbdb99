/// Where a lease was taken: the caller of `withConnection`.
///
/// Static strings, so that remembering it costs the lease path no retain and no allocation.
public struct CallSite: Sendable, Hashable, CustomStringConvertible {
    /// The file, as `#fileID` gives it (`Module/File.swift`).
    public let fileID: StaticString
    /// The line.
    public let line: UInt
    /// The function, as `#function` gives it.
    public let function: StaticString

    /// Creates a call site; `withConnection` captures its caller's.
    public init(fileID: StaticString, line: UInt, function: StaticString) {
        self.fileID = fileID
        self.line = line
        self.function = function
    }

    public var description: String { "\(self.fileID):\(self.line) (\(self.function))" }

    public static func == (lhs: CallSite, rhs: CallSite) -> Bool {
        lhs.description == rhs.description
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.description)
    }
}

/// Something the watchdog found about a running lease.
public struct WatchdogFinding: Sendable, Hashable, Codable, CustomStringConvertible {
    /// What kind of finding.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// Held longer than `longHoldThreshold`.
        case longHold
        /// No statement ran for longer than `idleInLeaseThreshold`: almost always a connection
        /// held across a model call. No pool size fixes it: release the connection before the
        /// call and take another after (three short windows).
        case generationHold
    }

    /// What kind of finding.
    public var kind: Kind
    /// The lease's lane.
    public var lane: String
    /// Where the lease was taken, `File.swift:line`.
    public var callSite: String
    /// The function that took the lease.
    public var function: String
    /// How long the lease had been held when found, in seconds.
    public var heldSeconds: Double
    /// How long no statement had run when found, in seconds (generation holds).
    public var idleSeconds: Double?

    public var description: String {
        switch self.kind {
        case .longHold:
            return "long hold: lane '\(self.lane)' held a connection for \((self.heldSeconds * 10).rounded() / 10) s at \(self.callSite) (\(self.function))"
        case .generationHold:
            return "generation hold: lane '\(self.lane)' held a connection with no statement running for "
                + "\(((self.idleSeconds ?? 0) * 10).rounded() / 10) s at \(self.callSite) (\(self.function)); "
                + "release it before the model call and lease again after"
        }
    }
}

extension WatchdogFinding.Kind {
    /// The kind's bit in a slot's reported findings.
    var bit: UInt8 {
        switch self {
        case .longHold: 1
        case .generationHold: 2
        }
    }
}

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
            kind: kind,
            lane: self.lanes[lease.lane].lane.name,
            callSite: lease.callSite.map { "\($0.fileID):\($0.line)" } ?? "unknown",
            function: lease.callSite.map { "\($0.function)" } ?? "unknown",
            heldSeconds: Double(lease.leasedAt.nanoseconds(to: now)) / 1e9,
            idleSeconds: idleSince.map { Double($0.nanoseconds(to: now)) / 1e9 })
        self.statistics.record(finding, lane: lease.lane)
        return finding
    }
}
