import SluiceCore

/// IKE SA rekey (RFC 7296 §1.3.2, §2.18): CREATE_CHILD_SA with an IKE proposal, new SPIs,
/// nonces and a fresh key exchange; SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr). The
/// CHILD_SAs move to the new IKE SA; whoever started the rekey then deletes the old one.
extension IKEAgent {
    func startIKERekey(_ s: IKESession, now: Double) {
        guard s.state == .established, let group = s.algorithms?.dh, let dh = try? DiffieHellman(group: group) else { return }
        s.rekeyAt = nil
        enqueue(s, .rekeyIKE(IKERekey(spi: Self.newSPI(), nonce: newNonce(), dh: dh)), now: now)
    }

    func ikeRekeyRequestPayloads(_ s: IKESession, _ r: IKERekey) -> [Payload] {
        // The group we use now goes first, so the peer can answer without INVALID_KE_PAYLOAD.
        return [.sa(offeredIKE(s.connection, spi: Self.spiBytes(r.spi))), .nonce(r.nonce), .ke(group: r.dh.group.rawValue, data: r.dh.publicValue)]
    }

    /// Responder: the peer rekeys the IKE SA. Returns the response payloads.
    func handleIKERekeyRequest(_ s: IKESession, _ inner: [Payload], now: Double) -> [Payload] {
        guard let offered = inner.sa,
              let ni = inner.nonce, (16...256).contains(ni.count),
              case let (keGroup, keData)? = inner.ke else {
            return [.notify(NotifyPayload(type: NotifyType.invalidSyntax))]
        }
        // Both sides rekeying at once (§2.8.2): answer as usual; our own answer decides.
        let collides = admitPeerIKERekey(s)
        guard let (chosen, alg) = ProposalSpec.select(offered: offered, configured: s.connection.proposals, protocolID: .ike),
              let prf = alg.prf, let group = alg.dh, chosen.spi.count == 8, let oldKeys = s.keys else {
            return [.notify(NotifyPayload(type: NotifyType.noProposalChosen))]
        }
        guard keGroup == group.rawValue else {
            return [.notify(NotifyPayload(type: NotifyType.invalidKEPayload, data: [UInt8(group.rawValue >> 8), UInt8(truncatingIfNeeded: group.rawValue)]))]
        }
        guard let dh = try? DiffieHellman(group: group), let secret = try? dh.sharedSecret(peer: keData) else {
            return [.notify(NotifyPayload(type: NotifyType.invalidSyntax))]
        }
        let peerSPI = chosen.spi.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let ourSPI = Self.newSPI()
        let nr = newNonce()
        defer { secret.wipe() }
        guard let keys = try? IKEKeys.rekey(prf: prf, oldSKd: oldKeys.skD, encryption: alg.encryption, integrity: alg.integrity,
                                            sharedSecret: secret, nonceI: ni, nonceR: nr, spiI: peerSPI, spiR: ourSPI,
                                            oldPRF: s.algorithms?.prf) else {
            return [.notify(NotifyPayload(type: NotifyType.noProposalChosen))]
        }
        guard let next = newIKESA(after: s, role: .responder, spiI: peerSPI, spiR: ourSPI, alg: alg, keys: keys, now: now) else {
            return [.notify(NotifyPayload(type: NotifyType.noProposalChosen))]
        }
        next.nonceI = ni
        next.nonceR = nr
        var mine = chosen
        mine.spi = Self.spiBytes(ourSPI)
        if collides {
            s.peerRekey = PeerIKERekey(session: next, nonceI: ni, nonceR: nr)
            log(AgentLog(.info, "IKE SA \(s.label): the peer rekeys it while we do (\(next.label)); the lowest nonce decides which stays"))
        } else {
            handOver(s, to: next)
            log(AgentLog(.notice, "IKE SA \(s.label) rekeyed by the peer: now \(next.label) (\(alg.summary))"))
        }
        return [.sa([mine]), .nonce(nr), .ke(group: group.rawValue, data: dh.publicValue)]
    }

    /// Initiator: the answer to our IKE SA rekey.
    func completeIKERekey(_ s: IKESession, _ r: IKERekey, _ inner: [Payload], now: Double) {
        let notifies = inner.notifies
        // Our rekey failed, but the peer's simultaneous one stands: that IKE SA takes over.
        func peerRekeyStands() -> Bool {
            guard let c = s.peerRekey else { return false }
            s.peerRekey = nil
            handOver(s, to: c.session)
            log(AgentLog(.notice, "IKE SA \(s.label) rekeyed by the peer: now \(c.session.label)"))
            return true
        }
        if let err = notifies.first(where: { NotifyType.isError($0.type) }) {
            if peerRekeyStands() { return }
            log(AgentLog(.warning, "IKE SA \(s.label): rekey refused by the peer (\(NotifyType.name(err.type) ?? "notify \(err.type)")); retrying later"))
            s.rekeyAt = now + Self.jittered(30)
            return
        }
        guard let chosen = inner.sa, chosen.count == 1,
              chosen[0].spi.count == 8, let alg = try? NegotiatedAlgorithms(chosen: chosen[0], offered: offeredIKE(s.connection, spi: Self.spiBytes(r.spi))),
              let prf = alg.prf, alg.dh == r.dh.group, let oldKeys = s.keys,
              let nr = inner.nonce, (16...256).contains(nr.count),
              case let (g, kd)? = inner.ke, g == r.dh.group.rawValue,
              let secret = try? r.dh.sharedSecret(peer: kd) else {
            if peerRekeyStands() { return }
            log(AgentLog(.error, "IKE SA \(s.label): the rekey answer is malformed or was not offered; keeping the IKE SA"))
            s.rekeyAt = now + Self.jittered(30)
            return
        }
        let peerSPI = chosen[0].spi.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        defer { secret.wipe() }
        guard let keys = try? IKEKeys.rekey(prf: prf, oldSKd: oldKeys.skD, encryption: alg.encryption, integrity: alg.integrity,
                                            sharedSecret: secret, nonceI: r.nonce, nonceR: nr, spiI: r.spi, spiR: peerSPI,
                                            oldPRF: s.algorithms?.prf) else {
            if peerRekeyStands() { return }
            log(AgentLog(.error, "IKE SA \(s.label): rekey key derivation failed; keeping the IKE SA"))
            return
        }
        guard let next = newIKESA(after: s, role: .initiator, spiI: r.spi, spiR: peerSPI, alg: alg, keys: keys, now: now) else {
            _ = peerRekeyStands()
            return
        }
        next.nonceI = r.nonce
        next.nonceR = nr
        if let c = s.peerRekey {
            s.peerRekey = nil
            resolveIKERekeyCollision(s, ours: next, theirs: c, now: now)
            return
        }
        handOver(s, to: next)
        log(AgentLog(.notice, "IKE SA \(s.label) rekeyed: now \(next.label) (\(alg.summary))"))
        enqueue(s, .deleteIKE, now: now)
        pump(next, now: now)   // requests about the children that moved over
    }

    /// The new IKE SA of a rekey: same peer, identities and NAT state; no children yet (`handOver`).
    func newIKESA(after s: IKESession, role: IKESession.Role, spiI: UInt64, spiR: UInt64, alg: NegotiatedAlgorithms,
                  keys: IKEKeys, now: Double) -> IKESession? {
        let n = IKESession(role: role, connection: s.connection, spiI: spiI, spiR: spiR, local: s.local, remote: s.remote,
                           now: now, reason: "rekey")
        do { try n.installKeys(keys, alg) } catch {
            log(AgentLog(.error, "IKE SA \(s.label): cannot set up the rekeyed IKE SA's ciphers: \(error)"))
            return nil
        }
        n.state = .established
        n.establishedAt = now
        n.lastHeard = now
        n.remoteID = s.remoteID
        n.peerBehindNAT = s.peerBehindNAT
        n.localBehindNAT = s.localBehindNAT
        // Negotiated in IKE_SA_INIT only, so the rekeyed IKE SA keeps it (as strongSwan's extensions).
        n.peerFragmentation = s.peerFragmentation
        n.rekeyAt = s.connection.rekeyTime > 0 ? now + Self.jittered(s.connection.rekeyTime) : nil
        sessions[n.ourSPI] = n
        return n
    }

    /// The rekeyed IKE SA `s` hands its CHILD_SAs, and the requests about them, to `n`.
    func handOver(_ s: IKESession, to n: IKESession) {
        n.children = s.children
        n.queuedChildren = s.queuedChildren
        s.children = []
        s.queuedChildren = []
        // Requests about CHILD_SAs go with them: the peer looks for a child on the IKE SA that
        // holds it now (strongSwan ignores a delete on the old one, and then never moves its
        // outbound traffic to the rekeyed CHILD_SA).
        let aboutChildren: (IKESession.Purpose) -> Bool = {
            switch $0 { case .deleteChild, .createChild: return true; default: return false }
        }
        n.pending = s.pending.filter(aboutChildren)
        s.pending.removeAll(where: aboutChildren)
        s.successor = n
        s.state = .rekeyed
        s.rekeyAt = nil
    }
}
