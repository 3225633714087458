import Foundation
import Synchronization
import Testing
@testable import SluiceCore

/// SA state in the shared arena as a worker process will see it (doc/compartments.md): the
/// supervisor's objects own the cells and the store; a worker's views map the same memfd a
/// second time, at another address, as another process would, and can only ask.
@Suite("Shared SA state: supervisor and worker views")
struct SharedStateTests {
    static func config(_ d: Direction, window: Int = 64) -> SAConfig {
        SAConfig(name: "s", direction: d, spi: 0x42, mode: .tunnel, local: IPAddress("192.0.2.1")!,
                 remote: IPAddress("192.0.2.2")!, proposal: .aes128gcm16, keyMaterial: SecretBytes(TestPackets.pattern(20)),
                 replayWindow: window)
    }

    /// The supervisor's end of the channel: what the worker views asked for.
    final class Asks: @unchecked Sendable {
        let lock = NSLock()
        var keys: [SAStateKey] = []
        var marks: [(UInt64, UInt64)] = []
        func add(_ k: SAStateKey) { lock.withLock { keys.append(k) } }
        func add(_ m: UInt64, _ c: UInt64) { lock.withLock { marks.append((m, c)) } }
        var count: Int { lock.withLock { keys.count + marks.count } }
    }

    @Test("a worker's view takes from the supervisor's counter, asks at half a block, and never goes past the reservation")
    func outboundView() throws {
        let arena = try SharedArena(cells: 16)
        let store = MemoryStore()
        let owner = try OutboundSequence(Self.config(.outbound), store: store, writer: nil, block: 100, arena: arena)
        try owner.prime()
        #expect(owner.reservedThrough == 100)
        let mapping = try SharedArena(mapping: arena.fd, cells: 16)
        let asks = Asks()
        let view = OutboundSequence(viewing: try #require(SharedCell(viewing: owner.cellIndex, of: mapping)), key: owner.key,
                                    maxSequence: UInt64(UInt32.max), block: 100, ask: { asks.add($0) })
        let lastCell = try! SharedCell(in: .process); let last = lastCell.cell.counter(0)
        var taken: [UInt64] = []
        for _ in 0..<49 { taken.append(try view.take(lastTaken: last) {}) }
        #expect(asks.count == 0, "49 of 100 used: no need to ask yet")
        taken.append(try view.take(lastTaken: last) {})   // 50: half a block left
        for _ in 0..<50 { taken.append(try view.take(lastTaken: last) {}) }
        #expect(asks.keys == [owner.key], "asked once, not once per packet")
        #expect(taken == Array(1...100) && owner.current == 100, "the supervisor's object sees the worker's numbers")
        // The supervisor has not written yet: the view drops rather than outrun the disk.
        #expect(throws: DropReason.stateError) { try view.take(lastTaken: last) {} }
        try owner.prime()   // what the supervisor does for the ask
        #expect(store.record(owner.key)?.mark == 201 && view.reservedThrough == 201)
        #expect(try view.take(lastTaken: last) {} == 102, "101 was burnt by the refused packet, never sent")
    }

    @Test("two workers' views on one SA: every number once, across both")
    func twoViews() throws {
        let arena = try SharedArena(cells: 16)
        let owner = try OutboundSequence(Self.config(.outbound), store: MemoryStore(), writer: nil, block: 1 << 20, arena: arena)
        try owner.prime()
        let maps = try (0..<2).map { _ in try SharedArena(mapping: arena.fd, cells: 16) }
        let views = try maps.map { m in
            OutboundSequence(viewing: try #require(SharedCell(viewing: owner.cellIndex, of: m)), key: owner.key,
                             maxSequence: UInt64(UInt32.max), block: 1 << 20, ask: { _ in })
        }
        final class Box: @unchecked Sendable { var taken: [[UInt64]] = [[], []] }
        let box = Box()
        let group = DispatchGroup()
        for (i, v) in views.enumerated() {
            group.enter()
            Thread {
                let lastCell = try! SharedCell(in: .process); let last = lastCell.cell.counter(0)
                var mine: [UInt64] = []
                for _ in 0..<100_000 { if let s = try? v.take(lastTaken: last, exhausted: {}) { mine.append(s) } }
                box.taken[i] = mine
                group.leave()
            }.start()
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        let all = box.taken[0] + box.taken[1]
        #expect(all.count == 200_000 && Set(all).count == 200_000 && all.max() == 200_000)
    }

    @Test("a counter moved back is caught by the next take: the SA stops sealing and says why")
    func rewindIsAFault() throws {
        let arena = try SharedArena(cells: 4)
        let failures = Mutex<[String]>([])
        let seq = try OutboundSequence(Self.config(.outbound), store: MemoryStore(), writer: nil, block: 1000, arena: arena,
                                       onFailure: { m in failures.withLock { $0.append(m) } })
        try seq.prime()
        let lastCell = try! SharedCell(in: .process); let last = lastCell.cell.counter(0)
        for _ in 0..<10 { _ = try seq.take(lastTaken: last) {} }
        seq.state.cell.store(OutboundSequence.nextWord, 3)   // a corrupted worker writes over it
        #expect(throws: DropReason.sequenceFault) { try seq.take(lastTaken: last) {} }
        seq.state.cell.store(OutboundSequence.nextWord, 500)
        #expect(throws: DropReason.sequenceFault, "stays stopped") { try seq.take(lastTaken: last) {} }
        let logged = failures.withLock { $0 }
        #expect(logged.count == 1 && logged[0].contains("went back") && seq.isFaulted)
    }

    @Test("an inbound view asks for marks, waits for a jump to be durable, and a restarted view refuses replays")
    func inboundView() throws {
        let arena = try SharedArena(cells: 16)
        let store = MemoryStore()
        let owner = try InboundReplay(Self.config(.inbound), store: store, writer: nil, interval: 100, arena: arena)
        try owner.prime()
        #expect(owner.durableMark == 100)
        let asks = Asks()
        func view(restart: Bool) throws -> InboundReplay {
            let m = try SharedArena(mapping: arena.fd, cells: 16)
            return InboundReplay(viewing: try #require(SharedCell(viewing: owner.cellIndex, of: m)), key: owner.key,
                                 windowSize: 64, start: owner.handover(afterWorkerDeath: restart), interval: 100,
                                 ask: { _, mark, confirmed in
                                     asks.add(mark, confirmed)
                                     // The supervisor, on its own thread, writes what was asked.
                                     Thread { try? owner.persistAsked(mark: mark, confirmed: confirmed) }.start()
                                 })
        }
        let w = try view(restart: false)
        for s in UInt64(1)...40 { #expect(w.update(s) == nil) }
        #expect(asks.count == 0)
        #expect(w.update(60) == nil, "half the interval left: asked ahead")
        #expect(asks.count == 1)
        #expect(w.update(500) == nil, "a jump past the mark waits until the supervisor made it durable")
        #expect(owner.durableMark >= 500 && owner.top == 500, "the supervisor reads the worker's top from the cell")
        #expect(w.update(500) == .replay)
        // The worker dies; its successor starts above the durable mark.
        let again = try view(restart: true)
        let mark = owner.durableMark
        #expect(again.precheck(low: 499, esn: false).refusal == .replay, "accepted before the restart: refused")
        #expect(again.precheck(low: UInt32(mark), esn: false).refusal == .replayAfterRestart, "maybe new, but at or below the mark")
        #expect(again.precheck(low: UInt32(mark + 1), esn: false).refusal == nil)
    }

    @Test("an inbound view whose ask is never answered refuses the packet (state_error) and asks again later")
    func inboundViewUnanswered() throws {
        let arena = try SharedArena(cells: 4)
        let owner = try InboundReplay(Self.config(.inbound), store: MemoryStore(), writer: nil, interval: 10, arena: arena)
        try owner.prime()
        let asks = Asks()
        let m = try SharedArena(mapping: arena.fd, cells: 4)
        let w = InboundReplay(viewing: try #require(SharedCell(viewing: owner.cellIndex, of: m)), key: owner.key,
                              windowSize: 64, start: owner.handover(afterWorkerDeath: false), interval: 10, ask: { _, mark, c in asks.add(mark, c) })
        #expect(w.update(50) == .stateError)
        #expect(w.update(50) == .stateError)
        #expect(asks.count == 2, "each refused packet asks again")
        #expect(owner.durableMark == 10)
    }

    @Test("SA counters and their lanes: a worker's view adds to the supervisor's cells; bad indices are refused")
    func counterViews() throws {
        let arena = try SharedArena(cells: 16)
        let sa = try SecurityAssociation(config: Self.config(.outbound), lanes: 2, arena: arena)
        let m = try SharedArena(mapping: arena.fd, cells: 16)
        let view = try #require(SACounters(viewing: sa.counters.cellIndices, of: m))
        view.add(.packets, lane: 1, 5)
        view.add(.bytes, lane: 0, 700)
        view.add(.icvFailures, lane: 1)
        #expect(sa.counters.packets == 5 && sa.counters.bytes == 700 && sa.counters.icvFailures == 1)
        #expect(SACounters(viewing: [3, 16], of: m) == nil && SACounters(viewing: [], of: m) == nil)
        #expect(SharedCell(viewing: -1, of: m) == nil)
    }

    @Test("cells go back to the arena with their SA object, and a full arena is a clear error")
    func cellLifetime() throws {
        let arena = try SharedArena(cells: 6)
        do {
            let sa = try SecurityAssociation(config: Self.config(.outbound), lanes: 2, arena: arena)
            #expect(arena.cellsInUse == 3, "two lanes and the sequence counter")
            _ = sa
        }
        #expect(arena.cellsInUse == 0)
        let keep = try (0..<2).map { _ in try SecurityAssociation(config: Self.config(.outbound), lanes: 2, arena: arena) }
        #expect(throws: SharedCell.Exhausted.self) { try SecurityAssociation(config: Self.config(.inbound), lanes: 2, arena: arena) }
        #expect("\(SharedCell.Exhausted(cells: 6))".contains("full"))
        _ = keep
    }
}
