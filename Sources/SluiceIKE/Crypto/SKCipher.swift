import CSluiceCrypto
import SluiceCore
import Synchronization

/// Why an SKCipher could not be made or could not seal. Never carries key bytes.
public enum SKCipherError: Error, Equatable, CustomStringConvertible, Sendable {
    case keyLength(key: String, expected: Int, got: Int)
    /// AES-CBC without an integrity algorithm and key, or an AEAD with one.
    case integrityMismatch(String)
    case unsupported(EncryptionAlgorithm)
    case cryptoFailure(String)
    /// 2^64 AEAD IVs used under one key: the SA must have been rekeyed long before.
    case ivExhausted

    public var description: String {
        switch self {
        case let .keyLength(k, e, g): return "\(k) must be \(e) bytes, got \(g)"
        case let .integrityMismatch(why): return why
        case let .unsupported(a): return "encryption \(a.keyword) is not supported"
        case let .cryptoFailure(what): return "OpenSSL could not \(what)"
        case .ivExhausted: return "the SK cipher has used every IV of its key"
        }
    }
}

/// Protects SK payloads for one direction of one IKE SA (RFC 7296 §3.14; RFC 5282 for AES-GCM;
/// RFC 7634 for ChaCha20-Poly1305).
///
/// An IV never repeats under one key: AEAD IVs are a 64-bit counter (RFC 5282 §3.1) starting at
/// a random value, CBC IVs come from the CSPRNG. So keep one SKCipher per key for the IKE SA's
/// lifetime; a second one made from the same SK_e would run its own counter. Calls are
/// serialised internally (the OpenSSL contexts are not thread-safe).
public final class SKCipher: @unchecked Sendable {
    public enum Failure: Error, Equatable, Sendable { case integrity, malformed }

    public let encryption: EncryptionAlgorithm
    public let integrity: IntegrityAlgorithm?
    /// ICV bytes at the end of the SK body: 16 for the AEADs, the truncated HMAC for CBC.
    public let icvLength: Int

    private let cipher: OpaquePointer
    private let mac: KeyedHMAC?
    /// AEAD nonce = salt (4 bytes, the end of SK_e, wiped in deinit) | explicit IV (8).
    private var nonce = [UInt8](repeating: 0, count: 12)
    private let lock: Mutex<IVCounter>

    private struct IVCounter {
        var next: UInt64
        var remaining = UInt64.max
    }

    /// `key` is SK_e (with its salt for AEADs); `integrityKey` SK_a (nil for AEADs).
    public init(encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm?, key: SecretBytes,
                integrityKey: SecretBytes?) throws {
        guard encryption.isSupported else { throw SKCipherError.unsupported(encryption) }
        let km = key.bytes // shares the SecretBytes buffer; slices of it are not copies either
        guard km.count == encryption.keyMaterialLength else {
            throw SKCipherError.keyLength(key: "SK_e", expected: encryption.keyMaterialLength, got: km.count)
        }
        var h: KeyedHMAC?
        if encryption.isAEAD {
            guard integrity == nil, (integrityKey?.count ?? 0) == 0 else {
                throw SKCipherError.integrityMismatch("\(encryption.keyword) is an AEAD: it takes no integrity algorithm or SK_a")
            }
        } else {
            guard let integrity, let ik = integrityKey?.bytes else {
                throw SKCipherError.integrityMismatch("\(encryption.keyword) needs an integrity algorithm and SK_a")
            }
            guard ik.count == integrity.keyLength else {
                throw SKCipherError.keyLength(key: "SK_a", expected: integrity.keyLength, got: ik.count)
            }
            guard let m = KeyedHMAC(integrity.digest, key: ik[...]) else { throw SKCipherError.cryptoFailure("set up the HMAC") }
            h = m
        }
        let kind: sluice_cipher_kind
        switch encryption {
        case .aesCBC: kind = SLUICE_CIPHER_AES_CBC
        case .aesGCM16: kind = SLUICE_CIPHER_AES_GCM
        case .chacha20poly1305: kind = SLUICE_CIPHER_CHACHA20_POLY1305
        }
        let n = encryption.keyLength
        guard let c = km[0..<n].withUnsafeBufferPointer({ sluice_cipher_new(kind, $0.baseAddress, $0.count) }) else {
            throw SKCipherError.cryptoFailure("set up \(encryption.keyword)")
        }
        var start: UInt64 = 0
        let random = withUnsafeMutableBytes(of: &start) { sluice_random_bytes($0.baseAddress!.assumingMemoryBound(to: UInt8.self), 8) }
        guard random == 1 else {
            sluice_cipher_free(c)
            throw SKCipherError.cryptoFailure("draw a random IV start")
        }
        self.encryption = encryption
        self.integrity = encryption.isAEAD ? nil : integrity
        icvLength = encryption.isAEAD ? 16 : (integrity?.icvLength ?? 0)
        cipher = c
        mac = h
        lock = Mutex(IVCounter(next: start))
        for i in 0..<encryption.saltLength { nonce[i] = km[n + i] }
    }

    deinit {
        sluice_cipher_free(cipher) // OpenSSL cleanses the key schedule; KeyedHMAC its key
        wipeBytes(nonce)
    }

    /// SK body size (IV | ciphertext with padding and pad length | ICV) for `plaintextLength` bytes.
    public func sealedLength(_ plaintextLength: Int) -> Int {
        encryption.ivLength + paddedLength(plaintextLength) + icvLength
    }

    /// Plaintext, padding and the pad length byte: a whole number of AES blocks for CBC; the
    /// AEADs need no padding (RFC 5282 §3, RFC 7634 §3), so only the pad length byte is added.
    private func paddedLength(_ n: Int) -> Int {
        encryption.isAEAD ? n + 1 : (n + 1 + 15) / 16 * 16
    }

    /// `prefix`: the IKE header and SK generic header with final lengths. AEAD: it is the AAD;
    /// CBC: the ICV is over prefix | IV | ciphertext. Returns the SK body.
    public func seal(prefix: [UInt8], plaintext: [UInt8]) throws -> [UInt8] {
        let padded = paddedLength(plaintext.count)
        guard padded <= Int(Int32.max) / 2, prefix.count <= Int(Int32.max) / 2 else {
            throw SKCipherError.cryptoFailure("seal a message that large")
        }
        var data = plaintext
        data.reserveCapacity(padded)
        data += [UInt8](repeating: 0, count: padded - plaintext.count - 1)
        data.append(UInt8(padded - plaintext.count - 1))
        return try lock.withLock { (counter: inout IVCounter) throws(SKCipherError) -> [UInt8] in
            encryption.isAEAD ? try sealAEAD(prefix: prefix, data: data, counter: &counter)
                              : try sealCBC(prefix: prefix, data: data)
        }
    }

    private func sealAEAD(prefix: [UInt8], data: [UInt8], counter: inout IVCounter) throws(SKCipherError) -> [UInt8] {
        guard counter.remaining > 0 else { throw .ivExhausted }
        let iv = bigEndian(counter.next)
        counter.next &+= 1
        counter.remaining -= 1
        for i in 0..<8 { nonce[4 + i] = iv[i] }
        var body = iv + data + [UInt8](repeating: 0, count: 16)
        let n = data.count
        let ok = body.withUnsafeMutableBufferPointer { b in
            nonce.withUnsafeBufferPointer { nb in
                prefix.withUnsafeBufferPointer { p in
                    sluice_aead_seal(cipher, nb.baseAddress, p.baseAddress, p.count, b.baseAddress! + 8, n, b.baseAddress! + 8 + n)
                }
            }
        }
        guard ok == 1 else { throw .cryptoFailure("seal the SK payload") }
        return body
    }

    private func sealCBC(prefix: [UInt8], data: [UInt8]) throws(SKCipherError) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 16) + data
        let n = data.count
        let ok = body.withUnsafeMutableBufferPointer { b in
            sluice_random_bytes(b.baseAddress, 16) == 1 && sluice_cbc_crypt(cipher, 1, b.baseAddress, b.baseAddress! + 16, n) == 1
        }
        guard ok, let icv = mac?.mac([prefix[...], body[...]], length: icvLength) else {
            throw .cryptoFailure("seal the SK payload")
        }
        return body + icv
    }

    /// Verifies and decrypts; returns the inner payload chain without padding.
    public func open(prefix: [UInt8], body: [UInt8]) throws(Failure) -> [UInt8] {
        try lock.withLock { (_: inout IVCounter) throws(Failure) -> [UInt8] in
            encryption.isAEAD ? try openAEAD(prefix: prefix, body: body) : try openCBC(prefix: prefix, body: body)
        }
    }

    private func openAEAD(prefix: [UInt8], body: [UInt8]) throws(Failure) -> [UInt8] {
        // IV, at least the pad length byte, ICV.
        guard body.count >= 8 + 1 + 16, body.count - 24 <= Int(Int32.max), prefix.count <= Int(Int32.max) else {
            throw .malformed
        }
        for i in 0..<8 { nonce[4 + i] = body[i] }
        let n = body.count - 8 - 16
        var data = Array(body[8..<(8 + n)])
        let r = data.withUnsafeMutableBufferPointer { d in
            nonce.withUnsafeBufferPointer { nb in
                prefix.withUnsafeBufferPointer { p in
                    body.withUnsafeBufferPointer { b in
                        sluice_aead_open(cipher, nb.baseAddress, p.baseAddress, p.count, d.baseAddress, n, b.baseAddress! + 8 + n)
                    }
                }
            }
        }
        guard r == 1 else { throw .integrity } // not authentic (or OpenSSL could not tell: drop it too)
        return try unpad(data)
    }

    private func openCBC(prefix: [UInt8], body: [UInt8]) throws(Failure) -> [UInt8] {
        let icv = icvLength
        guard body.count >= 16 + 16 + icv, (body.count - 16 - icv) % 16 == 0, body.count <= Int(Int32.max) else {
            throw .malformed
        }
        let macEnd = body.count - icv
        // Authenticate before decrypting (RFC 7296 §3.14), comparing in constant time.
        guard let want = mac?.mac([prefix[...], body[0..<macEnd]], length: icv) else { throw .integrity }
        let equal = want.withUnsafeBufferPointer { w in
            body.withUnsafeBufferPointer { b in sluice_ct_equal(w.baseAddress, b.baseAddress! + macEnd, icv) }
        }
        guard equal == 1 else { throw .integrity }
        var data = Array(body[16..<macEnd])
        let ok = data.withUnsafeMutableBufferPointer { d in
            body.withUnsafeBufferPointer { b in sluice_cbc_crypt(cipher, 0, b.baseAddress, d.baseAddress, d.count) }
        }
        guard ok == 1 else { throw .malformed }
        return try unpad(data)
    }

    /// Drops the padding and the pad length byte; padding bytes may hold anything (§3.14).
    private func unpad(_ data: [UInt8]) throws(Failure) -> [UInt8] {
        guard let last = data.last, Int(last) + 1 <= data.count else { throw .malformed }
        return Array(data[0..<(data.count - Int(last) - 1)])
    }
}
