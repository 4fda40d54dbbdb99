import Testing
@testable import Lifeguard

@Suite("The write coalescer's decisions")
struct CoalescerStateMachineTests {
    typealias Coalescer = CoalescerStateMachine<String>

    static func machine(maxBatch: Int = 3, maxDelay: Duration = .zero, maxQueued: Int = 6, flushers: Int = 1) -> Coalescer {
        Coalescer(configuration: .init(maxBatch: maxBatch, maxDelay: maxDelay, maxQueued: maxQueued, flushers: flushers))
    }

    /// Submits `write` with a fresh id; returns the id and the outcome.
    @discardableResult
    static func submit(_ write: String, to machine: inout Coalescer, at now: PoolInstant) -> (Coalescer.WriteID, Coalescer.SubmitOutcome) {
        let id = machine.reserveID()
        return (id, machine.submit(write, id: id, now: now))
    }

    static func outcome(of write: String, in machine: inout Coalescer, at now: PoolInstant) -> Coalescer.SubmitOutcome {
        Self.submit(write, to: &machine, at: now).1
    }

    /// The next step of `flusher`'s, as the writes of its batch (`nil` when it is no batch).
    static func batch(of machine: inout Coalescer, flusher: Int, at now: PoolInstant) -> [String]? {
        Self.batch(machine.nextStep(flusher: flusher, now: now))
    }

    static func batch(_ step: Coalescer.FlusherStep) -> [String]? {
        guard case .flush(let batch) = step else { return nil }
        return batch.map(\.write)
    }

    static func parkedTimer(_ step: Coalescer.FlusherStep) -> (deadline: PoolInstant?, timer: TimerID)? {
        guard case .park(let deadline, let timer) = step else { return nil }
        return (deadline, timer)
    }

    @Test("an idle flusher parks with no deadline; the first write wakes it, and with no delay it flushes at once")
    func firstWriteWakesAnIdleFlusher() throws {
        var machine = Self.machine()
        let parked = try #require(Self.parkedTimer(machine.nextStep(flusher: 0, now: at(0))))
        #expect(parked.deadline == nil)
        let (_, outcome) = Self.submit("a", to: &machine, at: at(1))
        #expect(outcome == .queued(wake: .init(flusher: 0, timer: parked.timer)))
        #expect(Self.batch(of: &machine, flusher: 0, at: at(1)) == ["a"])
        // A second write while the flusher is busy wakes nobody; it is the next batch.
        #expect(Self.outcome(of: "b", in: &machine, at: at(2)) == .queued(wake: nil))
        #expect(Self.batch(of: &machine, flusher: 0, at: at(3)) == ["b"])
    }

    @Test("with a delay, the flusher parks until the oldest write's deadline, and flushes what came by then")
    func batchWaitsOutItsDelay() throws {
        var machine = Self.machine(maxDelay: .milliseconds(10))
        _ = machine.nextStep(flusher: 0, now: at(0))
        Self.submit("a", to: &machine, at: at(1))
        let parked = try #require(Self.parkedTimer(machine.nextStep(flusher: 0, now: at(1))))
        #expect(parked.deadline == at(11))
        #expect(Self.outcome(of: "b", in: &machine, at: at(5)) == .queued(wake: nil), "not full: the batch still waits")
        let elapsed = machine.delayElapsed(flusher: 0, timer: parked.timer)
        #expect(elapsed)
        #expect(Self.batch(of: &machine, flusher: 0, at: at(11)) == ["a", "b"])
    }

    @Test("a delay too long for the clock parks the flusher until the clock's end, instead of wrapping into the past and flushing at once")
    func hugeDelayParks() throws {
        var machine = Self.machine(maxDelay: .seconds(Int64.max))
        Self.submit("a", to: &machine, at: at(1_000))
        let parked = try #require(Self.parkedTimer(machine.nextStep(flusher: 0, now: at(1_000))))
        #expect(parked.deadline == PoolInstant(nanoseconds: .max))
    }

    @Test("a batch that fills during its delay goes at once: the write that fills it wakes the flusher")
    func fullBatchCutsTheDelayShort() throws {
        var machine = Self.machine(maxBatch: 3, maxDelay: .seconds(8))
        _ = machine.nextStep(flusher: 0, now: at(0))
        Self.submit("a", to: &machine, at: at(1))
        let parked = try #require(Self.parkedTimer(machine.nextStep(flusher: 0, now: at(1))))
        Self.submit("b", to: &machine, at: at(2))
        #expect(Self.outcome(of: "c", in: &machine, at: at(3)) == .queued(wake: .init(flusher: 0, timer: parked.timer)))
        #expect(Self.batch(of: &machine, flusher: 0, at: at(3)) == ["a", "b", "c"])
        let stale = machine.delayElapsed(flusher: 0, timer: parked.timer)
        #expect(!stale, "the timer of a park that ended is stale")
    }

    @Test("a batch holds at most maxBatch writes, in the order submitted")
    func batchesAreBoundedAndOrdered() {
        var machine = Self.machine(maxBatch: 2)
        for write in ["a", "b", "c", "d", "e"] { Self.submit(write, to: &machine, at: at(0)) }
        #expect(Self.batch(of: &machine, flusher: 0, at: at(0)) == ["a", "b"])
        #expect(Self.batch(of: &machine, flusher: 0, at: at(0)) == ["c", "d"])
        #expect(Self.batch(of: &machine, flusher: 0, at: at(0)) == ["e"])
    }

    @Test("a full queue makes writes wait for room; they enter it in order as batches leave")
    func backPressure() {
        var machine = Self.machine(maxBatch: 2, maxQueued: 2)
        for write in ["a", "b"] { Self.submit(write, to: &machine, at: at(0)) }
        #expect(Self.outcome(of: "c", in: &machine, at: at(0)) == .waitingForRoom)
        #expect(Self.outcome(of: "d", in: &machine, at: at(0)) == .waitingForRoom)
        #expect(machine.counts == (queued: 2, waitingForRoom: 2))
        #expect(Self.batch(of: &machine, flusher: 0, at: at(0)) == ["a", "b"])
        #expect(machine.counts == (queued: 2, waitingForRoom: 0))
        // c and d fill the queue again: e waits for room, behind them.
        #expect(Self.outcome(of: "e", in: &machine, at: at(0)) == .waitingForRoom)
        #expect(Self.batch(of: &machine, flusher: 0, at: at(0)) == ["c", "d"])
        #expect(Self.batch(of: &machine, flusher: 0, at: at(0)) == ["e"])
    }

    @Test("a cancelled write leaves the queue or the room wait, and lets the next waiting write in; one in a batch runs to its outcome")
    func cancellation() {
        var machine = Self.machine(maxBatch: 1, maxQueued: 1)
        let (a, _) = Self.submit("a", to: &machine, at: at(0))
        let (b, _) = Self.submit("b", to: &machine, at: at(0))
        let (c, _) = Self.submit("c", to: &machine, at: at(0))
        let waitingForRoom = machine.cancel(b)
        let queued = machine.cancel(a)
        #expect(waitingForRoom)
        #expect(queued)
        #expect(machine.counts == (queued: 1, waitingForRoom: 0), "c took the room a left")
        #expect(Self.batch(of: &machine, flusher: 0, at: at(0)) == ["c"])
        let inBatch = machine.cancel(c)
        let unknown = machine.cancel(999)
        #expect(!inBatch, "in a batch: it runs to its outcome")
        #expect(!unknown)
    }

    @Test("shutdown refuses new writes, wakes the parked flushers, and flushes what was submitted at once (waiting for room too), then stops them")
    func shutdownFlushesThenStops() throws {
        var machine = Self.machine(maxBatch: 2, maxDelay: .seconds(8), maxQueued: 2, flushers: 2)
        let idle = try #require(Self.parkedTimer(machine.nextStep(flusher: 0, now: at(0))))
        #expect(Self.outcome(of: "a", in: &machine, at: at(0)) == .queued(wake: .init(flusher: 0, timer: idle.timer)))
        let first = try #require(Self.parkedTimer(machine.nextStep(flusher: 0, now: at(0))))
        let second = try #require(Self.parkedTimer(machine.nextStep(flusher: 1, now: at(0))))
        #expect(first.deadline == at(8_000) && second.deadline == at(8_000))
        #expect(Self.outcome(of: "b", in: &machine, at: at(1)) == .queued(wake: .init(flusher: 0, timer: first.timer)))
        #expect(Self.outcome(of: "c", in: &machine, at: at(1)) == .waitingForRoom)
        #expect(Self.batch(of: &machine, flusher: 0, at: at(1)) == ["a", "b"])
        let woken = machine.shutdown()
        #expect(woken == [.init(flusher: 1, timer: second.timer)])
        #expect(Self.outcome(of: "d", in: &machine, at: at(2)) == .refused)
        #expect(Self.batch(of: &machine, flusher: 1, at: at(2)) == ["c"], "the delay is cut short, and c waited for room before the shutdown")
        for flusher in 0..<2 {
            guard case .stop = machine.nextStep(flusher: flusher, now: at(2)) else {
                Issue.record("nothing left: flusher \(flusher) stops")
                continue
            }
        }
        #expect(machine.phase == .shuttingDown)
    }

    @Test("abandoning returns every write not sent (queued or waiting for room), wakes the parked flushers and stops them; later writes are refused")
    func abandon() throws {
        var machine = Self.machine(maxBatch: 2, maxDelay: .seconds(8), maxQueued: 2, flushers: 2)
        let idle = try #require(Self.parkedTimer(machine.nextStep(flusher: 1, now: at(0))))
        #expect(Self.outcome(of: "a", in: &machine, at: at(0)) == .queued(wake: .init(flusher: 1, timer: idle.timer)))
        Self.submit("b", to: &machine, at: at(0))
        #expect(Self.batch(of: &machine, flusher: 1, at: at(0)) == ["a", "b"])
        let (c, _) = Self.submit("c", to: &machine, at: at(1))
        let parked = try #require(Self.parkedTimer(machine.nextStep(flusher: 0, now: at(1))))
        let (unsent, woken) = machine.abandon()
        #expect(unsent == [c], "a and b are in a batch already: its flush decides")
        #expect(woken == [.init(flusher: 0, timer: parked.timer)])
        #expect(Self.outcome(of: "d", in: &machine, at: at(2)) == .refused)
        for flusher in 0..<2 {
            guard case .stop = machine.nextStep(flusher: flusher, now: at(2)) else {
                Issue.record("abandoned: flusher \(flusher) stops")
                continue
            }
        }

        var full = Self.machine(maxBatch: 1, maxQueued: 1)
        let (e, _) = Self.submit("e", to: &full, at: at(0))
        let (f, _) = Self.submit("f", to: &full, at: at(0))
        let unsentOfFull = full.abandon().unsent
        #expect(unsentOfFull == [e, f])
    }

    @Test("the first run() runs the flushers; a second, during it or after it, only waits")
    func runsOnce() {
        var machine = Self.machine()
        let first = machine.startRun()
        let second = machine.startRun()
        machine.endRun()
        let after = machine.startRun()
        #expect(first == .first)
        #expect(second == .alreadyRunning)
        #expect(after == .alreadyEnded)
    }

    @Test("a random run of submissions, cancellations, flushes, a shutdown: every write ends once, batches keep submission order and their bounds", arguments: [1, 2, 3, 4] as [UInt64])
    func everyWriteEndsOnce(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var machine = Self.machine(maxBatch: 4, maxDelay: .milliseconds(3), maxQueued: 8, flushers: 3)
        var ended: [Coalescer.WriteID: String] = [:]
        var submitted: [Coalescer.WriteID] = []
        var flushedOrder: [Coalescer.WriteID] = []
        var now = 0
        func end(_ id: Coalescer.WriteID, _ how: String) {
            #expect(ended[id] == nil, "write \(id) ended twice: \(ended[id] ?? "") and \(how)")
            ended[id] = how
        }
        for step in 0..<3_000 {
            now += Int(random.next() % 2)
            switch random.next() % 6 {
            case 0, 1:
                let id = machine.reserveID()
                switch machine.submit("w", id: id, now: at(now)) {
                case .refused: end(id, "refused")
                case .queued, .waitingForRoom: submitted.append(id)
                }
                #expect(machine.counts.queued <= 8)
            case 2:
                if let id = submitted.randomElement(using: &random), ended[id] == nil, machine.cancel(id) { end(id, "cancelled") }
            default:
                let flusher = Int(random.next() % 3)
                if case .flush(let batch) = machine.nextStep(flusher: flusher, now: at(now)) {
                    #expect((1...4).contains(batch.count))
                    for write in batch { end(write.id, "flushed") }
                    flushedOrder += batch.map(\.id)
                }
            }
            if step == 2_500 { _ = machine.shutdown() }
        }
        // Drain: after the shutdown every flusher flushes what is left, then stops.
        for _ in 0..<100 {
            for flusher in 0..<3 {
                if case .flush(let batch) = machine.nextStep(flusher: flusher, now: at(now)) {
                    for write in batch { end(write.id, "flushed") }
                    flushedOrder += batch.map(\.id)
                }
            }
        }
        #expect(machine.counts == (queued: 0, waitingForRoom: 0))
        #expect(submitted.allSatisfy { ended[$0] != nil }, "every write ended")
        #expect(flushedOrder == flushedOrder.sorted(), "batches keep the order of submission")
        #expect(flushedOrder.count > 500 && ended.values.contains("cancelled") && ended.values.contains("refused"), "the run covered every end")
    }
}
