import Logging
import ServiceLifecycle
import Synchronization

/// A pool of connections with lanes, bounded fail-fast waits and cancellation safety.
///
/// The pool is a thin shell around ``PoolStateMachine``: one `Mutex` guards the machine and the
/// continuations of waiting requests; every decision is the machine's, and the shell carries out
/// its actions after releasing the lock. A lease that finds an idle connection takes the lock
/// once and never suspends; only a request that has to wait pays for a continuation.
///
/// Run the pool with ``run()`` (or add it to a ServiceLifecycle `ServiceGroup`): it opens,
/// resets, pings and closes connections and fires the pool's timers. On graceful shutdown it
/// stops granting leases, lets running ones finish within the grace period, then closes
/// everything.
///
/// ```swift
/// let pool = try ConnectionPool(configuration: configuration, factory: factory, logger: logger)
/// async let _ = pool.run()
/// let rows = try await pool.withConnection(lane: .retrieval) { connection in
///     try await connection.fetch(...)
/// }
/// ```
public final class ConnectionPool<Factory: ConnectionFactory>: Service, Sendable {
    /// The connection type handed to leases.
    public typealias Connection = Factory.Connection
    typealias Machine = PoolStateMachine<Connection, ContinuousClock.Instant>
    typealias Actions = PoolActions<Connection, ContinuousClock.Instant>
    typealias Outcome = Result<Grant<Connection>, any Error>
    typealias Resumption = (CheckedContinuation<Grant<Connection>, any Error>, Outcome)

    /// Everything the lock guards.
    struct Shared: ~Copyable {
        var machine: Machine
        /// Waiters suspended on their continuation.
        var waiting: [WaiterID: CheckedContinuation<Grant<Connection>, any Error>] = [:]
        /// Outcomes that arrived before their waiter attached its continuation.
        var resolvedEarly: [WaiterID: Outcome] = [:]
        var runStarted = false

        /// Pairs each waiter the actions resolve with its continuation, or parks the outcome
        /// until the waiter attaches.
        mutating func takeResumptions(for actions: Actions) -> [Resumption] {
            var resumptions: [Resumption] = []
            func resolve(_ id: WaiterID, _ outcome: Outcome) {
                if let continuation = self.waiting.removeValue(forKey: id) {
                    resumptions.append((continuation, outcome))
                } else {
                    self.resolvedEarly[id] = outcome
                }
            }
            for granted in actions.grants { resolve(granted.waiter, .success(granted.grant)) }
            for failed in actions.failures { resolve(failed.waiter, .failure(failed.error)) }
            for id in actions.cancelled { resolve(id, .failure(CancellationError())) }
            return resumptions
        }
    }

    /// Work for the ``run()`` loop's task group.
    enum BackgroundWork: Sendable {
        case connect(slot: Int)
        case reset(SlotConnection<Connection>)
        case ping(SlotConnection<Connection>)
        case close(SlotConnection<Connection>)
        case wakeUp(ContinuousClock.Instant)
        case finished
    }

    /// The pool's configuration, validated.
    public let configuration: PoolConfiguration
    let factory: Factory
    let logger: Logger
    /// The lanes in the machine's order, to find a lane's index without taking the lock.
    let lanes: [Lane]
    let shared: Mutex<Shared>
    let work: AsyncStream<BackgroundWork>
    let workContinuation: AsyncStream<BackgroundWork>.Continuation

    /// Creates a pool. It opens no connection until ``run()`` runs.
    ///
    /// - Parameters:
    ///   - configuration: Budget, lanes and connection health settings.
    ///   - factory: Opens, checks, resets and closes connections.
    ///   - logger: Receives connection failures and the pool's lifecycle.
    /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``
    ///   listing every problem of the configuration.
    public init(configuration: PoolConfiguration, factory: Factory, logger: Logger) throws(LifeguardError) {
        try configuration.validate()
        self.configuration = configuration
        self.factory = factory
        self.logger = logger
        let machine = Machine(configuration: configuration, seed: UInt64.random(in: .min ... .max))
        self.lanes = machine.lanes.map(\.lane)
        self.shared = Mutex(Shared(machine: machine))
        (self.work, self.workContinuation) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// A snapshot of connections, leases and queues.
    public func status() -> PoolStatus {
        self.shared.withLock { $0.machine.status }
    }

    // MARK: - Leases

    /// Leases a connection in a lane for the duration of `body`.
    ///
    /// The connection is returned on every path. If `body` throws or the task is cancelled,
    /// the connection is reset (``ConnectionFactory/reset(_:)``) before anyone else gets it, or
    /// closed and replaced if the reset fails or times out.
    ///
    /// - Parameters:
    ///   - lane: The kind of work; its limits and wait timeout apply.
    ///   - body: Uses the connection. Do not let the connection escape it.
    /// - Returns: What `body` returns.
    /// - Throws: ``LifeguardError`` (``LifeguardError/Code/waitTimeout``,
    ///   ``LifeguardError/Code/overloaded``, ``LifeguardError/Code/databaseUnavailable``,
    ///   ``LifeguardError/Code/shutdown``, ``LifeguardError/Code/unknownLane``),
    ///   `CancellationError` when the task was cancelled while waiting, or what `body` throws.
    public func withConnection<Value>(
        lane: Lane,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Connection) async throws -> Value
    ) async throws -> Value {
        let grant = try await self.lease(lane: lane)
        let value: Value
        do {
            value = try await body(grant.connection)
        } catch {
            self.release(grant, abandoned: true)
            throw error
        }
        self.release(grant, abandoned: Task.isCancelled)
        return value
    }

    /// Takes a connection for a lease: at once when one is idle, otherwise after waiting.
    func lease(lane: Lane, isolation: isolated (any Actor)? = #isolation) async throws -> Grant<Connection> {
        guard let laneIndex = self.lanes.firstIndex(of: lane) else {
            throw LifeguardError(
                code: .unknownLane, lane: lane,
                problems: ["Configured lanes: \(self.lanes.map(\.name).joined(separator: ", ")). Add it to configuration.lanes."])
        }
        var brokenInARow = 0
        while true {
            try Task.checkCancellation()
            let now = ContinuousClock.now
            let (decision, resumptions) = self.shared.withLock { shared in
                let decision = shared.machine.lease(lane: laneIndex, now: now)
                guard case .wait(_, let actions) = decision, actions.resolvesWaiters else { return (decision, [Resumption]()) }
                return (decision, shared.takeResumptions(for: actions))
            }
            let grant: Grant<Connection>
            switch decision {
            case .granted(let granted):
                grant = granted
            case .failed(let error):
                throw error
            case .wait(let id, let actions):
                self.resume(resumptions)
                self.dispatch(actions)
                grant = try await self.waitForGrant(id, lane: laneIndex)
                if Task.isCancelled {
                    // The grant raced the cancellation: hand the connection straight back.
                    self.release(grant, abandoned: false)
                    throw CancellationError()
                }
            }
            if self.factory.condition(of: grant.connection) == .broken {
                self.release(grant, abandoned: false)
                brokenInARow += 1
                if brokenInARow > self.configuration.budget {
                    throw LifeguardError.databaseUnavailable(lane: lane, waited: now.duration(to: .now), lastError: nil)
                }
                continue
            }
            if grant.needsValidation {
                let connection = grant.connection
                let factory = self.factory
                let valid = await succeeds(
                    within: self.configuration.pingTimeout,
                    { try await factory.validate(connection) },
                    onTimeout: { await factory.close(connection) })
                if !valid {
                    self.release(grant, disposition: .close)
                    continue
                }
            }
            return grant
        }
    }

    private func waitForGrant(_ id: WaiterID, lane: Int) async throws -> Grant<Connection> {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Grant<Connection>, any Error>) in
                let early = self.shared.withLock { shared -> Outcome? in
                    if let outcome = shared.resolvedEarly.removeValue(forKey: id) { return outcome }
                    shared.waiting[id] = continuation
                    return nil
                }
                if let early {
                    continuation.resume(with: early)
                }
            }
        } onCancel: {
            self.apply { machine, _ in machine.cancelWaiter(id, lane: lane) }
        }
    }

    /// Ends a lease: the connection goes back to idle or to the next waiter, or is reset or
    /// closed, depending on how the lease ended and what the factory says of it.
    func release(_ grant: Grant<Connection>, abandoned: Bool) {
        let disposition: ReleaseDisposition
        switch self.factory.condition(of: grant.connection) {
        case .broken: disposition = .close
        case .needsReset: disposition = .reset
        case .reusable: disposition = abandoned ? .reset : .reuse
        }
        self.release(grant, disposition: disposition)
    }

    private func release(_ grant: Grant<Connection>, disposition: ReleaseDisposition) {
        self.apply { machine, now in machine.release(grant, disposition: disposition, now: now) }
    }

    // MARK: - Running

    /// Runs the pool's background work until it has shut down: opening, resetting, pinging and
    /// closing connections, and its timers.
    ///
    /// Graceful shutdown (ServiceLifecycle) or ``shutdown(gracePeriod:)`` drains the pool;
    /// cancelling the task closes every connection at once.
    public func run() async {
        let alreadyRunning = self.shared.withLock { shared in
            defer { shared.runStarted = true }
            return shared.runStarted
        }
        guard !alreadyRunning else {
            self.logger.error("Lifeguard: run() was called twice on the same pool; the second call returns at once")
            return
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    self.apply { machine, now in machine.tick(now: now) }
                    for await work in self.work {
                        if case .finished = work { break }
                        group.addTask { await self.perform(work) }
                    }
                    group.cancelAll()
                }
            } onGracefulShutdown: {
                self.shutdown()
            }
        } onCancel: {
            self.shutdown(gracePeriod: .zero)
        }
        // Cancelled: the loop may have stopped before it carried out the last closes.
        let remaining = self.shared.withLock { $0.machine.connectionsToCloseNow() }
        await withDiscardingTaskGroup { group in
            for connection in remaining {
                group.addTask { await self.factory.close(connection) }
            }
        }
        self.logger.debug("Lifeguard: pool stopped")
    }

    /// Stops granting leases and drains the pool: waiters fail with
    /// ``LifeguardError/Code/shutdown``, idle connections close, running leases may finish
    /// within the grace period. ``run()`` returns once every connection is closed.
    ///
    /// - Parameter gracePeriod: How long running leases may continue; `nil` uses
    ///   ``PoolConfiguration/shutdownGracePeriod``.
    public func shutdown(gracePeriod: Duration? = nil) {
        let grace = gracePeriod ?? self.configuration.shutdownGracePeriod
        self.apply { machine, now in machine.shutdown(gracePeriod: grace, now: now) }
    }

    private func perform(_ work: BackgroundWork) async {
        switch work {
        case .connect(let slot):
            do {
                let connection = try await self.factory.connect()
                self.apply { machine, now in machine.connectionEstablished(slot: slot, connection: connection, now: now) }
            } catch {
                self.logger.warning("Lifeguard: could not open a connection", metadata: ["error": "\(String(describing: error))"])
                self.apply { machine, now in machine.connectionFailed(slot: slot, error: error, now: now) }
            }
        case .reset(let target):
            let factory = self.factory
            let succeeded = await succeeds(
                within: self.configuration.resetTimeout,
                { try await factory.reset(target.connection) },
                onTimeout: { await factory.close(target.connection) })
            if !succeeded {
                self.logger.debug("Lifeguard: reset failed or timed out; closing the connection")
            }
            self.apply { machine, now in machine.resetCompleted(slot: target.slot, succeeded: succeeded, now: now) }
        case .ping(let target):
            let factory = self.factory
            let succeeded = await succeeds(
                within: self.configuration.pingTimeout,
                { try await factory.validate(target.connection) },
                onTimeout: { await factory.close(target.connection) })
            self.apply { machine, now in machine.pingCompleted(slot: target.slot, succeeded: succeeded, now: now) }
        case .close(let target):
            await self.factory.close(target.connection)
            self.apply { machine, now in machine.connectionClosed(slot: target.slot, now: now) }
        case .wakeUp(let instant):
            do {
                try await Task.sleep(until: instant, clock: .continuous)
            } catch {
                return
            }
            self.apply { machine, now in machine.tick(now: now) }
        case .finished:
            break
        }
    }

    // MARK: - Carrying out actions

    /// Applies an event to the machine under the lock, then, unlocked, resumes the waiters it
    /// resolved and hands its background work to ``run()``.
    private func apply(_ event: (inout Machine, ContinuousClock.Instant) -> Actions) {
        let now = ContinuousClock.now
        let (actions, resumptions) = self.shared.withLock { shared in
            let actions = event(&shared.machine, now)
            guard actions.resolvesWaiters else { return (actions, [Resumption]()) }
            return (actions, shared.takeResumptions(for: actions))
        }
        self.resume(resumptions)
        self.dispatch(actions)
    }

    private func resume(_ resumptions: [Resumption]) {
        for (continuation, outcome) in resumptions {
            continuation.resume(with: outcome)
        }
    }

    private func dispatch(_ actions: Actions) {
        guard actions.hasBackgroundWork else { return }
        for slot in actions.connect { self.workContinuation.yield(.connect(slot: slot)) }
        for target in actions.reset { self.workContinuation.yield(.reset(target)) }
        for target in actions.ping { self.workContinuation.yield(.ping(target)) }
        for target in actions.close { self.workContinuation.yield(.close(target)) }
        if let instant = actions.wakeUp { self.workContinuation.yield(.wakeUp(instant)) }
        if actions.finished { self.workContinuation.yield(.finished) }
    }
}

/// Runs `operation`, giving up after `timeout`: then `onTimeout` runs (e.g. closing the
/// connection) and the result is `false`.
///
/// The race is unstructured on purpose: an operation stuck on a dead connection (some drivers
/// never complete a request written to a closed socket) must not hold up the pool, so the caller
/// resumes at the timeout and the operation is cancelled and left to end on its own.
func succeeds(
    within timeout: Duration,
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
                try? await Task.sleep(for: timeout)
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
