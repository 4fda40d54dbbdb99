import NIOCore
import Synchronization

/// Awaits a plain statement's `EventLoopFuture` the way a pool needs it: it ends when the future
/// does, when the connection closes, and (without server-side cancellation) when the task is
/// cancelled, whichever comes first, and resumes the task once.
///
/// The connection's close matters because PostgresNIO 1.33.2 never completes a statement
/// written to a channel that closed under it: without it, the task would wait forever. A
/// cancelled task without server-side cancellation stops waiting at once; what the future
/// stands for goes on, and the lease's tracking decides what becomes of the connection. With
/// server-side cancellation the task waits for the statement's end, which the server's cancel
/// brings, so that the canceller sees it running until then.
enum CancellableWait {
    static func value<Value: Sendable>(
        of future: EventLoopFuture<Value>, on connection: PooledPostgresConnection, endsOnCancellation: Bool
    ) async throws -> Value {
        let wait = Wait<Value>()
        connection.watchClose { error in wait.finish(.failure(error)) }
        defer { connection.unwatchClose() }
        if !endsOnCancellation {
            return try await withUnsafeThrowingContinuation { continuation in
                wait.start(continuation)
                future.whenComplete { wait.finish($0) }
            }
        }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { continuation in
                wait.start(continuation)
                future.whenComplete { wait.finish($0) }
            }
        } onCancel: {
            wait.finish(.failure(CancellationError()))
        }
    }

    /// Whichever comes first resumes the task, once; an outcome that comes before the
    /// continuation is kept for it.
    final class Wait<Value: Sendable>: Sendable {
        enum State {
            case idle
            case waiting(UnsafeContinuation<Value, any Error>)
            /// Finished before the continuation was there.
            case finished(Result<Value, any Error>)
            case done
        }

        private let state = Mutex(State.idle)

        func start(_ continuation: UnsafeContinuation<Value, any Error>) {
            let early = self.state.withLock { state -> Result<Value, any Error>? in
                if case .finished(let result) = state {
                    state = .done
                    return result
                }
                state = .waiting(continuation)
                return nil
            }
            // The table of states resumes each continuation once: here, or in `finish`.
            if let early { continuation.resume(with: early) }
        }

        func finish(_ result: Result<Value, any Error>) {
            let continuation = self.state.withLock { state -> UnsafeContinuation<Value, any Error>? in
                switch state {
                case .waiting(let continuation):
                    state = .done
                    return continuation
                case .idle:
                    state = .finished(result)
                    return nil
                case .finished, .done:
                    return nil
                }
            }
            continuation?.resume(with: result)
        }
    }
}
