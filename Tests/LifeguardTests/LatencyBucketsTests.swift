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
        for value in self.samples {
            let index = LatencyBuckets.index(ofMicroseconds: value)
            #expect((0..<LatencyBuckets.count).contains(index))
            let lowest = LatencyBuckets.lowestMicroseconds(at: index)
            #expect(lowest <= value)
            #expect(Double(value - lowest) <= Double(value) / 128, "value \(value) in bucket from \(lowest)")
            if index + 1 < LatencyBuckets.count {
                #expect(LatencyBuckets.lowestMicroseconds(at: index + 1) > value)
            }
        }
        for index in 0..<LatencyBuckets.count {
            #expect(LatencyBuckets.index(ofMicroseconds: LatencyBuckets.lowestMicroseconds(at: index)) == index)
        }
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
