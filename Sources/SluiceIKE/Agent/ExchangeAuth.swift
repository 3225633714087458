import CSluiceCrypto
import SluiceCore

/// IKE_AUTH (RFC 7296 §1.2, §2.15): identities, authentication (PSK or certificates, see
/// PeerAuthentication.swift), and the first CHILD_SA.
extension IKEAgent {
    static let keyPad = Array("Key Pad for IKEv2".utf8)

    /// Our identity: the configured one, else our certificate's subject (as strongSwan), else our address.
    func localID(_ s: IKESession) -> IDPayload {
        if let id = s.connection.localID { return id }
        if let c = s.connection.certificates { return IDPayload(type: .derDN, data: c.certificate.subject.der) }
        return IDPayload(address: s.local.address)
    }

    /// What AUTH covers (§2.15): the signer's IKE_SA_INIT message, the other side's nonce,
    /// and prf(SK_p, ID') of the signer's identity.
    func signedOctets(_ s: IKESession, signer: IKESession.Role, id: IDPayload) -> [UInt8]? {
        guard let alg = s.algorithms?.prf, let keys = s.keys else { return nil }
        let message = signer == .initiator ? s.initRequest : s.initResponse
        let nonce = signer == .initiator ? s.nonceR : s.nonceI
        let skp = signer == .initiator ? keys.skPi : keys.skPr
        guard let macedID = try? PRF(alg).compute(key: skp.bytes, id.restOfPayload) else { return nil }
        return message + nonce + macedID
    }

    /// AUTH for PSK (§2.15): prf(prf(PSK, "Key Pad for IKEv2"), signed octets).
    func pskAuth(_ s: IKESession, signer: IKESession.Role, id: IDPayload, psk: SecretBytes) -> [UInt8]? {
        guard let alg = s.algorithms?.prf, let octets = signedOctets(s, signer: signer, id: id),
              let padKey = try? PRF(alg).compute(key: psk.bytes, Self.keyPad) else { return nil }
        defer { SecretBytes(padKey).wipe() }
        return try? PRF(alg).compute(key: padKey, octets)
    }

    /// Our CERT payloads (end-entity first, then intermediates) and AUTH, or why we cannot make them.
    func ownAuthentication(_ s: IKESession, id: IDPayload) -> Result<(certs: [Payload], auth: Payload), AuthFailure> {
        switch s.connection.auth {
        case let .psk(key):
            guard let auth = pskAuth(s, signer: s.role, id: id, psk: key) else { return .failure(AuthFailure("no keys for AUTH")) }
            return .success(([], .auth(method: AuthMethod.sharedKey, data: auth)))
        case let .certificates(c):
            guard let octets = signedOctets(s, signer: s.role, id: id) else { return .failure(AuthFailure("no keys for AUTH")) }
            guard let scheme = SignatureScheme.choose(for: c.privateKey.kind, peer: s.peerHashes) else {
                let theirs = s.peerHashes.map { $0.sorted().map { SignatureHash(rawValue: $0)?.description ?? "\($0)" }.joined(separator: ", ") } ?? ""
                return .failure(AuthFailure("the peer's SIGNATURE_HASH_ALGORITHMS (\(theirs)) allow no signature with our \(c.privateKey.kind) key"))
            }
            let signature: [UInt8]
            do { signature = try c.privateKey.sign(octets, scheme) } catch { return .failure(AuthFailure("cannot sign AUTH: \(error)")) }
            let certs = ([c.certificate] + c.intermediates).map { Payload.cert(encoding: CertEncoding.x509Signature, data: $0.der) }
            return .success((certs, .auth(method: AuthMethod.digitalSignature, data: SignatureAuthData.encode(scheme, signature: signature))))
        }
    }

    func sendAuthRequest(_ s: IKESession, child: ChildRequest?, now: Double) {
        let id = localID(s)
        let own: (certs: [Payload], auth: Payload)
        switch ownAuthentication(s, id: id) {
        case let .success(o): own = o
        case let .failure(why): failed(s, "\(why)"); return
        }
        var inner: [Payload] = [.idi(id)] + own.certs
        if let cas = s.connection.certificates?.authorities {
            inner.append(.certreq(encoding: CertEncoding.x509Signature, data: cas.certificateRequest))
        }
        // IDr tells the responder whom we want (§3.5); a wildcard names no one.
        if let r = s.connection.remoteID, !r.hasWildcard { inner.append(.idr(r)) }
        inner.append(own.auth)
        inner.append(.notify(NotifyPayload(type: NotifyType.initialContact)))
        var request = child
        if var r = request {
            if let childPayloads = childRequestPayloads(s, &r, initial: true) { inner += childPayloads; request = r } else { request = nil }
        }
        guard let datagrams = try? s.sealMessage(s.header(.ikeAuth, response: false, id: 1), inner, fragmentSize: fragmentSize) else {
            failed(s, "cannot build IKE_AUTH")
            return
        }
        s.nextRequestID = 2
        s.outstanding = IKESession.Outstanding(id: 1, datagrams: datagrams, sends: 1, nextAt: now + schedule.wait(after: 0), purpose: .ikeAuth(child: request))
        send(s, datagrams, now: now)
    }

    /// Responder side of IKE_AUTH: the response's inner payloads (possibly only an error notify).
    func handleAuthRequest(_ s: IKESession, _ inner: [Payload], now: Double) -> [Payload] {
        guard s.role == .responder, s.state == .authenticating else { return [.notify(NotifyPayload(type: NotifyType.invalidSyntax))] }
        func refuse(_ why: String) -> [Payload] {
            counters.authFailures += 1
            log(AgentLog(.error, "IKE SA \(s.label) from \(s.remote): \(why) (AUTHENTICATION_FAILED)"))
            s.state = .deleting
            return [.notify(NotifyPayload(type: NotifyType.authenticationFailed))]
        }
        guard let idi = inner.idi,
              case let (method, data)? = inner.auth else {
            return refuse("IKE_AUTH without IDi or AUTH")
        }
        if let why = verifyPeer(s, inner, id: idi, method: method, data: data) {
            return refuse("authentication of \(idi.text) failed: \(why)")
        }
        s.remoteID = idi
        let ourID = localID(s)
        let own: (certs: [Payload], auth: Payload)
        switch ownAuthentication(s, id: ourID) {
        case let .success(o): own = o
        case let .failure(why): return refuse("cannot authenticate ourselves: \(why)")
        }
        s.state = .established
        s.establishedAt = now
        s.rekeyAt = s.connection.rekeyTime > 0 ? now + Self.jittered(s.connection.rekeyTime) : nil
        halfOpen = halfOpen.filter { $0.value != s.ourSPI }
        var response: [Payload] = [.idr(ourID)] + own.certs + [own.auth]
        log(AgentLog(.notice, "IKE SA \(s.label) established with \(s.remote) (\(idi.text)): \(s.algorithms?.summary ?? "")\(s.usesEncapsulation ? ", UDP-encapsulated" : "")"))
        if inner.contains(where: { if case .sa = $0 { return true }; return false }) {
            response += childResponsePayloads(s, inner, initial: true, now: now)
        }
        return response
    }

    /// Initiator side: the IKE_AUTH response.
    func handleAuthResponse(_ s: IKESession, _ inner: [Payload], child: ChildRequest?, now: Double) {
        let notifies = inner.notifies
        if notifies.contains(where: { $0.type == NotifyType.authenticationFailed }) {
            counters.authFailures += 1
            failed(s, "the peer refused our authentication (AUTHENTICATION_FAILED)")
            return
        }
        guard let idr = inner.idr,
              case let (method, data)? = inner.auth else {
            let err = notifies.first { NotifyType.isError($0.type) }
            failed(s, "IKE_AUTH answered without IDr or AUTH\(err.map { ": \(NotifyType.name($0.type) ?? "notify \($0.type)")" } ?? "")")
            return
        }
        if let why = verifyPeer(s, inner, id: idr, method: method, data: data) {
            counters.authFailures += 1
            // §2.21.2: the initiator tells the responder, in an INFORMATIONAL of its own (sent once).
            if let d = try? s.sealMessage(s.header(.informational, response: false, id: s.nextRequestID),
                                          [.notify(NotifyPayload(type: NotifyType.authenticationFailed))], fragmentSize: fragmentSize) {
                send(s, d, now: now)
            }
            failed(s, "authentication of \(idr.text) failed: \(why) (AUTHENTICATION_FAILED)")
            return
        }
        s.remoteID = idr
        s.state = .established
        s.establishedAt = now
        s.rekeyAt = s.connection.rekeyTime > 0 ? now + Self.jittered(s.connection.rekeyTime) : nil
        log(AgentLog(.notice, "IKE SA \(s.label) established with \(s.remote) (\(idr.text)): \(s.algorithms?.summary ?? "")\(s.usesEncapsulation ? ", UDP-encapsulated" : "")"))
        if let child { completeChild(s, child, inner, now: now) }
    }

    /// strongSwan's rekey jitter: up to 10% earlier, so two peers rarely rekey at once.
    static func jittered(_ t: Double) -> Double { t - Double.random(in: 0...(t / 10)) }

    /// The shim's constant-time compare, the one the ESP ICV check uses.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        guard !a.isEmpty else { return true }
        return a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in sluice_ct_equal(x.baseAddress, y.baseAddress, a.count) == 1 } }
    }
}

/// Why an authentication could not be made or was refused (for the log; never a key).
struct AuthFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Certificate encodings (RFC 7296 §3.6).
public enum CertEncoding {
    /// X.509 Certificate - Signature: one DER certificate.
    public static let x509Signature: UInt8 = 4
}
