public import HTTPTypes
public import Hummingbird
public import Lifeguard

/// Gives every request a ``Lifeguard/RequestDeadline``: the leases made for it, in any lane
/// and in its child tasks, wait at most until then, and a lease that cannot be served in time
/// is refused at once (HTTP 504, see ``Lifeguard/LifeguardError/status``).
///
/// The deadline is the earlier of a fixed `budget` and what the client asks for in a header
/// (milliseconds, by default `X-Request-Timeout-Ms`, the time the client will wait, as a proxy
/// in front may set it). A header can only shorten the budget, never lengthen it; a header that
/// is not a whole number of milliseconds between 1 and 3,600,000 is ignored.
///
/// ```swift
/// router.add(middleware: RequestDeadlineMiddleware(budget: .seconds(2)))
/// ```
public struct RequestDeadlineMiddleware<Context: RequestContext>: RouterMiddleware {
    /// The longest any request may take, or `nil` for no fixed budget (the header alone).
    public let budget: Duration?
    /// The header a client states its own timeout in, in milliseconds, or `nil` to ignore
    /// clients.
    public let header: HTTPField.Name?

    /// The header read by default: `X-Request-Timeout-Ms`.
    public static var defaultHeader: HTTPField.Name { HTTPField.Name("X-Request-Timeout-Ms")! }

    /// Creates the middleware.
    ///
    /// - Parameters:
    ///   - budget: The longest any request may take; `nil` for the header alone. A budget of
    ///     zero or less, or of more than a year, is treated as none.
    ///   - header: The header in which a client may ask for a shorter deadline; `nil` to ignore it.
    public init(budget: Duration?, header: HTTPField.Name? = Self.defaultHeader) {
        self.budget = budget.flatMap { $0 > .zero && $0 <= .seconds(31_536_000) ? $0 : nil }
        self.header = header
    }

    /// The time this request has: the earlier of the budget and the client's header.
    func timeAllowed(for request: Request) -> Duration? {
        var allowed = self.budget
        if let header, let value = request.headers[header], let milliseconds = Int(value),
            (1...3_600_000).contains(milliseconds)
        {
            let asked = Duration.milliseconds(milliseconds)
            allowed = allowed.map { min($0, asked) } ?? asked
        }
        return allowed
    }

    /// Runs the rest of the chain under the request's deadline.
    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let allowed = self.timeAllowed(for: request) else {
            return try await next(request, context)
        }
        return try await RequestDeadline.withDeadline(in: allowed) {
            try await next(request, context)
        }
    }
}
