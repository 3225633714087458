import Testing
@testable import SluiceIKE
import SluiceCore
import SluiceTestFixtures

/// Two agents in memory authenticating with certificates (RFC 7296 §2.15, RFC 7427).
@Suite struct CertificateAgentTests {
    static let allCAs = [TestPKI.caCert, TestPKI.rsaCaCert]

    static func pair(a: CertificateCredentials, b: CertificateCredentials, localIDB: IDPayload? = nil,
                     remoteIDA: IDPayload? = nil, remoteIDB: IDPayload? = nil,
                     fragmentationA: IKEFragmentation = .yes, fragmentationB: IKEFragmentation = .yes) throws -> AgentPair {
        var ca = try Profiles.connection(local: Profiles.gwA, remote: Profiles.gwB, localTS: "198.51.100.0/24", remoteTS: "203.0.113.0/24")
        var cb = try Profiles.connection(local: Profiles.gwB, remote: Profiles.gwA, localTS: "203.0.113.0/24", remoteTS: "198.51.100.0/24")
        ca.auth = .certificates(a); cb.auth = .certificates(b)
        ca.remoteID = remoteIDA; cb.remoteID = remoteIDB; cb.localID = localIDB
        ca.fragmentation = fragmentationA; cb.fragmentation = fragmentationB
        let p = AgentPair(a: ca, b: cb)
        p.a.certificateTime = { PKI.time }
        p.b.certificateTime = { PKI.time }
        return p
    }

    /// The inner payloads of the IKE_AUTH request (opened with B's keys) and response (with A's).
    static func authMessages(_ p: AgentPair) throws -> (request: [Payload], response: [Payload]) {
        let auths = p.sent.filter { (try? IKEMessage.decodeHeader($0.bytes))?.exchange == .ikeAuth }
        let sa = try #require(p.a.sessions.values.first), sb = try #require(p.b.sessions.values.first)
        // Large certificates put IKE_AUTH in fragments (RFC 7383): each side's are one message.
        let req = auths.filter { $0.from.address == Profiles.gwA }.map(\.bytes)
        let resp = auths.filter { $0.from.address == Profiles.gwB }.map(\.bytes)
        return (try innerPayloads(req, openedBy: sb), try innerPayloads(resp, openedBy: sa))
    }

    static func scheme(_ inner: [Payload]) throws -> SignatureScheme {
        guard case let .auth(method, data)? = inner.first(where: { if case .auth = $0 { return true }; return false }) else {
            Issue.record("no AUTH payload"); throw CertificateError("no AUTH")
        }
        #expect(method == AuthMethod.digitalSignature)
        return try SignatureAuthData.decode(method: method, data).0
    }

    static func certs(_ inner: [Payload]) -> [[UInt8]] {
        inner.compactMap { if case let .cert(4, d) = $0 { return d }; return nil }
    }

    func expectEstablished(_ p: AgentPair) {
        #expect(p.backendA.children.count == 1 && p.backendB.children.count == 1, "A: \(p.log("a"))\nB: \(p.log("b"))")
        #expect(p.a.sessions.values.first?.state == .established && p.b.sessions.values.first?.state == .established)
    }

    @Test func ecdsaP256AndP384() throws {
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBP384Cert, TestPKI.gwBP384Key, cas: [TestPKI.caCert])
        let p = try Self.pair(a: a, b: b, remoteIDA: try PKI.dn("CN=gw-b, O=Sluice Test"))
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        #expect(p.sent.count == 4, "IKE_SA_INIT and IKE_AUTH, nothing more")
        // IKE_SA_INIT: both announce SHA-256/384/512 and identity; the responder asks for our CA.
        let initReq = try IKEMessage.decode(p.sent[0].bytes), initResp = try IKEMessage.decode(p.sent[1].bytes)
        for m in [initReq, initResp] {
            #expect(m.payloads.contains(.notify(NotifyPayload(type: NotifyType.signatureHashAlgorithms, data: [0, 2, 0, 3, 0, 4, 0, 5]))))
        }
        let caHash = try PKI.cert(TestPKI.caCert).publicKeyInfoSHA1
        #expect(initResp.payloads.contains(.certreq(encoding: 4, data: caHash)))
        let (request, response) = try Self.authMessages(p)
        #expect(request.first == .idi(IDPayload(type: .derDN, data: a.certificate.subject.der)), "default local_id: the subject DN")
        #expect(Self.certs(request) == [a.certificate.der] && Self.certs(response) == [b.certificate.der])
        #expect(request.contains(.certreq(encoding: 4, data: caHash)))
        #expect(request.contains(.idr(try PKI.dn("CN=gw-b, O=Sluice Test"))))
        #expect(try Self.scheme(request) == SignatureScheme(.ecdsa, .sha256))
        #expect(try Self.scheme(response) == SignatureScheme(.ecdsa, .sha384))
        #expect(p.a.status(now: p.now).first?.remoteID == "CN=gw-b, O=Sluice Test")
        #expect(p.b.status(now: p.now).first?.remoteID == "CN=gw-a, O=Sluice Test")
    }

    @Test func rsa2048And3072() throws {
        let a = try PKI.credentials(TestPKI.gwARsa2048Cert, TestPKI.gwARsa2048Key, cas: [TestPKI.rsaCaCert])
        let b = try PKI.credentials(TestPKI.gwBRsa3072Cert, TestPKI.gwBRsa3072Key, cas: [TestPKI.rsaCaCert])
        let p = try Self.pair(a: a, b: b)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        let (request, response) = try Self.authMessages(p)
        #expect(try Self.scheme(request) == SignatureScheme(.rsaPKCS1, .sha256))
        #expect(try Self.scheme(response) == SignatureScheme(.rsaPKCS1, .sha256))
    }

    @Test func ed25519BothWays() throws {
        let a = try PKI.credentials(TestPKI.gwAEd25519Cert, TestPKI.gwAEd25519Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBEd25519Cert, TestPKI.gwBEd25519Key, cas: [TestPKI.caCert])
        let p = try Self.pair(a: a, b: b)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        #expect(try Self.scheme(try Self.authMessages(p).request) == SignatureScheme(.ed25519, .identity))
        // And B initiating, on the same agents.
        try p.a.terminate(ike: "to-b", now: p.now)
        p.run()
        try p.b.initiate(child: "net-b", now: p.now)
        p.run()
        expectEstablished(p)
        #expect(p.a.sessions.values.first?.role == .responder)
    }

    @Test func mixedKindsAndAnIntermediate() throws {
        // A: RSA under the RSA CA; B: ECDSA under the sub CA, which it sends along.
        let a = try PKI.credentials(TestPKI.gwARsa2048Cert, TestPKI.gwARsa2048Key, cas: Self.allCAs)
        let b = try PKI.credentials(TestPKI.gwBSubCert, TestPKI.gwBSubKey, cas: Self.allCAs, intermediates: [TestPKI.subCaCert])
        let p = try Self.pair(a: a, b: b, remoteIDA: try PKI.dn("CN=*, O=Sluice Test"))
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        let (request, response) = try Self.authMessages(p)
        #expect(Self.certs(response) == [b.certificate.der, try PKI.cert(TestPKI.subCaCert).der])
        #expect(!request.contains { if case .idr = $0 { return true }; return false }, "a pattern is not sent as IDr")
        #expect(request.contains(.certreq(encoding: 4, data: a.authorities.certificateRequest)))
    }

    @Test func identitiesFromSubjectAltNames() throws {
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBP384Cert, TestPKI.gwBP384Key, cas: [TestPKI.caCert])
        for id in ["gw-b.example", "gw-b@example.net", "192.0.2.2"] {
            let p = try Self.pair(a: a, b: b, localIDB: try IDPayload.parse(id), remoteIDA: try IDPayload.parse(id))
            try p.a.initiate(child: "net-a", now: p.now)
            p.run()
            expectEstablished(p)
            #expect(p.a.status(now: p.now).first?.remoteID == id)
        }
    }

    /// Each failure: the responder's or the initiator's check refuses with AUTHENTICATION_FAILED
    /// and says why; neither side keeps an SA.
    func expectRefused(_ p: AgentPair, by side: String, _ why: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let refuser = p.log(side), other = p.log(side == "a" ? "b" : "a")
        #expect(refuser.contains(why), "\(side): \(refuser)", sourceLocation: sourceLocation)
        #expect(refuser.contains("AUTHENTICATION_FAILED"), sourceLocation: sourceLocation)
        #expect(other.contains("the peer refused our authentication (AUTHENTICATION_FAILED)"), "\(other)", sourceLocation: sourceLocation)
        #expect(p.backendA.children.isEmpty && p.backendB.children.isEmpty, sourceLocation: sourceLocation)
        #expect(p.a.sessions.isEmpty && p.b.sessions.isEmpty, sourceLocation: sourceLocation)
        #expect((side == "a" ? p.a : p.b).counters.authFailures == 1, sourceLocation: sourceLocation)
        for log in [refuser, other] {
            #expect(!log.contains("PRIVATE KEY") && !log.contains("BEGIN"), sourceLocation: sourceLocation)
        }
    }

    @Test func responderFromAnotherCAIsRefusedByTheInitiator() throws {
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBOtherCert, TestPKI.gwBOtherKey, cas: [TestPKI.caCert])
        try expectRefused(try Self.pair(a: a, b: b), by: "a",
                          "certificate \"CN=gw-b, O=Sluice Test\" is issued by \"O=Elsewhere, CN=Other CA\", an unknown CA (not in ca_certs)")
    }

    @Test func initiatorFromAnotherCAIsRefusedByTheResponder() throws {
        let a = try PKI.credentials(TestPKI.gwBOtherCert, TestPKI.gwBOtherKey, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBP384Cert, TestPKI.gwBP384Key, cas: [TestPKI.caCert])
        try expectRefused(try Self.pair(a: a, b: b), by: "b", "an unknown CA (not in ca_certs)")
    }

    @Test func expiredCertificateIsRefused() throws {
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBExpiredCert, TestPKI.gwBExpiredKey, cas: [TestPKI.caCert])
        try expectRefused(try Self.pair(a: a, b: b), by: "a", "certificate \"CN=gw-b, O=Sluice Test\" expired on 2021-01-01 00:00:00 UTC")
    }

    @Test func missingIntermediateIsAnUnknownCA() throws {
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBSubCert, TestPKI.gwBSubKey, cas: [TestPKI.caCert])
        try expectRefused(try Self.pair(a: a, b: b), by: "a", "issued by \"O=Sluice Test, CN=Sluice Sub CA\", an unknown CA")
    }

    @Test func leafSigningALeafIsNoCA() throws {
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBByLeafCert, TestPKI.gwBByLeafKey, cas: [TestPKI.caCert], intermediates: [TestPKI.gwAP256Cert])
        try expectRefused(try Self.pair(a: a, b: b), by: "a", "certificate \"CN=gw-a, O=Sluice Test\" issues certificates but is not a CA")
    }

    @Test func wrongRemoteIDIsAnIdentityMismatch() throws {
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBP384Cert, TestPKI.gwBP384Key, cas: [TestPKI.caCert])
        try expectRefused(try Self.pair(a: a, b: b, remoteIDA: try PKI.dn("CN=gw-c, O=Sluice Test")), by: "a",
                          "identity mismatch: the peer is CN=gw-b, O=Sluice Test, remote_id is CN=gw-c, O=Sluice Test")
        try expectRefused(try Self.pair(a: a, b: b, remoteIDB: try IDPayload.parse("gw-a.other")), by: "b",
                          "identity mismatch: the peer is CN=gw-a, O=Sluice Test, remote_id is gw-a.other")
    }

    @Test func identityNotInTheCertificateIsRefused() throws {
        // B claims a name its certificate does not carry (and A expects exactly that name).
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBP384Cert, TestPKI.gwBP384Key, cas: [TestPKI.caCert])
        let id = try IDPayload.parse("gw-c.example")
        try expectRefused(try Self.pair(a: a, b: b, localIDB: id, remoteIDA: id), by: "a",
                          "identity mismatch: certificate \"CN=gw-b, O=Sluice Test\" does not hold the peer's identity gw-c.example")
    }

    @Test func signatureWithAnotherKeyIsABadSignature() throws {
        // B's certificate is genuine, but B signs with a key that is not its certificate's.
        let a = try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert])
        var b = try PKI.credentials(TestPKI.gwBP384Cert, TestPKI.gwBP384Key, cas: [TestPKI.caCert])
        b.privateKey = try PKI.key(TestPKI.gwBOtherKey)
        try expectRefused(try Self.pair(a: a, b: b), by: "a",
                          "bad signature: the AUTH (ECDSA with SHA-256) does not verify with the key of certificate \"CN=gw-b, O=Sluice Test\"")
    }

    @Test func certificateAgainstPSKIsRefused() throws {
        var ca = try Profiles.connection(local: Profiles.gwA, remote: Profiles.gwB, localTS: "198.51.100.0/24", remoteTS: "203.0.113.0/24")
        let cb = try Profiles.connection(local: Profiles.gwB, remote: Profiles.gwA, localTS: "203.0.113.0/24", remoteTS: "198.51.100.0/24")
        ca.auth = .certificates(try PKI.credentials(TestPKI.gwAP256Cert, TestPKI.gwAP256Key, cas: [TestPKI.caCert]))
        let p = AgentPair(a: ca, b: cb)
        try expectRefused(p, by: "b", "the peer uses digital signature (14), the connection a pre-shared key")
    }

    @Test func peerWithoutOurHashesCannotBeSignedFor() throws {
        // The responder announces only SHA-256: an Ed25519 initiator has nothing to sign with.
        let a = try PKI.credentials(TestPKI.gwAEd25519Cert, TestPKI.gwAEd25519Key, cas: [TestPKI.caCert])
        let b = try PKI.credentials(TestPKI.gwBP384Cert, TestPKI.gwBP384Key, cas: [TestPKI.caCert])
        let p = try Self.pair(a: a, b: b)
        p.filter = { d in
            guard d.from.address == Profiles.gwB, var m = try? IKEMessage.decode(d.bytes), m.header.exchange == .ikeSAInit else { return true }
            m.payloads = m.payloads.map {
                if case let .notify(n) = $0, n.type == NotifyType.signatureHashAlgorithms { return .notify(NotifyPayload(type: n.type, data: [0, 2])) }
                return $0
            }
            p.queue.append(AgentPair.Datagram(bytes: m.encode(), from: d.from, to: d.to))
            return false
        }
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        #expect(p.log("a").contains("the peer's SIGNATURE_HASH_ALGORITHMS (SHA-256) allow no signature with our Ed25519 key"), "\(p.log("a"))")
        #expect(p.a.sessions.isEmpty && p.backendA.children.isEmpty)
    }
}
