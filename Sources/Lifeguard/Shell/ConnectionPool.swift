import CoreMetrics
import Logging
import ServiceLifecycle
import Synchronization
import Tracing

/// A pool of connections with lanes, bounded fail-fast waits and cancellation safety.
///
/// The pool is a thin shell around its state machine: one `Mutex` guards the machine, the
/// connections (by slot) and the continuations of waiting requests; every decision is the
/// machine's, and the shell carries out its actions after releasing the lock. A lease that finds
/// an idle connection takes the lock once and never suspends; only a request that has to wait
/// pays for a continuation. The lease and release fast paths are inlinable, so that they are
/// specialized for the adapter's connection type instead of going through generic metadata.
///
/// Run the pool with ``run()`` (or add it to a ServiceLifecycle `ServiceGroup`): it opens,
/// resets, pings and closes connections, and exports metrics. On graceful shutdown it stops
/// granting leases, lets running ones finish within the grace period, then closes everything.
///
/// The pool reads time from its `Clock` and waits on it: ``SystemPoolClock`` unless you pass
/// another (a test's manual clock) to ``init(configuration:factory:clock:logger:metricsFactory:tracer:)``.
/// Its timers (wait deadlines, housekeeping, reconnect probes, the grace period) are the
/// machine's, each with an id, and one that a sooner one supersedes is cancelled.
///
/// ```swift
/// let pool = try ConnectionPool(configuration: configuration, factory: factory, logger: logger)
/// async let _ = pool.run()
/// let rows = try await pool.withConnection(lane: .retrieval) { connection in
///     try await connection.fetch(...)
/// }
/// ```
public final class ConnectionPool<Factory: ConnectionFactory, Clock: PoolClock>: Service, Sendable {
    /// The connection type the factory opens.
    public typealias Connection = Factory.Connection
    /// What a lease's body gets: the connection, or the adapter's view of it
    /// (``ConnectionFactory/withLease(of:lane:isolation:_:)``).
    public typealias Lease = Factory.Lease

    /// A granted lease: the machine's grant and the connection of its slot.
    @usableFromInline
    struct LeasedSlot: Sendable {
        @usableFromInline let grant: Grant
        @usableFromInline let connection: Connection

        @usableFromInline init(grant: Grant, connection: Connection) {
            self.grant = grant
            self.connection = connection
        }
    }

    @usableFromInline typealias Outcome = Result<LeasedSlot, any Error>
    /// A waiter's continuation. Unsafe rather than checked: the waiter table holds each one
    /// exactly once, and ``Shared/settle(_:)`` takes it out as it resolves the
    /// waiter, so it is resumed once (a second resolution stops at a precondition). A checked
    /// continuation would allocate a canary per wait, and its opaque layout made every table
    /// operation go through value witnesses.
    @usableFromInline typealias Waiting = UnsafeContinuation<LeasedSlot, any Error>
    @usableFromInline typealias Resumption = (Waiting, Outcome)

    /// Work for the ``run()`` loop's task group.
    @usableFromInline
    enum BackgroundWork: Sendable {
        case connect(slot: Int)
        case reset(slot: Int, Connection)
        case ping(slot: Int, Connection)
        case close(slot: Int, Connection)
        case finished
    }

    /// What the shell does, unlocked, after an event: resume waiters, start background work,
    /// schedule and cancel timers.
    @usableFromInline
    struct Settlement: Sendable {
        @usableFromInline var resumptions: [Resumption] = []
        @usableFromInline var work: [BackgroundWork] = []
        @usableFromInline var timer: PoolTimer?
        @usableFromInline var cancelledTimer: TimerID?

        @usableFromInline init() {}
    }

    /// Everything the lock guards.
    @usableFromInline
    struct Shared: ~Copyable {
        @usableFromInline var machine: PoolStateMachine
        /// The connection of each slot; `nil` while the slot is free or opening.
        @usableFromInline var connections: [Connection?] = []
        /// Waiters suspended on their continuation. A waiter is queued in the machine and its
        /// continuation stored here under the same lock, so every waiter the machine resolves
        /// has one.
        @usableFromInline var waiting = WaiterTable<Waiting>()
        @usableFromInline var runStarted = false

        init(machine: PoolStateMachine) {
            self.machine = machine
        }

        /// Turns the machine's actions into what the shell does once unlocked: each resolved
        /// waiter paired with its continuation, and background work carrying the connections
        /// it concerns.
        @inlinable
        mutating func settle(_ actions: PoolActions) -> Settlement {
            var settlement = Settlement()
            func resolve(_ id: WaiterID, _ outcome: Outcome) {
                guard let continuation = self.waiting.remove(id) else {
                    preconditionFailure("Lifeguard: \(id) was resolved but never stored its continuation")
                }
                settlement.resumptions.append((continuation, outcome))
            }
            for granted in actions.grants {
                resolve(granted.waiter, .success(LeasedSlot(grant: granted.grant, connection: self.connections[granted.grant.slot]!)))
            }
            for failed in actions.failures {
                var error = failed.error
                if !self.runStarted, error.code == .waitTimeout, let lane = error.lane {
                    // Nothing could have served it: say why.
                    error = .notRunning(lane: lane, waited: error.waited ?? .zero, queueDepth: error.queueDepth ?? 0)
                }
                resolve(failed.waiter, .failure(error))
            }
            for id in actions.cancelled { resolve(id, .failure(CancellationError())) }
            for slot in actions.connect {
                while self.connections.count <= slot { self.connections.append(nil) }
                settlement.work.append(.connect(slot: slot))
            }
            for slot in actions.reset { settlement.work.append(.reset(slot: slot, self.connections[slot]!)) }
            for slot in actions.ping { settlement.work.append(.ping(slot: slot, self.connections[slot]!)) }
            for slot in actions.close { settlement.work.append(.close(slot: slot, self.connections[slot]!)) }
            settlement.timer = actions.timer
            settlement.cancelledTimer = actions.cancelledTimer
            if actions.finished { settlement.work.append(.finished) }
            return settlement
        }
    }

    /// The pool's configuration, validated.
    public let configuration: PoolConfiguration
    @usableFromInline package let factory: Factory
    /// Where the pool reads the time, and waits on it.
    @usableFromInline package let clock: Clock
    /// The machine's timers that are scheduled and have not fired.
    @usableFromInline let timers = Mutex(TimerTable())
    /// Tests waiting for a status (see ``status(where:)``).
    @usableFromInline let statusWatchers = StatusWatchers()
    package let logger: Logger
    /// Services that work through the pool's connections, run and shut down with it.
    let companions: PoolCompanions<Clock>
    /// The lanes in the machine's order, to find a lane's index without taking the lock.
    @usableFromInline let lanes: [Lane]
    @usableFromInline let shared: Mutex<Shared>
    /// The next waiter's identity, reserved before its request takes the lock.
    @usableFromInline let waiterIDs = Atomic<Int>(0)
    let work: AsyncStream<BackgroundWork>
    @usableFromInline let workContinuation: AsyncStream<BackgroundWork>.Continuation
    let metrics: MetricsExporter
    /// The tracer of lease spans, `nil` when there is none (the bootstrapped tracer is the
    /// no-op one): the lease path then pays one comparison for tracing.
    @usableFromInline let tracer: (any Tracer)?
    /// Whether ``tracer`` is set: what the lease path tests. Unwrapping the tracer there would
    /// copy the existential and destroy the copy, through its value witnesses, on every lease
    /// (+12% instructions per uncontended cycle, with no tracer at all).
    @usableFromInline let isTraced: Bool
    let incidents = Mutex(IncidentTracker())
    /// What the watchdog reports, and what a lease inside a generation step gets.
    let watchdogRules: WatchdogRules

    /// Creates a pool on `clock`. It opens no connection until ``run()`` runs.
    ///
    /// - Parameters:
    ///   - configuration: Budget, lanes and connection health settings.
    ///   - factory: Opens, checks, resets and closes connections.
    ///   - clock: Where the pool reads the time and waits: its timeouts, housekeeping,
    ///     watchdog and metrics export all run on it.
    ///   - logger: Receives connection failures, watchdog findings and the pool's lifecycle.
    ///   - metricsFactory: Where metrics go, once per `metricsInterval` (1 s) while ``run()`` runs;
    ///     default: swift-metrics' bootstrapped backend (`MetricsSystem.factory`).
    ///   - tracer: Records a span per lease, from the request to the release, as a child of the
    ///     task's current span: its lane, its wait and its outcome (README, "Seeing the pool"). Default: the
    ///     tracer bootstrapped with swift-distributed-tracing's `InstrumentationSystem` (or set
    ///     with `withTracer`) when the pool is created, so bootstrap first. With none, or the
    ///     no-op tracer, a lease costs what it costs untraced: one comparison more.
    /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``
    ///   listing every problem of the configuration.
    public init(
        configuration: PoolConfiguration, factory: Factory, clock: Clock, logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil, tracer: (any Tracer)? = nil
    ) throws(LifeguardError) {
        try configuration.validate()
        self.configuration = configuration
        self.factory = factory
        self.clock = clock
        self.logger = logger
        self.tracer = Self.recordingTracer(tracer)
        self.isTraced = self.tracer != nil
        self.watchdogRules = WatchdogRules(configuration)
        let machine = PoolStateMachine(configuration: configuration, seed: UInt64.random(in: .min ... .max), now: clock.now)
        self.lanes = machine.lanes.map(\.lane)
        self.metrics = MetricsExporter(
            laneNames: self.lanes.map(\.name), configuration: configuration, factory: metricsFactory ?? MetricsSystem.factory)
        self.shared = Mutex(Shared(machine: machine))
        self.companions = PoolCompanions(clock: clock)
        (self.work, self.workContinuation) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// A snapshot of connections, leases and queues.
    public func status() -> PoolStatus {
        self.shared.withLock { $0.machine.status }
    }

    /// How many more leases `lane` could hold before a request queues: its limit less what it
    /// holds and what waits; below zero, how many more wait than it holds at its limit
    /// (`Int.min` for a lane the pool lacks). Reservations of other lanes and connections
    /// still to be opened can make a grant wait even so: it is for choosing between pools
    /// (``LifeguardPostgres``'s cluster), not a promise.
    package func spareLeases(in lane: Lane) -> Int {
        guard let index = self.lanes.firstIndex(of: lane) else { return .min }
        return self.shared.withLock { shared in
            let state = shared.machine.lanes[index]
            return state.limit - state.leased - state.waiters.count
        }
    }

    /// What the pool observed over its last one or two statistics windows: waits, holds and
    /// outcomes by lane, time-weighted utilization, connections opened and closed.
    ///
    /// The lock is held only to copy the recorded data; percentiles are computed after.
    public func statistics() -> PoolStatistics {
        let now = self.clock.now
        let inputs = self.shared.withLock { $0.machine.statisticsInputs }
        return inputs.snapshot(now: now)
    }

    /// Pool sizes advised from ``statistics()`` by Little's law, with the reasoning.
    public func sizingAdvice() -> SizingAdvice {
        SizingAdvice(statistics: self.statistics())
    }

    /// A human-readable report of ``statistics()`` and ``sizingAdvice()``.
    public func report() -> String {
        self.statistics().report
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
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Uses the lease (the connection, or the adapter's view of it). Do not let it
    ///     escape.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    /// - Returns: What `body` returns.
    /// - Throws: ``LifeguardError`` (``LifeguardError/Code/waitTimeout``,
    ///   ``LifeguardError/Code/overloaded``, ``LifeguardError/Code/databaseUnavailable``,
    ///   ``LifeguardError/Code/shutdown``, ``LifeguardError/Code/unknownLane``),
    ///   `CancellationError` when the task was cancelled while waiting, or what `body` throws.
    @inlinable @inline(__always)
    public func withConnection<Value>(
        lane: Lane,
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Lease) async throws -> Value
    ) async throws -> Value {
        try await self.withConnection(
            lane: lane, callSite: CallSite(fileID: fileID, line: line, function: function), admittedWhole: false,
            isolation: isolation, body)
    }

    /// ``withConnection(lane:fileID:line:function:isolation:_:)``, for a lease of a fan-out
    /// admitted whole when `admittedWhole` (the machine does not judge it again on its own).
    @inlinable @inline(__always)
    func withConnection<Value>(
        lane: Lane,
        callSite: CallSite,
        admittedWhole: Bool,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Lease) async throws -> Value
    ) async throws -> Value {
        if self.isTraced {
            return try await self.withTracedConnection(
                lane: lane, callSite: callSite, admittedWhole: admittedWhole, isolation: isolation, body)
        }
        // The fast path is synchronous: no async call, so no frame to allocate and no executor
        // check, before the body runs.
        let lease: LeasedSlot
        switch try self.leaseIfIdle(lane: lane, callSite: callSite) {
        case .leased(let idle):
            lease = idle
        case .slowly(let laneIndex, let first):
            lease = try await self.leaseSlowly(index: laneIndex, callSite: callSite, admittedWhole: admittedWhole, first: first)
        }
        return try await self.use(lease, lane: lane, isolation: isolation, body)
    }

    /// Runs `body` on `lease`, then releases it: abandoned when `body` threw or the task was
    /// cancelled.
    @inlinable @inline(__always)
    func use<Value>(
        _ lease: LeasedSlot, lane: Lane, isolation: isolated (any Actor)?, _ body: (Lease) async throws -> Value
    ) async throws -> Value {
        let value: Value
        do {
            value = try await self.factory.withLease(of: lease.connection, lane: lane, isolation: isolation, body)
        } catch {
            self.release(lease, abandoned: true, cancelled: Task.isCancelled)
            throw error
        }
        let cancelled = Task.isCancelled
        self.release(lease, abandoned: cancelled, cancelled: cancelled)
        return value
    }

    /// A lease in its span (``LeaseSpan``), `body` run in the span's context so that the spans
    /// of its statements are the lease's children. The lease itself is taken as
    /// ``withConnection(lane:callSite:admittedWhole:isolation:_:)`` takes it (the fast path
    /// written out again rather than called: an async call there would cost the untraced path
    /// a hop and a frame).
    @inlinable @inline(never)
    func withTracedConnection<Value>(
        lane: Lane, callSite: CallSite, admittedWhole: Bool,
        isolation: isolated (any Actor)?, _ body: (Lease) async throws -> Value
    ) async throws -> Value {
        let span = LeaseSpan(tracer: self.tracer ?? NoOpTracer(), poolName: self.configuration.name, lane: lane, callSite: callSite, now: self.clock.now)
        let lease: LeasedSlot
        do {
            switch try self.leaseIfIdle(lane: lane, callSite: callSite) {
            case .leased(let idle):
                lease = idle
            case .slowly(let laneIndex, let first):
                lease = try await self.leaseSlowly(index: laneIndex, callSite: callSite, admittedWhole: admittedWhole, first: first)
            }
        } catch {
            span.refused(error)
            throw error
        }
        span.granted(now: self.clock.now)
        do {
            let value = try await InstrumentationContext.$current.withValue(span.span.context, operation: {
                try await self.use(lease, lane: lane, isolation: isolation, body)
            }, isolation: isolation)
            span.ended(throwing: nil)
            return value
        } catch {
            span.ended(throwing: error)
            throw error
        }
    }

    /// The tracer to record with: `tracer`, or the bootstrapped one when `nil`; `nil` when that
    /// is the no-op tracer.
    package static func recordingTracer(_ tracer: (any Tracer)?) -> (any Tracer)? {
        let tracer = tracer ?? InstrumentationSystem.tracer
        return tracer is NoOpTracer ? nil : tracer
    }

    /// What the fast path found.
    @usableFromInline
    enum FastLease {
        /// An idle, healthy connection: use it.
        case leased(LeasedSlot)
        /// Go the slow way, with the lane's index and the connection the fast path took, if
        /// any (one to validate, or one that looks broken).
        case slowly(laneIndex: Int, first: LeasedSlot?)
    }

    /// The fast path: takes the lock once and does not suspend. It leases an idle, healthy
    /// connection when the lane has room; anything else is left to ``leaseSlowly``. A cancelled
    /// task gets `CancellationError` here, before the pool counts it. While the lane has
    /// waiters the machine refuses, so that no one passes them.
    @inlinable
    func leaseIfIdle(lane: Lane, callSite: CallSite?) throws -> FastLease {
        guard let laneIndex = self.lanes.firstIndex(of: lane) else {
            throw self.unknownLane(lane)
        }
        if let step = GenerationStep.current {
            try self.leaseDuringGeneration(step: step, lane: lane, callSite: callSite)
        }
        guard !Task.isCancelled else { throw CancellationError() }
        let now = self.clock.now
        let immediate: LeasedSlot? = self.shared.withLock { shared in
            guard let grant = shared.machine.leaseIfIdle(lane: laneIndex, now: now, callSite: callSite) else { return nil }
            return LeasedSlot(grant: grant, connection: shared.connections[grant.slot]!)
        }
        guard let immediate else { return .slowly(laneIndex: laneIndex, first: nil) }
        if !immediate.grant.needsValidation && self.factory.condition(of: immediate.connection) != .broken {
            return .leased(immediate)
        }
        return .slowly(laneIndex: laneIndex, first: immediate)
    }

    /// Everything but the fast path: waiting, broken connections, validation. Inlinable like
    /// the fast path, so that waiting is specialized for the connection type too: unspecialized,
    /// its generic metadata lookups ran under the lock and made it contended. Always inlined
    /// into the lease: when the optimizer left it apart, each wait paid for one more async
    /// frame and value-witness calls on the optional lease (+6.5% instructions per cycle with
    /// 64 tasks on 8).
    @inlinable @inline(__always)
    func leaseSlowly(index laneIndex: Int, callSite: CallSite?, admittedWhole: Bool, first: LeasedSlot?) async throws -> LeasedSlot {
        let lease: LeasedSlot
        if let first {
            lease = first
        } else {
            lease = try await self.acquire(laneIndex: laneIndex, callSite: callSite, admittedWhole: admittedWhole)
        }
        if !lease.grant.needsValidation && self.factory.condition(of: lease.connection) != .broken {
            return lease
        }
        return try await self.replaceOrValidate(lease, index: laneIndex, callSite: callSite, admittedWhole: admittedWhole)
    }

    /// A lease whose connection looks broken, or must be validated before use: closes broken
    /// and invalid connections and leases again until one is good. Apart and never inlined, so
    /// that a waiting task's async frame does not carry this rare path (it took a slab of its
    /// own per waiter).
    @inlinable @inline(never)
    func replaceOrValidate(_ first: LeasedSlot, index laneIndex: Int, callSite: CallSite?, admittedWhole: Bool) async throws -> LeasedSlot {
        var candidate: LeasedSlot? = first
        var brokenInARow = 0
        let started = self.clock.now
        while true {
            let lease: LeasedSlot
            if let taken = candidate {
                lease = taken
                candidate = nil
            } else {
                lease = try await self.acquire(laneIndex: laneIndex, callSite: callSite, admittedWhole: admittedWhole)
            }
            if self.factory.condition(of: lease.connection) == .broken {
                brokenInARow += 1
                if let failure = self.closeBroken(lease, brokenInARow: brokenInARow, since: started) { throw failure }
                continue
            }
            if lease.grant.needsValidation {
                let connection = lease.connection
                let factory = self.factory
                let valid = await self.succeedsOrCloses(connection, within: self.configuration.pingTimeout) {
                    try await factory.validate(connection)
                }
                if !valid {
                    self.release(lease, disposition: .close)
                    continue
                }
            }
            return lease
        }
    }

    /// Closes a lease's broken connection; the error that ends the request when the machine
    /// says it met too many in a row. Out of line: a rare path.
    @usableFromInline
    func closeBroken(_ lease: LeasedSlot, brokenInARow: Int, since: PoolInstant) -> LifeguardError? {
        var failure: LifeguardError?
        self.apply { shared, now in
            let closed = shared.machine.closeBroken(lease.grant, brokenInARow: brokenInARow, since: since, now: now)
            failure = closed.failure
            return closed.actions
        }
        return failure
    }

    /// Asks the machine for a connection, waiting in the lane's queue when none is free.
    ///
    /// The waiter's identity is reserved first, so that the cancellation handler knows it; the
    /// decision and the continuation are then stored under one lock, so no grant can come
    /// before the continuation is there to take it.
    @inlinable @inline(__always)
    func acquire(laneIndex: Int, callSite: CallSite?, admittedWhole: Bool) async throws -> LeasedSlot {
        let id = WaiterID(value: self.waiterIDs.wrappingAdd(1, ordering: .relaxed).oldValue)
        let lease = try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: Waiting) in
                self.queue(continuation, id: id, laneIndex: laneIndex, callSite: callSite, admittedWhole: admittedWhole)
            }
        } onCancel: {
            self.cancelWaiter(id, lane: laneIndex)
        }
        if Task.isCancelled {
            // The grant raced the cancellation: hand the connection straight back.
            self.release(lease, abandoned: false)
            throw CancellationError()
        }
        return lease
    }

    /// The synchronous half of ``acquire``: the machine's decision and, when the request must
    /// wait, its continuation, under one lock; then what the decision settled, carried out.
    /// Apart and never inlined, so that the waiting task's async frames hold none of it:
    /// inlined into the continuation's closure, its locals took 750 bytes of the waiting
    /// task's frame, and a slab of its own.
    @inlinable @inline(never)
    func queue(_ continuation: Waiting, id: WaiterID, laneIndex: Int, callSite: CallSite?, admittedWhole: Bool) {
        // Task-locals are read here, on the way to the queue, never on the fast path.
        let deadline = RequestDeadline.current
        let now = self.clock.now
        let (immediate, settlement) = self.shared.withLock { shared -> (Outcome?, Settlement?) in
            switch shared.machine.lease(
                lane: laneIndex, now: now, callSite: callSite, deadline: deadline, id: id, admittedWhole: admittedWhole)
            {
            case .granted(let grant):
                return (.success(LeasedSlot(grant: grant, connection: shared.connections[grant.slot]!)), nil)
            case .wait(_, let actions):
                shared.waiting.insert(continuation, for: id)
                guard actions.resolvesWaiters || actions.hasBackgroundWork else { return (nil, nil) }
                return (nil, shared.settle(actions))
            case .failed(let error):
                return (.failure(error), nil)
            }
        }
        if let settlement {
            self.carryOut(settlement)
        } else if self.statusWatchers.isWatched.load(ordering: .relaxed) {
            self.checkStatusWatchers()
        }
        if let immediate {
            continuation.resume(with: immediate)
        } else if Task.isCancelled {
            // Cancelled before the waiter was queued, when the cancellation handler found
            // nothing to remove (a cancellation sets the flag before it runs the handler):
            // remove it now. After the handler, this finds nothing.
            self.cancelWaiter(id, lane: laneIndex)
        }
    }

    /// Takes a cancelled waiter out of its lane's queue; out of line, since cancellation is rare.
    @usableFromInline
    func cancelWaiter(_ id: WaiterID, lane: Int) {
        self.apply { shared, now in shared.machine.cancelWaiter(id, lane: lane, now: now) }
    }

    @usableFromInline
    func unknownLane(_ lane: Lane) -> LifeguardError {
        LifeguardError(
            code: .unknownLane, lane: lane,
            problems: ["Configured lanes: \(self.lanes.map(\.name).joined(separator: ", ")). Add it to configuration.lanes."])
    }

    /// Ends a lease: the connection goes back to idle or to the next waiter, or is reset or
    /// closed, depending on how the lease ended and what the factory says of it.
    @inlinable
    func release(_ lease: LeasedSlot, abandoned: Bool, cancelled: Bool = false) {
        let disposition: ReleaseDisposition
        switch self.factory.condition(of: lease.connection) {
        case .broken: disposition = .close
        case .needsReset: disposition = .reset
        case .reusable: disposition = abandoned ? .reset : .reuse
        }
        self.release(lease, disposition: disposition, cancelled: cancelled)
    }

    @inlinable
    func release(_ lease: LeasedSlot, disposition: ReleaseDisposition, cancelled: Bool = false) {
        let now = self.clock.now
        let next: AfterRelease = self.shared.withLock { shared in
            switch shared.machine.release(lease.grant, disposition: disposition, now: now, cancelled: cancelled) {
            case .idle:
                return .nothing
            case .handedOff(let handed):
                guard let continuation = shared.waiting.remove(handed.waiter) else {
                    preconditionFailure("Lifeguard: \(handed.waiter) was granted but never stored its continuation")
                }
                return .resume(continuation, handed.grant)
            case .settled(let actions):
                guard actions.resolvesWaiters || actions.hasBackgroundWork else { return .nothing }
                return .settle(shared.settle(actions))
            }
        }
        switch next {
        case .nothing:
            break
        case .resume(let continuation, let grant):
            // The same slot, so the same connection.
            continuation.resume(returning: LeasedSlot(grant: grant, connection: lease.connection))
        case .settle(let settlement):
            self.carryOut(settlement)
        }
    }

    /// What the shell does after a lease's end, unlocked.
    @usableFromInline
    enum AfterRelease {
        case nothing
        /// The connection went straight to a waiter: resume it (no settlement to build).
        case resume(Waiting, Grant)
        case settle(Settlement)
    }

    // MARK: - Running

    /// Runs the pool until it has shut down: opening, resetting, pinging and closing
    /// connections, the watchdog, metrics export, the factory's background work
    /// (``ConnectionFactory/runBackgroundWork()``) and the pool's companions (an adapter's write
    /// coalescers).
    ///
    /// Graceful shutdown (ServiceLifecycle) or ``shutdown(gracePeriod:)`` drains the pool;
    /// cancelling the task closes every connection at once. A second call returns at once.
    public func run() async {
        let alreadyRunning = self.shared.withLock { shared in
            defer { shared.runStarted = true }
            return shared.runStarted
        }
        guard !alreadyRunning else {
            self.logger.error("Lifeguard: run() was called twice on the same pool; the second call returns at once")
            return
        }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.factory.runBackgroundWork() }
                group.addTask {
                    await self.runConnections()
                    self.factory.stopBackgroundWork()
                    self.companions.finish()
                }
                for await companion in self.companions.added {
                    self.companions.started(companion)
                    group.addTask {
                        await companion.run()
                        self.companions.ended { self.shutDownConnections(gracePeriod: $0) }
                    }
                }
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
    }

    /// The connections' side of ``run()``: background work and timers until the machine has
    /// drained, then the last closes.
    private func runConnections() async {
        await withTaskCancellationHandler {
            await withDiscardingTaskGroup { group in
                self.apply { shared, now in shared.machine.tick(now: now) }
                group.addTask {
                    while (try? await self.clock.sleep(for: self.configuration.metricsInterval)) != nil {
                        self.exportMetrics()
                    }
                }
                if let interval = self.watchdogRules.interval {
                    group.addTask {
                        while (try? await self.clock.sleep(for: interval)) != nil {
                            self.watch()
                        }
                    }
                }
                for await work in self.work {
                    if case .finished = work { break }
                    group.addTask { await self.perform(work) }
                }
                group.cancelAll()
            }
        } onCancel: {
            self.shutDownConnections(gracePeriod: .zero)
        }
        self.timers.withLock { $0.cancelAll() }
        // Cancelled: the loop may have stopped before it carried out the last closes.
        let stoppedAt = self.clock.now
        let remaining = self.shared.withLock { shared in
            shared.machine.connectionsToCloseNow(now: stoppedAt).compactMap { slot in
                defer { shared.connections[slot] = nil }
                return shared.connections[slot]
            }
        }
        await withDiscardingTaskGroup { group in
            for connection in remaining {
                group.addTask { await self.factory.close(connection) }
            }
        }
        self.logger.debug("Lifeguard: pool stopped")
    }

    /// Stops granting leases and drains the pool: the pool's companions finish their queued
    /// work first (it still gets connections), then waiters fail with
    /// ``LifeguardError/Code/shutdown``, idle connections close, and running leases may finish
    /// within what is left of the grace period. ``run()`` returns once every connection is
    /// closed. Called again, a sooner end of the grace period wins (`.zero` closes running
    /// leases at once); a later one changes nothing.
    ///
    /// - Parameter gracePeriod: How long companions and running leases may continue; `nil`
    ///   uses ``PoolConfiguration/shutdownGracePeriod``.
    public func shutdown(gracePeriod: Duration? = nil) {
        self.companions.shutdown(gracePeriod: gracePeriod ?? self.configuration.shutdownGracePeriod) { remaining in
            self.shutDownConnections(gracePeriod: remaining)
        }
    }

    /// How many connections `lane` can hold at once: its limit, within what the other lanes'
    /// reservations leave (the machine's own figure); `nil` for a lane the pool lacks.
    package func capacity(of lane: Lane) -> Int? {
        guard let index = self.lanes.firstIndex(of: lane) else { return nil }
        return self.shared.withLock { $0.machine.capacity(ofLane: index) }
    }

    /// Runs `companion` with the pool: ``run()`` starts it, and ``shutdown(gracePeriod:)`` lets
    /// it finish its queued work before the pool stops granting leases.
    package func add(companion: any PoolCompanion) {
        self.companions.add(companion)
    }

    /// The machine's shutdown: no more leases, running ones may finish within `gracePeriod`.
    private func shutDownConnections(gracePeriod: Duration) {
        self.apply { shared, now in shared.machine.shutdown(gracePeriod: gracePeriod, now: now) }
    }

    private func perform(_ work: BackgroundWork) async {
        switch work {
        case .connect(let slot):
            do {
                let started = self.clock.now
                let connection = try await self.factory.connect()
                self.metrics.connectionCreated(in: started.duration(to: self.clock.now))
                self.apply { shared, now in
                    shared.connections[slot] = connection
                    return shared.machine.connectionEstablished(slot: slot, now: now)
                }
            } catch {
                self.logger.warning("Lifeguard: could not open a connection", metadata: ["error": "\(String(describing: error))"])
                self.apply { shared, now in shared.machine.connectionFailed(slot: slot, error: error, now: now) }
            }
        case .reset(let slot, let connection):
            let factory = self.factory
            let succeeded = await self.succeedsOrCloses(connection, within: self.configuration.resetTimeout) {
                try await factory.reset(connection)
            }
            if !succeeded {
                self.logger.debug("Lifeguard: reset failed or timed out; closing the connection")
            }
            self.apply { shared, now in shared.machine.resetCompleted(slot: slot, succeeded: succeeded, now: now) }
        case .ping(let slot, let connection):
            let factory = self.factory
            let succeeded = await self.succeedsOrCloses(connection, within: self.configuration.pingTimeout) {
                try await factory.validate(connection)
            }
            self.apply { shared, now in shared.machine.pingCompleted(slot: slot, succeeded: succeeded, now: now) }
        case .close(let slot, let connection):
            await self.factory.close(connection)
            self.apply { shared, now in
                shared.connections[slot] = nil
                return shared.machine.connectionClosed(slot: slot, now: now)
            }
        case .finished:
            break
        }
    }

    /// Runs `operation` on `connection` (a reset, a ping) for at most `timeout` of the pool's
    /// clock; when it takes longer, the connection is closed and the result is `false`.
    @usableFromInline
    func succeedsOrCloses(
        _ connection: Connection, within timeout: Duration, _ operation: @escaping @Sendable () async throws -> Void
    ) async -> Bool {
        let factory = self.factory
        return await succeeds(within: timeout, on: self.clock, operation, onTimeout: { await factory.close(connection) })
    }

    // MARK: - Metrics

    /// Publishes what changed since the last export through swift-metrics.
    func exportMetrics() {
        let now = self.clock.now
        let (inputs, status) = self.shared.withLock { ($0.machine.statisticsInputs, $0.machine.status) }
        self.metrics.export(inputs, status: status, laneOrder: self.lanes, now: now)
        let found = self.incidents.withLock { $0.check(inputs, now: now, longestReset: self.configuration.resetTimeout) }
        guard !found.isEmpty else { return }
        self.shared.withLock { shared in
            for incident in found { shared.machine.recorder.record(.incident(incident)) }
        }
        for incident in found {
            self.logger.error("Lifeguard: \(incident)")
        }
    }

    // MARK: - Watchdog

    /// Reports, once per lease, leases held too long and leases idle too long (generation holds).
    func watch() {
        let now = self.clock.now
        let (running, windowStart) = self.shared.withLock { shared in
            (shared.machine.runningLeases.map { lease in (lease, shared.connections[lease.slot]) }, shared.machine.recorder.current.start)
        }
        self.incidents.withLock { $0.sample(running.map(\.0), windowStart: windowStart, now: now) }
        for (lease, connection) in running {
            let activity = connection.map { self.factory.activity(of: $0) } ?? .unknown
            for (kind, idleSince) in self.watchdogRules.due(for: lease, activity: activity, now: now) {
                let finding = self.shared.withLock { $0.machine.report(kind, of: lease, idleSince: idleSince, now: now) }
                if let finding {
                    self.logger.warning(
                        "Lifeguard: \(finding)",
                        metadata: [
                            "lane": "\(finding.lane)", "call_site": "\(finding.callSite)", "function": "\(finding.function)",
                            "held_seconds": "\(finding.heldSeconds)",
                        ])
                }
            }
        }
    }

    // MARK: - Carrying out actions

    /// Applies an event under the lock, then, unlocked, carries out what it settled.
    private func apply(_ event: (inout Shared, PoolInstant) -> PoolActions) {
        let now = self.clock.now
        let settlement = self.shared.withLock { shared in
            shared.settle(event(&shared, now))
        }
        self.carryOut(settlement)
    }

    /// Resumes the waiters an event resolved, hands its background work to ``run()``, and
    /// schedules and cancels its timers.
    @inlinable
    func carryOut(_ settlement: Settlement) {
        for (continuation, outcome) in settlement.resumptions {
            continuation.resume(with: outcome)
        }
        for item in settlement.work {
            self.workContinuation.yield(item)
        }
        if settlement.timer != nil || settlement.cancelledTimer != nil {
            self.updateTimers(schedule: settlement.timer, cancel: settlement.cancelledTimer)
        }
        if self.statusWatchers.isWatched.load(ordering: .relaxed) {
            self.checkStatusWatchers()
        }
    }

    /// Cancels a timer the machine no longer needs and schedules the one it asked for: a task
    /// that sleeps on the clock until the timer's instant, then ticks the machine with its id.
    /// Timers run whether or not ``run()`` runs, so a request queued before it fails at its
    /// deadline with ``LifeguardError/Code/notRunning``.
    @usableFromInline
    func updateTimers(schedule timer: PoolTimer?, cancel cancelled: TimerID?) {
        if let cancelled { self.timers.withLock { $0.cancel(cancelled) } }
        guard let timer else { return }
        let task = Task {
            guard (try? await self.clock.sleep(until: timer.instant)) != nil else { return }
            self.timers.withLock { $0.fired(timer.id) }
            self.apply { shared, now in shared.machine.tick(timer: timer.id, now: now) }
        }
        self.timers.withLock { $0.scheduled(task, for: timer.id) }
    }
}

extension ConnectionPool where Clock == SystemPoolClock {
    /// Creates a pool on the system's monotonic clock. It opens no connection until ``run()``
    /// runs.
    ///
    /// - Parameters:
    ///   - configuration: Budget, lanes and connection health settings.
    ///   - factory: Opens, checks, resets and closes connections.
    ///   - logger: Receives connection failures, watchdog findings and the pool's lifecycle.
    ///   - metricsFactory: Where metrics go, once per `metricsInterval` (1 s) while ``run()`` runs;
    ///     default: swift-metrics' bootstrapped backend (`MetricsSystem.factory`).
    ///   - tracer: Records a span per lease; default: the tracer bootstrapped when the pool is
    ///     created (see the initializer that takes a clock).
    /// - Throws: ``LifeguardError`` with code ``LifeguardError/Code/invalidConfiguration``
    ///   listing every problem of the configuration.
    public convenience init(
        configuration: PoolConfiguration, factory: Factory, logger: Logger, metricsFactory: (any MetricsFactory)? = nil,
        tracer: (any Tracer)? = nil
    ) throws(LifeguardError) {
        try self.init(
            configuration: configuration, factory: factory, clock: SystemPoolClock(), logger: logger,
            metricsFactory: metricsFactory, tracer: tracer)
    }
}
