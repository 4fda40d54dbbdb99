/// The continuations of waiting requests, by waiter: an open-addressing table for the shell.
///
/// Waiter identities come from one counter and are never negative, so the identity itself,
/// masked, is a hash that spreads them evenly: no `Hasher` runs on the waiting path, where a
/// `Dictionary` spent about 700 instructions per wait hashing and probing. Collisions probe
/// linearly with Robin Hood insertion, and a removal shifts back the entries after it that are
/// away from home, so the table holds no tombstones and a removal from a long queue touches one
/// or two entries. It doubles when more than half full and never shrinks: its size follows the
/// longest queue the pool has seen.
@usableFromInline
struct WaiterTable<Value> {
    @usableFromInline
    struct Entry {
        /// The waiter's identity, or `-1` for an empty entry.
        @usableFromInline var key: Int
        @usableFromInline var value: Value?

        @usableFromInline init(key: Int, value: Value?) {
            self.key = key
            self.value = value
        }
    }

    @usableFromInline var entries: [Entry]
    @usableFromInline var count = 0

    @usableFromInline
    init(capacity: Int = 64) {
        var size = 16
        while size < capacity * 2 { size *= 2 }
        self.entries = Array(repeating: Entry(key: -1, value: nil), count: size)
    }

    @inlinable var mask: Int { self.entries.count - 1 }

    /// How far the entry at `index` sits from its home (where its identity points).
    @inlinable
    func distance(at index: Int) -> Int {
        (index &- self.entries[index].key) & self.mask
    }

    /// Stores `value` for `id`, which must not be stored already.
    ///
    /// Robin Hood insertion: an entry passing one that is closer to its home takes that place,
    /// and the other moves on. Probe runs stay short and ordered, so lookups and removals stop
    /// early.
    @inlinable
    mutating func insert(_ value: Value, for id: WaiterID) {
        if (self.count + 1) * 2 > self.entries.count {
            self.grow()
        }
        let mask = self.mask
        var carried = Entry(key: id.value, value: value)
        var index = id.value & mask
        var distance = 0
        while self.entries[index].key != -1 {
            let theirs = self.distance(at: index)
            if theirs < distance {
                swap(&carried, &self.entries[index])
                distance = theirs
            }
            index = (index &+ 1) & mask
            distance += 1
        }
        self.entries[index] = carried
        self.count += 1
    }

    /// Takes out and returns the value stored for `id`, if any.
    @inlinable
    mutating func remove(_ id: WaiterID) -> Value? {
        let mask = self.mask
        var index = id.value & mask
        var distance = 0
        while self.entries[index].key != id.value {
            // An empty entry, or one closer to its home than `id` would be: `id` is not here.
            if self.entries[index].key == -1 || self.distance(at: index) < distance { return nil }
            index = (index &+ 1) & mask
            distance += 1
        }
        let value = self.entries[index].value.take()
        self.count -= 1
        // Shift back the entries after the hole that are away from their home.
        var hole = index
        var next = (hole &+ 1) & mask
        while self.entries[next].key != -1 && self.distance(at: next) > 0 {
            self.entries.swapAt(hole, next)
            hole = next
            next = (next &+ 1) & mask
        }
        self.entries[hole].key = -1
        return value
    }

    @usableFromInline
    mutating func grow() {
        let old = self.entries
        self.entries = Array(repeating: Entry(key: -1, value: nil), count: old.count * 2)
        self.count = 0
        for entry in old where entry.key != -1 {
            self.insert(entry.value!, for: WaiterID(value: entry.key))
        }
    }
}
