#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
internal import CTimestampCounter

/// The processor's timestamp counter, converted to nanoseconds of the monotonic clock.
///
/// Every lease reads the time twice (when it begins and when it ends), and in a virtual machine
/// `clock_gettime` costs 20–45 ns a call, where reading the counter costs about 13: on this
/// project's machine the two reads were a third of an uncontended lease. The counter is used
/// only where the kernel itself keeps time with it (its clocksource is `tsc`) and the processor
/// says it ticks at a constant rate through sleep states (`constant_tsc`, `nonstop_tsc`): then
/// it is synchronized across cores and steady. Anywhere else, and with `LIFEGUARD_CLOCK=monotonic`
/// in the environment, ``PoolInstant/now`` reads `CLOCK_MONOTONIC`.
///
/// The rate is measured once per process against `CLOCK_MONOTONIC`, over 5 ms on the first
/// reading (a pool takes that reading when it is created). Its error, tens of parts per
/// million, is far below what the pool's microsecond histograms and millisecond timeouts see;
/// the pool compares its instants only with one another, never with another clock.
struct TimestampCounter: Sendable {
    /// A counter reading taken at the same moment as ``originNanoseconds``.
    let originTicks: UInt64
    /// The monotonic clock at ``originTicks``.
    let originNanoseconds: Int64
    /// The counter's period.
    let nanosecondsPerTick: Double

    /// The counter calibrated for this process, or `nil` when the monotonic clock must be read.
    static let calibrated: TimestampCounter? = Self.isReliable ? Self.calibrate(over: 5_000_000) : nil

    /// The monotonic clock's reading for a counter reading.
    @inline(__always)
    func nanoseconds(at ticks: UInt64) -> Int64 {
        let elapsed = Double(Int64(bitPattern: ticks &- self.originTicks)) * self.nanosecondsPerTick
        return self.originNanoseconds &+ Int64(elapsed)
    }

    /// The counter now.
    @inline(__always)
    static var ticks: UInt64 { lifeguard_timestamp_counter() }

    /// Measures the counter's rate over at least `span` nanoseconds of the monotonic clock.
    static func calibrate(over span: Int64) -> TimestampCounter? {
        let start = Self.sample()
        var end = Self.sample()
        while end.nanoseconds &- start.nanoseconds < span {
            end = Self.sample()
        }
        guard end.ticks > start.ticks else { return nil }
        let period = Double(end.nanoseconds &- start.nanoseconds) / Double(end.ticks &- start.ticks)
        // A counter between 100 MHz and 100 GHz; anything else is not a clock to trust.
        guard period > 0.01, period < 10 else { return nil }
        return TimestampCounter(originTicks: end.ticks, originNanoseconds: end.nanoseconds, nanosecondsPerTick: period)
    }

    /// A counter reading paired with the monotonic clock: the midpoint of the two clock reads
    /// around it, from the tightest of a few tries (a preempted try is wide).
    static func sample() -> (ticks: UInt64, nanoseconds: Int64) {
        var best = (ticks: UInt64(0), nanoseconds: Int64(0), width: Int64.max)
        for _ in 0..<5 {
            let before = PoolInstant.monotonic.nanoseconds
            let ticks = Self.ticks
            let after = PoolInstant.monotonic.nanoseconds
            if after &- before < best.width {
                best = (ticks, before &+ (after &- before) / 2, after &- before)
            }
        }
        return (best.ticks, best.nanoseconds)
    }

    /// Whether the counter can stand in for the monotonic clock on this machine.
    static var isReliable: Bool {
        guard lifeguard_has_timestamp_counter() != 0 else { return false }
        if let choice = getenv("LIFEGUARD_CLOCK"), String(cString: choice) == "monotonic" { return false }
        #if os(Linux)
        guard let clocksource = Self.firstLine(of: "/sys/devices/system/clocksource/clocksource0/current_clocksource"),
            clocksource == "tsc",
            let flags = Self.firstLine(of: "/proc/cpuinfo", startingWith: "flags")
        else { return false }
        let words = flags.split(separator: " ")
        return words.contains("constant_tsc") && words.contains("nonstop_tsc")
        #else
        return false
        #endif
    }

    /// The first line of a file (starting with `prefix`, when given), without its newline.
    static func firstLine(of path: String, startingWith prefix: String = "") -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 8192)
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            let line = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if line.hasPrefix(prefix) {
                return line.hasSuffix("\n") ? String(line.dropLast()) : line
            }
        }
        return nil
    }
}
