import DequeModule

/// The decisions of a write coalescer (group commit), as a value: which writes wait, which go
/// in the next batch, when a flusher waits and for how long, and what a shutdown, a
/// cancellation or an abandoned run does to the writes not sent yet. It takes `now` as an
/// argument, never reads a clock and never suspends; ``CoalescingQueue`` carries out what it
/// decides. Generic over what a write is, so that the adapter's statements stay the
/// adapter's.
///
/// A write is in one of three places until its batch takes it: **waiting for room** (the
/// queue was full), **queued**, or **in a batch** (then only the flush decides its outcome).
/// Writes enter the queue in the order they were submitted.
package struct CoalescerStateMachine<Write> {
    /// How writes are grouped.
    package struct Configuration: Sendable, Hashable {
        /// The most writes in one batch.
        package var maxBatch: Int
        /// How long the oldest queued write waits for the batch to fill.
        package var maxDelay: Duration
        /// The most writes queued; beyond it writes wait for room.
        package var maxQueued: Int
        /// How many batches may be in flight at once (one flusher each).
        package var flushers: Int

        /// Creates a configuration (the caller validated it: every count at least 1,
        /// `maxQueued` at least `maxBatch`, `maxDelay` not negative).
        package init(maxBatch: Int, maxDelay: Duration, maxQueued: Int, flushers: Int) {
            self.maxBatch = maxBatch
            self.maxDelay = maxDelay
            self.maxQueued = maxQueued
            self.flushers = flushers
        }
    }

    /// A write's number, given by ``reserveID()``.
    package typealias WriteID = UInt64

    /// A write with its number, as a batch carries it.
    package struct Submitted {
        /// The write's number.
        package let id: WriteID
        /// What to write.
        package let write: Write
        /// When it was submitted: a batch is due ``Configuration/maxDelay`` after its oldest.
        package let submittedAt: PoolInstant
    }

    /// A parked flusher to wake, and the timer of its park, which no longer matters.
    package struct Wake: Equatable, Sendable {
        /// The flusher's index.
        package let flusher: Int
        /// The timer it was parked on.
        package let timer: TimerID
    }

    /// What became of a submitted write.
    package enum SubmitOutcome: Equatable {
        /// It is queued; wake this parked flusher, if any.
        case queued(wake: Wake?)
        /// The queue is full: it waits for room, and enters the queue as batches leave it.
        case waitingForRoom
        /// The coalescer is shutting down or abandoned: refuse it.
        case refused
    }

    /// What a flusher does next.
    package enum FlusherStep {
        /// Flush these writes, in order, as one batch.
        case flush([Submitted])
        /// Wait until woken, or until `deadline` when there is one (then report it with
        /// ``delayElapsed(flusher:timer:)`` and this timer's id).
        case park(deadline: PoolInstant?, timer: TimerID)
        /// Stop: shut down with nothing left to send, or abandoned.
        case stop
    }

    /// How the coalescer's life has gone so far.
    package enum Phase: Equatable {
        /// Taking writes.
        case running
        /// Taking no new writes; those already submitted are still flushed, at once.
        case shuttingDown
        /// Nothing more is sent: what was not sent fails.
        case abandoned
    }

    /// What the run of a coalescer is, seen by a new call of `run()`.
    package enum RunStart: Equatable {
        /// This call runs the flushers.
        case first
        /// A run is under way: this call only waits for it to end.
        case alreadyRunning
        /// A run has ended already.
        case alreadyEnded
    }

    private enum Flusher {
        case busy
        case parked(timer: TimerID)
        case stopped
    }

    package let configuration: Configuration
    package private(set) var phase = Phase.running
    private var queue = Deque<Submitted>()
    private var waitingForRoom = Deque<Submitted>()
    private var flushers: [Flusher]
    private var nextID: WriteID = 0
    private var nextTimer = 0
    private var runStarted = false
    package private(set) var runEnded = false

    /// Creates the machine with every flusher busy (not yet parked).
    package init(configuration: Configuration) {
        self.configuration = configuration
        self.flushers = Array(repeating: .busy, count: configuration.flushers)
    }

    /// How many writes are queued, and how many wait for room.
    package var counts: (queued: Int, waitingForRoom: Int) { (self.queue.count, self.waitingForRoom.count) }

    /// A new write's number: taken before it is submitted, so that its cancellation can name
    /// it.
    package mutating func reserveID() -> WriteID {
        self.nextID &+= 1
        return self.nextID
    }

    /// A write arrives.
    package mutating func submit(_ write: Write, id: WriteID, now: PoolInstant) -> SubmitOutcome {
        guard self.phase == .running else { return .refused }
        let submitted = Submitted(id: id, write: write, submittedAt: now)
        guard self.queue.count < self.configuration.maxQueued && self.waitingForRoom.isEmpty else {
            self.waitingForRoom.append(submitted)
            return .waitingForRoom
        }
        self.queue.append(submitted)
        // A first write starts a batch; a full batch need not wait out the delay.
        guard self.queue.count == 1 || self.queue.count >= self.configuration.maxBatch else { return .queued(wake: nil) }
        return .queued(wake: self.unpark())
    }

    /// The write's task was cancelled: `true` when it was not sent yet and left the queue (fail
    /// it with `CancellationError`), `false` when a batch has it already (it runs to its
    /// outcome) or it has ended.
    package mutating func cancel(_ id: WriteID) -> Bool {
        if let index = self.waitingForRoom.firstIndex(where: { $0.id == id }) {
            self.waitingForRoom.remove(at: index)
            return true
        }
        guard let index = self.queue.firstIndex(where: { $0.id == id }) else { return false }
        self.queue.remove(at: index)
        self.admitWaitingForRoom()
        return true
    }

    /// What `flusher` does next, now that it is free: flush a batch that is full, due, or
    /// wanted at once by a shutdown; else park (until the batch is due, when one has begun).
    package mutating func nextStep(flusher: Int, now: PoolInstant) -> FlusherStep {
        if case .stopped = self.flushers[flusher] { return .stop }
        switch self.phase {
        case .abandoned:
            self.flushers[flusher] = .stopped
            return .stop
        case .shuttingDown where self.queue.isEmpty:
            self.flushers[flusher] = .stopped
            return .stop
        case .running, .shuttingDown:
            break
        }
        if let oldest = self.queue.first {
            let due = oldest.submittedAt.advanced(by: self.configuration.maxDelay)
            if self.phase == .shuttingDown || self.queue.count >= self.configuration.maxBatch || due <= now {
                self.flushers[flusher] = .busy
                return .flush(self.takeBatch())
            }
            return self.park(flusher, until: due)
        }
        return self.park(flusher, until: nil)
    }

    /// A parked flusher's deadline came: `true` when it should ask for its next step (it was
    /// still parked on that timer), `false` for a timer that a wake-up made stale.
    package mutating func delayElapsed(flusher: Int, timer: TimerID) -> Bool {
        guard case .parked(let parkedOn) = self.flushers[flusher], parkedOn == timer else { return false }
        self.flushers[flusher] = .busy
        return true
    }

    /// Takes no new writes; those submitted (queued or waiting for room) are flushed at once.
    /// Returns the parked flushers to wake.
    package mutating func shutdown() -> [Wake] {
        if self.phase == .running { self.phase = .shuttingDown }
        return self.unparkAll()
    }

    /// Nothing more will be sent (the run was cancelled or will never run): returns the writes
    /// not sent (fail them), and the parked flushers to wake.
    package mutating func abandon() -> (unsent: [WriteID], woken: [Wake]) {
        self.phase = .abandoned
        let unsent = self.queue.map(\.id) + self.waitingForRoom.map(\.id)
        self.queue.removeAll()
        self.waitingForRoom.removeAll()
        return (unsent, self.unparkAll())
    }

    /// A call of `run()` begins.
    package mutating func startRun() -> RunStart {
        if self.runEnded { return .alreadyEnded }
        defer { self.runStarted = true }
        return self.runStarted ? .alreadyRunning : .first
    }

    /// The run that ``startRun()`` called first has returned.
    package mutating func endRun() {
        self.runEnded = true
    }

    private mutating func takeBatch() -> [Submitted] {
        let count = min(self.queue.count, self.configuration.maxBatch)
        let batch = Array(self.queue.prefix(count))
        self.queue.removeFirst(count)
        self.admitWaitingForRoom()
        return batch
    }

    /// Writes waiting for room enter the queue, in order, while there is room.
    private mutating func admitWaitingForRoom() {
        while self.queue.count < self.configuration.maxQueued, let next = self.waitingForRoom.popFirst() {
            self.queue.append(next)
        }
    }

    private mutating func park(_ flusher: Int, until deadline: PoolInstant?) -> FlusherStep {
        self.nextTimer &+= 1
        let timer = TimerID(value: self.nextTimer)
        self.flushers[flusher] = .parked(timer: timer)
        return .park(deadline: deadline, timer: timer)
    }

    /// Wakes the first parked flusher.
    private mutating func unpark() -> Wake? {
        for index in self.flushers.indices {
            if case .parked(let timer) = self.flushers[index] {
                self.flushers[index] = .busy
                return Wake(flusher: index, timer: timer)
            }
        }
        return nil
    }

    private mutating func unparkAll() -> [Wake] {
        var woken: [Wake] = []
        while let wake = self.unpark() { woken.append(wake) }
        return woken
    }
}

extension CoalescerStateMachine.Submitted: Sendable where Write: Sendable {}
extension CoalescerStateMachine.FlusherStep: Sendable where Write: Sendable {}
