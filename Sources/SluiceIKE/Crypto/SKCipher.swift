import SluiceCore

/// Protects SK payloads for one direction of one IKE SA (RFC 7296 §3.14; RFC 5282 for AES-GCM;
/// RFC 7634 for ChaCha20-Poly1305).
public final class SKCipher: @unchecked Sendable {
    public enum Failure: Error, Equatable, Sendable { case integrity, malformed }
    /// `key` is SK_e (with its salt for AEADs); `integrityKey` SK_a (nil for AEADs).
    public init(encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm?, key: SecretBytes,
                integrityKey: SecretBytes?) throws { fatalError("crypto") }
    /// SK body size (IV | ciphertext with padding and pad length | ICV) for `plaintextLength` bytes.
    public func sealedLength(_ plaintextLength: Int) -> Int { fatalError("crypto") }
    /// `prefix`: the IKE header and SK generic header with final lengths. AEAD: it is the AAD;
    /// CBC: the ICV is over prefix | IV | ciphertext. Returns the SK body.
    public func seal(prefix: [UInt8], plaintext: [UInt8]) throws -> [UInt8] { fatalError("crypto") }
    /// Verifies and decrypts; returns the inner payload chain without padding.
    public func open(prefix: [UInt8], body: [UInt8]) throws(Failure) -> [UInt8] { fatalError("crypto") }
}
