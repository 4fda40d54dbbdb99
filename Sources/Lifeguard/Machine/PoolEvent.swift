/// What the machine observed as it decided, for the statistics recorder: the machine says what
/// happened, ``StatisticsRecorder/record(_:)`` decides what to count, and the machine reads
/// nothing of it back. Recorded under the pool's lock, with no allocation on the lease path.
@usableFromInline
enum PoolEvent {
    /// How a request of a lane ended before its lease's body ran, or that it was granted.
    @usableFromInline
    enum RequestEnd {
        case granted, timeout, overloaded, shed, deadlineExceeded, cancelled, unavailable, shutdown
    }

    /// Why a connection is closed.
    @usableFromInline
    enum CloseReason {
        case idle, expired, broken, resetFailed, shutdown
    }

    /// `count` requests of `lane` arrived (a fan-out's leases count one each).
    case arrived(lane: Int, count: Int)
    /// `count` requests of `lane` ended as `end`.
    case requestEnded(lane: Int, RequestEnd, count: Int)
    /// The task of a lease of `lane` was cancelled while its body ran.
    case leaseCancelled(lane: Int)
    /// A lease of `lane` began at `now`, the lane at in-use level `laneLevel` and the pool at
    /// `total` before it; it waited since `waitingSince`, or not at all when `nil`.
    case leaseBegan(lane: Int, laneLevel: Int, total: Int, waitingSince: PoolInstant?, now: PoolInstant)
    /// A lease of `lane` that began at `leasedAt` ended at `now`, the lane at in-use level
    /// `laneLevel` and the pool at `total` before it ended.
    case leaseEnded(lane: Int, laneLevel: Int, total: Int, leasedAt: PoolInstant, now: PoolInstant)
    /// A connection was opened.
    case connectionOpened
    /// A connection attempt failed.
    case connectFailed
    /// A connection is being closed, for `reason`.
    case connectionClosed(CloseReason)
    /// The watchdog reported a running lease of `lane`.
    case finding(WatchdogFinding, lane: Int)
    /// The shell's incident tracker found an incident.
    case incident(Incident)
}
