/// The time a ``ConnectionPool`` runs on: where it reads the current instant and how it waits
/// for a later one.
///
/// Production pools run on ``SystemPoolClock``. Tests run a pool on a clock that moves only
/// when told to (`ManualClock` in `LifeguardTestUtils`), so that timeouts, housekeeping, the
/// watchdog and metrics export happen at instants the test chooses, with no sleeping or
/// polling.
public protocol PoolClock: Sendable {
    /// The current instant.
    var now: PoolInstant { get }

    /// Suspends until the clock reaches `deadline` (at once when it has), or throws
    /// `CancellationError` when the task is cancelled first.
    ///
    /// - Parameter deadline: The instant to wake at.
    func sleep(until deadline: PoolInstant) async throws
}

extension PoolClock {
    /// Suspends for `duration` from now; see ``sleep(until:)``.
    ///
    /// - Parameter duration: How long to wait.
    @inlinable
    public func sleep(for duration: Duration) async throws {
        try await self.sleep(until: self.now.advanced(by: duration))
    }
}

/// The system's monotonic clock (``PoolInstant/now``), on which pools run by default.
public struct SystemPoolClock: PoolClock {
    /// Creates the clock.
    @inlinable
    public init() {}

    /// The current instant of the monotonic clock.
    @inlinable
    public var now: PoolInstant { PoolInstant.now }

    public func sleep(until deadline: PoolInstant) async throws {
        let delay = PoolInstant.now.nanoseconds(to: deadline)
        if delay > 0 {
            try await Task.sleep(for: .nanoseconds(delay))
        } else {
            try Task.checkCancellation()
        }
    }
}
