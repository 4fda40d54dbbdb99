import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sends the protocol's CancelRequest: a new connection to the server that carries only the
/// session's key (process id and secret, from BackendKeyData) and is closed by the server.
///
/// The key identifies the session, not a backend process: PostgreSQL cancels that session's
/// running statement, and PgBouncer forwards the request to the server connection that runs
/// the statement of *this* client, if any. So a cancel never reaches another client's
/// statement, and it takes no connection of the budget (unlike `pg_cancel_backend` from a
/// control connection, which behind PgBouncer can hit whichever client shares that backend).
struct CancelRequestSender: Sendable {
    let configuration: PostgresPool.Configuration
    let eventLoopGroup: any EventLoopGroup
    /// The host whose sessions it cancels: the first configured, unless ``to(_:)`` says.
    var host: PostgresPool.Configuration.Host?

    init(configuration: PostgresPool.Configuration, eventLoopGroup: any EventLoopGroup) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.host = configuration.hosts.first
    }

    /// The sender of cancels to `host`'s sessions (a CancelRequest must reach the server that
    /// runs the session); `nil` keeps the Unix socket.
    func to(_ host: PostgresPool.Configuration.Host?) -> CancelRequestSender {
        var sender = self
        if let host { sender.host = host }
        return sender
    }

    /// Sends one CancelRequest and waits until the server has read it (it closes the
    /// connection then), at most the connect timeout.
    ///
    /// - Throws: When the server could not be reached.
    func send(_ key: WireState.KeyData) async throws {
        let timeout = self.configuration.connectTimeout.timeAmount
        let bootstrap = ClientBootstrap(group: self.eventLoopGroup.any()).connectTimeout(timeout)
        let channel: any Channel
        if let directory = self.configuration.unixSocketDirectory {
            channel = try await bootstrap.connect(unixDomainSocketPath: "\(directory)/.s.PGSQL.\(self.configuration.port)").get()
        } else {
            channel = try await bootstrap.connect(host: self.host?.name ?? "localhost", port: self.host?.port ?? self.configuration.port).get()
        }
        var request = channel.allocator.buffer(capacity: 16)
        request.writeMultipleIntegers(Int32(16), Int32(80_877_102), key.processID, key.secretKey)
        let deadline = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        try await channel.writeAndFlush(request).get()
        try? await channel.closeFuture.get()
    }
}

extension Duration {
    /// The duration as NIO's `TimeAmount`, saturating instead of trapping where the duration
    /// does not fit in 64-bit nanoseconds (about 292 years).
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = self.components
        let (nanoseconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .nanoseconds(seconds < 0 ? .min : .max) }
        let (total, overflowAgain) = nanoseconds.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflowAgain { return .nanoseconds(seconds < 0 ? .min : .max) }
        return .nanoseconds(total)
    }
}

extension String {
    /// Whether the string is an IPv4 or IPv6 address (not valid as a TLS server name).
    var isIPAddress: Bool {
        var ipv4 = in_addr()
        var ipv6 = in6_addr()
        return self.withCString { inet_pton(AF_INET, $0, &ipv4) == 1 || inet_pton(AF_INET6, $0, &ipv6) == 1 }
    }
}
