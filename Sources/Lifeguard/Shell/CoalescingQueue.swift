import Logging
import ServiceLifecycle
import Synchronization

/// The shell of a write coalescer: it guards a ``CoalescerStateMachine`` and the continuations
/// of its writers and parked flushers with one `Mutex`, and carries out what the machine
/// decides: resumes writers and flushers, and waits out a batch's delay on the pool's clock
/// (timers with ids, cancelled when a wake-up makes them stale). What a batch does is the
/// adapter's: ``run(flushingWith:)`` hands each batch to it, and it reports each write's
/// outcome with ``resolve(_:with:)``.
package final class CoalescingQueue<Write: Sendable, Clock: PoolClock>: Sendable {
    package typealias Machine = CoalescerStateMachine<Write>
    /// A batch's writes, in order.
    package typealias Batch = [Machine.Submitted]

    /// A flusher's wait for its next step: `nil` when woken, to ask the machine again.
    private typealias Parked = CheckedContinuation<Machine.FlusherStep?, Never>

    /// What became of a write at its submission, for the shell to carry out unlocked.
    private enum Accepted {
        /// Submitted; wake this flusher, if any.
        case yes(Parked?)
        case refused
        case cancelled
    }

    private struct State {
        var machine: Machine
        /// Writers not resolved yet: waiting for room, queued, or in a batch.
        var writers: [Machine.WriteID: CheckedContinuation<Void, any Error>] = [:]
        /// Parked flushers, by index: resumed with `nil` to ask the machine again.
        var parked: [Int: Parked] = [:]
        var timers = TimerTable()
        /// Calls of `run()` waiting for the first to end.
        var runWaiters: [CheckedContinuation<Void, Never>] = []

        /// Takes the continuations of woken flushers and cancels their timers.
        mutating func take(_ wakes: some Sequence<Machine.Wake>) -> [Parked] {
            wakes.compactMap { wake in
                self.timers.cancel(wake.timer)
                return self.parked.removeValue(forKey: wake.flusher)
            }
        }
    }

    private let state: Mutex<State>
    private let clock: Clock
    private let logger: Logger
    /// The error for a write refused or never sent because the coalescer stopped.
    private let stopped: @Sendable () -> any Error

    /// Creates the queue; nothing is flushed until ``run(flushingWith:)`` runs.
    ///
    /// - Parameters:
    ///   - configuration: How writes are grouped (validated by the caller).
    ///   - clock: Where the delay of a batch is waited out.
    ///   - logger: Where a misuse (a second `run()`) is reported.
    ///   - stopped: The error of a write refused at, or never sent after, a shutdown.
    package init(
        configuration: Machine.Configuration, clock: Clock, logger: Logger, stopped: @escaping @Sendable () -> any Error
    ) {
        self.state = Mutex(State(machine: Machine(configuration: configuration)))
        self.clock = clock
        self.logger = logger
        self.stopped = stopped
    }

    /// How many flushers run: batches in flight at once.
    package var flushers: Int { self.state.withLock { $0.machine.configuration.flushers } }

    /// How many writes are queued, and how many wait for room.
    package var counts: (queued: Int, waitingForRoom: Int) {
        self.state.withLock { $0.machine.counts }
    }

    /// Submits `write` and returns once its batch reported it done (``resolve(_:with:)``).
    ///
    /// - Throws: The error its batch reported; the `stopped` error when the coalescer takes
    ///   no more writes, or stopped before sending it; `CancellationError` when the task was
    ///   cancelled before a batch took it.
    package func submit(_ write: Write) async throws {
        try Task.checkCancellation()
        let id = self.state.withLock { $0.machine.reserveID() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (writer: CheckedContinuation<Void, any Error>) in
                let now = self.clock.now
                let accepted = self.state.withLock { state -> Accepted in
                    // Checked under the lock the cancellation handler takes: a cancel either
                    // finds this write submitted, or this finds the task cancelled.
                    guard !Task.isCancelled else { return .cancelled }
                    switch state.machine.submit(write, id: id, now: now) {
                    case .refused:
                        return .refused
                    case .waitingForRoom:
                        state.writers[id] = writer
                        return .yes(nil)
                    case .queued(let wake):
                        state.writers[id] = writer
                        return .yes(wake.flatMap { state.take([$0]).first })
                    }
                }
                switch accepted {
                case .yes(let flusher): flusher?.resume(returning: nil)
                case .refused: writer.resume(throwing: self.stopped())
                case .cancelled: writer.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let writer = self.state.withLock { state in
                state.machine.cancel(id) ? state.writers.removeValue(forKey: id) : nil
            }
            writer?.resume(throwing: CancellationError())
        }
    }

    /// Reports the outcome of a write of a batch: its writer's ``submit(_:)`` returns or throws.
    package func resolve(_ id: Machine.WriteID, with result: Result<Void, any Error>) {
        let writer = self.state.withLock { $0.writers.removeValue(forKey: id) }
        writer?.resume(with: result)
    }

    /// Runs the flushers, each handing its batches to `flush`, until a graceful shutdown has
    /// flushed everything submitted, or the task is cancelled (batches under way end first;
    /// writes not sent fail with the `stopped` error). A second call only waits for the first
    /// to return.
    package func run(flushingWith flush: @escaping @Sendable (Batch) async -> Void) async {
        switch self.state.withLock({ $0.machine.startRun() }) {
        case .first:
            break
        case .alreadyRunning, .alreadyEnded:
            self.logger.error("Lifeguard: WriteCoalescer.run() was called twice on the same coalescer (a pool's writeCoalescer() is run by the pool); the second call only waits for the first to return")
            await self.awaitRunEnded()
            return
        }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for flusher in 0..<self.flushers {
                    group.addTask { await self.flushUntilStopped(flusher, flush: flush) }
                }
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
        // Cancelled: nothing flushes any more. Writes still queued were never sent.
        self.abandon()
        let waiting = self.state.withLock { state in
            state.machine.endRun()
            defer { state.runWaiters.removeAll() }
            return state.runWaiters
        }
        for waiter in waiting { waiter.resume() }
    }

    /// Takes no new writes; what was submitted is still flushed, at once (a batch waiting out
    /// its delay goes now).
    package func shutdown() {
        let flushers = self.state.withLock { $0.take($0.machine.shutdown()) }
        for flusher in flushers { flusher.resume(returning: nil) }
    }

    /// Sends nothing more: fails the writes not sent with the `stopped` error, and stops the
    /// flushers once their batches under way end.
    package func abandon() {
        let (writers, flushers) = self.state.withLock { state in
            let (unsent, woken) = state.machine.abandon()
            let flushers = state.take(woken)
            state.timers.cancelAll()
            return (unsent.compactMap { state.writers.removeValue(forKey: $0) }, flushers)
        }
        for flusher in flushers { flusher.resume(returning: nil) }
        let error = self.stopped()
        for writer in writers { writer.resume(throwing: error) }
    }

    private func flushUntilStopped(_ flusher: Int, flush: @Sendable (Batch) async -> Void) async {
        while true {
            let step = await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: Parked) in
                    let now = self.clock.now
                    // Parks under the same lock as the machine's decision to park, so that a
                    // wake-up always finds the continuation stored.
                    let step = self.state.withLock { state -> Machine.FlusherStep in
                        guard !Task.isCancelled else { return .stop }
                        let step = state.machine.nextStep(flusher: flusher, now: now)
                        if case .park = step { state.parked[flusher] = continuation }
                        return step
                    }
                    switch step {
                    case .park(let deadline?, let timer): self.schedule(timer, for: flusher, at: deadline)
                    case .park(nil, _): break
                    case .flush, .stop: continuation.resume(returning: step)
                    }
                }
            } onCancel: {
                // The run was cancelled: nothing is sent any more.
                self.abandon()
            }
            switch step {
            case .flush(let batch)?: await flush(batch)
            case .stop?: return
            case .park?, nil: continue  // woken: ask again
            }
        }
    }

    /// Wakes `flusher` at `deadline` unless a wake-up cancels the timer first.
    private func schedule(_ timer: TimerID, for flusher: Int, at deadline: PoolInstant) {
        let task = Task { [clock] in
            guard (try? await clock.sleep(until: deadline)) != nil else { return }
            let parked = self.state.withLock { state -> Parked? in
                state.timers.fired(timer)
                guard state.machine.delayElapsed(flusher: flusher, timer: timer) else { return nil }
                return state.parked.removeValue(forKey: flusher)
            }
            parked?.resume(returning: nil)
        }
        self.state.withLock { $0.timers.scheduled(task, for: timer) }
    }

    /// Returns once the first `run()` has returned.
    private func awaitRunEnded() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ended = self.state.withLock { state in
                if !state.machine.runEnded { state.runWaiters.append(continuation) }
                return state.machine.runEnded
            }
            if ended { continuation.resume() }
        }
    }
}
