import SluiceCore

/// IKE_SA_INIT (RFC 7296 §1.2): algorithms, Diffie-Hellman, nonces, NAT detection; with
/// INVALID_KE_PAYLOAD (§1.3) and COOKIE (§2.6) retries on the initiator's side.
extension IKEAgent {
    static let nonceLength = 32

    func initiate(_ c: ConnectionProfile, _ child: ChildRequest?, now: Double) throws(AgentError) {
        if let child {
            if let s = sessions.values.first(where: { $0.connection.name == c.name && $0.state == .established }) {
                s.queuedChildren.append(child)
                pump(s, now: now)
                return
            }
            if let s = sessions.values.first(where: { $0.connection.name == c.name && $0.isInitiator && $0.state != .deleting }) {
                if !s.queuedChildren.contains(where: { $0.profile.name == child.profile.name }) { s.queuedChildren.append(child) }
                return
            }
        }
        guard let localAddress = c.localAddresses.first else { throw .noAddress(c.name) }
        guard let remoteAddress = c.remoteAddresses.first(where: { $0.family == localAddress.family }) else { throw .noAddress(c.name) }
        let s = IKESession(role: .initiator, connection: c, spiI: Self.newSPI(), spiR: 0, local: Endpoint(localAddress, 500),
                           remote: Endpoint(remoteAddress, 500), now: now, reason: child?.reason ?? "initiate")
        sessions[s.spiI] = s
        guard let group = c.proposals.first?.dh.first else {
            close(s, why: "the connection's IKE proposals name no key exchange group")
            return
        }
        log(AgentLog(.info, "IKE SA \(s.label) to \(s.remote): initiating (\(s.reason))"))
        sendInitRequest(s, group: group, child: child, now: now)
    }

    /// Our IKE proposals as the SA payload carries them (numbered from 1).
    func offeredIKE(_ c: ConnectionProfile, spi: [UInt8]) -> [WireProposal] {
        c.proposals.enumerated().map { $1.wireProposal(number: UInt8($0 + 1), protocolID: .ike, spi: spi) }
    }

    static func newSPI() -> UInt64 {
        var v: UInt64 = 0
        while v == 0 { v = UInt64.random(in: 1...UInt64.max) }
        return v
    }

    func sendInitRequest(_ s: IKESession, group: DHGroup, child: ChildRequest?, now: Double) {
        let dh: DiffieHellman
        do { dh = try DiffieHellman(group: group) } catch {
            close(s, why: "cannot make a \(group) key: \(error)")
            return
        }
        s.dh = dh
        if s.nonceI.isEmpty { s.nonceI = Self.randomBytes(Self.nonceLength) }
        var payloads: [Payload] = []
        if let cookie = s.cookie { payloads.append(.notify(NotifyPayload(type: NotifyType.cookie, data: cookie))) }
        payloads.append(.sa(offeredIKE(s.connection, spi: [])))
        payloads.append(.ke(group: group.rawValue, data: dh.publicValue))
        payloads.append(.nonce(s.nonceI))
        payloads += NATDetection.notifies(spiI: s.spiI, spiR: 0, source: s.local, destination: s.remote,
                                          fakeSource: s.connection.forceEncapsulation)
        if s.connection.certificates != nil {
            payloads.append(.notify(NotifyPayload(type: NotifyType.signatureHashAlgorithms, data: SignatureHash.notifyData())))
        }
        if s.connection.fragmentation != .no { payloads.append(.notify(NotifyPayload(type: NotifyType.ikev2FragmentationSupported))) }
        let datagram = IKEMessage(header: s.header(.ikeSAInit, response: false, id: 0), payloads: payloads).encode()
        s.initRequest = datagram
        s.nextRequestID = 1
        s.outstanding = IKESession.Outstanding(id: 0, datagrams: [datagram], sends: 1, nextAt: now + schedule.wait(after: 0), purpose: .ikeInit(child: child))
        send(s, datagram, now: now)
    }

    func handleInitResponse(_ s: IKESession, _ m: IKEMessage, _ bytes: [UInt8], from: Endpoint, now: Double) {
        guard s.state == .connecting, let o = s.outstanding, o.id == 0, case let .ikeInit(child) = o.purpose else { counters.unexpected += 1; return }
        counters.received += 1
        let notifies = m.payloads.notifies
        if let cookie = notifies.first(where: { $0.type == NotifyType.cookie }) {
            // §2.6: the same request again, the cookie first. Only once per exchange, so a peer cannot loop us.
            guard s.cookie == nil, (1...64).contains(cookie.data.count) else { close(s, why: "a second COOKIE request"); return }
            s.cookie = cookie.data
            sendInitRequest(s, group: s.dh?.group ?? .curve25519, child: child, now: now)
            return
        }
        if let invalid = notifies.first(where: { $0.type == NotifyType.invalidKEPayload }) {
            // §1.3: the responder wants another group; retry once with it if we offered it.
            let wanted = invalid.data.count == 2 ? UInt16(invalid.data[0]) << 8 | UInt16(invalid.data[1]) : 0
            guard let g = DHGroup(rawValue: wanted), s.connection.proposals.contains(where: { $0.dh.contains(g) }), g != s.dh?.group else {
                failed(s, "the peer asked for key exchange group \(wanted) (INVALID_KE_PAYLOAD), which we do not offer")
                return
            }
            log(AgentLog(.info, "IKE SA \(s.label): peer wants \(g) (INVALID_KE_PAYLOAD); retrying"))
            sendInitRequest(s, group: g, child: child, now: now)
            return
        }
        if let err = notifies.first(where: { NotifyType.isError($0.type) }) {
            failed(s, "the peer refused IKE_SA_INIT: \(NotifyType.name(err.type) ?? "notify \(err.type)")")
            return
        }
        guard m.header.spiR != 0, let chosen = m.payloads.sa,
              chosen.count == 1, let alg = try? NegotiatedAlgorithms(chosen: chosen[0], offered: offeredIKE(s.connection, spi: [])),
              s.connection.proposals.contains(where: { $0.admits(alg) }),
              let prf = alg.prf, let group = alg.dh, group == s.dh?.group,
              case let (keGroup, keData)? = m.payloads.ke,
              keGroup == group.rawValue,
              let nonceR = m.payloads.nonce,
              (16...256).contains(nonceR.count) else {
            failed(s, "malformed or unacceptable IKE_SA_INIT response (algorithms, KE or nonce)")
            return
        }
        guard let dh = s.dh, let secret = try? dh.sharedSecret(peer: keData) else {
            failed(s, "the peer's key exchange value is invalid")
            return
        }
        s.spiR = m.header.spiR
        s.nonceR = nonceR
        s.peerHashes = Self.signatureHashes(m.payloads)
        s.peerFragmentation = s.connection.fragmentation != .no && notifies.contains { $0.type == NotifyType.ikev2FragmentationSupported }
        s.initResponse = bytes
        defer { secret.wipe() }
        guard let keys = try? IKEKeys.derive(prf: prf, encryption: alg.encryption, integrity: alg.integrity, sharedSecret: secret,
                                             nonceI: s.nonceI, nonceR: nonceR, spiI: s.spiI, spiR: s.spiR) else {
            failed(s, "key derivation failed")
            return
        }
        s.dh = nil
        do { try s.installKeys(keys, alg) } catch {
            failed(s, "cannot set up the IKE SA's ciphers: \(error)")
            return
        }
        if let nat = NATDetection.evaluate(m.payloads, spiI: s.spiI, spiR: s.spiR, local: s.local, remote: from) {
            s.localBehindNAT = nat.local
            s.peerBehindNAT = nat.remote
        }
        // §2.23: with a NAT (or encapsulation asked for), move to port 4500 from IKE_AUTH on.
        if s.usesEncapsulation {
            s.local.port = 4500
            s.remote.port = 4500
        }
        s.state = .authenticating
        s.outstanding = nil
        s.lastHeard = now
        sendAuthRequest(s, child: child, now: now)
    }

    /// Responder: a new IKE_SA_INIT request (or a retransmission of one we answered).
    func respondToInit(_ m: IKEMessage, _ bytes: [UInt8], from remote: Endpoint, to local: Endpoint, now: Double) {
        counters.received += 1
        let key = HalfOpenKey(spiI: m.header.spiI, remote: remote)
        if let ours = halfOpen[key], let s = sessions[ours] {
            if s.state == .connecting || s.state == .authenticating, !s.initResponse.isEmpty, s.initRequest == bytes {
                counters.retransmitsAnswered += 1
                transport.send(s.initResponse, from: local, to: remote)
            }
            return
        }
        guard m.header.messageID == 0, m.header.isInitiator else { counters.unexpected += 1; return }
        // Under load, state only for initiators that prove their address (§2.6): a cookie first.
        if halfOpen.count >= cookieThreshold {
            let nonce = m.payloads.nonce
            let offered: [UInt8]? = {
                if case let .notify(n)? = m.payloads.first, n.type == NotifyType.cookie { return n.data }
                return nil
            }()
            guard let nonce, let offered, cookies.verify(offered, nonce: nonce, address: remote.address, spiI: m.header.spiI) else {
                guard let nonce, let cookie = cookies.make(nonce: nonce, address: remote.address, spiI: m.header.spiI) else { return }
                let h = IKEHeader(spiI: m.header.spiI, spiR: 0, exchange: .ikeSAInit, isInitiator: false, isResponse: true, messageID: 0)
                transport.send(IKEMessage(header: h, payloads: [.notify(NotifyPayload(type: NotifyType.cookie, data: cookie))]).encode(),
                               from: local, to: remote)
                counters.cookiesSent += 1
                return
            }
        }
        guard halfOpen.count < halfOpenLimit else {
            counters.halfOpenRefused += 1
            return
        }
        func refuse(_ type: UInt16, _ data: [UInt8] = [], why: String) {
            let h = IKEHeader(spiI: m.header.spiI, spiR: 0, exchange: .ikeSAInit, isInitiator: false, isResponse: true, messageID: 0)
            transport.send(IKEMessage(header: h, payloads: [.notify(NotifyPayload(type: type, data: data))]).encode(), from: local, to: remote)
            log(AgentLog(.warning, "IKE_SA_INIT from \(remote) refused: \(why) (\(NotifyType.name(type) ?? "\(type)"))"))
        }
        guard let c = connections.first(where: { c in
            c.localAddresses.contains(local.address) && (c.remoteAddresses.isEmpty || c.remoteAddresses.contains(remote.address))
        }) else {
            refuse(NotifyType.noProposalChosen, why: "no connection for \(local.address) from \(remote.address)")
            return
        }
        guard let offered = m.payloads.sa,
              case let (keGroup, keData)? = m.payloads.ke,
              let nonceI = m.payloads.nonce else {
            refuse(NotifyType.invalidSyntax, why: "SA, KE or nonce missing")
            return
        }
        guard let (proposal, alg) = ProposalSpec.select(offered: offered, configured: c.proposals, protocolID: .ike),
              let prf = alg.prf, let group = alg.dh else {
            refuse(NotifyType.noProposalChosen, why: "connection \(c.name): no proposal in common")
            return
        }
        guard keGroup == group.rawValue else {
            refuse(NotifyType.invalidKEPayload, [UInt8(group.rawValue >> 8), UInt8(truncatingIfNeeded: group.rawValue)],
                   why: "connection \(c.name): KE for group \(keGroup), we chose \(group)")
            return
        }
        let s = IKESession(role: .responder, connection: c, spiI: m.header.spiI, spiR: Self.newSPI(), local: local,
                           remote: remote, now: now, reason: "peer")
        guard let dh = try? DiffieHellman(group: group), let secret = try? dh.sharedSecret(peer: keData) else {
            refuse(NotifyType.invalidSyntax, why: "connection \(c.name): the peer's key exchange value is invalid")
            return
        }
        s.nonceI = nonceI
        s.nonceR = Self.randomBytes(Self.nonceLength)
        s.peerHashes = Self.signatureHashes(m.payloads)
        s.peerFragmentation = c.fragmentation != .no && m.payloads.notifies.contains { $0.type == NotifyType.ikev2FragmentationSupported }
        s.initRequest = bytes
        defer { secret.wipe() }
        guard let keys = try? IKEKeys.derive(prf: prf, encryption: alg.encryption, integrity: alg.integrity, sharedSecret: secret,
                                             nonceI: nonceI, nonceR: s.nonceR, spiI: s.spiI, spiR: s.spiR) else {
            refuse(NotifyType.noProposalChosen, why: "key derivation failed")
            return
        }
        do { try s.installKeys(keys, alg) } catch {
            refuse(NotifyType.noProposalChosen, why: "cannot set up the IKE SA's ciphers")
            return
        }
        if let nat = NATDetection.evaluate(m.payloads, spiI: s.spiI, spiR: 0, local: local, remote: remote) {
            s.localBehindNAT = nat.local
            s.peerBehindNAT = nat.remote
        }
        var payloads: [Payload] = [.sa([proposal]), .ke(group: group.rawValue, data: dh.publicValue), .nonce(s.nonceR)]
        payloads += NATDetection.notifies(spiI: s.spiI, spiR: s.spiR, source: local, destination: remote,
                                          fakeSource: c.forceEncapsulation)
        if let certs = c.certificates {
            // RFC 7427 §4 and RFC 7296 §3.7: how we sign, and which CAs we trust.
            payloads.append(.notify(NotifyPayload(type: NotifyType.signatureHashAlgorithms, data: SignatureHash.notifyData())))
            payloads.append(.certreq(encoding: CertEncoding.x509Signature, data: certs.authorities.certificateRequest))
        }
        // §2.3: announced back only to an initiator that announced it.
        if s.peerFragmentation { payloads.append(.notify(NotifyPayload(type: NotifyType.ikev2FragmentationSupported))) }
        let response = IKEMessage(header: s.header(.ikeSAInit, response: true, id: 0), payloads: payloads).encode()
        s.initResponse = response
        s.expectedPeerRequestID = 1
        s.state = .authenticating
        sessions[s.spiR] = s
        halfOpen[key] = s.spiR
        transport.send(response, from: local, to: remote)
        counters.sent += 1
        log(AgentLog(.info, "IKE SA \(s.label) from \(remote): responding (\(alg.summary))"))
    }

    /// The hash algorithms of a SIGNATURE_HASH_ALGORITHMS notify among `payloads`, if any.
    static func signatureHashes(_ payloads: [Payload]) -> Set<UInt16>? {
        for case let .notify(n) in payloads where n.type == NotifyType.signatureHashAlgorithms {
            return SignatureHash.parse(notifyData: n.data)
        }
        return nil
    }

    /// A negotiation we started failed: log once, remove the IKE SA; the trap policies stay.
    func failed(_ s: IKESession, _ why: String) {
        log(AgentLog(.error, "IKE SA \(s.label) with \(s.remote) failed: \(why)"))
        close(s, why: "failed")
    }

    static func randomBytes(_ n: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: n)
        b.withUnsafeMutableBytes { p in
            if (try? SecureRandom.fill(p)) == nil { for i in 0..<p.count { p[i] = UInt8.random(in: 0...255) } }
        }
        return b
    }
}
