import Foundation
import Lifeguard
@testable import LifeguardPostgres
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
    @Test("target_session_attrs=read-write with the standby listed first: every connection is on the primary (each server's pg_stat_activity)")
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

    @Test("prefer-standby reads on the standby; with the standby stopped they go to the primary, and back once it answers again")
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
            #expect(try await TestDatabase.backends(of: "lg-host-down", at: url) >= 1)
        }
    }

    @Test("a write refused as read-only (SQLSTATE 25006) retires the host's connections of the old role: the next connects find no read-write server and fail fast, until it takes writes again")
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

    @Test("failover: the primary stopped and the standby promoted under writes; writes fail fast in the gap, follow the new primary, and every acknowledged write is there")
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
