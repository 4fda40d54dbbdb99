import CoreMetrics
import Lifeguard
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle
import Synchronization
import Tracing

/// A primary and its streaming standbys behind one API: each lane says which server it needs,
/// reads go to a standby within a lag bound, and a read can ask to see a write.
///
/// It holds two pools over the same hosts: ``primary`` (`target_session_attrs=read-write`,
/// every lane) and ``standbys`` (`standby`, the lanes that read from standbys), and one
/// connection on every host that samples its role and lag. A standby gets at most the
/// configuration's budget (the standby pool has one less); the primary gets the budget and
/// the sampler's connection.
///
/// ```swift
/// var configuration = PostgresCluster.Configuration(pool: try .init(
///     url: "postgres://app:secret@db1:5432,db2:5432/app"))
/// configuration.maximumLag = .init(bytes: 16 << 20, time: .seconds(2))
/// let cluster = try PostgresCluster(configuration: configuration, logger: logger)
/// // Run it in a ServiceGroup, or: async let _ = cluster.run()
/// let (_, written) = try await cluster.withTransactionReturningPosition(lane: .write) { lease in
///     try await lease.execute("UPDATE docs SET title = 'new' WHERE id = 1")
/// }
/// // Later, in another request carrying `written.description` (a cookie):
/// let title = try await cluster.withConnection(lane: .retrieval, readingAfter: written) { lease in
///     try await lease.query("SELECT title FROM docs WHERE id = 1")[0].decode(String.self)
/// }
/// ```
public final class PostgresCluster: Service, Sendable {
    /// Which server a lane's leases need.
    public enum HostRequirement: String, Sendable, Hashable, CaseIterable {
        /// The primary: writes, and reads that must see the latest commit.
        case primary
        /// A standby within the lag bound; fails with ``Lifeguard/LifeguardError/Code/databaseUnavailable``
        /// when none is usable.
        case standby
        /// A standby within the lag bound when one is usable, else the primary.
        case preferStandby = "prefer-standby"
    }

    /// The hosts, the pools' settings, and which lanes read from standbys.
    public struct Configuration: Sendable {
        /// Credentials, hosts (any order: roles are read from the servers), the budget per
        /// host and the lanes. Its `targetSessionAttributes` is not used.
        public var pool: PostgresPool.Configuration
        /// What each lane needs; a lane not listed needs the primary. Default: `.retrieval`
        /// prefers a standby, every other lane the primary.
        public var laneHosts: [Lane: HostRequirement] = [.retrieval: .preferStandby]
        /// A standby further behind than this, in bytes or in time, gets no reads until it
        /// catches up. Default: 16 MiB or 5 s.
        public var maximumLag = ReplicationLag(bytes: 16 << 20, time: .seconds(5))
        /// How often each standby's lag is sampled (on the standby). Default: 250 ms.
        public var lagSampleInterval: Duration = .milliseconds(250)
        /// How long a read that asks for a write (`readingAfter`) waits on a standby for its
        /// replay before it goes to the primary. Default: 50 ms.
        public var readYourWritesWait: Duration = .milliseconds(50)

        /// Creates a configuration.
        ///
        /// - Parameter pool: Credentials, hosts, budget and lanes.
        public init(pool: PostgresPool.Configuration) {
            self.pool = pool
        }

        /// Every problem of the settings.
        func problems() -> [String] {
            var problems: [String] = []
            if self.pool.budget < 2 && self.laneHosts.values.contains(where: { $0 != .primary }) {
                problems.append("budget is \(self.pool.budget); reading from standbys takes at least 2 (one connection per standby samples its lag)")
            }
            for lane in self.laneHosts.keys where self.pool.lanes[lane] == nil {
                problems.append("laneHosts names lane '\(lane)', which the pool does not have")
            }
            if self.maximumLag.bytes < 0 || self.maximumLag.time < .zero {
                problems.append("maximumLag is negative; give bytes and a time of zero or more")
            }
            if self.lagSampleInterval < .milliseconds(10) || self.lagSampleInterval > .seconds(3_600) {
                problems.append("lagSampleInterval is \(self.lagSampleInterval); it must be from 10 ms to one hour")
            }
            if self.readYourWritesWait < .zero || self.readYourWritesWait > .seconds(60) {
                problems.append("readYourWritesWait is \(self.readYourWritesWait); it must be from 0 to 60 s")
            }
            return problems
        }
    }

    /// The pool of connections to the primary (`read-write`): every lane.
    public let primary: PostgresPool
    /// The pool of connections to the standbys, for the lanes that read from them; `nil` when
    /// every lane needs the primary.
    public let standbys: PostgresPool?
    /// The settings the cluster was made with.
    public let configuration: Configuration
    private let logger: Logger
    /// Leases the cluster ran on each host, by index.
    private let leaseCounts: Mutex<[Int]>
    /// What the cluster knows of the newest primary, from the lag sampler and from writes.
    struct PrimaryKnowledge {
        /// The newest timeline any host was a primary on.
        var newestTimeline = 0
        /// The newest primary's WAL position: its last sample's, or a write's since.
        var position: WALPosition?
        /// Its position at its last sample.
        var sampled: WALPosition?
        /// Its position one sample before: what a standby streaming normally has replayed.
        var earlier: WALPosition?
    }

    /// What the lag sampler learned of the primaries: the newest timeline any host was a
    /// primary on, and the newest primary's last WAL position.
    private let primaries = Mutex(PrimaryKnowledge())
    private let hostMetrics: [ClusterHostMetrics]

    /// Creates a cluster. It opens no connection until `run()` runs.
    ///
    /// - Parameters:
    ///   - configuration: Hosts, budget per host, lanes, and which lanes read from standbys.
    ///   - eventLoopGroup: Where connections run. Default: NIO's shared group.
    ///   - logger: Receives connection failures, role changes and the pools' lifecycle.
    ///   - metricsFactory: Where both pools' metrics go (the primary pool's under the
    ///     configuration's `pool.name`, the standby pool's under that name with `-standbys`),
    ///     and each host's (`lifeguard_host_*`, see ``hosts()``). Default: swift-metrics'
    ///     bootstrapped backend.
    ///   - tracer: Records both pools' spans. Default: the bootstrapped tracer.
    /// - Throws: ``Lifeguard/LifeguardError/Code/invalidConfiguration`` listing every problem.
    public init(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil, tracer: (any Tracer)? = nil
    ) throws(LifeguardError) {
        var problems = configuration.problems()
        do { try configuration.pool.validate() } catch { problems += error.problems }
        guard problems.isEmpty else { throw LifeguardError.invalidConfiguration(problems) }
        self.configuration = configuration
        self.logger = logger
        var primary = configuration.pool
        primary.targetSessionAttributes = .readWrite
        self.primary = try PostgresPool(
            configuration: primary, eventLoopGroup: eventLoopGroup, logger: logger, metricsFactory: metricsFactory, tracer: tracer)
        let hosts = self.primary.factory.hosts.withLock { $0.entries.map { $0.host?.description ?? "unix socket" } }
        self.leaseCounts = Mutex(Array(repeating: 0, count: hosts.count))
        self.hostMetrics = hosts.map {
            ClusterHostMetrics(pool: configuration.pool.pool.name, host: $0, factory: metricsFactory ?? MetricsSystem.factory)
        }
        let standbyLanes = configuration.laneHosts.filter { $0.value != .primary }.map(\.key)
        if standbyLanes.isEmpty {
            self.standbys = nil
        } else {
            var standbys = configuration.pool
            standbys.targetSessionAttributes = .standby
            standbys.applicationName = configuration.pool.applicationName
            standbys.pool.name = configuration.pool.pool.name + "-standbys"
            // One connection of each standby's budget samples its lag.
            standbys.budget = configuration.pool.budget - 1
            standbys.pool.minimumIdle = min(configuration.pool.pool.minimumIdle, standbys.budget)
            // The reading lanes only, none reserving (reservations are the primary pool's).
            var reading: [Lane: LaneConfiguration] = [:]
            for lane in standbyLanes {
                guard var settings = configuration.pool.lanes[lane] else { continue }
                settings.reserved = 0
                settings.limit = min(settings.limit ?? standbys.budget, standbys.budget)
                reading[lane] = settings
            }
            standbys.lanes = reading
            self.standbys = try PostgresPool(
                configuration: standbys, eventLoopGroup: eventLoopGroup, logger: logger, metricsFactory: metricsFactory, tracer: tracer)
        }
    }

    /// Runs both pools and samples each standby's lag, until shut down (graceful shutdown, or
    /// ``shutdown(gracePeriod:)``) or cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.primary.run() }
            guard let standbys = self.standbys else { return }
            group.addTask {
                // The sampler runs until cancelled: once the standby pool's run returns.
                await withTaskGroup(of: Void.self) { pool in
                    pool.addTask { await standbys.run() }
                    pool.addTask { await self.sampleLag(of: standbys) }
                    await pool.next()
                    pool.cancelAll()
                }
            }
        }
    }

    /// Drains both pools (see ``Lifeguard/ConnectionPool/shutdown(gracePeriod:)``).
    ///
    /// - Parameter gracePeriod: How long running leases may continue; `nil` uses the pools'
    ///   `shutdownGracePeriod`.
    public func shutdown(gracePeriod: Duration? = nil) {
        self.primary.shutdown(gracePeriod: gracePeriod)
        self.standbys?.shutdown(gracePeriod: gracePeriod)
    }

    /// Leases a connection on the server `lane` needs (``Configuration/laneHosts``) for the
    /// duration of `body`.
    ///
    /// A lane that prefers a standby gets one whose lag is within the bound, or the primary
    /// when no standby is usable (down, lagging, or failing with `databaseUnavailable`) or
    /// when the standbys' lane is full and the primary's has more room, or refuses the read
    /// before it waits (shed, overloaded, or a deadline it cannot meet there).
    /// With `readingAfter`, the standby must have replayed that position: the lease waits up
    /// to ``Configuration/readYourWritesWait`` for it, then runs on the primary instead; so
    /// `body` sees the write that returned the position. A position past the primary's last
    /// known one (a token from elsewhere, or forged) goes to the primary at once.
    ///
    /// - Parameters:
    ///   - lane: The kind of work.
    ///   - readingAfter: A position from a write this read must see; `nil` for none.
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Runs statements through the lease. It may run twice only in one case: never;
    ///     the choice of server is made before it starts.
    /// - Returns: What `body` returns.
    /// - Throws: As ``Lifeguard/ConnectionPool/withConnection(lane:fileID:line:function:isolation:_:)``.
    public func withConnection<Value: Sendable>(
        lane: Lane, readingAfter: WALPosition? = nil,
        fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function,
        _ body: (PostgresLease) async throws -> Value
    ) async throws -> Value {
        let requirement = self.configuration.laneHosts[lane] ?? .primary
        let onPrimary = { (lease: PostgresLease) async throws -> Value in
            self.counted(lease)
            return try await body(lease)
        }
        guard requirement != .primary, let standbys = self.standbys else {
            return try await self.primary.withConnection(lane: lane, fileID: fileID, line: line, function: function, onPrimary)
        }
        // A position past any the primary has reached (a forged token) cannot be replayed:
        // no standby is asked to wait for it.
        let unreachable = readingAfter.map { position in
            self.primaries.withLock { $0.position.map { position > $0 } ?? false }
        } ?? false
        if unreachable && requirement == .standby {
            throw self.noStandby(for: lane, readingAfter: readingAfter, in: standbys)
        }
        if requirement == .preferStandby && (unreachable || !self.goesToStandbys(lane: lane, leases: 1, standbys: standbys)) {
            return try await self.primary.withConnection(lane: lane, fileID: fileID, line: line, function: function, onPrimary)
        }
        let onStandby: Result<Value?, any Error> = await Self.outcome {
            try await standbys.withConnection(lane: lane, fileID: fileID, line: line, function: function) { lease -> Value? in
                guard Self.isUsable(lease, in: standbys) else { return nil }
                if let position = readingAfter, !(try await self.hasReplayed(position, on: lease)) { return nil }
                self.counted(lease)
                return try await body(lease)
            }
        }
        switch onStandby {
        case .success(let value?):
            return value
        case .success(nil) where requirement == .standby:
            throw self.noStandby(for: lane, readingAfter: readingAfter, in: standbys)
        case .success(nil):
            break
        case .failure(let error as LifeguardError) where requirement == .preferStandby && Self.primaryMayTake(error):
            break
        case .failure(let error):
            throw error
        }
        return try await self.primary.withConnection(lane: lane, fileID: fileID, line: line, function: function, onPrimary)
    }

    /// Runs `body` for each input on a connection of `lane`, at most `maxConcurrent` at a
    /// time, admitted or rejected as one request (``Lifeguard/ConnectionPool/fanOut(lane:maxConcurrent:_:fileID:line:function:_:)``),
    /// on the server the lane needs.
    ///
    /// A lane that prefers a standby runs on the standbys when one is usable and their lane
    /// has room for the request (or more than the primary's, as in ``withConnection(lane:readingAfter:fileID:line:function:_:)``); when a standby
    /// stops being usable mid-request (down, lagging, its role changed), the inputs not yet
    /// done run on the primary, so an input whose lease was cancelled on the standby may run
    /// again there: give it reads.
    ///
    /// - Parameters:
    ///   - lane: The lane of every lease.
    ///   - maxConcurrent: The most leases this request holds at once, at least 1.
    ///   - inputs: One lease runs for each.
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Uses the lease for one input.
    /// - Returns: The outputs, in the order of `inputs`.
    /// - Throws: As ``Lifeguard/ConnectionPool/fanOut(lane:maxConcurrent:_:fileID:line:function:_:)``.
    public func fanOut<Input: Sendable, Output: Sendable>(
        lane: Lane, maxConcurrent: Int, _ inputs: [Input],
        fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function,
        _ body: @escaping @Sendable (PostgresLease, Input) async throws -> Output
    ) async throws -> [Output] {
        let requirement = self.configuration.laneHosts[lane] ?? .primary
        let done = Mutex<[Int: Output]>([:])
        let run = { @Sendable (lease: PostgresLease, index: Int) async throws -> Void in
            self.counted(lease)
            let output = try await body(lease, inputs[index])
            done.withLock { $0[index] = output }
        }
        var remaining = Array(inputs.indices)
        if requirement != .primary, let standbys = self.standbys, requirement == .standby
            || self.goesToStandbys(lane: lane, leases: min(max(maxConcurrent, 1), inputs.count), standbys: standbys) {
            do {
                _ = try await standbys.fanOut(
                    lane: lane, maxConcurrent: maxConcurrent, remaining, fileID: fileID, line: line, function: function
                ) { lease, index in
                    guard Self.isUsable(lease, in: standbys) else {
                        throw StandbyNotUsable()
                    }
                    try await run(lease, index)
                }
            } catch is StandbyNotUsable where requirement == .standby {
                throw self.noStandby(for: lane, readingAfter: nil, in: standbys)
            } catch is StandbyNotUsable {
            } catch let error as LifeguardError where requirement == .preferStandby && Self.primaryMayTake(error) {
            }
            let finished = done.withLock { $0 }
            remaining.removeAll { finished[$0] != nil }
        }
        if !remaining.isEmpty {
            _ = try await self.primary.fanOut(
                lane: lane, maxConcurrent: maxConcurrent, remaining, fileID: fileID, line: line, function: function, run)
        }
        let outputs = done.withLock { $0 }
        return inputs.indices.map { outputs[$0]! }
    }

    /// Runs `body` in a transaction on the primary.
    ///
    /// - Parameters:
    ///   - lane: The kind of work (a lane of the primary pool).
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Runs statements inside the transaction.
    /// - Returns: What `body` returns, once committed.
    /// - Throws: As ``Lifeguard/ConnectionPool/withTransaction(lane:fileID:line:function:isolation:_:)``.
    public func withTransaction<Value: Sendable>(
        lane: Lane, fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function,
        _ body: (PostgresLease) async throws -> Value
    ) async throws -> Value {
        try await self.primary.withConnection(lane: lane, fileID: fileID, line: line, function: function) { lease in
            self.counted(lease)
            return try await self.primary.factory.inTransaction(on: lease, body)
        }
    }

    /// Runs `body` in a transaction on the primary and returns, with its value, the log
    /// position after its commit: pass it as `readingAfter` to a read that must see the write
    /// (in this request or a later one: its `description` is the token to carry).
    ///
    /// - Parameters:
    ///   - lane: The kind of work (a lane of the primary pool).
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Runs statements inside the transaction.
    /// - Returns: What `body` returns, once committed, and the position after the commit.
    /// - Throws: As ``withTransaction(lane:fileID:line:function:_:)``.
    public func withTransactionReturningPosition<Value: Sendable>(
        lane: Lane, fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function,
        _ body: (PostgresLease) async throws -> Value
    ) async throws -> (Value, WALPosition) {
        try await self.primary.withConnection(lane: lane, fileID: fileID, line: line, function: function) { lease in
            self.counted(lease)
            let value = try await self.primary.factory.inTransaction(on: lease, body)
            // The insert position: at or past the commit's end, whatever else committed since.
            let text = try await lease.query("SELECT pg_current_wal_insert_lsn()::text")[0].decode(String.self)
            guard let position = WALPosition(text) else {
                throw PostgresPoolError(code: .connectionLost, serverMessage: "the server's WAL position '\(text)' could not be read")
            }
            // The primary has reached it: reads after it may wait for standbys to replay it.
            self.primaries.withLock { primaries in
                primaries.position = max(primaries.position ?? position, position)
            }
            return (value, position)
        }
    }

    /// Each host as the cluster last saw it: its role, whether it is down and why, a standby's
    /// lag, and the leases the cluster ran on it.
    ///
    /// While a lane reads from standbys, the lag sampler also publishes them as metrics after
    /// each sample, with the cluster's `pool` name and the `host`: `lifeguard_host_available`
    /// (1 while it answers), `lifeguard_host_standby` (1 for a standby),
    /// `lifeguard_host_replication_lag_bytes`, `lifeguard_host_replication_lag_seconds`,
    /// `lifeguard_host_lagging` (1 while past ``Configuration/maximumLag``) and
    /// `lifeguard_host_leases_total`.
    public func hosts() -> [HostStatus] {
        let primaryEntries = self.primary.factory.hosts.withLock { $0.entries }
        let standbyEntries = self.standbys?.factory.hosts.withLock { $0.entries }
        let leases = self.leaseCounts.withLock { $0 }
        return primaryEntries.indices.map { index in
            let standby = standbyEntries?[index]
            // What the standby pool saw of a standby, what the primary pool saw of the rest.
            let seen = standby?.role?.inRecovery == true ? standby! : primaryEntries[index]
            return HostStatus(
                host: seen.host?.description ?? "unix socket",
                role: seen.role.map { $0.inRecovery ? "standby" : "primary" } ?? "unknown",
                downBecause: seen.downBecause, lag: standby?.lag, isLagging: standby?.isLagging ?? false,
                fencedBecause: primaryEntries[index].fencedBecause, leases: leases[index])
        }
    }

    /// Both pools' connections and queues, and the hosts (``hosts()``).
    public func status() -> Status {
        Status(primary: self.primary.status(), standbys: self.standbys?.status(), hosts: self.hosts())
    }

    /// Both pools' statistics (``Lifeguard/ConnectionPool/statistics()``), and the hosts.
    public func statistics() -> Statistics {
        Statistics(primary: self.primary.statistics(), standbys: self.standbys?.statistics(), hosts: self.hosts())
    }

    /// A snapshot of a cluster: its two pools and its hosts.
    public struct Status: Sendable, Hashable, CustomStringConvertible {
        /// The primary pool's connections and queues.
        public let primary: PoolStatus
        /// The standby pool's, when a lane reads from standbys.
        public let standbys: PoolStatus?
        /// Each host, in the order configured.
        public let hosts: [HostStatus]

        public var description: String {
            var lines = ["primary pool: \(self.primary)"]
            if let standbys = self.standbys { lines.append("standby pool: \(standbys)") }
            lines += self.hosts.map { "host \($0)" }
            return lines.joined(separator: "\n")
        }
    }

    /// A cluster's statistics: its two pools' and its hosts.
    public struct Statistics: Sendable, Hashable, Codable {
        /// The primary pool's.
        public let primary: PoolStatistics
        /// The standby pool's, when a lane reads from standbys.
        public let standbys: PoolStatistics?
        /// Each host, in the order configured.
        public let hosts: [HostStatus]
    }

    /// One host of a cluster, as last seen.
    public struct HostStatus: Sendable, Hashable, Codable, CustomStringConvertible {
        /// `name:port`.
        public let host: String
        /// `primary`, `standby`, or `unknown` before it answered.
        public let role: String
        /// Why its last connect failed, while it is down.
        public let downBecause: String?
        /// A standby's lag at its last sample.
        public let lag: ReplicationLag?
        /// Whether the lag is past the bound (the standby gets no reads).
        public let isLagging: Bool
        /// Why the host gets no writes although it is a primary: its timeline is older than
        /// another host's (a former primary that came back without rejoining as a standby).
        public let fencedBecause: String?
        /// Leases the cluster ran on the host since it started.
        public let leases: Int

        public var description: String {
            var text = "\(self.host) \(self.role)"
            if let reason = self.downBecause { text += ", down: \(reason)" }
            if let lag = self.lag {
                let milliseconds = lag.time.components.seconds &* 1_000 &+ lag.time.components.attoseconds / 1_000_000_000_000_000
                text += ", lag \(lag.bytes) bytes \(milliseconds) ms"
            }
            if self.isLagging { text += " (past the bound: no reads)" }
            if let reason = self.fencedBecause { text += ", fenced: \(reason)" }
            return text + ", \(self.leases) leases"
        }
    }

    /// Whether a request of `leases` leases of a lane that prefers a standby goes to the
    /// standbys: one is usable, and the standby pool's lane can take the leases without
    /// queueing, or it has at least as much room as the primary's (when both are full, the one
    /// whose queue is shorter for its limit). So reads fill the standbys first and spill onto
    /// the primary when the standbys' lane is full, never the reverse.
    private func goesToStandbys(lane: Lane, leases: Int, standbys: PostgresPool) -> Bool {
        guard standbys.factory.hosts.withLock({ $0.hasUsableStandby }) else { return false }
        let spare = standbys.spareLeases(in: lane)
        return spare >= leases || spare >= self.primary.spareLeases(in: lane)
    }

    /// Whether a read the standby pool refused may run on the primary: no standby answers, or
    /// the standbys' lane refused it before it waited (its queue's bound, or a wait predicted
    /// past the lane's budget or the request's deadline), which says nothing of the primary's.
    private static func primaryMayTake(_ error: LifeguardError) -> Bool {
        switch error.code {
        case .databaseUnavailable, .overloaded: true
        case .shed, .deadlineExceeded: error.expectedWait != nil
        default: false
        }
    }

    /// Whether the host of `lease`, a lease of the standby pool, may still serve reads: not
    /// down, lagging or fenced, and of the role the connection had.
    private static func isUsable(_ lease: PostgresLease, in standbys: PostgresPool) -> Bool {
        let origin = lease.connection.host
        return standbys.factory.hosts.withLock { $0.isUsable(origin.index, epoch: origin.epoch) }
    }

    /// A lease of a standby found its host no longer usable.
    private struct StandbyNotUsable: Error {}

    /// The error of a lane that needs a standby when none is usable.
    private func noStandby(for lane: Lane, readingAfter: WALPosition?, in standbys: PostgresPool) -> LifeguardError {
        let reason = readingAfter.map { "no standby replayed position \($0) within readYourWritesWait (\(self.configuration.readYourWritesWait))" }
            ?? "no standby is within the lag bound (maximumLag)"
        return LifeguardError.databaseUnavailable(
            lane: lane, waited: .zero, lastError: PostgresPoolError(code: .connectFailed, detail: reason, target: standbys.factory.target))
    }

    /// Counts a lease on its host.
    private func counted(_ lease: PostgresLease) {
        let index = lease.connection.host.index
        self.leaseCounts.withLock { if $0.indices.contains(index) { $0[index] += 1 } }
    }

    // MARK: - Lag

    /// Whether the standby behind `lease` has replayed `position`, waiting for it up to
    /// ``Configuration/readYourWritesWait``.
    private func hasReplayed(_ position: WALPosition, on lease: PostgresLease) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: self.configuration.readYourWritesWait)
        while true {
            let replayed = try await lease.query(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= \(position.description)::pg_lsn, false)")[0].decode(Bool.self)
            if replayed { return true }
            guard clock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Samples each standby's lag every ``Configuration/lagSampleInterval`` on a connection of
    /// its own, until the standby pool stops.
    private func sampleLag(of standbys: PostgresPool) async {
        let factory = standbys.factory
        let count = factory.hosts.withLock { $0.entries.count }
        await withDiscardingTaskGroup { group in
            for index in 0..<count {
                group.addTask { await self.sampleLag(ofHost: index, factory: factory) }
            }
        }
    }

    /// Samples one host until cancelled: its role, and for a primary its timeline and WAL
    /// position; for a standby its lag behind what it received and behind the newest
    /// primary's position (a standby cut off from its primary receives nothing, and falls
    /// behind the primary all the same). A primary on an older timeline than another's is
    /// fenced in the primary pool: after a failover, a former primary that comes back without
    /// rejoining gets no writes.
    private func sampleLag(ofHost index: Int, factory: PostgresConnectionFactory) async {
        let interval = self.configuration.lagSampleInterval
        let bound = self.configuration.maximumLag
        let host = factory.hosts.withLock { $0.entries[index].host }
        var monitor: PostgresConnection?
        var leasesPublished = 0
        let clock = ContinuousClock()
        // When the standby last had replayed what the primary had written a sample before:
        // behind since, it lags by that long (it may receive nothing, and have replayed nothing
        // to date).
        var caughtUp = clock.now
        while !Task.isCancelled {
            do {
                if monitor == nil || monitor?.isClosed == true {
                    monitor = try await factory.openConnection(to: host).0
                }
                let (sampled, earlier) = self.primaries.withLock { ($0.sampled?.description ?? "0/0", $0.earlier?.description ?? "0/0") }
                let row = try await monitor?.query(
                    """
                    SELECT in_recovery, read_only, position, timeline, received_behind, primary_behind, reached_earlier,
                           (CASE WHEN received_behind <= 0 THEN 0
                                 ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END)::float8
                    FROM (SELECT pg_is_in_recovery() AS in_recovery,
                                 current_setting('default_transaction_read_only') = 'on' AS read_only,
                                 CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS position,
                                 CASE WHEN pg_is_in_recovery() THEN NULL
                                      ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
                                 coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint AS received_behind,
                                 coalesce(pg_wal_lsn_diff(\(sampled)::pg_lsn, pg_last_wal_replay_lsn()), 0)::bigint AS primary_behind,
                                 coalesce(pg_last_wal_replay_lsn() >= \(earlier)::pg_lsn, true) AS reached_earlier
                         ) AS sample
                    """, logger: self.logger
                ).get().rows.first?.decode((Bool, Bool, String?, Int32?, Int64, Int64, Bool, Double).self)
                if let (inRecovery, readOnly, position, timeline, receivedBehind, primaryBehind, reachedEarlier, replayAge) = row {
                    // Caught up: it has replayed what the primary had one sample ago (a standby
                    // streaming normally has; one that receives nothing has not).
                    if primaryBehind <= 0 || reachedEarlier { caughtUp = clock.now }
                    let behindSince = primaryBehind > 0 ? caughtUp.duration(to: clock.now) : .zero
                    let replaying = Duration.milliseconds(Int64(max(0, min(replayAge, 1e9)) * 1_000))
                    let lag = inRecovery
                        ? ReplicationLag(bytes: max(0, receivedBehind, primaryBehind), time: max(behindSince, replaying)) : nil
                    factory.hosts.withLock {
                        $0.sampled(index, role: ServerRole(inRecovery: inRecovery, readOnlyByDefault: readOnly), lag: lag, bound: bound)
                    }
                    self.judgeTimeline(ofHost: index, timeline: timeline.map(Int.init), position: position.flatMap(WALPosition.init))
                }
            } catch {
                factory.hosts.withLock { $0.failed(index, because: PostgresPoolError.describe(error)) }
                try? await monitor?.close()
                monitor = nil
            }
            let status = self.hosts()[index]
            self.hostMetrics[index].publish(status, newLeases: status.leases - leasesPublished)
            leasesPublished = status.leases
            try? await Task.sleep(for: interval)
        }
        try? await monitor?.close()
    }

    /// Fences the host in the primary pool if it is a primary on a timeline older than the
    /// newest seen (a standby promoted since), unfences it otherwise; a primary on the newest
    /// timeline gives the position standbys' lag is measured against.
    private func judgeTimeline(ofHost index: Int, timeline: Int?, position: WALPosition?) {
        let newest = self.primaries.withLock { primaries -> Int in
            if let timeline, let position, timeline >= primaries.newestTimeline {
                if timeline > primaries.newestTimeline {
                    primaries = PrimaryKnowledge(newestTimeline: timeline)
                }
                primaries.earlier = primaries.sampled
                primaries.sampled = position
                primaries.position = max(primaries.position ?? position, position)
            }
            return primaries.newestTimeline
        }
        if let timeline, timeline < newest {
            let reason = "a primary on timeline \(timeline), behind timeline \(newest) of a promoted standby: a former primary that came back without rejoining (scripts/standby.sh rejoin, pg_rewind)"
            let isNew = self.primary.factory.hosts.withLock { hosts -> Bool in
                defer { hosts.fence(index, because: reason) }
                return hosts.entries[index].fencedBecause == nil
            }
            if isNew {
                self.logger.error("Lifeguard: two hosts take writes; the one on the older timeline gets none", metadata: [
                    "host": "\(self.primary.factory.target(ofHost: index))", "timeline": "\(timeline)", "newestTimeline": "\(newest)",
                ])
            }
        } else {
            self.primary.factory.hosts.withLock { $0.unfence(index) }
        }
    }

    private static func outcome<Value>(_ body: () async throws -> Value) async -> Result<Value, any Error> {
        do { return .success(try await body()) } catch { return .failure(error) }
    }
}
