import Tracing

/// The span of one lease, from the request for a connection to its release: the lane, how long
/// it waited, and how it ended (granted, or the ``LifeguardError/Code`` that refused it). The
/// spans of the statements run on the lease are its children.
///
/// Attributes: `lifeguard.lane`, `lifeguard.lease.outcome` (`granted`, `cancelled` or a
/// ``LifeguardError/Code`` such as `shed`), `lifeguard.lease.wait_time` (seconds, once
/// granted), `db.client.connection.pool.name`, OpenTelemetry's `code.function.name`,
/// `code.file.path` and `code.line.number` for the caller, and `error.type` when it failed.
@usableFromInline
struct LeaseSpan: Sendable {
    @usableFromInline let span: any Span
    @usableFromInline let started: PoolInstant

    /// Starts the span of a lease of `lane` requested at `callSite`, as a child of the task's
    /// current context.
    @usableFromInline
    init(tracer: any Tracer, poolName: String, lane: Lane, callSite: CallSite, now: PoolInstant) {
        let function = callSite.function.description
        let file = callSite.fileID.description
        let span = tracer.startSpan(
            "lease \(lane.name)", context: InstrumentationContext.current ?? .topLevel, ofKind: .internal,
            at: DefaultTracerClock.now, function: function, file: file, line: callSite.line)
        span.updateAttributes { attributes in
            attributes["db.client.connection.pool.name"] = poolName
            attributes["lifeguard.lane"] = lane.name
            attributes["code.function.name"] = function
            attributes["code.file.path"] = file
            attributes["code.line.number"] = Int(callSite.line)
        }
        self.span = span
        self.started = now
    }

    /// The lease was granted at `now`.
    @usableFromInline
    func granted(now: PoolInstant) {
        let waited = Double(self.started.nanoseconds(to: now)) / 1e9
        self.span.updateAttributes { attributes in
            attributes["lifeguard.lease.outcome"] = "granted"
            attributes["lifeguard.lease.wait_time"] = waited
        }
    }

    /// The lease was refused, or its wait cancelled: the span ends with the error.
    @usableFromInline
    func refused(_ error: any Error) {
        let outcome = Self.outcome(of: error)
        self.span.updateAttributes { attributes in
            attributes["lifeguard.lease.outcome"] = outcome
            attributes["error.type"] = outcome
        }
        self.span.recordError(error)
        self.span.setStatus(SpanStatus(code: .error))
        self.span.end()
    }

    /// The lease ended: its body returned, or threw `error`.
    @usableFromInline
    func ended(throwing error: (any Error)?) {
        if let error {
            self.span.attributes["error.type"] = Self.outcome(of: error)
            self.span.recordError(error)
            self.span.setStatus(SpanStatus(code: .error))
        }
        self.span.end()
    }

    /// `error.type`: a ``LifeguardError``'s code, `cancelled`, or the error's type.
    static func outcome(of error: any Error) -> String {
        switch error {
        case let error as LifeguardError: error.code.description
        case is CancellationError: "cancelled"
        default: String(reflecting: type(of: error))
        }
    }
}
