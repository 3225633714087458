import SluiceCore

/// A PSK as strongSwan writes one in swanctl.conf's secrets: `0x` then hex, `0s` then
/// base64, otherwise the text's own bytes. So one PSK reads the same on both ends.
/// Failures say what is wrong with the encoding, never what the bytes are.
enum PSKText {
    static func decode(_ text: [UInt8]) -> [UInt8]? {
        if text.starts(with: Array("0x".utf8)) || text.starts(with: Array("0X".utf8)) {
            return Hex.decode(String(decoding: text, as: UTF8.self))
        }
        if text.starts(with: Array("0s".utf8)) { return base64(text.dropFirst(2)) }
        // A buffer of its own: the caller's SecretBytes wipes `text`'s in place.
        return text.map { $0 }
    }

    /// The encoding the text claims, for the message when it does not decode.
    static func encodingName(_ text: [UInt8]) -> String {
        text.starts(with: Array("0s".utf8)) ? "base64 (after 0s)" : "hex digits (after 0x)"
    }

    /// RFC 4648 base64, padding optional; anything outside the alphabet is refused.
    static func base64(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        var body = text
        while body.last == UInt8(ascii: "=") { body = body.dropLast() }
        guard text.count - body.count <= 2, body.count % 4 != 1 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(body.count * 3 / 4)
        var acc: UInt32 = 0, bits = 0
        for c in body {
            guard let v = sextet(c) else { return nil }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        return out
    }

    static func sextet(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }
}
