import SluiceCore

/// Why a key derivation produced nothing. Never carries key bytes.
public enum KeyDerivationError: Error, Equatable, CustomStringConvertible, Sendable {
    /// prf+ gives at most 255 blocks (RFC 7296 §2.13).
    case tooLong(requested: Int, limit: Int)
    case negativeLength(Int)
    /// OpenSSL could not compute the HMAC.
    case cryptoFailure

    public var description: String {
        switch self {
        case let .tooLong(r, l): return "prf+ asked for \(r) bytes; at most \(l) can be derived (255 blocks)"
        case let .negativeLength(n): return "prf+ asked for \(n) bytes"
        case .cryptoFailure: return "OpenSSL could not compute the PRF"
        }
    }
}

public struct PRF: Sendable {
    public let algorithm: PRFAlgorithm
    public init(_ a: PRFAlgorithm) { algorithm = a }

    /// prf(key, data): the HMAC, untruncated. For HMAC PRFs the key is used whole, however
    /// long (RFC 7296 §2.14: only fixed-key PRFs such as AES-XCBC halve Ni | Nr).
    public func compute(key: [UInt8], _ data: [UInt8]) throws(KeyDerivationError) -> [UInt8] {
        guard let h = KeyedHMAC(algorithm.digest, key: key[...]), let out = h.mac([data[...]]) else {
            throw .cryptoFailure
        }
        return out
    }

    /// prf+ (RFC 7296 §2.13): T1 | T2 | ... cut to `length`, with T1 = prf(K, S | 0x01) and
    /// Tn = prf(K, Tn-1 | S | n); at most 255 blocks.
    public func plus(key: [UInt8], seed: [UInt8], length: Int) throws(KeyDerivationError) -> [UInt8] {
        let block = algorithm.outputLength
        guard length >= 0 else { throw .negativeLength(length) }
        guard length <= 255 * block else { throw .tooLong(requested: length, limit: 255 * block) }
        guard let h = KeyedHMAC(algorithm.digest, key: key[...]) else { throw .cryptoFailure }
        var out: [UInt8] = []
        out.reserveCapacity(length + block)
        var previous: [UInt8] = []
        var counter: UInt8 = 1
        while out.count < length {
            guard let t = h.mac([previous[...], seed[...], [counter][...]]) else {
                wipeBytes(previous); wipeBytes(out)
                throw .cryptoFailure
            }
            wipeBytes(previous)
            out += t
            previous = t
            counter &+= 1
        }
        wipeBytes(previous)
        if out.count == length { return out }
        let cut = Array(out[0..<length])
        wipeBytes(out)
        return cut
    }
}

/// The seven IKE SA keys (RFC 7296 §2.14).
public struct IKEKeys: Sendable {
    public var skD: SecretBytes
    public var skAi: SecretBytes, skAr: SecretBytes
    public var skEi: SecretBytes, skEr: SecretBytes   // AEAD: key | 4-byte salt
    public var skPi: SecretBytes, skPr: SecretBytes

    /// SKEYSEED = prf(Ni | Nr, g^ir); {SK_d..SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    /// For AES-GCM/ChaCha the PRF key is Ni | Nr whole (strongSwan does the same: no halving).
    /// SK_d, SK_pi, SK_pr are PRF-output long; SK_a the integrity key (none for AEADs, whatever
    /// `integrity` says); SK_e the encryption key plus, for AEADs, its 4-byte salt.
    public static func derive(prf: PRFAlgorithm, encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm?,
                              sharedSecret: SecretBytes, nonceI: [UInt8], nonceR: [UInt8],
                              spiI: UInt64, spiR: UInt64) throws(KeyDerivationError) -> IKEKeys {
        let nonces = nonceI + nonceR
        let skeyseed = try PRF(prf).compute(key: nonces, sharedSecret.bytes)
        defer { wipeBytes(skeyseed) }
        return try expand(prf: prf, skeyseed: skeyseed, nonces: nonces, spiI: spiI, spiR: spiR,
                          encryption: encryption, integrity: integrity)
    }

    /// IKE SA rekey (§2.18): SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the new SPIs.
    /// SKEYSEED is computed with the old IKE SA's PRF (`oldPRF`, when it differs), prf+ with the new one.
    public static func rekey(prf: PRFAlgorithm, oldSKd: SecretBytes, encryption: EncryptionAlgorithm,
                             integrity: IntegrityAlgorithm?, sharedSecret: SecretBytes, nonceI: [UInt8],
                             nonceR: [UInt8], spiI: UInt64, spiR: UInt64,
                             oldPRF: PRFAlgorithm? = nil) throws(KeyDerivationError) -> IKEKeys {
        let data = sharedSecret.bytes + nonceI + nonceR
        defer { wipeBytes(data) }
        let skeyseed = try PRF(oldPRF ?? prf).compute(key: oldSKd.bytes, data)
        defer { wipeBytes(skeyseed) }
        return try expand(prf: prf, skeyseed: skeyseed, nonces: nonceI + nonceR, spiI: spiI, spiR: spiR,
                          encryption: encryption, integrity: integrity)
    }

    /// Lengths in prf+ order: SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr.
    static func lengths(prf: PRFAlgorithm, encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm?) -> [Int] {
        let a = encryption.isAEAD ? 0 : (integrity?.keyLength ?? 0)
        let e = encryption.keyMaterialLength, p = prf.outputLength
        return [p, a, a, e, e, p, p]
    }

    private static func expand(prf: PRFAlgorithm, skeyseed: [UInt8], nonces: [UInt8], spiI: UInt64, spiR: UInt64,
                               encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm?) throws(KeyDerivationError) -> IKEKeys {
        let sizes = lengths(prf: prf, encryption: encryption, integrity: integrity)
        let stream = try PRF(prf).plus(key: skeyseed, seed: nonces + bigEndian(spiI) + bigEndian(spiR),
                                       length: sizes.reduce(0, +))
        defer { wipeBytes(stream) }
        var keys: [SecretBytes] = []
        var offset = 0
        for n in sizes {
            keys.append(SecretBytes(Array(stream[offset..<(offset + n)])))
            offset += n
        }
        return IKEKeys(skD: keys[0], skAi: keys[1], skAr: keys[2], skEi: keys[3], skEr: keys[4],
                       skPi: keys[5], skPr: keys[6])
    }

    public func wipe() {
        for k in [skD, skAi, skAr, skEi, skEr, skPi, skPr] { k.wipe() }
    }
}

/// CHILD_SA KEYMAT (§2.17): prf+(SK_d, [g^ir (new) |] Ni | Nr), `length` bytes.
/// Split as: initiator-to-responder enc key (+salt), integ key, then responder-to-initiator.
public func childKeyMaterial(prf: PRFAlgorithm, skD: SecretBytes, sharedSecret: SecretBytes?,
                             nonceI: [UInt8], nonceR: [UInt8], length: Int) throws(KeyDerivationError) -> SecretBytes {
    let seed = (sharedSecret?.bytes ?? []) + nonceI + nonceR
    defer { wipeBytes(seed) }
    return SecretBytes(try PRF(prf).plus(key: skD.bytes, seed: seed, length: length))
}

func bigEndian(_ v: UInt64) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) }
}
