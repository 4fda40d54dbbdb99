/// The tasks of a pool's scheduled timers, by id.
///
/// Scheduling and cancelling a timer are carried out unlocked, after the events that decided
/// them, so a cancellation can come before its timer's task is stored: the id is remembered
/// and the task cancelled as it comes. (A cancellation can also come after its timer fired;
/// the machine numbers timers in order, so ids far behind the newest are forgotten.)
@usableFromInline
struct TimerTable: Sendable {
    var tasks: [TimerID: Task<Void, Never>] = [:]
    var cancelledEarly: Set<TimerID> = []
    var stopped = false

    @usableFromInline init() {}

    mutating func scheduled(_ task: Task<Void, Never>, for id: TimerID) {
        if self.stopped || self.cancelledEarly.remove(id) != nil {
            task.cancel()
        } else {
            self.tasks[id] = task
        }
        if self.cancelledEarly.count > 16 {
            self.cancelledEarly = self.cancelledEarly.filter { $0.value > id.value &- 64 }
        }
    }

    mutating func cancel(_ id: TimerID) {
        if let task = self.tasks.removeValue(forKey: id) {
            task.cancel()
        } else {
            self.cancelledEarly.insert(id)
        }
    }

    mutating func fired(_ id: TimerID) {
        self.tasks[id] = nil
    }

    /// Cancels every timer, and those scheduled from now on.
    mutating func cancelAll() {
        self.stopped = true
        for task in self.tasks.values { task.cancel() }
        self.tasks = [:]
    }
}
