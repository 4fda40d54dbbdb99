/// An SVG line chart of pool wait p99 against arrival rate, one line per design.
public struct WaitChart: Sendable {
    /// One design's points: (rate factor, wait p99 in milliseconds).
    public struct Series: Sendable {
        /// The design.
        public var design: DesignKind
        /// Its points, by increasing rate.
        public var points: [(rate: Double, waitP99: Double)]

        /// Creates a series.
        public init(design: DesignKind, points: [(rate: Double, waitP99: Double)]) {
            self.design = design
            self.points = points
        }
    }

    /// The chart's title.
    public var title: String
    /// One line per design.
    public var series: [Series]

    /// Creates a chart.
    public init(title: String, series: [Series]) {
        self.title = title
        self.series = series
    }

    /// The chart; the wait axis is logarithmic (1 ms to the largest wait), with the 50 ms
    /// incident line.
    public var svg: String {
        let width = 720.0, height = 420.0, left = 70.0, right = 150.0, top = 40.0, bottom = 50.0
        let rates = self.series.flatMap { $0.points.map(\.rate) }
        let minRate = rates.min() ?? 0, maxRate = max(rates.max() ?? 1, minRate + 1e-9)
        let maxWait = max(100, self.series.flatMap { $0.points.map(\.waitP99) }.max() ?? 100)
        let floor = 1.0
        func x(_ rate: Double) -> Double { left + (rate - minRate) / (maxRate - minRate) * (width - left - right) }
        func y(_ wait: Double) -> Double {
            let value = max(wait, floor)
            return top + (1 - (value.logarithm - floor.logarithm) / (maxWait.logarithm - floor.logarithm)) * (height - top - bottom)
        }
        let colors: [DesignKind: String] = [.naive: "#d62728", .windows: "#ff7f0e", .lifeguard: "#2ca02c"]
        var parts = [
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">",
            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            "<text x=\"\(left)\" y=\"22\" font-size=\"15\">\(Self.escape(self.title))</text>",
            "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"black\"/>",
            "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>",
            "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">arrival rate (× the scenario's)</text>",
            "<text x=\"16\" y=\"\((top + height - bottom) / 2)\" transform=\"rotate(-90 16 \((top + height - bottom) / 2))\" text-anchor=\"middle\">pool wait p99 (ms, log)</text>",
        ]
        var tick = 1.0
        while tick <= maxWait * 1.0001 {
            parts.append("<line x1=\"\(left - 4)\" y1=\"\(y(tick))\" x2=\"\(width - right)\" y2=\"\(y(tick))\" stroke=\"#ddd\"/>")
            parts.append("<text x=\"\(left - 8)\" y=\"\(y(tick) + 4)\" text-anchor=\"end\">\(Sizing.format(tick))</text>")
            tick *= 10
        }
        for rate in Set(rates).sorted() {
            parts.append("<text x=\"\(x(rate))\" y=\"\(height - bottom + 16)\" text-anchor=\"middle\">\(Sizing.format(rate))×</text>")
        }
        parts.append(
            "<line x1=\"\(left)\" y1=\"\(y(50))\" x2=\"\(width - right)\" y2=\"\(y(50))\" stroke=\"#888\" stroke-dasharray=\"6 4\"/>"
                + "<text x=\"\(width - right + 6)\" y=\"\(y(50) + 4)\" fill=\"#888\">50 ms incident</text>")
        for (index, series) in self.series.enumerated() {
            let color = colors[series.design] ?? "black"
            let path = series.points.map { "\(x($0.rate)),\(y($0.waitP99))" }.joined(separator: " ")
            parts.append("<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>")
            for point in series.points {
                parts.append("<circle cx=\"\(x(point.rate))\" cy=\"\(y(point.waitP99))\" r=\"3\" fill=\"\(color)\"/>")
            }
            parts.append("<text x=\"\(width - right + 6)\" y=\"\(top + 20 + Double(index) * 18)\" fill=\"\(color)\">\(series.design.rawValue)</text>")
        }
        parts.append("</svg>")
        return parts.joined(separator: "\n")
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}
