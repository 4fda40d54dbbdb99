import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Lifeguard
@testable import LifeguardLab
import Testing

/// What must hold of every simulation, whatever the scenario, design and load: every request
/// that arrived ends exactly once, nothing stays leased or queued, a closed loop never has more
/// requests in flight than users.
@Suite("Simulator invariants")
struct SimulatorInvariantTests {
    static let cases: [(String, DesignKind, Double)] = Scenario.names.flatMap { name in
        DesignKind.allCases.flatMap { design in [0.5, 3].map { (name, design, $0) } }
    }

    @Test("every request ends once, as completed, failed or cancelled, and the pool is left with nothing leased or queued",
          arguments: Self.cases)
    func conservation(name: String, design: DesignKind, load: Double) {
        var scenario = Scenario.named(name)!.scaled(by: load)
        scenario.duration = 3
        var simulator = Simulator(scenario: scenario, design: design)
        let result = simulator.run()
        let ended = result.completed + result.failedRequests.values.reduce(0, +) + result.cancelledRequests
        #expect(ended == simulator.nextRequest, "\(name) \(design) at \(load)×: \(simulator.nextRequest) arrived, \(ended) ended")
        #expect(simulator.requests.isEmpty)
        #expect(result.leaked == 0)
        #expect(simulator.machine.status.leased == 0)
        #expect(simulator.machine.status.waiters == 0)
        #expect(result.throughputPerSecond <= Double(result.completed) / scenario.duration + 1e-9)
        #expect((0...1).contains(result.rejectedFraction))
    }

    @Test("a closed loop never has more requests in flight than users, and each user keeps asking", arguments: [1, 7, 40])
    func closedLoopBound(users: Int) {
        var scenario = Scenario.named("rag")!
        scenario.duration = 5
        scenario.closedLoop = .init(users: users, think: .constant(0.05))
        var simulator = Simulator(scenario: scenario, design: .lifeguard)
        let result = simulator.run()
        #expect(simulator.mostInFlight <= users)
        #expect(simulator.mostInFlight == users || users > 7, "with few users each has a request in flight at some instant")
        // A request takes well under 5 s here: every user came back many times.
        #expect(result.completed >= users * 2)
    }

    @Test("the chart's SVG is one well-formed document, with every design's points and both crossings named")
    func chartIsWellFormed() throws {
        var base = Scenario.named("retrieval-burst")!
        base.duration = 2
        let rates = [0.5, 1, 2, 3]
        let series = DesignKind.allCases.map { design in
            WaitChart.Series(design: design, points: rates.map { rate in
                var simulator = Simulator(scenario: base.scaled(by: rate), design: design)
                let result = simulator.run()
                return WaitChart.Point(rate: rate, result: result, duration: base.duration, waitTimeouts: ["retrieval": 500, "all": 500])
            })
        }
        let svg = WaitChart(title: "retrieval-burst <test> & more", series: series).svg
        let document = try XMLDocument(xmlString: svg)
        #expect(document.rootElement()?.name == "svg")
        for design in DesignKind.allCases {
            #expect(svg.contains(">\(design.rawValue)<"))
        }
        #expect(svg.contains("crosses 50 ms at"))
        #expect(svg.contains("crosses 500 ms at"))
        #expect(svg.contains("&lt;test> &amp; more"), "the title is escaped")
        let polylines = svg.components(separatedBy: "<polyline").count - 1
        #expect(polylines == 3 * DesignKind.allCases.count, "a wait, a served and a rejected line per design")
    }

    @Test("a crossing is interpolated between the points around it, on the logarithm of the wait")
    func crossingInterpolates() {
        let series = WaitChart.Series(design: .windows, points: [
            .init(rate: 1, waitP99: 10, capped: false, goodput: 1, rejected: 0),
            .init(rate: 2, waitP99: 1_000, capped: false, goodput: 1, rejected: 0),
        ])
        #expect(abs(series.crossing(100)! - 1.5) < 1e-9, "100 ms is halfway between 10 and 1,000 on a log scale")
        #expect(series.crossing(5) == 1, "already above at the first point")
        #expect(series.crossing(5_000) == nil)
    }
}
