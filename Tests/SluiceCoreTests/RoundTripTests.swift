import Testing
@testable import SluiceCore

@Suite("Seal and open round trips")
struct RoundTripTests {
    struct Case: CustomStringConvertible, Sendable {
        let proposal: Proposal, mode: ESPMode, outer: IPAddress.Family, inner: IPAddress.Family, esn: Bool, udp: Bool
        var description: String { "\(proposal.rawValue) \(mode) \(inner)-in-\(outer)\(esn ? " esn" : "")\(udp ? " natt" : "")" }
    }

    static let cases: [Case] = {
        var out: [Case] = []
        for p in Proposal.allCases {
            for (o, i) in [(IPAddress.Family.v4, IPAddress.Family.v4), (.v6, .v6), (.v6, .v4), (.v4, .v6)] {
                out.append(Case(proposal: p, mode: .tunnel, outer: o, inner: i, esn: p.isAEAD, udp: false))
            }
            for f in [IPAddress.Family.v4, .v6] {
                out.append(Case(proposal: p, mode: .transport, outer: f, inner: f, esn: !p.isAEAD, udp: false))
            }
            out.append(Case(proposal: p, mode: .tunnel, outer: .v4, inner: .v4, esn: false, udp: true))
        }
        return out
    }()

    @Test("every proposal x mode x family, several sizes", arguments: cases)
    func roundTrip(_ c: Case) throws {
        let pair = try PeerPair(proposal: c.proposal, mode: c.mode, outer: c.outer, inner: c.inner, esn: c.esn, udp: c.udp)
        for (n, size) in [0, 1, 2, 3, 15, 16, 17, 100, 1000, 1400, 8000].enumerated() {
            let original = pair.packet(mode: c.mode, outer: c.outer, inner: c.inner, size: size, seed: n)
            var buf = PacketBuffer(original)
            #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed)
            let wire = buf.bytes
            let h = try parseHeader(wire)
            #expect(h.family == c.outer)
            #expect(h.proto == (c.udp ? IPProto.udp : IPProto.esp))
            #expect(h.totalLength == wire.count)
            if h.family == .v4 { #expect(wire.withUnsafeBytes { IPv4Header.checksumIsValid($0, headerLength: 20) }) }
            // The payload must not appear in clear on the wire (except NULL encryption).
            if c.proposal != .nullsha256 && size >= 100 {
                let needle = Array(original.suffix(32))
                #expect(!contains(wire, needle), "\(c): plaintext visible")
            }
            #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .opened)
            #expect(buf.bytes == original, "\(c) size \(size)")
        }
        #expect(pair.out.counters.packets == 11)
        #expect(pair.inb.counters.packets == 11)
    }

    @Test("ESN: sequence numbers across 2^32 keep working, seq-high is authenticated")
    func esnWrap() throws {
        let start: UInt64 = (1 << 32) - 3
        for p in [Proposal.aes128gcm16, .aes128sha256, .chacha20poly1305] {
            let pair = try PeerPair(proposal: p, mode: .tunnel, outer: .v4, inner: .v4, esn: true, startSeq: start)
            // The receiver's window must already be near the sender's numbers: prime it.
            _ = pair.inb.replay!.window.withLock { $0.bits.update(start - 10) }
            for i in 0..<8 {
                let original = pair.packet(mode: .tunnel, outer: .v4, inner: .v4, size: 64, seed: i)
                var buf = PacketBuffer(original)
                #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed)
                #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .opened, "\(p) packet \(i)")
            }
            #expect(pair.out.currentSequence == start + 8)
            #expect(pair.inb.replayTop == start + 8)
        }
    }

    @Test("ESN: a receiver that guesses the wrong seq-high rejects (ICV covers it)")
    func esnHighBitsAuthenticated() throws {
        let pair = try PeerPair(proposal: .aes128sha256, mode: .tunnel, outer: .v4, inner: .v4, esn: true, startSeq: (1 << 32) + 5)
        var buf = PacketBuffer(pair.packet(mode: .tunnel, outer: .v4, inner: .v4, size: 64))
        #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed)
        // Receiver window at 0: infers seq-high 0, but the sender used 1.
        #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .drop(.icvMismatch))
        #expect(pair.inb.counters.icvFailures == 1)
    }

    @Test("AEAD IV is the sequence number; CBC IVs differ per packet")
    func ivs() throws {
        for p in [Proposal.aes128gcm16, .aes128sha256] {
            let pair = try PeerPair(proposal: p, mode: .tunnel, outer: .v4, inner: .v4)
            var ivs = Set<[UInt8]>()
            for i in 0..<50 {
                var buf = PacketBuffer(pair.packet(mode: .tunnel, outer: .v4, inner: .v4, size: 64))
                #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed)
                let iv = Array(buf.bytes[28..<(28 + p.ivLength)])
                if p.isAEAD { #expect(iv == [0, 0, 0, 0, 0, 0, 0, UInt8(i + 1)]) }
                ivs.insert(iv)
            }
            #expect(ivs.count == 50)
        }
    }

    @Test("TFC padding hides the inner length and is removed on open")
    func tfcPadding() throws {
        let pair = try PeerPair(proposal: .aes256gcm16, mode: .tunnel, outer: .v4, inner: .v4, tfc: 256)
        var lengths = Set<Int>()
        for size in [10, 50, 100, 200] {
            let original = pair.packet(mode: .tunnel, outer: .v4, inner: .v4, size: size)
            var buf = PacketBuffer(original)
            #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed)
            lengths.insert(buf.count)
            #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .opened)
            #expect(buf.bytes == original)
        }
        #expect(lengths.count == 1)
    }

    @Test("random packets, sizes and starting sequence numbers (seeded)")
    func randomized() throws {
        var rng = SplitMix(seed: 0x5eed)
        for _ in 0..<60 {
            let p = Proposal.allCases[Int(rng.next() % UInt64(Proposal.allCases.count))]
            let mode: ESPMode = rng.next() % 2 == 0 ? .tunnel : .transport
            let outer: IPAddress.Family = rng.next() % 2 == 0 ? .v4 : .v6
            let inner: IPAddress.Family = mode == .transport ? outer : (rng.next() % 2 == 0 ? .v4 : .v6)
            let esn = rng.next() % 2 == 0
            let start = esn ? rng.next() % (1 << 40) : rng.next() % (1 << 31)
            let pair = try PeerPair(proposal: p, mode: mode, outer: outer, inner: inner, esn: esn, startSeq: start)
            _ = pair.inb.replay!.window.withLock { $0.bits.update(max(1, start)) }
            let size = Int(rng.next() % 3000)
            let original = pair.packet(mode: mode, outer: outer, inner: inner, size: size, seed: Int(rng.next() % 255))
            var buf = PacketBuffer(original)
            #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed)
            #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .opened,
                    "\(p) \(mode) \(inner)-in-\(outer) esn=\(esn) start=\(start) size=\(size)")
            #expect(buf.bytes == original)
        }
    }

    func contains(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= hay.count else { return false }
        for i in 0...(hay.count - needle.count) where Array(hay[i..<(i + needle.count)]) == needle { return true }
        return false
    }
}

/// Deterministic generator so a failing case can be replayed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
