import SluiceCore

/// One ephemeral key exchange (KE payload). The private key lives in libcrypto and is freed with this.
public final class DiffieHellman: @unchecked Sendable {
    public let group: DHGroup
    public init(group: DHGroup) throws { fatalError("crypto") }
    /// KE payload data: MODP g^x padded to the prime's length; ECP x|y (RFC 5903); X25519 32 bytes (RFC 8031).
    public var publicValue: [UInt8] { fatalError("crypto") }
    /// g^ir after validating the peer's value (RFC 6989 for MODP/ECP, all-zero check for X25519, RFC 8031).
    /// ECP: the x coordinate only (RFC 5903 §7). Throws on any invalid value.
    public func sharedSecret(peer: [UInt8]) throws -> SecretBytes { fatalError("crypto") }
}
