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
