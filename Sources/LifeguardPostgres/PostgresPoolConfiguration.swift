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
        public var host: String?
        /// The server's port. Default: 5432.
        public var port: Int
        /// The folder of the server's Unix socket, used instead of `host` when set.
        public var unixSocketDirectory: String?
        /// The user to log in as.
        public var username: String
        /// The password, if the server asks for one. Never printed.
        public var password: String?
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
        /// Query options: `sslmode` (disable, allow, prefer, require, verify-ca, verify-full),
        /// `sslrootcert` (a PEM file), `application_name`, `connect_timeout` (seconds), and
        /// `host` (a Unix socket folder, for URLs without a host). Percent-encoded user names
        /// and passwords are decoded.
        ///
        /// - Parameter url: The URL.
        /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``
        ///   listing every problem of the URL; the password is never part of it.
        public init(url: String) throws(LifeguardError) {
            var problems: [String] = []
            guard let components = URLComponents(string: url) else {
                throw LifeguardError.invalidConfiguration(["the database URL cannot be parsed; expected postgres://user:password@host:port/database"])
            }
            if components.scheme != "postgres" && components.scheme != "postgresql" {
                problems.append("the database URL's scheme is '\(components.scheme ?? "")'; use postgres:// or postgresql://")
            }
            self.init(host: components.host ?? "", username: components.user ?? "", password: components.password, database: nil)
            if let host = components.host, !host.isEmpty {
                self.host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
            } else {
                self.host = nil
            }
            self.port = components.port ?? 5432
            let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
            self.database = path.isEmpty ? nil : (path.removingPercentEncoding ?? path)
            if self.username.isEmpty {
                problems.append("the database URL has no user name; write postgres://user@host/database")
            }
            for item in components.queryItems ?? [] {
                let value = item.value ?? ""
                switch item.name {
                case "sslmode":
                    if value == "allow" {
                        self.tlsMode = .prefer
                    } else if let mode = TLSMode(rawValue: value) {
                        self.tlsMode = mode
                    } else {
                        problems.append("sslmode '\(value)' is not one of disable, allow, prefer, require, verify-ca, verify-full")
                    }
                case "sslrootcert":
                    self.tlsRootCertificatePath = value
                case "application_name":
                    self.applicationName = value
                case "connect_timeout":
                    if let seconds = Int(value), seconds > 0 {
                        self.connectTimeout = .seconds(seconds)
                    } else {
                        problems.append("connect_timeout '\(value)' must be a positive number of seconds")
                    }
                case "host":
                    if value.hasPrefix("/") {
                        self.unixSocketDirectory = value
                    } else if self.host == nil {
                        self.host = value
                    }
                default:
                    problems.append("unknown URL option '\(item.name)'; known: sslmode, sslrootcert, application_name, connect_timeout, host")
                }
            }
            if self.host == nil && self.unixSocketDirectory == nil {
                problems.append("the database URL names no host; write postgres://user@host/database or ?host=/socket/folder")
            }
            if !problems.isEmpty {
                throw LifeguardError.invalidConfiguration(problems)
            }
        }

        /// Creates a configuration from the `DATABASE_URL` environment variable.
        ///
        /// - Parameter environment: The environment to read. Default: the process's.
        /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``
        ///   when the variable is missing or its URL is invalid.
        public init(environment: [String: String] = ProcessInfo.processInfo.environment) throws(LifeguardError) {
            guard let url = environment["DATABASE_URL"], !url.isEmpty else {
                throw LifeguardError.invalidConfiguration(["DATABASE_URL is not set; set it to postgres://user:password@host:port/database"])
            }
            try self.init(url: url)
        }

        /// The connection target without the password, e.g. `postgres://app:***@db:5432/app?sslmode=prefer`.
        public var description: String {
            let credentials = self.username + (self.password == nil ? "" : ":***")
            let target = self.unixSocketDirectory.map { "?host=\($0)" } ?? "\(self.host ?? ""):\(self.port)"
            let database = self.database ?? ""
            return self.unixSocketDirectory == nil
                ? "postgres://\(credentials)@\(target)/\(database)?sslmode=\(self.tlsMode.rawValue)"
                : "postgres://\(credentials)@/\(database)\(target)"
        }

        /// Checks every setting and reports all problems at once.
        ///
        /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``.
        public func validate() throws(LifeguardError) {
            var problems: [String] = []
            do {
                try self.pool.validate()
            } catch {
                problems += error.problems
            }
            if self.connectTimeout <= .zero {
                problems.append("connectTimeout is \(self.connectTimeout); it must be positive")
            }
            if self.backendExitTimeout <= .zero {
                problems.append("backendExitTimeout is \(self.backendExitTimeout); it must be positive")
            }
            if self.applicationName.utf8.count >= 64 {
                problems.append("applicationName has \(self.applicationName.utf8.count) bytes; PostgreSQL keeps at most 63")
            }
            if !problems.isEmpty {
                throw LifeguardError.invalidConfiguration(problems)
            }
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

