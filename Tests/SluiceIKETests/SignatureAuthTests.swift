import Testing
@testable import SluiceIKE
import SluiceCore
import SluiceTestFixtures

@Suite struct SignatureAuthTests {
    /// RFC 7427 Appendix A: the AlgorithmIdentifiers, byte for byte.
    @Test func algorithmIdentifiersAreRFC7427AppendixA() throws {
        let cases: [(SignatureScheme, String)] = [
            (SignatureScheme(.rsaPKCS1, .sha256), "300d06092a864886f70d01010b0500"),       // A.1.2
            (SignatureScheme(.rsaPKCS1, .sha384), "300d06092a864886f70d01010c0500"),       // A.1.3
            (SignatureScheme(.rsaPKCS1, .sha512), "300d06092a864886f70d01010d0500"),       // A.1.4
            (SignatureScheme(.ecdsa, .sha256), "300a06082a8648ce3d040302"),                 // A.3.1
            (SignatureScheme(.ecdsa, .sha384), "300a06082a8648ce3d040303"),                 // A.3.2
            (SignatureScheme(.ecdsa, .sha512), "300a06082a8648ce3d040304"),                 // A.3.3
            (SignatureScheme(.ed25519, .identity), "300506032b6570"),                       // RFC 8420 §2
            // A.4.3: RSASSA-PSS with SHA-256, MGF1 with SHA-256, salt 32.
            (SignatureScheme(.rsaPSS(saltLength: 32), .sha256),
             "304606092a864886f70d01010a3039a00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120a303020101"),
        ]
        for (scheme, der) in cases {
            #expect(scheme.algorithmIdentifier == hex(der), "\(scheme)")
            #expect(try SignatureScheme(algorithmIdentifier: hex(der)[...]) == scheme, "\(scheme)")
        }
        // ECDSA with a NULL parameter, as some implementations send it, is the same scheme.
        #expect(try SignatureScheme(algorithmIdentifier: hex("300c06082a8648ce3d0403020500")[...]) == SignatureScheme(.ecdsa, .sha256))
    }

    @Test func sha1AndUnknownAlgorithmsAreRefused() {
        let refused: [(String, SignatureSchemeError)] = [
            ("300d06092a864886f70d0101050500", .sha1("sha1WithRSAEncryption")),           // A.1.1
            ("300906072a8648ce3d0401", .sha1("ecdsa-with-SHA1")),
            ("300b06092a864886f70d01010a", .sha1("RSASSA-PSS with default (SHA-1) parameters")),
            ("300506032b6571", .unsupported("algorithm 1.3.101.113")),                       // Ed448
            ("300a06082a8648ce3d04030205", .malformed("AlgorithmIdentifier: 1 bytes after its end (byte 12)")),
            ("300b06082a8648ce3d040302", .malformed("AlgorithmIdentifier: length 11 runs past the end (byte 2)")),
        ]
        for (der, error) in refused {
            #expect(throws: error, "\(der)") { try SignatureScheme(algorithmIdentifier: hex(der)[...]) }
        }
        #expect(throws: SignatureSchemeError.sha1(AuthMethod.name(AuthMethod.rsaSignature))) {
            try SignatureAuthData.decode(method: AuthMethod.rsaSignature, [UInt8](repeating: 1, count: 256))
        }
        #expect(throws: SignatureSchemeError.self) { try SignatureAuthData.decode(method: AuthMethod.digitalSignature, [0x05, 0x30]) }
        #expect(throws: SignatureSchemeError.self) { try SignatureAuthData.decode(method: 3, [1, 2, 3]) }
    }

    @Test func hashChoiceHonoursThePeersList() {
        #expect(SignatureScheme.choose(for: .ecdsa(bits: 256), peer: nil) == SignatureScheme(.ecdsa, .sha256))
        #expect(SignatureScheme.choose(for: .ecdsa(bits: 384), peer: [2, 3, 4]) == SignatureScheme(.ecdsa, .sha384))
        #expect(SignatureScheme.choose(for: .ecdsa(bits: 384), peer: [2]) == SignatureScheme(.ecdsa, .sha256))
        #expect(SignatureScheme.choose(for: .rsa(bits: 3072), peer: [1, 4]) == SignatureScheme(.rsaPKCS1, .sha512), "never SHA-1")
        #expect(SignatureScheme.choose(for: .rsa(bits: 2048), peer: [1]) == nil)
        #expect(SignatureScheme.choose(for: .ed25519, peer: [2, 3, 4]) == nil)
        #expect(SignatureScheme.choose(for: .ed25519, peer: [5]) == SignatureScheme(.ed25519, .identity))
        #expect(SignatureHash.notifyData() == [0, 2, 0, 3, 0, 4, 0, 5])
        #expect(SignatureHash.parse(notifyData: [0, 2, 0, 9]) == [2, 9] && SignatureHash.parse(notifyData: [0]) == nil)
    }

    @Test func signAndVerifyEveryKind() throws {
        let message = Array("RealMessage1 | NonceRData | MACedIDForI".utf8)
        let pairs: [(String, String, [SignatureScheme])] = [
            (TestPKI.gwAP256Cert, TestPKI.gwAP256Key, [SignatureScheme(.ecdsa, .sha256), SignatureScheme(.ecdsa, .sha512)]),
            (TestPKI.gwBP384Cert, TestPKI.gwBP384Key, [SignatureScheme(.ecdsa, .sha384)]),
            (TestPKI.gwARsa2048Cert, TestPKI.gwARsa2048Key, [SignatureScheme(.rsaPKCS1, .sha256), SignatureScheme(.rsaPSS(saltLength: 32), .sha256)]),
            (TestPKI.gwBRsa3072Cert, TestPKI.gwBRsa3072Key, [SignatureScheme(.rsaPKCS1, .sha384), SignatureScheme(.rsaPSS(saltLength: 64), .sha512)]),
            (TestPKI.gwAEd25519Cert, TestPKI.gwAEd25519Key, [SignatureScheme(.ed25519, .identity)]),
        ]
        for (certPEM, keyPEM, schemes) in pairs {
            let cert = try PKI.cert(certPEM), key = try PKI.key(keyPEM)
            for scheme in schemes {
                let sig = try key.sign(message, scheme)
                // Through the AUTH data encoding and back, as the peer reads it.
                let (decoded, carried) = try SignatureAuthData.decode(method: AuthMethod.digitalSignature, SignatureAuthData.encode(scheme, signature: sig))
                #expect(decoded == scheme && carried == sig)
                #expect(SignatureCheck.verify(sig, over: message, scheme: scheme, certificate: cert) == true, "\(scheme)")
                #expect(SignatureCheck.verify(sig, over: message + [0], scheme: scheme, certificate: cert) == false, "\(scheme)")
                var bent = sig
                bent[bent.count / 2] ^= 0x40
                #expect(SignatureCheck.verify(bent, over: message, scheme: scheme, certificate: cert) == false, "\(scheme)")
            }
        }
        // A scheme that does not fit the key is a different failure from a bad signature.
        let ec = try PKI.cert(TestPKI.gwAP256Cert)
        #expect(SignatureCheck.verify([1, 2, 3], over: message, scheme: SignatureScheme(.rsaPKCS1, .sha256), certificate: ec) == nil)
        #expect(throws: PrivateKeyError.self) { try PKI.key(TestPKI.gwAP256Key).sign(message, SignatureScheme(.ed25519, .identity)) }
        // The same hash with another key does not verify.
        let other = try PKI.key(TestPKI.gwBOtherKey).sign(message, SignatureScheme(.ecdsa, .sha256))
        #expect(SignatureCheck.verify(other, over: message, scheme: SignatureScheme(.ecdsa, .sha256), certificate: ec) == false)
    }

    /// RFC 4754 (methods 9-11): r|s of the curve's width, accepted by converting to DER.
    @Test func classicECDSAMethodsAreAccepted() throws {
        let message = Array("signed octets".utf8)
        let cert = try PKI.cert(TestPKI.gwBP384Cert)
        let der = try PKI.key(TestPKI.gwBP384Key).sign(message, SignatureScheme(.ecdsa, .sha384))
        // DER Ecdsa-Sig-Value to r|s, 48 bytes each.
        var outer = DERReader(der)
        var seq = try outer.read(DER.sequence, "sig").contentReader
        let r = Array(try seq.read(DER.integer, "r").content.drop { $0 == 0 }), s = Array(try seq.read(DER.integer, "s").content.drop { $0 == 0 })
        let raw = [UInt8](repeating: 0, count: 48 - r.count) + r + [UInt8](repeating: 0, count: 48 - s.count) + s
        let (scheme, sig) = try SignatureAuthData.decode(method: AuthMethod.ecdsaP384, raw)
        #expect(scheme == SignatureScheme(.ecdsa, .sha384))
        #expect(SignatureCheck.verify(sig, over: message, scheme: scheme, certificate: cert) == true)
        #expect(throws: SignatureSchemeError.self) { try SignatureAuthData.decode(method: AuthMethod.ecdsaP256, raw) }
    }
}
