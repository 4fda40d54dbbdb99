import Configuration
import Foundation
import Lifeguard
import NIOSSL
import PostgresNIO

typealias PostgresConnectionTLS = PostgresConnection.Configuration.TLS

extension PostgresPool {
    /// How to connect to PostgreSQL, and the pool's budget and lanes.
    ///
    /// Build it from a `postgres://` URL or the `DATABASE_URL` environment variable, then adjust
    /// the pool settings:
    ///
    /// ```swift
    /// var configuration = try PostgresPool.Configuration(url: "postgres://app:secret@db:5432/app?sslmode=verify-full")
    /// configuration.budget = 20
    /// configuration.lanes[.retrieval] = .init(reserved: 8, limit: 16)
    /// ```
    ///
    /// The password never appears in ``description``, in logs or in errors.
    public struct Configuration: Sendable, CustomStringConvertible {
        /// How to use TLS, with libpq's `sslmode` names.
        public enum TLSMode: String, Sendable, Hashable, CaseIterable {
            /// No TLS.
            case disable
            /// TLS if the server offers it, without verifying its certificate; plain otherwise.
            case prefer
            /// TLS, without verifying the server's certificate (unless `sslrootcert` is given,
            /// which makes it `verify-ca`, as libpq does).
            case require
            /// TLS, and the certificate must be signed by a trusted authority.
            case verifyCA = "verify-ca"
            /// TLS, a trusted certificate, and it must name the host. Use this across networks.
            case verifyFull = "verify-full"
        }

        /// The server's host name or IP address; `nil` when connecting through a Unix socket.
        /// With several hosts, the first (see ``hosts``).
        public var host: String?
        /// The server's port. Default: 5432. With several hosts, the first's.
        public var port: Int
        /// The hosts after the first, tried in order after it (see ``hosts``). Default: none.
        public var otherHosts: [Host] = []
        /// Which servers a connection may be opened to, with libpq's `target_session_attrs`
        /// names. Each new connection goes to the first host (in ``hosts`` order, or random
        /// with ``loadBalanceHosts``) whose server is of that kind; a host that refuses or does
        /// not answer is marked down and tried again only by a background probe, so no request
        /// waits on it. Default: ``TargetSessionAttributes/any``.
        public var targetSessionAttributes: TargetSessionAttributes = .any
        /// The order hosts are tried in. Default: ``LoadBalanceHosts/disable``, as listed.
        public var loadBalanceHosts: LoadBalanceHosts = .disable
        /// How often a host marked down is probed (a connection opened and closed), so that it
        /// is used again once it answers. Default: 2 s.
        public var hostRecheckInterval: Duration = .seconds(2)
        /// The folder of the server's Unix socket, used instead of `host` when set.
        public var unixSocketDirectory: String?
        /// The user to log in as.
        public var username: String
        /// The password, if the server asks for one. Never printed.
        public var password: String?
        /// Supplies the password at each connect, for credentials that change while the pool
        /// runs (short-lived tokens, rotated secrets): when set, it is called for every new
        /// connection and ``password`` is not used. Connections already open stay as they are;
        /// `maxLifetime` bounds how long they live. An error it throws fails that connect (the
        /// pool reports the database unavailable and retries with backoff); it must not carry
        /// the password.
        public var passwordProvider: (@Sendable () async throws -> String)?
        /// The database; `nil` uses the server's default (the user's name).
        public var database: String?
        /// TLS mode. Default: ``TLSMode/prefer``, as libpq.
        public var tlsMode: TLSMode
        /// A file of trusted root certificates (PEM) for ``TLSMode/verifyCA`` and
        /// ``TLSMode/verifyFull``; `nil` uses the system's.
        public var tlsRootCertificatePath: String?
        /// The `application_name` the server shows for our connections in
        /// `pg_stat_activity`. Default: `lifeguard`.
        public var applicationName: String
        /// How long opening a connection may take. Default: 10 s.
        public var connectTimeout: Duration
        /// Whether cancelling a task cancels its running query on the server, so that the
        /// connection is free at once instead of when the query ends. Sent as the protocol's
        /// CancelRequest with the session's key: it takes no connection of the ``budget``, and
        /// behind PgBouncer it reaches only our own statement. Default: true.
        ///
        /// Either way, the pool cancels a statement whose result nobody will read: a result
        /// stream a lease stopped reading, a connection it closes while a statement runs.
        public var serverSideCancellation: Bool
        /// How long closing a connection waits for the server to end its backend (the server
        /// closes the socket once the backend is gone). Until then the connection still counts
        /// in the budget, so that the server never holds more backends than the budget. Past
        /// it the socket is closed anyway and a warning logged. Default: 30 s.
        public var backendExitTimeout: Duration
        /// How the pool makes sure that a lease inherits nothing of the session of the lease
        /// before it. Default: ``SessionReset/whenStatementsChangeIt``.
        public var sessionReset: SessionReset = .whenStatementsChangeIt
        /// Whether a statement's span carries its text (`db.query.text`). Parameters are sent
        /// apart from the text and never recorded, but a text built by hand may hold values.
        /// Default: `false`.
        public var recordsQueryText = false
        /// Budget, lanes, and connection health settings of the pool.
        public var pool: PoolConfiguration

        /// The number of connections this process may open to the server. Same as `pool.budget`.
        public var budget: Int {
            get { self.pool.budget }
            set { self.pool.budget = newValue }
        }

        /// The lanes and their limits. Same as `pool.lanes`.
        public var lanes: [Lane: LaneConfiguration] {
            get { self.pool.lanes }
            set { self.pool.lanes = newValue }
        }

        /// Creates a configuration for a TCP server.
        ///
        /// - Parameters:
        ///   - host: The server's host name or address.
        ///   - port: The server's port. Default: 5432.
        ///   - username: The user to log in as.
        ///   - password: The password, if any.
        ///   - database: The database, or `nil` for the user's default.
        ///   - tlsMode: TLS mode. Default: ``TLSMode/prefer``.
        public init(host: String, port: Int = 5432, username: String, password: String?, database: String?, tlsMode: TLSMode = .prefer) {
            self.host = host
            self.port = port
            self.unixSocketDirectory = nil
            self.username = username
            self.password = password
            self.passwordProvider = nil
            self.database = database
            self.tlsMode = tlsMode
            self.tlsRootCertificatePath = nil
            self.applicationName = "lifeguard"
            self.connectTimeout = .seconds(10)
            self.serverSideCancellation = true
            self.backendExitTimeout = .seconds(30)
            self.pool = PoolConfiguration()
        }

        /// Creates a configuration from a `postgres://` or `postgresql://` URL.
        ///
        /// `postgres://user:password@host:port/database?sslmode=verify-full&application_name=api`.
        /// Several hosts are listed as libpq lists them: `postgres://u:p@h1:5432,h2:5433/db`.
        /// Query options: `sslmode` (disable, allow, prefer, require, verify-ca, verify-full),
        /// `sslrootcert` (a PEM file), `application_name`, `connect_timeout` (seconds), `host`
        /// (a Unix socket folder, for URLs without a host), `target_session_attrs` (see
        /// ``targetSessionAttributes``) and `load_balance_hosts` (disable, random). Percent-encoded user names
        /// and passwords are decoded; a `/`, `?`, `#` or `@` in them, or an `@` in the database
        /// name or an option, must be percent-encoded (`%2F`, `%3F`, `%23`, `%40`).
        ///
        /// - Parameter url: The URL.
        /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``
        ///   listing every problem of the URL; the password is never part of it.
        public init(url: String) throws(LifeguardError) {
            var problems: [String] = []
            // An '@' past the host part is a password (or user name) holding a '/', '?' or '#'
            // that was not percent-encoded: what follows it would be read as the host, the
            // database or an option, and quoted as one (found by the URL fuzz target). Not
            // parsed further: any part may hold the password.
            if Self.hasAtSignAfterAuthority(url) {
                throw LifeguardError.invalidConfiguration([
                    "the database URL has an '@' after its host part: percent-encode a '/', '?', '#' or '@' in the user name, password or options (%2F, %3F, %23, %40)"
                ])
            }
            // libpq's list of hosts (`h1:5432,h2:5433`): read here, URLComponents gets the URL
            // with one placeholder host in its place.
            let hostList = Self.splitHostList(url)
            problems += hostList?.problems ?? []
            guard let components = URLComponents(string: hostList?.url ?? url) else {
                throw LifeguardError.invalidConfiguration(["the database URL cannot be parsed; expected postgres://user:password@host:port/database"])
            }
            if components.scheme != "postgres" && components.scheme != "postgresql" {
                // Not quoted: in a URL that is not what it should be, any part may be the password.
                problems.append("the database URL's scheme is not postgres:// or postgresql://; write postgres://user:password@host:port/database")
            }
            // URLComponents re-encodes a stray '%' instead of refusing it.
            let bytes = Array(url.utf8)
            if bytes.indices.contains(where: { index in
                bytes[index] == UInt8(ascii: "%")
                    && !(index + 2 < bytes.count && Self.isHexDigit(bytes[index + 1]) && Self.isHexDigit(bytes[index + 2]))
            }) {
                problems.append("the database URL has an invalid percent escape (a % not followed by two hex digits); write %25 for a % in a name or password")
            }
            // URLComponents has re-encoded any stray '%'; decoding fails only on bytes that are
            // not UTF-8.
            var undecodable = false
            func decoded(_ encoded: String?) -> String? {
                encoded.map { encoded in
                    guard let value = encoded.removingPercentEncoding else {
                        undecodable = true
                        return encoded
                    }
                    return value
                }
            }
            self.init(host: "", username: decoded(components.percentEncodedUser) ?? "", password: decoded(components.percentEncodedPassword), database: nil)
            if let host = decoded(components.percentEncodedHost), !host.isEmpty {
                self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
            } else {
                self.host = nil
            }
            // The port as written: URLComponents drops one it cannot read, which must not
            // quietly become 5432.
            // (The range is into URLComponents' own string, which may differ from the input:
            // indexing the input with it trapped, found by the URL fuzz target.)
            if let range = components.rangeOfPort, let string = components.string,
               range.lowerBound >= string.startIndex, range.upperBound <= string.endIndex {
                let written = string[range]
                if let port = Int(written), (1...65_535).contains(port) {
                    self.port = port
                } else {
                    problems.append("the database URL's port '\(Self.quoted(String(written)))' is not a port (1 to 65535)")
                }
            } else {
                self.port = 5432
            }
            if let hostList {
                self.hosts = hostList.hosts
            }
            let path = components.percentEncodedPath.hasPrefix("/") ? String(components.percentEncodedPath.dropFirst()) : components.percentEncodedPath
            self.database = path.isEmpty ? nil : decoded(path)
            if self.username.isEmpty {
                problems.append("the database URL has no user name; write postgres://user@host/database")
            }
            var seen: Set<String> = []
            var unknown: [String] = []
            for item in components.percentEncodedQueryItems ?? [] {
                let name = decoded(item.name) ?? item.name
                let value = decoded(item.value) ?? ""
                if !seen.insert(name).inserted {
                    if Self.urlOptions.contains(name) {
                        problems.append("the URL option '\(name)' is given more than once; give it once")
                    }
                    continue
                }
                switch name {
                case "sslmode":
                    if value == "allow" {
                        self.tlsMode = .prefer
                    } else if let mode = TLSMode(rawValue: value) {
                        self.tlsMode = mode
                    } else {
                        problems.append("sslmode '\(Self.quoted(value))' is not one of disable, allow, prefer, require, verify-ca, verify-full")
                    }
                case "sslrootcert":
                    self.tlsRootCertificatePath = value
                case "application_name":
                    self.applicationName = value
                case "connect_timeout":
                    if let seconds = Int(value), (1...Self.longestConnectTimeoutSeconds).contains(seconds) {
                        self.connectTimeout = .seconds(seconds)
                    } else {
                        problems.append("connect_timeout '\(Self.quoted(value))' must be a whole number of seconds from 1 to \(Self.longestConnectTimeoutSeconds)")
                    }
                case "host":
                    if value.isEmpty {
                        problems.append("the URL option 'host' is empty; give a host name or a Unix socket folder (host=/var/run/postgresql)")
                    } else if value.hasPrefix("/") {
                        self.unixSocketDirectory = value
                    } else if self.host == nil {
                        self.host = value
                    }
                case "target_session_attrs":
                    if let target = TargetSessionAttributes(rawValue: value) {
                        self.targetSessionAttributes = target
                    } else {
                        problems.append("target_session_attrs '\(Self.quoted(value))' is not one of \(TargetSessionAttributes.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                case "load_balance_hosts":
                    if let order = LoadBalanceHosts(rawValue: value) {
                        self.loadBalanceHosts = order
                    } else {
                        problems.append("load_balance_hosts '\(Self.quoted(value))' is not disable or random")
                    }
                default:
                    unknown.append(name)
                }
            }
            if !unknown.isEmpty {
                let listed = unknown.prefix(5).map { "'\(Self.quoted($0))'" }.joined(separator: ", ")
                let more = unknown.count > 5 ? " and \(unknown.count - 5) more" : ""
                problems.append("unknown URL option\(unknown.count == 1 ? "" : "s") \(listed)\(more); known: \(Self.urlOptions.joined(separator: ", "))")
            }
            if undecodable {
                problems.append("the database URL has percent escapes that are not UTF-8 (e.g. %ff); names and passwords must be UTF-8")
            }
            if self.host == nil && self.unixSocketDirectory == nil {
                problems.append("the database URL names no host; write postgres://user@host/database or ?host=/socket/folder")
            }
            // The settings the URL gave, checked with the rest: every problem at once.
            // (An empty user name is already said in the URL's terms.)
            problems += self.settingProblems().filter { !problems.contains($0) && !$0.hasPrefix("username is empty") }
            if !problems.isEmpty {
                throw LifeguardError.invalidConfiguration(self.redactingPassword(in: problems))
            }
        }

        /// `problems` with every value quoted in them that is the password (pasted into the
        /// wrong field, or the wrong variable) written `'***'`.
        func redactingPassword(in problems: [String]) -> [String] {
            guard let password = self.password, !password.isEmpty else { return problems }
            return problems.map { $0.replacingOccurrences(of: "'\(password)'", with: "'***'") }
        }

        /// Whether `url` has an '@' after its authority (the part after `://`, up to the first
        /// '/', '?' or '#').
        private static func hasAtSignAfterAuthority(_ url: String) -> Bool {
            guard let scheme = url.range(of: "://") else { return false }
            let rest = url[scheme.upperBound...]
            guard let end = rest.firstIndex(where: { "/?#".contains($0) }) else { return false }
            return rest[end...].contains("@")
        }

        private static func isHexDigit(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20)
        }

        /// The longest `connect_timeout` accepted: one day.
        static let longestConnectTimeoutSeconds = 86_400

        /// A value from the input as it may appear in a problem: as it is when it is a word or a
        /// path (letters, digits, `_ - . + /`, at most 40 characters), else not at all: in a
        /// malformed URL any part may hold the password.
        static func quoted(_ value: String) -> String {
            Self.isWord(value) ? value : "(a value that is not a word)"
        }

        static func isWord(_ value: String) -> Bool {
            value.utf8.count <= 40 && value.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x61...0x7A).contains(byte | 0x20) || "_-.+/".utf8.contains(byte)
            }
        }

        /// Creates a configuration from environment variables: `LIFEGUARD_URL` or `DATABASE_URL`,
        /// and the `LIFEGUARD_*` settings of ``init(config:)``.
        ///
        /// - Parameter environment: The environment to read. Default: the process's.
        /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``
        ///   listing every problem: no URL, an invalid one, a setting that does not parse or
        ///   does not validate.
        public init(environment: [String: String] = ProcessInfo.processInfo.environment) throws(LifeguardError) {
            try self.init(config: ConfigReader(provider: EnvironmentVariablesProvider(environmentVariables: environment)))
        }

        /// Whether `environment` names a database for ``init(environment:)``: `LIFEGUARD_URL`
        /// or `DATABASE_URL`, not empty.
        ///
        /// - Parameter environment: The environment to read. Default: the process's.
        /// - Returns: `true` when one of the two is set.
        public static func environmentNamesURL(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
            !(environment["LIFEGUARD_URL"] ?? environment["DATABASE_URL"] ?? "").isEmpty
        }

        /// The connection target without the password, e.g. `postgres://app:***@db:5432/app?sslmode=prefer`.
        /// A password that also stands in another setting (pasted into the wrong field) shows
        /// as `***` there too.
        public var description: String {
            let credentials = self.redacted(self.username) + (self.password == nil ? "" : ":***")
            let target = self.unixSocketDirectory.map { "?host=\(self.redacted($0))" }
                ?? self.hosts.map { self.redacted($0.description) }.joined(separator: ",")
            let database = self.redacted(self.database ?? "")
            return self.unixSocketDirectory == nil
                ? "postgres://\(credentials)@\(target)/\(database)?sslmode=\(self.tlsMode.rawValue)\(self.hostOptionsDescription)"
                : "postgres://\(credentials)@/\(database)\(target)"
        }

        /// `value` with every occurrence of the password replaced by `***`.
        func redacted(_ value: String) -> String {
            guard let password = self.password, !password.isEmpty else { return value }
            return value.replacingOccurrences(of: password, with: "***")
        }

        /// Checks every setting and reports all problems at once.
        ///
        /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``.
        public func validate() throws(LifeguardError) {
            let problems = self.settingProblems()
            if !problems.isEmpty {
                throw LifeguardError.invalidConfiguration(problems)
            }
        }

        /// Every problem of the settings, each with the setting's name and what to do.
        func settingProblems() -> [String] {
            var problems: [String] = []
            do {
                try self.pool.validate()
            } catch {
                problems += error.problems
            }
            if !(1...65_535).contains(self.port) {
                problems.append("port is \(self.port); it must be from 1 to 65535")
            }
            problems += self.hostListProblems()
            if self.username.isEmpty {
                problems.append("username is empty; give the user to log in as")
            }
            if let host = self.host, host.isEmpty {
                problems.append("host is empty; give a host name or address, or set unixSocketDirectory")
            }
            if let database = self.database, database.isEmpty {
                problems.append("database is empty; give a database name, or nil for the user's default")
            }
            // PostgreSQL cuts identifiers at 63 bytes: a longer name would reach another role or database.
            for (name, value) in [("username", self.username), ("database", self.database ?? "")] where value.utf8.count > 63 {
                problems.append("\(name) has \(value.utf8.count) bytes; PostgreSQL keeps at most 63 of a name")
            }
            if let directory = self.unixSocketDirectory, "\(directory)/.s.PGSQL.\(self.port)".utf8.count > 107 {
                problems.append("unixSocketDirectory is too long: a Unix socket path holds at most 107 bytes")
            }
            if self.connectTimeout <= .zero || self.connectTimeout > .seconds(Self.longestConnectTimeoutSeconds) {
                problems.append("connectTimeout is \(self.connectTimeout); it must be positive and at most one day")
            }
            if self.backendExitTimeout <= .zero || self.backendExitTimeout > .seconds(3_600) {
                problems.append("backendExitTimeout is \(self.backendExitTimeout); it must be positive and at most one hour")
            }
            if self.applicationName.utf8.count >= 64 {
                problems.append("applicationName has \(self.applicationName.utf8.count) bytes; PostgreSQL keeps at most 63")
            }
            // A NUL ends a startup parameter early, and what follows it would be read as
            // parameters of its own: no control character reaches the server.
            let named: [(String, String?)] = [
                ("applicationName", self.applicationName), ("username", self.username), ("database", self.database),
                ("host", self.host), ("unixSocketDirectory", self.unixSocketDirectory), ("tlsRootCertificatePath", self.tlsRootCertificatePath),
            ]
            for (name, value) in named {
                if let value, let index = value.unicodeScalars.firstIndex(where: { $0.properties.generalCategory == .control }) {
                    // The value is not quoted: from a malformed URL it may hold the password.
                    let scalar = value.unicodeScalars[index]
                    let offset = value.unicodeScalars.distance(from: value.unicodeScalars.startIndex, to: index)
                    problems.append("\(name) contains a control character (\(scalar.escaped(asASCII: true)) at character \(offset + 1)); PostgreSQL's startup parameters cannot carry one")
                }
            }
            if let password = self.password, password.utf8.contains(0) {
                problems.append("the password contains a NUL byte, which the protocol cannot carry (the password itself is not shown)")
            }
            if self.tlsMode != .disable, self.unixSocketDirectory == nil, let path = self.tlsRootCertificatePath,
               !FileManager.default.isReadableFile(atPath: path) {
                problems.append("sslrootcert '\(Self.quoted(path))' is not a readable file; give the PEM file of the server's certificate authority")
            }
            return problems
        }

        /// The TLS setting for PostgresNIO.
        func makeTLS() throws -> PostgresConnectionTLS {
            func context(_ verification: CertificateVerification) throws -> NIOSSLContext {
                var tls = TLSConfiguration.makeClientConfiguration()
                tls.certificateVerification = verification
                if let path = self.tlsRootCertificatePath {
                    tls.trustRoots = .file(path)
                }
                return try NIOSSLContext(configuration: tls)
            }
            switch self.tlsMode {
            case .disable:
                return .disable
            case .prefer:
                return .prefer(try context(.none))
            case .require:
                return .require(try context(self.tlsRootCertificatePath == nil ? .none : .noHostnameVerification))
            case .verifyCA:
                return .require(try context(.noHostnameVerification))
            case .verifyFull:
                return .require(try context(.fullVerification))
            }
        }
    }
}


extension PostgresPool.Configuration: CustomReflectable {
    /// What `dump` and debuggers show: every setting, the password as `***`.
    public var customMirror: Mirror {
        Mirror(self, children: [
            "host": self.host.map(self.redacted) as Any, "port": self.port,
            "otherHosts": self.otherHosts.map { self.redacted($0.description) },
            "targetSessionAttributes": self.targetSessionAttributes, "loadBalanceHosts": self.loadBalanceHosts,
            "hostRecheckInterval": self.hostRecheckInterval,
            "unixSocketDirectory": self.unixSocketDirectory.map(self.redacted) as Any,
            "username": self.redacted(self.username), "password": (self.password == nil ? nil : "***") as Any,
            "passwordProvider": self.passwordProvider == nil ? "nil" : "a provider",
            "database": self.database.map(self.redacted) as Any, "tlsMode": self.tlsMode,
            "tlsRootCertificatePath": self.tlsRootCertificatePath.map(self.redacted) as Any,
            "applicationName": self.redacted(self.applicationName), "connectTimeout": self.connectTimeout,
            "serverSideCancellation": self.serverSideCancellation, "backendExitTimeout": self.backendExitTimeout, "sessionReset": self.sessionReset, "pool": self.pool,
        ], displayStyle: .struct)
    }
}
