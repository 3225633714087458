import SluiceCore
import Testing
@testable import SluiceIKE

/// SKEYSEED, SK_*, KEYMAT, the IKE rekey and PSK AUTH against what strongSwan 5.9.8 logged
/// (tests/fixtures/ike/strongswan-vectors.json, made by strongswan-kdf-vectors.sh beside it).
@Suite("Key derivation against strongSwan")
struct KeyDerivationTests {
    static let caseNames = ["cbc-sha256-modp2048", "cbc256-sha384-modp3072", "cbc256-sha512-ecp256",
                            "chacha-prfsha512-x25519", "default", "gcm256-prfsha384-ecp384"]

    struct Case {
        let name: String
        let ike: NegotiatedAlgorithms
        let esp: NegotiatedAlgorithms
        let v: [String: Any]
    }

    static func cases() throws -> [Case] {
        let doc = try CryptoVectors.strongSwan()
        guard let list = doc["cases"] as? [[String: Any]] else { throw VectorFileError("no cases") }
        return try list.map { v in
            let name = try v.text("name")
            guard let ike = StrongSwanNames.negotiated(try v.text("ike_proposal")),
                  let esp = StrongSwanNames.negotiated(try v.text("esp_proposal")) else {
                throw VectorFileError("\(name): proposal Sluice cannot name")
            }
            return Case(name: name, ike: ike, esp: esp, v: v)
        }
    }

    static func ikeKeys(_ c: Case, _ section: [String: Any]) throws -> IKEKeys {
        guard let prf = c.ike.prf else { throw VectorFileError("\(c.name): no PRF") }
        return try IKEKeys.derive(prf: prf, encryption: c.ike.encryption, integrity: c.ike.integrity,
                                  sharedSecret: SecretBytes(section.bytes("shared_secret")),
                                  nonceI: section.bytes("nonce_i"), nonceR: section.bytes("nonce_r"),
                                  spiI: section.spi("spi_i"), spiR: section.spi("spi_r"))
    }

    static func expectKeys(_ k: IKEKeys, _ section: [String: Any], _ what: String) throws {
        let names = ["sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"]
        let got = [k.skD, k.skAi, k.skAr, k.skEi, k.skEr, k.skPi, k.skPr]
        for (n, key) in zip(names, got) {
            #expect(key.copied == (try section.bytes(n)), "\(what) \(n)")
        }
    }

    @Test("the vector file has every case, with the algorithms they were recorded for")
    func vectorFileComplete() throws {
        let all = try Self.cases()
        #expect(all.map(\.name) == Self.caseNames)
        let groups = Set(all.compactMap(\.ike.dh))
        #expect(groups == [.modp2048, .modp3072, .ecp256, .ecp384, .curve25519])
        #expect(Set(all.map { $0.ike.encryption.transformID }) == [12, 20, 28])
        #expect(Set(all.compactMap(\.ike.prf)) == [.hmacSHA256, .hmacSHA384, .hmacSHA512])
    }

    @Test("IKE_SA_INIT: SKEYSEED = prf(Ni | Nr, g^ir) and SK_d..SK_pr from prf+")
    func ikeSAInit() throws {
        for c in try Self.cases() {
            let s = try c.v.object("ike")
            let prf = try #require(c.ike.prf)
            let skeyseed = try PRF(prf).compute(key: s.bytes("nonce_i") + s.bytes("nonce_r"), s.bytes("shared_secret"))
            #expect(skeyseed == (try s.bytes("skeyseed")), "\(c.name) SKEYSEED")
            let keys = try Self.ikeKeys(c, s)
            try Self.expectKeys(keys, s, c.name)
            #expect(keys.skEi.count == c.ike.encryption.keyMaterialLength)
        }
    }

    @Test("the peer's KE values strongSwan sent pass Sluice's validation for their group")
    func strongSwanKEValues() throws {
        for c in try Self.cases() {
            let s = try c.v.object("ike")
            let group = try #require(c.ike.dh)
            #expect((s["ke_group"] as? Int) == Int(group.rawValue))
            let mine = try DiffieHellman(group: group)
            for side in ["ke_i", "ke_r"] {
                let value = try s.bytes(side)
                #expect(value.count == group.publicValueLength, "\(c.name) \(side)")
                #expect(try mine.sharedSecret(peer: value).count == (try s.bytes("shared_secret")).count, "\(c.name) \(side)")
            }
        }
    }

    @Test("IKE SA rekey: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), keys with the new SPIs")
    func ikeRekey() throws {
        for c in try Self.cases() {
            let r = try c.v.object("ike_rekey")
            let prf = try #require(c.ike.prf)
            let oldSKd = try r.bytes("old_sk_d")
            #expect(oldSKd == (try c.v.object("ike").bytes("sk_d")))
            let skeyseed = try PRF(prf).compute(key: oldSKd, r.bytes("shared_secret") + r.bytes("nonce_i") + r.bytes("nonce_r"))
            #expect(skeyseed == (try r.bytes("skeyseed")), "\(c.name) rekey SKEYSEED")
            let keys = try IKEKeys.rekey(prf: prf, oldSKd: SecretBytes(oldSKd), encryption: c.ike.encryption,
                                         integrity: c.ike.integrity, sharedSecret: SecretBytes(r.bytes("shared_secret")),
                                         nonceI: r.bytes("nonce_i"), nonceR: r.bytes("nonce_r"),
                                         spiI: r.spi("spi_i"), spiR: r.spi("spi_r"), oldPRF: prf)
            try Self.expectKeys(keys, r, "\(c.name) rekey")
        }
    }

    @Test("CHILD_SA KEYMAT: prf+(SK_d, Ni | Nr), and with PFS prf+(SK_d, g^ir | Ni | Nr) on rekey")
    func childKeyMaterialMatches() throws {
        for c in try Self.cases() {
            let ike = try c.v.object("ike")
            let prf = try #require(c.ike.prf)
            let skD = SecretBytes(try ike.bytes("sk_d"))
            let perDirection = c.esp.encryption.keyMaterialLength + (c.esp.integrity?.keyLength ?? 0)
            for (section, nonces) in [("child", ike), ("child_rekey", try c.v.object("child_rekey"))] {
                let ch = try c.v.object(section)
                let expected = try ch.bytes("keymat")
                #expect(expected.count == 2 * perDirection, "\(c.name) \(section) length")
                let shared = try? ch.bytes("shared_secret")
                if section == "child_rekey" { #expect((shared != nil) == (c.esp.dh != nil), "\(c.name): PFS as negotiated") }
                let km = try childKeyMaterial(prf: prf, skD: skD, sharedSecret: shared.map(SecretBytes.init),
                                              nonceI: nonces.bytes("nonce_i"), nonceR: nonces.bytes("nonce_r"),
                                              length: expected.count)
                #expect(km.copied == expected, "\(c.name) \(section)")
                // Split as RFC 7296 §2.17 orders it: i->r encryption (+salt), integrity, then r->i.
                let k = km.copied, e = c.esp.encryption.keyMaterialLength
                #expect(Array(k[0..<e]) == (try ch.bytes("encr_i")))
                #expect(Array(k[perDirection..<(perDirection + e)]) == (try ch.bytes("encr_r")))
            }
        }
    }

    @Test("PSK AUTH: octets = IKE_SA_INIT message | peer nonce | prf(SK_p, IDx'), AUTH = prf(prf(PSK, pad), octets)")
    func pskAuth() throws {
        let doc = try CryptoVectors.strongSwan()
        let psk = Array(try doc.text("psk").utf8)
        for c in try Self.cases() {
            let ike = try c.v.object("ike")
            let prf = PRF(try #require(c.ike.prf))
            for (side, message, nonce, skp) in [("auth_i", "init_request", "nonce_r", "sk_pi"), ("auth_r", "init_response", "nonce_i", "sk_pr")] {
                let a = try c.v.object(side)
                let octets = try ike.bytes(message) + ike.bytes(nonce) + prf.compute(key: ike.bytes(skp), a.bytes("id_rest"))
                #expect(octets == (try a.bytes("octets")), "\(c.name) \(side) octets")
                let padKey = try prf.compute(key: psk, Array("Key Pad for IKEv2".utf8))
                #expect(padKey == (try a.bytes("prf_psk_keypad")))
                #expect(try prf.compute(key: padKey, octets) == (try a.bytes("auth")), "\(c.name) \(side)")
            }
        }
    }

    @Test("wipe zeroes all seven keys")
    func wipe() throws {
        let keys = try IKEKeys.derive(prf: .hmacSHA256, encryption: .aesCBC(bits: 128), integrity: .hmacSHA256_128,
                                      sharedSecret: SecretBytes([UInt8](repeating: 7, count: 32)),
                                      nonceI: [UInt8](repeating: 1, count: 32), nonceR: [UInt8](repeating: 2, count: 32),
                                      spiI: 1, spiR: 2)
        let all = [keys.skD, keys.skAi, keys.skAr, keys.skEi, keys.skEr, keys.skPi, keys.skPr]
        #expect(all.allSatisfy { $0.bytes.contains { $0 != 0 } })
        keys.wipe()
        #expect(all.allSatisfy { $0.bytes.allSatisfy { $0 == 0 } })
        #expect(all.map(\.count) == [32, 32, 32, 16, 16, 32, 32])
    }
}
