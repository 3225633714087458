import Foundation
import Testing
@testable import SluiceCore

/// The arena the supervisor shares with worker processes (doc/compartments.md). A second
/// mapping of the same memfd stands in for a worker: what holds between two mappings at
/// different addresses holds between two processes.
@Suite("Shared arena")
struct SharedArenaTests {
    @Test("two mappings are one memory: a store through one is seen through the other")
    func twoMappings() throws {
        let a = try SharedArena(cells: 4)
        let b = try SharedArena(mapping: a.fd, cells: 4)
        let ca = try #require(a.allocate()), cb = try #require(b.cell(ca.index))
        #expect(ca.words != cb.words, "different addresses")
        ca.store(3, 0xdead_beef)
        #expect(cb.load(3) == 0xdead_beef)
        #expect(cb.compareExchange(3, expected: 1, desired: 2) == (false, 0xdead_beef))
        #expect(cb.compareExchange(3, expected: 0xdead_beef, desired: 7) == (true, 0xdead_beef))
        #expect(ca.load(3) == 7)
        #expect(b.cell(4) == nil && b.cell(-1) == nil, "indices outside the arena are refused")
    }

    @Test("sequence numbers from two mappings at once: every number exactly once")
    func noNumberTwice() throws {
        let a = try SharedArena(cells: 1)
        let b = try SharedArena(mapping: a.fd, cells: 1)
        let ca = try #require(a.allocate()), cb = try #require(b.cell(0))
        let perThread = 200_000
        final class Box: @unchecked Sendable { var taken: [[UInt64]] = [[], []] }
        let box = Box()
        let group = DispatchGroup()
        for (i, cell) in [ca, cb].enumerated() {
            group.enter()
            Thread {
                var mine = [UInt64]()
                mine.reserveCapacity(perThread)
                for _ in 0..<perThread { mine.append(cell.fetchAdd(0, 1) + 1) }
                box.taken[i] = mine
                group.leave()
            }.start()
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        let all = box.taken[0] + box.taken[1]
        #expect(Set(all).count == 2 * perThread && all.max() == UInt64(2 * perThread) && ca.load(0) == UInt64(2 * perThread))
        #expect(box.taken.allSatisfy { $0 == $0.sorted() }, "each taker sees its numbers rise")
    }

    @Test("cells are handed out zeroed, given back, and a wrong descriptor is refused")
    func allocation() throws {
        let a = try SharedArena(cells: 2)
        let c1 = try #require(a.allocate()), c2 = try #require(a.allocate())
        #expect(a.allocate() == nil && a.cellsInUse == 2)
        c1.store(0, 9)
        a.release(c1)
        a.release(c1)   // twice is once
        #expect(a.cellsInUse == 1)
        let again = try #require(a.allocate())
        #expect(again.index == c1.index && again.load(0) == 0 && c2.index != c1.index)
        #expect(throws: SharedArena.ArenaError.self) { try SharedArena(mapping: a.fd, cells: 3) }
        #expect(throws: SharedArena.ArenaError.self) { try SharedArena(mapping: 9999, cells: 1) }
    }
}
