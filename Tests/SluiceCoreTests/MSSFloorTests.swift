import Testing
@testable import SluiceCore

/// A host behind the peer must not be able to make us cut 64 KB packets into tiny ESP
/// packets: learned MSS values and GSO segment sizes never go below the family's floor.
@Suite("MSS floor for learned sizes and GSO segments")
struct MSSFloorTests {
    static let syn: UInt8 = 0x02, ack: UInt8 = 0x10

    /// The largest TCP payload among the ESP segments `whole` leaves as, opened again.
    static func largestSegment(_ whole: [UInt8], pair: PeerPair, hints: MSSHints) throws -> Int {
        var buf = PacketBuffer(whole), scratch = PacketBuffer()
        var wire: [[UInt8]] = []
        let r = PacketProcessor.processWhole(&buf, scratch: &scratch, database: pair.sender,
                                             context: ProcessingContext(mssHints: hints)) { wire.append(Array($0)) }
        guard case let .segmented(count, failed, _) = r, failed == 0, count == wire.count else {
            Issue.record("got \(r)"); return -1
        }
        var largest = 0
        for esp in wire {
            var b = PacketBuffer(esp)
            #expect(PacketProcessor.process(&b, database: pair.receiver, context: .init()) == .opened)
            let ih = try parseHeader(b.bytes)
            largest = max(largest, b.count - ih.headerLength - 32) // 32: TCP header with timestamps
        }
        return largest
    }

    static func addresses(_ family: IPAddress.Family) -> (String, String) {
        family == .v4 ? ("198.51.100.7", "203.0.113.9") : ("2001:db8:1::7", "2001:db8:2::9")
    }

    static func inbound(_ family: IPAddress.Family, src: String, dst: String, proto: UInt8, payload: [UInt8]) -> [UInt8] {
        family == .v4 ? TestPackets.ipv4(src: src, dst: dst, proto: proto, payload: payload)
                      : TestPackets.ipv6(src: src, dst: dst, next: proto, payload: payload)
    }

    @Test("a 1-byte MSS in the receiver's SYN-ACK is raised to the floor", arguments: [IPAddress.Family.v4, .v6])
    func tinySYN(family: IPAddress.Family) throws {
        let (local, remote) = MSSFloorTests.addresses(family)
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: family, inner: family, mtu: 1500)
        let hints = MSSHints()
        let synack = MSSFloorTests.inbound(family, src: remote, dst: local, proto: IPProto.tcp, payload:
            SegmentationTests.tcp(seq: 1, flags: MSSFloorTests.syn | MSSFloorTests.ack, data: [], sport: 5201, dport: 40000,
                                  options: [2, 4, 0x00, 0x01, 1, 1, 4, 2]))
        PacketProcessor.learn(hints, from: PacketBuffer(synack))
        let flow = MSSHints.Flow(src: IPAddress(local)!, dst: IPAddress(remote)!, srcPort: 40000, dstPort: 5201)
        #expect(hints.mss(for: flow) == UInt16(MSSHints.floor(family)))
        let whole = SegmentationTests.wholePacket(v6: family == .v6, dataLength: 60_000, flags: MSSFloorTests.ack)
        #expect(try MSSFloorTests.largestSegment(whole, pair: pair, hints: hints) == MSSHints.floor(family) - 12,
                "the floor less our 12 bytes of TCP options")
        // A hint recorded below the floor by anyone else is raised too.
        hints.record(flow, mss: 1)
        #expect(hints.mss(for: flow) == UInt16(MSSHints.floor(family)))
    }

    @Test("an ICMP too-big with a tiny MTU lowers a flow to the floor, no further", arguments: [IPAddress.Family.v4, .v6])
    func tinyICMP(family: IPAddress.Family) throws {
        let (local, remote) = MSSFloorTests.addresses(family)
        let pair = try PeerPair(proposal: .aes128gcm16, mode: .tunnel, outer: family, inner: family, mtu: 1500)
        let hints = MSSHints()
        let flow = MSSHints.Flow(src: IPAddress(local)!, dst: IPAddress(remote)!, srcPort: 40000, dstPort: 5201)
        hints.record(flow, mss: 1400)
        // Our own packet to the receiver, quoted by a router past the peer claiming MTU 68 (IPv4) / 100 (IPv6).
        let ours = SegmentationTests.wholePacket(v6: family == .v6, dataLength: 1400, flags: MSSFloorTests.ack)
        let icmp: [UInt8] = family == .v4 ? [3, 4, 0, 0, 0, 0, 0, 68] + ours.prefix(28)
                                          : [2, 0, 0, 0, 0, 0, 0, 100] + ours.prefix(48)
        let router = family == .v4 ? "203.0.113.1" : "2001:db8:2::1"
        let e = MSSFloorTests.inbound(family, src: router, dst: local, proto: family == .v4 ? IPProto.icmp : IPProto.icmpv6, payload: icmp)
        PacketProcessor.learn(hints, from: PacketBuffer(e))
        #expect(hints.mss(for: flow) == UInt16(MSSHints.floor(family)))
        let whole = SegmentationTests.wholePacket(v6: family == .v6, dataLength: 60_000, flags: MSSFloorTests.ack)
        #expect(try MSSFloorTests.largestSegment(whole, pair: pair, hints: hints) == MSSHints.floor(family) - 12)
    }
}
