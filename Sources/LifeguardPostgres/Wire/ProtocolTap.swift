import NIOCore
import NIOSSL

/// A channel handler between the socket (or TLS) and PostgresNIO that reads the protocol's
/// message frames as they pass, in both directions, and changes nothing.
///
/// PostgresNIO 1.33.2 keeps to itself what a pool must know: the backend key data that a
/// CancelRequest needs, the transaction status of each ReadyForQuery, and whether an error came
/// after a statement's CommandComplete (an implicit transaction commits at Sync, after
/// CommandComplete, so a deferred constraint fails there; PostgresNIO has already reported the
/// statement's success by then). The tap records all of it in ``WireState``.
///
/// It reads only each message's type byte and length, and the few bodies it needs
/// (BackendKeyData, ReadyForQuery, ErrorResponse): a DataRow is skipped by its length.
///
/// With TLS, PostgresNIO adds the TLS handler in front of its own once the server agrees to
/// TLS. The tap then moves behind the TLS handler, so that it keeps reading plain messages.
final class ProtocolTap: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The frame readers of both directions, and the TLS negotiation between them.
    struct Framing {
        var inbound = FrameReader(untypedFrames: false)
        /// Until the StartupMessage, frontend frames have no type byte.
        var outbound = FrameReader(untypedFrames: true)
        /// The next inbound byte answers an SSLRequest ('S' or 'N'), with no frame around it.
        var awaitingTLSAnswer = false
    }

    let state: WireState
    private var framing: Framing
    private var context: ChannelHandlerContext?
    /// After Terminate: what the server still sends is read and dropped here, unparsed by
    /// PostgresNIO (decoding a large abandoned result would take seconds), until it closes.
    private var discardsInbound = false
    /// Between the server's yes to TLS and the move behind the TLS handler: what passes now is
    /// TLS (the handshake the TLS handler starts as it is added), not the protocol.
    private var isMovingBehindTLS = false

    /// Behind a pooler: how long a statement outside a transaction may go without a first
    /// answer before the pooler is asked whether it has a server at all, and how to ask it
    /// (see ``watchAnswers(within:askingWhetherUnavailable:)``).
    private var answerTimeout: TimeAmount?
    private var isUnavailable: (@Sendable () async -> Bool)?
    private var suspicion: PoolerSuspicion?
    /// While a ping is unanswered: what the server sent since, held back from PostgresNIO
    /// until the ping's ParseComplete is found and taken out.
    private var heldInbound: ByteBuffer?
    /// While a ping is unanswered before a statement that may write: the statement, not sent.
    private var heldOutbound: [(data: NIOAny, promise: EventLoopPromise<Void>?)]?
    private var answerTimer: Scheduled<Void>?
    /// Numbers the pings, so that a late answer about one is not taken for the next.
    private var pingNumber = 0

    init(state: WireState, framing: Framing = Framing()) {
        self.state = state
        self.framing = framing
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var data = data
        if var held = self.heldInbound {
            var bytes = self.unwrapInboundIn(data)
            held.writeBuffer(&bytes)
            guard let released = self.takingOutPingAnswer(from: held, allocator: context.channel.allocator) else {
                self.heldInbound = held
                return
            }
            self.pingAnswered(context: context)
            if released.readableBytes == 0 { return }
            data = self.wrapInboundOut(released)
        }
        var bytes = self.unwrapInboundIn(data)
        var movesBehindTLS = false
        if self.framing.awaitingTLSAnswer, let answer = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) {
            self.framing.awaitingTLSAnswer = false
            movesBehindTLS = answer == UInt8(ascii: "S")
            bytes.moveReaderIndex(forwardBy: 1)
        }
        if !movesBehindTLS {
            let state = self.state
            let readable = self.framing.inbound.read(&bytes) { type, body in state.received(type: type, body: &body) }
            if !readable { state.lostFraming() }
        }
        if self.discardsInbound { return }
        if movesBehindTLS { self.isMovingBehindTLS = true }
        context.fireChannelRead(data)
        if movesBehindTLS { self.moveBehindTLS(context: context) }
    }

    /// PostgresNIO has put the TLS handler in front of itself: go behind it, with the framing
    /// as it is (the server sends nothing until TLS is up).
    private func moveBehindTLS(context: ChannelHandlerContext) {
        do {
            let tls = try context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)
            let successor = ProtocolTap(state: self.state, framing: self.framing)
            try context.pipeline.syncOperations.addHandler(successor, position: .after(tls))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            self.state.lostFraming()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.discardsInbound {
            // PostgresNIO may hold back reads (its back-pressure); the session's end is read here.
            context.read()
            return
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failHeldOutbound()
        self.state.channelClosed()
        context.fireChannelInactive()
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if self.isMovingBehindTLS {
            context.write(data, promise: promise)
            return
        }
        var bytes = self.unwrapOutboundIn(data)
        if self.answerTimeout != nil { self.pingIfStatementStarts(bytes, context: context) }
        if self.heldOutbound != nil {
            // Read now, so that the wire state expects the statement's ReadyForQuery.
            let state = self.state
            _ = self.framing.outbound.read(&bytes) { type, _ in state.sent(type: type) }
            self.heldOutbound!.append((data, promise))
            return
        }
        let state = self.state
        var sentSSLRequest = false
        // In place: a copy of the framing would make its buffers copy themselves on write.
        let readable = self.framing.outbound.read(&bytes) { type, _ in
            if type == FrameReader.sslRequest { sentSSLRequest = true }
            state.sent(type: type)
        }
        if sentSSLRequest { self.framing.awaitingTLSAnswer = true }
        if !readable { state.lostFraming() }
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        // A held statement is flushed once its ping is answered.
        if self.heldOutbound == nil { context.flush() }
    }

    // MARK: Behind a pooler

    /// Makes every statement outside a transaction prove that a server took it.
    ///
    /// Behind a pooler in transaction mode (PgBouncer), a statement outside a transaction
    /// waits inside the pooler for a server; during an outage the pooler holds it up to its own
    /// timeout (PgBouncer's `query_wait_timeout`, 120 s), and nothing on the wire tells that
    /// wait from a long statement. So the tap sends an empty Parse and a Flush before the
    /// statement's first message: any server answers them at once with a ParseComplete (parsing
    /// nothing takes no lock), which the tap takes out of the stream before PostgresNIO reads
    /// it. The statement goes right behind them, except that while the pooler is suspect
    /// (``PoolerSuspicion``) a statement that may write (``WireState/takeNextMayWrite()``)
    /// is held back until the answer, so that a pooler that never found it a server cannot
    /// run it later.
    ///
    /// Without an answer within `timeout`, the pooler is either busy (every server taken, the
    /// statement queued: it must wait) or has no server (an outage: it must fail fast).
    /// `isUnavailable` tells them apart (a fresh login's first statement refused, as PgBouncer
    /// refuses it while its logins to the server fail); on `true` the connection is closed,
    /// the held statement unsent, and ``WireState/wasUnanswered`` says why; on `false` the
    /// statement waits on and is asked about again after another `timeout`.
    func watchAnswers(
        within timeout: TimeAmount, suspicion: PoolerSuspicion, askingWhetherUnavailable isUnavailable: @escaping @Sendable () async -> Bool
    ) {
        self.answerTimeout = timeout
        self.suspicion = suspicion
        self.isUnavailable = isUnavailable
    }

    /// The ping: an empty Parse into the unnamed statement (which the statement's own Parse
    /// replaces, and which no prepared statement uses), and a Flush.
    private static func ping(allocator: ByteBufferAllocator) -> ByteBuffer {
        var ping = allocator.buffer(capacity: 14)
        ping.writeInteger(UInt8(ascii: "P"))
        ping.writeInteger(Int32(8))
        ping.writeInteger(UInt16(0))  // the name and the query: two empty strings
        ping.writeInteger(Int16(0))   // no parameter types
        ping.writeInteger(UInt8(ascii: "H"))
        ping.writeInteger(Int32(4))
        return ping
    }

    /// Sends the ping before `bytes` when they start a statement (a Parse or a Bind) on a
    /// session that is idle outside a transaction, with both directions between frames.
    private func pingIfStatementStarts(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        guard let timeout = self.answerTimeout, self.heldInbound == nil, !self.discardsInbound,
              let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self),
              first == UInt8(ascii: "P") || first == UInt8(ascii: "B"),
              self.framing.outbound.isBetweenFrames, self.framing.inbound.isBetweenFrames,
              self.state.isIdleOutsideTransaction
        else { return }
        context.writeAndFlush(self.wrapOutboundOut(Self.ping(allocator: context.channel.allocator)), promise: nil)
        self.heldInbound = context.channel.allocator.buffer(capacity: 0)
        if self.state.takeNextMayWrite(), self.suspicion?.isSuspect == true { self.heldOutbound = [] }
        self.pingNumber += 1
        let ping = self.pingNumber
        let notice = min(PoolerSuspicion.noticeAfter, timeout)
        self.answerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: notice) {
            guard self.heldInbound != nil, self.pingNumber == ping else { return }
            self.suspicion?.notice()
            self.armAnswerTimer(timeout - notice, timeout: timeout, ping: ping, context: context)
        }
    }

    /// Asks the pooler whether it has servers once ping `ping` has waited `timeout` in all.
    private func armAnswerTimer(_ delay: TimeAmount, timeout: TimeAmount, ping: Int, context: ChannelHandlerContext) {
        self.answerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            guard self.heldInbound != nil, self.pingNumber == ping, let isUnavailable = self.isUnavailable else { return }
            let tap = NIOLoopBound(self, eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            Task {
                let unavailable = await isUnavailable()
                eventLoop.execute { tap.value.noAnswer(toPing: ping, within: timeout, unavailable: unavailable) }
            }
        }
    }

    /// What the pooler said of itself after ping `ping` went unanswered for `timeout`.
    private func noAnswer(toPing ping: Int, within timeout: TimeAmount, unavailable: Bool) {
        guard self.heldInbound != nil, self.pingNumber == ping, let context = self.context else { return }
        guard unavailable else {
            self.armAnswerTimer(timeout, timeout: timeout, ping: ping, context: context)
            return
        }
        self.heldInbound = nil
        self.suspicion?.notice()
        self.state.noServerAnswered(within: timeout, statementSent: self.heldOutbound == nil)
        self.failHeldOutbound()
        context.close(promise: nil)
    }

    /// The ping's ParseComplete came: a server took the session; a held statement goes now.
    private func pingAnswered(context: ChannelHandlerContext) {
        self.heldInbound = nil
        self.answerTimer?.cancel()
        self.answerTimer = nil
        guard let held = self.heldOutbound else { return }
        self.heldOutbound = nil
        for write in held { context.write(write.data, promise: write.promise) }
        context.flush()
    }

    private func failHeldOutbound() {
        guard let held = self.heldOutbound else { return }
        self.heldOutbound = nil
        for write in held { write.promise?.fail(ChannelError.ioOnClosedChannel) }
    }

    /// `held` without the ping's ParseComplete, once it is there; `nil` while it is not. Frames
    /// before it (a notice, a parameter's new value) pass. An error instead (the pooler's
    /// own, or a FATAL) passes whole: PostgresNIO takes it for its statement's.
    private func takingOutPingAnswer(from held: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer? {
        var offset = held.readerIndex
        while let type = held.getInteger(at: offset, as: UInt8.self), let length = held.getInteger(at: offset + 1, as: Int32.self) {
            if type == UInt8(ascii: "E") || length < 4 { return held }
            if type == UInt8(ascii: "1") {
                var released = allocator.buffer(capacity: held.readableBytes - 5)
                released.writeImmutableBuffer(held.getSlice(at: held.readerIndex, length: offset - held.readerIndex)!)
                released.writeImmutableBuffer(held.getSlice(at: offset + 5, length: held.writerIndex - offset - 5)!)
                return released
            }
            offset += 1 + Int(length)
        }
        return nil
    }

    // MARK: Ending the session

    /// Writes a Terminate message, so that the server ends the backend once it has finished
    /// what it is doing; the server then closes the socket. What the server sends until then
    /// is dropped.
    func sendTerminate() {
        guard let context = self.context, context.channel.isActive else { return }
        var message = context.channel.allocator.buffer(capacity: 5)
        message.writeInteger(UInt8(ascii: "X"))
        message.writeInteger(Int32(4))
        context.writeAndFlush(self.wrapOutboundOut(message), promise: nil)
        self.discardsInbound = true
        context.read()
    }
}
