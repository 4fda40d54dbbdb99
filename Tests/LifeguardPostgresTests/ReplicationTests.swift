import Foundation
import CoreMetrics
@testable import Lifeguard
@testable import LifeguardPostgres
import MetricsTestKit
import PostgresNIO
import Synchronization
import Testing

extension TestDatabase {
    /// A pool configuration for the servers at `urls` (one host each, in that order): the
    /// first URL's user, password and database, every URL's host and port.
    static func configuration(
        hostsOf urls: [String], application: String, budget: Int, target: PostgresPool.Configuration.TargetSessionAttributes
    ) throws -> PostgresPool.Configuration {
        var configuration = try PostgresPool.Configuration(url: urls[0])
        configuration.hosts = try urls.map { url in
            let server = try PostgresPool.Configuration(url: url)
            return .init(server.host ?? "", port: server.port)
        }
        configuration.targetSessionAttributes = target
        configuration.applicationName = application
        configuration.budget = budget
        configuration.hostRecheckInterval = .milliseconds(200)
        return configuration
    }

    /// How many backends of `application` the server at `url` has (its `pg_stat_activity`).
    static func backends(of application: String, at url: String) async throws -> Int {
        try await self.withObserver(of: url) { observer in
            try await observer.integer("SELECT count(*)::int FROM pg_stat_activity WHERE application_name = \(application)")
        }
    }
}

extension PostgresPoolTests {
    @Test("target_session_attrs=read-write with the standby listed first: every connection is on the primary (each server's pg_stat_activity)", .onServersOfItsOwn)
    func readWriteFindsThePrimary() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, _ in
            let configuration = try TestDatabase.configuration(hostsOf: [standby, primary], application: "lg-read-write", budget: 4, target: .readWrite)
            try await TestDatabase.withPool(configuration) { pool in
                try await pool.query("CREATE TABLE rw_probe (id int)", lane: .write)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for id in 0..<4 {
                        group.addTask {
                            try await pool.withConnection(lane: .write) { lease in
                                try await lease.execute("INSERT INTO rw_probe VALUES (\(id))")
                                try await lease.execute("SELECT pg_sleep(0.2)")
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                let onPrimary = try await TestDatabase.backends(of: "lg-read-write", at: primary)
                let onStandby = try await TestDatabase.backends(of: "lg-read-write", at: standby)
                print("read-write: \(onPrimary) backends on the primary, \(onStandby) on the standby")
                #expect(onPrimary >= 1)
                #expect(onStandby == 0)
            }
        }
    }

    @Test("prefer-standby reads on the standby; with the standby stopped they go to the primary, and back once it answers again", .onServersOfItsOwn)
    func preferStandbyFallsBack() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, control in
            let configuration = try TestDatabase.configuration(hostsOf: [primary, standby], application: "lg-prefer-standby", budget: 2, target: .preferStandby)
            try await TestDatabase.withPool(configuration) { pool in
                let first = try await pool.query("SELECT pg_is_in_recovery()", lane: .retrieval)[0].decode(Bool.self)
                #expect(first, "a read went to the primary while the standby answered")
                #expect(try await TestDatabase.backends(of: "lg-prefer-standby", at: primary) == 0)
                try control("standby.sh", "pause")
                try await TestDatabase.untilServes(pool)
                let during = try await pool.query("SELECT pg_is_in_recovery()", lane: .retrieval)[0].decode(Bool.self)
                #expect(!during, "with the standby down, the read must be served by the primary")
                try control("standby.sh", "resume")
            }
        }
    }

    @Test("a host that refuses is marked down after one failure: no request waits on it, and the pool serves from the other host")
    func refusingHostIsSkipped() async throws {
        let url = try #require(TestDatabase.url)
        var configuration = try TestDatabase.configuration(hostsOf: [url, url], application: "lg-host-down", budget: 2, target: .any)
        configuration.hosts[0].port = 1
        configuration.lanes[.retrieval] = .init(waitTimeout: .milliseconds(500))
        try await TestDatabase.withPool(configuration) { pool in
            var slowest = Duration.zero
            for _ in 0..<50 {
                let started = ContinuousClock.now
                try await pool.query("SELECT 1", lane: .retrieval)
                slowest = max(slowest, started.duration(to: .now))
            }
            print("with host 1 refusing: slowest of 50 reads \(slowest)")
            #expect(pool.factory.hosts.withLock { $0.entries[0].downBecause } != nil)
            #expect(try await TestDatabase.backends(of: "lg-host-down", at: TestDatabase.serverURL!) >= 1)
        }
    }

    @Test("a write refused as read-only (SQLSTATE 25006) retires the host's connections of the old role: the next connects find no read-write server and fail fast, until it takes writes again", .onServersOfItsOwn)
    func readOnlyRefusalRetiresConnections() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, _ in
            var configuration = try TestDatabase.configuration(hostsOf: [primary, standby], application: "lg-demoted", budget: 2, target: .readWrite)
            configuration.lanes[.write] = .init(waitTimeout: .milliseconds(500))
            try await TestDatabase.withPool(configuration) { pool in
                try await pool.query("CREATE TABLE demoted_writes (id int)", lane: .write)
                // The primary stops taking writes by default (what a demotion looks like to a
                // session that survives it).
                try await TestDatabase.withObserver(of: primary) { observer in
                    _ = try await observer.query("ALTER SYSTEM SET default_transaction_read_only = on", logger: TestDatabase.logger).get()
                    _ = try await observer.query("SELECT pg_reload_conf()", logger: TestDatabase.logger).get()
                }
                try await Task.sleep(for: .milliseconds(200))
                let refused = await outcome { try await pool.query("INSERT INTO demoted_writes VALUES (1)", lane: .write) }
                #expect(String(reflecting: refused.failure as Any).contains("25006"))
                // Its connection is closed at the lease's end; the next connects find no server
                // that takes writes (the standby neither) and the write fails fast.
                let started = ContinuousClock.now
                let next = await outcome { try await pool.query("INSERT INTO demoted_writes VALUES (2)", lane: .write) }
                let waited = started.duration(to: .now)
                print("after a 25006: the next write \(next.failure.map { String(String(describing: $0).prefix(200)) } ?? "succeeded") after \(waited)")
                #expect((next.failure as? LifeguardError)?.code == .databaseUnavailable)
                #expect(waited < .seconds(1))
                try await TestDatabase.withObserver(of: primary) { observer in
                    _ = try await observer.query("ALTER SYSTEM RESET default_transaction_read_only", logger: TestDatabase.logger).get()
                    _ = try await observer.query("SELECT pg_reload_conf()", logger: TestDatabase.logger).get()
                }
                try await TestDatabase.untilServes(pool)
                try await pool.query("INSERT INTO demoted_writes VALUES (3)", lane: .write)
            }
        }
    }

    @Test("failover: the primary stopped and the standby promoted under writes; writes fail fast in the gap, follow the new primary, and every acknowledged write is there", .onServersOfItsOwn)
    func failoverOnPromotion() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, control in
            try await TestDatabase.withObserver(of: primary) { observer in
                _ = try await observer.query("CREATE TABLE failover_writes (id int PRIMARY KEY)", logger: TestDatabase.logger).get()
            }
            var configuration = try TestDatabase.configuration(hostsOf: [primary, standby], application: "lg-failover", budget: 4, target: .readWrite)
            configuration.lanes[.write] = .init(waitTimeout: .milliseconds(500))
            configuration.pool.reconnectMaximumDelay = .milliseconds(200)
            let log = FailoverLog()
            try await TestDatabase.withPool(configuration) { pool in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for writer in 0..<4 {
                        group.addTask {
                            var next = writer
                            let end = ContinuousClock.now.advanced(by: .seconds(8))
                            while ContinuousClock.now < end {
                                let id = next
                                next += 4
                                let started = ContinuousClock.now
                                do {
                                    try await pool.withConnection(lane: .write) { lease in
                                        try await lease.execute("INSERT INTO failover_writes VALUES (\(id))")
                                    }
                                    log.acknowledged(id)
                                } catch {
                                    log.failed(after: started.duration(to: .now), error)
                                    try await Task.sleep(for: .milliseconds(20))
                                }
                            }
                        }
                    }
                    try await Task.sleep(for: .seconds(2))
                    try control("postgres.sh", "pause")
                    try control("standby.sh", "promote")
                    log.promoted()
                    try await group.waitForAll()
                }
            }
            let (written, afterPromotion, failed) = log.state.withLock { ($0.acknowledged, $0.acknowledgedAfterPromotion, $0.failures) }
            let counted = try await TestDatabase.withObserver(of: standby) { observer in
                try await observer.integer("SELECT count(*)::int FROM failover_writes WHERE id = ANY(\(written))")
            }
            let slowestFailure = failed.map(\.0).max() ?? .zero
            let kinds = Dictionary(grouping: failed.map(\.1), by: { String($0.prefix(100)) }).mapValues(\.count)
            print("failover: failures by kind: \(kinds)")
            print("failover: \(written.count) writes acknowledged (\(afterPromotion) after the promotion), \(counted) of them on the new primary; \(failed.count) failed, the slowest in \(slowestFailure); first failure: \(failed.first?.1 ?? "none")")
            #expect(counted == written.count, "acknowledged writes lost in the failover")
            #expect(afterPromotion > 0, "writes did not follow the new primary")
            #expect(slowestFailure < .seconds(2), "a write in the gap waited past its budget")
        }
    }
}

/// What the writers of the failover test saw.
private final class FailoverLog: Sendable {
    struct State {
        var acknowledged: [Int] = []
        var acknowledgedAfterPromotion = 0
        var isPromoted = false
        var failures: [(Duration, String)] = []
    }

    let state = Mutex(State())

    func acknowledged(_ id: Int) {
        self.state.withLock { state in
            state.acknowledged.append(id)
            if state.isPromoted { state.acknowledgedAfterPromotion += 1 }
        }
    }

    func failed(after duration: Duration, _ error: any Error) {
        self.state.withLock { $0.failures.append((duration, String(String(reflecting: error).prefix(160)))) }
    }

    func promoted() {
        self.state.withLock { $0.isPromoted = true }
    }
}

extension TestDatabase {
    /// Runs a cluster over `primary` and `standby` for the duration of `body`, then drains it.
    static func withCluster<Value>(
        primary: String, standby: String, application: String, budget: Int = 4,
        metricsFactory: (any MetricsFactory)? = nil,
        adjust: (inout PostgresCluster.Configuration) -> Void = { _ in },
        _ body: (PostgresCluster) async throws -> Value
    ) async throws -> Value {
        var pool = try self.configuration(hostsOf: [primary, standby], application: application, budget: budget, target: .any)
        pool.lanes[.retrieval] = .init(limit: budget - 1, waitTimeout: .seconds(2))
        pool.lanes[.write] = .init(waitTimeout: .seconds(2))
        var configuration = PostgresCluster.Configuration(pool: pool)
        configuration.lagSampleInterval = .milliseconds(50)
        adjust(&configuration)
        let cluster = try PostgresCluster(configuration: configuration, logger: logger, metricsFactory: metricsFactory)
        return try await self.running({ await cluster.run() }, shutdown: { cluster.shutdown(gracePeriod: $0) }) { try await body(cluster) }
    }

    /// Until `condition` holds, checking every 20 ms, at most `limit`.
    static func until(_ limit: Duration = .seconds(5), _ condition: () async throws -> Bool) async throws {
        let end = ContinuousClock.now.advanced(by: limit)
        while ContinuousClock.now < end {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("not within \(limit)")
    }
}

extension PostgresPoolTests {
    @Test("a cluster: .retrieval reads on the standby, .write on the primary (pg_is_in_recovery in each lease; backends counted on each server)", .onServersOfItsOwn)
    func clusterRoutesLanes() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, _ in
            try await TestDatabase.withCluster(primary: primary, standby: standby, application: "lg-cluster") { cluster in
                try await cluster.withTransaction(lane: .write) { lease in
                    try await lease.execute("CREATE TABLE cluster_docs (id int PRIMARY KEY, title text)")
                    #expect(try await !lease.query("SELECT pg_is_in_recovery()")[0].decode(Bool.self))
                }
                try await TestDatabase.until { cluster.hosts().contains { $0.role == "standby" && $0.lag != nil } }
                var onStandby = 0
                for _ in 0..<40 {
                    let inRecovery = try await cluster.withConnection(lane: .retrieval) { lease in
                        try await lease.query("SELECT pg_is_in_recovery()")[0].decode(Bool.self)
                    }
                    if inRecovery { onStandby += 1 }
                }
                let fannedOut = try await cluster.fanOut(lane: .retrieval, maxConcurrent: 3, Array(0..<6)) { lease, _ in
                    try await lease.query("SELECT pg_is_in_recovery()")[0].decode(Bool.self)
                }
                print("cluster: \(onStandby) of 40 reads on the standby, \(fannedOut.filter { $0 }.count) of a fan-out's 6; hosts \(cluster.hosts())")
                #expect(onStandby == 40)
                #expect(fannedOut == Array(repeating: true, count: 6))

                // The standbys' lane full (three sleeping reads, its limit): the next read spills
                // onto the primary at once instead of queueing.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<3 {
                        group.addTask { try await cluster.withConnection(lane: .retrieval) { try await $0.execute("SELECT pg_sleep(1)") } }
                    }
                    try await TestDatabase.until { cluster.standbys?.status().lanes[.retrieval]?.leased == 3 }
                    let started = ContinuousClock.now
                    let spilled = try await cluster.withConnection(lane: .retrieval) { lease in
                        try await lease.query("SELECT pg_is_in_recovery()")[0].decode(Bool.self)
                    }
                    let waited = started.duration(to: .now)
                    print("cluster: with the standbys' lane full, a read ran on the \(spilled ? "standby" : "primary") after \(waited)")
                    #expect(!spilled)
                    #expect(waited < .milliseconds(500))
                    try await group.waitForAll()
                }
                #expect(try await TestDatabase.backends(of: "lg-cluster", at: standby) >= 2)  // a reader and the lag sampler
            }
        }
    }

    @Test("a standby whose replay is paused (pg_wal_replay_pause) past the lag bound gets no reads until it catches up", .onServersOfItsOwn)
    func lagBoundSkipsStandby() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, _ in
            try await TestDatabase.withCluster(primary: primary, standby: standby, application: "lg-lag", adjust: {
                $0.maximumLag = .init(bytes: 1_024, time: .seconds(60))
            }) { cluster in
                try await cluster.withTransaction(lane: .write) { lease in try await lease.execute("CREATE TABLE lag_rows (id int)") }
                try await TestDatabase.until { cluster.hosts().contains { $0.role == "standby" && $0.lag != nil && !$0.isLagging } }
                try await TestDatabase.withObserver(of: standby) { observer in
                    _ = try await observer.query("SELECT pg_wal_replay_pause()", logger: TestDatabase.logger).get()
                }
                try await cluster.withTransaction(lane: .write) { lease in try await lease.execute("INSERT INTO lag_rows SELECT generate_series(1, 1000)") }
                try await TestDatabase.until { cluster.hosts().contains { $0.isLagging } }
                for _ in 0..<20 {
                    let count = try await cluster.withConnection(lane: .retrieval) { lease in
                        try await lease.query("SELECT count(*)::int FROM lag_rows")[0].decode(Int.self)
                    }
                    #expect(count == 1000, "a read went to the lagging standby")
                }
                let fannedOut = try await cluster.fanOut(lane: .retrieval, maxConcurrent: 3, Array(0..<6)) { lease, _ in
                    try await lease.query("SELECT count(*)::int FROM lag_rows")[0].decode(Int.self)
                }
                #expect(fannedOut == Array(repeating: 1000, count: 6), "a fan-out's read went to the lagging standby")
                try await TestDatabase.withObserver(of: standby) { observer in
                    _ = try await observer.query("SELECT pg_wal_replay_resume()", logger: TestDatabase.logger).get()
                }
                try await TestDatabase.until { !cluster.hosts().contains { $0.isLagging } }
                let inRecovery = try await cluster.withConnection(lane: .retrieval) { lease in
                    try await lease.query("SELECT pg_is_in_recovery()")[0].decode(Bool.self)
                }
                #expect(inRecovery, "reads did not return to the standby once it caught up")
            }
        }
    }

    @Test("read-your-writes: with the standby's replay paused, a read after a write (its position carried as a token) never sees the old value", .onServersOfItsOwn)
    func readYourWrites() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, _ in
            // The test server commits with synchronous_commit off: its WAL reaches the standby
            // when the WAL writer flushes it, within wal_writer_delay (200 ms).
            try await TestDatabase.withCluster(primary: primary, standby: standby, application: "lg-ryw", adjust: {
                $0.readYourWritesWait = .milliseconds(400)
            }) { cluster in
                try await cluster.withTransaction(lane: .write) { lease in
                    try await lease.execute("CREATE TABLE ryw (id int PRIMARY KEY, version int)")
                    try await lease.execute("INSERT INTO ryw VALUES (1, 0)")
                }
                try await TestDatabase.until { cluster.hosts().contains { $0.role == "standby" && $0.lag != nil && !$0.isLagging } }
                var onStandby = 0
                var stale = 0
                for version in 1...30 {
                    if version == 10 {
                        try await TestDatabase.withObserver(of: standby) { observer in
                            _ = try await observer.query("SELECT pg_wal_replay_pause()", logger: TestDatabase.logger).get()
                        }
                    }
                    let (_, written) = try await cluster.withTransactionReturningPosition(lane: .write) { lease in
                        try await lease.execute("UPDATE ryw SET version = \(version) WHERE id = 1")
                    }
                    let token = written.description
                    let (seen, inRecovery) = try await cluster.withConnection(lane: .retrieval, readingAfter: WALPosition(token)) { lease in
                        let row = try await lease.query("SELECT version, pg_is_in_recovery() FROM ryw WHERE id = 1")[0]
                        return try row.decode((Int, Bool).self)
                    }
                    if seen != version { stale += 1 }
                    if inRecovery { onStandby += 1 }
                }
                print("read-your-writes: 30 reads after writes, \(stale) stale, \(onStandby) served by the standby (replay paused from the 10th)")
                #expect(stale == 0)
                #expect(onStandby >= 5, "reads after writes were not served by the standby while it replayed")
                #expect(onStandby <= 9)
                try await TestDatabase.withObserver(of: standby) { observer in
                    _ = try await observer.query("SELECT pg_wal_replay_resume()", logger: TestDatabase.logger).get()
                }
            }
        }
    }

    @Test("a standby killed mid-run: reads move to the primary at once, and none fails", .onServersOfItsOwn)
    func standbyKilledMidRun() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, control in
            try await TestDatabase.withCluster(primary: primary, standby: standby, application: "lg-standby-killed") { cluster in
                try await TestDatabase.until { cluster.hosts().contains { $0.role == "standby" && $0.lag != nil } }
                var failures: [String] = []
                var onPrimaryAfterKill = 0
                for index in 0..<200 {
                    if index == 50 { try control("standby.sh", "crash") }
                    do {
                        let inRecovery = try await cluster.withConnection(lane: .retrieval) { lease in
                            try await lease.query("SELECT pg_is_in_recovery()")[0].decode(Bool.self)
                        }
                        if index > 50 && !inRecovery { onPrimaryAfterKill += 1 }
                    } catch {
                        failures.append(String(String(reflecting: error).prefix(200)))
                    }
                }
                print("standby killed: \(failures.count) of 200 reads failed \(failures.prefix(3)); \(onPrimaryAfterKill) of the 149 after on the primary")
                #expect(failures.count <= 2, "reads failed after the standby died")
                #expect(onPrimaryAfterKill >= 140)
            }
        }
    }

    @Test("a cluster's hosts in status(), statistics and metrics: leases per host as the servers report them, a paused standby's lag and ban, a stopped one down; the standby pool's metrics under its own name", .onServersOfItsOwn)
    func clusterHostsObserved() async throws {
        let metrics = TestMetrics()
        try await TestDatabase.withReplicatedServers { primary, standby, control in
            try await TestDatabase.withCluster(
                primary: primary, standby: standby, application: "lg-hosts", metricsFactory: metrics,
                adjust: { $0.maximumLag = .init(bytes: 64 << 10, time: .seconds(60)) }
            ) { cluster in
                let hosts = cluster.hosts().map(\.host)
                func gauge(_ label: String, _ host: Int) throws -> Double {
                    try metrics.expectGauge(label, [("pool", "lifeguard"), ("host", hosts[host])]).lastValue ?? -1
                }
                func leases(_ host: Int) throws -> Int64 {
                    try metrics.expectCounter("lifeguard_host_leases_total", [("pool", "lifeguard"), ("host", hosts[host])]).totalValue
                }
                try await TestDatabase.until { cluster.hosts().contains { $0.role == "standby" && $0.lag != nil && !$0.isLagging } }
                try await cluster.withTransaction(lane: .write) { lease in try await lease.execute("CREATE TABLE host_rows (id int)") }
                // Where each lease ran, as the server says: its port.
                var byPort: [Int: Int] = [:]
                for _ in 0..<12 {
                    let port = try await cluster.withConnection(lane: .retrieval) { lease in
                        try await lease.query("SELECT inet_server_port()")[0].decode(Int.self)
                    }
                    byPort[port, default: 0] += 1
                }
                for _ in 0..<5 {
                    let port = try await cluster.withTransaction(lane: .write) { lease in
                        try await lease.execute("INSERT INTO host_rows VALUES (1)")
                        return try await lease.query("SELECT inet_server_port()")[0].decode(Int.self)
                    }
                    byPort[port, default: 0] += 1
                }
                let primaryPort = try PostgresPool.Configuration(url: primary).port
                let standbyPort = try PostgresPool.Configuration(url: standby).port
                #expect(byPort[standbyPort] == 12)
                #expect(byPort[primaryPort] == 5)
                // The CREATE TABLE's lease too.
                #expect(cluster.hosts().map(\.leases) == [6, 12])
                try await TestDatabase.until { try leases(0) == 6 && leases(1) == 12 }
                #expect(try gauge("lifeguard_host_standby", 0) == 0)
                #expect(try gauge("lifeguard_host_standby", 1) == 1)
                #expect(try gauge("lifeguard_host_available", 1) == 1)
                #expect(try gauge("lifeguard_host_lagging", 1) == 0)
                cluster.standbys?.exportMetrics()
                let standbyGranted = try metrics.expectCounter(
                    "lifeguard_lease_outcomes_total", [("pool", "lifeguard-standbys"), ("lane", "retrieval"), ("outcome", "granted")])
                #expect(standbyGranted.totalValue == 12)

                // Replay paused and rows written: the standby's own view of its lag, against ours.
                try await TestDatabase.withObserver(of: standby) { observer in
                    _ = try await observer.query("SELECT pg_wal_replay_pause()", logger: TestDatabase.logger).get()
                }
                try await cluster.withTransaction(lane: .write) { lease in
                    try await lease.execute("INSERT INTO host_rows SELECT generate_series(1, 50000)")
                }
                try await TestDatabase.until { try gauge("lifeguard_host_lagging", 1) == 1 }
                try await Task.sleep(for: .milliseconds(300))
                let (behind, behindMilliseconds) = try await TestDatabase.withObserver(of: standby) { observer in
                    try await (observer.integer("SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int"),
                               observer.integer("SELECT coalesce((extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::int, -1)"))
                }
                let status = cluster.status()
                print("cluster status with replay paused (the standby says \(behind) bytes, \(behindMilliseconds) ms behind):\n\(status)")
                #expect(behind > 64 << 10)
                #expect(status.hosts[1].isLagging)
                #expect(status.hosts[1].lag.map { $0.bytes > 64 << 10 && $0.bytes <= Int64(behind) } == true)
                #expect(try gauge("lifeguard_host_replication_lag_bytes", 1) > Double(64 << 10))
                #expect(try gauge("lifeguard_host_replication_lag_seconds", 1) > 0.2)
                // How long it has been behind, against the age of its last replayed commit (when it
                // replayed one since it started): the same moment, give or take the insert's time.
                #expect(behindMilliseconds < 0 || status.hosts[1].lag.map { abs(Int($0.time.components.seconds * 1_000) + Int($0.time.components.attoseconds / 1_000_000_000_000_000) - behindMilliseconds) < 1_000 } == true)
                #expect(status.standbys != nil)
                let statistics = try JSONDecoder().decode(
                    PostgresCluster.Statistics.self, from: JSONEncoder().encode(cluster.statistics()))
                #expect(statistics.hosts.map(\.host) == hosts)
                #expect(statistics.hosts[1].isLagging)
                try await TestDatabase.withObserver(of: standby) { observer in
                    _ = try await observer.query("SELECT pg_wal_replay_resume()", logger: TestDatabase.logger).get()
                }
                try await TestDatabase.until { try gauge("lifeguard_host_lagging", 1) == 0 }

                // The standby stopped: down in status and metrics.
                try control("standby.sh", "stop")
                try await TestDatabase.until { try gauge("lifeguard_host_available", 1) == 0 }
                #expect(cluster.hosts()[1].downBecause != nil)
                #expect(try gauge("lifeguard_host_available", 0) == 1)
            }
        }
    }

    @Test("failover, then the old primary returns as a standby of the new one (scripts/standby.sh rejoin): the cluster reads from it and writes to the new primary, as each server reports", .onServersOfItsOwn)
    func oldPrimaryRejoinsAsStandby() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, control in
            let primaryPort = try PostgresPool.Configuration(url: primary).port
            let standbyPort = try PostgresPool.Configuration(url: standby).port
            try await TestDatabase.withCluster(primary: primary, standby: standby, application: "lg-rejoin", adjust: {
                $0.pool.pool.reconnectMaximumDelay = .milliseconds(200)
            }) { cluster in
                // Where a lease of `lane` runs, as its server says: "port standby" or "port primary".
                func whereRuns(_ lane: Lane) async throws -> String {
                    try await cluster.withConnection(lane: lane) { lease in
                        let (port, inRecovery) = try await lease.query("SELECT inet_server_port(), pg_is_in_recovery()")[0].decode((Int, Bool).self)
                        return "\(port) \(inRecovery ? "standby" : "primary")"
                    }
                }
                try await cluster.withTransaction(lane: .write) { lease in try await lease.execute("CREATE TABLE rejoin_rows (id int)") }
                try await TestDatabase.until { cluster.hosts().contains { $0.role == "standby" && $0.lag != nil } }
                #expect(try await whereRuns(.retrieval) == "\(standbyPort) standby")

                try control("postgres.sh", "pause")
                try control("standby.sh", "promote")
                try await TestDatabase.until(.seconds(10)) {
                    (try? await cluster.withTransaction(lane: .write) { lease in
                        try await lease.execute("INSERT INTO rejoin_rows VALUES (1)")
                        return try await lease.query("SELECT inet_server_port()")[0].decode(Int.self)
                    }) == standbyPort
                }
                // No standby: reads go to the new primary.
                #expect(try await whereRuns(.retrieval) == "\(standbyPort) primary")

                try control("standby.sh", "rejoin")
                try await TestDatabase.until(.seconds(10)) { (try? await whereRuns(.retrieval)).map { $0 == "\(primaryPort) standby" } ?? false }
                var onOldPrimary = 0
                for _ in 0..<20 {
                    if try await whereRuns(.retrieval) == "\(primaryPort) standby" { onOldPrimary += 1 }
                }
                let write = try await whereRuns(.write)
                let count = try await cluster.withConnection(lane: .retrieval) { lease in
                    try await lease.query("SELECT count(*)::int FROM rejoin_rows")[0].decode(Int.self)
                }
                print("rejoin: \(onOldPrimary) of 20 reads on the old primary, now a standby; writes on \(write); hosts \(cluster.hosts())")
                #expect(onOldPrimary == 20)
                #expect(write == "\(standbyPort) primary")
                #expect(count == 1, "the write made after the failover is not on the rejoined standby")
                #expect(cluster.hosts().map(\.role) == ["standby", "primary"])
            }
        }
    }

    @Test("a standby cut off from its primary (primary_conninfo emptied: it receives nothing) falls behind the primary's position and gets no reads once past the bound", .onServersOfItsOwn)
    func standbyCutOffIsLagging() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, _ in
            try await TestDatabase.withCluster(primary: primary, standby: standby, application: "lg-cut-off", adjust: {
                $0.maximumLag = .init(bytes: 16 << 20, time: .seconds(2))
            }) { cluster in
                try await cluster.withTransaction(lane: .write) { lease in
                    try await lease.execute("CREATE TABLE cut_off (id int PRIMARY KEY, v int)")
                    try await lease.execute("INSERT INTO cut_off VALUES (1, 0)")
                }
                try await TestDatabase.until { cluster.hosts().contains { $0.role == "standby" && $0.lag != nil && !$0.isLagging } }
                try await TestDatabase.withObserver(of: standby) { observer in
                    _ = try await observer.query("ALTER SYSTEM SET primary_conninfo = ''", logger: TestDatabase.logger).get()
                    _ = try await observer.query("SELECT pg_reload_conf()", logger: TestDatabase.logger).get()
                }
                try await TestDatabase.until {
                    try await TestDatabase.withObserver(of: standby) { try await $0.integer("SELECT count(*)::int FROM pg_stat_wal_receiver") } == 0
                }
                try await cluster.withTransaction(lane: .write) { lease in try await lease.execute("UPDATE cut_off SET v = 1 WHERE id = 1") }
                try await TestDatabase.until(.seconds(8)) { cluster.hosts()[1].isLagging }
                print("cut off: \(cluster.hosts())")
                var stale = 0
                for _ in 0..<20 {
                    let value = try await cluster.withConnection(lane: .retrieval) { lease in
                        try await lease.query("SELECT v FROM cut_off WHERE id = 1")[0].decode(Int.self)
                    }
                    if value != 1 { stale += 1 }
                }
                #expect(stale == 0, "reads went to the standby that receives nothing")
            }
        }
    }

    @Test("after a failover the old primary comes back as a primary, unfenced: it is fenced (older timeline), and every write goes to the promoted standby, as each server's rows say", .onServersOfItsOwn)
    func formerPrimaryIsFenced() async throws {
        try await TestDatabase.withReplicatedServers { primary, standby, control in
            let primaryPort = try PostgresPool.Configuration(url: primary).port
            let standbyPort = try PostgresPool.Configuration(url: standby).port
            try await TestDatabase.withCluster(primary: primary, standby: standby, application: "lg-fence", adjust: {
                $0.pool.pool.reconnectMaximumDelay = .milliseconds(200)
            }) { cluster in
                func write() async throws -> Int {
                    try await cluster.withTransaction(lane: .write) { lease in
                        try await lease.query("INSERT INTO fenced_writes VALUES (inet_server_port()) RETURNING port")[0].decode(Int.self)
                    }
                }
                try await cluster.withTransaction(lane: .write) { lease in try await lease.execute("CREATE TABLE fenced_writes (port int)") }
                try await TestDatabase.until { cluster.hosts().contains { $0.role == "standby" && $0.lag != nil } }
                try control("postgres.sh", "pause")
                try control("standby.sh", "promote")
                try await TestDatabase.until(.seconds(10)) { (try? await write()) == standbyPort }
                // The old primary starts again as it was: a primary, on the old timeline.
                try control("postgres.sh", "resume")
                try await TestDatabase.until(.seconds(10)) { cluster.hosts()[0].fencedBecause != nil }
                // New connections for every write: the cluster's on the new primary are ended.
                try await TestDatabase.withObserver(of: standby) { observer in
                    _ = try await observer.query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lg-fence'", logger: TestDatabase.logger
                    ).get()
                }
                var ports: [Int: Int] = [:]
                var failed = 0
                for _ in 0..<20 {
                    if let port = try? await write() { ports[port, default: 0] += 1 } else { failed += 1 }
                }
                let onOldPrimary = try await TestDatabase.withObserver(of: primary) { try await $0.integer("SELECT count(*)::int FROM fenced_writes") }
                print("fenced: writes by port \(ports), \(failed) failed; rows on the old primary \(onOldPrimary); hosts \(cluster.hosts())")
                #expect(ports[primaryPort] == nil, "writes went to the former primary")
                #expect(onOldPrimary == 0)
                #expect(ports[standbyPort, default: 0] >= 18)
                #expect(cluster.hosts()[0].fencedBecause?.contains("timeline 1") == true)
            }
        }
    }
}
