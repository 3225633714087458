/// IKEv2 and ESP algorithms Sluice negotiates, with IANA numbers (RFC 7296 §3.3.2, the IKEv2
/// registry) and strongSwan's proposal keywords ("aes128gcm16-prfsha256-x25519").

public enum EncryptionAlgorithm: Sendable, Hashable {
    case aesCBC(bits: Int)            // ENCR_AES_CBC 12, 128/256
    case aesGCM16(bits: Int)          // ENCR_AES_GCM_16 20, 128/256
    case chacha20poly1305             // ENCR_CHACHA20_POLY1305 28

    public var transformID: UInt16 {
        switch self {
        case .aesCBC: return 12
        case .aesGCM16: return 20
        case .chacha20poly1305: return 28
        }
    }

    public var isAEAD: Bool {
        if case .aesCBC = self { return false }
        return true
    }

    /// Key bytes, without the AEAD salt.
    public var keyLength: Int {
        switch self {
        case let .aesCBC(bits), let .aesGCM16(bits): return bits / 8
        case .chacha20poly1305: return 32
        }
    }

    /// KEYMAT bytes taken for it: key plus 4 bytes of salt for AEADs (RFC 4106 §8.1, RFC 7634 §2).
    public var keyMaterialLength: Int { keyLength + saltLength }

    /// The AEAD salt at the end of the key material (RFC 5282 §7.1, RFC 7634 §2).
    public var saltLength: Int { isAEAD ? 4 : 0 }

    /// Explicit IV in each SK payload / ESP packet: a CBC block, or the 8-byte AEAD nonce part.
    public var ivLength: Int { isAEAD ? 8 : 16 }

    /// The Key Length attribute (bits) on the wire: AES needs one (RFC 7296 §3.3.5);
    /// ChaCha20-Poly1305 must not have one (RFC 7634 §2).
    public var keyLengthAttribute: UInt16? {
        switch self {
        case let .aesCBC(bits), let .aesGCM16(bits): return UInt16(truncatingIfNeeded: bits)
        case .chacha20poly1305: return nil
        }
    }

    /// True for the key sizes Sluice implements (AES-128 and AES-256; the enum itself admits any).
    public var isSupported: Bool {
        switch self {
        case let .aesCBC(bits), let .aesGCM16(bits): return bits == 128 || bits == 256
        case .chacha20poly1305: return true
        }
    }

    /// The algorithm a wire transform names, or nil when Sluice does not implement it
    /// (another id, AES-192, a missing or unexpected key length).
    public init?(transformID: UInt16, keyLength: UInt16?) {
        switch (transformID, keyLength) {
        case (12, 128?), (12, 256?): self = .aesCBC(bits: Int(keyLength ?? 0))
        case (20, 128?), (20, 256?): self = .aesGCM16(bits: Int(keyLength ?? 0))
        case (28, nil): self = .chacha20poly1305
        default: return nil
        }
    }

    /// strongSwan's keyword ("aes256", "aes128gcm16", "chacha20poly1305").
    public var keyword: String {
        switch self {
        case let .aesCBC(bits): return "aes\(bits)"
        case let .aesGCM16(bits): return "aes\(bits)gcm16"
        case .chacha20poly1305: return "chacha20poly1305"
        }
    }
}

public enum PRFAlgorithm: UInt16, Sendable, Hashable {
    case hmacSHA256 = 5, hmacSHA384 = 6, hmacSHA512 = 7

    /// Output bytes; also the length of SK_d, SK_pi and SK_pr (RFC 7296 §2.14).
    public var outputLength: Int {
        switch self {
        case .hmacSHA256: return 32
        case .hmacSHA384: return 48
        case .hmacSHA512: return 64
        }
    }

    public var keyword: String { "prfsha\(outputLength * 8)" }
}

public enum IntegrityAlgorithm: UInt16, Sendable, Hashable {
    case hmacSHA256_128 = 12, hmacSHA384_192 = 13, hmacSHA512_256 = 14

    /// Key bytes: the hash output length (RFC 4868 §2.1.1).
    public var keyLength: Int {
        switch self {
        case .hmacSHA256_128: return 32
        case .hmacSHA384_192: return 48
        case .hmacSHA512_256: return 64
        }
    }

    /// Truncated MAC bytes: half the hash output (RFC 4868 §2.3).
    public var icvLength: Int { keyLength / 2 }

    /// The PRF strongSwan derives from it when an IKE proposal names no PRF.
    public var matchingPRF: PRFAlgorithm {
        switch self {
        case .hmacSHA256_128: return .hmacSHA256
        case .hmacSHA384_192: return .hmacSHA384
        case .hmacSHA512_256: return .hmacSHA512
        }
    }

    public var keyword: String { "sha\(keyLength * 8)" }
}

public enum DHGroup: UInt16, Sendable, Hashable {
    case modp2048 = 14, modp3072 = 15, ecp256 = 19, ecp384 = 20, curve25519 = 31

    /// KE payload data bytes: the prime's length (MODP), x|y (ECP), 32 (X25519).
    public var publicValueLength: Int {
        switch self {
        case .modp2048: return 256
        case .modp3072: return 384
        case .ecp256: return 64
        case .ecp384: return 96
        case .curve25519: return 32
        }
    }

    public var keyword: String {
        switch self {
        case .modp2048: return "modp2048"
        case .modp3072: return "modp3072"
        case .ecp256: return "ecp256"
        case .ecp384: return "ecp384"
        case .curve25519: return "x25519"
        }
    }
}

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
    /// Several proposals may be given separated by commas, as in swanctl.conf. See
    /// `ProposalKeywords` for the keywords and what "default" expands to.
    public static func parseIKE(_ text: String) throws(ParseError) -> [ProposalSpec] {
        try ProposalKeywords.parse(text, forESP: false)
    }
    public static func parseESP(_ text: String) throws(ParseError) -> [ProposalSpec] {
        try ProposalKeywords.parse(text, forESP: true)
    }
}
