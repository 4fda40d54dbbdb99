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
    /// The connection type the pool hands to its leases.
    associatedtype Connection: Sendable

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
}

extension ConnectionFactory {
    /// Every connection is reusable unless the lease was abandoned.
    public func condition(of connection: Connection) -> ConnectionCondition { .reusable }

    /// Activity is not tracked.
    public func activity(of connection: Connection) -> LeaseActivity { .unknown }
}
