import Testing
@testable import SluiceCore

@Suite("Anti-replay window and sequence numbers")
struct ReplayAndSequenceTests {
    @Test("window edges", arguments: [1, 32, 64, 65, 1024, 4096])
    func windowEdges(size: Int) {
        var w = ReplayWindow(size: size)
        #expect(!w.check(0), "sequence 0 is never valid")
        #expect(true == w.update(1))
        #expect(false == w.update(1), "duplicate")
        let top = UInt64(size) + 1000
        #expect(true == w.update(top))
        let oldest = top - UInt64(size) + 1
        if size > 1 { // with a window of one, the left edge is the top itself
            #expect(w.check(oldest), "left edge is inside")
            #expect(true == w.update(oldest))
            #expect(false == w.update(oldest))
        }
        #expect(!w.check(oldest - 1), "one past the left edge is outside")
        #expect(true == w.update(top + 1))
        #expect(!w.check(top + 1))
    }

    @Test("random arrival order inside the window: each number accepted exactly once")
    func shuffled() {
        var w = ReplayWindow(size: 1024)
        var rng = SplitMix(seed: 7)
        var seqs = Array(UInt64(1)...UInt64(900))
        for i in stride(from: seqs.count - 1, to: 0, by: -1) { seqs.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        for s in seqs { #expect(true == w.update(s)) }
        for s in seqs { #expect(false == w.update(s)) }
    }

    @Test("a big jump clears the old bits")
    func bigJump() {
        var w = ReplayWindow(size: 128)
        for s in UInt64(1)...200 { _ = w.update(s) }
        #expect(true == w.update(1_000_000))
        #expect(w.check(1_000_000 - 5))
        #expect(!w.check(200))
    }

    @Test("window 0 disables replay protection")
    func disabled() {
        var w = ReplayWindow(size: 0)
        #expect(true == w.update(5))
        #expect(true == w.update(5))
        #expect(true == w.update(1))
    }

    @Test("ESN seq-high inference (RFC 4303 App. A3) at the 2^32 boundary")
    func inference() {
        var w = ReplayWindow(size: 64)
        _ = w.update((1 << 32) - 2)            // top in subspace 0, near its end
        #expect(w.inferHigh(low: 0xFFFF_FFF0) == 0)
        #expect(w.inferHigh(low: 5) == 1)      // wrapped: next subspace
        _ = w.update((1 << 32) + 10)           // top now in subspace 1, window spans both
        #expect(w.inferHigh(low: 0xFFFF_FFF0) == 0)
        #expect(w.inferHigh(low: 3) == 1)
    }

    @Test("replay of a whole packet is refused and counted")
    func packetReplay() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4)
        var buf = PacketBuffer(pair.packet(mode: .tunnel, outer: .v4, inner: .v4, size: 100))
        _ = PacketProcessor.process(&buf, database: pair.sender, context: .init())
        let wire = buf.bytes
        var a = PacketBuffer(wire), b = PacketBuffer(wire)
        #expect(PacketProcessor.process(&a, database: pair.receiver, context: .init()) == .opened)
        #expect(PacketProcessor.process(&b, database: pair.receiver, context: .init()) == .drop(.replay))
        #expect(pair.inb.counters.replayDrops == 1)
    }

    @Test("a forged packet does not move the window")
    func forgedDoesNotAdvance() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4, window: 64)
        var buf = PacketBuffer(pair.packet(mode: .tunnel, outer: .v4, inner: .v4, size: 100))
        _ = PacketProcessor.process(&buf, database: pair.sender, context: .init())
        var forged = buf.bytes
        forged[24..<28] = [0x7F, 0, 0, 0] // huge sequence number, ICV now wrong
        var f = PacketBuffer(forged)
        #expect(PacketProcessor.process(&f, database: pair.receiver, context: .init()) == .drop(.icvMismatch))
        #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .opened)
    }

    @Test("32-bit sequence space ends: the SA stops, it never wraps")
    func exhaustion() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4, esn: false, startSeq: UInt64(UInt32.max) - 2)
        var outcomes: [Outcome] = []
        for _ in 0..<4 {
            var buf = PacketBuffer(pair.packet(mode: .tunnel, outer: .v4, inner: .v4, size: 10))
            outcomes.append(PacketProcessor.process(&buf, database: pair.sender, context: .init()))
        }
        #expect(outcomes == [.sealed, .sealed, .drop(.seqExhausted), .drop(.seqExhausted)])
    }

    @Test("sequence numbers are reserved durably in blocks before use")
    func reservations() throws {
        let store = FixedStore(start: 1000)
        let key = SecretBytes(TestPackets.pattern(20))
        let cfg = SAConfig(name: "x", direction: .outbound, spi: 1, mode: .tunnel, local: IPAddress("192.0.2.1")!,
                           remote: IPAddress("192.0.2.2")!, proposal: .aes128gcm16, keyMaterial: key)
        let sa = try SecurityAssociation(config: cfg, store: store, reserveBlock: 10)
        for expected in UInt64(1001)...1025 { #expect(try sa.takeSequence(lane: 0) == expected) }
        #expect(store.reservations == [1010, 1020, 1030])
        // When the reservation cannot be written the packet is dropped, and the number is not reused.
        store.failNext = true
        for _ in 0..<5 { _ = try sa.takeSequence(lane: 0) }  // 1026...1030 are covered
        #expect(throws: DropReason.stateError) { try sa.takeSequence(lane: 0) }
        store.failNext = false
        #expect(try sa.takeSequence(lane: 0) == 1032)
    }

    @Test("hard lifetime stops the SA, soft lifetime raises one event")
    func lifetimes() throws {
        var lt = Lifetime()
        lt.softPackets = 3
        lt.hardPackets = 5
        let events = EventLog()
        let key = SecretBytes(TestPackets.pattern(20))
        let cfg = SAConfig(name: "lt", direction: .outbound, spi: 1, mode: .tunnel, local: IPAddress("192.0.2.1")!,
                           remote: IPAddress("192.0.2.2")!, proposal: .aes128gcm16, keyMaterial: key, lifetime: lt)
        let sa = try SecurityAssociation(config: cfg, onEvent: { events.append($0) })
        let db = try SecurityDatabase(policies: [Policy(direction: .outbound, selector: TrafficSelector(), action: .protect(sa: "lt"))],
                                      associations: [sa])
        var outcomes: [Outcome] = []
        for _ in 0..<6 {
            var buf = PacketBuffer(TestPackets.ipv4(src: "198.51.100.1", dst: "203.0.113.1", proto: 17,
                                                    payload: TestPackets.udp(sport: 1, dport: 2, data: [1, 2, 3])))
            outcomes.append(PacketProcessor.process(&buf, database: db, context: .init()))
        }
        #expect(outcomes == [.sealed, .sealed, .sealed, .sealed, .drop(.saExpired), .drop(.saExpired)])
        #expect(events.all == [.softLifetime(sa: "lt", generation: sa.generation, what: "packets"),
                               .hardLifetime(sa: "lt", generation: sa.generation, what: "packets")])
    }
}

final class EventLog: @unchecked Sendable {
    private var events: [SAEvent] = []
    func append(_ e: SAEvent) { events.append(e) }
    var all: [SAEvent] { events }
}
