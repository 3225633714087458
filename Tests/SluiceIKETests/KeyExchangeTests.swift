import SluiceCore
import Testing
@testable import SluiceIKE

/// Key exchange: X25519 (RFC 7748 §5.2, §6.1; RFC 8031), ECP (RFC 5903 §8), MODP (RFC 3526),
/// and the peer-value checks of RFC 6989 / RFC 8031.
@Suite("Key exchange")
struct KeyExchangeTests {
    // RFC 7748 §5.2: scalar, u-coordinate, result. The second result was recomputed with Python's
    // cryptography (X25519PrivateKey.exchange), which reproduces the first and §6.1 as printed.
    static let x25519Vectors: [(String, String, String)] = [
        ("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
         "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
         "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"),
        ("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
         "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
         "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"),
    ]

    @Test("X25519 scalar multiplication, RFC 7748 §5.2")
    func x25519ScalarMult() throws {
        for (k, u, out) in Self.x25519Vectors {
            let dh = try DiffieHellman(group: .curve25519, privateKey: hex(k))
            #expect(try dh.sharedSecret(peer: hex(u)).copied == hex(out))
        }
    }

    @Test("X25519 iterated 1 and 1000 times, RFC 7748 §5.2")
    func x25519Iterated() throws {
        var k = [UInt8](repeating: 0, count: 32), u = k
        k[0] = 9; u[0] = 9
        for i in 1...1000 {
            let r = try DiffieHellman(group: .curve25519, privateKey: k).sharedSecret(peer: u).copied
            u = k; k = r
            if i == 1 { #expect(k == hex("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")) }
        }
        #expect(k == hex("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"))
    }

    @Test("X25519 Diffie-Hellman, RFC 7748 §6.1: public values and the shared secret")
    func x25519Agreement() throws {
        let alice = try DiffieHellman(group: .curve25519, privateKey: hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        let bob = try DiffieHellman(group: .curve25519, privateKey: hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
        #expect(alice.publicValue == hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
        #expect(bob.publicValue == hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
        let k = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        #expect(try alice.sharedSecret(peer: bob.publicValue).copied == k)
        #expect(try bob.sharedSecret(peer: alice.publicValue).copied == k)
    }

    @Test("X25519 refuses points that give the all-zero secret (RFC 8031 §2) and wrong lengths")
    func x25519Refusals() throws {
        let dh = try DiffieHellman(group: .curve25519)
        #expect(dh.publicValue.count == 32)
        var one = [UInt8](repeating: 0, count: 32); one[0] = 1
        let pMinus1 = hex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
        for bad in [[UInt8](repeating: 0, count: 32), one, pMinus1] {
            #expect(throws: DHError(group: .curve25519, kind: .invalidPublicValue)) { try dh.sharedSecret(peer: bad) }
        }
        #expect(throws: DHError(group: .curve25519, kind: .wrongLength(expected: 32, got: 31))) {
            try dh.sharedSecret(peer: Array(dh.publicValue.prefix(31)))
        }
        let other = try DiffieHellman(group: .curve25519)
        #expect(try dh.sharedSecret(peer: other.publicValue) == other.sharedSecret(peer: dh.publicValue))
    }

    /// RFC 5903 §8.1 (ECP-256) and §8.2 (ECP-384): i, g^i = (gix, giy), r, g^r, g^ir x coordinate.
    static let ecpVectors: [(DHGroup, i: String, gi: String, r: String, gr: String, gir: String)] = [
        (.ecp256,
         "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
         "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
            + "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
         "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
         "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
            + "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
         "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE"),
        (.ecp384,
         "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655E35B538041E649EE3FAEF896783AB194",
         "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6DE3AC808ACB4BDB4C88732AEE95F41AA"
            + "9482ED1FC0EEB9CAFC4984625CCFC23F65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
         "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942E0308312916B8ED2960E4BD55A7448FC",
         "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D0D1AC43A0336DEF96FDA41D0774A3571"
            + "DCFBEC7AACF3196472169E838430367F66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
         "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4D603135569B9E9D09CF5D4A270F59746"),
    ]

    @Test("ECP-256 and ECP-384, RFC 5903 §8: x|y public values and g^ir (x only) on both sides")
    func ecpVectorsAgree() throws {
        for v in Self.ecpVectors {
            let i = try DiffieHellman(group: v.0, privateKey: hex(v.i))
            let r = try DiffieHellman(group: v.0, privateKey: hex(v.r))
            #expect(i.publicValue == hex(v.gi), "\(v.0) g^i")
            #expect(r.publicValue == hex(v.gr), "\(v.0) g^r")
            #expect(i.publicValue.count == v.0.publicValueLength)
            #expect(try i.sharedSecret(peer: r.publicValue).copied == hex(v.gir), "\(v.0) initiator g^ir")
            #expect(try r.sharedSecret(peer: i.publicValue).copied == hex(v.gir), "\(v.0) responder g^ir")
        }
    }

    @Test("ECP refuses points off the curve, (0,0), coordinates >= p and the 0x04 form")
    func ecpRefusals() throws {
        for v in Self.ecpVectors {
            let dh = try DiffieHellman(group: v.0)
            let n = v.0.publicValueLength
            var offCurve = hex(v.gr)
            offCurve[n - 1] ^= 0x01
            let invalid: [[UInt8]] = [offCurve, [UInt8](repeating: 0, count: n), [UInt8](repeating: 0xFF, count: n)]
            for bad in invalid {
                #expect(throws: DHError(group: v.0, kind: .invalidPublicValue)) { try dh.sharedSecret(peer: bad) }
            }
            #expect(throws: DHError(group: v.0, kind: .wrongLength(expected: n, got: n + 1))) {
                try dh.sharedSecret(peer: [0x04] + hex(v.gr))
            }
            #expect(try dh.sharedSecret(peer: hex(v.gr)).count == n / 2)
        }
    }

    // RFC 3526 primes, as OpenSSL names them: `openssl genpkey -genparam -algorithm DH
    // -pkeyopt group:modp_2048 | openssl asn1parse` (first INTEGER); likewise modp_3072.
    static let p2048 = hex(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        + "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        + "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        + "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        + "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        + "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        + "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        + "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF")
    static let p3072 = hex(
        "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
        + "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
        + "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
        + "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
        + "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
        + "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
        + "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
        + "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
        + "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
        + "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
        + "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
        + "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF")

    @Test("MODP 2048 and 3072: both sides agree, values padded to the prime's length")
    func modpAgreement() throws {
        for group in [DHGroup.modp2048, .modp3072] {
            let a = try DiffieHellman(group: group), b = try DiffieHellman(group: group)
            #expect(a.publicValue.count == group.publicValueLength)
            let s1 = try a.sharedSecret(peer: b.publicValue), s2 = try b.sharedSecret(peer: a.publicValue)
            #expect(s1 == s2)
            #expect(s1.count == group.publicValueLength)
            #expect(a.publicValue != b.publicValue)
        }
    }

    @Test("MODP refuses 0, 1, p-1, p, values above p, a short value, and elements outside the group")
    func modpRefusals() throws {
        for (group, p) in [(DHGroup.modp2048, Self.p2048), (.modp3072, Self.p3072)] {
            #expect(p.count == group.publicValueLength)
            let dh = try DiffieHellman(group: group)
            let n = p.count
            func value(_ v: UInt8) -> [UInt8] { [UInt8](repeating: 0, count: n - 1) + [v] }
            var pMinus1 = p; pMinus1[n - 1] -= 1
            var pMinus2 = p; pMinus2[n - 1] -= 2 // -2: not a square mod p, so not a g^x
            let pPlus1 = Self.increment(p)
            for bad in [value(0), value(1), pMinus1, p, pPlus1, [UInt8](repeating: 0xFF, count: n), pMinus2] {
                #expect(throws: DHError(group: group, kind: .invalidPublicValue)) { try dh.sharedSecret(peer: bad) }
            }
            #expect(throws: DHError(group: group, kind: .wrongLength(expected: n, got: n - 1))) {
                try dh.sharedSecret(peer: Array(value(5).dropFirst()))
            }
            // 2 is g itself: a valid public value; g^x for the peer is our own public value.
            #expect(try dh.sharedSecret(peer: value(2)).copied == dh.publicValue)
        }
    }

    /// Big-endian a + 1 (same length; the primes here are far from 2^n - 1).
    static func increment(_ a: [UInt8]) -> [UInt8] {
        var r = a
        var i = r.count - 1
        while i >= 0 {
            r[i] &+= 1
            if r[i] != 0 { break }
            i -= 1
        }
        return r
    }

    @Test("MODP private keys cannot be imported; the description names the group, never a value")
    func modpImportAndDescriptions() throws {
        #expect(throws: DHError(group: .modp2048, kind: .cryptoFailure)) {
            try DiffieHellman(group: .modp2048, privateKey: [UInt8](repeating: 7, count: 32))
        }
        let e = DHError(group: .ecp256, kind: .invalidPublicValue)
        #expect(e.description == "DH group 19 (ecp256): the peer's key exchange value is not valid for the group")
    }
}
