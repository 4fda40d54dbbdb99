extension PoolStateMachine {
    /// The pool's state as users see it.
    package var status: PoolStatus {
        var lanes: [Lane: PoolStatus.LaneStatus] = [:]
        for state in self.lanes {
            lanes[state.lane] = .init(
                leased: state.leased, waiters: state.waiters.count, reserved: state.reserved, limit: state.limit,
                // A lane with nothing leased and nobody waiting is not overloaded, whatever its
                // shedder remembers until the next request.
                isOverloaded: (state.shedder?.isOverloaded ?? false) && (state.leased > 0 || !state.waiters.isEmpty))
        }
        let isShuttingDown: Bool
        if case .running = self.lifecycle { isShuttingDown = false } else { isShuttingDown = true }
        return PoolStatus(
            budget: self.configuration.budget,
            connections: self.connectionCount,
            idle: self.idle.count,
            leased: self.leasedCount,
            opening: self.openingCount,
            waiters: self.waiterCount,
            lanes: lanes,
            isDatabaseAvailable: self.outage == nil,
            isShuttingDown: isShuttingDown)
    }
}

extension PoolStateMachine {
    /// What a statistics snapshot needs, copied under the lock; the snapshot is computed after.
    struct StatisticsInputs {
        let recorder: StatisticsRecorder
        let laneNames: [String]
        let total: Int
        let lanes: [Int]
        let capacity: Int
        /// Connections that came back from a reset, ping or close, ever (see
        /// ``PoolStateMachine/unusableEnded``).
        var unusableEnded: UInt64 = 0

        func snapshot(now: Instant) -> PoolStatistics {
            self.recorder.snapshot(laneNames: self.laneNames, total: self.total, lanes: self.lanes, capacity: self.capacity, now: now)
        }
    }

    var statisticsInputs: StatisticsInputs {
        let unusable = self.slots.reduce(0) { count, slot in
            switch slot.state {
            case .resetting, .pinging, .closing: count + 1
            default: count
            }
        }
        return StatisticsInputs(
            recorder: self.recorder,
            laneNames: self.lanes.map(\.lane.name),
            total: self.leasedCount,
            lanes: self.lanes.map(\.leased),
            capacity: self.configuration.budget - unusable,
            unusableEnded: self.unusableEnded)
    }

    /// The statistics of the current and previous windows, up to `now`.
    package func statisticsSnapshot(now: Instant) -> PoolStatistics {
        self.statisticsInputs.snapshot(now: now)
    }
}
