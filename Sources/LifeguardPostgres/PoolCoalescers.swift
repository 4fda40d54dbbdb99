import Lifeguard
import Synchronization

/// The write coalescers a ``PostgresPool`` runs itself (``PostgresPool/writeCoalescer(configuration:)``),
/// and the order of their shutdown: on the pool's shutdown they stop taking writes and flush
/// what is queued, and only once every one of them has stopped, or the grace period is over,
/// does the pool stop granting leases, so that no queued write is refused for want of a
/// connection and no flush holds the shutdown past its grace period.
final class PoolCoalescers: Sendable {
    private struct State {
        var all: [WriteCoalescer] = []
        /// Coalescers registered whose `run()` has not returned (started or not yet).
        var unfinished = 0
        var started: Set<ObjectIdentifier> = []
        var isShuttingDown = false
        /// When the grace period of the shutdown asked for ends.
        var deadline: ContinuousClock.Instant?
        var isPoolShutDown = false
        /// The pool's `run()` has ended: nothing will run a coalescer any more.
        var isRunOver = false
        var isRunStarted = false
    }

    private let state = Mutex(State())
    /// New coalescers, for the pool's `run()` to start.
    let added: AsyncStream<WriteCoalescer>
    private let adding: AsyncStream<WriteCoalescer>.Continuation

    init() {
        (self.added, self.adding) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// Registers a coalescer for the pool's `run()`. One made during the shutdown is shut down
    /// at once; one made after the pool's `run()` ended fails its writes with
    /// ``LifeguardError/Code/shutdown``, as nothing will flush them.
    func add(_ coalescer: WriteCoalescer) {
        let (shuttingDown, runOver) = self.state.withLock { state in
            state.all.append(coalescer)
            if !state.isRunOver { state.unfinished += 1 }
            return (state.isShuttingDown, state.isRunOver)
        }
        if runOver {
            coalescer.failQueued()
            return
        }
        if shuttingDown { coalescer.shutdown() }
        self.adding.yield(coalescer)
    }

    /// The pool's `run()` begins: `false` when it already began (a second `run()`).
    func beginRun() -> Bool {
        self.state.withLock { state in
            defer { state.isRunStarted = true }
            return !state.isRunStarted
        }
    }

    /// The pool's `run()` starts a coalescer.
    func started(_ coalescer: WriteCoalescer) {
        self.state.withLock { _ = $0.started.insert(ObjectIdentifier(coalescer)) }
    }

    /// A coalescer's `run()` returned; after the last, a pending shutdown of the pool goes on
    /// with what is left of its grace period.
    func ended(shuttingDownPool: (Duration?) -> Void) {
        let remaining = self.state.withLock { state -> Duration? in
            state.unfinished -= 1
            guard state.unfinished == 0, state.isShuttingDown, !state.isPoolShutDown, let deadline = state.deadline else { return nil }
            state.isPoolShutDown = true
            return max(.zero, ContinuousClock.now.duration(to: deadline))
        }
        if let remaining { shuttingDownPool(remaining) }
    }

    /// Shuts the coalescers down (they flush their queues at once), and the pool now if none
    /// has anything left to flush, or once the last is done, or when `gracePeriod` is over,
    /// whichever comes first. A second shutdown with a shorter grace period shortens it.
    func shutdown(gracePeriod: Duration, shuttingDownPool: @escaping @Sendable (Duration?) -> Void) {
        let deadline = ContinuousClock.now.advanced(by: gracePeriod)
        let (coalescers, now, timer) = self.state.withLock { state -> ([WriteCoalescer], Bool, Bool) in
            state.isShuttingDown = true
            guard !state.isPoolShutDown else { return ([], false, false) }
            if state.unfinished == 0 {
                state.isPoolShutDown = true
                return (state.all, true, false)
            }
            let sooner = state.deadline.map { deadline < $0 } ?? true
            if sooner { state.deadline = deadline }
            return (state.all, false, sooner)
        }
        for coalescer in coalescers { coalescer.shutdown() }
        if now { shuttingDownPool(gracePeriod) }
        if timer {
            Task {
                try? await Task.sleep(until: deadline, clock: .continuous)
                // The grace period is over and a flush still runs: the pool closes what is
                // leased, which ends the flush.
                let force = self.state.withLock { state in
                    defer { state.isPoolShutDown = true }
                    return !state.isPoolShutDown
                }
                if force { shuttingDownPool(.zero) }
            }
        }
    }

    /// The pool's `run()` ended: no coalescer will be started any more, and those never started
    /// fail what is queued in them.
    func finish() {
        let abandoned = self.state.withLock { state -> [WriteCoalescer] in
            state.isRunOver = true
            return state.all.filter { !state.started.contains(ObjectIdentifier($0)) }
        }
        self.adding.finish()
        for coalescer in abandoned { coalescer.failQueued() }
    }
}
