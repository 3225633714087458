/// A bounds-checked cursor over `bytes[position ..< end]`: every read checks the end first
/// and throws a `.malformed` error that names the field, the payload and the byte offset.
/// Field names are autoclosures: built only when a read fails, not for every field read.
/// Payload bodies and their substructures are read with one of these each, so a length
/// inside a body can never reach past that body.
struct WireReader {
    let bytes: [UInt8]
    private(set) var position: Int
    let end: Int
    /// For errors: the payload being read and where `bytes` sits in the message.
    let payload: UInt8
    let baseOffset: Int

    /// `start ..< end` must lie within `bytes` (the chain decoder checks before it builds one).
    init(_ bytes: [UInt8], from start: Int, to end: Int, payload: UInt8, baseOffset: Int) {
        self.bytes = bytes; self.position = start; self.end = end; self.payload = payload; self.baseOffset = baseOffset
    }

    var remaining: Int { end - position }
    var isAtEnd: Bool { position >= end }

    /// A `.malformed` error at the current position.
    func malformed(_ reason: String) -> IKEDecodeError {
        IKEDecodeError(.malformed(reason), offset: baseOffset + position, payload: payload)
    }

    private func need(_ n: Int, _ field: @autoclosure () -> String) throws(IKEDecodeError) {
        guard n >= 0, n <= remaining else {
            throw malformed("\(PayloadType.name(payload)) payload ends inside its \(field()) (\(n) bytes needed, \(max(remaining, 0)) left)")
        }
    }

    mutating func u8(_ field: @autoclosure () -> String) throws(IKEDecodeError) -> UInt8 {
        try need(1, field())
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u16(_ field: @autoclosure () -> String) throws(IKEDecodeError) -> UInt16 {
        try need(2, field())
        defer { position += 2 }
        return UInt16(bytes[position]) << 8 | UInt16(bytes[position + 1])
    }

    mutating func u32(_ field: @autoclosure () -> String) throws(IKEDecodeError) -> UInt32 {
        try need(4, field())
        defer { position += 4 }
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[position + i]) }
        return v
    }

    mutating func u64(_ field: @autoclosure () -> String) throws(IKEDecodeError) -> UInt64 {
        let high = try u32(field()), low = try u32(field())
        return UInt64(high) << 32 | UInt64(low)
    }

    mutating func take(_ n: Int, _ field: @autoclosure () -> String) throws(IKEDecodeError) -> [UInt8] {
        try need(n, field())
        defer { position += n }
        return Array(bytes[position ..< position + n])
    }

    mutating func skip(_ n: Int, _ field: @autoclosure () -> String) throws(IKEDecodeError) {
        try need(n, field())
        position += n
    }

    /// Everything up to the end (possibly nothing).
    mutating func rest() -> [UInt8] {
        guard position < end else { return [] }
        defer { position = end }
        return Array(bytes[position ..< end])
    }

    /// A reader over the next `n` bytes (a substructure whose own length said `n`), which this
    /// reader then skips. `what` names the substructure for the error when `n` runs past the end.
    mutating func substructure(_ n: Int, _ what: @autoclosure () -> String) throws(IKEDecodeError) -> WireReader {
        guard n >= 0, n <= remaining else {
            throw malformed("\(what()) length \(n) runs past its payload (\(max(remaining, 0)) bytes left)")
        }
        let sub = WireReader(bytes, from: position, to: position + n, payload: payload, baseOffset: baseOffset)
        position += n
        return sub
    }
}

/// Big-endian appends for the encoders.
extension Array where Element == UInt8 {
    mutating func appendU16(_ v: UInt16) {
        append(UInt8(truncatingIfNeeded: v >> 8)); append(UInt8(truncatingIfNeeded: v))
    }

    mutating func appendU32(_ v: UInt32) {
        appendU16(UInt16(truncatingIfNeeded: v >> 16)); appendU16(UInt16(truncatingIfNeeded: v))
    }

    mutating func appendU64(_ v: UInt64) {
        appendU32(UInt32(truncatingIfNeeded: v >> 32)); appendU32(UInt32(truncatingIfNeeded: v))
    }

    /// Overwrites the 16-bit field at `offset` (a length filled in once the body is known).
    mutating func setU16(_ v: UInt16, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: v >> 8); self[offset + 1] = UInt8(truncatingIfNeeded: v)
    }
}

/// Field widths the encoder writes. Values built by Sluice itself must fit; one that does not
/// is a bug in the caller (anything decoded from a peer fits by construction, since it was read
/// from a field of the same width), so it stops here instead of going out truncated.
func wireU8(_ v: Int, _ field: @autoclosure () -> String) -> UInt8 {
    guard let w = UInt8(exactly: v) else { preconditionFailure("IKE encode: \(field()) \(v) does not fit in one byte") }
    return w
}

func wireU16(_ v: Int, _ field: @autoclosure () -> String) -> UInt16 {
    guard let w = UInt16(exactly: v) else { preconditionFailure("IKE encode: \(field()) \(v) does not fit in two bytes") }
    return w
}
