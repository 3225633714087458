import Testing
@testable import SluiceIKE
import SluiceCore
import SluiceTestFixtures

/// Fixtures from scripts/make-test-certs.sh, checked at a fixed time inside their validity.
enum PKI {
    /// 2030-06-01 00:00:00 UTC.
    static let time: Int64 = 1_906_502_400

    static func cert(_ pem: String) throws -> Certificate {
        let all = try Certificate.load(Array(pem.utf8))
        return try #require(all.first)
    }

    static func key(_ pem: String) throws -> PrivateKey { try PrivateKey(SecretBytes(Array(pem.utf8))) }

    static func credentials(_ certPEM: String, _ keyPEM: String, cas: [String], intermediates: [String] = []) throws -> CertificateCredentials {
        try CertificateCredentials(certificate: cert(certPEM), intermediates: intermediates.map(cert), privateKey: key(keyPEM),
                                   authorities: cas.map(cert))
    }

    static func dn(_ text: String) throws -> IDPayload { IDPayload(type: .derDN, data: try DistinguishedName(parsing: text).der) }
}

@Suite struct CertificateTests {
    @Test func certificateFieldsComeFromLibcrypto() throws {
        let a = try PKI.cert(TestPKI.gwAP256Cert)
        #expect(a.subject.description == "CN=gw-a, O=Sluice Test")
        #expect(a.issuer.description == "C=CH, O=Sluice Test, CN=Sluice Test CA")
        #expect(a.keyKind == .ecdsa(bits: 256))
        #expect(a.subjectAltNames == [.dns("gw-a.example"), .email("gw-a@example.net"), .ip(IPAddress("192.0.2.1")!)])
        #expect(a.notBefore == 1_735_689_600 && a.notAfter == 2_524_607_999)   // 2025-01-01, 2049-12-31 23:59:59
        #expect(!a.isCA && a.maySign)
        #expect(try PKI.cert(TestPKI.caCert).isCA)
        #expect(try PKI.cert(TestPKI.gwBRsa3072Cert).keyKind == .rsa(bits: 3072))
        #expect(try PKI.cert(TestPKI.gwAEd25519Cert).keyKind == .ed25519)
        #expect(UTCTime.text(a.notAfter) == "2049-12-31 23:59:59 UTC")
        #expect(UTCTime.text(0) == "1970-01-01 00:00:00 UTC" && UTCTime.text(951_782_400) == "2000-02-29 00:00:00 UTC")
    }

    @Test func certificateFilesPEMChainsAndDER() throws {
        let chain = try Certificate.load(Array((TestPKI.gwBSubCert + "\n" + TestPKI.subCaCert).utf8))
        #expect(chain.map(\.subject.description) == ["CN=gw-b, O=Sluice Test", "O=Sluice Test, CN=Sluice Sub CA"])
        let der = try Certificate.load(chain[0].der)
        #expect(der == [chain[0]])
        #expect(throws: CertificateError.self) { try Certificate.load(Array("hello".utf8)) }
        #expect(throws: CertificateError.self) { try Certificate.load(Array(TestPKI.gwAP256Key.utf8)) }
        var broken = chain[0].der
        broken[broken.count / 2] ^= 0xff
        #expect(throws: CertificateError.self) { try Certificate(der: Array(broken.prefix(100))) }
    }

    @Test func identitiesInCertificates() throws {
        let b = try PKI.cert(TestPKI.gwBP384Cert)
        #expect(b.contains(try PKI.dn("CN=gw-b, O=Sluice Test")))
        #expect(b.contains(try PKI.dn("cn=GW-B,  o=sluice test")), "RFC 5280 §7.1: case and spaces do not count")
        #expect(!b.contains(try PKI.dn("CN=gw-a, O=Sluice Test")))
        #expect(!b.contains(try PKI.dn("O=Sluice Test, CN=gw-b")), "RDN order counts")
        #expect(!b.contains(try PKI.dn("CN=*, O=Sluice Test")), "a presented identity is no pattern")
        #expect(b.contains(try IDPayload.parse("gw-b.example")))
        #expect(b.contains(try IDPayload.parse("GW-B.example")))
        #expect(b.contains(try IDPayload.parse("gw-b@example.net")))
        #expect(b.contains(try IDPayload.parse("192.0.2.2")))
        #expect(!b.contains(try IDPayload.parse("192.0.2.1")))
        #expect(!b.contains(try IDPayload.parse("gw-a.example")))
        // The configured side may be a pattern.
        #expect(try PKI.dn("CN=*, O=Sluice Test").matches(try PKI.dn("CN=gw-b, O=Sluice Test")))
        #expect(!(try PKI.dn("CN=*, O=Elsewhere").matches(try PKI.dn("CN=gw-b, O=Sluice Test"))))
    }

    @Test func distinguishedNamesParseAsStrongSwanWritesThem() throws {
        // pki encodes "CN=gw-a, O=Sluice Test" the same way: byte for byte.
        let a = try PKI.cert(TestPKI.gwAP256Cert)
        #expect(try DistinguishedName(parsing: "CN=gw-a, O=Sluice Test").der == a.subject.der)
        #expect(try DistinguishedName(parsing: "C=CH,O=Sluice Test,CN=Sluice Test CA").der == (try PKI.cert(TestPKI.caCert)).subject.der)
        let quoted = try DistinguishedName(parsing: "CN=\"a, b\", OU=x\\,y, E=gw@example.net, CN=Zürich")
        #expect(quoted.rdns.map { $0[0].tag } == [DER.printableString, DER.printableString, DER.ia5String, DER.utf8String])
        #expect(quoted.description == "CN=a, b, OU=x,y, E=gw@example.net, CN=Zürich")
        #expect(try DistinguishedName(der: quoted.der).matches(quoted))
        for bad in ["", "CN", "XX=1", "CN=", "CN=\"open", "CN=\"a\" b", "E=ü@x", ", CN=a"] {
            #expect(throws: DistinguishedNameError.self, "\(bad)") { try DistinguishedName(parsing: bad) }
        }
        for bad: [UInt8] in [[], [0x30], [0x30, 0x03, 0x31, 0x01, 0x30], [0x31, 0x00], [0x30, 0x02, 0x31, 0x00], [0x30, 0x80, 0x00, 0x00]] {
            #expect(throws: DistinguishedNameError.self) { try DistinguishedName(der: bad) }
        }
        #expect(try IDPayload.parse("CN=gw-a, O=Sluice Test").text == "CN=gw-a, O=Sluice Test")
    }

    @Test func privateKeysInEveryEncoding() throws {
        let a = try PKI.cert(TestPKI.gwAP256Cert)
        #expect(try PKI.key(TestPKI.gwAP256Key).matches(a), "SEC1 PEM")
        #expect(try PKI.key(TestPKI.gwAP256Pkcs8Key).matches(a), "PKCS#8 PEM")
        #expect(try PrivateKey(SecretBytes(TestPKI.gwBRsa3072DerKey)).matches(try PKI.cert(TestPKI.gwBRsa3072Cert)), "PKCS#8 DER")
        #expect(try PKI.key(TestPKI.gwARsa2048Key).kind == .rsa(bits: 2048), "PKCS#1 PEM")
        #expect(try PKI.key(TestPKI.gwAEd25519Key).kind == .ed25519)
        #expect(!(try PKI.key(TestPKI.gwBP384Key).matches(a)))
        #expect("\(try PKI.key(TestPKI.gwAP256Key))" == "<ECDSA P-256 private key>")
        #expect(throws: PrivateKeyError("is not a PEM or DER private key")) { try PKI.key(TestPKI.gwAP256Cert) }
        // An encrypted key is refused without asking for a passphrase.
        #expect(throws: PrivateKeyError("is an encrypted key: Sluice reads unencrypted keys only (protect the file with mode 0600)")) {
            try PKI.key(TestPKI.gwAP256EncryptedKey)
        }
        #expect(throws: CertificateError.self) {
            try CertificateCredentials(certificate: a, privateKey: try PKI.key(TestPKI.gwBP384Key), authorities: [try PKI.cert(TestPKI.caCert)])
        }
        #expect(throws: CertificateError("\"CN=gw-b, O=Sluice Test\" is not a CA certificate (no basicConstraints CA:TRUE)")) {
            try CertificateCredentials(certificate: a, privateKey: try PKI.key(TestPKI.gwAP256Key), authorities: [try PKI.cert(TestPKI.gwBP384Cert)])
        }
    }

    @Test func chainVerification() throws {
        let cas = CertificateAuthorities([try PKI.cert(TestPKI.caCert), try PKI.cert(TestPKI.rsaCaCert)])
        #expect(cas.verify(try PKI.cert(TestPKI.gwBP384Cert), intermediates: [], at: PKI.time) == nil)
        #expect(cas.verify(try PKI.cert(TestPKI.gwARsa2048Cert), intermediates: [], at: PKI.time) == nil)
        #expect(cas.verify(try PKI.cert(TestPKI.gwBEd25519Cert), intermediates: [], at: PKI.time) == nil)
        #expect(cas.verify(try PKI.cert(TestPKI.gwBSubCert), intermediates: [try PKI.cert(TestPKI.subCaCert)], at: PKI.time) == nil)
        #expect(cas.verify(try PKI.cert(TestPKI.gwBSubCert), intermediates: [], at: PKI.time)
                == .unknownCA(subject: "CN=gw-b, O=Sluice Test", issuer: "O=Sluice Test, CN=Sluice Sub CA"))
        #expect(cas.verify(try PKI.cert(TestPKI.gwBOtherCert), intermediates: [], at: PKI.time)
                == .unknownCA(subject: "CN=gw-b, O=Sluice Test", issuer: "O=Elsewhere, CN=Other CA"))
        let expired = try PKI.cert(TestPKI.gwBExpiredCert)
        #expect(cas.verify(expired, intermediates: [], at: PKI.time) == .expired(subject: "CN=gw-b, O=Sluice Test", notAfter: 1_609_459_200))
        // Before the CA's own validity, the CA is at fault (libcrypto checks from the anchor down).
        #expect(cas.verify(expired, intermediates: [], at: 1_590_000_000)
                == .notYetValid(subject: "C=CH, O=Sluice Test, CN=Sluice Test CA", notBefore: 1_735_689_600))
        let chained = CertificateAuthorities([try PKI.cert(TestPKI.caCert)])
        #expect(chained.verify(try PKI.cert(TestPKI.gwBSubCert), intermediates: [try PKI.cert(TestPKI.subCaCert)], at: 2_600_000_000)
                == .expired(subject: "C=CH, O=Sluice Test, CN=Sluice Test CA", notAfter: 2_524_607_999))
        // A leaf is no CA, even when it signed the certificate.
        #expect(cas.verify(try PKI.cert(TestPKI.gwBByLeafCert), intermediates: [try PKI.cert(TestPKI.gwAP256Cert)], at: PKI.time)
                == .notACA(subject: "CN=gw-a, O=Sluice Test"))
        // A certificate whose signature was changed (the last byte of an ECDSA signature).
        var der = try PKI.cert(TestPKI.gwBP384Cert).der
        der[der.count - 1] ^= 0x01
        #expect(cas.verify(try Certificate(der: der), intermediates: [], at: PKI.time) == .badSignature(subject: "CN=gw-b, O=Sluice Test"))
        // CERTREQ: SHA-1 of each CA's SubjectPublicKeyInfo.
        #expect(cas.certificateRequest.count == 40)
        #expect(Array(cas.certificateRequest.prefix(20)) == (try PKI.cert(TestPKI.caCert)).publicKeyInfoSHA1)
        #expect("\(CertificateFailure.expired(subject: "CN=x", notAfter: 1_609_459_200))" == "certificate \"CN=x\" expired on 2021-01-01 00:00:00 UTC")
    }
}

@Suite struct IdentityTextTests {
    /// A peer's names reach log lines: control characters are shown escaped, not written.
    @Test func peerNamesCannotBreakLogLines() throws {
        let dn = DistinguishedName.Attribute(type: [0x55, 0x04, 0x03], tag: DER.utf8String, value: Array("gw\nfake log line".utf8))
        let der = DER.encode(DER.sequence, DER.encode(DER.set, DER.encode(DER.sequence, DER.encode(DER.oid, dn.type) + DER.encode(dn.tag, dn.value))))
        #expect(IDPayload(type: .derDN, data: der).text == "CN=gw\\u{a}fake log line")
        #expect(IDPayload(type: .fqdn, data: Array("a\r\nb".utf8)).text == "a\\u{d}\\u{a}b")
        #expect(SubjectAltName.dns("x\u{1b}[31m").description == "DNS:x\\u{1b}[31m")
    }
}
