import Foundation
import Synchronization
import Testing
@testable import SluiceCore

/// A store in memory that behaves like the file store: records by key, refuses to go backwards.
final class MemoryStore: SAStateStore, @unchecked Sendable {
    private let lock = NSLock()
    private var records: [SAStateKey: SAStateRecord] = [:]
    var saves = 0
    func load(_ key: SAStateKey, legacyName: String) throws -> SAStateRecord? { lock.withLock { records[key] } }
    func save(_ key: SAStateKey, _ r: SAStateRecord) throws {
        try lock.withLock {
            if let old = records[key], r.confirmed < old.confirmed || (!r.clean && r.mark < old.mark) {
                throw VectorError("backwards")
            }
            records[key] = r
            saves += 1
        }
    }
    func record(_ key: SAStateKey) -> SAStateRecord? { lock.withLock { records[key] } }
}

/// Runs jobs when told to, so tests decide when the "background" write happens.
final class ManualWriter: DeferredWriter, @unchecked Sendable {
    private let lock = NSLock()
    private var jobs: [@Sendable () -> Void] = []
    func submit(_ key: SAStateKey, _ job: @escaping @Sendable () -> Void) -> Bool { lock.withLock { jobs.append(job) }; return true }
    func runAll() { let j = lock.withLock { defer { jobs = [] }; return jobs }; j.forEach { $0() } }
    var count: Int { lock.withLock { jobs.count } }
}

enum Fixture {
    static let key = SecretBytes(TestPackets.pattern(20, seed: 9))
    static func sa(_ name: String, _ d: Direction, spi: UInt32 = 0x1001, key: SecretBytes = key, mtu: Int = 1500,
                   window: Int = 64) -> SAConfig {
        let (l, r) = d == .outbound ? ("192.0.2.1", "192.0.2.2") : ("192.0.2.2", "192.0.2.1")
        return SAConfig(name: name, direction: d, spi: spi, mode: .tunnel, local: IPAddress(l)!, remote: IPAddress(r)!,
                        proposal: .aes128gcm16, keyMaterial: key, replayWindow: window, mtu: mtu)
    }
    static let selector = TrafficSelector(src: IPPrefix("198.51.100.0/24"), dst: IPPrefix("203.0.113.0/24"))
    static func packet(_ i: Int = 0) -> [UInt8] {
        TestPackets.ipv4(src: "198.51.100.7", dst: "203.0.113.9", proto: IPProto.udp,
                         payload: TestPackets.udp(sport: 5000, dport: 53, data: TestPackets.pattern(40, seed: i & 0xff)))
    }
    /// Seals one packet with `db` and returns the ESP bytes.
    static func seal(_ db: SecurityDatabase, _ i: Int = 0) -> (Outcome, [UInt8]) {
        var b = PacketBuffer(packet(i))
        let o = PacketProcessor.process(&b, database: db, context: .init())
        return (o, b.bytes)
    }
    static func open(_ db: SecurityDatabase, _ esp: [UInt8]) -> Outcome {
        var b = PacketBuffer(esp)
        return PacketProcessor.process(&b, database: db, context: .init())
    }
    static func seq(_ esp: [UInt8]) -> UInt32 { UInt32(esp[24]) << 24 | UInt32(esp[25]) << 16 | UInt32(esp[26]) << 8 | UInt32(esp[27]) }
}

@Suite("SA manager and state continuity")
struct SAManagerTests {
    func outPolicy(_ sas: [String]) -> Policy { Policy(direction: .outbound, selector: Fixture.selector, action: .protect(sas: sas)) }
    func inPolicy(_ sas: [String]) -> Policy { Policy(direction: .inbound, selector: Fixture.selector, action: .protect(sas: sas)) }

    @Test("a reload that changes mtu keeps one sequence counter: old and new SA objects never send the same number")
    func sequenceSharedAcrossChange() throws {
        let store = MemoryStore()
        let m = SAManager(settings: .init(reserveBlock: 8), store: store)
        m.commit(try m.prepare(associations: [Fixture.sa("o", .outbound)], policies: [outPolicy(["o"])]))
        let oldDB = m.database
        var seen: Set<UInt32> = []
        for i in 0..<5 { let (o, esp) = Fixture.seal(oldDB, i); #expect(o == .sealed); seen.insert(Fixture.seq(esp)) }
        let plan = try m.prepare(associations: [Fixture.sa("o", .outbound, mtu: 1400)], policies: [outPolicy(["o"])])
        #expect(plan.changed == ["o"])
        m.commit(plan)
        let newDB = m.database
        #expect(newDB.association(named: "o") !== oldDB.association(named: "o"))
        // Workers still finishing a batch on the old snapshot, interleaved with the new one, across block ends.
        for i in 0..<40 {
            let (o, esp) = Fixture.seal(i % 2 == 0 ? oldDB : newDB, i)
            #expect(o == .sealed)
            #expect(seen.insert(Fixture.seq(esp)).inserted, "sequence \(Fixture.seq(esp)) sent twice")
        }
        #expect(seen.count == 45)
        // The durable mark covers every number sent.
        #expect(store.record(SAStateKey(Fixture.sa("o", .outbound)))!.mark >= 45)
    }

    @Test("renaming an SA with the same key continues its counter from disk; a new key starts a new record")
    func stateFollowsKeyNotName() throws {
        let store = MemoryStore()
        do {
            let m = SAManager(settings: .init(reserveBlock: 100), store: store)
            m.commit(try m.prepare(associations: [Fixture.sa("o", .outbound)], policies: [outPolicy(["o"])]))
            for i in 0..<3 { _ = Fixture.seal(m.database, i) }
        }
        // A new process (restart): the record is found by SPI, peer and key, whatever the name.
        let m = SAManager(settings: .init(reserveBlock: 100), store: store)
        m.commit(try m.prepare(associations: [Fixture.sa("renamed", .outbound)], policies: [outPolicy(["renamed"])]))
        let (_, esp) = Fixture.seal(m.database)
        #expect(Fixture.seq(esp) > 100, "continues above the reserved block")
        let fresh = Fixture.sa("k2", .outbound, key: SecretBytes(TestPackets.pattern(20, seed: 1)))
        #expect(SAStateKey(fresh) != SAStateKey(Fixture.sa("renamed", .outbound)))
        #expect(!SAStateKey(fresh).stem.contains("k2"), "file names carry no SA name")
    }

    @Test("sequence blocks are reserved ahead on the writer; a worker writes itself only when it outruns it")
    func reservationAhead() throws {
        let store = MemoryStore()
        let writer = ManualWriter()
        let m = SAManager(settings: .init(reserveBlock: 10), store: store, writer: writer)
        m.commit(try m.prepare(associations: [Fixture.sa("o", .outbound)], policies: [outPolicy(["o"])]))
        #expect(store.saves == 1, "primed at install, before any packet")
        for i in 0..<6 { _ = Fixture.seal(m.database, i) }
        #expect(writer.count == 1, "asked once, below half a block left")
        #expect(store.saves == 1, "the worker did not write")
        writer.runAll()
        #expect(store.saves == 2)
        #expect(m.database.association(named: "o")!.sequence!.reservedThrough == 20)
        // The writer stalls: the worker covers itself rather than send an unreserved number.
        for i in 0..<20 { #expect(Fixture.seal(m.database, i).0 == .sealed) }
        #expect(m.database.association(named: "o")!.sequence!.reservedThrough >= 26)
    }

    @Test("inbound: after a crash the window restarts at the durable mark; after a clean stop at the exact top")
    func replayContinuity() throws {
        let store = MemoryStore()
        let writer = ManualWriter()
        func pair(_ interval: UInt64) throws -> (SAManager, SAManager) {
            let tx = SAManager(settings: .init(), store: MemoryStore())
            tx.commit(try tx.prepare(associations: [Fixture.sa("o", .outbound)], policies: [outPolicy(["o"])]))
            let rx = SAManager(settings: .init(replayMarkInterval: interval), store: store, writer: writer)
            rx.commit(try rx.prepare(associations: [Fixture.sa("i", .inbound)], policies: [inPolicy(["i"])]))
            return (tx, rx)
        }
        let (tx, rx) = try pair(16)
        let captured = (0..<10).map { Fixture.seal(tx.database, $0).1 }
        for esp in captured { #expect(Fixture.open(rx.database, esp) == .opened) }
        writer.runAll()
        // Crash: a new manager on the same store (no persistOnStop).
        let rx2 = SAManager(settings: .init(replayMarkInterval: 16), store: store, writer: writer)
        rx2.commit(try rx2.prepare(associations: [Fixture.sa("i", .inbound)], policies: [inPolicy(["i"])]))
        var reasons: [DropReason] = []
        for esp in captured { if case let .drop(r) = Fixture.open(rx2.database, esp) { reasons.append(r) } }
        #expect(reasons.count == 10, "no captured packet is accepted after a crash")
        #expect(reasons.allSatisfy { $0 == .replay || $0 == .replayAfterRestart })
        // Above the mark, fresh packets are accepted.
        let later = (10..<60).map { Fixture.seal(tx.database, $0).1 }
        let opened = later.filter { Fixture.open(rx2.database, $0) == .opened }.count
        #expect(opened >= 50 - 32 && opened < 50, "numbers up to the mark are the price: \(opened)")
        // Clean stop: exact top; a restart then accepts the very next number.
        #expect(rx2.persistOnStop().isEmpty)
        let rx3 = SAManager(settings: .init(replayMarkInterval: 16), store: store, writer: writer)
        rx3.commit(try rx3.prepare(associations: [Fixture.sa("i", .inbound)], policies: [inPolicy(["i"])]))
        for esp in later { #expect(Fixture.open(rx3.database, esp) == .drop(.replay)) }
        #expect(Fixture.open(rx3.database, Fixture.seal(tx.database, 61).1) == .opened)
    }

    @Test("a number past the durable mark is written before it is accepted")
    func jumpWritesFirst() throws {
        let store = MemoryStore()
        let tx = SAManager(settings: .init(reserveBlock: 1 << 20), store: FixedStore(start: 100_000))
        tx.commit(try tx.prepare(associations: [Fixture.sa("o", .outbound)], policies: [outPolicy(["o"])]))
        let rx = SAManager(settings: .init(replayMarkInterval: 64), store: store, writer: ManualWriter())
        rx.commit(try rx.prepare(associations: [Fixture.sa("i", .inbound)], policies: [inPolicy(["i"])]))
        #expect(Fixture.open(rx.database, Fixture.seal(tx.database).1) == .opened)
        #expect(store.record(SAStateKey(Fixture.sa("i", .inbound)))!.mark > 100_000)
    }

    @Test("rotation: two inbound SAs with the same selectors both accept; the newest outbound SA of a set takes over")
    func rotation() throws {
        let k2 = SecretBytes(TestPackets.pattern(20, seed: 2))
        let tx = SAManager(settings: .init())
        tx.commit(try tx.prepare(associations: [Fixture.sa("old", .outbound)], policies: [outPolicy(["old"])]))
        let oldESP = Fixture.seal(tx.database).1
        tx.commit(try tx.prepare(associations: [Fixture.sa("old", .outbound), Fixture.sa("new", .outbound, spi: 0x2002, key: k2)],
                                 policies: [outPolicy(["old", "new"])]))
        let newESP = Fixture.seal(tx.database, 1).1
        #expect(newESP[20...23] == [0, 0, 0x20, 0x02], "the newer SA of the set carries traffic at once")
        // The receiver, README recipe: a second inbound SA and a second policy with the same selectors.
        let rx = SAManager(settings: .init())
        rx.commit(try rx.prepare(associations: [Fixture.sa("old", .inbound), Fixture.sa("new", .inbound, spi: 0x2002, key: k2)],
                                 policies: [inPolicy(["old"]), inPolicy(["new"])]))
        #expect(Fixture.open(rx.database, oldESP) == .opened)
        #expect(Fixture.open(rx.database, newESP) == .opened)
        // A BYPASS in front of them still ends the search: clear traffic was meant.
        let bypass = Policy(direction: .inbound, selector: Fixture.selector, action: .bypass)
        rx.commit(try rx.prepare(associations: [Fixture.sa("new", .inbound, spi: 0x2002, key: k2)], policies: [bypass, inPolicy(["new"])]))
        #expect(Fixture.open(rx.database, Fixture.seal(tx.database, 2).1) == .drop(.policyMismatch))
    }

    @Test("runtime install/remove, SPI allocation, and hard expiry: traffic dropped as no_sa, never in clear")
    func runtimeAPI() throws {
        let events = EventQueue()
        var lt = Lifetime()
        lt.hardPackets = 2
        let m = SAManager(settings: .init(), events: events)
        let id = try m.addPolicy(outPolicy(["rt"]))
        #expect(Fixture.seal(m.database).0 == .drop(.noSA))
        #expect(events.drain() == [.noSA(policy: "")])
        var c = Fixture.sa("rt", .outbound)
        c.lifetime = lt
        let sa = try m.install(c)
        #expect(Fixture.seal(m.database).0 == .sealed)
        #expect(Fixture.seal(m.database).0 == .drop(.saExpired))
        #expect(events.drain() == [.hardLifetime(sa: "rt", generation: sa.generation, what: "packets")])
        #expect(m.expire(sa: "rt", generation: sa.generation))
        #expect(Fixture.seal(m.database).0 == .drop(.noSA))
        #expect(throws: SAManager.ManagerError.keyExpired("rt")) { try m.install(c) }
        #expect(m.removePolicy(id))
        #expect(Fixture.seal(m.database).0 == .unchanged, "no policy: the default (bypass) applies")

        let spis = Mutex<[UInt32]>([300, 300, 0x1001, 5, 301])
        let alloc = SAManager(settings: .init(), random: { spis.withLock { $0.removeFirst() } })
        try alloc.install(Fixture.sa("in", .inbound))
        #expect(alloc.allocateSPI() == 300)
        #expect(alloc.allocateSPI() == 301, "300 is taken until released, 0x1001 is in use, 5 is reserved")
    }

    @Test("install and remove while workers seal: every packet sealed or dropped as no_sa, no number twice")
    func concurrentChanges() async throws {
        let m = SAManager(settings: .init(lanes: 2, reserveBlock: 64), store: MemoryStore())
        _ = try m.addPolicy(outPolicy(["a"]))
        try m.install(Fixture.sa("a", .outbound))
        final class Shared: Sendable { let seen = Mutex<[UInt32]>([]); let stop = Atomic<Bool>(false) }
        let shared = Shared()
        await withTaskGroup(of: Void.self) { group in
            for lane in 0..<2 {
                group.addTask {
                    var mine: [UInt32] = []
                    var i = 0
                    while !shared.stop.load(ordering: .relaxed) && i < 20_000 {
                        var b = PacketBuffer(Fixture.packet(i))
                        let o = PacketProcessor.process(&b, database: m.database, context: .init(lane: lane))
                        if o == .sealed { mine.append(Fixture.seq(b.bytes)) } else { #expect(o == .drop(.noSA)) }
                        i += 1
                    }
                    shared.seen.withLock { $0 += mine }
                }
            }
            group.addTask {
                for n in 0..<200 {
                    if n % 3 == 2 { m.remove(sa: "a") } else { _ = try? m.install(Fixture.sa("a", .outbound, mtu: 1400 + n % 2)) }
                }
                shared.stop.store(true, ordering: .relaxed)
            }
        }
        let all = shared.seen.withLock { $0 }
        #expect(!all.isEmpty)
        #expect(Set(all).count == all.count, "a sequence number was sent twice")
    }

    @Test("a reload replaces only the config's entries; runtime ones stay, after the config's, and the plan lists them all")
    func ownersAndPlanContents() throws {
        let m = SAManager(settings: .init())
        try m.install(Fixture.sa("ike", .outbound, spi: 0x3003), owner: .runtime("ike"))
        _ = try m.addPolicy(outPolicy(["ike"]), owner: .runtime("ike"))
        let plan = try m.prepare(associations: [Fixture.sa("o", .outbound)], policies: [outPolicy(["o"])])
        #expect(plan.policiesAfter.map(\.action) == [.protect(sa: "o"), .protect(sa: "ike")])
        #expect(Set(plan.associationsAfter.map(\.name)) == ["o", "ike"])
        m.commit(plan)
        #expect(m.database.outbound.count == 2)
        #expect(throws: SAManager.ManagerError.duplicateName("ike")) {
            try m.prepare(associations: [Fixture.sa("ike", .outbound)], policies: [])
        }
        m.commit(try m.prepare(associations: [], policies: []))
        #expect(m.database.associations.map(\.name) == ["ike"], "a reload that drops every config entry keeps the runtime ones")
    }

    @Test("the event queue never blocks: bounded, merges duplicates, counts what it drops")
    func eventQueue() {
        let q = EventQueue(capacity: 2)
        #expect(q.post(.noSA(policy: "p")))
        #expect(q.post(.noSA(policy: "p")), "merged with the pending one")
        #expect(q.post(.sequenceExhausted(sa: "x", generation: 1)))
        #expect(!q.post(.sequenceExhausted(sa: "y", generation: 2)))
        #expect(q.dropped.load(ordering: .relaxed) == 1)
        #expect(q.drain().count == 2)
        #expect(q.post(.noSA(policy: "p")))
    }
}

extension SAManagerTests {
    @Test("a negotiated (not durable) SA keeps its state in memory only: nothing written, traffic flows")
    func negotiatedKeysWriteNothing() throws {
        let store = MemoryStore()
        let writer = ManualWriter()
        let m = SAManager(settings: .init(reserveBlock: 4), store: store, writer: writer)
        var out = Fixture.sa("o", .outbound)
        out.durable = false
        try m.install(out)
        _ = try m.addPolicy(Policy(direction: .outbound, selector: Fixture.selector, action: .protect(sa: "o")))
        for i in 0..<20 { #expect(Fixture.seal(m.database, i).0 == .sealed) }
        writer.runAll()
        #expect(store.saves == 0 && writer.count == 0)
        // A static key is written (primed) at install.
        try m.install(Fixture.sa("s", .outbound, spi: 0x2002))
        #expect(store.saves > 0)
    }
}
