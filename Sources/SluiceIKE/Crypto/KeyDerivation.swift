import SluiceCore

public struct PRF: Sendable {
    public let algorithm: PRFAlgorithm
    public init(_ a: PRFAlgorithm) { algorithm = a }
    public func compute(key: [UInt8], _ data: [UInt8]) -> [UInt8] { fatalError("crypto") }
    /// prf+ (RFC 7296 §2.13): T1 | T2 | ... cut to `length`.
    public func plus(key: [UInt8], seed: [UInt8], length: Int) -> [UInt8] { fatalError("crypto") }
}

/// The seven IKE SA keys (RFC 7296 §2.14).
public struct IKEKeys: Sendable {
    public var skD: SecretBytes
    public var skAi: SecretBytes, skAr: SecretBytes
    public var skEi: SecretBytes, skEr: SecretBytes   // AEAD: key | 4-byte salt
    public var skPi: SecretBytes, skPr: SecretBytes

    /// SKEYSEED = prf(Ni | Nr, g^ir); {SK_d..SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    /// For AES-GCM/ChaCha the PRF key is Ni | Nr whole (strongSwan does the same: no halving).
    public static func derive(prf: PRFAlgorithm, encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm?,
                              sharedSecret: SecretBytes, nonceI: [UInt8], nonceR: [UInt8],
                              spiI: UInt64, spiR: UInt64) -> IKEKeys { fatalError("crypto") }
    /// IKE SA rekey (§2.18): SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the new SPIs.
    public static func rekey(prf: PRFAlgorithm, oldSKd: SecretBytes, encryption: EncryptionAlgorithm,
                             integrity: IntegrityAlgorithm?, sharedSecret: SecretBytes, nonceI: [UInt8],
                             nonceR: [UInt8], spiI: UInt64, spiR: UInt64) -> IKEKeys { fatalError("crypto") }
    public func wipe() { fatalError("crypto") }
}

/// CHILD_SA KEYMAT (§2.17): prf+(SK_d, [g^ir (new) |] Ni | Nr), `length` bytes.
/// Split as: initiator-to-responder enc key (+salt), integ key, then responder-to-initiator.
public func childKeyMaterial(prf: PRFAlgorithm, skD: SecretBytes, sharedSecret: SecretBytes?,
                             nonceI: [UInt8], nonceR: [UInt8], length: Int) -> SecretBytes { fatalError("crypto") }
