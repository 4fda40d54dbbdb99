import Lifeguard
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// Opens, validates, resets and closes PostgresNIO connections for the pool.
@usableFromInline
final class PostgresConnectionFactory: ConnectionFactory {
    let configuration: PostgresPool.Configuration
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    private let nextConnectionID = Atomic<Int>(0)

    init(configuration: PostgresPool.Configuration, logger: Logger, eventLoopGroup: any EventLoopGroup) {
        self.configuration = configuration
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
    }

    /// Opens a plain PostgresNIO connection with our `application_name` and timeout.
    func openPostgresConnection() async throws -> PostgresConnection {
        var postgres: PostgresConnection.Configuration
        if let directory = self.configuration.unixSocketDirectory {
            postgres = .init(
                unixSocketPath: "\(directory)/.s.PGSQL.\(self.configuration.port)",
                username: self.configuration.username, password: self.configuration.password,
                database: self.configuration.database)
        } else {
            postgres = .init(
                host: self.configuration.host ?? "localhost", port: self.configuration.port,
                username: self.configuration.username, password: self.configuration.password,
                database: self.configuration.database, tls: try self.configuration.makeTLS())
        }
        postgres.options.connectTimeout = .nanoseconds(Int64(self.configuration.connectTimeout.components.seconds) * 1_000_000_000
            + self.configuration.connectTimeout.components.attoseconds / 1_000_000_000)
        postgres.options.additionalStartupParameters = [("application_name", self.configuration.applicationName)]
        let id = self.nextConnectionID.wrappingAdd(1, ordering: .relaxed).newValue
        return try await PostgresConnection.connect(
            on: self.eventLoopGroup.any(), configuration: postgres, id: id, logger: self.logger)
    }

    @usableFromInline func connect() async throws -> PooledPostgresConnection {
        let postgres = try await self.openPostgresConnection()
        do {
            var pid: Int32 = 0
            for try await value in try await postgres.query("SELECT pg_backend_pid()", logger: self.logger).decode(Int32.self) {
                pid = value
            }
            return PooledPostgresConnection(postgres: postgres, backendPID: pid)
        } catch {
            try? await postgres.close()
            throw error
        }
    }

    @usableFromInline func validate(_ connection: PooledPostgresConnection) async throws {
        try connection.checkOpen()
        _ = try await connection.postgres.query("SELECT 1", logger: self.logger).collect()
    }

    @usableFromInline func reset(_ connection: PooledPostgresConnection) async throws {
        // A cancel still on its way must land before our ROLLBACK, not on it or after it.
        while connection.hasOutstandingCancels {
            try await Task.sleep(for: .milliseconds(1))
        }
        try connection.checkOpen()
        _ = try await connection.postgres.query("ROLLBACK", logger: self.logger).collect()
        connection.markClean()
    }

    @usableFromInline func close(_ connection: PooledPostgresConnection) async {
        do {
            try await connection.postgres.close()
        } catch {
            self.logger.debug("Lifeguard: closing a connection failed", metadata: ["error": "\(String(describing: error))"])
        }
    }

    @usableFromInline func condition(of connection: PooledPostgresConnection) -> ConnectionCondition {
        connection.condition
    }

    @usableFromInline func activity(of connection: PooledPostgresConnection) -> LeaseActivity {
        connection.activity
    }
}
