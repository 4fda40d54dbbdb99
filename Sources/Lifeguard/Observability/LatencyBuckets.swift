import Histogram

/// The buckets in which the pool counts waits and holds on the lease path: microseconds,
/// log-linear, the same buckets as an HdrHistogram with two significant digits.
///
/// Values below 256 µs have a bucket each; above, every power of two is split into 128 buckets,
/// so a bucket is at most 1/128 (0.8%) wide relative to its values. Durations are clamped to an
/// hour, which makes ``count`` 3,287 buckets (26 KB of counters) per histogram.
///
/// Recording is a shift and an increment into a flat array, with no histogram bookkeeping
/// (total count, minimum, maximum) on the lease path. Because the buckets coincide with
/// HdrHistogram's at that precision, ``histogram(_:)`` converts the counts losslessly for
/// percentiles, merging and export.
enum LatencyBuckets {
    /// The longest duration told apart: an hour, in microseconds.
    static let highestMicroseconds: UInt64 = 3_600_000_000
    /// Buckets per power of two, above the linear range.
    static let subBucketBits = 7
    /// Below this many microseconds, buckets are one microsecond wide.
    static let linearRange: UInt64 = 1 << (subBucketBits + 1)
    /// The number of buckets of one histogram.
    static let count = index(ofMicroseconds: highestMicroseconds) + 1

    /// The bucket of a duration in nanoseconds (negative durations count as zero).
    @inline(__always)
    static func index(ofNanoseconds nanoseconds: Int64) -> Int {
        self.index(ofMicroseconds: UInt64(max(0, nanoseconds)) / 1_000)
    }

    /// The bucket of a duration in microseconds.
    @inline(__always)
    static func index(ofMicroseconds value: UInt64) -> Int {
        let value = min(value, self.highestMicroseconds)
        guard value >= self.linearRange else { return Int(truncatingIfNeeded: value) }
        let magnitude = UInt64.bitWidth - 1 - value.leadingZeroBitCount  // ≥ subBucketBits + 1
        let shift = magnitude - self.subBucketBits
        let octave = magnitude - (self.subBucketBits + 1)
        let subBucket = Int(truncatingIfNeeded: value >> UInt64(shift)) - (1 << self.subBucketBits)
        return Int(self.linearRange) + octave << self.subBucketBits + subBucket
    }

    /// The smallest duration in microseconds that falls in bucket `index`.
    static func lowestMicroseconds(at index: Int) -> UInt64 {
        guard index >= Int(self.linearRange) else { return UInt64(index) }
        let offset = index - Int(self.linearRange)
        let octave = offset >> self.subBucketBits
        let subBucket = UInt64(offset & ((1 << self.subBucketBits) - 1)) + (1 << self.subBucketBits)
        return subBucket << UInt64(octave + 1)
    }

    /// The largest duration in microseconds that falls in bucket `index`: the value HdrHistogram
    /// reports for a percentile that lands in it.
    static func highestMicroseconds(at index: Int) -> UInt64 {
        self.lowestMicroseconds(at: index + 1) - 1
    }

    /// An empty HdrHistogram of the same range and precision.
    static func makeHistogram() -> Histogram<UInt64> {
        Histogram(highestTrackableValue: self.highestMicroseconds, numberOfSignificantValueDigits: .two)
    }

    /// The counts of one histogram (``count`` buckets) as an HdrHistogram.
    static func histogram(_ counts: ArraySlice<UInt64>) -> Histogram<UInt64> {
        var histogram = self.makeHistogram()
        self.add(counts, to: &histogram)
        return histogram
    }

    /// Adds the counts of one histogram (``count`` buckets) to an HdrHistogram.
    ///
    /// Each count is recorded at its bucket's highest value, so percentiles, `max` and `mean`
    /// come out as if the values had been recorded directly; only the exact extremes
    /// (`min`, `maxRecorded`) are known to the bucket alone.
    static func add(_ counts: ArraySlice<UInt64>, to histogram: inout Histogram<UInt64>) {
        for (bucket, count) in zip(0..., counts) where count > 0 {
            histogram.record(self.highestMicroseconds(at: bucket), count: count)
        }
    }
}
