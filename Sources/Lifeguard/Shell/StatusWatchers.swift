import Synchronization

/// Tasks waiting for a pool's status to satisfy a condition: how tests on a manual clock wait
/// for what the pool does in the background (a connection opened, a reset finished) without
/// sleeping or polling.
///
/// The pool looks at its status for them after each event it settles and each background
/// completion, and only while someone waits: otherwise the check is one relaxed load.
@usableFromInline
final class StatusWatchers: Sendable {
    typealias Condition = @Sendable (PoolStatus) -> Bool

    private let waiting = Mutex<[(condition: Condition, continuation: CheckedContinuation<Void, Never>)]>([])
    /// Whether anyone waits; read on every settlement without the lock.
    @usableFromInline let isWatched = Atomic<Bool>(false)

    init() {}

    /// Suspends until `status()` satisfies `condition`, checked now and after each of the pool's
    /// events.
    func wait(until condition: @escaping Condition, status: () -> PoolStatus) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            self.waiting.withLock { waiting in
                waiting.append((condition, continuation))
                self.isWatched.store(true, ordering: .relaxed)
            }
            self.check(status())
        }
    }

    /// Resumes the waiters whose condition `status` satisfies.
    func check(_ status: PoolStatus) {
        let satisfied = self.waiting.withLock { waiting in
            var satisfied: [CheckedContinuation<Void, Never>] = []
            waiting.removeAll { waiter in
                guard waiter.condition(status) else { return false }
                satisfied.append(waiter.continuation)
                return true
            }
            self.isWatched.store(!waiting.isEmpty, ordering: .relaxed)
            return satisfied
        }
        for continuation in satisfied { continuation.resume() }
    }
}

extension ConnectionPool {
    /// Returns once the pool's ``status()`` satisfies `condition`, checked now and after each
    /// event the pool settles (a lease queued or released to the machine, a connection opened,
    /// reset, pinged or closed, a timer fired). For tests, which wait so for background work
    /// instead of sleeping.
    package func status(where condition: @escaping @Sendable (PoolStatus) -> Bool) async {
        await self.statusWatchers.wait(until: condition, status: { self.status() })
    }

    /// Checks the watchers' conditions against the current status.
    @usableFromInline
    func checkStatusWatchers() {
        self.statusWatchers.check(self.status())
    }
}
