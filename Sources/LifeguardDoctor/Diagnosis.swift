/// The findings and per-application figures computed from an ``Observation``: a pure function
/// of what was sampled, so each rule is tested on samples made by hand as well as on a server.
///
/// The thresholds, and why:
/// - a *generation hold* is a session idle in a transaction, waiting for its client
///   (`ClientRead`), for ``holdSeconds`` (1 s) or more, seen in two samples or more. A pool's
///   lease should last 5–20 ms; a second idle inside a transaction is a connection held across
///   something else (a model call). pganalyze and RDS report it after 30 min or an hour;
/// - a *retrieval burst* is an application's active sessions rising by ``burstSize`` (10)
///   or more between two samples (at most 2 s apart), or that many connections opened between
///   two samples, twice or more (churn: a pool opening per burst; one start-up is not);
/// - an *agent write storm* is ``blockedSessions`` (3) or more of an application's sessions
///   waiting on a lock at once, or deadlocks during the run;
/// - a *cancellation leak* is a session abandoned by its client (`sessions_abandoned`, PG14+),
///   a session idle in an aborted transaction for ``holdSeconds``, a statement running for
///   ``patienceSeconds`` (30 s: past any user's patience, so its caller has likely gone), or an
///   application whose connections grow by ``burstSize`` while its active sessions do not;
/// - *connection churn*: ``churnPerSecond`` (5) sessions or more started per second over
///   the run (`pg_stat_database.sessions`, PG14+), which the samples alone undercount;
/// - *near the connection limit*: 80% of what ordinary roles may open (warning), 90%
///   (critical), as Datadog's `percent_usage_connections` defaults;
/// - an *oversized pool*: an application holding a quarter or more of the server's
///   connections whose active sessions never passed a quarter of its own.
public struct Diagnosis: Sendable, Hashable, Codable {
    /// Idle-in-transaction time that counts as a hold.
    public static let holdSeconds = 1.0
    /// The rise that counts as a burst: retrieval fans out 5–15 ways, and a pool of ten
    /// short queries rarely has them all active in one sample.
    public static let burstSize = 10
    /// Sessions waiting on locks at once that count as a storm.
    public static let blockedSessions = 3
    /// Sessions started per second that count as churn.
    public static let churnPerSecond = 5.0
    /// How long a statement runs before nobody can still be waiting for it.
    public static let patienceSeconds = 30.0

    /// The findings, most severe first.
    public var findings: [Finding]
    /// Each application's figures, busiest first.
    public var applications: [ApplicationProfile]
    /// The most client backends seen at once, server-wide.
    public var peakBackends: Int
    /// What ordinary roles may open (`max_connections` less the reserved).
    public var availableConnections: Int
    /// Seconds observed.
    public var duration: Double
    /// Samples taken.
    public var sampleCount: Int
    /// What the doctor could not see.
    public var blindSpots: [String]

    /// Whether nothing of severity warning or above was found, and nothing was hidden from
    /// the doctor's role.
    public var isHealthy: Bool { !self.findings.contains { $0.severity >= .warning } && self.blindSpots.isEmpty }

    /// Diagnoses `observation`.
    ///
    /// - Parameter observation: What was sampled.
    public init(_ observation: Observation) {
        let samples = observation.samples
        let settings = observation.settings
        self.duration = observation.duration
        self.sampleCount = samples.count
        self.blindSpots = observation.blindSpots
        self.availableConnections = settings.availableConnections
        self.peakBackends = samples.map(\.sessions.count).max() ?? 0
        let sources = Set(samples.flatMap { $0.sessions.map(\.source) }).sorted()
        let profiles = sources.map { ApplicationProfile(source: $0, samples: samples) }
        self.applications = profiles
            .sorted { ($0.meanActive, $0.peakBackends) > ($1.meanActive, $1.peakBackends) }
        var findings: [Finding] = []
        for source in sources {
            findings += Self.generationHolds(of: source, in: samples)
            findings += Self.bursts(of: source, in: samples)
            findings += Self.lockWaits(of: source, in: samples)
            findings += Self.leaks(of: source, in: samples)
        }
        // Applications some of whose sessions' states the doctor's role can see: only those are judged on how they use them.
        let judged = Set(samples.flatMap { $0.sessions.filter { !$0.state.isEmpty }.map(\.source) })
        findings += Self.serverWide(observation, peakBackends: self.peakBackends, applications: profiles, judged: judged, found: findings)
        self.findings = findings.sorted { ($0.severity, $1.kind.rawValue) > ($1.severity, $0.kind.rawValue) }
    }

    // MARK: - The patterns

    /// Sessions of `source` idle in a transaction for seconds.
    static func generationHolds(of source: String, in samples: [ActivitySample]) -> [Finding] {
        // Each hold: a session's open transaction, by pid and start (to within a second).
        var holds: [HoldKey: Hold] = [:]
        for sample in samples {
            for session in sample.sessions where session.source == source && session.state == "idle in transaction" {
                guard let idle = session.stateAge, idle >= Self.holdSeconds,
                    session.waitEvent.isEmpty || session.waitEvent == "ClientRead"
                else { continue }
                let key = HoldKey(pid: session.pid, started: Int(((sample.at - (session.transactionAge ?? 0))).rounded()))
                holds[key, default: Hold(query: session.query, queryID: session.queryID)].observe(idle: idle, at: sample.at)
            }
        }
        let sustained = holds.values.filter { $0.samples >= 2 }
        guard !sustained.isEmpty else { return [] }
        let longest = sustained.map(\.longestIdle).max() ?? 0
        let atOnce = Dictionary(grouping: sustained.flatMap(\.seenAt), by: { $0 }).values.map(\.count).max() ?? 1
        let common = Dictionary(grouping: sustained, by: \.query).max { $0.value.count < $1.value.count }
        let severity: Finding.Severity = longest >= 5 || atOnce >= 3 || sustained.count >= 3 ? .critical : .warning
        return [Finding(
            kind: .generationHold, severity: severity, application: source,
            summary: "\(source) holds connections idle inside transactions for seconds (the client is busy elsewhere, e.g. a model call, while its transaction stays open)",
            evidence: [
                "\(sustained.count) transaction(s) idle in transaction for \(Self.seconds(Self.holdSeconds)) or more, the longest idle \(Self.seconds(longest))",
                "up to \(atOnce) at once, each holding a server connection and its locks",
                "waiting for the client (wait_event ClientRead): the server has nothing to do",
            ],
            query: common?.key, queryID: common?.value.first?.queryID,
            fix: [
                "Do not hold a transaction across the model or tool call: commit what you read before it, write the answer after, in a transaction of its own (three short windows; Lifeguard: pool.threeWindows).",
                "SQLAlchemy: end the session's transaction (session.commit() or a `with session.begin():` block) before awaiting the model; asyncpg: leave `async with conn.transaction()` first; node-postgres / pgx: COMMIT before the call.",
                "Set idle_in_transaction_session_timeout for the application's role (ALTER ROLE app SET idle_in_transaction_session_timeout = '30s') so a forgotten transaction ends.",
            ])]
    }

    /// Active sessions or new connections of `source` jumping between samples.
    static func bursts(of source: String, in samples: [ActivitySample]) -> [Finding] {
        var largestJump = 0
        var largestOpened = 0
        var peakActive = 0
        var bursts = 0
        var churn = 0
        var query: String?
        for (previous, sample) in zip(samples, samples.dropFirst()) where sample.at - previous.at <= 2.0 {
            let before = Set(previous.sessions.filter { $0.source == source }.map(\.pid))
            let now = sample.sessions.filter { $0.source == source }
            let active = now.filter { $0.state == "active" }
            let jump = active.count - previous.sessions.filter { $0.source == source && $0.state == "active" }.count
            // Connections opened since the last sample.
            let opened = now.filter { !before.contains($0.pid) && $0.backendAge <= sample.at - previous.at + 0.5 }.count
            peakActive = max(peakActive, active.count)
            if jump >= Self.burstSize {
                bursts += 1
                if jump > largestJump { query = Self.mostCommon(active.map(\.query)) }
            }
            if opened >= Self.burstSize { churn += 1 }
            largestJump = max(largestJump, jump)
            largestOpened = max(largestOpened, opened)
        }
        guard bursts > 0 || churn >= 2 else { return [] }
        var evidence: [String] = []
        if bursts > 0 {
            evidence.append("\(bursts) burst(s): active sessions rose by up to \(largestJump) between samples (peak \(peakActive) active)")
        }
        if churn > 0 {
            evidence.append("up to \(largestOpened) connection(s) opened between two samples, \(churn) time(s), at least (connection churn: each costs a fork and authentication; the samples miss those opened and closed in between)")
        }
        return [Finding(
            kind: .retrievalBurst, severity: .warning, application: source,
            summary: bursts > 0
                ? "\(source) fans out: its active connections jump within a second, each burst asking for many connections at once"
                : "\(source) opens and closes connections over and over instead of keeping them",
            evidence: evidence,
            query: query ?? Self.mostCommon(samples.flatMap { $0.sessions.filter { $0.source == source && $0.backendAge < 2 }.map(\.query) }),
            fix: [
                "Give the fan-out a bounded lane rather than one connection per query: a pool of its own size (Lifeguard: the .retrieval lane and pool.fanOut with maxConcurrent; SQLAlchemy: pool_size and max_overflow for the reader engine; asyncpg: a Pool with max_size and a semaphore around gather()).",
                "Keep connections open: a pool that opens and closes per burst pays a fork per query (SQLAlchemy: do not use NullPool; set min_size in asyncpg; pgx: MinConns).",
                "Move reads to a standby, or put PgBouncer (transaction mode) in front when many processes burst at once.",
            ])]
    }

    /// Sessions of `source` waiting on locks.
    static func lockWaits(of source: String, in samples: [ActivitySample]) -> [Finding] {
        var peakBlocked = 0
        var samplesWithWaits = 0
        var blockers = Set<Int>()
        var queries: [String] = []
        var ids: [Int64] = []
        for sample in samples {
            let waiting = sample.sessions.filter { $0.source == source && ($0.waitEventType == "Lock" || !$0.blockedBy.isEmpty) }
            if waiting.count >= Self.blockedSessions { samplesWithWaits += 1 }
            peakBlocked = max(peakBlocked, waiting.count)
            blockers.formUnion(waiting.flatMap(\.blockedBy))
            queries += waiting.map(\.query)
            ids += waiting.compactMap(\.queryID)
        }
        guard samplesWithWaits > 0 else { return [] }
        return [Finding(
            kind: .agentWriteStorm, severity: peakBlocked >= 10 ? .critical : .warning, application: source,
            summary: "\(source) writes in bursts that queue on the same rows: sessions wait for each other's locks, holding connections while they wait",
            evidence: [
                "up to \(peakBlocked) session(s) waiting on a lock at once, in \(samplesWithWaits) of \(samples.count) samples",
                "\(blockers.count) distinct blocking session(s)",
            ],
            query: Self.mostCommon(queries), queryID: Self.mostCommon(ids),
            fix: [
                "Batch the agents' state writes (Lifeguard: WriteCoalescer; elsewhere, one multi-row INSERT per tick) and append rows instead of updating one hot row.",
                "Bound concurrent writers to what the hot rows can take (a write lane with a small limit), so waiters queue in the application, not holding connections on the server.",
                "Set lock_timeout for these writes (SET LOCAL lock_timeout = '200ms') so a storm fails fast instead of piling up.",
            ])]
    }

    /// Sessions of `source` left idle in aborted transactions, or connections growing with
    /// no more work.
    static func leaks(of source: String, in samples: [ActivitySample]) -> [Finding] {
        var aborted = Set<Int>()
        var longestAborted = 0.0
        var overdue: [Int: ServerSession] = [:]
        for sample in samples {
            for session in sample.sessions where session.source == source {
                if session.state == "idle in transaction (aborted)", let idle = session.stateAge, idle >= Self.holdSeconds {
                    aborted.insert(session.pid)
                    longestAborted = max(longestAborted, idle)
                }
                if session.state == "active", let running = session.queryAge, running >= Self.patienceSeconds {
                    overdue[session.pid] = session
                }
            }
        }
        // Connections at the start and end (the first and last third), against active ones.
        let third = max(1, samples.count / 3)
        func mean(_ slice: ArraySlice<ActivitySample>, _ include: (ServerSession) -> Bool) -> Double {
            slice.isEmpty ? 0 : Double(slice.map { $0.sessions.filter { $0.source == source && include($0) }.count }.reduce(0, +)) / Double(slice.count)
        }
        let grew = samples.count >= 6
            ? mean(samples.suffix(third), { _ in true }) - mean(samples.prefix(third), { _ in true }) : 0
        let activeGrew = samples.count >= 6
            ? mean(samples.suffix(third), { $0.state == "active" }) - mean(samples.prefix(third), { $0.state == "active" }) : 0
        // Connections that stay unused: idle for 5 s or more at the end. A pool warming up uses
        // what it opens; leaked connections sit.
        let unused = samples.last.map { $0.sessions.filter { $0.source == source && $0.state.hasPrefix("idle") && ($0.stateAge ?? 0) >= 5 }.count } ?? 0
        let growing = grew >= Double(Self.burstSize) && activeGrew < 1 && unused >= Self.burstSize
        var findings: [Finding] = []
        if !overdue.isEmpty {
            let longest = overdue.values.compactMap(\.queryAge).max() ?? 0
            findings.append(Finding(
                kind: .longStatement, severity: .info, application: source,
                summary: "\(source) runs statements for \(Self.seconds(Self.patienceSeconds)) or more: past the patience of an interactive caller, so either a batch job or work whose caller has gone",
                evidence: ["\(overdue.count) statement(s) running for \(Self.seconds(Self.patienceSeconds)) or more, the longest \(Self.seconds(longest))"],
                query: Self.mostCommon(overdue.values.map(\.query)), queryID: Self.mostCommon(overdue.values.compactMap(\.queryID)),
                fix: [
                    "If its callers give up sooner (a request timeout), cancel the statement on the server when they do, and set statement_timeout for the role (ALTER ROLE app SET statement_timeout = '30s').",
                    "If it is a report or a batch, give it a role of its own with its own timeout, or run it on a standby.",
                ]))
        }
        guard !aborted.isEmpty || growing else { return findings }
        var evidence: [String] = []
        if !aborted.isEmpty {
            evidence.append("\(aborted.count) session(s) idle in an aborted transaction, the longest for \(Self.seconds(longestAborted)): a statement failed or was cancelled and nobody rolled back")
        }
        if growing {
            evidence.append("its connections grew by about \(Int(grew.rounded())) over the run while its active sessions did not, and \(unused) sat idle for 5 s or more at the end")
        }
        return findings + [Finding(
            kind: .cancellationLeak, severity: aborted.count >= 3 ? .critical : .warning, application: source,
            summary: "\(source) loses track of connections when work is cancelled: sessions stay open with nothing to do, or in a transaction nobody will end",
            evidence: evidence,
            fix: [
                "Return the connection on every path, cancellation included: roll back in a finally / defer (asyncpg: `async with pool.acquire()`, SQLAlchemy: a context-managed Session; Lifeguard does it and cancels the statement on the server).",
                "On cancel, cancel the statement on the server too (asyncpg: conn.cancel via timeout=; node-postgres: query_timeout), not only the client's await.",
                "Set idle_in_transaction_session_timeout and client_connection_check_interval (e.g. '5s') so the server ends what the client abandoned.",
            ])]
    }

    /// Findings about the server as a whole.
    ///
    /// `applications` are counted against the limit; only those of `judged` (whose sessions'
    /// states could be seen) are judged on how they use their connections.
    static func serverWide(
        _ observation: Observation, peakBackends: Int, applications: [ApplicationProfile], judged: Set<String>, found: [Finding]
    ) -> [Finding] {
        var findings: [Finding] = []
        let settings = observation.settings
        let available = max(1, settings.availableConnections)
        let usage = Double(peakBackends) / Double(available)
        if usage >= 0.8 {
            let top = applications.sorted { $0.peakBackends > $1.peakBackends }.prefix(3)
                .map { "\($0.source) \($0.peakBackends)" }.joined(separator: ", ")
            findings.append(Finding(
                kind: .nearConnectionLimit, severity: usage >= 0.9 ? .critical : .warning, application: nil,
                summary: "The server's connections reached \(Int((usage * 100).rounded()))% of what applications may open: the next burst gets 'too many clients' (SQLSTATE 53300)",
                evidence: [
                    "peak \(peakBackends) client backends of \(available) (max_connections \(settings.maxConnections) less \(settings.reservedConnections) reserved)",
                    "largest: \(top)",
                ],
                fix: [
                    "Size every application's pool so that their sum, over all instances, stays under the limit with headroom (lifeguard check --instances N says whether a budget fits).",
                    "Put PgBouncer (transaction mode) in front when many instances each hold a pool.",
                ]))
        }
        if let before = observation.countersBefore, let after = observation.countersAfter {
            let deadlocks = after.deadlocks - before.deadlocks
            let rollbacks = after.rollbacks - before.rollbacks
            let commits = after.commits - before.commits
            if deadlocks > 0 && !found.contains(where: { $0.kind == .agentWriteStorm }) {
                findings.append(Finding(
                    kind: .agentWriteStorm, severity: .critical, application: nil,
                    summary: "Transactions deadlocked during the run: concurrent writers lock the same rows in different orders",
                    evidence: ["\(deadlocks) deadlock(s), \(rollbacks) rollback(s) against \(commits) commit(s) (pg_stat_database)"],
                    fix: ["Lock rows in one order (ORDER BY id FOR UPDATE), batch the writes, and bound the writers."]))
            }
            let duration = observation.duration
            if let started = after.sessions.flatMap({ after in before.sessions.map { after - $0 } }), duration >= 1,
                Double(started) / duration >= Self.churnPerSecond {
                // The application whose young connections the samples saw most.
                let young = observation.samples.flatMap { $0.sessions.filter { $0.backendAge < 2 }.map(\.source) }
                let perSecond = Double(started) / duration
                findings.append(Finding(
                    kind: .connectionChurn, severity: perSecond >= 2 * Self.churnPerSecond ? .critical : .warning,
                    application: Self.mostCommon(young),
                    summary: "Connections are opened and closed over and over instead of kept: each costs the server a process and an authentication",
                    evidence: ["\(started) session(s) started in \(Self.seconds(duration)), \(Self.count(perSecond)) a second (pg_stat_database.sessions)"],
                    fix: [
                        "Keep a pool of open connections in each process (SQLAlchemy: not NullPool; asyncpg: create_pool with min_size; pgx: pgxpool; Lifeguard: minimumIdle), or put PgBouncer in front of short-lived processes.",
                    ]))
            }
            if let abandonedAfter = after.sessionsAbandoned, let abandonedBefore = before.sessionsAbandoned, abandonedAfter > abandonedBefore {
                let abandoned = abandonedAfter - abandonedBefore
                let vanished = Self.vanished(in: observation.samples)
                findings.append(Finding(
                    kind: .cancellationLeak, severity: abandoned >= 3 ? .critical : .warning, application: vanished.first?.source,
                    summary: "Clients went away in the middle of sessions: the server ran their statements for nobody",
                    evidence: ["\(abandoned) session(s) abandoned by their client during the run (pg_stat_database.sessions_abandoned)"]
                        + vanished.map { "\($0.count) session(s) of \($0.source) vanished while active" },
                    fix: [
                        "Close connections through the pool, and on a cancelled request cancel the statement on the server (a CancelRequest) before dropping the socket.",
                        "Set client_connection_check_interval (e.g. '5s') so the server notices a gone client during a long statement.",
                    ]))
            }
        }
        if settings.clientConnectionCheckInterval == 0 {
            findings.append(Finding(
                kind: .noClientConnectionCheck, severity: .info, application: nil,
                summary: "client_connection_check_interval is off: a statement whose client was killed or cancelled without a CancelRequest runs to its end, holding its connection, and nothing counts it until then",
                evidence: ["client_connection_check_interval = 0"],
                fix: ["ALTER ROLE app SET client_connection_check_interval = '5s' (PostgreSQL 14+), so the server checks that the client is still there during long statements."]))
        }
        if settings.idleInTransactionSessionTimeout == 0 {
            let holds = found.contains { $0.kind == .generationHold || $0.kind == .cancellationLeak }
            findings.append(Finding(
                kind: .noIdleInTransactionTimeout, severity: holds ? .warning : .info, application: nil,
                summary: "idle_in_transaction_session_timeout is off: a transaction left open by a crashed or stuck client holds its connection and locks until someone kills it",
                evidence: ["idle_in_transaction_session_timeout = 0"],
                fix: ["ALTER ROLE app SET idle_in_transaction_session_timeout = '30s' (per role), or in postgresql.conf for all."]))
        }
        for application in applications where judged.contains(application.source) && application.peakBackends * 4 >= available && application.peakBackends >= 8
            && application.peakActive * 4 <= application.peakBackends {
            findings.append(Finding(
                kind: .oversizedPool, severity: .warning, application: application.source,
                summary: "\(application.source) holds \(application.peakBackends) of the server's \(available) connections and never used more than \(application.peakActive) at once",
                evidence: [
                    "peak \(application.peakBackends) connections, peak \(application.peakActive) active, mean \(Self.count(application.meanActive)) active",
                    "Little's law from the samples: \(application.advisedBudget) connections would have carried this run's load",
                ],
                fix: [
                    "Watch a busy period (--duration 600 or more) before lowering it: this run saw \(application.peakActive) active at most. Then size its pool, across all its instances, near what the busiest period needs, and let idle connections close (SQLAlchemy pool_size, asyncpg max_size and max_inactive_connection_lifetime, pgx MaxConns and MaxConnIdleTime, Lifeguard budget).",
                ]))
        }
        return findings
    }

    /// The applications whose sessions vanished while active (seen active, gone at the next
    /// sample), most first: for the abandoned finding.
    static func vanished(in samples: [ActivitySample]) -> [(source: String, count: Int)] {
        var counts: [String: Int] = [:]
        for (previous, sample) in zip(samples, samples.dropFirst()) {
            let now = Set(sample.sessions.map(\.pid))
            for session in previous.sessions where session.state == "active" && !now.contains(session.pid) {
                counts[session.source, default: 0] += 1
            }
        }
        return counts.sorted { $0.value > $1.value }.prefix(3).map { ($0.key, $0.value) }
    }

    // MARK: - Helpers

    struct HoldKey: Hashable {
        let pid: Int
        let started: Int
    }

    struct Hold {
        let query: String
        let queryID: Int64?
        var samples = 0
        var longestIdle = 0.0
        var seenAt: [Double] = []

        mutating func observe(idle: Double, at: Double) {
            self.samples += 1
            self.longestIdle = max(self.longestIdle, idle)
            self.seenAt.append(at)
        }
    }

    static func mostCommon<Value: Hashable>(_ values: [Value]) -> Value? {
        Dictionary(grouping: values, by: { $0 }).max { $0.value.count < $1.value.count }?.key
    }

    static func seconds(_ value: Double) -> String {
        value >= 10 ? "\(Int(value.rounded())) s" : "\(Double(Int(value * 10)) / 10) s"
    }

    static func count(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value))" : "\(Double(Int(value * 10)) / 10)"
    }
}

/// One application's figures over the run, and the pool size Little's law gives for them.
public struct ApplicationProfile: Sendable, Hashable, Codable {
    /// `application_name`, or user and address.
    public var source: String
    /// The roles its sessions logged in as.
    public var users: [String]
    /// The client addresses its sessions came from (`local` for a Unix socket).
    public var clients: [String]
    /// The most connections it held at once.
    public var peakBackends: Int
    /// Its connections on average.
    public var meanBackends: Double
    /// The most sessions active at once.
    public var peakActive: Int
    /// Sessions active on average: Little's L, arrivals × time in the server.
    public var meanActive: Double
    /// The 99th percentile of active sessions over the samples.
    public var activeP99: Int
    /// The most sessions idle in a transaction at once.
    public var peakIdleInTransaction: Int
    /// Connections that would carry the active sessions seen, as `lifeguard size` sizes a
    /// burst from Little's L: L + 3√L, rounded up, and never below the active p99.
    public var advisedBudget: Int
    /// What holding transactions across other work (the idle-in-transaction peak) adds on
    /// top: the size three short windows save.
    public var heldAcrossOtherWork: Int

    init(source: String, samples: [ActivitySample]) {
        self.source = source
        let mine = samples.map { $0.sessions.filter { $0.source == source } }
        self.users = Set(mine.joined().map(\.user)).sorted()
        self.clients = Set(mine.joined().map(\.client)).sorted()
        let active = mine.map { $0.filter { $0.state == "active" }.count }
        self.peakBackends = mine.map(\.count).max() ?? 0
        self.meanBackends = mine.isEmpty ? 0 : Double(mine.map(\.count).reduce(0, +)) / Double(mine.count)
        self.peakActive = active.max() ?? 0
        self.meanActive = active.isEmpty ? 0 : Double(active.reduce(0, +)) / Double(active.count)
        let sorted = active.sorted()
        self.activeP99 = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
        self.peakIdleInTransaction = mine.map { $0.filter { $0.state.hasPrefix("idle in transaction") }.count }.max() ?? 0
        // `lifeguard size`'s rule for a component (Sizing): average + 3 × √average.
        let burst = Int((self.meanActive + 3 * self.meanActive.squareRoot()).rounded(.up))
        self.advisedBudget = max(1, burst, self.activeP99)
        self.heldAcrossOtherWork = self.peakIdleInTransaction
    }
}
