/// Big-endian field access on raw buffers. Callers check bounds before calling; the
/// helpers themselves only touch `[offset, offset + width)` of the buffer they get.
@inline(__always)
func readU16(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt16 {
    UInt16(p[o]) << 8 | UInt16(p[o + 1])
}

@inline(__always)
func readU32(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt32 {
    UInt32(p[o]) << 24 | UInt32(p[o + 1]) << 16 | UInt32(p[o + 2]) << 8 | UInt32(p[o + 3])
}

@inline(__always)
func writeU16(_ p: UnsafeMutableRawBufferPointer, _ o: Int, _ v: UInt16) {
    p[o] = UInt8(truncatingIfNeeded: v >> 8)
    p[o + 1] = UInt8(truncatingIfNeeded: v)
}

@inline(__always)
func writeU32(_ p: UnsafeMutableRawBufferPointer, _ o: Int, _ v: UInt32) {
    p[o] = UInt8(truncatingIfNeeded: v >> 24)
    p[o + 1] = UInt8(truncatingIfNeeded: v >> 16)
    p[o + 2] = UInt8(truncatingIfNeeded: v >> 8)
    p[o + 3] = UInt8(truncatingIfNeeded: v)
}

@inline(__always)
func writeU64(_ p: UnsafeMutableRawBufferPointer, _ o: Int, _ v: UInt64) {
    writeU32(p, o, UInt32(truncatingIfNeeded: v >> 32))
    writeU32(p, o + 4, UInt32(truncatingIfNeeded: v))
}

/// The Internet checksum (RFC 1071) of `p`, complemented, ready for the header field;
/// `initial` adds a pseudo-header sum (`Checksum.pseudoHeader`).
func internetChecksum(_ p: UnsafeRawBufferPointer, initial: UInt64 = 0) -> UInt16 {
    ~Checksum.fold(UInt64(Checksum.sum(p)) &+ initial)
}

/// One's-complement arithmetic for the Internet checksum (RFC 1071), eight bytes at a
/// time: the one implementation every checksum in Sluice uses.
public enum Checksum {
    /// The folded, uncomplemented sum of `p` as big-endian 16-bit words (an odd last byte
    /// is padded with zero). RFC 1071 §2(B): summing little-endian words and swapping
    /// the folded result gives the same value.
    public static func sum(_ p: UnsafeRawBufferPointer) -> UInt16 {
        var acc: UInt64 = 0
        var i = 0
        let n = p.count
        while i + 8 <= n {
            let (s, o) = acc.addingReportingOverflow(p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            acc = s &+ (o ? 1 : 0)
            i += 8
        }
        if i < n {
            var tail: UInt64 = 0
            var shift: UInt64 = 0
            while i < n {
                tail |= UInt64(p[i]) << shift
                shift += 8
                i += 1
            }
            let (s, o) = acc.addingReportingOverflow(tail)
            acc = s &+ (o ? 1 : 0)
        }
        return fold(acc).byteSwapped
    }

    /// Folds a 64-bit one's-complement accumulator to 16 bits.
    @inline(__always)
    public static func fold(_ v: UInt64) -> UInt16 {
        var s = (v & 0xFFFF_FFFF) &+ (v >> 32)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        return UInt16(truncatingIfNeeded: s)
    }

    /// The pseudo-header sum (RFC 9293 §3.1, RFC 8200 §8.1) for an upper-layer packet of
    /// `length` bytes with protocol `proto`, between the addresses of the IPv4 or IPv6
    /// header at the start of `p` (already written there).
    static func pseudoHeader(_ p: UnsafeRawBufferPointer, family: IPAddress.Family, proto: UInt8, length: Int) -> UInt64 {
        let addrs = family == .v4 ? UnsafeRawBufferPointer(rebasing: p[12..<20]) : UnsafeRawBufferPointer(rebasing: p[8..<40])
        return UInt64(sum(addrs)) + UInt64(proto) + UInt64(length)
    }

    /// The finished checksum of the upper-layer packet `p[start..<end]` (protocol `proto`,
    /// its checksum field zero) under the IP header at the start of `p`. UDP's 0 is sent
    /// as 0xFFFF (RFC 768, RFC 8200 §8.1: 0 means "no checksum").
    static func upperLayer(_ p: UnsafeRawBufferPointer, family: IPAddress.Family, proto: UInt8, start: Int, end: Int) -> UInt16 {
        let c = internetChecksum(UnsafeRawBufferPointer(rebasing: p[start..<end]),
                                 initial: pseudoHeader(p, family: family, proto: proto, length: end - start))
        return c == 0 && proto == IPProto.udp ? 0xFFFF : c
    }

    /// Writes the finished TCP or UDP checksum of the packet in `p` (header `h`), computed
    /// from scratch: whatever the field held (a partial sum, or garbage) is ignored.
    public static func finishTransport(_ p: UnsafeMutableRawBufferPointer, header h: IPHeaderInfo) throws(DropReason) {
        let start = h.headerLength
        let end = h.totalLength
        let field: Int
        switch h.proto {
        case IPProto.tcp: field = start + 16
        case IPProto.udp: field = start + 6
        default: throw .unsupported
        }
        guard field + 2 <= end, end <= p.count else { throw .truncated }
        writeU16(p, field, 0)
        writeU16(p, field, upperLayer(UnsafeRawBufferPointer(p), family: h.family, proto: h.proto, start: start, end: end))
    }

    /// True when the TCP or UDP checksum of the packet in `p` verifies (tests, and a
    /// debugging aid: the receive path leaves verification to the kernel).
    public static func transportIsValid(_ p: UnsafeRawBufferPointer, header h: IPHeaderInfo) -> Bool {
        let start = h.headerLength, end = h.totalLength
        guard end <= p.count, start < end else { return false }
        let total = UInt64(sum(UnsafeRawBufferPointer(rebasing: p[start..<end])))
            + pseudoHeader(p, family: h.family, proto: h.proto, length: end - start)
        return fold(total) == 0xFFFF
    }
}

public enum Hex {
    /// Parses hex with an optional 0x prefix; ':' and whitespace separators are allowed.
    public static func decode(_ text: String) -> [UInt8]? {
        var s = Substring(text)
        if s.hasPrefix("0x") || s.hasPrefix("0X") { s = s.dropFirst(2) }
        var out: [UInt8] = []
        out.reserveCapacity(s.count / 2)
        var high: UInt8? = nil
        for c in s.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            case UInt8(ascii: ":"), UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t"): continue
            default: return nil
            }
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        return high == nil ? out : nil
    }

    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
