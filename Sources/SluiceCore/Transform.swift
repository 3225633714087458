import CSluiceCrypto

/// The crypto one SA needs, for one worker lane. Implementations are not thread-safe;
/// each worker owns its lane (see `SecurityAssociation.lanes`).
public protocol ESPTransform: AnyObject {
    /// Writes a fresh unpredictable IV (CBC) into `iv`.
    func fillIV(_ iv: UnsafeMutableRawBufferPointer) throws(DropReason)
    /// Encrypts `data` in place and writes the ICV to `icv` (exactly `proposal.icvLength`).
    /// `iv` is the explicit IV in the packet (for CBC the caller fills it randomly).
    /// `authenticated` covers SPI .. end of ciphertext (for HMAC, after encryption).
    func seal(esp: UnsafeMutableRawBufferPointer, payloadOffset: Int, payloadLength: Int,
              seqHigh: UInt32?) throws(DropReason)
    /// Verifies and decrypts in place. Throws `.icvMismatch` when authentication fails.
    func open(esp: UnsafeMutableRawBufferPointer, payloadOffset: Int, payloadLength: Int,
              seqHigh: UInt32?) throws(DropReason)
}

/// Key material that wipes itself and never prints.
///
/// Copies: `init` takes over the caller's array buffer (wiped with this object: the
/// caller must not use that array afterwards) and `bytes` shares it too; code that
/// needs the key hands a slice's pointer to C (see `OpenSSLTransform`), never an
/// `Array(...)` copy.
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible, CustomDebugStringConvertible, Equatable {
    public private(set) var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    deinit { wipe() }
    /// Zeroes the buffer in place, also while it is shared: `withUnsafeMutableBytes` would
    /// first copy a shared buffer and then wipe only that copy, leaving the key behind.
    public func wipe() { wipeInPlace(bytes) }
    public var count: Int { bytes.count }
    public var description: String { "<\(bytes.count) bytes redacted>" }
    public var debugDescription: String { description }
    public static func == (a: SecretBytes, b: SecretBytes) -> Bool {
        a.bytes.count == b.bytes.count && a.bytes.withUnsafeBytes { pa in
            b.bytes.withUnsafeBytes { pb in
                pa.count == 0 || sluice_ct_equal(pa.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                 pb.baseAddress!.assumingMemoryBound(to: UInt8.self), pa.count) == 1
            }
        }
    }
}

public enum TransformError: Error, CustomStringConvertible {
    case keyLength(expected: Int, got: Int)
    case openSSL(String)
    public var description: String {
        switch self {
        case let .keyLength(e, g): return "keying material must be \(e) bytes, got \(g)"
        case let .openSSL(what): return "OpenSSL could not set up \(what)"
        }
    }
}

/// ESP with OpenSSL libcrypto. Layout of the `esp` buffer handed in:
/// `SPI(4) | seq(4) | IV | payload+trailer (payloadLength) | ICV(16)`.
public final class OpenSSLTransform: ESPTransform {
    let proposal: Proposal
    let cipher: OpaquePointer?
    let hmac: OpaquePointer?
    /// AEAD nonce: the salt (written once at init: the only key bytes kept in Swift
    /// memory, wiped in deinit) then each packet's explicit IV.
    var nonce = [UInt8](repeating: 0, count: 12)
    var aad = [UInt8](repeating: 0, count: 12)
    var mac = [UInt8](repeating: 0, count: 32)
    var seqHighBytes = [UInt8](repeating: 0, count: 4)
    /// CBC IVs come from the CSPRNG in blocks of 256, one RAND_bytes call per block
    /// instead of per packet; every IV is still fresh, unpredictable and used once.
    var ivPool = [UInt8](repeating: 0, count: 4096)
    var ivPoolOffset = 4096

    public convenience init(proposal: Proposal, keyMaterial: SecretBytes) throws {
        let km = keyMaterial.bytes // the same buffer, not a copy; slices of it stay in place too
        guard km.count == proposal.keyMaterialLength else {
            throw TransformError.keyLength(expected: proposal.keyMaterialLength, got: km.count)
        }
        let ek = proposal.encryptionKeyLength
        let kind: sluice_cipher_kind?
        switch proposal {
        case .aes128gcm16, .aes256gcm16: kind = SLUICE_CIPHER_AES_GCM
        case .chacha20poly1305: kind = SLUICE_CIPHER_CHACHA20_POLY1305
        case .aes128sha256, .aes256sha256: kind = SLUICE_CIPHER_AES_CBC
        case .nullsha256: kind = nil
        }
        try self.init(proposal: proposal, cipherKind: kind, encryptionKey: km[0..<ek],
                      saltOrIntegrityKey: km[ek...])
    }

    /// Lower-level form, also used by the vector tests (e.g. AES-192-GCM). The key bytes
    /// go to the C contexts straight from the caller's storage: no Swift copy is made,
    /// except the 4-byte AEAD salt in `nonce`.
    init(proposal: Proposal, cipherKind: sluice_cipher_kind?, encryptionKey: ArraySlice<UInt8>,
         saltOrIntegrityKey rest: ArraySlice<UInt8>) throws {
        if proposal.isAEAD && rest.count != 4 {
            throw TransformError.keyLength(expected: encryptionKey.count + 4, got: encryptionKey.count + rest.count)
        }
        // Every failure throws before `self` is initialized, so deinit never frees twice.
        let c = cipherKind.flatMap { kind in encryptionKey.withUnsafeBufferPointer { sluice_cipher_new(kind, $0.baseAddress, $0.count) } }
        if cipherKind != nil && c == nil { throw TransformError.openSSL("the cipher") }
        let h = proposal.isAEAD ? nil : rest.withUnsafeBufferPointer { sluice_hmac_sha256_new($0.baseAddress, $0.count) }
        if !proposal.isAEAD && h == nil { sluice_cipher_free(c); throw TransformError.openSSL("HMAC-SHA-256") }
        self.proposal = proposal
        cipher = c
        hmac = h
        if proposal.isAEAD { for i in 0..<4 { nonce[i] = rest[rest.startIndex + i] } }
    }

    deinit {
        sluice_cipher_free(cipher) // OpenSSL cleanses the key schedules and the HMAC key
        sluice_hmac_free(hmac)
        wipeInPlace(nonce)
    }

    private func prepareAEAD(_ esp: UnsafeMutableRawBufferPointer, seqHigh: UInt32?) -> Int {
        // nonce = salt(4, set at init) | explicit IV(8); AAD = SPI | [seq-high] | seq-low (RFC 4106 §5).
        for i in 0..<8 { nonce[4 + i] = esp[8 + i] }
        for i in 0..<4 { aad[i] = esp[i] }
        if let hi = seqHigh {
            aad.withUnsafeMutableBytes { writeU32($0, 4, hi) }
            for i in 0..<4 { aad[8 + i] = esp[4 + i] }
            return 12
        }
        for i in 0..<4 { aad[4 + i] = esp[4 + i] }
        return 8
    }

    private func computeHMAC(_ esp: UnsafeMutableRawBufferPointer, authLength: Int, seqHigh: UInt32?) throws(DropReason) {
        var hiLen = 0
        if let hi = seqHigh {
            seqHighBytes.withUnsafeMutableBytes { writeU32($0, 0, hi) }
            hiLen = 4 // RFC 4303 §2.2.1: seq-high is authenticated but not sent
        }
        let ok = seqHighBytes.withUnsafeBufferPointer { hb in
            mac.withUnsafeMutableBufferPointer { m in
                sluice_hmac_sha256(hmac, esp.baseAddress!.assumingMemoryBound(to: UInt8.self), authLength,
                                   hb.baseAddress, hiLen, m.baseAddress)
            }
        }
        guard ok == 1 else { throw .cryptoError }
    }

    public func fillIV(_ iv: UnsafeMutableRawBufferPointer) throws(DropReason) {
        let n = iv.count
        guard n <= ivPool.count else { try SecureRandom.fill(iv); return }
        if ivPoolOffset + n > ivPool.count {
            let ok = ivPool.withUnsafeMutableBytes { p in
                sluice_random_bytes(p.baseAddress!.assumingMemoryBound(to: UInt8.self), p.count) == 1
            }
            guard ok else { throw .cryptoError }
            ivPoolOffset = 0
        }
        for i in 0..<n { iv[i] = ivPool[ivPoolOffset + i] }
        // Never hand out the same bytes twice.
        for i in 0..<n { ivPool[ivPoolOffset + i] = 0 }
        ivPoolOffset += n
    }

    public func seal(esp: UnsafeMutableRawBufferPointer, payloadOffset: Int, payloadLength: Int,
                     seqHigh: UInt32?) throws(DropReason) {
        let icvOffset = payloadOffset + payloadLength
        guard esp.count >= icvOffset + 16 else { throw .truncated }
        let base = esp.baseAddress!.assumingMemoryBound(to: UInt8.self)
        if proposal.isAEAD {
            let aadLen = prepareAEAD(esp, seqHigh: seqHigh)
            let ok = nonce.withUnsafeBufferPointer { n in
                aad.withUnsafeBufferPointer { a in
                    sluice_aead_seal(cipher, n.baseAddress, a.baseAddress, aadLen,
                                     base + payloadOffset, payloadLength, base + icvOffset)
                }
            }
            guard ok == 1 else { throw .cryptoError }
            return
        }
        if cipher != nil {
            guard sluice_cbc_crypt(cipher, 1, base + 8, base + payloadOffset, payloadLength) == 1 else { throw .cryptoError }
        }
        try computeHMAC(esp, authLength: icvOffset, seqHigh: seqHigh)
        for i in 0..<16 { esp[icvOffset + i] = mac[i] }
    }

    public func open(esp: UnsafeMutableRawBufferPointer, payloadOffset: Int, payloadLength: Int,
                     seqHigh: UInt32?) throws(DropReason) {
        let icvOffset = payloadOffset + payloadLength
        guard esp.count >= icvOffset + 16 else { throw .truncated }
        let base = esp.baseAddress!.assumingMemoryBound(to: UInt8.self)
        if proposal.isAEAD {
            let aadLen = prepareAEAD(esp, seqHigh: seqHigh)
            let r = nonce.withUnsafeBufferPointer { n in
                aad.withUnsafeBufferPointer { a in
                    sluice_aead_open(cipher, n.baseAddress, a.baseAddress, aadLen,
                                     base + payloadOffset, payloadLength, base + icvOffset)
                }
            }
            if r == 0 { throw .icvMismatch }
            guard r == 1 else { throw .cryptoError }
            return
        }
        // Authenticate before decrypting (RFC 4303 §3.4.4.1).
        try computeHMAC(esp, authLength: icvOffset, seqHigh: seqHigh)
        let equal = mac.withUnsafeBufferPointer { sluice_ct_equal($0.baseAddress, base + icvOffset, 16) }
        guard equal == 1 else { throw .icvMismatch }
        if cipher != nil {
            guard sluice_cbc_crypt(cipher, 0, base + 8, base + payloadOffset, payloadLength) == 1 else { throw .cryptoError }
        }
    }
}

/// Zeroes an array's buffer where it is, shared or not, with OPENSSL_cleanse (which the
/// optimizer cannot drop). Only for key material about to be released: every holder of
/// the buffer sees zeros afterwards.
func wipeInPlace(_ a: [UInt8]) {
    a.withUnsafeBufferPointer { p in
        if let base = p.baseAddress, p.count > 0 { sluice_wipe(UnsafeMutableRawPointer(mutating: base), p.count) }
    }
}

public enum SecureRandom {
    public static func fill(_ p: UnsafeMutableRawBufferPointer) throws(DropReason) {
        guard p.count == 0 || sluice_random_bytes(p.baseAddress!.assumingMemoryBound(to: UInt8.self), p.count) == 1 else {
            throw .cryptoError
        }
    }
}

/// Raw primitives, for the published-vector tests only.
enum CryptoPrimitives {
    static func aesCBC(key: [UInt8], iv: [UInt8], data: [UInt8], encrypt: Bool) -> [UInt8]? {
        guard iv.count == 16, let c = key.withUnsafeBufferPointer({ sluice_cipher_new(SLUICE_CIPHER_AES_CBC, $0.baseAddress, key.count) }) else { return nil }
        defer { sluice_cipher_free(c) }
        var out = data
        let ok = out.withUnsafeMutableBufferPointer { o in
            iv.withUnsafeBufferPointer { sluice_cbc_crypt(c, encrypt ? 1 : 0, $0.baseAddress, o.baseAddress, o.count) }
        }
        return ok == 1 ? out : nil
    }

    static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8]? {
        guard let h = key.withUnsafeBufferPointer({ sluice_hmac_sha256_new($0.baseAddress, key.count) }) else { return nil }
        defer { sluice_hmac_free(h) }
        var out = [UInt8](repeating: 0, count: 32)
        let ok = data.withUnsafeBufferPointer { d in
            out.withUnsafeMutableBufferPointer { sluice_hmac_sha256(h, d.baseAddress, d.count, nil, 0, $0.baseAddress) }
        }
        return ok == 1 ? out : nil
    }
}
