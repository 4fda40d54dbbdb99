import NIOCore
import Synchronization

/// Awaits an `EventLoopFuture` the way a Swift task expects: cancelling the task ends the wait
/// at once with `CancellationError`. What the future stands for goes on; for a statement, the
/// lease's tracking and server-side cancellation decide what becomes of the connection.
///
/// The lease runs plain statements through PostgresNIO's future-based query, which reads the
/// result to its end on the connection's event loop and resumes the task once; `get()` on that
/// future would not hear of cancellation. Only without server-side cancellation: with it, the
/// canceller must see the statement running until the server has cancelled it.
enum CancellableWait {
    static func value<Value: Sendable>(of future: EventLoopFuture<Value>) async throws -> Value {
        let wait = Wait<Value>()
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { continuation in
                wait.start(continuation)
                future.whenComplete { wait.finish($0) }
            }
        } onCancel: {
            wait.finish(.failure(CancellationError()))
        }
    }

    /// Whichever comes first, the future's result or the cancellation, resumes the task, once.
    final class Wait<Value: Sendable>: Sendable {
        enum State {
            case idle
            case waiting(UnsafeContinuation<Value, any Error>)
            /// Cancelled before the continuation was there.
            case cancelled
            case done
        }

        private let state = Mutex(State.idle)

        func start(_ continuation: UnsafeContinuation<Value, any Error>) {
            let cancelled = self.state.withLock { state in
                if case .cancelled = state {
                    state = .done
                    return true
                }
                state = .waiting(continuation)
                return false
            }
            if cancelled { continuation.resume(throwing: CancellationError()) }
        }

        func finish(_ result: Result<Value, any Error>) {
            let continuation = self.state.withLock { state -> UnsafeContinuation<Value, any Error>? in
                switch state {
                case .waiting(let continuation):
                    state = .done
                    return continuation
                case .idle:
                    // Only a cancellation comes before the continuation is stored.
                    state = .cancelled
                    return nil
                case .cancelled, .done:
                    return nil
                }
            }
            continuation?.resume(with: result)
        }
    }
}
