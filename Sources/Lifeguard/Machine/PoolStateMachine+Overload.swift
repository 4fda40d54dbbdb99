/// Overload control: the lanes' queues, admission of requests that fan out, adaptive shedding,
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
    /// and whether the queue grows, and says when the lane is overloaded.
    ///
    /// CoDel watches the wait of what it dequeues, which under FIFO is the age of the oldest
    /// entry. A lane that serves newest first under overload does not dequeue its oldest
    /// waiter: the shedder watches the oldest waiter's age instead, whenever a request joins or
    /// leaves the queue. A queue whose oldest waiter stays older than the
    /// target for a whole interval stands.
    ///
    /// A standing queue is not overload when a bounded set of callers stands in it (an HTTP
    /// server's concurrent requests, a fixed set of agents): each caller comes back only once
    /// served, so shedding it turns a short wait into an error and reduces no load, and the
    /// callers it rejects come back at once and keep the queue standing. Overload is work
    /// arriving faster than the lane completes it, so that its queue grows without bound. With
    /// ``Shedding/Engagement/sustainedOverload`` the lane enters overload only when its queue
    /// stands above the target for an interval *and* has stayed past what the lane's
    /// `waitTimeout` can serve for ``Shedding/sustainedFor`` (requests failed the budget,
    /// rejected at once for their wait to expect or timed out, with no gap of an interval
    /// between two): a bounded set of callers whose waits fit the budget never gets there,
    /// whatever their number, and a synchronized start of theirs passes. It leaves overload
    /// once the wait to expect has stayed under a quarter of the target for an interval, the
    /// queue has stayed empty for one, or the overload has lasted ``Shedding/longestOverload``:
    /// callers it sheds who come back at once keep its queue standing, so it steps out and
    /// lets the budget alone judge again. ``Shedding/Engagement/standingQueue`` enters on a
    /// standing queue alone.
    struct Shedder {
        let target: Int64
        let interval: Int64
        let servesNewestFirst: Bool
        let engagement: Shedding.Engagement
        let sustainedFor: Int64
        let longestOverload: Int64
        /// Requests that arrive now are shed unless served within half the `target`.
        var isOverloaded = false
        /// While overloaded: since when.
        var overloadedSince: Instant?
        /// Since when the oldest waiter has been older than `target`.
        var aboveTargetSince: Instant?
        /// While overloaded: since when the queue has been empty.
        var drainedSince: Instant?
        /// While overloaded (sustained overload): since when the wait to expect has been under
        /// a quarter of the target.
        var calmSince: Instant?
        /// When a request last failed the lane's `waitTimeout` (rejected at once for its wait
        /// to expect, or timed out waiting).
        var budgetExceededAt: Instant?
        /// When the current streak of such failures began (no gap of an interval in it).
        var budgetExceededSince: Instant?

        init(_ policy: Shedding) {
            self.target = policy.target.wholeNanoseconds
            self.interval = policy.interval.wholeNanoseconds
            self.servesNewestFirst = policy.servesNewestFirst
            self.engagement = policy.engagement
            self.sustainedFor = policy.sustainedFor.wholeNanoseconds
            self.longestOverload = policy.longestOverload.wholeNanoseconds
        }

        /// A request failed the lane's `waitTimeout` at `now`.
        mutating func noteBudgetExceeded(now: Instant) {
            if let last = self.budgetExceededAt, last.nanoseconds(to: now) <= self.interval, let since = self.budgetExceededSince {
                self.budgetExceededSince = since
            } else {
                self.budgetExceededSince = now
            }
            self.budgetExceededAt = now
        }

        /// Whether requests have kept failing the budget for `sustainedFor`, up to the last interval.
        func budgetExceededSustained(now: Instant) -> Bool {
            guard let last = self.budgetExceededAt, let since = self.budgetExceededSince else { return false }
            return last.nanoseconds(to: now) <= self.interval && since.nanoseconds(to: last) >= self.sustainedFor
        }

        /// The queue's oldest waiter has waited `oldestWait` nanoseconds at `now` (`nil` when the
        /// queue is empty), and a request joining now could expect to wait `expectedWait`.
        ///
        /// Older than the target for a whole interval (and, for sustained overload, a request
        /// that failed the wait budget within the last interval) enters overload; younger ends the streak. An overloaded lane
        /// leaves overload once its queue has stayed empty for an interval, or (sustained
        /// overload) its expected wait has stayed under a quarter of the target for one: under
        /// overload, shedding keeps the queue short, and leaving at once would let the next
        /// burst queue unchecked again.
        mutating func observe(oldestWait: Int64?, expectedWait: Int64, now: Instant) {
            guard let oldestWait else {
                if self.isOverloaded {
                    let since = self.drainedSince ?? now
                    self.drainedSince = since
                    if since.nanoseconds(to: now) >= self.interval {
                        self.leaveOverload()
                    }
                }
                self.aboveTargetSince = nil
                return
            }
            self.drainedSince = nil
            if self.isOverloaded {
                guard self.engagement == .sustainedOverload else { return }
                if let since = self.overloadedSince, since.nanoseconds(to: now) >= self.longestOverload {
                    self.leaveOverload()
                    return
                }
                guard expectedWait < self.target / 4 else {
                    self.calmSince = nil
                    return
                }
                let since = self.calmSince ?? now
                self.calmSince = since
                if since.nanoseconds(to: now) >= self.interval { self.leaveOverload() }
                return
            }
            guard oldestWait > self.target else {
                self.aboveTargetSince = nil
                return
            }
            let since = self.aboveTargetSince ?? now
            self.aboveTargetSince = since
            if since.nanoseconds(to: now) >= self.interval,
                self.engagement == .standingQueue || self.budgetExceededSustained(now: now)
            {
                self.isOverloaded = true
                self.overloadedSince = now
            }
        }

        /// Leaves overload, if in it, and forgets the streak of budget failures: the lane's
        /// rejections were feeding themselves (``RetryStorm``).
        mutating func stepOut() {
            self.leaveOverload()
        }

        private mutating func leaveOverload() {
            self.isOverloaded = false
            self.overloadedSince = nil
            self.drainedSince = nil
            self.calmSince = nil
            self.aboveTargetSince = nil
            // Entering again takes a new streak of budget failures, from the budget alone.
            self.budgetExceededAt = nil
            self.budgetExceededSince = nil
        }
    }

    /// Tells when a lane's early rejections feed themselves. Callers that come back at once when
    /// rejected (an HTTP server's clients, a fixed set of users or agents that retry) keep the
    /// load whatever the lane rejects, and the CPU their rejections burn slows the work being
    /// served, which predicts longer waits, which rejects more: a stable storm. The example
    /// service on PostgreSQL with a budget of 4 and 200 clients entered it after a slow second
    /// and served 61 searches a second while rejecting 17,000 (hold p50 5.6 ms instead of 0.7);
    /// PostgresClient served 600-700 a second, all of them, p99 360-690 ms.
    ///
    /// A second in which the lane rejected early at least 256 leases and more than four for
    /// each lease it served from its queue is such a storm, and so is a quarter of a second or
    /// more of one that already did (judged then, not at the second's end): an open loop three times past the
    /// lane's capacity rejects two for each served. The lane then works as a plain pool for a
    /// second: nothing is rejected early, every caller queues (up to `maxWaiters`) and waits at
    /// most its `waitTimeout` or deadline; shedding steps out of overload, and waits that time
    /// out do not count towards entering it again. Callers waiting are callers not retrying:
    /// the storm's CPU goes back to the work. While the plain pool copes (it served twice the
    /// leases the storm's second did, or more and let at most one in nine time out: callers at
    /// the budget's edge, some of whose waits time out, are served four times faster queued
    /// than stormed), the next second is the same: the predictions were rejecting work that it
    /// serves (at the example's edge, holds of 0.8-1.2 ms for 1,600 leases queued put the wait
    /// to expect on either side of the 400 ms admitted, and judging again started the storm
    /// again: 420 searches a second instead of 600). When it does not cope, the wait to expect judges again, storms or not,
    /// for 2 s, twice as long after each plain pool that did not cope (up to 32 s): a flood
    /// (an open loop far past capacity) or callers that hold their connections long (a
    /// transaction held across a model call, where queued requests time out after part of
    /// them ran: 13.4 requests/s served queueing, 20.9 rejecting) spend little time queued.
    struct RetryStorm {
        static let window: Int64 = 1_000_000_000
        static let minimumRejected = 256
        static let rejectedPerServed = 4
        static let servedPerExpired = 8
        static let longestCooldown: Int64 = 32 * window

        /// When the current second began; `nil` before the first admission judged.
        var windowStart: PoolInstant?
        /// Leases rejected early in the current second.
        var rejected = 0
        /// Leases served from the queue in the current second.
        var served = 0
        /// Leases whose wait timed out (their `waitTimeout` or deadline) in the current second.
        var expired = 0
        /// The leases the last storm's second served.
        var servedInStorm = 0
        /// After a plain pool that did not cope: how long storms are left to the wait to
        /// expect, and until when.
        var cooldown: Int64 = 0
        var noStormBefore: PoolInstant?
        /// Until when the lane works as a plain pool, after a storm.
        private(set) var queuesEveryoneUntil: PoolInstant?

        /// Whether every caller queues at `now`.
        func queuesEveryone(at now: PoolInstant) -> Bool {
            self.queuesEveryoneUntil.map { now < $0 } ?? false
        }

        /// Starts a new second when the current one has passed, judging the one that ended.
        /// Returns whether it was a storm, after which every caller queues from `now`.
        mutating func roll(now: PoolInstant) -> Bool {
            if let until = self.queuesEveryoneUntil {
                guard now >= until else { return false }
                // It served twice what the storm did, or more with at most one in nine timed out.
                let coped = self.served >= 2 * self.servedInStorm
                    || (self.served > self.servedInStorm && self.expired * Self.servedPerExpired <= self.served)
                self.startWindow(at: now)
                if coped {
                    self.queuesEveryoneUntil = PoolInstant(nanoseconds: now.nanoseconds &+ Self.window)
                    self.cooldown = 0
                } else {
                    // Queueing wasted more than rejecting: judge by the wait to expect, storm or
                    // not, for a while (2 s, then twice as long after each such failure).
                    self.queuesEveryoneUntil = nil
                    self.cooldown = min(max(2 * Self.window, 2 * self.cooldown), Self.longestCooldown)
                    self.noStormBefore = PoolInstant(nanoseconds: now.nanoseconds &+ self.cooldown)
                }
                return false
            }
            guard let start = self.windowStart else {
                self.startWindow(at: now)
                return false
            }
            let elapsed = start.nanoseconds(to: now)
            let stormSoFar = now >= (self.noStormBefore ?? now)
                && self.rejected >= Self.minimumRejected && self.rejected > Self.rejectedPerServed * self.served
            // A storm shows within a quarter of a second: waiting out the second let it reject
            // thousands (200 clients retrying at once reject some 8,000 leases a second).
            let judgedEarly = stormSoFar && elapsed >= Self.window / 4 && elapsed < Self.window
            guard judgedEarly || elapsed >= Self.window else { return false }
            // A second that ended long ago says nothing of the load now.
            let storm = stormSoFar && elapsed < 2 * Self.window
            // What the storm served in a second (a quarter's, scaled), for the plain pool to beat.
            let servedPerSecond = Int(Int64(self.served) * Self.window / min(elapsed, Self.window))
            self.startWindow(at: now)
            if storm {
                self.servedInStorm = servedPerSecond
                self.queuesEveryoneUntil = PoolInstant(nanoseconds: now.nanoseconds &+ Self.window)
            }
            return storm
        }

        private mutating func startWindow(at now: PoolInstant) {
            self.windowStart = now
            self.rejected = 0
            self.served = 0
            self.expired = 0
        }
    }

    /// The longest wait to expect admitted within a budget of `nanoseconds` for the last of
    /// `leasesAhead` leases in a queue, the rest left for the spread of its real wait around
    /// what is expected (see ``rejectionAtAdmission(lane:leases:callerDeadline:now:)``).
    ///
    /// That wait is the time the lane takes to serve the leases ahead, a sum of as many serving
    /// intervals: its spread shrinks with their number as one over its square root (for
    /// intervals as spread as an exponential's, a standard deviation of the mean over
    /// √`leasesAhead`). Four of those are left, and a fifth of the budget at most: a queue of 400
    /// leases or fewer is admitted within four fifths, one of 1,600 within nine tenths. On
    /// PostgreSQL at 1.1× a lane's capacity, admitting up to the whole budget kept the queue at
    /// its edge, and fan-outs whose last leases waited past it failed partway; the example at
    /// budget 2 under 200 clients queues 1,600 leases that PostgresClient serves within 411 ms
    /// (p99), and four fifths of 500 ms rejected 9.8% of its searches.
    static func admissible(within nanoseconds: Int64, leasesAhead: Int) -> Int64 {
        let spread = min(0.2, 4 / Double(max(1, leasesAhead)).squareRoot())
        return nanoseconds - Int64(Double(nanoseconds) * spread)
    }

    /// How many connections a lane can hold at most: its limit, within what the other lanes'
    /// reservations leave.
    func capacity(ofLane lane: Int) -> Int {
        max(1, min(self.lanes[lane].limit, self.configuration.budget - (self.reservedTotal - self.lanes[lane].reserved)))
    }

    /// The wait to expect for the last of `leases` requests joining `lane`'s queue now: the
    /// requests ahead and these, times the lane's recent hold time over its capacity, or
    /// times the interval at which the backlogged lane has been serving its waiters, whichever
    /// is longer. The hold time alone misses what a lease costs between two holds (a reset, a
    /// connection replaced after a cancellation, the hand-off): on PostgreSQL at 1.1× a lane's
    /// capacity, waits so predicted ran past `waitTimeout`, and a fan-out admitted whole failed
    /// partway, wasting the leases that had run.
    func expectedWait(lane: Int, leases: Int) -> Int64 {
        let ahead = Int64(self.lanes[lane].waiters.count + leases)
        let byHold = ahead * self.lanes[lane].recentHolds.meanNanoseconds / Int64(self.capacity(ofLane: lane))
        let gaps = self.lanes[lane].servedGaps
        // Sixteen gaps at least before the interval is trusted.
        let interval = gaps.count >= 16 ? gaps.meanNanoseconds : 0
        return max(byHold, ahead * interval)
    }

    /// Whether `leases` requests may join `lane`'s queue now, given the lane's overload, its wait
    /// budget and the caller's deadline: `nil` when they may, or the error that rejects them all
    /// at once.
    ///
    /// An overloaded lane sheds at once what it could not expect to serve within half its target
    /// (leaving the other half for the wait's spread). A wait to expect beyond the lane's
    /// `waitTimeout` or the caller's deadline, less the wait's spread (``admissible(within:leasesAhead:)``),
    /// is rejected at once: failing now beats failing after the wait. Nothing else is
    /// rejected early, and nothing at all while the lane's rejections feed themselves
    /// (``RetryStorm``). The rejection is counted once per lease.
    mutating func rejectionAtAdmission(lane: Int, leases: Int, callerDeadline: Instant?, now: Instant) -> LifeguardError? {
        if self.lanes[lane].retryStorm.roll(now: now) {
            self.lanes[lane].shedder?.stepOut()
        }
        guard !self.lanes[lane].retryStorm.queuesEveryone(at: now) else { return nil }
        let rejection = self.predictedRejection(lane: lane, leases: leases, callerDeadline: callerDeadline, now: now)
        if rejection != nil { self.lanes[lane].retryStorm.rejected += leases }
        return rejection
    }

    /// The rejection at admission that the lane's wait to expect calls for, before the
    /// ``RetryStorm`` check: see ``rejectionAtAdmission(lane:leases:callerDeadline:now:)``.
    private mutating func predictedRejection(lane: Int, leases: Int, callerDeadline: Instant?, now: Instant) -> LifeguardError? {
        let expected = self.expectedWait(lane: lane, leases: leases)
        // The expected wait is an average: admitting up to half the target leaves room for its
        // spread, so that what is admitted is rarely shed later, after part of a request ran.
        if let shedder = self.lanes[lane].shedder, shedder.isOverloaded, expected > shedder.target / 2 {
            self.recorder.record(.requestEnded(lane: lane, .shed, count: leases))
            return .shed(
                lane: self.lanes[lane].lane, waited: .zero, queueDepth: self.lanes[lane].waiters.count,
                expectedWait: .nanoseconds(expected))
        }
        // Not within the lane's own wait budget either: it would time out after waiting it all.
        // The wait to expect is an average, so part of the budget is left for its spread: on
        // PostgreSQL at 1.1x a lane's capacity, admitting up to the whole budget kept the queue at
        // its edge, and fan-outs whose last leases waited past it failed partway, their other
        // leases cancelled and reset (138-142 requests/s; with four fifths 154-156/s, none
        // cancelled, PostgresClient 159/s).
        let ahead = self.lanes[lane].waiters.count + leases
        let limit = Self.admissible(within: self.lanes[lane].waitTimeoutNanoseconds, leasesAhead: ahead)
        if expected > limit {
            self.recorder.record(.requestEnded(lane: lane, .timeout, count: leases))
            self.lanes[lane].shedder?.noteBudgetExceeded(now: now)
            return .waitTimeout(
                lane: self.lanes[lane].lane, waited: .zero, queueDepth: self.lanes[lane].waiters.count,
                expectedWait: .nanoseconds(expected), admissionLimit: .nanoseconds(limit))
        }
        if let callerDeadline {
            let remaining = now.nanoseconds(to: callerDeadline)
            // The same share of the time left, as of the lane's budget: a wait admitted at the
            // edge of the deadline meets it as often as not, after part of the request ran.
            if remaining <= 0 || Self.admissible(within: remaining, leasesAhead: ahead) < expected {
                self.recorder.record(.requestEnded(lane: lane, .deadlineExceeded, count: leases))
                return .deadlineExceeded(
                    lane: self.lanes[lane].lane, waited: .zero, queueDepth: self.lanes[lane].waiters.count,
                    expectedWait: .nanoseconds(expected), remaining: .nanoseconds(max(0, remaining)))
            }
        }
        return nil
    }

    /// The deadline of a request admitted to `lane`'s queue now, and why: the earliest of the
    /// lane's `waitTimeout`, the shedding target while the lane is overloaded under the strict
    /// engagement, and the caller's deadline. Under sustained overload what is admitted keeps
    /// its `waitTimeout`: admission already keeps the queue within half the target, and a target
    /// as deadline could shed the last leases of a fan-out admitted whole after the rest had run.
    /// (In the simulator the two give the same figures at 1.5× and 3× capacity.)
    @inline(__always)  // Called from `lease`, which holds the machine inout: a call copied all of it.
    func admissionDeadline(lane: Int, callerDeadline: Instant?, now: Instant) -> (Instant, Expiry) {
        var deadline = PoolInstant(nanoseconds: now.nanoseconds &+ self.lanes[lane].waitTimeoutNanoseconds)
        var expiry = Expiry.waitTimeout
        if let shedder = self.lanes[lane].shedder, shedder.isOverloaded, shedder.engagement == .standingQueue {
            let shedAt = PoolInstant(nanoseconds: now.nanoseconds &+ shedder.target)
            if shedAt < deadline { (deadline, expiry) = (shedAt, .shed) }
        }
        if let callerDeadline, callerDeadline < deadline {
            (deadline, expiry) = (callerDeadline, .callerDeadline)
        }
        return (deadline, expiry)
    }

    /// Before a request fans out `leases` leases in `lane`: `nil` when it may start, or the
    /// error that rejects it whole, at once. Part of a request is worth nothing, so an
    /// overloaded lane sheds whole requests rather than some of their leases.
    ///
    /// The leases an idle connection would serve at once do not count as queued.
    package mutating func admitFanOut(lane: Int, leases: Int, deadline callerDeadline: Instant?, now: Instant) -> LifeguardError? {
        guard case .running = self.lifecycle else { return nil }
        self.observeQueue(lane: lane, now: now)
        let servedAtOnce = self.lanes[lane].waiters.isEmpty
            ? min(self.idle.count, self.lanes[lane].limit - self.lanes[lane].leased) : 0
        let queued = leases - max(0, servedAtOnce)
        guard queued > 0 else { return nil }
        let rejection = self.rejectionAtAdmission(lane: lane, leases: queued, callerDeadline: callerDeadline, now: now)
        if rejection != nil {
            self.recorder.record(.arrived(lane: lane, count: queued))
        }
        return rejection
    }

    /// Queues a waiter at the end of `lane`'s queue: requests are served in the order they came,
    /// a fan-out's leases together, as a FIFO pool serves them. Taking turns between requests
    /// finished every one of them later: one lease per turn gave a wait p99 of 94 ms against
    /// FIFO's 74 ms below capacity (simulated), and a lane's capacity per turn deferred the
    /// last leases of a fan-out wider than its lane behind everyone, so that they timed out and
    /// failed the request after the rest had run (`rag`, budget 10, 60 users: 31% less served).
    /// ``FanOut``'s `maxConcurrent` caps what one request takes.
    mutating func enqueue(
        lane: Int, id: WaiterID, now: Instant, deadline: Instant, expiry: Expiry, callSite: CallSite?
    ) {
        // In place: reading the lane's fields through `self.lanes[lane]` one by one copied the
        // whole lane state (its queue and tables retained and released) on every enqueue.
        self.lanes[lane].enqueue(id: id, now: now, deadline: deadline, expiry: expiry, callSite: callSite)
        self.waiterCount += 1
    }

    /// Takes the waiter at `index` out of `lane`'s queue, with its bookkeeping.
    @discardableResult
    mutating func removeWaiter(at index: Int, lane: Int, now: Instant) -> Waiter {
        // The head, as a queue is served, without the general removal's gap closing.
        let waiter = index == 0 ? self.lanes[lane].waiters.removeFirst() : self.lanes[lane].waiters.remove(at: index)
        self.waiterCount -= 1
        if self.lanes[lane].waiters.isEmpty {
            self.lanes[lane].lastServedAt = nil
            self.lanes[lane].shedder?.observe(oldestWait: nil, expectedWait: 0, now: now)
        }
        return waiter
    }

    /// The next waiter of `lane` to serve, out of the queue: the oldest, or the
    /// newest while the lane is overloaded and serves newest first.
    mutating func takeNextWaiter(lane: Int, now: Instant) -> Waiter {
        let newestFirst = self.lanes[lane].shedder.map { $0.isOverloaded && $0.servesNewestFirst } ?? false
        let index = newestFirst ? self.lanes[lane].waiters.count - 1 : 0
        let waiter = self.removeWaiter(at: index, lane: lane, now: now)
        self.lanes[lane].retryStorm.served += 1
        if let last = self.lanes[lane].lastServedAt {
            self.lanes[lane].servedGaps.add(last.nanoseconds(to: now))
        }
        self.lanes[lane].lastServedAt = self.lanes[lane].waiters.isEmpty ? nil : now
        self.observeQueue(lane: lane, now: now)
        return waiter
    }

    /// Takes every waiter out of `lane`'s queue, in order.
    mutating func removeAllWaiters(lane: Int, now: Instant) -> [Waiter] {
        let waiters = Array(self.lanes[lane].waiters)
        self.waiterCount -= waiters.count
        self.lanes[lane].waiters.removeAll()
        self.lanes[lane].lastServedAt = nil
        self.lanes[lane].shedder?.observe(oldestWait: nil, expectedWait: 0, now: now)
        return waiters
    }

    /// Tells `lane`'s shedder how long the oldest waiter has waited: when a request is about
    /// to join the queue, and when one was served.
    mutating func observeQueue(lane: Int, now: Instant) {
        guard self.lanes[lane].shedder != nil else { return }
        // Waiters join at the end (``enqueue``), whichever end they are served from: the first
        // is the oldest. (A scan of the queue here cost every arrival and every serve as many
        // steps as requests waited, under the lock: 1,600 in the example's retry storm.)
        let oldest = self.lanes[lane].waiters.first?.enqueuedAt
        let expected = self.expectedWait(lane: lane, leases: 1)
        self.lanes[lane].shedder?.observe(oldestWait: oldest.map { $0.nanoseconds(to: now) }, expectedWait: expected, now: now)
    }

    /// Fails the waiters whose deadline has come, each with the error its deadline stands for,
    /// and returns the earliest deadline of those left: one pass over the queues per tick.
    mutating func expireWaiters(now: Instant, into actions: inout PoolActions) -> Instant? {
        var earliest: Instant?
        for lane in self.lanes.indices where !self.lanes[lane].waiters.isEmpty {
            var index = 0
            while index < self.lanes[lane].waiters.count {
                let waiter = self.lanes[lane].waiters[index]
                guard waiter.deadline <= now else {
                    if earliest == nil || waiter.deadline < earliest! { earliest = waiter.deadline }
                    index += 1
                    continue
                }
                let depth = self.lanes[lane].waiters.count
                self.removeWaiter(at: index, lane: lane, now: now)
                self.lanes[lane].retryStorm.expired += 1
                let name = self.lanes[lane].lane
                let waited = waiter.enqueuedAt.duration(to: now)
                let error: LifeguardError
                switch waiter.expiry {
                case .waitTimeout:
                    self.recorder.record(.requestEnded(lane: lane, .timeout, count: 1))
                    if !self.lanes[lane].retryStorm.queuesEveryone(at: now) {
                        self.lanes[lane].shedder?.noteBudgetExceeded(now: now)
                    }
                    // No connection open, some opening: the database is slow or unreachable,
                    // not the pool saturated; the error says so.
                    let opening = self.slots.reduce(0) { $0 + ($1.state == .opening ? 1 : 0) }
                    let open = self.slots.contains { $0.state != .free && $0.state != .opening && $0.state != .closing }
                    error = open
                        ? .waitTimeout(lane: name, waited: waited, queueDepth: depth)
                        : .waitTimeout(
                            lane: name, waited: waited, queueDepth: depth, connectionsOpening: opening,
                            lastConnectError: self.outage?.lastError)
                case .shed:
                    self.recorder.record(.requestEnded(lane: lane, .shed, count: 1))
                    error = .shed(lane: name, waited: waited, queueDepth: depth)
                case .callerDeadline:
                    self.recorder.record(.requestEnded(lane: lane, .deadlineExceeded, count: 1))
                    error = .deadlineExceeded(
                        lane: name, waited: waited, queueDepth: depth, expectedWait: nil, remaining: .zero)
                }
                actions.failures.append(WaiterFailure(waiter: waiter.id, error: error))
            }
        }
        return earliest
    }

}

extension PoolStateMachine.LaneState {
    /// Queues a waiter at the end (see ``PoolStateMachine/enqueue(lane:id:now:deadline:expiry:callSite:)``).
    mutating func enqueue(
        id: WaiterID, now: PoolInstant, deadline: PoolInstant, expiry: PoolStateMachine.Expiry, callSite: CallSite?
    ) {
        self.waiters.append(PoolStateMachine.Waiter(id: id, enqueuedAt: now, deadline: deadline, expiry: expiry, callSite: callSite))
        self.shedder?.drainedSince = nil
    }
}
