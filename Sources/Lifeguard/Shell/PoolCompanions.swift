import Synchronization

/// A service that works through its pool's connections and lives as long as the pool: the
/// pool's ``ConnectionPool/run()`` runs it, and its shutdown gives it the grace period to finish
/// its queued work before the pool stops granting leases. An adapter's write coalescer is one.
package protocol PoolCompanion: AnyObject, Sendable {
    /// Runs until ``shutdown()`` has been called and the queued work is done.
    func run() async
    /// Accept no new work; finish what is queued, then let ``run()`` return.
    func shutdown()
    /// ``run()`` will never be called (the pool's run has ended): fail what is queued.
    func abandon()
}

/// The companions of one pool, and the order of its shutdown: companions first (their queued
/// work still gets connections), then the pool, within one grace period on the pool's clock.
final class PoolCompanions<Clock: PoolClock>: Sendable {
    private struct State {
        var all: [any PoolCompanion] = []
        /// Companions added while the pool's run could still run them, and not ended yet.
        var unfinished = 0
        var started: Set<ObjectIdentifier> = []
        var isShuttingDown = false
        /// When the grace period of the first shutdown ends.
        var deadline: PoolInstant?
        /// The pool itself was told to shut down.
        var isPoolShutDown = false
        /// The pool's run has ended: a companion added now can never run.
        var isRunOver = false
    }

    private let state = Mutex(State())
    private let clock: Clock
    /// Companions for the pool's run to start, in the order they were added.
    let added: AsyncStream<any PoolCompanion>
    private let adding: AsyncStream<any PoolCompanion>.Continuation

    init(clock: Clock) {
        self.clock = clock
        (self.added, self.adding) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// A new companion, for the pool's run to start (at once if it runs already). Added after a
    /// shutdown began, it is shut down at once (its queued work still runs); added after the
    /// run ended, its queued work fails.
    func add(_ companion: any PoolCompanion) {
        let (shuttingDown, runOver) = self.state.withLock { state in
            state.all.append(companion)
            if !state.isRunOver { state.unfinished += 1 }
            return (state.isShuttingDown, state.isRunOver)
        }
        if runOver {
            companion.abandon()
            return
        }
        if shuttingDown { companion.shutdown() }
        self.adding.yield(companion)
    }

    /// The pool's run started `companion`.
    func started(_ companion: any PoolCompanion) {
        self.state.withLock { _ = $0.started.insert(ObjectIdentifier(companion)) }
    }

    /// A companion's run returned; the last one during a shutdown lets the pool shut down, with
    /// what is left of the grace period.
    func ended(shuttingDownPool: (Duration) -> Void) {
        let now = self.clock.now
        let remaining = self.state.withLock { state -> Duration? in
            state.unfinished -= 1
            guard state.unfinished == 0, state.isShuttingDown, !state.isPoolShutDown, let deadline = state.deadline else { return nil }
            state.isPoolShutDown = true
            return .nanoseconds(max(0, now.nanoseconds(to: deadline)))
        }
        if let remaining { shuttingDownPool(remaining) }
    }

    /// Shuts the companions down, then the pool: at once when none is unfinished, else when the
    /// last one ends, or when the grace period is over, whichever comes first (the pool then
    /// closes what is leased, which ends a flush still running). Called again, a sooner end of
    /// the grace period wins, for the companions and for the pool.
    func shutdown(gracePeriod: Duration, shuttingDownPool: @escaping @Sendable (Duration) -> Void) {
        let deadline = self.clock.now.advanced(by: gracePeriod)
        let (companions, now, timer) = self.state.withLock { state -> ([any PoolCompanion], Bool, Bool) in
            state.isShuttingDown = true
            // The pool is shutting down already: it takes a sooner end of its grace period.
            guard !state.isPoolShutDown else { return ([], true, false) }
            if state.unfinished == 0 {
                state.isPoolShutDown = true
                return (state.all, true, false)
            }
            let sooner = state.deadline.map { deadline < $0 } ?? true
            if sooner { state.deadline = deadline }
            return (state.all, false, sooner)
        }
        for companion in companions { companion.shutdown() }
        if now { shuttingDownPool(gracePeriod) }
        if timer {
            let clock = self.clock
            Task {
                try? await clock.sleep(until: deadline)
                let force = self.state.withLock { state in
                    defer { state.isPoolShutDown = true }
                    return !state.isPoolShutDown
                }
                if force { shuttingDownPool(.zero) }
            }
        }
    }

    /// The pool's run has ended: no companion will start any more; those never started fail
    /// their queued work.
    func finish() {
        let abandoned = self.state.withLock { state -> [any PoolCompanion] in
            state.isRunOver = true
            return state.all.filter { !state.started.contains(ObjectIdentifier($0)) }
        }
        self.adding.finish()
        for companion in abandoned { companion.abandon() }
    }
}
