import Lifeguard

/// What a server is, as a connection finds it: in recovery (a standby) or not, and whether its
/// transactions are read-only by default.
struct ServerRole: Sendable, Hashable {
    var inRecovery: Bool
    var readOnlyByDefault: Bool

    /// Whether a connection to a server of this role is what `target` asks for.
    /// ``PostgresPool/Configuration/TargetSessionAttributes/preferStandby`` takes any server
    /// (the standby first is the order of the attempts, not a condition).
    func satisfies(_ target: PostgresPool.Configuration.TargetSessionAttributes) -> Bool {
        switch target {
        case .any, .preferStandby: true
        case .readWrite: !self.inRecovery && !self.readOnlyByDefault
        case .readOnly: self.inRecovery || self.readOnlyByDefault
        case .primary: !self.inRecovery
        case .standby: self.inRecovery
        }
    }

    /// The role in words, for errors: "a standby", "a primary", "a read-only primary".
    var name: String {
        self.inRecovery ? "a standby" : self.readOnlyByDefault ? "a primary with default_transaction_read_only on" : "a primary"
    }
}

/// The pool's knowledge of its hosts: which answered lately and as what, which are down, and
/// the order a new connection tries them in. A value: the factory keeps it under a lock and
/// does the I/O.
struct HostTable: Sendable {
    struct Entry: Sendable {
        var host: PostgresPool.Configuration.Host?
        /// The role the host's server had at its last connect, if it answered.
        var role: ServerRole?
        /// Why the host is down: its last connect failed. `nil` while it answers.
        var downBecause: String?
        /// Grows when the host's role changed: connections opened before are of the old role.
        var epoch = 0
        /// The standby's replication lag at its last sample, if sampled.
        var lag: ReplicationLag?
        /// Whether the lag is past the bound: no new connection goes to the host, and its
        /// connections are not leased (a cluster's reads go elsewhere).
        var isLagging = false
        /// Why the host gets no connections: a primary on an older timeline than another
        /// host's (a former primary back without rejoining). `nil` while not fenced.
        var fencedBecause: String?
    }

    private(set) var entries: [Entry]

    /// `hosts` in order; an empty list stands for one Unix socket.
    init(hosts: [PostgresPool.Configuration.Host]) {
        self.entries = hosts.isEmpty ? [Entry(host: nil)] : hosts.map { Entry(host: $0) }
    }

    /// The hosts a new connection tries, in order, as indexes: from `order` (every index, as
    /// listed or shuffled), the hosts that answer, those whose last role is what `target` asks
    /// for first, then those not yet known, then the others (a role can change: a standby is
    /// promoted). Hosts that are down are left out, so that no request waits on one, unless
    /// every host is down: then all are tried, in order.
    func candidates(in order: [Int], for target: PostgresPool.Configuration.TargetSessionAttributes) -> [Int] {
        let current = order.filter { !self.entries[$0].isLagging && self.entries[$0].fencedBecause == nil }
        let answering = current.filter { self.entries[$0].downBecause == nil }
        guard !answering.isEmpty else { return current }
        func rank(_ index: Int) -> Int {
            guard let role = self.entries[index].role else { return 1 }
            if target == .preferStandby { return role.inRecovery ? 0 : 2 }
            return role.satisfies(target) ? 0 : 2
        }
        // A stable sort: equal ranks keep `order`.
        return answering.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
    }

    /// A connect to the host succeeded and found `role`. Returns the host's epoch.
    mutating func answered(_ index: Int, role: ServerRole) -> Int {
        if let known = self.entries[index].role, known != role {
            self.entries[index].epoch += 1
        }
        self.entries[index].role = role
        self.entries[index].downBecause = nil
        return self.entries[index].epoch
    }

    /// A connect to the host failed: it is down until a connect or probe succeeds.
    mutating func failed(_ index: Int, because reason: String) {
        self.entries[index].downBecause = reason
    }

    /// A connection found the host's server of another role than at its connect (a write
    /// refused as read-only, SQLSTATE 25006; a promotion reported): the role is unknown until
    /// the next connect, and the connections opened before are of the old role.
    mutating func roleChanged(_ index: Int) {
        self.entries[index].role = nil
        self.entries[index].epoch += 1
    }

    /// A host's role and, for a standby, its lag were sampled: past `bound`, the standby is
    /// lagging until a sample within it.
    mutating func sampled(_ index: Int, role: ServerRole, lag: ReplicationLag?, bound: ReplicationLag) {
        _ = self.answered(index, role: role)
        self.entries[index].lag = lag
        self.entries[index].isLagging = lag.map { $0.bytes > bound.bytes || $0.time > bound.time } ?? false
    }

    /// Whether a lease on a connection to the host may run: the host is not down, not lagging,
    /// not fenced, and its role is the one the connection had.
    func isUsable(_ index: Int, epoch: Int) -> Bool {
        let entry = self.entries[index]
        return entry.downBecause == nil && !entry.isLagging && entry.fencedBecause == nil && entry.epoch == epoch
    }

    /// The host is a primary behind another's timeline: no connection goes to it, and those
    /// open are retired (its epoch moves), until ``unfence(_:)``.
    mutating func fence(_ index: Int, because reason: String) {
        if self.entries[index].fencedBecause == nil { self.entries[index].epoch += 1 }
        self.entries[index].fencedBecause = reason
    }

    /// The host may be used again.
    mutating func unfence(_ index: Int) {
        self.entries[index].fencedBecause = nil
    }

    /// The fenced hosts and why, for errors.
    var fenced: [(index: Int, reason: String)] {
        self.entries.indices.compactMap { index in self.entries[index].fencedBecause.map { (index, $0) } }
    }

    /// Whether any host is a standby that answers within the lag bound.
    var hasUsableStandby: Bool {
        self.entries.contains { $0.downBecause == nil && !$0.isLagging && $0.role?.inRecovery == true }
    }

    /// The hosts that are down, to probe in the background.
    var downHosts: [Int] {
        self.entries.indices.filter { self.entries[$0].downBecause != nil }
    }

    /// The host's current epoch.
    func epoch(of index: Int) -> Int { self.entries[index].epoch }
}

/// How far a standby is behind: bytes of WAL it has not replayed (of what it received, or of
/// what the primary wrote, whichever is more), and for how long it has been behind the
/// primary (or the age of the last transaction replayed while received WAL waits); zero when
/// it has replayed all.
public struct ReplicationLag: Sendable, Hashable, Codable {
    /// Bytes not yet replayed.
    public var bytes: Int64
    /// How long the standby has been behind.
    public var time: Duration

    /// Creates a lag, or a bound on it.
    ///
    /// - Parameters:
    ///   - bytes: Bytes received and not replayed.
    ///   - time: Age of the last replayed transaction.
    public init(bytes: Int64, time: Duration) {
        self.bytes = bytes
        self.time = time
    }
}
