import CSluiceCrypto
import SluiceCore

/// Why a key exchange failed. Names the group, never a key or the peer's value.
public struct DHError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Kind: Equatable, Sendable {
        /// The KE data is not the group's length (RFC 7296 §3.4: MODP values are padded to the prime).
        case wrongLength(expected: Int, got: Int)
        /// Not a value of the group: off the curve, outside 1 < y < p-1 (RFC 6989), or an X25519
        /// point that gives the all-zero secret (RFC 8031 §2).
        case invalidPublicValue
        /// OpenSSL could not make or use a key.
        case cryptoFailure
    }
    public var group: DHGroup
    public var kind: Kind
    public init(group: DHGroup, kind: Kind) { self.group = group; self.kind = kind }

    public var description: String {
        let g = "DH group \(group.rawValue) (\(group.keyword))"
        switch kind {
        case let .wrongLength(e, got): return "\(g): the peer's key exchange value is \(got) bytes, expected \(e)"
        case .invalidPublicValue: return "\(g): the peer's key exchange value is not valid for the group"
        case .cryptoFailure: return "\(g): OpenSSL could not compute the key exchange"
        }
    }
}

/// One ephemeral key exchange (KE payload). The private key lives in libcrypto and is freed with this.
public final class DiffieHellman: @unchecked Sendable {
    public let group: DHGroup
    /// KE payload data: MODP g^x padded to the prime's length; ECP x|y (RFC 5903); X25519 32 bytes (RFC 8031).
    public let publicValue: [UInt8]
    private let handle: OpaquePointer

    public convenience init(group: DHGroup) throws {
        guard let h = sluice_ke_generate(group.cGroup) else { throw DHError(group: group, kind: .cryptoFailure) }
        try self.init(group: group, handle: h)
    }

    /// A known private key, for known-answer tests: X25519 32 bytes, ECP the scalar. MODP is refused.
    convenience init(group: DHGroup, privateKey: [UInt8]) throws {
        guard let h = privateKey.withUnsafeBufferPointer({ sluice_ke_import_private(group.cGroup, $0.baseAddress, $0.count) }) else {
            throw DHError(group: group, kind: .cryptoFailure)
        }
        try self.init(group: group, handle: h)
    }

    private init(group: DHGroup, handle h: OpaquePointer) throws {
        var pub = [UInt8](repeating: 0, count: group.publicValueLength)
        let ok = pub.withUnsafeMutableBufferPointer { sluice_ke_public(h, $0.baseAddress, $0.count) }
        guard ok == 1 else {
            sluice_ke_free(h)
            throw DHError(group: group, kind: .cryptoFailure)
        }
        self.group = group
        publicValue = pub
        handle = h
    }

    deinit { sluice_ke_free(handle) } // OpenSSL clears the private key as it frees it

    /// g^ir after validating the peer's value (RFC 6989 for MODP/ECP, all-zero check for X25519, RFC 8031).
    /// ECP: the x coordinate only (RFC 5903 §7). Throws on any invalid value.
    public func sharedSecret(peer: [UInt8]) throws -> SecretBytes {
        guard peer.count == group.publicValueLength else {
            throw DHError(group: group, kind: .wrongLength(expected: group.publicValueLength, got: peer.count))
        }
        var secret = [UInt8](repeating: 0, count: sluice_ke_secret_len(group.cGroup))
        let r = peer.withUnsafeBufferPointer { p in
            secret.withUnsafeMutableBufferPointer { sluice_ke_derive(handle, p.baseAddress, p.count, $0.baseAddress, $0.count) }
        }
        guard r == 1 else { throw DHError(group: group, kind: r == 0 ? .invalidPublicValue : .cryptoFailure) }
        return SecretBytes(secret)
    }
}

extension DHGroup {
    var cGroup: sluice_ke_group {
        switch self {
        case .modp2048: return SLUICE_KE_MODP2048
        case .modp3072: return SLUICE_KE_MODP3072
        case .ecp256: return SLUICE_KE_ECP256
        case .ecp384: return SLUICE_KE_ECP384
        case .curve25519: return SLUICE_KE_X25519
        }
    }
}
