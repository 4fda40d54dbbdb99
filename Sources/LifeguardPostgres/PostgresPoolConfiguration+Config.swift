import Configuration
import Foundation
import Lifeguard

extension PostgresPool.Configuration {
    /// Creates a configuration from swift-configuration's `ConfigReader`, as Hummingbird 2 apps
    /// are configured: environment variables, JSON or YAML files, command-line arguments, or
    /// several of them in order.
    ///
    /// The keys, with the environment variable `EnvironmentVariablesProvider` reads each from:
    ///
    /// | key | variable | what |
    /// |---|---|---|
    /// | `lifeguard.url` | `LIFEGUARD_URL` | the server, `postgres://user:password@host:port/database?…`; else `database.url` (`DATABASE_URL`) |
    /// | `lifeguard.name` | `LIFEGUARD_NAME` | ``Lifeguard/PoolConfiguration/name`` |
    /// | `lifeguard.applicationName` | `LIFEGUARD_APPLICATION_NAME` | ``applicationName`` |
    /// | `lifeguard.budget` | `LIFEGUARD_BUDGET` | ``budget`` |
    /// | `lifeguard.minimumIdle` | `LIFEGUARD_MINIMUM_IDLE` | ``Lifeguard/PoolConfiguration/minimumIdle`` |
    /// | `lifeguard.connectTimeoutMilliseconds` | `LIFEGUARD_CONNECT_TIMEOUT_MILLISECONDS` | ``connectTimeout`` |
    /// | `lifeguard.metricNames` | `LIFEGUARD_METRIC_NAMES` | `lifeguard`, `openTelemetry`, or both, comma-separated |
    /// | `lifeguard.recordsQueryText` | `LIFEGUARD_RECORDS_QUERY_TEXT` | ``recordsQueryText`` (`true` or `false`) |
    /// | `lifeguard.laneNames` | `LIFEGUARD_LANE_NAMES` | lanes besides `retrieval`, `write` and `generation`, comma-separated |
    /// | `lifeguard.lanes.<lane>.limit` | `LIFEGUARD_LANES_<LANE>_LIMIT` | the lane's ``Lifeguard/LaneConfiguration/limit`` |
    /// | `lifeguard.lanes.<lane>.reserved` | `LIFEGUARD_LANES_<LANE>_RESERVED` | its ``Lifeguard/LaneConfiguration/reserved`` |
    /// | `lifeguard.lanes.<lane>.waitTimeoutMilliseconds` | `LIFEGUARD_LANES_<LANE>_WAIT_TIMEOUT_MILLISECONDS` | its ``Lifeguard/LaneConfiguration/waitTimeout`` |
    /// | `lifeguard.lanes.<lane>.maxWaiters` | `LIFEGUARD_LANES_<LANE>_MAX_WAITERS` | its ``Lifeguard/LaneConfiguration/maxWaiters`` |
    ///
    /// What is not set keeps its default. The URL is read as a secret (an access reporter
    /// never logs it).
    ///
    /// ```swift
    /// let config = ConfigReader(provider: EnvironmentVariablesProvider())
    /// let pool = try PostgresPool(configuration: try .init(config: config), logger: logger)
    /// ```
    ///
    /// - Parameter config: The reader; the keys are read from its root.
    /// - Throws: ``Lifeguard/LifeguardError`` with code
    ///   ``Lifeguard/LifeguardError/Code/invalidConfiguration`` listing every problem at once: a
    ///   value that is not a number or not a known word, a missing or invalid URL, and whatever
    ///   ``validate()`` finds. A message names the key and its variable, and never the URL.
    public init(config: ConfigReader) throws(LifeguardError) {
        var problems: [String] = []
        let reader = ConfigSettingReader(config.scoped(to: "lifeguard"))
        let ownURL = reader.config.string(forKey: "url", isSecret: true)
        let url = ownURL ?? config.string(forKey: "database.url", isSecret: true)
        var configuration = PostgresPool.Configuration(host: "localhost", username: "postgres", password: nil, database: nil)
        if let url, !url.isEmpty {
            do {
                configuration = try PostgresPool.Configuration(url: url)
            } catch {
                let key = ownURL != nil ? "lifeguard.url (LIFEGUARD_URL)" : "database.url (DATABASE_URL)"
                problems += error.problems.map { "\(key): \($0)" }
                // The URL's password, to keep out of the other problems.
                configuration.password = URLComponents(string: url)?.password
            }
        } else {
            problems.append(
                "lifeguard.url (LIFEGUARD_URL) and database.url (DATABASE_URL) are not set; set one to postgres://user:password@host:port/database")
        }
        if let name = reader.string("name") { configuration.pool.name = name }
        if let name = reader.string("applicationName") { configuration.applicationName = name }
        if let budget = reader.integer("budget", &problems, in: 1...PoolConfiguration.largestBudget) { configuration.budget = budget }
        if let idle = reader.integer("minimumIdle", &problems, in: 0...PoolConfiguration.largestBudget) { configuration.pool.minimumIdle = idle }
        if let timeout = reader.integer("connectTimeoutMilliseconds", &problems, in: 1...Self.longestConnectTimeoutSeconds * 1_000) {
            configuration.connectTimeout = .milliseconds(timeout)
        }
        if let record = reader.boolean("recordsQueryText", &problems) { configuration.recordsQueryText = record }
        if let names = reader.list("metricNames") {
            var metricNames: MetricNames = []
            for name in names {
                switch name {
                case "lifeguard": metricNames.insert(.lifeguard)
                case "openTelemetry", "opentelemetry": metricNames.insert(.openTelemetry)
                default:
                    problems.append(
                        "\(reader.describe("metricNames")) names '\(Self.quoted(name))'; use lifeguard, openTelemetry, or both")
                }
            }
            configuration.pool.metricNames = metricNames
        }
        var lanes = configuration.lanes
        for name in reader.list("laneNames") ?? [] where !name.isEmpty {
            if lanes[Lane(name)] == nil { lanes[Lane(name)] = LaneConfiguration() }
        }
        for (lane, settings) in lanes {
            var settings = settings
            let key = "lanes.\(lane.name)"
            if let limit = reader.integer("\(key).limit", &problems, in: 1...PoolConfiguration.largestBudget) { settings.limit = limit }
            if let reserved = reader.integer("\(key).reserved", &problems, in: 0...PoolConfiguration.largestBudget) { settings.reserved = reserved }
            if let timeout = reader.integer("\(key).waitTimeoutMilliseconds", &problems, in: 1...Self.longestWaitTimeoutMilliseconds) {
                settings.waitTimeout = .milliseconds(timeout)
            }
            if let waiters = reader.integer("\(key).maxWaiters", &problems, in: 0...Int.max) { settings.maxWaiters = waiters }
            lanes[lane] = settings
        }
        configuration.lanes = lanes
        do {
            try configuration.validate()
        } catch {
            problems += error.problems
        }
        guard problems.isEmpty else { throw LifeguardError.invalidConfiguration(configuration.redactingPassword(in: problems)) }
        self = configuration
    }

    /// The longest `waitTimeoutMilliseconds` read: a day (a wait longer than that is a hang).
    static let longestWaitTimeoutMilliseconds = 86_400_000
}

/// Reads the settings of ``PostgresPool/Configuration/init(config:)`` under `lifeguard`,
/// telling a value that is not set from one that does not parse (the reader's own typed getters
/// return `nil` for both).
struct ConfigSettingReader {
    let config: ConfigReader

    init(_ config: ConfigReader) {
        self.config = config
    }

    /// The key as written in a file, and as an environment variable:
    /// `lifeguard.minimumIdle (LIFEGUARD_MINIMUM_IDLE)`.
    func describe(_ key: String) -> String {
        let variable = ("lifeguard." + key).split(separator: ".").map { component in
            var snake = ""
            var previous: Character?
            for character in component {
                if let previous, previous.isLowercase, character.isUppercase { snake.append("_") }
                snake.append(character.isLetter || character.isNumber ? Character(character.uppercased()) : "_")
                previous = character
            }
            return snake
        }.joined(separator: "_")
        return "lifeguard.\(key) (\(variable))"
    }

    func string(_ key: String) -> String? {
        self.config.string(forKey: ConfigKey(key))
    }

    func list(_ key: String) -> [String]? {
        self.config.stringArray(forKey: ConfigKey(key))?.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// The whole number at `key`, or `nil` when it is not set; one that does not parse, or
    /// lies outside `range`, is a problem (naming the key) and `nil`.
    func integer(_ key: String, _ problems: inout [String], in range: ClosedRange<Int>) -> Int? {
        if let value = self.config.int(forKey: ConfigKey(key)) {
            guard range.contains(value) else {
                let bound = value < range.lowerBound ? "at least \(range.lowerBound)" : "at most \(range.upperBound)"
                problems.append("\(self.describe(key)) is \(value); it must be \(bound)")
                return nil
            }
            return value
        }
        if let text = self.config.string(forKey: ConfigKey(key)) {
            problems.append("\(self.describe(key)) is '\(PostgresPool.Configuration.quoted(text))'; it must be a whole number")
        }
        return nil
    }

    func boolean(_ key: String, _ problems: inout [String]) -> Bool? {
        if let value = self.config.bool(forKey: ConfigKey(key)) { return value }
        if let text = self.config.string(forKey: ConfigKey(key)) {
            problems.append("\(self.describe(key)) is '\(PostgresPool.Configuration.quoted(text))'; it must be true or false")
        }
        return nil
    }
}
