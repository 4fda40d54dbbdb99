import Lifeguard
@testable import LifeguardPostgres
import Testing

@Suite("PostgreSQL configuration: several hosts, libpq's URL syntax")
struct HostListConfigurationTests {
    @Test("a URL lists several hosts, each with its port or 5432, IPv6 in brackets; target_session_attrs and load_balance_hosts are read")
    func hostList() throws {
        let configuration = try PostgresPool.Configuration(
            url: "postgres://app:pw@db1:5433,[::1],db3:6000/app?target_session_attrs=read-write&load_balance_hosts=random")
        #expect(configuration.hosts == [.init("db1", port: 5433), .init("::1", port: 5432), .init("db3", port: 6000)])
        #expect(configuration.host == "db1")
        #expect(configuration.port == 5433)
        #expect(configuration.targetSessionAttributes == .readWrite)
        #expect(configuration.loadBalanceHosts == .random)
        #expect(configuration.password == "pw")
        #expect(configuration.database == "app")
        #expect(configuration.description.contains("db1:5433,[::1]:5432,db3:6000"))
        #expect(configuration.description.contains("target_session_attrs=read-write"))
        #expect(!configuration.description.contains("pw"))
    }

    @Test("one host keeps today's defaults: any server, hosts in order")
    func oneHost() throws {
        let configuration = try PostgresPool.Configuration(url: "postgres://app@db/app")
        #expect(configuration.hosts == [.init("db", port: 5432)])
        #expect(configuration.targetSessionAttributes == .any)
        #expect(configuration.loadBalanceHosts == .disable)
    }

    @Test("every target_session_attrs of libpq is read", arguments: [
        ("any", PostgresPool.Configuration.TargetSessionAttributes.any), ("read-write", .readWrite), ("read-only", .readOnly),
        ("primary", .primary), ("standby", .standby), ("prefer-standby", .preferStandby),
    ])
    func targets(written: String, expected: PostgresPool.Configuration.TargetSessionAttributes) throws {
        let configuration = try PostgresPool.Configuration(url: "postgres://app@a,b/app?target_session_attrs=\(written)")
        #expect(configuration.targetSessionAttributes == expected)
        #expect(expected.rawValue == written)
    }

    @Test("a bad host list is refused, every problem at once and none quoting the password")
    func badHostList() {
        do {
            _ = try PostgresPool.Configuration(
                url: "postgres://app:hunter2@db1:0,,db3:99999,[::1/app?target_session_attrs=writable&load_balance_hosts=sometimes")
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .invalidConfiguration)
            let text = String(describing: error)
            #expect(text.contains("port '0'"))
            #expect(text.contains("empty host"))
            #expect(text.contains("port '99999'"))
            #expect(text.contains("'[::1'"))
            #expect(text.contains("target_session_attrs 'writable'"))
            #expect(text.contains("load_balance_hosts 'sometimes'"))
            #expect(!text.contains("hunter2"))
        }
    }

    @Test("hosts set in code are checked like the URL's: ports, empty names, at most 64 hosts")
    func hostsInCode() {
        var configuration = PostgresPool.Configuration(host: "a", username: "u", password: nil, database: nil)
        configuration.hosts = [.init("a", port: 5432), .init("", port: 5432), .init("c", port: 70_000)]
        #expect(throws: LifeguardError.self) { try configuration.validate() }
        configuration.hosts = (0..<65).map { .init("h\($0)", port: 5432) }
        #expect(throws: LifeguardError.self) { try configuration.validate() }
        // A host listed twice would get the budget twice.
        configuration.hosts = [.init("a", port: 5432), .init("b", port: 5433), .init("A", port: 5432)]
        #expect { try configuration.validate() } throws: { error in
            String(describing: error).contains("host A:5432 is listed twice")
        }
        #expect(throws: LifeguardError.self) { try PostgresPool.Configuration(url: "postgres://u@db1,db2,db1/app") }
        configuration.hosts = [.init("a", port: 5432), .init("b", port: 5433), .init("a", port: 5433)]
        #expect(throws: Never.self) { try configuration.validate() }
        configuration.hosts = [.init("a", port: 5432), .init("b", port: 5433)]
        #expect(configuration.host == "a")
        configuration.port = 6000
        #expect(configuration.hosts == [.init("a", port: 6000), .init("b", port: 5433)])
    }
}

@Suite("A cluster's settings and its read-your-writes token")
struct ClusterConfigurationTests {
    @Test("a WAL position reads back from its token; anything else a client sends is refused", arguments: [
        "", "/", "0/", "/0", "1/2/3", "G/0", "123456789/0", "0/123456789", " 0/1", "0/1 ", "-1/0", "0x1/0", "💥/1",
        "+1/+1", "-0/0", "+0/0", "１/２", "٣/٣",
    ])
    func hostileTokens(token: String) {
        #expect(WALPosition(token) == nil)
    }

    @Test("a WAL position's token round-trips and orders as the log does")
    func tokens() throws {
        let position = try #require(WALPosition("16/B374D848"))
        #expect(position.bytes == 0x16_B374_D848)
        #expect(position.description == "16/B374D848")
        #expect(WALPosition(position.description) == position)
        #expect(try #require(WALPosition("0/FFFFFFFF")) < #require(WALPosition("1/0")))
        #expect(WALPosition(bytes: .max).description == "FFFFFFFF/FFFFFFFF")
    }

    @Test("bad cluster settings are refused at construction, all at once")
    func badSettings() throws {
        var pool = try PostgresPool.Configuration(url: "postgres://u@a,b/d")
        pool.budget = 1
        var configuration = PostgresCluster.Configuration(pool: pool)
        configuration.laneHosts[Lane("nowhere")] = .standby
        configuration.maximumLag = .init(bytes: -1, time: .seconds(1))
        configuration.lagSampleInterval = .zero
        configuration.readYourWritesWait = .seconds(-1)
        do {
            _ = try PostgresCluster(configuration: configuration, logger: .init(label: "test"))
            Issue.record("expected invalidConfiguration")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect(error.problems.count == 5, "\(error.problems)")
        }
    }
}
