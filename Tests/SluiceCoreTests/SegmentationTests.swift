import Testing
@testable import SluiceCore

/// GSO packets taken whole: checksums, cutting, sizing and sealing, checked segment by segment.
@Suite("TCP segmentation of whole (GSO) packets")
struct SegmentationTests {
    static let ack: UInt8 = 0x10, psh: UInt8 = 0x08, fin: UInt8 = 0x01, cwr: UInt8 = 0x80, syn: UInt8 = 0x02

    /// A TCP header (with a timestamp option: 32 bytes) whose checksum field holds junk,
    /// as a CHECKSUM_PARTIAL packet's does.
    static func tcp(seq: UInt32, flags: UInt8, data: [UInt8], sport: UInt16 = 40000, dport: UInt16 = 5201,
                    options: [UInt8] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]) -> [UInt8] {
        let hl = 20 + options.count
        var h: [UInt8] = [UInt8(sport >> 8), UInt8(sport & 0xFF), UInt8(dport >> 8), UInt8(dport & 0xFF),
                          UInt8(seq >> 24), UInt8((seq >> 16) & 0xFF), UInt8((seq >> 8) & 0xFF), UInt8(seq & 0xFF),
                          0, 0, 0, 1, UInt8(hl / 4) << 4, flags, 0xFF, 0xFF, 0xBE, 0xEF, 0, 0]
        h += options
        return h + data
    }

    static func wholePacket(v6: Bool, dataLength: Int, flags: UInt8, src: String? = nil, dst: String? = nil,
                            seq: UInt32 = 0xFFFF_F000) -> [UInt8] {
        let data = TestPackets.pattern(dataLength, seed: 11)
        let t = tcp(seq: seq, flags: flags, data: data) // by default the sequence wraps mid-packet
        if v6 {
            return TestPackets.ipv6(src: src ?? "2001:db8:1::7", dst: dst ?? "2001:db8:2::9", next: IPProto.tcp, payload: t)
        }
        return TestPackets.ipv4(src: src ?? "198.51.100.7", dst: dst ?? "203.0.113.9", proto: IPProto.tcp, payload: t, df: true)
    }

    @Test("the 8-byte checksum sum equals RFC 1071's byte-pair sum at every length and alignment")
    func checksumSum() {
        var rng = SplitMix(seed: 5)
        for n in Array(0...40) + [63, 64, 65, 1399, 1400, 1500, 65535] {
            let b = (0..<(n + 3)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            for start in 0..<3 {
                let slice = Array(b[start..<(start + n)])
                let fast = slice.withUnsafeBytes { Checksum.sum($0) }
                let slow = ~slice.withUnsafeBytes { internetChecksum($0) }
                #expect(fast == slow || (fast == 0xFFFF && slow == 0) || (fast == 0 && slow == 0xFFFF), "length \(n)")
            }
        }
    }

    @Test("a finished checksum verifies, whatever the field held", arguments: [false, true])
    func finishChecksum(v6: Bool) throws {
        for proto in [IPProto.tcp, IPProto.udp] {
            var p = proto == IPProto.tcp ? SegmentationTests.wholePacket(v6: v6, dataLength: 777, flags: SegmentationTests.ack)
                : (v6 ? TestPackets.ipv6(src: "2001:db8::1", dst: "2001:db8::2", next: IPProto.udp, payload: TestPackets.udp(sport: 1, dport: 2, data: [1, 2, 3]))
                      : TestPackets.ipv4(src: "192.0.2.1", dst: "192.0.2.2", proto: IPProto.udp, payload: TestPackets.udp(sport: 1, dport: 2, data: [1, 2, 3])))
            let h = try parseHeader(p)
            #expect(!p.withUnsafeBytes { Checksum.transportIsValid($0, header: h) } || proto == IPProto.udp)
            try withMutable(&p) { (q) throws(DropReason) in try Checksum.finishTransport(q, header: h) }
            #expect(p.withUnsafeBytes { Checksum.transportIsValid($0, header: h) }, "\(proto) v6=\(v6)")
            p[p.count - 1] ^= 1
            #expect(!p.withUnsafeBytes { Checksum.transportIsValid($0, header: h) }, "a flipped byte fails it")
        }
    }

    @Test("segments: sizes, sequence numbers, flags, IDs and checksums; payload joins back", arguments: [false, true])
    func segments(v6: Bool) throws {
        let flags = SegmentationTests.ack | SegmentationTests.psh | SegmentationTests.fin | SegmentationTests.cwr
        let whole = SegmentationTests.wholePacket(v6: v6, dataLength: 40_000, flags: flags)
        let h = try parseHeader(whole)
        let s = try whole.withUnsafeBytes { (p) throws(DropReason) in try TCPSegmenter(packet: p, header: h) }
        #expect(s.tcpHeaderLength == 32 && s.payloadLength == 40_000)
        let size = 1388
        let n = s.segmentCount(payloadPerSegment: size)
        #expect(n == 29)
        var joined: [UInt8] = []
        var out = PacketBuffer()
        for i in 0..<n {
            let sh = try whole.withUnsafeBytes { (p) throws(DropReason) in try s.write(segment: i, payloadPerSegment: size, from: p, into: &out) }
            let b = out.bytes
            #expect(sh.totalLength == b.count)
            #expect(b.count == s.headersLength + (i < n - 1 ? size : 40_000 - size * (n - 1)))
            #expect(b.withUnsafeBytes { Checksum.transportIsValid($0, header: sh) }, "segment \(i) checksum")
            let t = sh.headerLength
            if !v6 {
                #expect(b.withUnsafeBytes { IPv4Header.checksumIsValid($0, headerLength: 20) })
                #expect(UInt16(b[4]) << 8 | UInt16(b[5]) == 0x1234 &+ UInt16(i), "IPv4 ID counts up")
            }
            let seq = UInt32(b[t + 4]) << 24 | UInt32(b[t + 5]) << 16 | UInt32(b[t + 6]) << 8 | UInt32(b[t + 7])
            #expect(seq == 0xFFFF_F000 &+ UInt32(i * size))
            let f = b[t + 13]
            #expect(f & SegmentationTests.ack != 0)
            #expect((f & (SegmentationTests.psh | SegmentationTests.fin) != 0) == (i == n - 1), "PSH/FIN only on the last")
            #expect((f & SegmentationTests.cwr != 0) == (i == 0), "CWR only on the first")
            #expect(Array(b[(t + 20)..<(t + 32)]) == Array(whole[(h.headerLength + 20)..<(h.headerLength + 32)]), "options repeated")
            joined += b[(t + 32)...]
        }
        #expect(joined == Array(whole[(h.headerLength + 32)...]))
    }

    @Test("MSS hints: learned from an inbound SYN-ACK and lowered by ICMP errors, bounded")
    func hints() throws {
        let hints = MSSHints()
        // The peer's SYN-ACK (203.0.113.9:5201 -> 198.51.100.7:40000) advertises MSS 1300.
        let synack = TestPackets.ipv4(src: "203.0.113.9", dst: "198.51.100.7", proto: IPProto.tcp,
                                      payload: SegmentationTests.tcp(seq: 1, flags: SegmentationTests.syn | SegmentationTests.ack, data: [],
                                                                     sport: 5201, dport: 40000, options: [2, 4, 0x05, 0x14, 1, 1, 4, 2]))
        let h = try parseHeader(synack)
        synack.withUnsafeBytes { hints.learn(fromInbound: $0, header: h) }
        let flow = MSSHints.Flow(src: IPAddress("198.51.100.7")!, dst: IPAddress("203.0.113.9")!, srcPort: 40000, dstPort: 5201)
        #expect(hints.mss(for: flow) == 1300)
        #expect(hints.mss(for: flow.reversed) == nil)
        // A router past the peer says 1200 fits: quoted is our own packet to the receiver.
        let quoted = Array(SegmentationTests.wholePacket(v6: false, dataLength: 1300, flags: SegmentationTests.ack).prefix(28))
        let icmp: [UInt8] = [3, 4, 0, 0, 0, 0, 0x04, 0xB0] + quoted
        let e = TestPackets.ipv4(src: "203.0.113.1", dst: "198.51.100.7", proto: IPProto.icmp, payload: icmp)
        let eh = try parseHeader(e)
        e.withUnsafeBytes { hints.learn(fromInbound: $0, header: eh) }
        #expect(hints.mss(for: flow) == 1160)
        hints.lower(flow, mss: 1400)
        #expect(hints.mss(for: flow) == 1160, "an ICMP error only ever lowers")
        for i in 0..<(MSSHints.capacity + 10) {
            hints.record(MSSHints.Flow(src: IPAddress("192.0.2.1")!, dst: IPAddress("192.0.2.2")!, srcPort: UInt16(i & 0xFFFF), dstPort: UInt16(i >> 16)), mss: 1000)
        }
        #expect(hints.count <= MSSHints.capacity)
    }

    @Test("a whole packet under PROTECT leaves as ESP segments that the peer opens into the original stream",
          arguments: [(ESPMode.tunnel, IPAddress.Family.v4), (.tunnel, .v6), (.transport, .v4), (.transport, .v6)])
    func sealWhole(mode: ESPMode, family: IPAddress.Family) throws {
        let pair = try PeerPair(proposal: .aes128gcm16, mode: mode, outer: family, inner: family, mtu: 1500)
        let (src, dst) = mode == .transport ? (family == .v4 ? ("192.0.2.1", "192.0.2.2") : ("2001:db8::1", "2001:db8::2"))
                                             : (family == .v4 ? ("198.51.100.7", "203.0.113.9") : ("2001:db8:1::7", "2001:db8:2::9"))
        let flags = SegmentationTests.ack | SegmentationTests.psh
        let whole = SegmentationTests.wholePacket(v6: family == .v6, dataLength: 60_000, flags: flags, src: src, dst: dst)
        let h = try parseHeader(whole)
        let flow = MSSHints.Flow(src: h.src, dst: h.dst, srcPort: 40000, dstPort: 5201)
        for (hint, expectSize) in [(UInt16?.none, family == .v4 ? 536 - 12 : 1220 - 12), (9000, -1), (1250, 1250 - 12)] {
            let hints = MSSHints()
            if let hint { hints.record(flow, mss: hint) }
            var buf = PacketBuffer(whole), scratch = PacketBuffer()
            var wire: [[UInt8]] = []
            let r = PacketProcessor.processWhole(&buf, scratch: &scratch, database: pair.sender,
                                                 context: ProcessingContext(mssHints: hints)) { wire.append(Array($0)) }
            guard case let .segmented(count, failed, _) = r else { Issue.record("got \(r)"); return }
            #expect(failed == 0 && count == wire.count)
            var joined: [UInt8] = []
            var largest = 0
            for esp in wire {
                #expect(esp.count <= 1500, "every ESP packet fits the SA's MTU")
                let eh = try parseHeader(esp)
                #expect(eh.proto == IPProto.esp)
                var b = PacketBuffer(esp)
                #expect(PacketProcessor.process(&b, database: pair.receiver, context: .init()) == .opened)
                let inner = b.bytes
                let ih = try parseHeader(inner)
                #expect(inner.withUnsafeBytes { Checksum.transportIsValid($0, header: ih) })
                largest = max(largest, inner.count - ih.headerLength - 32)
                joined += inner[(ih.headerLength + 32)...]
            }
            #expect(joined == Array(whole[(h.headerLength + 32)...]), "the receiver gets the stream back in order")
            if expectSize > 0 {
                #expect(largest == expectSize, "hint \(String(describing: hint))")
            } else {
                let fit = ESP.maxInnerLength(sa: pair.out, header: h) - h.headerLength - 32
                #expect(largest == fit, "a large hint is capped by what fits the SA")
            }
        }
    }

    @Test("BYPASS leaves a whole packet to the kernel; DISCARD and no policy drop it")
    func policies() throws {
        let whole = SegmentationTests.wholePacket(v6: false, dataLength: 5000, flags: SegmentationTests.ack)
        for (action, expected) in [(PolicyAction.bypass, WholeOutcome.unchanged), (.discard, .drop(.policyDiscard))] {
            let db = try SecurityDatabase(policies: [Policy(direction: .outbound, selector: TrafficSelector(), action: action)], associations: [])
            var buf = PacketBuffer(whole), scratch = PacketBuffer()
            #expect(PacketProcessor.processWhole(&buf, scratch: &scratch, database: db, context: .init()) { _ in } == expected)
        }
        let udp = TestPackets.ipv4(src: "198.51.100.7", dst: "203.0.113.9", proto: IPProto.udp, payload: TestPackets.udp(sport: 1, dport: 2, data: [1]))
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: .v4, inner: .v4)
        var buf = PacketBuffer(udp), scratch = PacketBuffer()
        #expect(PacketProcessor.processWhole(&buf, scratch: &scratch, database: pair.sender, context: .init()) { _ in } == .drop(.unsupported),
                "only TCP is ever taken whole")
    }

    /// The segments the kernel would have delivered for `whole`, each a complete packet.
    static func cut(_ whole: [UInt8], size: Int) throws -> [[UInt8]] {
        let h = try parseHeader(whole)
        let s = try whole.withUnsafeBytes { (p) throws(DropReason) in try TCPSegmenter(packet: p, header: h) }
        var out = PacketBuffer()
        return try (0..<s.segmentCount(payloadPerSegment: size)).map { i in
            _ = try whole.withUnsafeBytes { (p) throws(DropReason) in try s.write(segment: i, payloadPerSegment: size, from: p, into: &out) }
            return out.bytes
        }
    }

    static func merge(_ segments: [[UInt8]]) throws -> (merged: [[UInt8]], taken: [Bool]) {
        var c = TCPCoalescer()
        var merged: [[UInt8]] = [], taken: [Bool] = []
        for seg in segments {
            let h = try parseHeader(seg)
            if seg.withUnsafeBytes({ c.append($0, header: h) }) { taken.append(true); continue }
            if c.count > 0 { c.finish(); merged.append(c.buffer.bytes); c.reset() }
            if seg.withUnsafeBytes({ c.start($0, header: h) }) { taken.append(true) } else { taken.append(false); merged.append(seg) }
        }
        if c.count > 0 { c.finish(); merged.append(c.buffer.bytes) }
        return (merged, taken)
    }

    @Test("received segments merge back into the sender's whole packet, with a valid checksum",
          arguments: [(false, 1388), (true, 1388), (false, 1411), (true, 1411)])
    func coalesce(v6: Bool, size: Int) throws {
        let flags = SegmentationTests.ack | SegmentationTests.psh
        let whole = SegmentationTests.wholePacket(v6: v6, dataLength: 60_000, flags: flags)
        let segs = try SegmentationTests.cut(whole, size: size)
        let (merged, _) = try SegmentationTests.merge(segs)
        #expect(merged.count == 1, "one packet for the kernel's stack instead of \(segs.count)")
        let m = try #require(merged.first)
        let h = try parseHeader(m)
        #expect(m.withUnsafeBytes { Checksum.transportIsValid($0, header: h) }, "merged checksum (odd size \(size) shifts byte parity)")
        var expected = whole
        try withMutable(&expected) { (q) throws(DropReason) in try Checksum.finishTransport(q, header: try IPHeaderInfo.parse(UnsafeRawBufferPointer(q))) }
        #expect(m == expected, "byte for byte the packet the sender's stack built")
    }

    @Test("what must not merge: a bad checksum, a gap, another flow, SYN/FIN, a larger segment, past 64 KB")
    func coalesceRefuses() throws {
        let whole = SegmentationTests.wholePacket(v6: false, dataLength: 14_000, flags: SegmentationTests.ack)
        var segs = try SegmentationTests.cut(whole, size: 1400)
        #expect(try SegmentationTests.merge(segs).merged.count == 1)

        var bad = segs
        bad[3][bad[3].count - 1] ^= 0x40 // corrupt data under a stale checksum
        let r = try SegmentationTests.merge(bad)
        #expect(r.merged.count == 3 && r.merged[1] == bad[3], "the bad segment goes alone, for the kernel to refuse")

        var gap = segs
        gap.remove(at: 5)
        #expect(try SegmentationTests.merge(gap).merged.count == 2)

        let other = try SegmentationTests.cut(SegmentationTests.wholePacket(v6: false, dataLength: 2800, flags: SegmentationTests.ack,
                                                                            dst: "203.0.113.10"), size: 1400)
        #expect(try SegmentationTests.merge([segs[0], other[0], segs[1]]).merged.count == 3)

        let fin = try SegmentationTests.cut(SegmentationTests.wholePacket(v6: false, dataLength: 1400, flags: SegmentationTests.ack | SegmentationTests.fin), size: 1400)
        let rf = try SegmentationTests.merge(fin)
        #expect(rf.taken == [false], "FIN is never merged")

        let big = try SegmentationTests.cut(whole, size: 700)
        #expect(try SegmentationTests.merge([big[0], segs[0]]).merged.count == 2, "a segment larger than the first ends nothing: it is refused")

        let first = try SegmentationTests.cut(SegmentationTests.wholePacket(v6: false, dataLength: 42_000, flags: SegmentationTests.ack), size: 1400)
        let more = try SegmentationTests.cut(SegmentationTests.wholePacket(v6: false, dataLength: 42_000, flags: SegmentationTests.ack,
                                                                           seq: 0xFFFF_F000 &+ 42_000), size: 1400)
        let rh = try SegmentationTests.merge(first + more)
        #expect(rh.merged.count == 2 && rh.merged.allSatisfy { $0.count <= 65535 })
        segs.removeAll()
    }
}
