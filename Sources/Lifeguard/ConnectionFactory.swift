/// What a connection is worth when its lease ends, as far as its factory can tell.
public enum ConnectionCondition: Sendable, Hashable {
    /// Fit for the next lease as it is.
    case reusable
    /// Usable after ``ConnectionFactory/reset(_:)``: e.g. it may be inside a transaction.
    case needsReset
    /// Dead or unusable: close it and open a replacement.
    case broken
}

/// What a leased connection is doing, as far as its factory can tell.
public enum LeaseActivity: Sendable, Hashable {
    /// The factory does not track activity: generation holds cannot be detected.
    case unknown
    /// A statement is running.
    case busy
    /// No statement has run since this instant.
    case idle(since: PoolInstant)
}

/// Opens, checks, resets and closes the connections of a ``ConnectionPool``.
///
/// A database adapter implements this protocol; the pool knows nothing else of the database.
/// Every method may be called concurrently for different connections, but never concurrently
/// for the same connection.
public protocol ConnectionFactory: Sendable {
    /// The connection type the factory opens and the pool keeps.
    associatedtype Connection: Sendable

    /// What a lease's body gets: the connection itself (the default), or the adapter's view of
    /// it for the lease's duration (``withLease(of:lane:isolation:_:)`` makes it).
    associatedtype Lease = Connection

    /// Opens a new connection. It should give up by itself after its own connect timeout.
    ///
    /// - Throws: The reason the connection could not be opened. The pool keeps it as the
    ///   ``LifeguardError/underlying`` error of ``LifeguardError/Code/databaseUnavailable``,
    ///   so it must not contain a password.
    func connect() async throws -> Connection

    /// Checks that a connection still works, for keepalive and for validation before hand-out
    /// (e.g. `SELECT 1`).
    ///
    /// - Throws: When the connection is not usable; the pool then closes and replaces it.
    func validate(_ connection: Connection) async throws

    /// Brings a connection back to a clean state after an abandoned lease (a body that threw or
    /// was cancelled), e.g. `ROLLBACK`.
    ///
    /// - Throws: When the connection cannot be reset; the pool then closes and replaces it.
    func reset(_ connection: Connection) async throws

    /// Closes a connection. Errors are the factory's to log; the pool forgets the connection.
    func close(_ connection: Connection) async

    /// Tells, without suspending, whether a connection can be reused as it is.
    ///
    /// Called when a lease ends and before a connection is handed out, so it must be cheap.
    /// The default says ``ConnectionCondition/reusable``.
    func condition(of connection: Connection) -> ConnectionCondition

    /// Tells, without suspending, whether a statement is running on a leased connection, and
    /// if not, since when none ran. The pool's watchdog uses it to find leases held idle across
    /// a model call ("generation holds"). The default says ``LeaseActivity/unknown``.
    func activity(of connection: Connection) -> LeaseActivity

    /// Runs a lease's body with what it gets for `connection`, and ends that when the body
    /// ends (by returning, throwing or being cancelled). The pool calls it once per lease,
    /// around every body of ``ConnectionPool/withConnection(lane:fileID:line:function:isolation:_:)``
    /// and its kin; the connection is already leased, and is released after it returns.
    /// When ``Lease`` is ``Connection``, the default passes the connection itself.
    ///
    /// - Parameters:
    ///   - connection: The leased connection.
    ///   - lane: The lease's lane.
    ///   - isolation: The caller's actor, inherited: run `body` on it.
    ///   - body: The lease's body.
    /// - Returns: What `body` returns.
    func withLease<Value>(
        of connection: Connection, lane: Lane, isolation: isolated (any Actor)?, _ body: (Lease) async throws -> Value
    ) async throws -> Value

    /// Work the factory needs done while its pool runs (an adapter's server-side cancellation,
    /// say): ``ConnectionPool/run()`` runs it alongside the pool's own, and calls
    /// ``stopBackgroundWork()`` once the pool has closed its last connection; it should return
    /// then. The default has nothing to do.
    func runBackgroundWork() async

    /// The pool has stopped: ``runBackgroundWork()`` should finish what it started and return.
    func stopBackgroundWork()
}

/// A connection factory whose connections run transactions: the pool then offers
/// ``ConnectionPool/withTransaction(lane:fileID:line:function:isolation:_:)``, and the third
/// window of its `threeWindows` runs in one.
public protocol TransactionalConnectionFactory: ConnectionFactory {
    /// Runs `body` in a transaction on `lease`: committed when `body` returns, rolled back when
    /// it throws or its task is cancelled (then the error, or `CancellationError`, is thrown).
    ///
    /// - Parameters:
    ///   - lease: What the lease's body got.
    ///   - isolation: The caller's actor, inherited: run `body` on it.
    ///   - body: The transaction's statements.
    /// - Returns: What `body` returns, once the commit succeeded.
    func inTransaction<Value>(
        on lease: Lease, isolation: isolated (any Actor)?, _ body: (Lease) async throws -> Value
    ) async throws -> Value
}

extension ConnectionFactory {
    /// Every connection is reusable unless the lease was abandoned.
    public func condition(of connection: Connection) -> ConnectionCondition { .reusable }

    /// Activity is not tracked.
    public func activity(of connection: Connection) -> LeaseActivity { .unknown }

    /// No background work.
    public func runBackgroundWork() async {}

    /// No background work to stop.
    public func stopBackgroundWork() {}
}

extension ConnectionFactory where Lease == Connection {
    /// The body gets the connection itself.
    @inlinable @inline(__always)
    public func withLease<Value>(
        of connection: Connection, lane: Lane, isolation: isolated (any Actor)? = #isolation,
        _ body: (Connection) async throws -> Value
    ) async throws -> Value {
        try await body(connection)
    }
}
