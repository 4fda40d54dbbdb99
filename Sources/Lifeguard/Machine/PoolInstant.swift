#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in time for the pool: nanoseconds on the system's monotonic clock.
///
/// The pool's decisions are made on every lease and release, so its time is a plain integer:
/// comparing and subtracting two instants costs what comparing two integers costs, where
/// `Duration` arithmetic goes through 128-bit integers. `ManualClock` (in `LifeguardTestUtils`) counts from zero on the
/// same type, so the state machine runs unchanged on virtual time.
public struct PoolInstant: InstantProtocol, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since an arbitrary origin (the system's boot, for ``now``).
    public var nanoseconds: Int64

    /// Creates the instant `nanoseconds` after the clock's origin.
    ///
    /// - Parameter nanoseconds: Nanoseconds since the origin.
    @inlinable
    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    /// The current instant of the monotonic clock.
    ///
    /// Read from the processor's timestamp counter where the kernel keeps time with it (see
    /// `TimestampCounter`), from `CLOCK_MONOTONIC` elsewhere.
    public static var now: PoolInstant {
        if let counter = TimestampCounter.calibrated {
            return PoolInstant(nanoseconds: counter.nanoseconds(at: TimestampCounter.ticks))
        }
        return .monotonic
    }

    /// The current instant of the system's monotonic clock, read through the system.
    static var monotonic: PoolInstant {
        #if canImport(Darwin)
        return PoolInstant(nanoseconds: Int64(clock_gettime_nsec_np(CLOCK_UPTIME_RAW)))
        #else
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return PoolInstant(nanoseconds: Int64(time.tv_sec) &* 1_000_000_000 &+ Int64(time.tv_nsec))
        #endif
    }

    /// The nanoseconds from this instant to `other` (negative when `other` is earlier).
    @inlinable
    public func nanoseconds(to other: PoolInstant) -> Int64 {
        other.nanoseconds &- self.nanoseconds
    }

    /// This instant moved by `duration`; a move past the clock's range stops at its end (a
    /// timeout too long to count is never, not a wrap into the past).
    public func advanced(by duration: Duration) -> PoolInstant {
        let (moved, overflow) = self.nanoseconds.addingReportingOverflow(duration.wholeNanoseconds)
        guard overflow else { return PoolInstant(nanoseconds: moved) }
        return PoolInstant(nanoseconds: duration > .zero ? .max : .min)
    }

    public func duration(to other: PoolInstant) -> Duration {
        .nanoseconds(self.nanoseconds(to: other))
    }

    @inlinable
    public static func < (lhs: PoolInstant, rhs: PoolInstant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    public var description: String { "\(Double(self.nanoseconds) / 1e9) s" }

    /// The nanoseconds as an unsigned bit pattern, for sums that wrap (statistics' level stamps).
    var stamp: UInt64 { UInt64(bitPattern: self.nanoseconds) }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at the bounds of `Int64`.
    package var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = self.components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product &+ attoseconds / 1_000_000_000
    }
}
