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

/// RFC 1071 one's-complement sum, folded; `initial` lets callers add a pseudo-header.
func internetChecksum(_ p: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt16 {
    var sum = initial
    var i = 0
    let n = p.count
    while i + 1 < n {
        sum &+= UInt32(p[i]) << 8 | UInt32(p[i + 1])
        i += 2
    }
    if i < n { sum &+= UInt32(p[i]) << 8 }
    while sum >> 16 != 0 { sum = (sum & 0xFFFF) &+ (sum >> 16) }
    return ~UInt16(truncatingIfNeeded: sum)
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
