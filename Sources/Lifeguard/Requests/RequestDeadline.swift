/// The deadline of the work the current task does for a request, which bounds how long its
/// leases may wait for a connection.
///
/// Set it once where a request enters the server (a middleware), and every lease made for the
/// request, in any lane and in child tasks, waits at most until then. A request that must queue
/// and cannot be served in time (the requests ahead of it, times the lane's recent hold time,
/// over the lane's capacity, exceeds the time left less the wait's spread, as for `waitTimeout`) is rejected at once with
/// ``LifeguardError/Code/deadlineExceeded`` instead of timing out later. A lease that finds an
/// idle connection does not wait and does not look at the deadline.
///
/// ```swift
/// try await RequestDeadline.withDeadline(in: .milliseconds(800)) {
///     try await answer(question)   // its leases wait at most until the deadline
/// }
/// ```
public enum RequestDeadline {
    /// The current task's deadline, if any.
    @TaskLocal public static var current: PoolInstant?

    /// Runs `operation` with a deadline `duration` from now, or the enclosing deadline when it
    /// is earlier.
    ///
    /// - Parameters:
    ///   - duration: The time the operation has.
    ///   - operation: The work under the deadline.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    public static func withDeadline<Value>(
        in duration: Duration,
        isolation: isolated (any Actor)? = #isolation,
        _ operation: () async throws -> Value
    ) async rethrows -> Value {
        try await self.withDeadline(at: PoolInstant.now.advanced(by: duration), operation)
    }

    /// Runs `operation` with the deadline `instant`, or the enclosing deadline when it is
    /// earlier.
    ///
    /// - Parameters:
    ///   - instant: When the operation's time is up, on the monotonic clock (``PoolInstant/now``).
    ///   - operation: The work under the deadline.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    public static func withDeadline<Value>(
        at instant: PoolInstant,
        isolation: isolated (any Actor)? = #isolation,
        _ operation: () async throws -> Value
    ) async rethrows -> Value {
        let deadline = self.current.map { min($0, instant) } ?? instant
        return try await self.$current.withValue(deadline, operation: operation)
    }
}
