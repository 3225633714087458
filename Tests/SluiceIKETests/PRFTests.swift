import SluiceCore
import Testing
@testable import SluiceIKE

/// HMAC-SHA-2 as the IKE PRF (RFC 4231, RFC 4868) and prf+ (RFC 7296 §2.13).
@Suite("PRF and prf+")
struct PRFTests {
    static func prf(_ hash: String) -> PRFAlgorithm? {
        ["sha256": .hmacSHA256, "sha384": .hmacSHA384, "sha512": .hmacSHA512][hash]
    }

    @Test("HMAC-SHA-256/384/512 reproduce RFC 4231 and RFC 4868 (shared/vectors/esp-vectors.json)")
    func publishedHMAC() throws {
        let list = try CryptoVectors.published().filter {
            $0["kind"] as? String == "integrity_primitive" && (($0["id"] as? String)?.hasPrefix("rfc4") ?? false)
        }
        #expect(list.count == 19, "12 RFC 4868 and 7 RFC 4231 vectors")
        var seen: Set<String> = []
        for v in list {
            let id = try v.text("id")
            let alg = try #require(Self.prf(try v.text("hash")), "\(id)")
            let mac = try PRF(alg).compute(key: v.bytes("key"), v.bytes("data"))
            if v["mac_full"] is String { #expect(mac == (try v.bytes("mac_full")), "\(id)") }
            let icv = try v.bytes("icv")
            #expect(Array(mac.prefix(icv.count)) == icv, "\(id) truncated")
            seen.insert(try v.text("hash"))
        }
        #expect(seen == ["sha256", "sha384", "sha512"])
    }

    // RFC 4231 §4.2-4.8, HMAC-SHA-384 and HMAC-SHA-512 (SHA-256 comes from the vector file).
    static let rfc4231: [(case: String, key: [UInt8], data: [UInt8], sha384: String, sha512: String)] = [
        ("1", [UInt8](repeating: 0x0b, count: 20), Array("Hi There".utf8),
         "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
         "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
        ("2", Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
         "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
         "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
        ("3", [UInt8](repeating: 0xaa, count: 20), [UInt8](repeating: 0xdd, count: 50),
         "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
         "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb"),
        ("4", Array(1...25), [UInt8](repeating: 0xcd, count: 50),
         "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
         "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd"),
        ("6", [UInt8](repeating: 0xaa, count: 131), Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
         "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
         "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"),
        ("7", [UInt8](repeating: 0xaa, count: 131),
         Array("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".utf8),
         "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
         "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58"),
    ]

    @Test("HMAC-SHA-384 and HMAC-SHA-512, RFC 4231")
    func rfc4231LongerHashes() throws {
        for v in Self.rfc4231 {
            #expect(try PRF(.hmacSHA384).compute(key: v.key, v.data) == hex(v.sha384), "case \(v.case)")
            #expect(try PRF(.hmacSHA512).compute(key: v.key, v.data) == hex(v.sha512), "case \(v.case)")
        }
    }

    // Computed independently with Python's hmac module, once:
    // python3 -c "import hmac;k=bytes(range(32));s=bytes(range(100,164))
    // def plus(h,n):
    //   o=b'';t=b'';i=1
    //   while len(o)<n: t=hmac.new(k,t+s+bytes([i]),h).digest();o+=t;i+=1
    //   return o[:n]
    // print(plus('sha256',200).hex());print(plus('sha384',150).hex());print(plus('sha512',300).hex());print(plus('sha256',255*32)[-32:].hex())"
    static let plusKey: [UInt8] = Array(0..<32), plusSeed: [UInt8] = Array(100..<164)
    static let plus256 = "7a0a2d558fd6a6f7d4feba7d70a9a3445c833293c7d929960cea8406f0ac8af0f44306d2b10320997935e79c80d21fba69ae758186ee34769b20b7a4497605a8cfc7997ef950a0d2352fc881f449ce9cc7daefaecc0806bc84218befb756a38b066e3204e25e96ef3f5e1451874a4f8bb932a36b2552abe3a05ea749fcb0a92cba49011923233dceb2da3674ccee0b8656d95ff1b35f0d3b9667688491eb00b1f12f62695e8072a3527af58c6df24282c056a824e990301bbfdf33066496f9a4c16714848ce4aeb8"
    static let plus384 = "3d3acaa2e9851445fdf211b3b37a098fe74c7adbca62f48ef4b0aff8a8ca2d0b76030ea14f530bec18e9e873d9342d85bb8c4f7c9ec3c401fef73752bfe24d20e56aaf176f35d88c504642f977c753483ba665390d6d22b2f7e7d43a10ba25be25c0971032df19b99cf7ed56314572026a881a48ed60dcea3835bb64d7200e7890c115ef982a1896717fdfa9685b4f07d9c4262a7df9"
    static let plus512 = "a6cc27ab24ad34351cd1f6f5e5ca576823ab0b94f255f8f8cc43e6286582cf8102971512b5e2accd0573613a4ff3688e5c8fc9e07483cf1d1fd6aefe0e5f4730f8729ca3fd9db562716644cae42b8ccc5405b1a4e351f945da5055cb36424ac5f7295144f8ad554b1ec9153c958f93b1161fd6b58d96daa113e5b5e2bdf2725fa00658cf6ab747dbd566ea42d9f5bf432118af876c0575a16d32f585dd226963f5a2d474c4303235eeab9402e6c377d1cfc08e18ac9dc90ec562677cee9132b4474e0e027d4f0d99b033cbcbf2cb12c2b9bc198b15b97dc5d02b1e906bd85d81071bd70c8cd237958069ceb9c0387cd738cb621ba7745bdaeb1923389ebdbf6a8abb37523d5b80893402b134b8826aad6d0c861a4b1b157532ba1bd821263838e0149d522162f13068cf7c3a"
    static let plus256Block255 = "c69eb6716e5e901298b1318d9478422649c4c4a6e80b95a59fb501d9be26f65f"

    @Test("prf+ matches an independent computation, for all three PRFs and at a cut inside a block")
    func prfPlusKnownAnswers() throws {
        #expect(try PRF(.hmacSHA256).plus(key: Self.plusKey, seed: Self.plusSeed, length: 200) == hex(Self.plus256))
        #expect(try PRF(.hmacSHA384).plus(key: Self.plusKey, seed: Self.plusSeed, length: 150) == hex(Self.plus384))
        #expect(try PRF(.hmacSHA512).plus(key: Self.plusKey, seed: Self.plusSeed, length: 300) == hex(Self.plus512))
        // A shorter request is a prefix of the longer one; zero bytes is allowed.
        #expect(try PRF(.hmacSHA256).plus(key: Self.plusKey, seed: Self.plusSeed, length: 33) == Array(hex(Self.plus256).prefix(33)))
        #expect(try PRF(.hmacSHA256).plus(key: Self.plusKey, seed: Self.plusSeed, length: 0) == [])
    }

    @Test("prf+ stops at 255 blocks: the 255th block is right, one byte more is an error")
    func prfPlusLimit() throws {
        let prf = PRF(.hmacSHA256)
        let all = try prf.plus(key: Self.plusKey, seed: Self.plusSeed, length: 255 * 32)
        #expect(Array(all.suffix(32)) == hex(Self.plus256Block255))
        #expect(throws: KeyDerivationError.tooLong(requested: 255 * 32 + 1, limit: 255 * 32)) {
            try prf.plus(key: Self.plusKey, seed: Self.plusSeed, length: 255 * 32 + 1)
        }
        #expect(throws: KeyDerivationError.tooLong(requested: 255 * 64 + 1, limit: 255 * 64)) {
            try PRF(.hmacSHA512).plus(key: Self.plusKey, seed: [], length: 255 * 64 + 1)
        }
        #expect(throws: KeyDerivationError.negativeLength(-1)) { try prf.plus(key: Self.plusKey, seed: [], length: -1) }
    }

    @Test("key lengths: PRF output, integrity keys and ICVs (RFC 4868), AEAD salt")
    func lengths() {
        #expect([PRFAlgorithm.hmacSHA256, .hmacSHA384, .hmacSHA512].map(\.outputLength) == [32, 48, 64])
        #expect([IntegrityAlgorithm.hmacSHA256_128, .hmacSHA384_192, .hmacSHA512_256].map(\.keyLength) == [32, 48, 64])
        #expect([IntegrityAlgorithm.hmacSHA256_128, .hmacSHA384_192, .hmacSHA512_256].map(\.icvLength) == [16, 24, 32])
        let e: [EncryptionAlgorithm] = [.aesCBC(bits: 128), .aesCBC(bits: 256), .aesGCM16(bits: 128), .aesGCM16(bits: 256), .chacha20poly1305]
        #expect(e.map(\.transformID) == [12, 12, 20, 20, 28])
        #expect(e.map(\.keyLength) == [16, 32, 16, 32, 32])
        #expect(e.map(\.keyMaterialLength) == [16, 32, 20, 36, 36])
        #expect(e.map(\.isAEAD) == [false, false, true, true, true])
        #expect(e.map(\.keyLengthAttribute) == [128, 256, 128, 256, nil])
        #expect(IKEKeys.lengths(prf: .hmacSHA384, encryption: .aesGCM16(bits: 256), integrity: nil) == [48, 0, 0, 36, 36, 48, 48])
        #expect(IKEKeys.lengths(prf: .hmacSHA256, encryption: .aesCBC(bits: 128), integrity: .hmacSHA512_256) == [32, 64, 64, 16, 16, 32, 32])
    }
}
