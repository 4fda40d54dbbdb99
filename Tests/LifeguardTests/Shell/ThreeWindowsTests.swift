import Testing
@testable import Lifeguard
import LifeguardTestUtils

@Suite("Three short windows (in-memory connections)", .timeLimit(.minutes(3)))
struct ThreeWindowsTests {
    @Test("retrieval is released before the generation step, which holds nothing; persistence takes a write lease")
    func windows() async throws {
        let configuration = PoolConfiguration.testing(budget: 2, lanes: [.retrieval: .patient, .write: .patient])
        try await withRunningPool(configuration) { pool, _ in
            let saved = try await pool.threeWindows(
                retrieve: { connection in
                    #expect(pool.status().lanes[.retrieval]?.leased == 1)
                    return "passages from \(connection.id)"
                },
                generate: { passages in
                    #expect(pool.status().leased == 0)
                    #expect(GenerationStep.current != nil)
                    return "answer to \(passages)"
                },
                persist: { _, answer in
                    #expect(pool.status().lanes[.write]?.leased == 1)
                    #expect(GenerationStep.current == nil)
                    return answer.count
                })
            #expect(saved > 0)
            #expect(pool.statistics().findings.isEmpty)
        }
    }

    @Test("a generation step running in one task is not seen from another; nested steps keep the outer one counted")
    func stepIsPerTask() async throws {
        let (inside, entered) = AsyncStream<Void>.makeStream()
        let (leave, left) = AsyncStream<Void>.makeStream()
        let step = Task {
            await GenerationStep.run {
                await GenerationStep.run { #expect(GenerationStep.current != nil) }
                #expect(GenerationStep.current != nil)
                entered.finish()
                for await _ in leave {}
            }
        }
        for await _ in inside {}
        #expect(GenerationStep.running.load(ordering: .relaxed) > 0)
        #expect(GenerationStep.current == nil)
        left.finish()
        await step.value
        #expect(GenerationStep.current == nil)
    }

    @Test("a lease inside the generation step is granted and reported once per call site, with both call sites")
    func warns() async throws {
        let configuration = PoolConfiguration.testing(budget: 2, lanes: [.write: .patient])
        try await withRunningPool(configuration) { pool, _ in
            try await GenerationStep.run {
                for _ in 0..<3 {
                    try await pool.withConnection(lane: .write) { _ in }
                }
            }
            let findings = pool.statistics().findings.filter { $0.kind == .leaseDuringGeneration }
            #expect(findings.count == 1)
            #expect(findings.first?.callSite.hasPrefix("LifeguardTests/ThreeWindowsTests.swift:") == true)
            #expect(findings.first?.generationStep?.hasPrefix("LifeguardTests/ThreeWindowsTests.swift:") == true)
            #expect(pool.statistics()[.write]?.generationHolds == 1)
            #expect(String(describing: findings[0]).contains("inside the generation step"))
        }
    }

    @Test("with leaseDuringGeneration = .forbid, a lease inside the generation step throws, naming both call sites")
    func forbids() async throws {
        var configuration = PoolConfiguration.testing(budget: 2, lanes: [.write: .patient])
        configuration.leaseDuringGeneration = .forbid
        try await withRunningPool(configuration) { pool, _ in
            do {
                try await GenerationStep.run {
                    try await pool.withConnection(lane: .write) { _ in }
                }
                Issue.record("expected leaseDuringGeneration")
            } catch let error as LifeguardError {
                #expect(error.code == .leaseDuringGeneration)
                #expect(String(describing: error).contains("ThreeWindowsTests.swift:"))
            }
            #expect(pool.status().leased == 0)
            // Outside the step, leases are granted as usual.
            try await pool.withConnection(lane: .write) { _ in }
        }
    }
}
