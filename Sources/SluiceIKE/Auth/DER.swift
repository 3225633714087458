/// Just enough DER (X.690) for what IKE carries outside certificates: distinguished names
/// (ID_DER_ASN1_DN), RFC 7427 AlgorithmIdentifiers and ECDSA signature values. Certificates
/// themselves are parsed and checked by libcrypto.
enum DER {
    static let boolean: UInt8 = 0x01, integer: UInt8 = 0x02, null: UInt8 = 0x05, oid: UInt8 = 0x06
    static let utf8String: UInt8 = 0x0c, printableString: UInt8 = 0x13, t61String: UInt8 = 0x14
    static let ia5String: UInt8 = 0x16, bmpString: UInt8 = 0x1e, universalString: UInt8 = 0x1c
    static let sequence: UInt8 = 0x30, set: UInt8 = 0x31

    /// One element: tag, length, content.
    static func encode(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        var out = [tag]
        let n = content.count
        if n < 0x80 {
            out.append(UInt8(n))
        } else {
            var len: [UInt8] = []
            var v = n
            while v > 0 { len.insert(UInt8(truncatingIfNeeded: v), at: 0); v >>= 8 }
            out.append(0x80 | UInt8(len.count))
            out += len
        }
        return out + content
    }

    /// A non-negative INTEGER from big-endian magnitude bytes (leading zeros dropped, one
    /// added when the top bit is set).
    static func unsignedInteger(_ magnitude: ArraySlice<UInt8>) -> [UInt8] {
        var m = Array(magnitude.drop { $0 == 0 })
        if m.isEmpty || m[0] & 0x80 != 0 { m.insert(0, at: 0) }
        return encode(integer, m)
    }
}

/// A malformed DER structure: what was being read, and where.
struct DERError: Error, Equatable, CustomStringConvertible {
    var what: String
    var offset: Int
    var description: String { "\(what) (byte \(offset))" }
}

/// One element read by `DERReader`: its tag, its content, and its whole encoding.
struct DERElement {
    var tag: UInt8
    var content: ArraySlice<UInt8>
    var encoding: ArraySlice<UInt8>
    var contentReader: DERReader { DERReader(content) }
}

/// A bounds-checked cursor over DER elements, one after the other. Rejects high tag
/// numbers, indefinite lengths and lengths past the end; a length field of more than four
/// bytes is refused too (nothing Sluice reads comes near 4 GiB).
struct DERReader {
    private let bytes: ArraySlice<UInt8>
    private var at: Int

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes; at = bytes.startIndex }
    init(_ bytes: [UInt8]) { self.init(bytes[...]) }

    var isAtEnd: Bool { at >= bytes.endIndex }
    /// The tag of the next element, without reading it.
    var nextTag: UInt8? { isAtEnd ? nil : bytes[at] }

    mutating func read(_ what: @autoclosure () -> String) throws(DERError) -> DERElement {
        let start = at
        func fail(_ why: String) -> DERError { DERError(what: "\(what()): \(why)", offset: at - bytes.startIndex) }
        guard bytes.endIndex - at >= 2 else { throw fail(isAtEnd ? "missing" : "truncated") }
        let tag = bytes[at]
        guard tag & 0x1f != 0x1f else { throw fail("high tag numbers are not supported") }
        var length = Int(bytes[at + 1])
        at += 2
        if length & 0x80 != 0 {
            let n = length & 0x7f
            guard n >= 1, n <= 4 else { throw fail(n == 0 ? "indefinite length" : "length field of \(n) bytes") }
            guard bytes.endIndex - at >= n else { throw fail("truncated length") }
            length = 0
            for _ in 0..<n { length = length << 8 | Int(bytes[at]); at += 1 }
        }
        guard length <= bytes.endIndex - at else { throw fail("length \(length) runs past the end") }
        let content = bytes[at..<(at + length)]
        at += length
        return DERElement(tag: tag, content: content, encoding: bytes[start..<at])
    }

    /// The next element, which must have `tag`.
    mutating func read(_ tag: UInt8, _ what: @autoclosure () -> String) throws(DERError) -> DERElement {
        let offset = at - bytes.startIndex
        let e = try read(what())
        guard e.tag == tag else {
            throw DERError(what: "\(what()): tag 0x\(String(e.tag, radix: 16)), expected 0x\(String(tag, radix: 16))", offset: offset)
        }
        return e
    }

    /// Throws unless everything was read.
    func expectEnd(_ what: @autoclosure () -> String) throws(DERError) {
        guard isAtEnd else { throw DERError(what: "\(what()): \(bytes.endIndex - at) bytes after its end", offset: at - bytes.startIndex) }
    }
}

/// Object identifiers Sluice names, as their DER content bytes.
enum OID {
    /// Dotted form ("1.2.840.10045.4.3.2") for logs.
    static func dotted(_ content: ArraySlice<UInt8>) -> String {
        var arcs: [Int] = []
        var v = 0
        for b in content {
            guard v < (Int.max >> 8) else { return "?" }
            v = v << 7 | Int(b & 0x7f)
            if b & 0x80 == 0 { arcs.append(v); v = 0 }
        }
        guard let first = arcs.first else { return "?" }
        let top = min(first / 40, 2)
        return ([top, first - 40 * top] + arcs.dropFirst()).map(String.init).joined(separator: ".")
    }
}
