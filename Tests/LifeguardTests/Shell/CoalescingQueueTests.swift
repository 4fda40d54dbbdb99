import Logging
import Synchronization
import Testing
@testable import Lifeguard
import LifeguardTestUtils

/// The coalescer's shell on the manual clock: a batch's delay is a timer on the pool's clock,
/// and a parked flusher on it tells a test that its writes are queued (no polling).
@Suite("The write coalescer's shell, on the manual clock", .timeLimit(.minutes(3)))
struct CoalescingQueueTests {
    struct Stopped: Error, Equatable {}

    /// A queue whose batches are recorded and then all succeed.
    final class Harness: Sendable {
        let clock = ManualClock()
        let queue: CoalescingQueue<String, ManualClock>
        let batches = Mutex<[[String]]>([])

        init(maxBatch: Int = 8, maxDelay: Duration, maxQueued: Int = 16, flushers: Int = 1) {
            self.queue = CoalescingQueue(
                configuration: .init(maxBatch: maxBatch, maxDelay: maxDelay, maxQueued: maxQueued, flushers: flushers),
                clock: self.clock, logger: Logger(label: "coalescing-queue-tests"), stopped: { Stopped() })
        }

        func run() -> Task<Void, Never> {
            Task {
                await self.queue.run { batch in
                    self.batches.withLock { $0.append(batch.map(\.write)) }
                    for write in batch { self.queue.resolve(write.id, with: .success(())) }
                }
            }
        }

        func write(_ write: String) -> Task<Void, any Error> {
            Task { try await self.queue.submit(write) }
        }

        /// Returns once a flusher waits out a delay ending `offset` from the clock's origin.
        func delayed(until offset: Duration) async {
            await self.clock.sleeper(until: self.clock.instant(at: offset))
        }
    }

    @Test("a batch waits out its delay on the pool's clock and takes what came meanwhile")
    func delayOnThePoolsClock() async throws {
        let harness = Harness(maxDelay: .milliseconds(10))
        let running = harness.run()
        let first = harness.write("a")
        await harness.delayed(until: .milliseconds(10))
        let second = harness.write("b")
        // The second write does not fill the batch: the flusher still waits for the clock.
        harness.clock.advance(by: .milliseconds(10))
        try await first.value
        try await second.value
        #expect(harness.batches.withLock { $0.flatMap { $0 } } == ["a", "b"])
        harness.queue.shutdown()
        await running.value
    }

    @Test("a batch that fills goes at once, with the clock still at the start of its delay")
    func fullBatchGoesAtOnce() async throws {
        let harness = Harness(maxBatch: 2, maxDelay: .seconds(1))
        let running = harness.run()
        let first = harness.write("a")
        await harness.delayed(until: .seconds(1))
        let second = harness.write("b")
        try await first.value
        try await second.value
        #expect(harness.batches.withLock { $0 } == [["a", "b"]])
        #expect(harness.clock.now == harness.clock.origin)
        harness.queue.shutdown()
        await running.value
    }

    @Test("a write cancelled while queued fails with CancellationError and is never flushed")
    func cancelledWhileQueued() async throws {
        let harness = Harness(maxDelay: .milliseconds(10))
        let running = harness.run()
        let write = harness.write("a")
        await harness.delayed(until: .milliseconds(10))
        write.cancel()
        await #expect(throws: CancellationError.self) { try await write.value }
        #expect(harness.queue.counts == (queued: 0, waitingForRoom: 0))
        harness.clock.advance(by: .milliseconds(10))
        harness.queue.shutdown()
        await running.value
        #expect(harness.batches.withLock { $0 }.isEmpty)
    }

    @Test("shutdown flushes a batch waiting out its delay at once, then refuses writes with the stopped error")
    func shutdownCutsTheDelay() async throws {
        let harness = Harness(maxDelay: .seconds(8))
        let running = harness.run()
        let write = harness.write("a")
        await harness.delayed(until: .seconds(8))
        harness.queue.shutdown()
        try await write.value
        await running.value
        #expect(harness.batches.withLock { $0 } == [["a"]])
        #expect(harness.clock.now == harness.clock.origin)
        await #expect(throws: Stopped.self) { try await harness.write("late").value }
    }

    @Test("cancelling the run fails the queued writes with the stopped error, never sent; a second run() ends with the first")
    func cancelledRun() async throws {
        let harness = Harness(maxDelay: .milliseconds(10), flushers: 2)
        let running = harness.run()
        let writes = ["a", "b"].map { harness.write($0) }
        await harness.delayed(until: .milliseconds(10))
        let second = harness.run()
        running.cancel()
        for write in writes {
            await #expect(throws: Stopped.self) { try await write.value }
        }
        await running.value
        await second.value
        #expect(harness.batches.withLock { $0 }.isEmpty)
        #expect(harness.clock.sleeperDeadlines.isEmpty, "the delay's timer was cancelled")
    }
}
