/// IP protocol numbers Sluice cares about.
public enum IPProto {
    public static let hopByHop: UInt8 = 0
    public static let icmp: UInt8 = 1
    public static let ipv4: UInt8 = 4        // IPv4-in-IP (tunnel mode Next Header)
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let ipv6: UInt8 = 41       // IPv6-in-IP
    public static let routing: UInt8 = 43
    public static let fragment: UInt8 = 44
    public static let esp: UInt8 = 50
    public static let ah: UInt8 = 51
    public static let icmpv6: UInt8 = 58
    public static let noNext: UInt8 = 59     // dummy packet (RFC 4303 §2.6)
    public static let destOptions: UInt8 = 60
    public static let sctp: UInt8 = 132
}

/// What Sluice needs to know about one IP header (and IPv6 extension chain).
public struct IPHeaderInfo: Sendable, Equatable {
    public var family: IPAddress.Family
    /// Bytes before the upper-layer header: IPv4 header with options, or IPv6 base
    /// header plus hop-by-hop, routing and destination-options headers.
    public var headerLength: Int
    /// Total length the header claims (may be less than the buffer: link padding).
    public var totalLength: Int
    /// Upper-layer protocol (after extension headers).
    public var proto: UInt8
    /// Offset of the byte that holds `proto` (IPv4: 9; IPv6: 6 or inside the last extension).
    public var protoFieldOffset: Int
    public var src: IPAddress
    public var dst: IPAddress
    public var isFragment: Bool
    public var dontFragment: Bool
    /// IPv4 TOS or IPv6 traffic class (DSCP + ECN).
    public var trafficClass: UInt8
    public var ttl: UInt8

    /// Parses and validates the header at the start of `p`. Never reads outside `p`.
    public static func parse(_ p: UnsafeRawBufferPointer) throws(DropReason) -> IPHeaderInfo {
        guard p.count >= 1 else { throw .truncated }
        switch p[0] >> 4 {
        case 4: return try parseV4(p)
        case 6: return try parseV6(p)
        default: throw .malformedIP
        }
    }

    static func parseV4(_ p: UnsafeRawBufferPointer) throws(DropReason) -> IPHeaderInfo {
        guard p.count >= 20 else { throw .truncated }
        let ihl = Int(p[0] & 0x0F) * 4
        guard ihl >= 20 else { throw .malformedIP }
        guard p.count >= ihl else { throw .truncated }
        let total = Int(readU16(p, 2))
        guard total >= ihl else { throw .malformedIP }
        guard total <= p.count else { throw .truncated }
        let frag = readU16(p, 6)
        return IPHeaderInfo(
            family: .v4, headerLength: ihl, totalLength: total, proto: p[9], protoFieldOffset: 9,
            src: IPAddress(reading: p, at: 12, family: .v4), dst: IPAddress(reading: p, at: 16, family: .v4),
            isFragment: frag & 0x3FFF != 0, dontFragment: frag & 0x4000 != 0,
            trafficClass: p[1], ttl: p[8])
    }

    /// Parses the header of a packet quoted in an ICMP error, which is cut short: the
    /// lengths are taken from what is there rather than what the header claims.
    public static func parseQuoted(_ p: UnsafeRawBufferPointer) throws(DropReason) -> IPHeaderInfo {
        guard p.count >= 1 else { throw .truncated }
        var whole = [UInt8](p)
        switch p[0] >> 4 {
        case 4:
            guard whole.count >= 20 else { throw .truncated }
            whole.withUnsafeMutableBytes { writeU16($0, 2, UInt16(truncatingIfNeeded: $0.count)) }
        case 6:
            guard whole.count > 40 else { throw .truncated }
            whole.withUnsafeMutableBytes { writeU16($0, 4, UInt16(truncatingIfNeeded: $0.count - 40)) }
        default:
            throw .malformedIP
        }
        let r = whole.withUnsafeBytes { q -> Result<IPHeaderInfo, DropReason> in
            do throws(DropReason) { return .success(try parse(q)) } catch { return .failure(error) }
        }
        return try r.get()
    }

    static func parseV6(_ p: UnsafeRawBufferPointer) throws(DropReason) -> IPHeaderInfo {
        guard p.count >= 40 else { throw .truncated }
        let payload = Int(readU16(p, 4))
        guard payload > 0 else { throw .malformedIP } // jumbograms are not for ESP
        let total = 40 + payload
        guard total <= p.count else { throw .truncated }
        var next = p[6]
        var fieldOffset = 6
        var offset = 40
        var fragment = false
        // Walk the extension headers that come before ESP in transport mode.
        walk: while true {
            switch next {
            case IPProto.hopByHop, IPProto.routing, IPProto.destOptions:
                guard offset + 8 <= total else { throw .truncated }
                let len = (Int(p[offset + 1]) + 1) * 8
                guard offset + len <= total else { throw .truncated }
                fieldOffset = offset
                next = p[offset]
                offset += len
            case IPProto.fragment:
                guard offset + 8 <= total else { throw .truncated }
                let fo = readU16(p, offset + 2)
                // An atomic fragment (offset 0, M=0) is a whole packet; anything else is a piece.
                if fo & 0xFFF9 != 0 { fragment = true }
                fieldOffset = offset
                next = p[offset]
                offset += 8
            default:
                break walk
            }
        }
        let tc = UInt8(truncatingIfNeeded: readU16(p, 0) >> 4)
        return IPHeaderInfo(
            family: .v6, headerLength: offset, totalLength: total, proto: next, protoFieldOffset: fieldOffset,
            src: IPAddress(reading: p, at: 8, family: .v6), dst: IPAddress(reading: p, at: 24, family: .v6),
            isFragment: fragment, dontFragment: true, trafficClass: tc, ttl: p[7])
    }
}

/// The packet fields an SPD selector looks at (RFC 4301 §4.4.1.1).
public struct FlowKey: Sendable, Equatable, CustomStringConvertible {
    public var src: IPAddress
    public var dst: IPAddress
    public var proto: UInt8
    /// Ports for TCP/UDP/SCTP; for ICMP/ICMPv6, `srcPort` is the type and `dstPort` the code.
    public var srcPort: UInt16?
    public var dstPort: UInt16?

    public init(src: IPAddress, dst: IPAddress, proto: UInt8, srcPort: UInt16? = nil, dstPort: UInt16? = nil) {
        self.src = src; self.dst = dst; self.proto = proto; self.srcPort = srcPort; self.dstPort = dstPort
    }

    public init(header h: IPHeaderInfo, packet p: UnsafeRawBufferPointer) {
        self.init(src: h.src, dst: h.dst, proto: h.proto)
        let o = h.headerLength
        guard !h.isFragment else { return } // OPAQUE ports (RFC 4301 §4.4.1.1)
        switch h.proto {
        case IPProto.tcp, IPProto.udp, IPProto.sctp, 136:
            if o + 4 <= p.count { srcPort = readU16(p, o); dstPort = readU16(p, o + 2) }
        case IPProto.icmp, IPProto.icmpv6:
            if o + 2 <= p.count { srcPort = UInt16(p[o]); dstPort = UInt16(p[o + 1]) }
        default:
            break
        }
    }

    public var description: String {
        var s = "\(src) -> \(dst) proto \(proto)"
        if let sp = srcPort, let dp = dstPort { s += " \(sp)/\(dp)" }
        return s
    }
}

enum IPv4Header {
    /// Recomputes the IPv4 header checksum of the header at the start of `p`.
    static func fixChecksum(_ p: UnsafeMutableRawBufferPointer, headerLength: Int) {
        writeU16(p, 10, 0)
        let c = internetChecksum(UnsafeRawBufferPointer(rebasing: p[0..<headerLength]))
        writeU16(p, 10, c)
    }

    static func checksumIsValid(_ p: UnsafeRawBufferPointer, headerLength: Int) -> Bool {
        internetChecksum(UnsafeRawBufferPointer(rebasing: p[0..<headerLength])) == 0
    }
}
