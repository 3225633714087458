import Testing
@testable import SluiceCore

/// Transport mode never answers "too big" to its own stack: the inner destination is the
/// outer one, so that ICMP would lower the kernel's path MTU below what the ESP packets
/// themselves need (a black hole). The kernel's route decides instead.
@Suite("Transport mode and the path MTU")
struct TransportPMTUTests {
    static func transportPacket(_ family: IPAddress.Family, payload: Int, df: Bool = true) -> [UInt8] {
        let udp = TestPackets.udp(sport: 5000, dport: 53, data: TestPackets.pattern(payload))
        return family == .v4 ? TestPackets.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: IPProto.udp, payload: udp, df: df)
                             : TestPackets.ipv6(src: "2001:db8::1", dst: "2001:db8::2", next: IPProto.udp, payload: udp)
    }

    @Test("IPv4: a DF packet over the SA's MTU is sealed without DF and with a fresh ID, and opens unchanged otherwise")
    func v4() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .transport, outer: .v4, inner: .v4, startSeq: 0x1_2345, mtu: 1400)
        for size in [100, 1372, 1500] { // fits, just over, over the link too
            let original = TransportPMTUTests.transportPacket(.v4, payload: size)
            var buf = PacketBuffer(original)
            #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed, "size \(size): never ICMP")
            let esp = buf.bytes
            let h = try parseHeader(esp)
            #expect(h.proto == IPProto.esp && !h.dontFragment, "DF cleared: the kernel may fragment to its route's MTU")
            #expect(esp[6] & 0x40 == 0 && esp[6] & 0x3F == 0 && esp[7] == 0, "a whole packet, not a fragment")
            #expect(esp.withUnsafeBytes { IPv4Header.checksumIsValid($0, headerLength: 20) })
            #expect(esp.withUnsafeBytes { readU16($0, 4) } != 0x1234, "a fresh ID once the packet may be fragmented")
            if size > 1372 { #expect(esp.count > 1400, "larger than the SA's MTU: left to the kernel") }
            var opened = PacketBuffer(esp)
            #expect(PacketProcessor.process(&opened, database: pair.receiver, context: .init()) == .opened)
            var expected = original
            expected[6] = 0
            expected[4] = esp[4]; expected[5] = esp[5]
            try withMutable(&expected) { (q) throws(DropReason) in IPv4Header.fixChecksum(q, headerLength: 20) }
            #expect(opened.bytes == expected, "only DF and the ID changed")
        }
        // Without DF the kernel's ID stays.
        var nodf = PacketBuffer(TransportPMTUTests.transportPacket(.v4, payload: 1500, df: false))
        #expect(PacketProcessor.process(&nodf, database: pair.sender, context: .init()) == .sealed)
        #expect(nodf.bytes.withUnsafeBytes { readU16($0, 4) } == 0x1234)
    }

    @Test("IPv6: a packet over the SA's MTU is sealed whole for the kernel's route to take, never answered with ICMPv6")
    func v6() throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .transport, outer: .v6, inner: .v6, mtu: 1400)
        var buf = PacketBuffer(TransportPMTUTests.transportPacket(.v6, payload: 1400))
        #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed)
        #expect(buf.count > 1400)
        #expect(try parseHeader(buf.bytes).proto == IPProto.esp)
    }

    @Test("tunnel mode keeps answering a DF packet over the MTU with ICMP too big (the inner destination is another host)",
          arguments: [IPAddress.Family.v4, .v6])
    func tunnelUnchanged(family: IPAddress.Family) throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: family, inner: family, mtu: 1400)
        let udp = TestPackets.udp(sport: 1, dport: 2, data: TestPackets.pattern(1400))
        let big = family == .v4 ? TestPackets.ipv4(src: "198.51.100.7", dst: "203.0.113.9", proto: IPProto.udp, payload: udp, df: true)
                                : TestPackets.ipv6(src: "2001:db8:1::7", dst: "2001:db8:2::9", next: IPProto.udp, payload: udp)
        var buf = PacketBuffer(big)
        #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .icmpError(.tooBig))
    }
}
