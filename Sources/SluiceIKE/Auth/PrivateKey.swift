import CSluiceCrypto
import SluiceCore

public struct PrivateKeyError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Our private key for AUTH signatures. The key lives in libcrypto (which clears it when
/// this goes) and never prints: description says only its kind.
///
/// Concurrency: signing only reads the key (each signature has its own libcrypto context).
public final class PrivateKey: @unchecked Sendable, CustomStringConvertible {
    public let kind: PublicKeyKind
    private let handle: OpaquePointer

    /// From a key file's bytes: PEM or DER, PKCS#8 or traditional (PKCS#1 RSA, SEC1 EC),
    /// unencrypted. The caller wipes `data`.
    public init(_ data: SecretBytes) throws(PrivateKeyError) {
        var why: Int32 = 0
        let h = data.bytes.withUnsafeBufferPointer { sluice_privkey_load($0.baseAddress, $0.count, &why) }
        guard let h else {
            switch why {
            case 1: throw PrivateKeyError("is an encrypted key: Sluice reads unencrypted keys only (protect the file with mode 0600)")
            case 2: throw PrivateKeyError("holds a key that is not RSA, ECDSA (P-256, P-384, P-521) or Ed25519")
            default: throw PrivateKeyError("is not a PEM or DER private key")
            }
        }
        var k: Int32 = 0, bits: Int32 = 0
        sluice_privkey_info(h, &k, &bits)
        guard let kind = PublicKeyKind(kind: k, bits: bits) else {
            sluice_privkey_free(h)
            throw PrivateKeyError("holds a key that is not RSA, ECDSA or Ed25519")
        }
        self.kind = kind
        handle = h
    }

    deinit { sluice_privkey_free(handle) }

    /// Whether `certificate` carries this key's public half.
    public func matches(_ certificate: Certificate) -> Bool {
        sluice_privkey_matches(handle, certificate.publicKeyInfo, certificate.publicKeyInfo.count) == 1
    }

    /// The signature of `message` with `scheme` (ECDSA as DER, as RFC 7427 carries it).
    public func sign(_ message: [UInt8], _ scheme: SignatureScheme) throws(PrivateKeyError) -> [UInt8] {
        guard scheme.fits(kind) else { throw PrivateKeyError("a \(kind) key cannot make \(scheme) signatures") }
        if case let .rsaPSS(salt) = scheme.algorithm, salt != scheme.hash.length {
            throw PrivateKeyError("Sluice makes RSASSA-PSS signatures with a salt of the hash's length only")
        }
        let padding = Int32(scheme.algorithm == .rsaPKCS1 ? SLUICE_RSA_PKCS1.rawValue : SLUICE_RSA_PSS.rawValue)
        guard let sig = CBuffer.read({ sluice_sign(handle, scheme.hash.cDigest, padding, message, message.count, $0, $1, $2) }) else {
            throw PrivateKeyError("libcrypto could not sign with the \(kind) key (\(scheme))")
        }
        return sig
    }

    public var description: String { "<\(kind) private key>" }
}

/// A signature check with the public key of a certificate.
public enum SignatureCheck {
    /// Whether `signature` over `message` verifies with `certificate`'s key under `scheme`.
    /// Nil when the scheme does not fit the key (or the key is unusable): a different failure.
    public static func verify(_ signature: [UInt8], over message: [UInt8], scheme: SignatureScheme, certificate: Certificate) -> Bool? {
        guard scheme.fits(certificate.keyKind) else { return nil }
        var padding = Int32(SLUICE_RSA_PKCS1.rawValue), salt: Int32 = 0
        if case let .rsaPSS(s) = scheme.algorithm { padding = Int32(SLUICE_RSA_PSS.rawValue); salt = Int32(clamping: s) }
        let spki = certificate.publicKeyInfo
        let r = sluice_verify(spki, spki.count, scheme.hash.cDigest, padding, salt, message, message.count, signature, signature.count)
        return r == -1 ? nil : r == 1
    }
}

extension SignatureHash {
    /// Output length in bytes (RSASSA-PSS salts are this long).
    var length: Int {
        switch self {
        case .sha1: return 20
        case .sha256: return 32
        case .sha384: return 48
        case .sha512: return 64
        case .identity: return 0
        }
    }
}
