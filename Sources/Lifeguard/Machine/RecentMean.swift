/// The mean of a lane's recent durations (its holds, or the gaps between waiters it served),
/// over at least the last quarter of a second's worth of them and at least `minimumCount`:
/// a sum and a count, both halved once the sum passes the horizon.
///
/// The wait a request can expect is the time the lane takes to serve the queue ahead of it,
/// hundreds of leases when a closed loop fans out. One slow hold among them adds its own length
/// to that wait, not its length times the queue: a mean that weighs the newest duration (an
/// average with 1/8 to the newest, or over the last 128) swings with one. In the example
/// service at budget 2 under 200 clients (holds of 0.3 ms, one of 13 ms now and then) such a
/// mean put the wait to expect past a second for a queue served in a quarter of one, and 44% of
/// searches were rejected. Over a quarter of a second, the 13 ms hold moves the mean by 5%.
struct RecentMean {
    /// How much of the durations' sum is kept, at least, when halving.
    static let horizonNanoseconds: Int64 = 250_000_000
    /// Halves at this count even when the durations are too short to reach the horizon.
    static let largestCount: Int64 = 4_096

    /// The number of durations kept at least (and so before the mean is halved).
    let minimumCount: Int64
    private(set) var sumNanoseconds: Int64 = 0
    private(set) var count: Int64 = 0

    init(minimumCount: Int64) {
        self.minimumCount = minimumCount
    }

    /// The mean, or 0 before the first duration.
    var meanNanoseconds: Int64 {
        self.count == 0 ? 0 : self.sumNanoseconds / self.count
    }

    /// Adds one duration, halving the older ones' weight once the sum passes the horizon.
    mutating func add(_ nanoseconds: Int64) {
        self.sumNanoseconds &+= max(0, nanoseconds)
        self.count += 1
        if self.count >= 2 * self.minimumCount
            && (self.sumNanoseconds >= 2 * Self.horizonNanoseconds || self.count >= Self.largestCount)
        {
            self.sumNanoseconds /= 2
            self.count /= 2
        }
    }
}
