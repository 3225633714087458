import CSluiceCrypto
import SluiceCore
import Testing
@testable import SluiceIKE

/// SK payload protection (RFC 7296 §3.14, RFC 5282, RFC 7634): round trips, tampering, padding,
/// IVs, and the messages strongSwan sent (opened here with the keys it logged).
@Suite("SK payload cipher")
struct SKCipherTests {
    static let suites: [(EncryptionAlgorithm, IntegrityAlgorithm?)] = [
        (.aesCBC(bits: 128), .hmacSHA256_128), (.aesCBC(bits: 256), .hmacSHA384_192), (.aesCBC(bits: 256), .hmacSHA512_256),
        (.aesGCM16(bits: 128), nil), (.aesGCM16(bits: 256), nil), (.chacha20poly1305, nil),
    ]

    static func random(_ n: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: n)
        b.withUnsafeMutableBufferPointer { _ = sluice_random_bytes($0.baseAddress, n) }
        return b
    }

    /// Keys are copied into the SecretBytes: it wipes the buffer it was given when it goes away.
    static func cipher(_ e: EncryptionAlgorithm, _ i: IntegrityAlgorithm?, key: [UInt8]? = nil, integrityKey: [UInt8]? = nil) throws -> SKCipher {
        try SKCipher(encryption: e, integrity: i, key: SecretBytes((key ?? random(e.keyMaterialLength)).map { $0 }),
                     integrityKey: i.map { SecretBytes((integrityKey ?? random($0.keyLength)).map { $0 }) })
    }

    /// Two ciphers with the same keys: one direction's sender and receiver.
    static func pair(_ e: EncryptionAlgorithm, _ i: IntegrityAlgorithm?) throws -> (SKCipher, SKCipher) {
        let k = random(e.keyMaterialLength), ik = i.map { random($0.keyLength) }
        return (try cipher(e, i, key: k, integrityKey: ik), try cipher(e, i, key: k, integrityKey: ik))
    }

    static let prefix: [UInt8] = Array(0..<32)

    @Test("round trips for every suite and length 0...40 and 1000; body sizes as sealedLength says")
    func roundTrips() throws {
        for (e, i) in Self.suites {
            let (tx, rx) = try Self.pair(e, i)
            for n in Array(0...40) + [1000] {
                let plain = Self.random(n)
                let body = try tx.seal(prefix: Self.prefix, plaintext: plain)
                #expect(body.count == tx.sealedLength(n), "\(e.keyword) \(n)")
                if e.isAEAD {
                    #expect(body.count == 8 + n + 1 + 16, "AEADs pad with nothing but the pad length byte")
                } else {
                    #expect((body.count - 16 - tx.icvLength) % 16 == 0 && body.count - 16 - tx.icvLength >= n + 1)
                }
                #expect(try rx.open(prefix: Self.prefix, body: body) == plain, "\(e.keyword) \(n)")
            }
        }
    }

    @Test("any changed bit of prefix, IV, ciphertext or ICV fails integrity; a wrong key too")
    func tamperDetection() throws {
        for (e, i) in Self.suites {
            let (tx, rx) = try Self.pair(e, i)
            let plain = Array("IDi AUTH SA TSi TSr".utf8)
            let body = try tx.seal(prefix: Self.prefix, plaintext: plain)
            for at in [0, e.ivLength - 1, e.ivLength, body.count - tx.icvLength - 1, body.count - 1] {
                var bad = body
                bad[at] ^= 0x01
                #expect(throws: SKCipher.Failure.integrity, "\(e.keyword) byte \(at)") { try rx.open(prefix: Self.prefix, body: bad) }
            }
            var badPrefix = Self.prefix
            badPrefix[3] ^= 0x80
            #expect(throws: SKCipher.Failure.integrity) { try rx.open(prefix: badPrefix, body: body) }
            let stranger = try Self.cipher(e, i)
            #expect(throws: SKCipher.Failure.integrity) { try stranger.open(prefix: Self.prefix, body: body) }
        }
    }

    @Test("bodies too short or not whole blocks are malformed")
    func malformedBodies() throws {
        for (e, i) in Self.suites {
            let c = try Self.cipher(e, i)
            let minimum = e.isAEAD ? 8 + 1 + 16 : 16 + 16 + c.icvLength
            #expect(throws: SKCipher.Failure.malformed) { try c.open(prefix: Self.prefix, body: Self.random(minimum - 1)) }
            #expect(throws: SKCipher.Failure.malformed) { try c.open(prefix: Self.prefix, body: []) }
            if !e.isAEAD {
                #expect(throws: SKCipher.Failure.malformed) { try c.open(prefix: Self.prefix, body: Self.random(minimum + 5)) }
                // Whole blocks but a wrong ICV: integrity, not malformed, and nothing is decrypted.
                #expect(throws: SKCipher.Failure.integrity) { try c.open(prefix: Self.prefix, body: Self.random(minimum + 16)) }
            }
        }
    }

    @Test("CBC checks the ICV before decrypting: an authentic body with a bad pad length is malformed")
    func cbcMacBeforeDecrypt() throws {
        let key = Self.random(16), ik = Self.random(32)
        let c = try Self.cipher(.aesCBC(bits: 128), .hmacSHA256_128, key: key, integrityKey: ik)
        // One block whose pad length byte (0x20) claims more padding than the block holds.
        var block = [UInt8](repeating: 0x41, count: 16)
        block[15] = 0x20
        let iv = Self.random(16)
        let raw = try #require(key.withUnsafeBufferPointer { sluice_cipher_new(SLUICE_CIPHER_AES_CBC, $0.baseAddress, 16) })
        defer { sluice_cipher_free(raw) }
        let ok = block.withUnsafeMutableBufferPointer { b in iv.withUnsafeBufferPointer { sluice_cbc_crypt(raw, 1, $0.baseAddress, b.baseAddress, 16) } }
        #expect(ok == 1)
        let mac = try #require(KeyedHMAC(SLUICE_DIGEST_SHA256, key: ik[...])?.mac([Self.prefix[...], (iv + block)[...]], length: 16))
        #expect(throws: SKCipher.Failure.malformed) { try c.open(prefix: Self.prefix, body: iv + block + mac) }
        var forged = mac
        forged[0] ^= 1
        #expect(throws: SKCipher.Failure.integrity) { try c.open(prefix: Self.prefix, body: iv + block + forged) }
    }

    @Test("IVs never repeat: AEAD IVs count up from a random start, CBC IVs are random")
    func ivs() throws {
        for (e, i) in Self.suites {
            let c = try Self.cipher(e, i)
            let bodies = try (0..<50).map { _ in try c.seal(prefix: Self.prefix, plaintext: [1, 2, 3]) }
            let ivs = bodies.map { Array($0.prefix(e.ivLength)) }
            #expect(Set(ivs).count == 50, "\(e.keyword)")
            if e.isAEAD {
                let counters = ivs.map { $0.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
                #expect(zip(counters, counters.dropFirst()).allSatisfy { $1 == $0 &+ 1 })
            }
        }
        // Two ciphers under different keys start their counters at unrelated points.
        let a = try Self.cipher(.aesGCM16(bits: 128), nil), b = try Self.cipher(.aesGCM16(bits: 128), nil)
        #expect(try a.seal(prefix: [], plaintext: []).prefix(8) != b.seal(prefix: [], plaintext: []).prefix(8))
    }

    @Test("setup refuses wrong key lengths, a missing or extra integrity algorithm, AES-192")
    func setupErrors() {
        let e16 = SecretBytes([UInt8](repeating: 1, count: 16)), a32 = SecretBytes([UInt8](repeating: 2, count: 32))
        #expect(throws: SKCipherError.keyLength(key: "SK_e", expected: 20, got: 16)) {
            try SKCipher(encryption: .aesGCM16(bits: 128), integrity: nil, key: e16, integrityKey: nil)
        }
        #expect(throws: SKCipherError.keyLength(key: "SK_a", expected: 48, got: 32)) {
            try SKCipher(encryption: .aesCBC(bits: 128), integrity: .hmacSHA384_192, key: e16, integrityKey: a32)
        }
        #expect(throws: SKCipherError.self) { try SKCipher(encryption: .aesCBC(bits: 128), integrity: nil, key: e16, integrityKey: nil) }
        #expect(throws: SKCipherError.self) {
            try SKCipher(encryption: .chacha20poly1305, integrity: .hmacSHA256_128,
                         key: SecretBytes([UInt8](repeating: 1, count: 36)), integrityKey: a32)
        }
        #expect(throws: SKCipherError.unsupported(.aesCBC(bits: 192))) {
            try SKCipher(encryption: .aesCBC(bits: 192), integrity: .hmacSHA256_128,
                         key: SecretBytes([UInt8](repeating: 1, count: 24)), integrityKey: a32)
        }
    }

    @Test("every encrypted message strongSwan sent opens with the keys it logged, to the same payloads")
    func strongSwanMessages() throws {
        var opened = 0, byCipher: Set<UInt16> = []
        for c in try KeyDerivationTests.cases() {
            guard let messages = c.v["messages"] as? [[String: Any]] else { throw VectorFileError("\(c.name): no messages") }
            #expect(messages.count >= 10, "\(c.name)")
            for m in messages {
                let keys = try c.v.object(try m.text("keys") == "ike" ? "ike" : "ike_rekey")
                let fromI = (m["from_initiator"] as? Bool) == true
                let integrity = c.ike.encryption.isAEAD ? nil : c.ike.integrity
                let rx = try SKCipher(encryption: c.ike.encryption, integrity: integrity,
                                      key: SecretBytes(keys.bytes(fromI ? "sk_ei" : "sk_er")),
                                      integrityKey: integrity == nil ? nil : SecretBytes(keys.bytes(fromI ? "sk_ai" : "sk_ar")))
                let msg = try m.bytes("message")
                #expect(Int(msg[28]) == (m["first_inner"] as? Int))
                let inner = try rx.open(prefix: Array(msg[0..<32]), body: Array(msg[32...]))
                #expect(inner == (try m.bytes("inner")), "\(c.name)")
                var bad = msg
                bad[bad.count - 1] ^= 0x01
                #expect(throws: SKCipher.Failure.integrity) { try rx.open(prefix: Array(bad[0..<32]), body: Array(bad[32...])) }
                opened += 1
                byCipher.insert(c.ike.encryption.transformID)
            }
        }
        #expect(opened >= 60)
        #expect(byCipher == [12, 20, 28])
    }
}
