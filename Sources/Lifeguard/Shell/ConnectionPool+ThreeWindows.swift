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
        retrieve: (Lease) async throws -> Context,
        generate: (Context) async throws -> Answer,
        persist: (Lease, Answer) async throws -> Saved
    ) async throws -> Saved {
        let answer = try await self.firstTwoWindows(
            retrieval: retrieval, fileID: fileID, line: line, function: function, retrieve: retrieve, generate: generate)
        return try await self.withConnection(lane: write, fileID: fileID, line: line, function: function) {
            try await persist($0, answer)
        }
    }

    /// The windows before the write: `retrieve` on a lease of `retrieval`, then `generate` as a
    /// ``GenerationStep``, with no connection held.
    func firstTwoWindows<Context, Answer>(
        retrieval: Lane, fileID: StaticString, line: UInt, function: StaticString,
        isolation: isolated (any Actor)? = #isolation,
        retrieve: (Lease) async throws -> Context,
        generate: (Context) async throws -> Answer
    ) async throws -> Answer {
        let context = try await self.withConnection(lane: retrieval, fileID: fileID, line: line, function: function) {
            try await retrieve($0)
        }
        return try await GenerationStep.run(fileID: fileID, line: line, function: function) {
            try await generate(context)
        }
    }

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

extension ConnectionPool where Factory: TransactionalConnectionFactory {
    /// Runs `body` in a transaction on a lease of `lane`: committed when `body` returns, rolled
    /// back when it throws or the task is cancelled
    /// (``TransactionalConnectionFactory/inTransaction(on:isolation:_:)``).
    ///
    /// - Parameters:
    ///   - lane: The kind of work; usually ``Lane/write``.
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    ///   - body: Runs statements through the lease, inside the transaction.
    /// - Returns: What `body` returns, once committed.
    /// - Throws: What `body` throws (after the rollback), `CancellationError`, the commit's
    ///   error, or ``LifeguardError`` when no connection could be leased.
    @inlinable
    public func withTransaction<Value>(
        lane: Lane,
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Lease) async throws -> Value
    ) async throws -> Value {
        try await self.withConnection(lane: lane, fileID: fileID, line: line, function: function) { lease in
            try await self.factory.inTransaction(on: lease, isolation: isolation, body)
        }
    }

    /// Runs a pipeline in three short windows: `retrieve` on a lease of `retrieval`, released
    /// when it returns; `generate` with no connection held (a ``GenerationStep``: a lease
    /// requested there is reported or refused); `persist` in a transaction on a lease of
    /// `write`.
    ///
    /// ```swift
    /// let id = try await pool.threeWindows(
    ///     retrieve: { lease in try await lease.query("SELECT body FROM docs WHERE topic = \(topic) LIMIT 8") },
    ///     generate: { rows in try await model.answer(question, context: rows) },
    ///     persist: { lease, answer in try await lease.execute("INSERT INTO answers (body) VALUES (\(answer))") })
    /// ```
    ///
    /// - Parameters:
    ///   - retrieval: The lane of the first window. Default: ``Lane/retrieval``.
    ///   - write: The lane of the last window. Default: ``Lane/write``.
    ///   - fileID: The caller's file, for reports. Leave the default.
    ///   - line: The caller's line, for reports. Leave the default.
    ///   - function: The caller's function, for reports. Leave the default.
    ///   - isolation: The caller's actor, inherited. Leave the default.
    ///   - retrieve: Reads what the model needs.
    ///   - generate: Calls the model, with no connection held.
    ///   - persist: Writes the result, in a transaction.
    /// - Returns: What `persist` returns, once committed.
    public func threeWindows<Context, Answer, Saved>(
        retrieval: Lane = .retrieval,
        write: Lane = .write,
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        retrieve: (Lease) async throws -> Context,
        generate: (Context) async throws -> Answer,
        persist: (Lease, Answer) async throws -> Saved
    ) async throws -> Saved {
        let answer = try await self.firstTwoWindows(
            retrieval: retrieval, fileID: fileID, line: line, function: function, retrieve: retrieve, generate: generate)
        return try await self.withTransaction(lane: write, fileID: fileID, line: line, function: function) {
            try await persist($0, answer)
        }
    }
}
