import Lifeguard
import Synchronization

/// A connection that lives in memory, with the flags a test needs to play a real one.
public final class InMemoryConnection: Sendable, Hashable, CustomStringConvertible {
    private struct State {
        var uses = 0
        var lastUse: PoolInstant
    }

    /// The flags the pool reads on every lease and release, in one atomic word: reading them
    /// costs a load, as a real connection's state check does, not a lock.
    private struct Flags: OptionSet {
        let rawValue: UInt8
        static let broken = Flags(rawValue: 1 << 0)
        static let inTransaction = Flags(rawValue: 1 << 1)
        static let closed = Flags(rawValue: 1 << 2)
    }

    /// A number unique within its factory, in opening order from 0.
    public let id: Int
    private let clock: any PoolClock
    private let state: Mutex<State>
    private let flags = Atomic<UInt8>(0)

    init(id: Int, clock: any PoolClock) {
        self.id = id
        self.clock = clock
        self.state = Mutex(State(lastUse: clock.now))
    }

    /// Marks the connection dead, as if the server had terminated it.
    public func breakConnection() { self.set(.broken, true) }
    /// Opens or ends a pretend transaction; a connection in one needs a reset after its lease.
    public func setInTransaction(_ value: Bool) { self.set(.inTransaction, value) }
    /// Counts a use, e.g. a query, and notes when it happened (for generation-hold detection).
    public func use() {
        let now = self.clock.now
        self.state.withLock { state in
            state.uses += 1
            state.lastUse = now
        }
    }

    /// Idle since the last ``use()``.
    public var activity: LeaseActivity { self.state.withLock { .idle(since: $0.lastUse) } }

    /// Whether the connection was marked dead.
    public var isBroken: Bool { self.currentFlags.contains(.broken) }
    /// Whether the connection is inside a pretend transaction.
    public var isInTransaction: Bool { self.currentFlags.contains(.inTransaction) }
    /// Whether the factory closed the connection.
    public var isClosed: Bool { self.currentFlags.contains(.closed) }
    /// How many times ``use()`` was called.
    public var uses: Int { self.state.withLock { $0.uses } }

    fileprivate func markClosed() { self.set(.closed, true) }

    /// The connection's condition, from one atomic load.
    fileprivate var condition: ConnectionCondition {
        let flags = self.currentFlags
        if !flags.isDisjoint(with: [.broken, .closed]) { return .broken }
        return flags.contains(.inTransaction) ? .needsReset : .reusable
    }

    private var currentFlags: Flags { Flags(rawValue: self.flags.load(ordering: .acquiring)) }

    private func set(_ flag: Flags, _ value: Bool) {
        if value {
            self.flags.bitwiseOr(flag.rawValue, ordering: .acquiringAndReleasing)
        } else {
            self.flags.bitwiseAnd(~flag.rawValue, ordering: .acquiringAndReleasing)
        }
    }

    public static func == (lhs: InMemoryConnection, rhs: InMemoryConnection) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
    public var description: String { "connection#\(self.id)" }
}

/// A ``Lifeguard/ConnectionFactory`` of ``InMemoryConnection``s with injectable failures and latencies,
/// shared by tests, benchmarks and the simulator. Its latencies pass on its clock: give it the
/// pool's ``ManualClock`` and a reset takes the time the test advances.
public final class InMemoryConnectionFactory: ConnectionFactory, Sendable {
    /// The error a failing connect, reset or validate throws.
    public struct InjectedFailure: Error, Sendable, Hashable, CustomStringConvertible {
        /// What failed.
        public var message: String
        /// Creates a failure with a message.
        public init(_ message: String) { self.message = message }
        public var description: String { self.message }
    }

    /// How the factory behaves; change it at any time with ``update(_:)``.
    public struct Behaviour: Sendable {
        /// How long `connect` takes.
        public var connectLatency: Duration = .zero
        /// When set, `connect` throws it.
        public var connectFailure: InjectedFailure?
        /// How long `reset` takes.
        public var resetLatency: Duration = .zero
        /// When true, `reset` throws.
        public var resetFails = false
        /// When true, `validate` throws.
        public var validateFails = false
        /// Creates the default behaviour: everything succeeds at once.
        public init() {}
    }

    private struct State {
        var behaviour = Behaviour()
        var opened: [InMemoryConnection] = []
        var resets = 0
        var validations = 0
    }

    private let state = Mutex(State())
    private let clock: any PoolClock

    /// Creates a factory whose operations all succeed at once.
    ///
    /// - Parameter clock: Where latencies pass and connections note their last use.
    public init(clock: any PoolClock = SystemPoolClock()) {
        self.clock = clock
    }

    /// Changes the factory's behaviour.
    public func update(_ change: (inout Behaviour) -> Void) {
        self.state.withLock { change(&$0.behaviour) }
    }

    /// Every connection opened so far, in order.
    public var opened: [InMemoryConnection] { self.state.withLock { $0.opened } }
    /// Connections opened and not closed.
    public var openCount: Int { self.state.withLock { $0.opened.filter { !$0.isClosed }.count } }
    /// How many resets ran.
    public var resetCount: Int { self.state.withLock { $0.resets } }
    /// How many validations ran.
    public var validationCount: Int { self.state.withLock { $0.validations } }

    public func connect() async throws -> InMemoryConnection {
        let behaviour = self.state.withLock { $0.behaviour }
        if behaviour.connectLatency > .zero {
            try await self.clock.sleep(for: behaviour.connectLatency)
        }
        if let failure = behaviour.connectFailure {
            throw failure
        }
        return self.state.withLock { state in
            let connection = InMemoryConnection(id: state.opened.count, clock: self.clock)
            state.opened.append(connection)
            return connection
        }
    }

    public func validate(_ connection: InMemoryConnection) async throws {
        let fails = self.state.withLock { state in
            state.validations += 1
            return state.behaviour.validateFails
        }
        if fails || connection.isBroken || connection.isClosed {
            throw InjectedFailure("validation failed for \(connection)")
        }
    }

    public func reset(_ connection: InMemoryConnection) async throws {
        let behaviour = self.state.withLock { state in
            state.resets += 1
            return state.behaviour
        }
        if behaviour.resetLatency > .zero {
            try await self.clock.sleep(for: behaviour.resetLatency)
        }
        if behaviour.resetFails || connection.isBroken || connection.isClosed {
            throw InjectedFailure("reset failed for \(connection)")
        }
        connection.setInTransaction(false)
    }

    public func close(_ connection: InMemoryConnection) async {
        connection.markClosed()
    }

    public func condition(of connection: InMemoryConnection) -> ConnectionCondition {
        connection.condition
    }

    public func activity(of connection: InMemoryConnection) -> LeaseActivity {
        connection.activity
    }
}
