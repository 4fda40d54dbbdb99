import NIOCore
import Synchronization

/// What the server has told a connection, as ``ProtocolTap`` read it from the wire: its cancel
/// key, its transaction status, and whether every Sync sent has been answered.
///
/// The extended protocol ends each statement with Sync; the server answers Sync with
/// ReadyForQuery once the statement's implicit transaction, if any, has committed (and, with
/// `synchronous_commit`, is durable). PostgresNIO reports a statement that returns no rows at
/// its CommandComplete, before that commit, so a lease awaits ``settle()`` before it reports
/// success: ReadyForQuery usually arrives in the same read as CommandComplete, and the wait
/// is then one lock, no suspension.
final class WireState: Sendable {
    /// The key a CancelRequest for this session must carry.
    struct KeyData: Sendable, Hashable {
        let processID: Int32
        let secretKey: Int32
    }

    /// How a statement's cycle (its frames up to Sync) ended on the server.
    enum Settlement: Sendable, Equatable {
        /// The server answered every Sync sent; the session is in this transaction status.
        case ready(TransactionStatus)
        /// The server executed the statement, then refused to commit it (a deferred
        /// constraint): nothing of it was committed.
        case refused(ServerErrorFields)
        /// The connection closed before the server answered; `error` is what it said last.
        case lost(ServerErrorFields?)
    }

    /// The transaction status of ReadyForQuery.
    enum TransactionStatus: UInt8, Sendable {
        case idle = 73          // 'I'
        case inTransaction = 84 // 'T'
        case failed = 69        // 'E'
    }

    private struct State {
        var keyData: KeyData?
        /// Sync and Query frames written: each gets one ReadyForQuery.
        var syncsSent = 0
        /// ReadyForQuery frames received for them (the one that ends the startup not counted).
        var readies = 0
        var startupDone = false
        var transactionStatus = TransactionStatus.idle
        /// Since the last ReadyForQuery: a CommandComplete or EmptyQueryResponse arrived (the
        /// server finished executing the statement), the first ErrorResponse, if any, and
        /// whether it was an ERROR after the CommandComplete (a refused commit).
        var completed = false
        var error: ServerErrorFields?
        var errorAfterCompletion = false
        /// The last cycle whose error came after its CommandComplete: its commit failed.
        var refusedCycle: (number: Int, error: ServerErrorFields)?
        var closed = false
        /// The server's last report of `in_hot_standby` (PostgreSQL 14 and later report it at
        /// startup, and again after a promotion); `nil` before any.
        var inHotStandby: Bool?
        /// Whether the server refused a statement as read-only (SQLSTATE 25006): the server is
        /// not, or no longer, one that takes writes.
        var refusedAsReadOnly = false
        /// Behind a pooler, no server answered a statement within this time: the tap closed
        /// the connection.
        var unansweredWithin: Duration?
        /// Whether that statement had been sent to the pooler (else it was held back, unsent).
        var unansweredWasSent = false
        /// The lease's word about the statement it sends next: it may write.
        var nextMayWrite = false
        /// The tap met bytes that are not the protocol; nothing it says can be trusted.
        var framingLost = false
        var settleWaiters: [(target: Int, continuation: CheckedContinuation<Void, Never>)] = []
        var closeWaiters: [CheckedContinuation<Void, Never>] = []

        var isSettled: Bool { self.readies >= self.syncsSent }
    }

    private let state = Mutex(State())

    /// The cancel key, once the server sent BackendKeyData.
    var keyData: KeyData? { self.state.withLock { $0.keyData } }

    /// Whether the server has answered every Sync sent, and the session is idle, outside any
    /// transaction: the connection is clean for the next lease.
    var isIdleOutsideTransaction: Bool {
        self.state.withLock { state in
            !state.closed && !state.framingLost && state.isSettled && state.transactionStatus == .idle
        }
    }

    /// Whether a transaction is open (or failed and not yet rolled back), as of the last
    /// ReadyForQuery.
    var isInTransaction: Bool { self.state.withLock { $0.transactionStatus != .idle } }
    /// Whether the open transaction failed: it accepts nothing but its end, which rolls it back.
    var isInFailedTransaction: Bool { self.state.withLock { $0.transactionStatus == .failed } }

    /// Whether the server has answered every Sync sent.
    var isSettled: Bool { self.state.withLock { $0.isSettled } }

    /// Whether the server has finished executing the statement in flight, if any: its
    /// CommandComplete, error or ReadyForQuery arrived. A result stream left unread while
    /// this is false is still being sent.
    var hasFinishedExecuting: Bool { self.state.withLock { $0.isSettled || $0.completed || $0.error != nil } }

    var isClosed: Bool { self.state.withLock { $0.closed } }

    /// The server's last report of `in_hot_standby`, and whether it refused a statement as
    /// read-only (SQLSTATE 25006).
    var roleSignals: (inHotStandby: Bool?, refusedAsReadOnly: Bool) {
        self.state.withLock { ($0.inHotStandby, $0.refusedAsReadOnly) }
    }

    /// Whether the tap closed the connection because no server answered a statement within
    /// the connect timeout (behind a pooler with no server for it).
    var wasUnanswered: Bool { self.unansweredWithin != nil }

    /// How long the statement the tap gave up on waited for an answer.
    var unansweredWithin: Duration? { self.state.withLock { $0.unansweredWithin } }

    /// Waits until the server has answered every Sync sent so far, or the connection closed.
    ///
    /// - Returns: How the last cycle ended.
    func settle() async -> Settlement {
        let (target, settled) = self.state.withLock { state in (state.syncsSent, self.settlement(of: state.syncsSent, in: state)) }
        if let settled { return settled }
        await withCheckedContinuation { continuation in
            let ready = self.state.withLock { state in
                if state.readies >= target || state.closed { return true }
                state.settleWaiters.append((target, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
        return self.state.withLock { state in self.settlement(of: target, in: state) } ?? .lost(nil)
    }

    /// How cycle `target` ended, or `nil` while it has not.
    private func settlement(of target: Int, in state: State) -> Settlement? {
        if let refused = state.refusedCycle, refused.number == target { return .refused(refused.error) }
        if state.readies >= target && !state.framingLost { return .ready(state.transactionStatus) }
        if state.closed || state.framingLost {
            // A cycle cut short: an error after its CommandComplete was a refused commit.
            if state.errorAfterCompletion, let error = state.error { return .refused(error) }
            return .lost(state.error)
        }
        return nil
    }

    /// Waits until the connection has closed.
    func awaitClosed() async {
        await withCheckedContinuation { continuation in
            let closed = self.state.withLock { state in
                if state.closed { return true }
                state.closeWaiters.append(continuation)
                return false
            }
            if closed { continuation.resume() }
        }
    }

    // MARK: Fed by the tap, on the event loop

    func sent(type: UInt8) {
        if type == UInt8(ascii: "S") || type == UInt8(ascii: "Q") {
            self.state.withLock { $0.syncsSent += 1 }
        }
    }

    func received(type: UInt8, body: inout ByteBuffer) {
        switch type {
        case UInt8(ascii: "C"), UInt8(ascii: "I"):
            self.state.withLock { $0.completed = true }
        case UInt8(ascii: "E"):
            let fields = Self.errorFields(&body)
            self.state.withLock { state in
                if fields.sqlState == "25006" { state.refusedAsReadOnly = true }
                if state.error == nil {
                    state.error = fields
                    // An ERROR after CommandComplete is the commit's refusal. A FATAL there is
                    // the session's end (a terminated backend, a shutdown): it may have come
                    // after the commit (a COMMIT statement completes once committed), so the
                    // outcome is not known.
                    state.errorAfterCompletion = state.completed && fields.severity != "FATAL" && fields.severity != "PANIC"
                }
            }
        case UInt8(ascii: "Z"):
            let status = body.readInteger(as: UInt8.self).flatMap(TransactionStatus.init(rawValue:)) ?? .failed
            let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.transactionStatus = status
                if !state.startupDone {
                    state.startupDone = true
                } else {
                    state.readies += 1
                    if state.errorAfterCompletion, let error = state.error {
                        state.refusedCycle = (state.readies, error)
                    }
                }
                state.completed = false
                state.error = nil
                state.errorAfterCompletion = false
                if state.settleWaiters.isEmpty { return [] }
                let (due, waiting) = state.settleWaiters.partitioned { $0.target <= state.readies }
                state.settleWaiters = waiting
                return due.map(\.continuation)
            }
            for waiter in waiters { waiter.resume() }
        case UInt8(ascii: "S"):
            if let name = body.readNullTerminatedString(), name == "in_hot_standby", let value = body.readNullTerminatedString() {
                self.state.withLock { $0.inHotStandby = value == "on" }
            }
        case UInt8(ascii: "K"):
            if let (processID, secretKey) = body.readMultipleIntegers(as: (Int32, Int32).self) {
                self.state.withLock { $0.keyData = KeyData(processID: processID, secretKey: secretKey) }
            }
        default:
            break
        }
    }

    /// Behind a pooler, the lease says whether the statement it sends next may write: while
    /// the pooler is suspect, the tap then holds it back until a server has taken the session.
    func setNextMayWrite(_ mayWrite: Bool) {
        self.state.withLock { $0.nextMayWrite = mayWrite }
    }

    /// Whether the statement being sent may write; the word is used once.
    func takeNextMayWrite() -> Bool {
        self.state.withLock { state in
            defer { state.nextMayWrite = false }
            return state.nextMayWrite
        }
    }

    /// Whether the statement the tap gave up on had been sent to the pooler, which may still
    /// find it a server later (else it was held back and never left this process).
    var unansweredWasSent: Bool { self.state.withLock { $0.unansweredWasSent } }

    func noServerAnswered(within timeout: TimeAmount, statementSent: Bool) {
        self.state.withLock { state in
            state.unansweredWithin = .nanoseconds(timeout.nanoseconds)
            state.unansweredWasSent = statementSent
        }
    }

    func lostFraming() {
        let waiters = self.state.withLock { state in
            state.framingLost = true
            defer { state.settleWaiters = [] }
            return state.settleWaiters.map(\.continuation)
        }
        for waiter in waiters { waiter.resume() }
    }

    func channelClosed() {
        let waiters = self.state.withLock { state in
            state.closed = true
            defer {
                state.settleWaiters = []
                state.closeWaiters = []
            }
            return state.settleWaiters.map(\.continuation) + state.closeWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Reads the fields of an ErrorResponse body: a type byte and a string each, up to a 0.
    static func errorFields(_ body: inout ByteBuffer) -> ServerErrorFields {
        var fields = ServerErrorFields()
        while let field = body.readInteger(as: UInt8.self), field != 0 {
            guard let value = body.readNullTerminatedString() else { break }
            switch field {
            case UInt8(ascii: "V"): fields.severity = value
            case UInt8(ascii: "S"): fields.severity = fields.severity ?? value
            case UInt8(ascii: "C"): fields.sqlState = value
            case UInt8(ascii: "M"): fields.message = value
            case UInt8(ascii: "D"): fields.detail = value
            default: break
            }
        }
        return fields
    }
}

extension Array {
    /// The elements that satisfy `isIncluded`, and the rest, each in their order.
    fileprivate func partitioned(_ isIncluded: (Element) -> Bool) -> (included: [Element], rest: [Element]) {
        var included: [Element] = []
        var rest: [Element] = []
        for element in self {
            if isIncluded(element) { included.append(element) } else { rest.append(element) }
        }
        return (included, rest)
    }
}
