import Lifeguard
import Foundation

/// An SVG chart of designs by arrival rate, in two panels: pool wait p99 on a logarithmic axis,
/// with the 50 ms incident line and the 500 ms wait budget and where each design crosses them;
/// below it, goodput and rejected requests per second.
public struct WaitChart: Sendable {
    /// One design at one arrival rate.
    public struct Point: Sendable, Hashable {
        /// The rate, as a multiple of the scenario's.
        public var rate: Double
        /// Pool wait p99 of the worst lane, in milliseconds.
        public var waitP99: Double
        /// Whether the wait was cut by the lane's `waitTimeout`: the wait the requests would have
        /// seen is at least this, and the point is drawn as a capped value.
        public var capped: Bool
        /// Requests completed per second.
        public var goodput: Double
        /// Requests rejected (failed) per second.
        public var rejected: Double

        /// Creates a point.
        public init(rate: Double, waitP99: Double, capped: Bool, goodput: Double, rejected: Double) {
            self.rate = rate
            self.waitP99 = waitP99
            self.capped = capped
            self.goodput = goodput
            self.rejected = rejected
        }

        /// The point of a simulated result at `rate`: capped when the worst lane's p99 reached
        /// that lane's `waitTimeout` (`waitTimeouts`, by lane, in milliseconds) while requests
        /// timed out.
        public init(rate: Double, result: SimulationResult, duration: Double, waitTimeouts: [String: Double]) {
            let worst = result.waitMilliseconds.max { $0.value.p99 < $1.value.p99 }
            let timeout = worst.flatMap { waitTimeouts[$0.key] } ?? .infinity
            let p99 = worst?.value.p99 ?? 0
            self.init(
                rate: rate, waitP99: p99, capped: result.outcomes.timeout > 0 && p99 >= timeout * 0.99,
                goodput: result.throughputPerSecond,
                rejected: Double(result.failedRequests.values.reduce(0, +)) / max(duration, 1e-9))
        }
    }

    /// One design's points.
    public struct Series: Sendable {
        /// The design.
        public var design: DesignKind
        /// Its points, by increasing rate.
        public var points: [Point]

        /// Creates a series.
        public init(design: DesignKind, points: [Point]) {
            self.design = design
            self.points = points.sorted { $0.rate < $1.rate }
        }

        /// The rate at which the wait p99 first rises through `wait` milliseconds, interpolated
        /// between the two points around it (on the logarithm of the wait); `nil` if it never does.
        public func crossing(_ wait: Double) -> Double? {
            guard let first = self.points.first else { return nil }
            if first.waitP99 >= wait { return first.rate }
            for (low, high) in zip(self.points, self.points.dropFirst()) where low.waitP99 < wait && high.waitP99 >= wait {
                let from = max(low.waitP99, WaitChart.floor).logarithm
                let to = max(high.waitP99, WaitChart.floor).logarithm
                let fraction = to > from ? (wait.logarithm - from) / (to - from) : 1
                return low.rate + min(1, max(0, fraction)) * (high.rate - low.rate)
            }
            return nil
        }
    }

    /// The chart's title.
    public var title: String
    /// What the rate axis' 1× is, e.g. "1× = 60 requests/s".
    public var rateUnit: String?
    /// One line per design.
    public var series: [Series]
    /// The waits marked across the upper panel, in milliseconds, with their names.
    public var lines: [(wait: Double, name: String)] = [(50, "50 ms incident"), (500, "500 ms budget")]

    /// Waits below this (in milliseconds) are drawn on the axis' lowest decade; exactly 0 on
    /// the row marked 0 beneath it.
    static let floor = 0.1

    /// Creates a chart.
    public init(title: String, rateUnit: String? = nil, series: [Series]) {
        self.title = title
        self.rateUnit = rateUnit
        self.series = series
    }

    static let colors: [DesignKind: String] = [.naive: "#d62728", .windows: "#ff7f0e", .lifeguard: "#2ca02c"]

    /// The chart, 760 × 700.
    public var svg: String {
        let width = 760.0, left = 80.0, right = 190.0
        let waitTop = 50.0, waitBottom = 380.0, zeroRow = 400.0
        let flowTop = 470.0, flowBottom = 640.0, height = 700.0
        let rates = self.series.flatMap { $0.points.map(\.rate) }
        let minRate = rates.min() ?? 0, maxRate = max(rates.max() ?? 1, minRate + 1e-9)
        let maxWait = max(1_000, self.series.flatMap { $0.points.map(\.waitP99) }.max() ?? 1_000)
        let decades = (Self.floor.logarithm / 10.0.logarithm).rounded(.down)...(maxWait.logarithm / 10.0.logarithm).rounded(.up)
        let lowest = Self.pow10(decades.lowerBound), highest = Self.pow10(decades.upperBound)
        func x(_ rate: Double) -> Double { left + (rate - minRate) / (maxRate - minRate) * (width - left - right) }
        func y(_ wait: Double) -> Double {
            guard wait > 0 else { return zeroRow }
            let value = max(wait, lowest)
            return waitTop + (1 - (value.logarithm - lowest.logarithm) / (highest.logarithm - lowest.logarithm)) * (waitBottom - waitTop)
        }
        let maxFlow = Self.niceCeiling(max(1, self.series.flatMap { $0.points.flatMap { [$0.goodput, $0.rejected] } }.max() ?? 1))
        func yFlow(_ value: Double) -> Double { flowBottom - value / maxFlow * (flowBottom - flowTop) }

        var parts = [
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">",
            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            "<text x=\"\(left)\" y=\"24\" font-size=\"15\">\(Self.escape(self.title))</text>",
            "<text x=\"\(left)\" y=\"\(waitTop - 8)\" fill=\"#444\">pool wait p99, the worst lane (ms, logarithmic; ▲ = cut at the lane's waitTimeout, the wait is at least this)</text>",
        ]
        // Upper panel: axes, decades, the 0 row.
        parts.append(Self.line(left, waitBottom, width - right, waitBottom, "black"))
        parts.append(Self.line(left, waitTop, left, zeroRow + 8, "black"))
        var tick = lowest
        while tick <= highest * 1.0001 {
            parts.append(Self.line(left - 4, y(tick), width - right, y(tick), "#e4e4e4"))
            parts.append(Self.text(left - 8, y(tick) + 4, Self.label(milliseconds: tick), anchor: "end"))
            tick *= 10
        }
        parts.append(Self.line(left - 4, zeroRow, width - right, zeroRow, "#e4e4e4"))
        parts.append(Self.text(left - 8, zeroRow + 4, "0", anchor: "end"))
        parts.append("<path d=\"M \(left - 6) \(waitBottom + 8) l 12 -4 M \(left - 6) \(waitBottom + 12) l 12 -4\" stroke=\"black\"/>")
        // The waits marked, and where each design crosses them: a ring on the line, and a
        // table in the margin.
        var margin = waitTop + 10
        for (index, series) in self.series.enumerated() {
            parts.append(Self.text(width - right + 10, margin + Double(index) * 17, series.design.rawValue,
                                   fill: Self.colors[series.design] ?? "black", size: 13))
        }
        margin += Double(self.series.count) * 17 + 14
        for marked in self.lines {
            parts.append(Self.line(left, y(marked.wait), width - right, y(marked.wait), "#666", dash: "6 4"))
            parts.append(Self.text(left + 6, y(marked.wait) - 5, marked.name, fill: "#666"))
            parts.append(Self.text(width - right + 10, margin, "crosses \(Self.label(milliseconds: marked.wait)) ms at", fill: "#444"))
            margin += 15
            for series in self.series {
                let color = Self.colors[series.design] ?? "black"
                let rate = series.crossing(marked.wait)
                parts.append(Self.text(width - right + 18, margin, "\(series.design.rawValue): " + (rate.map { "\(Self.format($0))×" } ?? "never"), fill: color))
                margin += 15
                guard let rate else { continue }
                parts.append("<circle cx=\"\(x(rate))\" cy=\"\(y(marked.wait))\" r=\"5\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>")
            }
            margin += 8
        }
        // Lower panel: goodput (solid) and rejected (dashed), requests per second.
        parts.append("<text x=\"\(left)\" y=\"\(flowTop - 12)\" fill=\"#444\">requests per second: served (solid), rejected (dashed)</text>")
        parts.append(Self.line(left, flowBottom, width - right, flowBottom, "black"))
        parts.append(Self.line(left, flowTop, left, flowBottom, "black"))
        for step in 0...4 {
            let value = maxFlow * Double(step) / 4
            parts.append(Self.line(left - 4, yFlow(value), width - right, yFlow(value), "#e4e4e4"))
            parts.append(Self.text(left - 8, yFlow(value) + 4, Self.format(value), anchor: "end"))
        }
        for rate in Set(rates).sorted() {
            parts.append(Self.text(x(rate), flowBottom + 16, "\(Self.format(rate))×", anchor: "middle", size: 10))
            parts.append(Self.line(x(rate), flowBottom, x(rate), flowBottom + 4, "black"))
        }
        parts.append(Self.text((left + width - right) / 2, height - 16, "arrival rate (× the scenario's" + (self.rateUnit.map { "; \($0)" } ?? "") + ")", anchor: "middle"))
        // The series.
        for series in self.series {
            let color = Self.colors[series.design] ?? "black"
            let waits = series.points.map { "\(x($0.rate)),\(y($0.waitP99))" }.joined(separator: " ")
            parts.append("<polyline points=\"\(waits)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>")
            for point in series.points {
                if point.capped {
                    let (px, py) = (x(point.rate), y(point.waitP99))
                    parts.append("<path d=\"M \(px - 5) \(py + 4) L \(px) \(py - 5) L \(px + 5) \(py + 4) Z\" fill=\"\(color)\"/>")
                } else {
                    parts.append("<circle cx=\"\(x(point.rate))\" cy=\"\(y(point.waitP99))\" r=\"3\" fill=\"\(color)\"/>")
                }
            }
            let served = series.points.map { "\(x($0.rate)),\(yFlow($0.goodput))" }.joined(separator: " ")
            let rejected = series.points.map { "\(x($0.rate)),\(yFlow($0.rejected))" }.joined(separator: " ")
            parts.append("<polyline points=\"\(served)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>")
            parts.append("<polyline points=\"\(rejected)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>")
        }
        parts.append("</svg>")
        return parts.joined(separator: "\n")
    }

    static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, _ stroke: String, dash: String? = nil) -> String {
        "<line x1=\"\(x1)\" y1=\"\(y1)\" x2=\"\(x2)\" y2=\"\(y2)\" stroke=\"\(stroke)\"" + (dash.map { " stroke-dasharray=\"\($0)\"" } ?? "") + "/>"
    }

    static func text(_ x: Double, _ y: Double, _ text: String, anchor: String = "start", fill: String = "black", size: Int = 12) -> String {
        "<text x=\"\(x)\" y=\"\(y)\" text-anchor=\"\(anchor)\" fill=\"\(fill)\" font-size=\"\(size)\">\(Self.escape(text))</text>"
    }

    static func label(milliseconds: Double) -> String {
        milliseconds >= 1_000 ? "\(Self.format(milliseconds / 1_000)) s" : Self.format(milliseconds)
    }

    /// At most two decimals, none when whole: 0.25, 1.5, 10.
    public static func format(_ value: Double) -> String {
        guard value.isFinite, abs(value) < 1e15 else { return Figures.format(value) }
        var text = String(format: "%.2f", value)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text == "-0" ? "0" : text
    }

    /// 10 to the power `exponent`, exact for whole exponents.
    static func pow10(_ exponent: Double) -> Double { Double("1e\(Int(exponent))") ?? 1 }

    /// 1, 2 or 5 times a power of ten, at or above `value`.
    static func niceCeiling(_ value: Double) -> Double {
        let decade = Self.pow10((value.logarithm / 10.0.logarithm).rounded(.down))
        return [1.0, 2, 5, 10].map { $0 * decade }.first { $0 >= value * 0.999 } ?? 10 * decade
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}

