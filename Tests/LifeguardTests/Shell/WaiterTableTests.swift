import Testing
@testable import Lifeguard

@Suite("Waiter table")
struct WaiterTableTests {
    @Test("inserts and removals in random order agree with a dictionary, across growth and colliding identities")
    func agreesWithDictionary() {
        var table = WaiterTable<Int>(capacity: 4)
        var reference: [Int: Int] = [:]
        var random = SplitMix64(seed: 7)
        var nextID = 0
        for step in 0..<20_000 {
            let roll = random.next() % 10
            if roll < 5 || reference.isEmpty {
                // Mostly consecutive identities, some far ahead: they collide modulo the size.
                let id = roll == 0 ? nextID + 16 * Int(random.next() % 64) + 1 : nextID
                nextID = max(nextID, id) + 1
                table.insert(step, for: WaiterID(value: id))
                reference[id] = step
            } else if roll < 9 {
                // The oldest, as a queue serves, or any, as a cancellation removes.
                let id = roll < 7 ? reference.keys.min()! : Array(reference.keys)[Int(random.next() % UInt64(reference.count))]
                #expect(table.remove(WaiterID(value: id)) == reference.removeValue(forKey: id))
            } else {
                // An identity that is not stored.
                #expect(table.remove(WaiterID(value: nextID + 1_000_003)) == nil)
            }
            #expect(table.count == reference.count)
        }
        for (id, value) in reference {
            #expect(table.remove(WaiterID(value: id)) == value)
        }
        #expect(table.count == 0)
        #expect(table.entries.allSatisfy { $0.key == -1 })
    }
}
