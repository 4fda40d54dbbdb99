import Logging
import PostgresNIO

/// Cancels running statements on the server when their task is cancelled.
///
/// PostgresNIO keeps a connection's cancel key to itself, so this sends
/// `SELECT pg_cancel_backend(pid)` from one control connection, opened on first use and counted
/// in the pool's budget. A cancel that arrives before the statement started executing is ignored
/// by the server, so the request is repeated every ``retryInterval`` while the same statement is
/// still running, at most ``maximumAttempts`` times.
///
/// Behind PgBouncer in transaction mode a backend pid belongs to the server connection of the
/// moment, not to ours: server-side cancellation should be turned off there.
@usableFromInline
actor ServerCanceller {
    struct Request: Sendable {
        let connection: PooledPostgresConnection
        let statement: Int
    }

    static let retryInterval: Duration = .milliseconds(50)
    static let maximumAttempts = 10

    private let factory: PostgresConnectionFactory
    private let logger: Logger
    private var control: PostgresConnection?
    private var opening: Task<PostgresConnection, any Error>?
    nonisolated let requests: AsyncStream<Request>
    nonisolated let requestContinuation: AsyncStream<Request>.Continuation

    init(factory: PostgresConnectionFactory, logger: Logger) {
        self.factory = factory
        self.logger = logger
        (self.requests, self.requestContinuation) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// Asks for statement `statement` of `connection` to be cancelled on the server, if it is
    /// still running. Safe to call from a task-cancellation handler.
    nonisolated func cancel(_ connection: PooledPostgresConnection, statement: Int) {
        guard connection.beginCancel(of: statement) else { return }
        if case .terminated = self.requestContinuation.yield(Request(connection: connection, statement: statement)) {
            connection.endCancel()
        }
    }

    /// Carries out cancel requests until ``finish()``; then closes the control connection.
    func run() async {
        await withDiscardingTaskGroup { group in
            for await request in self.requests {
                group.addTask { await self.carryOut(request) }
            }
        }
        try? await self.control?.close()
        self.control = nil
    }

    /// Stops taking requests; ``run()`` returns once those under way are done.
    nonisolated func finish() {
        self.requestContinuation.finish()
    }

    private func carryOut(_ request: Request) async {
        defer { request.connection.endCancel() }
        var attempt = 0
        while attempt < Self.maximumAttempts, request.connection.isRunning(request.statement) {
            attempt += 1
            do {
                let control = try await self.controlConnection()
                _ = try await control.query("SELECT pg_cancel_backend(\(request.connection.backendPID))", logger: self.logger).collect()
            } catch {
                self.logger.warning(
                    "Lifeguard: could not cancel a statement on the server",
                    metadata: ["pid": "\(request.connection.backendPID)", "error": "\(String(describing: error))"])
                self.dropControlConnection()
                return
            }
            try? await Task.sleep(for: Self.retryInterval)
        }
    }

    private func controlConnection() async throws -> PostgresConnection {
        if let control = self.control, !control.isClosed {
            return control
        }
        if let opening = self.opening {
            return try await opening.value
        }
        let factory = self.factory
        let opening = Task { try await factory.openPostgresConnection() }
        self.opening = opening
        defer { self.opening = nil }
        let control = try await opening.value
        self.control = control
        return control
    }

    private func dropControlConnection() {
        if let control = self.control {
            // Keep the connection alive until its close completes.
            control.close().whenComplete { _ in _ = control }
        }
        self.control = nil
    }
}
