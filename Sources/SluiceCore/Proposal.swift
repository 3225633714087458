/// ESP transforms, named by strongSwan's proposal keywords so admins recognise them.
public enum Proposal: String, CaseIterable, Sendable {
    case aes128gcm16 = "aes128gcm16"            // RFC 4106, 16-byte ICV
    case aes256gcm16 = "aes256gcm16"
    case chacha20poly1305 = "chacha20poly1305"  // RFC 7634
    case aes128sha256 = "aes128-sha256"         // RFC 3602 + RFC 4868 (HMAC-SHA-256-128)
    case aes256sha256 = "aes256-sha256"
    case nullsha256 = "null-sha256"             // RFC 2410 NULL + HMAC: no confidentiality, for debugging

    public var isAEAD: Bool {
        switch self {
        case .aes128gcm16, .aes256gcm16, .chacha20poly1305: return true
        default: return false
        }
    }

    /// Encryption key bytes (without salt).
    public var encryptionKeyLength: Int {
        switch self {
        case .aes128gcm16, .aes128sha256: return 16
        case .aes256gcm16, .aes256sha256, .chacha20poly1305: return 32
        case .nullsha256: return 0
        }
    }

    /// AEAD salt (RFC 4106 §8.1, RFC 7634 §4): the last 4 bytes of the keying material.
    public var saltLength: Int { isAEAD ? 4 : 0 }
    public var integrityKeyLength: Int { isAEAD ? 0 : 32 }

    /// Total keying material in RFC 7296 §2.17 order: encryption key, then salt or integrity key.
    public var keyMaterialLength: Int { encryptionKeyLength + saltLength + integrityKeyLength }

    /// Explicit IV carried in each packet.
    public var ivLength: Int {
        switch self {
        case .aes128gcm16, .aes256gcm16, .chacha20poly1305: return 8
        case .aes128sha256, .aes256sha256: return 16
        case .nullsha256: return 0
        }
    }

    public var icvLength: Int { 16 }

    /// What payload + trailer must be a multiple of: the cipher block, at least 4 (RFC 4303 §2.4).
    public var alignment: Int {
        switch self {
        case .aes128sha256, .aes256sha256: return 16
        default: return 4
        }
    }

    /// Worst-case bytes ESP adds to a payload (header, IV, max padding, trailer, ICV).
    public var maxOverhead: Int { 8 + ivLength + (alignment - 1) + 2 + icvLength }
}
