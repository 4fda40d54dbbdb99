import Lifeguard
import Synchronization

/// A clock that moves only when told to, for deterministic tests and simulations.
///
/// Its instants are ``Lifeguard/PoolInstant``s counted from zero, so the pool's state machine runs on it
/// unchanged. Sleepers resume, in deadline order, when ``advance(by:)`` moves the clock past
/// their deadline.
///
/// A test waits for the code under test instead of sleeping: ``sleeper(until:)`` returns once
/// something sleeps until an instant (a pool's timer for a waiter's deadline, say), so that
/// the test knows that code got there before it moves the clock.
public final class ManualClock: Clock, PoolClock, Sendable {
    /// A point on the clock.
    public typealias Instant = PoolInstant

    /// The clock's zero: where it starts.
    public let origin = PoolInstant(nanoseconds: 0)

    /// The instant `offset` after the clock's origin.
    ///
    /// - Parameter offset: The time since the origin.
    public func instant(at offset: Duration) -> Instant {
        self.origin.advanced(by: offset)
    }

    private struct State {
        var now: Instant
        var sleepers: [(deadline: Instant, id: Int, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextID = 0
        /// Tests waiting for a sleeper whose deadline matches.
        var watchers: [(matches: @Sendable (Instant) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []

        /// Takes out the watchers a sleeper until `deadline` satisfies.
        mutating func watchers(satisfiedBy deadline: Instant) -> [CheckedContinuation<Void, Never>] {
            var satisfied: [CheckedContinuation<Void, Never>] = []
            self.watchers.removeAll { watcher in
                guard watcher.matches(deadline) else { return false }
                satisfied.append(watcher.continuation)
                return true
            }
            return satisfied
        }
    }

    private let state: Mutex<State>

    /// Creates a clock at its origin.
    public init() {
        self.state = Mutex(State(now: PoolInstant(nanoseconds: 0)))
    }

    /// The current instant.
    public var now: Instant {
        self.state.withLock { $0.now }
    }

    /// The deadlines of the tasks sleeping on the clock now, earliest first.
    public var sleeperDeadlines: [Instant] {
        self.state.withLock { $0.sleepers.map(\.deadline).sorted() }
    }

    /// Returns once a task sleeps on the clock until `deadline` (at once if one does).
    ///
    /// - Parameter deadline: The instant the sleeper waits for.
    public func sleeper(until deadline: Instant) async {
        await self.sleeper { $0 == deadline }
    }

    /// Returns once a task sleeps on the clock until an instant that `matches` (at once if one
    /// does).
    ///
    /// - Parameter matches: Whether a sleeper's deadline is the one to wait for.
    public func sleeper(where matches: @escaping @Sendable (Instant) -> Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let found = self.state.withLock { state in
                guard !state.sleepers.contains(where: { matches($0.deadline) }) else { return true }
                state.watchers.append((matches, continuation))
                return false
            }
            if found { continuation.resume() }
        }
    }

    /// The smallest step the clock takes: none.
    public var minimumResolution: Duration { .zero }

    /// Moves the clock forward and resumes the sleepers whose deadline has passed.
    ///
    /// - Parameter duration: How far to move; must not be negative.
    public func advance(by duration: Duration) {
        precondition(duration >= .zero, "a clock does not go back")
        let due = self.state.withLock { state in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }.sorted { $0.deadline < $1.deadline }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in due {
            sleeper.continuation.resume()
        }
    }

    /// Suspends until the clock reaches `deadline`, or throws `CancellationError` when the task
    /// is cancelled first.
    public func sleep(until deadline: Instant) async throws {
        try await self.sleep(until: deadline, tolerance: nil)
    }

    /// Suspends until the clock reaches `deadline`, or throws `CancellationError` when the task
    /// is cancelled first.
    public func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = self.state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // A cancellation that came before this registration found nothing to cancel:
                // check for it here, under the same lock as the cancellation handler.
                let (resumeNow, watchers) = self.state.withLock { state -> (Result<Void, any Error>?, [CheckedContinuation<Void, Never>]) in
                    if Task.isCancelled { return (.failure(CancellationError()), []) }
                    if deadline <= state.now { return (.success(()), []) }
                    state.sleepers.append((deadline, id, continuation))
                    return (nil, state.watchers(satisfiedBy: deadline))
                }
                for watcher in watchers { watcher.resume() }
                if let resumeNow { continuation.resume(with: resumeNow) }
            }
        } onCancel: {
            let cancelled = self.state.withLock { state in
                let index = state.sleepers.firstIndex { $0.id == id }
                return index.map { state.sleepers.remove(at: $0).continuation }
            }
            cancelled?.resume(throwing: CancellationError())
        }
    }
}
