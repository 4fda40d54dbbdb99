public import HTTPTypes
public import Hummingbird
public import Lifeguard

/// A ``Lifeguard/LifeguardError`` thrown from a route becomes an HTTP response that says what
/// happened, instead of an empty 500.
///
/// | code | status | `Retry-After` |
/// |---|---|---|
/// | `shed`, `overloaded`, `waitTimeout`, `databaseUnavailable`, `shutdown`, `notRunning` | 503 Service Unavailable | yes |
/// | `deadlineExceeded` | 504 Gateway Timeout | no |
/// | anything else (a configuration or programming error) | 500 Internal Server Error | no |
///
/// The body is JSON, `{"error": {"code": "shed", "lane": "retrieval", "message": "…",
/// "retryAfterSeconds": 1}}`. Its message says which lane refused the request and why, in terms
/// a client can act on; it never carries the error's underlying cause (a connect error names
/// hosts and users), its settings or a password: those are for the server's log, where the
/// error's own description goes.
///
/// Importing `LifeguardHummingbird` is enough: Hummingbird asks any error that is an
/// `HTTPResponseError` for its response.
extension LifeguardError: HTTPResponseError {
    /// The HTTP status this error stands for: 503, 504 or 500 (see the table above).
    public var status: HTTPResponse.Status {
        switch self.code {
        case .shed, .overloaded, .waitTimeout, .databaseUnavailable, .shutdown, .notRunning:
            return .serviceUnavailable
        case .deadlineExceeded:
            return .gatewayTimeout
        default:
            return .internalServerError
        }
    }

    /// How long a client should wait before it retries, in whole seconds, for a 503: the wait
    /// the request could expect, rounded up, and at least 1 s; `nil` for other statuses.
    public var retryAfterSeconds: Int? {
        guard self.status == .serviceUnavailable else { return nil }
        switch self.code {
        case .shutdown, .notRunning:
            return 5
        default:
            let expected = self.expectedWait ?? .zero
            let seconds = expected.components.seconds + (expected.components.attoseconds > 0 ? 1 : 0)
            return Int(clamping: min(max(seconds, 1), 60))
        }
    }

    /// What a client may be told: the lane and the reason, without causes, settings or hosts.
    public var publicMessage: String {
        let lane = self.lane.map { "lane '\($0.name)'" } ?? "the pool"
        switch self.code {
        case .shed:
            return "\(lane) is overloaded and shed the request; retry later"
        case .overloaded:
            return "\(lane) has a full queue and refused the request; retry later"
        case .waitTimeout where self.waited == .zero:
            return "\(lane) is saturated: the request would have waited longer than its wait budget, so it was refused at once; retry later"
        case .waitTimeout:
            return "\(lane) found no free connection within its wait budget; retry later"
        case .databaseUnavailable:
            return "the database is unavailable; the server is reconnecting; retry later"
        case .shutdown:
            return "the server is shutting down"
        case .notRunning:
            return "the server's database pool is not running"
        case .deadlineExceeded:
            return "\(lane) could not serve the request within its deadline"
        default:
            return "internal error"
        }
    }

    /// The JSON response: the ``status``, `Retry-After` for a 503, and a body with the code,
    /// lane, ``publicMessage`` and ``retryAfterSeconds``.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = ErrorBody(
            error: .init(
                code: self.status == .internalServerError ? "internalError" : self.code.description,
                lane: self.status == .internalServerError ? nil : self.lane?.name,
                message: self.publicMessage,
                retryAfterSeconds: self.retryAfterSeconds))
        var response = try context.responseEncoder.encode(body, from: request, context: context)
        response.status = self.status
        if let retryAfter = self.retryAfterSeconds {
            response.headers[.retryAfter] = String(retryAfter)
        }
        return response
    }
}

/// The body of an error response.
struct ErrorBody: Encodable {
    struct Details: Encodable {
        let code: String
        let lane: String?
        let message: String
        let retryAfterSeconds: Int?
    }

    let error: Details
}
