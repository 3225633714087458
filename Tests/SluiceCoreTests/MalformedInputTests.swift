import CSluiceCrypto
import Testing
@testable import SluiceCore

/// Hostile input: every case yields its own specific error, none traps.
@Suite("Malformed and hostile packets")
struct MalformedInputTests {
    func sealedPacket(_ pair: PeerPair, size: Int = 200, outer: IPAddress.Family = .v4) -> [UInt8] {
        var buf = PacketBuffer(pair.packet(mode: .tunnel, outer: outer, inner: .v4, size: size))
        _ = PacketProcessor.process(&buf, database: pair.sender, context: .init())
        return buf.bytes
    }

    @Test("ESP truncated at every offset", arguments: [Proposal.aes128gcm16, .aes128sha256, .chacha20poly1305])
    func truncatedEverywhere(_ p: Proposal) throws {
        let pair = try PeerPair(proposal: p, mode: .tunnel, outer: .v4, inner: .v4)
        let wire = sealedPacket(pair)
        for n in 0..<wire.count {
            var cut = Array(wire[0..<n])
            if n >= 20 { // keep the IPv4 length honest so the ESP layer sees the short packet
                cut[2] = UInt8(n >> 8); cut[3] = UInt8(n & 0xFF)
            }
            var buf = PacketBuffer(cut)
            let outcome = PacketProcessor.process(&buf, database: pair.receiver, context: .init())
            guard case let .drop(reason) = outcome else { Issue.record("length \(n): \(outcome)"); continue }
            let allowed: Set<DropReason> = [.truncated, .malformedIP, .badLength, .icvMismatch]
            #expect(allowed.contains(reason), "length \(n): \(reason)")
            if n < 20 { #expect(reason == .truncated) }
        }
    }

    @Test("every single flipped byte is refused with a specific reason")
    func flippedBytes() throws {
        let pair = try PeerPair(proposal: .aes256gcm16, mode: .tunnel, outer: .v4, inner: .v4)
        let wire = sealedPacket(pair, size: 64)
        var reasons: [DropReason: Int] = [:]
        for i in 20..<wire.count {
            var bad = wire
            bad[i] ^= 0x40
            var buf = PacketBuffer(bad)
            let outcome = PacketProcessor.process(&buf, database: pair.receiver, context: .init())
            guard case let .drop(r) = outcome else { Issue.record("byte \(i) accepted"); continue }
            reasons[r, default: 0] += 1
            switch i {
            case 20..<24: #expect(r == .unknownSPI, "byte \(i)")
            default: #expect(r == .icvMismatch || r == .replay, "byte \(i): \(r)")
            }
        }
        #expect(reasons[.icvMismatch, default: 0] > 50)
    }

    @Test("bad padding under a valid ICV is refused as bad_padding")
    func badPadding() throws {
        // Seal by hand with wrong pad bytes, so only the padding check can catch it.
        let key = SecretBytes(TestPackets.pattern(Proposal.aes128sha256.keyMaterialLength, seed: 3))
        let pair = try PeerPair(proposal: .aes128sha256, mode: .tunnel, outer: .v4, inner: .v4)
        let inner = pair.packet(mode: .tunnel, outer: .v4, inner: .v4, size: 13)  // 13+8+20=41 bytes
        let padLen = (16 - (inner.count + 2) % 16) % 16
        var plain = inner + (0..<padLen).map { UInt8($0 + 1) } + [UInt8(padLen), 4]
        plain[inner.count] = 9 // first pad byte should be 1
        var esp: [UInt8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1] + [UInt8](repeating: 0xAB, count: 16) + plain + [UInt8](repeating: 0, count: 16)
        let t = try OpenSSLTransform(proposal: .aes128sha256, keyMaterial: key)
        try withMutable(&esp) { (p) throws(DropReason) in try t.seal(esp: p, payloadOffset: 24, payloadLength: plain.count, seqHigh: nil) }
        let packet = TestPackets.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: IPProto.esp, payload: esp)
        var buf = PacketBuffer(packet)
        #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .drop(.badPadding))

        // Pad length longer than the payload.
        var plain2 = [UInt8](repeating: 0, count: 14) + [200, 4]
        var esp2: [UInt8] = [0, 0, 0x10, 0x01, 0, 0, 0, 2] + [UInt8](repeating: 0xAB, count: 16) + plain2 + [UInt8](repeating: 0, count: 16)
        try withMutable(&esp2) { (p) throws(DropReason) in try t.seal(esp: p, payloadOffset: 24, payloadLength: 16, seqHigh: nil) }
        plain2 = []
        var buf2 = PacketBuffer(TestPackets.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: IPProto.esp, payload: esp2))
        #expect(PacketProcessor.process(&buf2, database: pair.receiver, context: .init()) == .drop(.badPadding))
    }

    @Test("dummy packets (Next Header 59) are dropped and counted as such")
    func dummy() throws {
        let key = SecretBytes(TestPackets.pattern(Proposal.aes128gcm16.keyMaterialLength, seed: 3))
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4)
        var esp: [UInt8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1] + [1, 2, 2, IPProto.noNext] + [UInt8](repeating: 0, count: 16)
        let t = try OpenSSLTransform(proposal: .aes128gcm16, keyMaterial: key)
        try withMutable(&esp) { (p) throws(DropReason) in try t.seal(esp: p, payloadOffset: 16, payloadLength: 4, seqHigh: nil) }
        var buf = PacketBuffer(TestPackets.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: IPProto.esp, payload: esp))
        #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .drop(.dummyPacket))
    }

    @Test("wrong SPI, fragments, garbage and zero/giant lengths")
    func assorted() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4)
        var wire = sealedPacket(pair)
        wire[23] ^= 0xFF
        var b1 = PacketBuffer(wire)
        #expect(PacketProcessor.process(&b1, database: pair.receiver, context: .init()) == .drop(.unknownSPI))

        var frag = sealedPacket(pair)
        frag[6] = 0x20 // MF
        var b2 = PacketBuffer(frag)
        #expect(PacketProcessor.process(&b2, database: pair.receiver, context: .init()) == .drop(.fragment))

        var giant = sealedPacket(pair)
        giant[2] = 0xFF; giant[3] = 0xFF
        var b3 = PacketBuffer(giant)
        #expect(PacketProcessor.process(&b3, database: pair.receiver, context: .init()) == .drop(.truncated))

        var zero = sealedPacket(pair)
        zero[2] = 0; zero[3] = 0
        var b4 = PacketBuffer(zero)
        #expect(PacketProcessor.process(&b4, database: pair.receiver, context: .init()) == .drop(.malformedIP))

        var b5 = PacketBuffer([0x45])
        #expect(PacketProcessor.process(&b5, database: pair.receiver, context: .init()) == .drop(.truncated))
        var b6 = PacketBuffer([0x95, 0, 0, 20] + [UInt8](repeating: 0, count: 16))
        #expect(PacketProcessor.process(&b6, database: pair.receiver, context: .init()) == .drop(.malformedIP))

        // Random garbage after a valid ESP header to our address: must never be accepted.
        var rng = SplitMix(seed: 99)
        for _ in 0..<500 {
            let n = Int(rng.next() % 300)
            let body = [0, 0, 0x10, 0x01] + (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var b = PacketBuffer(TestPackets.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: IPProto.esp, payload: body))
            if case .opened = PacketProcessor.process(&b, database: pair.receiver, context: .init()) { Issue.record("garbage opened") }
        }
    }

    @Test("inner packet outside the SA's inbound policy is refused")
    func policyMismatch() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4)
        // Sender protects a destination the receiver's policy does not cover.
        let other = TestPackets.ipv4(src: "198.51.100.7", dst: "192.0.2.77", proto: 17, payload: TestPackets.udp(sport: 1, dport: 2, data: [1]))
        let db = try SecurityDatabase(policies: [Policy(direction: .outbound, selector: TrafficSelector(), action: .protect(sa: "out"))],
                                      associations: [pair.out])
        var buf = PacketBuffer(other)
        #expect(PacketProcessor.process(&buf, database: db, context: .init()) == .sealed)
        #expect(PacketProcessor.process(&buf, database: pair.receiver, context: .init()) == .drop(.policyMismatch))
    }

    @Test("NAT-T keepalives are consumed, IKE on 4500 is passed")
    func natT() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4, udp: true)
        var ka = PacketBuffer(TestPackets.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: TestPackets.udp(sport: 4500, dport: 4500, data: [0xFF])))
        #expect(PacketProcessor.process(&ka, database: pair.receiver, context: .init()) == .drop(.natKeepalive))
        let ike = TestPackets.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: 17, payload: TestPackets.udp(sport: 4500, dport: 4500, data: [0, 0, 0, 0, 1, 2, 3]))
        var b = PacketBuffer(ike)
        #expect(PacketProcessor.process(&b, database: pair.receiver, context: .init()) == .unchanged)
        #expect(b.bytes == ike)
    }

    @Test("DF packet over the path MTU becomes ICMP fragmentation-needed to its source")
    func pmtu() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4, mtu: 1400)
        let big = TestPackets.ipv4(src: "198.51.100.7", dst: "203.0.113.9", proto: 17,
                                   payload: TestPackets.udp(sport: 1, dport: 2, data: TestPackets.pattern(1372)), df: true)
        var buf = PacketBuffer(big)
        #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .icmpError(.tooBig))
        let icmp = buf.bytes
        let h = try parseHeader(icmp)
        #expect(h.proto == IPProto.icmp && h.dst == IPAddress("198.51.100.7")!)
        #expect(icmp[20] == 3 && icmp[21] == 4)
        let mtu = Int(icmp[26]) << 8 | Int(icmp[27])
        #expect(mtu > 1300 && mtu < 1400)
        #expect(icmp.withUnsafeBytes { internetChecksum(UnsafeRawBufferPointer(rebasing: $0[20...])) } == 0)
        // A packet of exactly that size fits.
        let fits = TestPackets.ipv4(src: "198.51.100.7", dst: "203.0.113.9", proto: 17,
                                    payload: TestPackets.udp(sport: 1, dport: 2, data: TestPackets.pattern(mtu - 28)), df: true)
        var b2 = PacketBuffer(fits)
        #expect(PacketProcessor.process(&b2, database: pair.sender, context: .init()) == .sealed)
        #expect(b2.count <= 1400)
        // Without DF the sealed packet may exceed the MTU and the kernel fragments it.
        let nodf = TestPackets.ipv4(src: "198.51.100.7", dst: "203.0.113.9", proto: 17,
                                    payload: TestPackets.udp(sport: 1, dport: 2, data: TestPackets.pattern(1372)), df: false)
        var b3 = PacketBuffer(nodf)
        #expect(PacketProcessor.process(&b3, database: pair.sender, context: .init()) == .sealed)
    }
}
