import DequeModule

/// Identifies one waiting request.
@usableFromInline
package struct WaiterID: Hashable, Sendable, CustomStringConvertible {
    /// Increases with every request, so it also orders requests by arrival (up to requests that
    /// race for the lock).
    @usableFromInline package let value: Int
    @usableFromInline package init(value: Int) { self.value = value }
    @usableFromInline package var description: String { "waiter#\(self.value)" }
}

/// A connection handed to a lease: the slot it lives in, and whether it must be validated first.
///
/// The machine deals in slots; the shell keeps the connection objects, indexed by slot.
@usableFromInline
package struct Grant: Sendable, Equatable {
    @usableFromInline package let slot: Int
    @usableFromInline package let connectionID: Int
    @usableFromInline package let lane: Int
    /// The connection was idle longer than `validationThreshold`: ping it before use.
    @usableFromInline package let needsValidation: Bool
}

/// What the pool does with a connection when its lease ends.
@usableFromInline
package enum ReleaseDisposition: Sendable, Hashable {
    /// Clean: back to idle, or straight to the next waiter.
    case reuse
    /// Abandoned or dirty: reset it before anyone else gets it.
    case reset
    /// Broken: close it and open a replacement when needed.
    case close
}

/// Every decision of the pool: budget, lanes, connections, waiters, deadlines and timers.
///
/// A pure value type. Each input is an event plus `now`; each output is a ``PoolActions`` value
/// that the shell carries out after it has released its lock. Nothing here suspends, sleeps,
/// allocates on the lease fast path, or reads a clock, so every decision is testable with a
/// manual clock and the simulator can run the very same policy on a virtual one.
///
/// It is not generic: it deals in slot numbers, and the shell keeps the connections. So it is
/// compiled and optimized once, here, and a pool specialized in another module calls it without
/// looking up generic metadata on every lease.
///
/// A connection slot moves through these states:
///
/// ```
/// free → opening → idle ⇄ leased → (idle | resetting | closing)
///                  idle → pinging → (idle | closing)
///                  resetting → (idle | closing);  closing → free
/// ```
///
/// The pool moves from `running` to `draining` (on shutdown: no new leases, leased connections
/// closed when returned or when the grace period ends) to `stopped` (every connection closed).
@usableFromInline
package struct PoolStateMachine {
    /// Integer nanoseconds on the monotonic clock; a ``ManualClock`` produces them too, from
    /// zero, for tests and the simulator.
    @usableFromInline package typealias Instant = PoolInstant

    enum Lifecycle {
        case running
        case draining(deadline: Instant)
        case stopped
    }

    /// Set while the database refuses connections: requests that would need a new connection
    /// fail fast until `retryAt`, when one probe connection is attempted.
    struct Outage {
        var failures: Int
        var lastError: any Error & Sendable
        var retryAt: Instant
    }

    struct Slot {
        enum State: Equatable {
            case free
            case opening
            case idle
            case leased(lane: Int)
            case resetting
            case pinging
            case closing
        }
        var id: Int
        var state: State
        var expiresAt: Instant?
        /// When the connection was last used or checked: the start of its idle time.
        var lastActive: Instant?
        /// When the current lease began.
        var leasedAt: Instant?
        /// Where the current lease was taken.
        var callSite: CallSite?
        /// The watchdog findings already reported for the current lease (bits of their kinds).
        var reported: UInt8 = 0
    }

    struct Waiter {
        let id: WaiterID
        let enqueuedAt: Instant
        let deadline: Instant
        /// Which limit `deadline` is, and so the error at that instant.
        let expiry: Expiry
        let callSite: CallSite?
    }

    struct LaneState {
        let lane: Lane
        let reserved: Int
        let limit: Int
        /// The lane's `waitTimeout` in nanoseconds, converted once: `Duration` arithmetic takes
        /// 128-bit multiplications, on every request that queues.
        let waitTimeoutNanoseconds: Int64
        let maxWaiters: Int
        var leased = 0
        /// In arrival order (see ``PoolStateMachine/enqueue``).
        var waiters = Deque<Waiter>()
        var shedder: Shedder?
        /// Recent hold times (the last 8 at least), for the wait a request can expect.
        var recentHolds = RecentMean(minimumCount: 8)
        /// The time between two waiters served while the queue stood (the last 64 at least):
        /// what the lane really takes per lease when backlogged, resets, reconnects and
        /// hand-offs included, which the hold time leaves out.
        var servedGaps = RecentMean(minimumCount: 64)
        /// When the last waiter was served, if the queue still stood then.
        var lastServedAt: PoolInstant?
        /// Whether the lane's early rejections feed themselves.
        var retryStorm = RetryStorm()
    }

    /// Housekeeping (idle timeout, lifetime, keepalive) runs at least this often while
    /// connections are open.
    static var housekeepingInterval: Duration { .seconds(1) }

    /// The shortest time between two ticks for waiters' deadlines (see ``nextWakeUp(now:earliestWaiterDeadline:)``).
    static var shortestTickInterval: Duration { .milliseconds(1) }

    let configuration: PoolConfiguration
    var lanes: [LaneState]
    var slots: [Slot]
    /// Slot indices of idle connections; the most recently used last (LIFO keeps a hot set and
    /// lets the rest reach their idle timeout).
    var idle: [Int]
    var freeSlots: [Int]
    var lifecycle: Lifecycle = .running
    var outage: Outage?
    /// Slots that are not free: they count against the budget, whatever their state.
    var connectionCount = 0
    var openingCount = 0
    var leasedCount = 0
    /// How many times a connection left the reset, ping or close that made it unusable (back
    /// idle, or its slot free): the watchdog tells churn from a leak by it.
    var unusableEnded: UInt64 = 0
    var waiterCount = 0
    /// The sum of all lanes' reservations.
    let reservedTotal: Int
    /// Leases above their lane's reservation: they use shared capacity.
    var sharedInUse = 0
    var nextWaiterID = 0
    var nextConnectionID = 0
    /// The earliest wake-up the shell has been asked to schedule and that has not fired yet.
    var armedWakeUp: PoolTimer?
    var nextTimerID = 0
    var random: SplitMix64
    /// Counts what the machine observes (``PoolEvent``), as it decides, under the same lock.
    var recorder: StatisticsRecorder
    /// `validationThreshold` in nanoseconds (`Int64.max` when validation is off).
    let validationThresholdNanoseconds: Int64

    /// Creates the state of a pool with no connections.
    ///
    /// - Parameters:
    ///   - configuration: A validated configuration.
    ///   - seed: Seeds the jitter of lifetimes and backoff; fixed in tests for determinism.
    ///   - now: When the pool starts: the start of its first statistics window.
    package init(configuration: PoolConfiguration, seed: UInt64, now: Instant) {
        self.configuration = configuration
        self.lanes = configuration.lanes
            .sorted { $0.key.name < $1.key.name }
            .map { lane, settings in
                LaneState(
                    lane: lane,
                    reserved: settings.reserved,
                    limit: min(settings.limit ?? configuration.budget, configuration.budget),
                    waitTimeoutNanoseconds: settings.waitTimeout.wholeNanoseconds,
                    maxWaiters: settings.maxWaiters,
                    shedder: settings.shedding.map(Shedder.init))
            }
        self.reservedTotal = self.lanes.reduce(0) { $0 + $1.reserved }
        self.slots = []
        self.slots.reserveCapacity(configuration.budget)
        self.idle = []
        self.idle.reserveCapacity(configuration.budget)
        self.freeSlots = []
        self.freeSlots.reserveCapacity(configuration.budget)
        self.random = SplitMix64(seed: seed)
        self.validationThresholdNanoseconds = configuration.validationThreshold?.wholeNanoseconds ?? .max
        self.recorder = StatisticsRecorder(
            laneLimits: self.lanes.map(\.limit), budget: configuration.budget,
            windowLength: configuration.statisticsWindow, now: now)
    }

    /// The index of a lane, or `nil` when it is not configured. Lanes are few: a scan beats hashing.
    package func laneIndex(of lane: Lane) -> Int? {
        self.lanes.firstIndex { $0.lane == lane }
    }

    // MARK: - Lease and release

    @usableFromInline
    package enum LeaseDecision {
        /// A connection was idle and the lane had room: use it now, without suspending.
        case granted(Grant)
        /// The request was queued as `waiter`; carry out the actions, then suspend.
        case wait(WaiterID, PoolActions)
        /// The request is refused at once. Boxed: the error is rare and large, and inline it made
        /// every decision 144 bytes to move.
        indirect case failed(LifeguardError)
    }

    /// The fast path alone: a connection for `lane` if one is idle, the lane has room and nobody
    /// is queued ahead; `nil` otherwise (then call ``lease(lane:now:)``).
    @usableFromInline
    mutating func leaseIfIdle(lane: Int, now: Instant, callSite: CallSite? = nil) -> Grant? {
        guard case .running = self.lifecycle, self.lanes[lane].waiters.isEmpty, self.canAdmit(lane),
            let slot = self.idle.popLast()
        else { return nil }
        self.recorder.record(.arrived(lane: lane, count: 1))
        return self.hand(slot: slot, to: lane, now: now, waitingSince: nil, callSite: callSite)
    }

    /// A request for a connection in a lane.
    ///
    /// The fast path (an idle connection, room in the lane, nobody queued ahead) touches no
    /// collection but the idle stack and allocates nothing. A request that must queue may wait
    /// until the earliest of the lane's `waitTimeout`, the shedding target when the lane is
    /// overloaded, and `deadline`; it is rejected at once when `deadline` cannot be met, or when
    /// the lane is overloaded and the wait to expect exceeds its target.
    ///
    /// - Parameters:
    ///   - deadline: The caller's deadline (``RequestDeadline``), if any.
    ///   - id: The waiter's identity if it must queue, reserved by the caller (the shell reserves
    ///     it before taking the lock, so that its cancellation handler knows it); `nil` lets the
    ///     machine number it.
    ///   - admittedWhole: A lease of a fan-out that ``admitFanOut(lane:leases:deadline:now:)``
    ///     admitted: it is not judged again on its own (its wait to expect, the shedding target,
    ///     the caller's deadline), since part of a request is worth nothing and rejecting it
    ///     now would waste the leases of its request that ran. It still waits at most its
    ///     deadline, and a full queue still refuses it.
    @usableFromInline
    package mutating func lease(
        lane: Int, now: Instant, callSite: CallSite? = nil, deadline callerDeadline: Instant? = nil,
        id reserved: WaiterID? = nil, admittedWhole: Bool = false
    ) -> LeaseDecision {
        self.recorder.record(.arrived(lane: lane, count: 1))
        guard case .running = self.lifecycle else {
            self.recorder.record(.requestEnded(lane: lane, .shutdown, count: 1))
            return .failed(.shutdown(lane: self.lanes[lane].lane))
        }
        if self.lanes[lane].waiters.isEmpty, self.canAdmit(lane), let slot = self.idle.popLast() {
            return .granted(self.hand(slot: slot, to: lane, now: now, waitingSince: nil, callSite: callSite))
        }
        if let outage = self.outage, self.idle.isEmpty, self.canAdmit(lane), now < outage.retryAt {
            self.recorder.record(.requestEnded(lane: lane, .unavailable, count: 1))
            return .failed(.databaseUnavailable(lane: self.lanes[lane].lane, waited: .zero, lastError: outage.lastError))
        }
        if self.lanes[lane].waiters.count >= self.lanes[lane].maxWaiters {
            self.recorder.record(.requestEnded(lane: lane, .overloaded, count: 1))
            return .failed(.overloaded(lane: self.lanes[lane].lane, queueDepth: self.lanes[lane].waiters.count))
        }
        self.observeQueue(lane: lane, now: now)
        if !admittedWhole, let rejection = self.rejectionAtAdmission(lane: lane, leases: 1, callerDeadline: callerDeadline, now: now) {
            return .failed(rejection)
        }
        let (deadline, expiry) = self.admissionDeadline(lane: lane, callerDeadline: callerDeadline, now: now)
        let id = reserved ?? WaiterID(value: self.nextWaiterID)
        self.nextWaiterID = max(self.nextWaiterID, id.value) &+ 1
        self.enqueue(lane: lane, id: id, now: now, deadline: deadline, expiry: expiry, callSite: callSite)
        var actions = PoolActions()
        self.rebalance(now: now, into: &actions)
        self.arm(deadline, into: &actions)
        return .wait(id, actions)
    }

    /// How many requests wait in a lane's queue.
    ///
    /// Mutating though it changes nothing: the shell calls it on the machine it holds `inout`
    /// under its lock, and a non-mutating call from there copied all of the machine (680 bytes)
    /// to pass it, on every settlement and hand-off.
    @usableFromInline
    mutating func queueLength(ofLane lane: Int) -> Int { self.lanes[lane].waiters.count }

    /// A queued request was cancelled: it leaves the queue at once. Nothing happens when it was
    /// already granted or failed (the shell hands back a grant that raced the cancellation).
    package mutating func cancelWaiter(_ id: WaiterID, lane: Int, now: Instant) -> PoolActions {
        var actions = PoolActions()
        if let index = self.lanes[lane].waiters.firstIndex(where: { $0.id == id }) {
            self.removeWaiter(at: index, lane: lane, now: now)
            self.recorder.record(.requestEnded(lane: lane, .cancelled, count: 1))
            actions.cancelled.append(id)
        }
        return actions
    }

    /// How a lease's end settled (see ``release(_:disposition:now:cancelled:)``).
    @usableFromInline
    package enum LeaseEnd: Equatable {
        /// The connection went back on the idle stack, and nothing else follows.
        case idle
        /// The connection went straight to this waiter, and nothing else follows.
        case handedOff(WaiterGrant)
        /// Anything else: what the shell carries out. Boxed, so that the common ends return a
        /// small value.
        indirect case settled(PoolActions)

        /// The same, as actions (for a caller that carries out every event alike).
        @inlinable
        package var actions: PoolActions {
            switch self {
            case .idle:
                return PoolActions()
            case .handedOff(let handed):
                var actions = PoolActions()
                actions.grants = [handed]
                return actions
            case .settled(let actions):
                return actions
            }
        }
    }

    /// A lease ended: the one way a lease's connection comes back.
    ///
    /// A clean connection goes back to idle or straight to the next waiter; a dirty one is reset
    /// first; a broken one is closed. The common ends are decided without building
    /// ``PoolActions``: a clean connection in a running pool, within its lifetime, goes back on
    /// the idle stack when nobody waits (``LeaseEnd/idle``), or straight to the next waiter
    /// that may have it when every connection of the budget is open, since then nothing else
    /// can follow from it (``LeaseEnd/handedOff(_:)``). Every other end is
    /// ``LeaseEnd/settled(_:)``, with the actions to carry out.
    ///
    /// - Parameter cancelled: The lease ended because its task was cancelled (for statistics).
    @inlinable
    package mutating func release(
        _ grant: Grant, disposition: ReleaseDisposition, now: Instant, cancelled: Bool = false
    ) -> LeaseEnd {
        // The idle end is inlined into the shell as one call that returns a flag: a lease's
        // end without waiters costs no more than it did with an entry point of its own.
        if disposition == .reuse && !cancelled && self.returnToIdle(grant, now: now) {
            return .idle
        }
        return self.releaseWithWaitersOrInFull(grant, disposition: disposition, now: now, cancelled: cancelled)
    }

    /// The idle end of ``release(_:disposition:now:cancelled:)``: a clean lease in a running
    /// pool, within its lifetime, nobody waiting. Then the connection goes back on the idle
    /// stack and the result is `true`; otherwise nothing changes.
    @usableFromInline
    mutating func returnToIdle(_ grant: Grant, now: Instant) -> Bool {
        guard self.waiterCount == 0, let lane = self.cleanLeaseLane(of: grant, now: now) else { return false }
        self.unlease(slot: grant.slot, lane: lane, now: now)
        self.slots[grant.slot].lastActive = now
        self.idle.append(grant.slot)
        return true
    }

    /// Every other end of ``release(_:disposition:now:cancelled:)``: the hand-off of a clean
    /// connection to a waiter when it needs no other decision, else the general path.
    @usableFromInline
    mutating func releaseWithWaitersOrInFull(
        _ grant: Grant, disposition: ReleaseDisposition, now: Instant, cancelled: Bool
    ) -> LeaseEnd {
        if disposition == .reuse && !cancelled, let lane = self.cleanLeaseLane(of: grant, now: now),
            let handed = self.handToNextWaiter(grant, lane: lane, now: now)
        {
            return handed
        }
        return .settled(self.releaseInFull(grant, disposition: disposition, now: now, cancelled: cancelled))
    }

    /// The lane of a lease whose connection may come back without further decisions: a running
    /// pool, the same connection still leased, within its lifetime. `nil` otherwise.
    @inline(__always)
    mutating func cleanLeaseLane(of grant: Grant, now: Instant) -> Int? {
        guard case .running = self.lifecycle, self.slots[grant.slot].id == grant.connectionID,
            case .leased(let lane) = self.slots[grant.slot].state, !self.isExpired(grant.slot, now: now)
        else { return nil }
        return lane
    }

    /// A clean connection's hand-off while requests wait, when every connection of the budget
    /// is open (no connection to open for the remaining waiters): to the next waiter that may
    /// have it, or back on the idle stack when none may. `nil`, with nothing changed, while
    /// connections are still to open.
    mutating func handToNextWaiter(_ grant: Grant, lane: Int, now: Instant) -> LeaseEnd? {
        guard self.connectionCount >= self.configuration.budget else { return nil }
        self.unlease(slot: grant.slot, lane: lane, now: now)
        self.slots[grant.slot].lastActive = now
        guard let next = self.nextLaneToServe() else {
            self.idle.append(grant.slot)
            return .idle
        }
        let waiter = self.takeNextWaiter(lane: next, now: now)
        let handed = self.hand(slot: grant.slot, to: next, now: now, waitingSince: waiter.enqueuedAt, callSite: waiter.callSite)
        return .handedOff(WaiterGrant(waiter: waiter.id, grant: handed))
    }

    /// A lease's connection was found broken before its request could use it: it is closed,
    /// and the request leases again, unless this was more broken connections in a row than
    /// the budget (every connection the pool could open is dead, so the database is
    /// unreachable in practice): then the request fails with
    /// ``LifeguardError/Code/databaseUnavailable``, counted as such.
    ///
    /// - Parameters:
    ///   - grant: The lease whose connection is broken.
    ///   - brokenInARow: The broken connections this request has met so far, this one included.
    ///   - since: When the request began, for the error's wait.
    package mutating func closeBroken(
        _ grant: Grant, brokenInARow: Int, since: Instant, now: Instant
    ) -> (actions: PoolActions, failure: LifeguardError?) {
        let actions = self.releaseInFull(grant, disposition: .close, now: now)
        guard brokenInARow > self.configuration.budget else { return (actions, nil) }
        self.recorder.record(.requestEnded(lane: grant.lane, .unavailable, count: 1))
        let error = LifeguardError.databaseUnavailable(
            lane: self.lanes[grant.lane].lane, waited: since.duration(to: now), lastError: self.outage?.lastError)
        return (actions, error)
    }

    /// A lease's end decided in full, with the actions it needs: the general path of
    /// ``release(_:disposition:now:cancelled:)``, which decides the common ends the same way
    /// without building actions.
    @usableFromInline
    mutating func releaseInFull(_ grant: Grant, disposition: ReleaseDisposition, now: Instant, cancelled: Bool = false) -> PoolActions {
        var actions = PoolActions()
        guard self.slots[grant.slot].id == grant.connectionID, case .leased(let lane) = self.slots[grant.slot].state else {
            // The connection was closed under the lease (shutdown grace period ended).
            return actions
        }
        self.unlease(slot: grant.slot, lane: lane, now: now)
        if cancelled {
            self.recorder.record(.leaseCancelled(lane: lane))
        }
        switch disposition {
        case .reuse:
            guard case .running = self.lifecycle else {
                self.beginClose(slot: grant.slot, reason: .shutdown, into: &actions)
                break
            }
            guard !self.isExpired(grant.slot, now: now) else {
                self.beginClose(slot: grant.slot, reason: .expired, into: &actions)
                break
            }
            self.slots[grant.slot].state = .idle
            self.slots[grant.slot].lastActive = now
            self.idle.append(grant.slot)
            if self.waiterCount == 0 {
                return actions
            }
        case .reset:
            self.slots[grant.slot].state = .resetting
            actions.reset.append(grant.slot)
            return actions
        case .close:
            self.beginClose(slot: grant.slot, reason: .broken, into: &actions)
        }
        self.rebalance(now: now, into: &actions)
        self.finishIfDrained(into: &actions)
        return actions
    }

    // MARK: - Helpers shared by the concerns

    /// Moves an idle connection to a lease of `lane`, and records the grant and its wait.
    mutating func hand(slot: Int, to lane: Int, now: Instant, waitingSince: Instant?, callSite: CallSite?) -> Grant {
        if self.configuration.recordsStatistics {
            self.recorder.record(.leaseBegan(
                lane: lane, laneLevel: self.lanes[lane].leased, total: self.leasedCount, waitingSince: waitingSince, now: now))
        }
        self.slots[slot].state = .leased(lane: lane)
        self.slots[slot].leasedAt = now
        self.slots[slot].callSite = callSite
        self.slots[slot].reported = 0
        if self.lanes[lane].leased >= self.lanes[lane].reserved {
            self.sharedInUse += 1
        }
        self.lanes[lane].leased += 1
        self.leasedCount += 1
        self.recorder.record(.requestEnded(lane: lane, .granted, count: 1))
        var needsValidation = false
        if let lastActive = self.slots[slot].lastActive {
            needsValidation = lastActive.nanoseconds(to: now) > self.validationThresholdNanoseconds
        }
        return Grant(slot: slot, connectionID: self.slots[slot].id, lane: lane, needsValidation: needsValidation)
    }

    /// Ends a lease in the accounting, and records how long it held its connection.
    mutating func unlease(slot: Int, lane: Int, now: Instant) {
        if let leasedAt = self.slots[slot].leasedAt {
            if self.configuration.recordsStatistics {
                self.recorder.record(.leaseEnded(
                    lane: lane, laneLevel: self.lanes[lane].leased, total: self.leasedCount, leasedAt: leasedAt, now: now))
            }
            let held = leasedAt.nanoseconds(to: now)
            self.lanes[lane].recentHolds.add(held)
        }
        self.lanes[lane].leased -= 1
        if self.lanes[lane].leased >= self.lanes[lane].reserved {
            self.sharedInUse -= 1
        }
        self.leasedCount -= 1
        self.slots[slot].state = .idle
    }

    func isExpired(_ slot: Int, now: Instant) -> Bool {
        guard let expiresAt = self.slots[slot].expiresAt else { return false }
        return expiresAt <= now
    }

    mutating func beginClose(slot: Int, reason: PoolEvent.CloseReason, into actions: inout PoolActions) {
        self.slots[slot].state = .closing
        self.recorder.record(.connectionClosed(reason))
        actions.close.append(slot)
    }

    /// Asks the shell for a wake-up at `instant` unless an earlier one is already armed; the
    /// later one it supersedes is cancelled, so that no sleeper fires a tick nobody needs.
    mutating func arm(_ instant: Instant, into actions: inout PoolActions) {
        if let armed = self.armedWakeUp {
            guard instant < armed.instant else { return }
            actions.cancelledTimer = armed.id
        }
        let timer = PoolTimer(id: TimerID(value: self.nextTimerID), instant: instant)
        self.nextTimerID &+= 1
        self.armedWakeUp = timer
        actions.timer = timer
    }
}

/// Names a wake-up the machine asked for, so that the shell can cancel it and the machine can
/// tell which one fired.
@usableFromInline
package struct TimerID: Hashable, Sendable, CustomStringConvertible {
    @usableFromInline package let value: Int

    @usableFromInline package init(value: Int) {
        self.value = value
    }

    @usableFromInline package var description: String { "timer \(self.value)" }
}

/// A wake-up: call ``PoolStateMachine/tick(timer:now:)`` with its id at its instant.
@usableFromInline
package struct PoolTimer: Hashable, Sendable {
    @usableFromInline package let id: TimerID
    @usableFromInline package let instant: PoolInstant
}

/// A waiter that gets a connection.
@usableFromInline
package struct WaiterGrant: Sendable, Equatable {
    @usableFromInline package let waiter: WaiterID
    @usableFromInline package let grant: Grant
}

/// A waiter that fails.
@usableFromInline
package struct WaiterFailure: Sendable, Equatable {
    @usableFromInline package let waiter: WaiterID
    @usableFromInline package let error: LifeguardError
}

/// What the shell must do after an event, once it has released its lock. Connections are named
/// by slot.
@usableFromInline
package struct PoolActions: Sendable, Equatable {
    /// Resume these waiters with a connection.
    @usableFromInline package var grants: [WaiterGrant] = []
    /// Resume these waiters with an error.
    @usableFromInline package var failures: [WaiterFailure] = []
    /// Resume these waiters with `CancellationError`: they left the queue.
    @usableFromInline package var cancelled: [WaiterID] = []
    /// Open a connection into each of these slots.
    @usableFromInline package var connect: [Int] = []
    /// Reset the connections of these slots (abandoned leases), then report `resetCompleted`.
    @usableFromInline package var reset: [Int] = []
    /// Ping the idle connections of these slots (keepalive), then report `pingCompleted`.
    @usableFromInline package var ping: [Int] = []
    /// Close the connections of these slots, then report `connectionClosed`.
    @usableFromInline package var close: [Int] = []
    /// Call `tick(timer:now:)` with this timer's id at its instant.
    @usableFromInline package var timer: PoolTimer?
    /// Cancel this timer: an earlier one superseded it, or it is no longer needed.
    @usableFromInline package var cancelledTimer: TimerID?
    /// The pool has drained: every connection is closed.
    @usableFromInline package var finished = false

    @usableFromInline package init() {}

    /// Whether any waiter is resolved by these actions.
    @usableFromInline package var resolvesWaiters: Bool {
        !self.grants.isEmpty || !self.failures.isEmpty || !self.cancelled.isEmpty
    }

    /// Whether any background work (connect, reset, ping, close, timer) is asked for.
    @usableFromInline package var hasBackgroundWork: Bool {
        !self.connect.isEmpty || !self.reset.isEmpty || !self.ping.isEmpty || !self.close.isEmpty
            || self.timer != nil || self.cancelledTimer != nil || self.finished
    }

    /// The instant of ``timer``, if one is asked for.
    @usableFromInline package var wakeUp: PoolInstant? { self.timer?.instant }
}
