import Synchronization

/// The step of a pipeline that calls a model, during which no connection should be held.
///
/// A pipeline that holds a connection across a model call holds it for the seconds the model
/// takes, and no pool size fixes that. Run the call inside ``run(fileID:line:function:isolation:_:)`` (or
/// use ``ConnectionPool/threeWindows(retrieval:write:fileID:line:function:isolation:retrieve:generate:persist:)``,
/// which does): a lease requested inside it is reported with both call sites, or refused, as
/// ``PoolConfiguration/leaseDuringGeneration`` says.
public enum GenerationStep {
    /// Where the generation step the current task is in began, if it is in one.
    ///
    /// Costs one atomic load while no generation step runs anywhere in the process; a
    /// task-local lookup otherwise. A task created with `Task { }` inside a step and still
    /// running after the step ended counts as outside it.
    @inlinable
    public static var current: CallSite? {
        self.running.load(ordering: .relaxed) == 0 ? nil : self.step
    }

    /// The call site of the step the current task is in. Bound only by ``run(fileID:line:function:isolation:_:)``,
    /// which keeps ``running`` counted.
    @usableFromInline
    @TaskLocal static var step: CallSite?

    /// How many generation steps are running in the process: while none is, the lease fast path
    /// skips the task-local lookup.
    @usableFromInline
    static let running = Atomic<Int>(0)

    /// Runs `body` as a generation step.
    ///
    /// - Parameters:
    ///   - fileID: The caller's file, for reports. Leave the default.
    ///   - line: The caller's line, for reports. Leave the default.
    ///   - function: The caller's function, for reports. Leave the default.
    ///   - body: The model call, with no connection held.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    /// - Returns: What `body` returns.
    public static func run<Value>(
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Value
    ) async rethrows -> Value {
        self.running.add(1, ordering: .relaxed)
        defer { self.running.subtract(1, ordering: .relaxed) }
        return try await self.$step.withValue(CallSite(fileID: fileID, line: line, function: function), operation: body)
    }
}

/// What the pool does with a lease requested inside a ``GenerationStep``.
public enum LeaseDuringGeneration: Sendable, Hashable {
    /// Grant it, and report it once per call site (a warning in the log and a
    /// ``WatchdogFinding/Kind/leaseDuringGeneration`` finding).
    case warn
    /// Refuse it with ``LifeguardError/Code/leaseDuringGeneration``.
    case forbid
}

extension ConnectionPool {
    /// Runs a pipeline in three short windows: `retrieve` on a lease of `retrieval`, released
    /// when it returns; `generate` with no connection held (a ``GenerationStep``); `persist` on a
    /// lease of `write`.
    ///
    /// ```swift
    /// let saved = try await pool.threeWindows(
    ///     retrieve: { connection in try await passages(for: question, on: connection) },
    ///     generate: { passages in try await model.answer(question, with: passages) },
    ///     persist: { connection, answer in try await save(answer, on: connection) })
    /// ```
    ///
    /// - Parameters:
    ///   - retrieval: The lane of the first window. Default: ``Lane/retrieval``.
    ///   - write: The lane of the last window. Default: ``Lane/write``.
    ///   - fileID: The caller's file, for reports. Leave the default.
    ///   - line: The caller's line, for reports. Leave the default.
    ///   - function: The caller's function, for reports. Leave the default.
    ///   - retrieve: Reads what the model needs.
    ///   - generate: Calls the model; a lease requested here is reported or refused.
    ///   - persist: Writes the result.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    /// - Returns: What `persist` returns.
    public func threeWindows<Context, Answer, Saved>(
        retrieval: Lane = .retrieval,
        write: Lane = .write,
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        retrieve: (Connection) async throws -> Context,
        generate: (Context) async throws -> Answer,
        persist: (Connection, Answer) async throws -> Saved
    ) async throws -> Saved {
        let context = try await self.withConnection(lane: retrieval, fileID: fileID, line: line, function: function) {
            try await retrieve($0)
        }
        let answer = try await GenerationStep.run(fileID: fileID, line: line, function: function) {
            try await generate(context)
        }
        return try await self.withConnection(lane: write, fileID: fileID, line: line, function: function) {
            try await persist($0, answer)
        }
    }

    /// A lease requested inside a generation step: reported once per call site, or refused,
    /// as the watchdog's rules say.
    @usableFromInline
    func leaseDuringGeneration(step: CallSite, lane: Lane, callSite: CallSite?) throws(LifeguardError) {
        let finding = try self.watchdogRules.leaseDuringGeneration(step: step, lane: lane, callSite: callSite).get()
        let isNew = self.shared.withLock { shared in
            shared.machine.recordLeaseDuringGeneration(finding, lane: lane)
        }
        if isNew {
            self.logger.warning(
                "Lifeguard: \(finding)",
                metadata: ["lane": "\(lane)", "call_site": "\(finding.callSite)", "generation_step": "\(step.location)"])
        }
    }
}
