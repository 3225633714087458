/// IKEv2 and ESP algorithms Sluice negotiates, with IANA numbers (RFC 7296 §3.3.2, the IKEv2
/// registry) and strongSwan's proposal keywords ("aes128gcm16-prfsha256-x25519").

public enum EncryptionAlgorithm: Sendable, Hashable {
    case aesCBC(bits: Int)            // ENCR_AES_CBC 12, 128/256
    case aesGCM16(bits: Int)          // ENCR_AES_GCM_16 20, 128/256
    case chacha20poly1305             // ENCR_CHACHA20_POLY1305 28
    public var transformID: UInt16 { fatalError("crypto") }
    public var isAEAD: Bool { fatalError("crypto") }
    /// Key bytes, without the AEAD salt.
    public var keyLength: Int { fatalError("crypto") }
    /// KEYMAT bytes taken for it: key plus 4 bytes of salt for AEADs (RFC 4106 §8.1, RFC 7634 §2).
    public var keyMaterialLength: Int { fatalError("crypto") }
}

public enum PRFAlgorithm: UInt16, Sendable, Hashable { case hmacSHA256 = 5, hmacSHA384 = 6, hmacSHA512 = 7
    public var outputLength: Int { fatalError("crypto") } }

public enum IntegrityAlgorithm: UInt16, Sendable, Hashable { case hmacSHA256_128 = 12, hmacSHA384_192 = 13, hmacSHA512_256 = 14
    public var keyLength: Int { fatalError("crypto") }
    public var icvLength: Int { fatalError("crypto") } }

public enum DHGroup: UInt16, Sendable, Hashable { case modp2048 = 14, modp3072 = 15, ecp256 = 19, ecp384 = 20, curve25519 = 31 }

/// One proposal in strongSwan's syntax, expanded: every algorithm listed, in the order given.
/// IKE proposals need encryption, PRF (for AEAD: or derived from integrity as strongSwan does)
/// and DH; ESP proposals have no PRF, DH is optional (PFS), ESN defaults to "no".
public struct ProposalSpec: Sendable, Equatable {
    public var encryption: [EncryptionAlgorithm]
    public var integrity: [IntegrityAlgorithm]
    public var prf: [PRFAlgorithm]
    public var dh: [DHGroup]
    public var esn: [Bool]
    public init(encryption: [EncryptionAlgorithm], integrity: [IntegrityAlgorithm] = [], prf: [PRFAlgorithm] = [],
                dh: [DHGroup] = [], esn: [Bool] = [false]) {
        self.encryption = encryption; self.integrity = integrity; self.prf = prf; self.dh = dh; self.esn = esn
    }

    public struct ParseError: Error, Equatable, CustomStringConvertible, Sendable {
        public var message: String
        public init(_ m: String) { message = m }
        public var description: String { message }
    }
    /// "aes128gcm16-prfsha256-x25519", "aes128-sha256-modp2048", "default"; ESP: "aes128gcm16", "aes128-sha256-esn".
    public static func parseIKE(_ text: String) throws(ParseError) -> [ProposalSpec] { fatalError("crypto") }
    public static func parseESP(_ text: String) throws(ParseError) -> [ProposalSpec] { fatalError("crypto") }
}
