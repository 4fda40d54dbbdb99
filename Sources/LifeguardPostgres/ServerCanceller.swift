import Logging
import PostgresNIO

/// Cancels running statements on the server when their task is cancelled.
///
/// It sends the protocol's CancelRequest with the session's key (``CancelRequestSender``):
/// no connection of the budget is used, and behind PgBouncer the request reaches our own
/// statement, never another client's. A cancel that arrives before the statement started
/// executing is ignored by the server (and PgBouncer ignores one for a client still waiting
/// for a server connection), so the request is repeated while the same statement is still
/// running: after ``retryInterval``, then at doubling intervals up to ``longestRetryInterval``.
/// Since a CancelRequest can only reach this session's own statement, repeating it is safe.
@usableFromInline
actor ServerCanceller {
    struct Request: Sendable {
        let connection: PooledPostgresConnection
        let statement: Int
    }

    static let retryInterval: Duration = .milliseconds(50)
    static let longestRetryInterval: Duration = .seconds(1)
    /// How long cancels are repeated before the connection is closed instead: a statement that
    /// waits behind PgBouncer for a server (during an outage) cannot be cancelled, only
    /// abandoned, and it must not run once the server is back.
    static let giveUpAfter: Duration = .seconds(2)

    private let logger: Logger
    private let backendExitTimeout: Duration
    nonisolated let requests: AsyncStream<Request>
    nonisolated let requestContinuation: AsyncStream<Request>.Continuation

    init(logger: Logger, backendExitTimeout: Duration) {
        self.logger = logger
        self.backendExitTimeout = backendExitTimeout
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

    /// Carries out cancel requests until ``finish()``.
    func run() async {
        await withDiscardingTaskGroup { group in
            for await request in self.requests {
                group.addTask { await self.carryOut(request) }
            }
        }
    }

    /// Stops taking requests; ``run()`` returns once those under way are done.
    nonisolated func finish() {
        self.requestContinuation.finish()
    }

    /// How long a statement may take to end by itself before it is cancelled: a short read
    /// (a fan-out sibling cancelled after another's rejection) usually ends within it, and
    /// then costs no CancelRequest (a connection the server forks a process for).
    static let grace: Duration = .milliseconds(5)

    private nonisolated func carryOut(_ request: Request) async {
        defer { request.connection.endCancel() }
        if await Self.ends(request, within: Self.grace) { return }
        var interval = Self.retryInterval
        let started = ContinuousClock.now
        while true {
            if started.duration(to: .now) > Self.giveUpAfter {
                self.logger.warning(
                    "Lifeguard: a cancelled statement did not stop; closing its connection",
                    metadata: ["pid": "\(request.connection.backendPID)", "after": "\(Self.giveUpAfter)"])
                // A short wait for the session's end: behind PgBouncer a client still waiting
                // for a server is not read until it gets one, so its Terminate goes unread.
                await request.connection.terminate(within: min(self.backendExitTimeout, Self.giveUpAfter / 2), logger: self.logger)
                return
            }
            do {
                try await request.connection.sendCancelRequest()
            } catch {
                self.logger.warning(
                    "Lifeguard: could not cancel a statement on the server",
                    metadata: ["pid": "\(request.connection.backendPID)", "error": "\(String(describing: error))"])
                return
            }
            // The connection goes back to the pool as soon as the statement has stopped, not
            // an interval later: until this returns, its reset waits for the cancel.
            if await Self.ends(request, within: interval) { return }
            interval = min(interval * 2, Self.longestRetryInterval)
        }
    }

    /// Whether the request's statement ends (or its connection closes) within `duration`,
    /// looked at every millisecond.
    private static func ends(_ request: Request, within duration: Duration) async -> Bool {
        let deadline = ContinuousClock.now.advanced(by: duration)
        while request.connection.isRunning(request.statement), !request.connection.wire.isClosed {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return true
    }
}
