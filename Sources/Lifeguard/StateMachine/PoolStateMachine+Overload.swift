/// Overload control: the lanes' queues, fair between requests that fan out, adaptive shedding,
/// and callers' deadlines. Everything here runs on the slow path (a request that must queue, or
/// a release with waiters); a lease that finds an idle connection never comes here.
extension PoolStateMachine {
    /// Why a waiter's deadline is what it is, and so which error it fails with at that instant.
    enum Expiry: Equatable {
        /// The lane's `waitTimeout`.
        case waitTimeout
        /// The shedding target of an overloaded lane.
        case shed
        /// The caller's ``RequestDeadline``.
        case callerDeadline
    }

    /// A lane's adaptive shedder, after CoDel: it watches how long requests wait in the queue
    /// and says when the lane is overloaded.
    struct Shedder {
        let target: Int64
        let interval: Int64
        let servesNewestFirst: Bool
        /// Requests that arrive now may wait only `target`.
        var isOverloaded = false
        /// Since when every wait observed has been above `target`.
        var aboveTargetSince: Instant?

        init(_ policy: Shedding) {
            self.target = policy.target.wholeNanoseconds
            self.interval = policy.interval.wholeNanoseconds
            self.servesNewestFirst = policy.servesNewestFirst
        }

        /// A request waited `wait` nanoseconds (or has waited that long so far, when `ongoing`).
        ///
        /// Waits above the target for a whole interval enter overload; a finished wait at or
        /// under the target ends the streak, unless the lane is already overloaded (its admitted
        /// requests wait at most the target by construction).
        mutating func observe(wait: Int64, ongoing: Bool, now: Instant) {
            if wait > self.target {
                let since = self.aboveTargetSince ?? now
                self.aboveTargetSince = since
                if since.nanoseconds(to: now) >= self.interval {
                    self.isOverloaded = true
                }
            } else if !ongoing && !self.isOverloaded {
                self.aboveTargetSince = nil
            }
        }

        /// The queue is empty: it was a burst, not a standing queue.
        mutating func queueDrained() {
            self.isOverloaded = false
            self.aboveTargetSince = nil
        }
    }

    /// A request that fans out: how many of its waiters are queued, and the round its next one
    /// joins.
    struct FanOutQueue {
        var queued = 0
        var nextRound = 0
    }

    /// How many connections a lane can hold at most: its limit, within what the other lanes'
    /// reservations leave.
    func capacity(ofLane lane: Int) -> Int {
        let state = self.lanes[lane]
        return max(1, min(state.limit, self.configuration.budget - (self.reservedTotal - state.reserved)))
    }

    /// The wait a request joining `lane`'s queue now can expect: the requests ahead of it and
    /// itself, times the lane's recent hold time, over the lane's capacity.
    func expectedWait(lane: Int) -> Int64 {
        let state = self.lanes[lane]
        return Int64(state.waiters.count + 1) * state.recentHoldNanoseconds / Int64(self.capacity(ofLane: lane))
    }

    /// The deadline of a request that must queue in `lane` now, and why; or the error that
    /// rejects it at once because its caller's deadline cannot be met.
    func admissionDeadline(lane: Int, callerDeadline: Instant?, now: Instant) -> Result<(Instant, Expiry), LifeguardError> {
        let state = self.lanes[lane]
        var deadline = now.advanced(by: state.waitTimeout)
        var expiry = Expiry.waitTimeout
        if let shedder = state.shedder, shedder.isOverloaded {
            let shedAt = PoolInstant(nanoseconds: now.nanoseconds &+ shedder.target)
            if shedAt < deadline { (deadline, expiry) = (shedAt, .shed) }
        }
        if let callerDeadline {
            let remaining = now.nanoseconds(to: callerDeadline)
            let expected = self.expectedWait(lane: lane)
            if remaining <= 0 || remaining < expected {
                return .failure(.deadlineExceeded(
                    lane: state.lane, waited: .zero, queueDepth: state.waiters.count,
                    expectedWait: .nanoseconds(expected), remaining: .nanoseconds(max(0, remaining))))
            }
            if callerDeadline < deadline { (deadline, expiry) = (callerDeadline, .callerDeadline) }
        }
        return .success((deadline, expiry))
    }

    /// Queues a waiter in `lane`, fairly: each request that fans out (`group`) gets one turn per
    /// round, so two requests of 15 queries alternate instead of one going first. Waiters with no
    /// group are each a request of their own, and join the current round; with no groups at all
    /// the queue is FIFO.
    mutating func enqueue(
        lane: Int, id: WaiterID, now: Instant, deadline: Instant, expiry: Expiry, callSite: CallSite?, group: Int?
    ) {
        var round = self.lanes[lane].servedRound
        if let group {
            var queue = self.lanes[lane].fanOuts[group] ?? FanOutQueue(queued: 0, nextRound: round)
            round = max(round, queue.nextRound)
            queue.queued += 1
            queue.nextRound = round + 1
            self.lanes[lane].fanOuts[group] = queue
        }
        let waiter = Waiter(
            id: id, enqueuedAt: now, deadline: deadline, expiry: expiry, callSite: callSite, group: group, round: round)
        if let last = self.lanes[lane].waiters.last, last.round > round {
            // Before the first waiter of a later round (the queue is ordered by round, then id).
            var low = 0
            var high = self.lanes[lane].waiters.count
            while low < high {
                let middle = (low + high) / 2
                if self.lanes[lane].waiters[middle].round > round { high = middle } else { low = middle + 1 }
            }
            self.lanes[lane].waiters.insert(waiter, at: low)
        } else {
            self.lanes[lane].waiters.append(waiter)
        }
        self.waiterCount += 1
    }

    /// Takes the waiter at `index` out of `lane`'s queue, with its bookkeeping.
    @discardableResult
    mutating func removeWaiter(at index: Int, lane: Int) -> Waiter {
        let waiter = self.lanes[lane].waiters.remove(at: index)
        self.waiterCount -= 1
        if let group = waiter.group, var queue = self.lanes[lane].fanOuts[group] {
            queue.queued -= 1
            self.lanes[lane].fanOuts[group] = queue.queued > 0 ? queue : nil
        }
        if self.lanes[lane].waiters.isEmpty {
            self.lanes[lane].shedder?.queueDrained()
        }
        return waiter
    }

    /// The next waiter of `lane` to serve, out of the queue: the first in round order, or the
    /// newest while the lane is overloaded and serves newest first. Its wait is observed.
    mutating func takeNextWaiter(lane: Int, now: Instant) -> Waiter {
        let newestFirst = self.lanes[lane].shedder.map { $0.isOverloaded && $0.servesNewestFirst } ?? false
        let index = newestFirst ? self.lanes[lane].waiters.count - 1 : 0
        let wait = self.lanes[lane].waiters[index].enqueuedAt.nanoseconds(to: now)
        self.lanes[lane].shedder?.observe(wait: wait, ongoing: false, now: now)
        let waiter = self.removeWaiter(at: index, lane: lane)
        self.lanes[lane].servedRound = max(self.lanes[lane].servedRound, waiter.round)
        return waiter
    }

    /// Takes every waiter out of `lane`'s queue, in order.
    mutating func removeAllWaiters(lane: Int) -> [Waiter] {
        let waiters = Array(self.lanes[lane].waiters)
        self.waiterCount -= waiters.count
        self.lanes[lane].waiters.removeAll()
        self.lanes[lane].fanOuts.removeAll()
        self.lanes[lane].shedder?.queueDrained()
        return waiters
    }

    /// Before a request joins `lane`'s queue: the age of the waiter at its head tells the
    /// shedder the queue stands, even when nothing is served.
    ///
    /// The first in round order stands in for the oldest: its wait so far is a lower bound.
    mutating func observeQueue(lane: Int, now: Instant) {
        guard self.lanes[lane].shedder != nil, let first = self.lanes[lane].waiters.first else { return }
        self.lanes[lane].shedder?.observe(wait: first.enqueuedAt.nanoseconds(to: now), ongoing: true, now: now)
    }

    /// Fails the waiters whose deadline has come, each with the error its deadline stands for.
    mutating func expireWaiters(now: Instant, into actions: inout PoolActions) {
        for lane in self.lanes.indices where !self.lanes[lane].waiters.isEmpty {
            var index = 0
            while index < self.lanes[lane].waiters.count {
                let waiter = self.lanes[lane].waiters[index]
                guard waiter.deadline <= now else {
                    index += 1
                    continue
                }
                let depth = self.lanes[lane].waiters.count
                self.removeWaiter(at: index, lane: lane)
                let name = self.lanes[lane].lane
                let waited = waiter.enqueuedAt.duration(to: now)
                let error: LifeguardError
                switch waiter.expiry {
                case .waitTimeout:
                    self.statistics.current.lanes[lane].outcomes.timeout += 1
                    error = .waitTimeout(lane: name, waited: waited, queueDepth: depth)
                case .shed:
                    self.statistics.current.lanes[lane].outcomes.shed += 1
                    error = .shed(lane: name, waited: waited, queueDepth: depth)
                case .callerDeadline:
                    self.statistics.current.lanes[lane].outcomes.deadlineExceeded += 1
                    error = .deadlineExceeded(
                        lane: name, waited: waited, queueDepth: depth, expectedWait: nil, remaining: .zero)
                }
                actions.failures.append(WaiterFailure(waiter: waiter.id, error: error))
            }
        }
    }

    /// The earliest deadline of any waiter.
    var earliestWaiterDeadline: Instant? {
        var earliest: Instant?
        for state in self.lanes {
            for waiter in state.waiters where earliest == nil || waiter.deadline < earliest! {
                earliest = waiter.deadline
            }
        }
        return earliest
    }
}
