import NIOCore
import Synchronization

/// Whether the pooler in front of the server (PgBouncer) has lately been slow to give a
/// statement a server, shared by a pool's connections.
///
/// A statement that may write is sent right behind its ping while the pooler answers pings
/// at once: holding every write back for the ping's answer would cost a round trip each
/// (0.65× the writes per second of `PostgresClient` through PgBouncer). Once a ping has gone
/// unanswered for ``noticeAfter``, an outage may be starting: for ``lasts`` after that,
/// writes wait for their ping's answer before they are sent, so that one the pool then
/// reports failed can never run later. Writes already sent when the trouble began have an
/// unknown outcome, as any write in flight when a server fails.
final class PoolerSuspicion: Sendable {
    /// How long a ping may go unanswered before the pooler is suspect.
    static let noticeAfter = TimeAmount.milliseconds(100)
    /// How long the pooler stays suspect after the last sign of trouble.
    static let lasts = TimeAmount.seconds(30)

    /// Until when (`NIODeadline` uptime, nanoseconds) writes are held back; 0: not suspect.
    private let suspectUntil = Atomic<UInt64>(0)

    var isSuspect: Bool { self.suspectUntil.load(ordering: .relaxed) > NIODeadline.now().uptimeNanoseconds }

    /// A ping went unanswered for ``noticeAfter``, or the pooler refused a fresh login.
    func notice() {
        let until = (NIODeadline.now() + Self.lasts).uptimeNanoseconds
        // Two notices at once store nearly the same time; either will do.
        self.suspectUntil.store(until, ordering: .relaxed)
    }
}
