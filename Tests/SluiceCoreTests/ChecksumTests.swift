import Testing
@testable import SluiceCore

/// The one checksum implementation against an independent RFC 1071 reference written
/// here (byte pairs, with the pseudo-header built as bytes), at every length and
/// alignment and for every caller that adds a pseudo-header.
@Suite("Internet checksum and pseudo-header")
struct ChecksumTests {
    /// RFC 1071 §4.1, literally: 16-bit big-endian words, end-around carry, complement.
    static func reference(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// RFC 8200 §8.1 / RFC 9293 §3.1 pseudo-header as bytes, for the packet's addresses.
    static func pseudo(_ packet: [UInt8], proto: UInt8, length: Int) -> [UInt8] {
        if packet[0] >> 4 == 4 {
            return Array(packet[12..<20]) + [0, proto, UInt8(length >> 8), UInt8(length & 0xFF)]
        }
        return Array(packet[8..<40]) + [0, 0, UInt8(length >> 8), UInt8(length & 0xFF), 0, 0, 0, proto]
    }

    @Test("internetChecksum equals the reference at every length, alignment and initial sum")
    func lengths() {
        let data = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 151 &+ 0xF7) }
        for start in 0..<8 {
            for n in 0...(data.count - start) where n < 80 || n % 17 == 0 {
                let slice = Array(data[start..<(start + n)])
                #expect(slice.withUnsafeBytes { internetChecksum($0) } == ChecksumTests.reference(slice), "length \(n) at \(start)")
                // An initial (pseudo-header) sum is the same as those words in front.
                let front: [UInt8] = [0xFF, 0xFE, 0x00, 0x11]
                let initial = UInt64(0xFFFE) + 0x11
                #expect(slice.withUnsafeBytes { internetChecksum($0, initial: initial) } == ChecksumTests.reference(front + slice))
            }
        }
        let zeros = [UInt8](repeating: 0, count: 10), ones = [UInt8](repeating: 0xFF, count: 10)
        #expect(zeros.withUnsafeBytes { internetChecksum($0) } == 0xFFFF)
        #expect(ones.withUnsafeBytes { internetChecksum($0) } == ChecksumTests.reference(ones))
    }

    @Test("TCP and UDP checksums over IPv4 and IPv6 match the reference pseudo-header", arguments: [false, true])
    func transport(v6: Bool) throws {
        for proto in [IPProto.tcp, IPProto.udp] {
            let l4: [UInt8] = proto == IPProto.udp ? TestPackets.udp(sport: 7, dport: 9, data: TestPackets.pattern(77))
                : SegmentationTests.tcp(seq: 5, flags: 0x10, data: TestPackets.pattern(77))
            var p = v6 ? TestPackets.ipv6(src: "2001:db8:1::7", dst: "2001:db8:2::9", next: proto, payload: l4)
                       : TestPackets.ipv4(src: "198.51.100.7", dst: "203.0.113.9", proto: proto, payload: l4)
            let h = try parseHeader(p)
            try withMutable(&p) { (q) throws(DropReason) in try Checksum.finishTransport(q, header: h) }
            var zeroed = Array(p[h.headerLength...])
            let field = proto == IPProto.udp ? 6 : 16
            let got = UInt16(zeroed[field]) << 8 | UInt16(zeroed[field + 1])
            zeroed[field] = 0; zeroed[field + 1] = 0
            var want = ChecksumTests.reference(ChecksumTests.pseudo(p, proto: proto, length: zeroed.count) + zeroed)
            if want == 0 && proto == IPProto.udp { want = 0xFFFF }
            #expect(got == want, "proto \(proto) v6=\(v6)")
        }
    }

    @Test("ICMPv6 packet too big and NAT-T over IPv6 carry reference checksums", arguments: [ESPMode.tunnel, .transport])
    func v6Callers(mode: ESPMode) throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: mode, outer: .v6, inner: .v6, mtu: 1400, udp: true)
        var buf = PacketBuffer(pair.packet(mode: mode, outer: .v6, inner: .v6, size: 300))
        #expect(PacketProcessor.process(&buf, database: pair.sender, context: .init()) == .sealed)
        let esp = buf.bytes
        #expect(esp[6] == IPProto.udp)
        var udp = Array(esp[40...])
        let got = UInt16(udp[6]) << 8 | UInt16(udp[7])
        udp[6] = 0; udp[7] = 0
        #expect(got == ChecksumTests.reference(ChecksumTests.pseudo(esp, proto: IPProto.udp, length: udp.count) + udp))
        var opened = PacketBuffer(esp)
        #expect(PacketProcessor.process(&opened, database: pair.receiver, context: .init()) == .opened)

        // Too big for the SA: an ICMPv6 error to the sender with the reference checksum.
        var big = PacketBuffer(pair.packet(mode: mode, outer: .v6, inner: .v6, size: 1400))
        let r = PacketProcessor.process(&big, database: pair.sender, context: .init())
        guard case .icmpError(.tooBig) = r else { return } // transport mode need not answer with ICMP
        let icmp = big.bytes
        var body = Array(icmp[40...])
        let c = UInt16(body[2]) << 8 | UInt16(body[3])
        body[2] = 0; body[3] = 0
        #expect(icmp[40] == 2)
        #expect(c == ChecksumTests.reference(ChecksumTests.pseudo(icmp, proto: IPProto.icmpv6, length: body.count) + body))
    }
}
