import SluiceCore

/// IKE_AUTH (RFC 7296 §1.2, §2.15): identities, PSK authentication, and the first CHILD_SA.
extension IKEAgent {
    static let keyPad = Array("Key Pad for IKEv2".utf8)

    func localID(_ s: IKESession) -> IDPayload { s.connection.localID ?? IDPayload(address: s.local.address) }

    /// AUTH for PSK (§2.15): prf(prf(PSK, "Key Pad for IKEv2"), message | nonce | prf(SK_p, ID')).
    func pskAuth(_ s: IKESession, signer: IKESession.Role, id: IDPayload) -> [UInt8]? {
        guard let alg = s.algorithms?.prf, let keys = s.keys else { return nil }
        let prf = PRF(alg)
        let message = signer == .initiator ? s.initRequest : s.initResponse
        let nonce = signer == .initiator ? s.nonceR : s.nonceI
        let skp = signer == .initiator ? keys.skPi : keys.skPr
        guard let macedID = try? prf.compute(key: skp.bytes, id.restOfPayload),
              let padKey = try? prf.compute(key: s.connection.psk.bytes, Self.keyPad) else { return nil }
        defer { SecretBytes(padKey).wipe() }
        return try? prf.compute(key: padKey, message + nonce + macedID)
    }

    func sendAuthRequest(_ s: IKESession, child: ChildRequest?, now: Double) {
        let id = localID(s)
        guard let auth = pskAuth(s, signer: .initiator, id: id) else { failed(s, "no keys for AUTH"); return }
        var inner: [Payload] = [.idi(id)]
        if let r = s.connection.remoteID { inner.append(.idr(r)) }
        inner.append(.auth(method: 2, data: auth))
        inner.append(.notify(NotifyPayload(type: NotifyType.initialContact)))
        var request = child
        if var r = request {
            if let childPayloads = childRequestPayloads(s, &r, initial: true) { inner += childPayloads; request = r } else { request = nil }
        }
        guard let datagram = try? s.seal(s.header(.ikeAuth, response: false, id: 1), inner) else { failed(s, "cannot build IKE_AUTH"); return }
        s.nextRequestID = 2
        s.outstanding = IKESession.Outstanding(id: 1, datagram: datagram, sends: 1, nextAt: now + schedule.wait(after: 0), purpose: .ikeAuth(child: request))
        send(s, datagram)
    }

    /// Responder side of IKE_AUTH: the response's inner payloads (possibly only an error notify).
    func handleAuthRequest(_ s: IKESession, _ inner: [Payload], now: Double) -> [Payload] {
        guard s.role == .responder, s.state == .authenticating else { return [.notify(NotifyPayload(type: NotifyType.invalidSyntax))] }
        guard case let .idi(idi)? = inner.first(where: { if case .idi = $0 { return true }; return false }),
              case let .auth(method, data)? = inner.first(where: { if case .auth = $0 { return true }; return false }) else {
            counters.authFailures += 1
            log(AgentLog(.error, "IKE SA \(s.label) from \(s.remote): IKE_AUTH without IDi or AUTH"))
            s.state = .deleting
            return [.notify(NotifyPayload(type: NotifyType.authenticationFailed))]
        }
        if let want = s.connection.remoteID, want != idi {
            counters.authFailures += 1
            log(AgentLog(.error, "IKE SA \(s.label) from \(s.remote): peer identity \(idi.text) is not the configured \(want.text) (AUTHENTICATION_FAILED)"))
            s.state = .deleting
            return [.notify(NotifyPayload(type: NotifyType.authenticationFailed))]
        }
        guard method == 2, let expected = pskAuth(s, signer: .initiator, id: idi), Self.constantTimeEqual(expected, data) else {
            counters.authFailures += 1
            log(AgentLog(.error, "IKE SA \(s.label) from \(s.remote): authentication of \(idi.text) failed (AUTHENTICATION_FAILED)\(method == 2 ? "" : ": auth method \(method), only PSK (2) is configured")"))
            s.state = .deleting
            return [.notify(NotifyPayload(type: NotifyType.authenticationFailed))]
        }
        s.remoteID = idi
        let ourID = localID(s)
        guard let auth = pskAuth(s, signer: .responder, id: ourID) else { return [.notify(NotifyPayload(type: NotifyType.authenticationFailed))] }
        s.state = .established
        s.establishedAt = now
        s.rekeyAt = s.connection.rekeyTime > 0 ? now + Self.jittered(s.connection.rekeyTime) : nil
        halfOpen = halfOpen.filter { $0.value != s.ourSPI }
        var response: [Payload] = [.idr(ourID), .auth(method: 2, data: auth)]
        log(AgentLog(.notice, "IKE SA \(s.label) established with \(s.remote) (\(idi.text)): \(s.algorithms?.summary ?? "")\(s.usesEncapsulation ? ", UDP-encapsulated" : "")"))
        if inner.contains(where: { if case .sa = $0 { return true }; return false }) {
            response += childResponsePayloads(s, inner, initial: true, now: now)
        }
        return response
    }

    /// Initiator side: the IKE_AUTH response.
    func handleAuthResponse(_ s: IKESession, _ inner: [Payload], child: ChildRequest?, now: Double) {
        let notifies = inner.compactMap { if case let .notify(n) = $0 { return n } else { return nil } }
        if notifies.contains(where: { $0.type == NotifyType.authenticationFailed }) {
            counters.authFailures += 1
            failed(s, "the peer refused our authentication (AUTHENTICATION_FAILED)")
            return
        }
        guard case let .idr(idr)? = inner.first(where: { if case .idr = $0 { return true }; return false }),
              case let .auth(method, data)? = inner.first(where: { if case .auth = $0 { return true }; return false }) else {
            let err = notifies.first { NotifyType.isError($0.type) }
            failed(s, "IKE_AUTH answered without IDr or AUTH\(err.map { ": \(NotifyType.name($0.type) ?? "notify \($0.type)")" } ?? "")")
            return
        }
        if let want = s.connection.remoteID, want != idr {
            counters.authFailures += 1
            failed(s, "peer identity \(idr.text) is not the configured \(want.text) (AUTHENTICATION_FAILED)")
            return
        }
        guard method == 2, let expected = pskAuth(s, signer: .responder, id: idr), Self.constantTimeEqual(expected, data) else {
            counters.authFailures += 1
            failed(s, "the peer's AUTH does not verify (AUTHENTICATION_FAILED)")
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

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in 0..<a.count { d |= a[i] ^ b[i] }
        return d == 0
    }
}
