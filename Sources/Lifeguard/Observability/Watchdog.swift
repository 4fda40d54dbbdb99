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

    public var description: String { "\(self.location) (\(self.function))" }

    /// `File.swift:line`, as the watchdog's reports name a call site.
    public var location: String { "\(self.fileID):\(self.line)" }

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
        /// A lease was requested inside a ``GenerationStep``, where no connection should be
        /// held: reported once per call site.
        case leaseDuringGeneration
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
    /// Where the generation step began, `File.swift:line` (leases during generation).
    public var generationStep: String?

    /// Creates a finding.
    public init(
        kind: Kind, lane: String, callSite: String, function: String, heldSeconds: Double, idleSeconds: Double?,
        generationStep: String? = nil
    ) {
        self.kind = kind
        self.lane = lane
        self.callSite = callSite
        self.function = function
        self.heldSeconds = heldSeconds
        self.idleSeconds = idleSeconds
        self.generationStep = generationStep
    }

    /// A finding about a lease asked for at `callSite` (`unknown` when the caller gave none),
    /// held for `heldNanoseconds` and idle for `idleNanoseconds`.
    init(
        kind: Kind, lane: String, callSite: CallSite?, heldNanoseconds: Int64, idleNanoseconds: Int64?,
        generationStep: String? = nil
    ) {
        self.init(
            kind: kind, lane: lane, callSite: callSite?.location ?? "unknown",
            function: callSite.map { "\($0.function)" } ?? "unknown",
            heldSeconds: Double(heldNanoseconds) / 1e9, idleSeconds: idleNanoseconds.map { Double($0) / 1e9 },
            generationStep: generationStep)
    }

    public var description: String {
        switch self.kind {
        case .longHold:
            return "long hold: lane '\(self.lane)' held a connection for \((self.heldSeconds * 10).rounded() / 10) s at \(self.callSite) (\(self.function))"
        case .generationHold:
            return "generation hold: lane '\(self.lane)' held a connection with no statement running for "
                + "\(((self.idleSeconds ?? 0) * 10).rounded() / 10) s at \(self.callSite) (\(self.function)); "
                + "release it before the model call and lease again after"
        case .leaseDuringGeneration:
            return "lease during generation: lane '\(self.lane)' was asked for a connection at \(self.callSite) "
                + "(\(self.function)) inside the generation step begun at \(self.generationStep ?? "unknown"); "
                + "lease before or after the model call, not during it"
        }
    }
}

extension WatchdogFinding.Kind {
    /// The kind's bit in a slot's reported findings.
    var bit: UInt8 {
        switch self {
        case .longHold: 1
        case .generationHold: 2
        case .leaseDuringGeneration: 4
        }
    }
}

/// A condition of the whole pool that needs a human: slow waits, or the leak signal.
public struct Incident: Sendable, Hashable, Codable, CustomStringConvertible {
    /// What kind of incident.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// A lane's pool wait p99 in the current window is above 50 ms.
        case slowWaits
        /// Cancellations rose while the pool's capacity (usable connections) fell: connections
        /// are being lost around cancellations.
        case leakSignal
    }

    /// What kind of incident.
    public var kind: Kind
    /// The lane, for slow waits.
    public var lane: String?
    /// The lane's wait p99 in the window, in milliseconds, for slow waits.
    public var waitP99Milliseconds: Double?
    /// The lane's call sites that held its connections most in the window, each with the
    /// seconds held summed over its leases (sampled by the watchdog), most first.
    public var topCallSites: [String]
    /// Usable connections, for the leak signal.
    public var capacity: Int?
    /// Cancellations since the previous check, for the leak signal.
    public var cancellations: UInt64?

    public var description: String {
        switch self.kind {
        case .slowWaits:
            let sites = self.topCallSites.isEmpty ? "" : "; most connection time held at: \(self.topCallSites.joined(separator: ", "))"
            return "INCIDENT: lane '\(self.lane ?? "-")' pool wait p99 \(Figures.format(self.waitP99Milliseconds ?? 0)) ms is above 50 ms\(sites)"
        case .leakSignal:
            return "LEAK SIGNAL: \(self.cancellations ?? 0) cancellations while capacity fell to \(self.capacity ?? 0) usable connections"
        }
    }
}

/// What the watchdog and the metrics export keep between runs, off the lease path.
struct IncidentTracker {
    /// Seconds held per lane and call site in the current statistics window, sampled.
    var heldByCallSite: [Int: [String: Double]] = [:]
    var windowStart: PoolInstant?
    var lastSample: PoolInstant?
    /// The window in which each lane's slow waits were last reported.
    var reportedWindow: [Int: PoolInstant] = [:]
    var lastCancellations: UInt64?
    var lastCapacity: Int?
    /// The window in which the leak signal was last reported.
    var leakReportedWindow: PoolInstant?
    /// A fall of capacity that came with cancellations, at an earlier check: when, the capacity
    /// and cancellations before it, and the connections back from a reset by then. Reported
    /// only if capacity has not come back at a check a reset's longest time (`resetTimeout`)
    /// or more after it, and fewer connections came back since than are missing.
    var capacityFall: (since: PoolInstant, capacity: Int, cancellations: UInt64, unusableEnded: UInt64)?

    /// Adds the time since the last sample to each running lease's call site.
    mutating func sample(_ running: [PoolStateMachine.RunningLease], windowStart: PoolInstant, now: PoolInstant) {
        if self.windowStart != windowStart {
            self.heldByCallSite = [:]
            self.windowStart = windowStart
        }
        let since = self.lastSample
        self.lastSample = now
        guard let since else { return }
        for lease in running {
            let from = max(since, lease.leasedAt)
            let seconds = Double(max(0, from.nanoseconds(to: now))) / 1e9
            let site = lease.callSite?.location ?? "unknown"
            self.heldByCallSite[lease.lane, default: [:]][site, default: 0] += seconds
        }
    }

    /// The lane's three call sites that held its connections most, as
    /// `site (seconds s across its leases)`.
    func topCallSites(lane: Int) -> [String] {
        // A site that held for less than 0.05 s would show as 0.0 s: no holder to blame.
        (self.heldByCallSite[lane] ?? [:]).filter { $0.value >= 0.05 }.sorted { $0.value > $1.value }.prefix(3)
            .map { "\($0.key) (\(Figures.format($0.value)) s across its leases)" }
    }

    /// Slow-wait incidents (once per lane and window) and the leak signal (once per window),
    /// from a snapshot taken at `now`. A connection out of use for less than `longestReset`
    /// may be in a slow reset (a busy machine, clients gone at once), which is no leak.
    mutating func check(_ inputs: PoolStateMachine.StatisticsInputs, now: PoolInstant, longestReset: Duration) -> [Incident] {
        var incidents: [Incident] = []
        let window = inputs.recorder.current
        for lane in window.lanes.indices {
            let waits = window.waits(ofLane: lane, layout: inputs.recorder.layout)
            guard waits.totalCount > 0, self.reportedWindow[lane] != window.start else { continue }
            let p99 = Double(waits.valueAtPercentile(99)) / 1_000
            if p99 > SizingAdvice.incidentWaitMilliseconds {
                self.reportedWindow[lane] = window.start
                incidents.append(Incident(
                    kind: .slowWaits, lane: inputs.laneNames[lane], waitP99Milliseconds: p99,
                    topCallSites: self.topCallSites(lane: lane)))
            }
        }
        let cancellations = window.lanes.reduce(0) { $0 + $1.outcomes.cancelled + $1.cancelledLeases }
        if let fall = self.capacityFall {
            // A fall that lasts past a check: connections are not coming back. Cancelled leases
            // whose connections are reset (fan-out siblings of a rejected request) come back
            // within milliseconds, and are no sign of a leak.
            let cameBack = inputs.unusableEnded &- fall.unusableEnded
            if inputs.capacity >= fall.capacity || cameBack >= UInt64(fall.capacity - inputs.capacity) {
                // Back, or churn: under a steady stream of cancellations some connections are
                // always being reset, but they are new ones each check.
                self.capacityFall = nil
            } else if self.leakReportedWindow != window.start, cancellations > fall.cancellations,
                fall.since.nanoseconds(to: now) >= longestReset.wholeNanoseconds
            {
                // Once per window: under cancellation-heavy load, one report says it.
                self.leakReportedWindow = window.start
                self.capacityFall = nil
                incidents.append(Incident(
                    kind: .leakSignal, lane: nil, waitP99Milliseconds: nil, topCallSites: [],
                    capacity: inputs.capacity, cancellations: cancellations - fall.cancellations))
            }
        } else if let lastCancellations = self.lastCancellations, let lastCapacity = self.lastCapacity,
            cancellations > lastCancellations, inputs.capacity < lastCapacity
        {
            self.capacityFall = (now, lastCapacity, lastCancellations, inputs.unusableEnded)
        }
        self.lastCancellations = cancellations
        self.lastCapacity = inputs.capacity
        return incidents
    }
}
