import Lifeguard
import Synchronization

/// The write coalescers a ``PostgresPool`` runs itself (``PostgresPool/writeCoalescer(configuration:)``),
/// and the order of their shutdown: on the pool's shutdown they stop taking writes and flush
/// what is queued, and only once every one of them has stopped does the pool stop granting
/// leases, so that no queued write is refused for want of a connection.
final class PoolCoalescers: Sendable {
    private struct State {
        var all: [WriteCoalescer] = []
        /// Coalescers whose `run()` the pool started and that have not returned.
        var running = 0
        /// The pool's shutdown, asked for while coalescers still ran: carried out when the last
        /// one returns.
        var pendingShutdown: Duration?? = nil
        var isShuttingDown = false
    }

    private let state = Mutex(State())
    /// New coalescers, for the pool's `run()` to start.
    let added: AsyncStream<WriteCoalescer>
    private let adding: AsyncStream<WriteCoalescer>.Continuation

    init() {
        (self.added, self.adding) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// Registers a coalescer for the pool's `run()`; one made during the shutdown is shut down
    /// at once (its writes fail with ``LifeguardError/Code/shutdown``).
    func add(_ coalescer: WriteCoalescer) {
        let shuttingDown = self.state.withLock { state in
            state.all.append(coalescer)
            return state.isShuttingDown
        }
        if shuttingDown { coalescer.shutdown() }
        self.adding.yield(coalescer)
    }

    /// The pool's `run()` starts a coalescer.
    func started() {
        self.state.withLock { $0.running += 1 }
    }

    /// A coalescer's `run()` returned; the last one carries out the pool's pending shutdown.
    func ended(shuttingDownPool: (Duration?) -> Void) {
        let pending = self.state.withLock { state -> Duration?? in
            state.running -= 1
            guard state.running == 0, let pending = state.pendingShutdown else { return nil }
            state.pendingShutdown = nil
            return pending
        }
        if let pending { shuttingDownPool(pending) }
    }

    /// Shuts the coalescers down (they flush their queues), and shuts the pool down now if none
    /// runs, or once the last returns.
    func shutdown(gracePeriod: Duration?, shuttingDownPool: (Duration?) -> Void) {
        let (coalescers, now) = self.state.withLock { state -> ([WriteCoalescer], Bool) in
            state.isShuttingDown = true
            if state.running == 0 { return (state.all, true) }
            state.pendingShutdown = .some(gracePeriod)
            return (state.all, false)
        }
        for coalescer in coalescers { coalescer.shutdown() }
        if now { shuttingDownPool(gracePeriod) }
    }

    /// No more coalescers will be started: the pool's `run()` is ending.
    func finish() {
        self.adding.finish()
    }
}
