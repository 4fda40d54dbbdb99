import Histogram
import Testing
@testable import Lifeguard

@Suite("Latency buckets")
struct LatencyBucketsTests {
    /// Values from 0 to an hour in microseconds, dense at the small end.
    var samples: [UInt64] {
        var random = SplitMix64(seed: 7)
        return Array(0...600) + (0..<20_000).map { _ in
            let magnitude = random.next() % 33
            return random.next() % min(1 << magnitude, LatencyBuckets.highestMicroseconds + 1)
        } + [LatencyBuckets.highestMicroseconds - 1, LatencyBuckets.highestMicroseconds]
    }

    @Test("every value falls in a bucket whose lowest value is within 1/128 below it")
    func bucketsAreTightAndOrdered() {
        #expect(LatencyBuckets.count == 3_287)
        // Checked in bulk, one expectation each: thousands of expectations would hold a thread of
        // the cooperative pool long enough to starve the tests that run beside this one.
        let misplaced = self.samples.filter { value in
            let index = LatencyBuckets.index(ofMicroseconds: value)
            guard (0..<LatencyBuckets.count).contains(index) else { return true }
            let lowest = LatencyBuckets.lowestMicroseconds(at: index)
            let next = index + 1 < LatencyBuckets.count ? LatencyBuckets.lowestMicroseconds(at: index + 1) : UInt64.max
            return lowest > value || Double(value - lowest) > Double(value) / 128 || next <= value
        }
        #expect(misplaced.isEmpty, "first misplaced: \(misplaced.prefix(5))")
        let roundTrips = (0..<LatencyBuckets.count).allSatisfy {
            LatencyBuckets.index(ofMicroseconds: LatencyBuckets.lowestMicroseconds(at: $0)) == $0
        }
        #expect(roundTrips)
    }

    @Test("counts convert to the HdrHistogram that recording the values directly would give")
    func conversionIsLossless() {
        var counts = [UInt64](repeating: 0, count: LatencyBuckets.count)
        var direct = LatencyBuckets.makeHistogram()
        for value in self.samples {
            counts[LatencyBuckets.index(ofMicroseconds: value)] += 1
            direct.record(value)
        }
        let converted = LatencyBuckets.histogram(counts[...])
        #expect(converted.totalCount == direct.totalCount)
        for percentile in [1.0, 10, 50, 90, 99, 99.9] {
            #expect(converted.valueAtPercentile(percentile) == direct.valueAtPercentile(percentile), "p\(percentile)")
        }
        #expect(converted.max == direct.max)
        #expect(abs(converted.mean - direct.mean) <= direct.mean / 128)
        // The exact extremes are known to their bucket: within 1/128 above.
        #expect(converted.maxRecorded >= direct.maxRecorded && converted.maxRecorded - direct.maxRecorded <= direct.maxRecorded / 128)
    }

    @Test("durations in nanoseconds: negative counts as zero, beyond an hour as an hour")
    func nanoseconds() {
        #expect(LatencyBuckets.index(ofNanoseconds: -5) == 0)
        #expect(LatencyBuckets.index(ofNanoseconds: 999) == 0)
        #expect(LatencyBuckets.index(ofNanoseconds: 1_000) == 1)
        #expect(LatencyBuckets.index(ofNanoseconds: .max) == LatencyBuckets.count - 1)
    }
}
