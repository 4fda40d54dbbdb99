import Configuration
import Lifeguard
import LifeguardPostgres
import Testing

@Suite("PostgreSQL configuration from swift-configuration (environment variables, files)")
struct ConfigReaderTests {
    func configuration(_ environment: [String: String]) throws(LifeguardError) -> PostgresPool.Configuration {
        try PostgresPool.Configuration(config: ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: environment)))
    }

    @Test("the documented variables set the URL, budget, lanes, timeouts, names and metrics; what is not set keeps its default")
    func environmentVariables() throws {
        let configuration = try self.configuration([
            "DATABASE_URL": "postgres://app:s3cret@db.internal:6432/rag",
            "LIFEGUARD_BUDGET": "24",
            "LIFEGUARD_NAME": "rag-pool",
            "LIFEGUARD_APPLICATION_NAME": "rag-api",
            "LIFEGUARD_MINIMUM_IDLE": "2",
            "LIFEGUARD_CONNECT_TIMEOUT_MILLISECONDS": "1500",
            "LIFEGUARD_METRIC_NAMES": "lifeguard, openTelemetry",
            "LIFEGUARD_RECORDS_QUERY_TEXT": "true",
            "LIFEGUARD_LANE_NAMES": "embeddings",
            "LIFEGUARD_LANES_RETRIEVAL_LIMIT": "16",
            "LIFEGUARD_LANES_WRITE_RESERVED": "4",
            "LIFEGUARD_LANES_WRITE_WAIT_TIMEOUT_MILLISECONDS": "250",
            "LIFEGUARD_LANES_EMBEDDINGS_MAX_WAITERS": "50",
        ])
        #expect(configuration.host == "db.internal")
        #expect(configuration.port == 6432)
        #expect(configuration.database == "rag")
        #expect(configuration.budget == 24)
        #expect(configuration.pool.name == "rag-pool")
        #expect(configuration.applicationName == "rag-api")
        #expect(configuration.pool.minimumIdle == 2)
        #expect(configuration.connectTimeout == .milliseconds(1_500))
        #expect(configuration.pool.metricNames == [.lifeguard, .openTelemetry])
        #expect(configuration.recordsQueryText)
        #expect(configuration.lanes[.retrieval]?.limit == 16)
        #expect(configuration.lanes[.write]?.reserved == 4)
        #expect(configuration.lanes[.write]?.waitTimeout == .milliseconds(250))
        #expect(configuration.lanes[Lane("embeddings")]?.maxWaiters == 50)
        #expect(configuration.lanes[.generation]?.limit == PostgresPool.Configuration(
            host: "h", username: "u", password: nil, database: nil).lanes[.generation]?.limit)
        // LIFEGUARD_URL comes first.
        let first = try self.configuration(["LIFEGUARD_URL": "postgres://a@one/x", "DATABASE_URL": "postgres://b@two/y"])
        #expect(first.host == "one")
    }

    @Test("every problem at once, each naming its key and variable, never the URL's password")
    func allProblemsAtOnce() {
        #expect {
            try self.configuration([
                "DATABASE_URL": "postgres://app:hunter2@db/rag?sslmode=sometimes",
                "LIFEGUARD_BUDGET": "twenty",
                "LIFEGUARD_LANES_RETRIEVAL_LIMIT": "0",
                "LIFEGUARD_RECORDS_QUERY_TEXT": "maybe",
                "LIFEGUARD_METRIC_NAMES": "statsd",
            ])
        } throws: { error in
            guard let error = error as? LifeguardError else { return false }
            let problems = error.problems.joined(separator: "\n")
            #expect(problems.contains("lifeguard.budget (LIFEGUARD_BUDGET) is 'twenty'; it must be a whole number"), "\(problems)")
            #expect(problems.contains("lifeguard.recordsQueryText (LIFEGUARD_RECORDS_QUERY_TEXT) is 'maybe'"), "\(problems)")
            #expect(problems.contains("lifeguard.metricNames (LIFEGUARD_METRIC_NAMES) names 'statsd'"), "\(problems)")
            #expect(problems.contains("sslmode"), "\(problems)")
            #expect(problems.contains("lifeguard.lanes.retrieval.limit (LIFEGUARD_LANES_RETRIEVAL_LIMIT) is 0; it must be at least 1"), "\(problems)")
            // The URL came from DATABASE_URL: its problems name that variable.
            #expect(problems.contains("database.url (DATABASE_URL): sslmode 'sometimes'"), "\(problems)")
            #expect(!problems.contains("hunter2") && !"\(error)".contains("hunter2"), "\(problems)")
            return error.code == .invalidConfiguration && error.problems.count >= 5
        }
        #expect {
            try self.configuration([:])
        } throws: { error in
            (error as? LifeguardError)?.problems.first?.contains("DATABASE_URL") == true
        }
    }

    @Test("a value out of range names its key and variable; the password pasted into another setting never shows")
    func rangesAndPasswordElsewhere() {
        #expect {
            try self.configuration([
                "LIFEGUARD_URL": "postgres://app:Secret99@db/rag?sslmode=Secret99&connect_timeout=Secret99",
                "LIFEGUARD_BUDGET": "Secret99",
                "LIFEGUARD_MINIMUM_IDLE": "-1",
                "LIFEGUARD_CONNECT_TIMEOUT_MILLISECONDS": "0",
                "LIFEGUARD_LANES_RETRIEVAL_WAIT_TIMEOUT_MILLISECONDS": "-5",
                "LIFEGUARD_LANES_WRITE_RESERVED": "-2",
                "LIFEGUARD_LANES_WRITE_MAX_WAITERS": "-3",
            ])
        } throws: { error in
            guard let error = error as? LifeguardError else { return false }
            let problems = error.problems.joined(separator: "\n")
            for expected in [
                "lifeguard.minimumIdle (LIFEGUARD_MINIMUM_IDLE) is -1; it must be at least 0",
                "lifeguard.connectTimeoutMilliseconds (LIFEGUARD_CONNECT_TIMEOUT_MILLISECONDS) is 0; it must be at least 1",
                "lifeguard.lanes.retrieval.waitTimeoutMilliseconds (LIFEGUARD_LANES_RETRIEVAL_WAIT_TIMEOUT_MILLISECONDS) is -5; it must be at least 1",
                "lifeguard.lanes.write.reserved (LIFEGUARD_LANES_WRITE_RESERVED) is -2; it must be at least 0",
                "lifeguard.lanes.write.maxWaiters (LIFEGUARD_LANES_WRITE_MAX_WAITERS) is -3; it must be at least 0",
                "lifeguard.url (LIFEGUARD_URL): sslmode '***'",
                "lifeguard.budget (LIFEGUARD_BUDGET) is '***'",
            ] {
                #expect(problems.contains(expected), "\(expected) in \(problems)")
            }
            #expect(!problems.contains("Secret99") && !"\(error)".contains("Secret99"), "\(problems)")
            return error.code == .invalidConfiguration
        }
    }

    @Test("a URL whose password also stands in an option never shows it in the problems")
    func urlPasswordInAnOption() {
        #expect {
            try PostgresPool.Configuration(url: "postgres://u:Secret99@127.0.0.1:5432/db?sslmode=Secret99&connect_timeout=Secret99&Secret99=1")
        } throws: { error in
            guard let error = error as? LifeguardError else { return false }
            return error.problems.count == 3 && !"\(error)".contains("Secret99") && !error.problems.joined().contains("Secret99")
        }
    }

    @Test("a file's values (any provider) use the same keys")
    func inMemoryProvider() throws {
        let reader = ConfigReader(provider: InMemoryProvider(values: [
            "lifeguard.url": ConfigValue(.string("postgres://app@db/rag"), isSecret: true),
            "lifeguard.budget": 12,
            "lifeguard.lanes.write.waitTimeoutMilliseconds": 900,
        ]))
        let configuration = try PostgresPool.Configuration(config: reader)
        #expect(configuration.budget == 12)
        #expect(configuration.lanes[.write]?.waitTimeout == .milliseconds(900))
    }
}
