#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address held by value (no allocation), compared by family and bits.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    public enum Family: Sendable { case v4, v6 }
    public let family: Family
    /// IPv6: the 128 bits; IPv4: `low` holds the address in its low 32 bits.
    public let high: UInt64
    public let low: UInt64

    public init(v4 value: UInt32) { family = .v4; high = 0; low = UInt64(value) }
    public init(v6High: UInt64, low: UInt64) { family = .v6; high = v6High; self.low = low }

    public init?(_ text: String) {
        if text.contains(":") {
            var a = in6_addr()
            guard inet_pton(AF_INET6, text, &a) == 1 else { return nil }
            let b = withUnsafeBytes(of: &a) { Array($0) }
            self.init(bytes: b[...])
        } else {
            var a = in_addr()
            guard inet_pton(AF_INET, text, &a) == 1 else { return nil }
            let b = withUnsafeBytes(of: &a) { Array($0) }
            self.init(bytes: b[...])
        }
    }

    /// From 4 or 16 network-order bytes.
    public init?(bytes: ArraySlice<UInt8>) {
        let b = Array(bytes)
        if b.count == 4 {
            self.init(v4: UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3]))
        } else if b.count == 16 {
            var h: UInt64 = 0, l: UInt64 = 0
            for i in 0..<8 { h = h << 8 | UInt64(b[i]) }
            for i in 8..<16 { l = l << 8 | UInt64(b[i]) }
            self.init(v6High: h, low: l)
        } else {
            return nil
        }
    }

    /// Reads an address of `family` from a raw buffer at `offset` (caller checked bounds).
    public init(reading p: UnsafeRawBufferPointer, at o: Int, family: Family) {
        switch family {
        case .v4:
            self.init(v4: readU32(p, o))
        case .v6:
            let h = UInt64(readU32(p, o)) << 32 | UInt64(readU32(p, o + 4))
            let l = UInt64(readU32(p, o + 8)) << 32 | UInt64(readU32(p, o + 12))
            self.init(v6High: h, low: l)
        }
    }

    func write(to p: UnsafeMutableRawBufferPointer, at o: Int) {
        switch family {
        case .v4:
            writeU32(p, o, UInt32(truncatingIfNeeded: low))
        case .v6:
            writeU64(p, o, high)
            writeU64(p, o + 8, low)
        }
    }

    public var byteCount: Int { family == .v4 ? 4 : 16 }

    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        out.withUnsafeMutableBytes { write(to: $0, at: 0) }
        return out
    }

    public var description: String {
        var b = bytes
        var text = [CChar](repeating: 0, count: 64)
        let af = family == .v4 ? AF_INET : AF_INET6
        _ = inet_ntop(af, &b, &text, socklen_t(text.count))
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        if a.family != b.family { return a.family == .v4 }
        return (a.high, a.low) < (b.high, b.low)
    }
}

/// An address prefix such as 198.51.100.0/24 or 2001:db8::/32.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let addr = IPAddress(String(parts[0])) else { return nil }
        let maxLen = addr.family == .v4 ? 32 : 128
        var len = maxLen
        if parts.count == 2 {
            guard let l = Int(parts[1]), (0...maxLen).contains(l) else { return nil }
            len = l
        }
        self.init(address: addr, length: len)
    }

    public init(address: IPAddress, length: Int) {
        self.length = length
        // Store the network address so two spellings of one prefix compare equal.
        let (mh, ml) = IPPrefix.mask(family: address.family, length: length)
        self.address = address.family == .v4
            ? IPAddress(v4: UInt32(truncatingIfNeeded: address.low & ml))
            : IPAddress(v6High: address.high & mh, low: address.low & ml)
    }

    /// True when the text had host bits set (203.0.113.5/24): worth a warning in config.
    public static func hasHostBits(_ text: String) -> Bool {
        guard let p = IPPrefix(text), let raw = IPAddress(String(text.split(separator: "/")[0])) else { return false }
        return p.address != raw
    }

    static func mask(family: IPAddress.Family, length: Int) -> (UInt64, UInt64) {
        switch family {
        case .v4:
            return (0, length == 0 ? 0 : UInt64(UInt32.max << UInt32(32 - length)))
        case .v6:
            let h: UInt64 = length == 0 ? 0 : (length >= 64 ? .max : UInt64.max << UInt64(64 - length))
            let l: UInt64 = length <= 64 ? 0 : (length == 128 ? .max : UInt64.max << UInt64(128 - length))
            return (h, l)
        }
    }

    @inline(__always)
    public func contains(_ a: IPAddress) -> Bool {
        guard a.family == address.family else { return false }
        let (mh, ml) = IPPrefix.mask(family: a.family, length: length)
        return a.high & mh == address.high && a.low & ml == address.low
    }

    public var description: String { "\(address)/\(length)" }
}
