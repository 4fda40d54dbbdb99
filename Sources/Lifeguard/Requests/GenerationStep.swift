import Synchronization

/// The step of a pipeline that calls a model, during which no connection should be held.
///
/// A pipeline that holds a connection across a model call holds it for the seconds the model
/// takes, and no pool size fixes that. Run the call inside ``run(fileID:line:function:isolation:_:)`` (or
/// use the pool's `threeWindows`, which does): a lease requested inside it is reported with both call sites, or refused, as
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
    /// Grant it, and report it once per call site: a warning in the log, and a finding of kind
    /// ``WatchdogFinding/Kind/leaseDuringGeneration``.
    case warn
    /// Refuse it with ``LifeguardError/Code/leaseDuringGeneration``.
    case forbid
}
