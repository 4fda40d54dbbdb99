import Lifeguard
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle
import Synchronization

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

    /// Creates a cluster. It opens no connection until `run()` runs.
    ///
    /// - Parameters:
    ///   - configuration: Hosts, budget per host, lanes, and which lanes read from standbys.
    ///   - eventLoopGroup: Where connections run. Default: NIO's shared group.
    ///   - logger: Receives connection failures, role changes and the pools' lifecycle.
    /// - Throws: ``Lifeguard/LifeguardError/Code/invalidConfiguration`` listing every problem.
    public init(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) throws(LifeguardError) {
        var problems = configuration.problems()
        do { try configuration.pool.validate() } catch { problems += error.problems }
        guard problems.isEmpty else { throw LifeguardError.invalidConfiguration(problems) }
        self.configuration = configuration
        self.logger = logger
        var primary = configuration.pool
        primary.targetSessionAttributes = .readWrite
        self.primary = try PostgresPool(configuration: primary, eventLoopGroup: eventLoopGroup, logger: logger)
        let standbyLanes = configuration.laneHosts.filter { $0.value != .primary }.map(\.key)
        if standbyLanes.isEmpty {
            self.standbys = nil
        } else {
            var standbys = configuration.pool
            standbys.targetSessionAttributes = .standby
            standbys.applicationName = configuration.pool.applicationName
            // One connection of each standby's budget samples its lag.
            standbys.budget = configuration.pool.budget - 1
            // The reading lanes only, none reserving (reservations are the primary pool's).
            var reading: [Lane: LaneConfiguration] = [:]
            for lane in standbyLanes {
                guard var settings = configuration.pool.lanes[lane] else { continue }
                settings.reserved = 0
                settings.limit = min(settings.limit ?? standbys.budget, standbys.budget)
                reading[lane] = settings
            }
            standbys.lanes = reading
            self.standbys = try PostgresPool(configuration: standbys, eventLoopGroup: eventLoopGroup, logger: logger)
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
    /// when no standby is usable (down, lagging, or failing with `databaseUnavailable`).
    /// With `readingAfter`, the standby must have replayed that position: the lease waits up
    /// to ``Configuration/readYourWritesWait`` for it, then runs on the primary instead; so
    /// `body` sees the write that returned the position.
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
        guard requirement != .primary, let standbys = self.standbys else {
            return try await self.primary.withConnection(lane: lane, fileID: fileID, line: line, function: function, body)
        }
        if requirement == .preferStandby && !standbys.factory.hosts.withLock({ $0.hasUsableStandby }) {
            return try await self.primary.withConnection(lane: lane, fileID: fileID, line: line, function: function, body)
        }
        let onStandby: Result<Value?, any Error> = await Self.outcome {
            try await standbys.withConnection(lane: lane, fileID: fileID, line: line, function: function) { lease -> Value? in
                let origin = lease.connection.host
                guard standbys.factory.hosts.withLock({ $0.isUsable(origin.index, epoch: origin.epoch) }) else { return nil }
                if let position = readingAfter, !(try await self.hasReplayed(position, on: lease)) { return nil }
                return try await body(lease)
            }
        }
        switch onStandby {
        case .success(let value?):
            return value
        case .success(nil) where requirement == .standby:
            let reason = readingAfter.map { "no standby replayed position \($0) within readYourWritesWait (\(self.configuration.readYourWritesWait))" }
                ?? "no standby is within the lag bound (maximumLag)"
            throw LifeguardError.databaseUnavailable(
                lane: lane, waited: .zero, lastError: PostgresPoolError(code: .connectFailed, detail: reason, target: standbys.factory.target))
        case .success(nil):
            break
        case .failure(let error as LifeguardError) where error.code == .databaseUnavailable && requirement == .preferStandby:
            break
        case .failure(let error):
            throw error
        }
        return try await self.primary.withConnection(lane: lane, fileID: fileID, line: line, function: function, body)
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
        try await self.primary.withTransaction(lane: lane, fileID: fileID, line: line, function: function, body)
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
            let value = try await self.primary.factory.inTransaction(on: lease, body)
            // The insert position: at or past the commit's end, whatever else committed since.
            let text = try await lease.query("SELECT pg_current_wal_insert_lsn()::text")[0].decode(String.self)
            guard let position = WALPosition(text) else {
                throw PostgresPoolError(code: .connectionLost, serverMessage: "the server's WAL position '\(text)' could not be read")
            }
            return (value, position)
        }
    }

    /// Each host as the cluster last saw it: its role, whether it is down and why, and a
    /// standby's lag.
    public func hosts() -> [HostStatus] {
        let primaryEntries = self.primary.factory.hosts.withLock { $0.entries }
        let standbyEntries = self.standbys?.factory.hosts.withLock { $0.entries }
        return primaryEntries.indices.map { index in
            let standby = standbyEntries?[index]
            // What the standby pool saw of a standby, what the primary pool saw of the rest.
            let seen = standby?.role?.inRecovery == true ? standby! : primaryEntries[index]
            return HostStatus(
                host: seen.host?.description ?? "unix socket",
                role: seen.role.map { $0.inRecovery ? "standby" : "primary" } ?? "unknown",
                downBecause: seen.downBecause, lag: standby?.lag, isLagging: standby?.isLagging ?? false)
        }
    }

    /// One host of a cluster, as last seen.
    public struct HostStatus: Sendable, Hashable {
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

    private func sampleLag(ofHost index: Int, factory: PostgresConnectionFactory) async {
        let interval = self.configuration.lagSampleInterval
        let bound = self.configuration.maximumLag
        let host = factory.hosts.withLock { $0.entries[index].host }
        var monitor: PostgresConnection?
        while !Task.isCancelled {
            do {
                if monitor == nil || monitor?.isClosed == true {
                    monitor = try await factory.openConnection(to: host).0
                }
                let row = try await monitor?.query(
                    """
                    SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on',
                           coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint,
                           (CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                                 ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END)::float8
                    """, logger: self.logger
                ).get().rows.first?.decode((Bool, Bool, Int64, Double).self)
                if let (inRecovery, readOnly, bytes, seconds) = row {
                    let milliseconds = Int64(max(0, min(seconds, 1e9)) * 1_000)
                    let lag = inRecovery ? ReplicationLag(bytes: max(0, bytes), time: .milliseconds(milliseconds)) : nil
                    factory.hosts.withLock {
                        $0.sampled(index, role: ServerRole(inRecovery: inRecovery, readOnlyByDefault: readOnly), lag: lag, bound: bound)
                    }
                }
            } catch {
                factory.hosts.withLock { $0.failed(index, because: PostgresPoolError.describe(error)) }
                try? await monitor?.close()
                monitor = nil
            }
            try? await Task.sleep(for: interval)
        }
        try? await monitor?.close()
    }

    private static func outcome<Value>(_ body: () async throws -> Value) async -> Result<Value, any Error> {
        do { return .success(try await body()) } catch { return .failure(error) }
    }
}
