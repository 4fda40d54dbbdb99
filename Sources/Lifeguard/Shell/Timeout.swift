import Synchronization

/// Runs `operation`, giving up after `timeout` on `clock`: then `onTimeout` runs (e.g. closing
/// the connection) and the result is `false`.
///
/// The race is unstructured on purpose: an operation stuck on a dead connection (some drivers
/// never complete a request written to a closed socket) must not hold up the pool, so the caller
/// resumes at the timeout and the operation is cancelled and left to end on its own.
@usableFromInline
func succeeds(
    within timeout: Duration,
    on clock: some PoolClock,
    _ operation: @escaping @Sendable () async throws -> Void,
    onTimeout: @escaping @Sendable () async -> Void
) async -> Bool {
    let outcome = Mutex<CheckedContinuation<Bool?, Never>?>(nil)
    let settle: @Sendable (Bool?) -> Void = { value in
        outcome.withLock { continuation in
            continuation?.resume(returning: value)
            continuation = nil
        }
    }
    var tasks: [Task<Void, Never>] = []
    let result = await withCheckedContinuation { (continuation: CheckedContinuation<Bool?, Never>) in
        outcome.withLock { $0 = continuation }
        tasks = [
            Task {
                do {
                    try await operation()
                    settle(true)
                } catch {
                    settle(false)
                }
            },
            Task {
                try? await clock.sleep(for: timeout)
                settle(nil)
            },
        ]
    }
    for task in tasks { task.cancel() }
    if result == nil {
        await onTimeout()
    }
    return result ?? false
}
