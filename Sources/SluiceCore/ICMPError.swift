/// Builds ICMP "fragmentation needed" (RFC 792/1191) and ICMPv6 "packet too big"
/// (RFC 4443) in place of a packet that ESP made too large, addressed to its source.
public enum ICMPError {
    /// Rewrites `buf` (holding the offending packet `h`) into the error message.
    /// Returns false when no error may be sent (the packet is itself an ICMP error).
    public static func makePacketTooBig(_ buf: inout PacketBuffer, header h: IPHeaderInfo, mtu: Int,
                                        source candidate: IPAddress) throws(DropReason) -> Bool {
        if h.proto == (h.family == .v4 ? IPProto.icmp : IPProto.icmpv6) {
            let type = try buf.u8(h.headerLength)
            let isError = h.family == .v4 ? [3, 4, 5, 11, 12].contains(type) : type < 128
            if isError { return false } // never an error about an error (RFC 1122 §3.2.2)
        }
        // The error must come from an address of the right family; the packet's own
        // destination is one the sender already talks to.
        let source = candidate.family == h.family ? candidate : h.dst
        switch h.family {
        case .v4:
            let quoted = min(buf.count, 548) // total stays within 576 bytes
            try buf.truncate(to: quoted)
            try buf.prepend(28)
            let total = buf.count
            buf.withMutableBytes { p in
                p[0] = 0x45; p[1] = 0
                writeU16(p, 2, UInt16(total)); writeU16(p, 4, 0); writeU16(p, 6, 0)
                p[8] = 64; p[9] = IPProto.icmp
                source.write(to: p, at: 12)
                h.src.write(to: p, at: 16)
                IPv4Header.fixChecksum(p, headerLength: 20)
                p[20] = 3; p[21] = 4 // destination unreachable, fragmentation needed
                writeU16(p, 22, 0); writeU16(p, 24, 0)
                writeU16(p, 26, UInt16(clamping: max(68, mtu)))
                let c = internetChecksum(UnsafeRawBufferPointer(rebasing: p[20..<total]))
                writeU16(p, 22, c)
            }
        case .v6:
            let quoted = min(buf.count, 1280 - 48)
            try buf.truncate(to: quoted)
            try buf.prepend(48)
            let total = buf.count
            buf.withMutableBytes { p in
                writeU32(p, 0, 0x6000_0000)
                writeU16(p, 4, UInt16(total - 40))
                p[6] = IPProto.icmpv6; p[7] = 64
                source.write(to: p, at: 8)
                h.src.write(to: p, at: 24)
                p[40] = 2; p[41] = 0 // packet too big
                writeU16(p, 42, 0)
                writeU32(p, 44, UInt32(max(1280, mtu)))
                writeU16(p, 42, Checksum.upperLayer(UnsafeRawBufferPointer(p), family: .v6, proto: IPProto.icmpv6,
                                                    start: 40, end: total))
            }
        }
        return true
    }
}
