/// A request's parallel queries, capped, and admitted or rejected as one request.
///
/// Retrieval often fans out into 5–15 queries at once. Unchecked, one complex request takes a
/// whole lane and the requests behind it wait for all of its queries. A fan-out runs at most
/// `maxConcurrent` of its queries at a time, and its leases are judged as one request: an
/// overloaded lane or a deadline rejects them all before the first takes a connection, and a
/// request admitted is not judged again lease by lease (each lease still waits at most its
/// lane's `waitTimeout` or the deadline). The lane serves waiters in the order they came, a
/// fan-out's leases together.
///
/// Use it through ``ConnectionPool/fanOut(lane:maxConcurrent:_:fileID:line:function:_:)`` or the
/// adapters' equivalents.
@usableFromInline
enum FanOut {

    /// Runs `operation` for each input, at most `maxConcurrent` at a time; returns the outputs
    /// in the order of the inputs.
    ///
    /// The first error cancels the operations still running and is thrown once they ended.
    ///
    /// - Parameters:
    ///   - maxConcurrent: The most operations running at once, at least 1.
    ///   - inputs: One operation runs for each.
    ///   - operation: Leases a connection and uses it, usually through `withConnection`.
    /// - Returns: The outputs, in the order of `inputs`.
    /// - Throws: ``LifeguardError/Code/invalidConfiguration`` when `maxConcurrent` is below 1,
    ///   or the first error an operation threw.
    static func run<Input: Sendable, Output: Sendable>(
        maxConcurrent: Int,
        _ inputs: [Input],
        _ operation: @escaping @Sendable (Input) async throws -> Output
    ) async throws -> [Output] {
        guard maxConcurrent >= 1 else {
            throw LifeguardError.invalidConfiguration(["fanOut maxConcurrent is \(maxConcurrent); it must be at least 1"])
        }
        return try await withThrowingTaskGroup(of: (Int, Output).self) { tasks in
            var outputs = [Output?](repeating: nil, count: inputs.count)
            var started = 0
            while started < inputs.count {
                if started >= maxConcurrent, let (index, output) = try await tasks.next() {
                    outputs[index] = output
                }
                let index = started
                let input = inputs[index]
                tasks.addTask { (index, try await operation(input)) }
                started += 1
            }
            while let (index, output) = try await tasks.next() {
                outputs[index] = output
            }
            return outputs.map { $0! }
        }
    }
}

extension ConnectionPool {
    /// Runs `body` for each input on a connection of `lane`, at most `maxConcurrent` at a time,
    /// admitted or rejected as one request: part of a request is worth nothing.
    ///
    /// The request is admitted or rejected whole: when the lane is overloaded and its first
    /// `maxConcurrent` leases would wait longer than the shedding target, or when the
    /// ``RequestDeadline`` leaves less time than that wait, it fails at once with
    /// ``LifeguardError/Code/shed`` or ``LifeguardError/Code/deadlineExceeded`` before taking
    /// any connection: part of a request is worth nothing, and its connections are better
    /// spent on requests that can complete.
    ///
    /// ```swift
    /// let passages = try await pool.fanOut(lane: .retrieval, maxConcurrent: 4, queries) { connection, query in
    ///     try await search(query, on: connection)
    /// }
    /// ```
    ///
    /// - Parameters:
    ///   - lane: The lane of every lease.
    ///   - maxConcurrent: The most leases this request holds at once, at least 1.
    ///   - inputs: One lease runs for each.
    ///   - fileID: The caller's file, for the watchdog's reports. Leave the default.
    ///   - line: The caller's line, for the watchdog's reports. Leave the default.
    ///   - function: The caller's function, for the watchdog's reports. Leave the default.
    ///   - body: Uses the lease (the connection, or the adapter's view of it) for one input.
    /// - Returns: The outputs, in the order of `inputs`.
    /// - Throws: The first error: a ``LifeguardError`` when a lease failed, or what `body` threw.
    public func fanOut<Input: Sendable, Output: Sendable>(
        lane: Lane,
        maxConcurrent: Int,
        _ inputs: [Input],
        fileID: StaticString = #fileID,
        line: UInt = #line,
        function: StaticString = #function,
        _ body: @escaping @Sendable (Lease, Input) async throws -> Output
    ) async throws -> [Output] {
        guard let laneIndex = self.lanes.firstIndex(of: lane) else { throw self.unknownLane(lane) }
        let now = self.clock.now
        let deadline = RequestDeadline.current
        let leases = min(max(maxConcurrent, 1), inputs.count)
        if let rejection = self.shared.withLock({ $0.machine.admitFanOut(lane: laneIndex, leases: leases, deadline: deadline, now: now) }) {
            throw rejection
        }
        let callSite = CallSite(fileID: fileID, line: line, function: function)
        return try await FanOut.run(maxConcurrent: maxConcurrent, inputs) { input in
            // Admitted with its request: the machine does not judge each lease again.
            try await self.withConnection(lane: lane, callSite: callSite, admittedWhole: true) { lease in
                try await body(lease, input)
            }
        }
    }
}
