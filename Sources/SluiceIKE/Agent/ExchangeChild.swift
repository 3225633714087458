import SluiceCore

/// CHILD_SAs: the second half of IKE_AUTH and CREATE_CHILD_SA (RFC 7296 §1.3, §2.9, §2.17),
/// new SAs and rekeys (REKEY_SA, make-before-break).
extension IKEAgent {
    /// Our traffic selectors for a child: configured, or "dynamic" (our / the peer's outer address).
    func selectors(_ s: IKESession, _ p: ChildProfile) -> (local: [WireTrafficSelector], remote: [WireTrafficSelector]) {
        (p.localTS.isEmpty ? [WireTrafficSelector(host: s.local.address)] : p.localTS,
         p.remoteTS.isEmpty ? [WireTrafficSelector(host: s.remote.address)] : p.remoteTS)
    }

    /// ESP proposals as offered in this exchange: IKE_AUTH carries no key exchange (§1.2).
    func espProposals(_ p: ChildProfile, initial: Bool) -> [ProposalSpec] {
        initial ? p.espProposals.map { var x = $0; x.dh = []; return x } : p.espProposals
    }

    func offeredESP(_ specs: [ProposalSpec], spi: UInt32) -> [WireProposal] {
        specs.enumerated().map { $1.wireProposal(number: UInt8($0 + 1), protocolID: .esp, spi: Self.spiBytes(spi)) }
    }

    /// The initiator's CHILD_SA payloads: [REKEY_SA], [USE_TRANSPORT_MODE], SA, [Ni, KEi], TSi, TSr.
    func childRequestPayloads(_ s: IKESession, _ r: inout ChildRequest, initial: Bool) -> [Payload]? {
        if r.spi == 0 { r.spi = backend.allocateSPI() }
        var out: [Payload] = []
        if let old = r.rekeys { out.append(.notify(NotifyPayload(protocolID: ProtocolID.esp.rawValue, spi: Self.spiBytes(old.inboundSPI), type: NotifyType.rekeySA))) }
        if r.profile.mode == .transport { out.append(.notify(NotifyPayload(type: NotifyType.useTransportMode))) }
        let specs = espProposals(r.profile, initial: initial)
        out.append(.sa(offeredESP(specs, spi: r.spi)))
        if !initial {
            r.nonce = newNonce()
            out.append(.nonce(r.nonce))
            if let g = specs.first?.dh.first {
                guard let dh = try? DiffieHellman(group: g) else { return nil }
                r.dh = dh
                out.append(.ke(group: g.rawValue, data: dh.publicValue))
            }
        }
        var (l, rm) = r.rekeys.map { ($0.localTS, $0.remoteTS) } ?? selectors(s, r.profile)
        if let t = r.trigger, r.rekeys == nil { l.insert(t.local, at: 0); rm.insert(t.remote, at: 0) }
        out.append(.tsi(l))
        out.append(.tsr(rm))
        return out
    }

    /// Responder: picks the child, narrows selectors, chooses ESP algorithms, installs; returns
    /// the response payloads, or one error notify (the IKE SA stays in any case).
    func childResponsePayloads(_ s: IKESession, _ inner: [Payload], initial: Bool, now: Double) -> [Payload] {
        let notifies = inner.notifies
        guard let offered = inner.sa,
              let tsi = inner.tsi,
              let tsr = inner.tsr else {
            return [.notify(NotifyPayload(type: NotifyType.invalidSyntax))]
        }
        let wantsTransport = notifies.contains { $0.type == NotifyType.useTransportMode }
        var rekeyed: ChildSA? = nil
        // Our own rekey of the same CHILD_SA, in flight: a simultaneous rekey (§2.8.1).
        var collidesWithOurs = false
        if let n = notifies.first(where: { $0.type == NotifyType.rekeySA }) {
            guard let spi = Self.spi32(n.spi), let old = s.children.first(where: { $0.outboundSPI == spi }) else {
                return [.notify(NotifyPayload(protocolID: ProtocolID.esp.rawValue, spi: n.spi, type: NotifyType.childSANotFound))]
            }
            switch admitPeerRekey(of: old) {
            case .refuse: return [.notify(NotifyPayload(type: NotifyType.temporaryFailure))]
            case .alone: break
            case .collides: collidesWithOurs = true
            }
            rekeyed = old
        }
        var nonceI: [UInt8] = s.nonceI, nonceR: [UInt8] = s.nonceR
        var ke: (group: UInt16, data: [UInt8])? = nil
        if !initial {
            guard let ni = inner.nonce, (16...256).contains(ni.count) else {
                return [.notify(NotifyPayload(type: NotifyType.invalidSyntax))]
            }
            nonceI = ni
            nonceR = newNonce()
            if case let (g, d)? = inner.ke { ke = (g, d) }
        }
        var lastError = NotifyType.tsUnacceptable
        let candidates = rekeyed.map { [$0.profile] } ?? s.connection.children
        for p in candidates {
            let (allowLocal, allowRemote) = rekeyed.map { ($0.localTS, $0.remoteTS) } ?? selectors(s, p)
            // Narrowed, then cut to what one CHILD_SA may spread over (the answer's TS payloads
            // and the SPD must hold them).
            guard let (narrowedI, narrowedR) = Narrowing.bounded(Narrowing.narrow(tsi, to: allowRemote), Narrowing.narrow(tsr, to: allowLocal)),
                  !narrowedI.isEmpty, !narrowedR.isEmpty else { continue }
            guard (p.mode == .transport) == wantsTransport else { lastError = NotifyType.noProposalChosen; continue }
            guard let (chosen, alg) = ProposalSpec.select(offered: offered, configured: espProposals(p, initial: initial), protocolID: .esp),
                  let peerSPI = Self.spi32(chosen.spi) else { lastError = NotifyType.noProposalChosen; continue }
            var secret: SecretBytes? = nil
            var ourKE: [UInt8]? = nil
            if let g = alg.dh {
                guard let ke, ke.group == g.rawValue else {
                    return [.notify(NotifyPayload(type: NotifyType.invalidKEPayload, data: [UInt8(g.rawValue >> 8), UInt8(truncatingIfNeeded: g.rawValue)]))]
                }
                guard let dh = try? DiffieHellman(group: g), let sh = try? dh.sharedSecret(peer: ke.data) else {
                    return [.notify(NotifyPayload(type: NotifyType.invalidSyntax))]
                }
                secret = sh
                ourKE = dh.publicValue
            }
            let ourSPI = backend.allocateSPI()
            guard let created = installChild(s, p, alg, inbound: ourSPI, outbound: peerSPI, secret: secret, nonceI: nonceI, nonceR: nonceR,
                                             local: narrowedR, remote: narrowedI, now: now, reason: rekeyed == nil ? "peer" : "rekey by peer",
                                             weInitiated: false, outboundNow: rekeyed == nil) else {
                backend.releaseSPI(ourSPI)
                return [.notify(NotifyPayload(type: NotifyType.noProposalChosen))]
            }
            var chosenOurs = chosen
            chosenOurs.spi = Self.spiBytes(ourSPI)
            var out: [Payload] = []
            if p.mode == .transport { out.append(.notify(NotifyPayload(type: NotifyType.useTransportMode))) }
            out.append(.sa([chosenOurs]))
            if !initial { out.append(.nonce(nonceR)) }
            if let k = ourKE, let g = alg.dh { out.append(.ke(group: g.rawValue, data: k)) }
            out.append(.tsi(narrowedI))
            out.append(.tsr(narrowedR))
            if let old = rekeyed {
                // In a collision the old SA stays "rekeying" until our own answer decides which new SA survives.
                if collidesWithOurs { old.peerRekey = PeerRekey(child: created, nonceI: nonceI, nonceR: nonceR) } else { old.state = .rekeyed }
            }
            return out
        }
        log(AgentLog(.warning, "IKE SA \(s.label): CHILD_SA request from \(s.remote) refused (\(NotifyType.name(lastError) ?? "\(lastError)")): TSi \(tsi.map(\.description)), TSr \(tsr.map(\.description))"))
        return [.notify(NotifyPayload(type: lastError))]
    }

    /// Initiator: the responder's answer to our CHILD_SA request (in IKE_AUTH or CREATE_CHILD_SA).
    func completeChild(_ s: IKESession, _ r: ChildRequest, _ inner: [Payload], now: Double) {
        let notifies = inner.notifies
        func fail(_ why: String) {
            backend.releaseSPI(r.spi)
            lastAcquire[r.profile.name] = now
            log(AgentLog(.error, "CHILD_SA \(r.profile.name) with \(s.remote) failed: \(why)"))
        }
        if let err = notifies.first(where: { NotifyType.isError($0.type) }) {
            fail("the peer answered \(NotifyType.name(err.type) ?? "notify \(err.type)")")
            return
        }
        guard let chosen = inner.sa, chosen.count == 1,
              let alg = try? NegotiatedAlgorithms(chosen: chosen[0], offered: offeredESP(espProposals(r.profile, initial: r.nonce.isEmpty), spi: r.spi)),
              let peerSPI = Self.spi32(chosen[0].spi),
              espProposals(r.profile, initial: r.nonce.isEmpty).contains(where: { $0.admits(alg) }),
              let tsi = inner.tsi,
              let tsr = inner.tsr else {
            fail("the answer's SA or traffic selectors are missing or were not offered")
            return
        }
        let (ourLocal, ourRemote) = r.rekeys.map { ($0.localTS, $0.remoteTS) } ?? selectors(s, r.profile)
        let offeredLocal = (r.trigger.map { [$0.local] } ?? []) + ourLocal, offeredRemote = (r.trigger.map { [$0.remote] } ?? []) + ourRemote
        guard tsi.allSatisfy({ t in offeredLocal.contains { t.isSubset(of: $0) } }),
              tsr.allSatisfy({ t in offeredRemote.contains { t.isSubset(of: $0) } }) else {
            fail("the peer's traffic selectors are wider than we proposed")
            return
        }
        guard Narrowing.bounded(tsi, tsr).map({ $0.0.count == tsi.count && $0.1.count == tsr.count }) ?? false else {
            fail("the peer's traffic selectors are too many or too ragged (over \(ChildPolicies.maxSelectors) a side or \(ChildPolicies.maxPolicies) policies)")
            return
        }
        let transport = notifies.contains { $0.type == NotifyType.useTransportMode }
        guard transport == (r.profile.mode == .transport) else {
            fail("the peer chose \(transport ? "transport" : "tunnel") mode, the child is configured for \(r.profile.mode.rawValue)")
            return
        }
        var nonceI = s.nonceI, nonceR = s.nonceR
        var secret: SecretBytes? = nil
        if !r.nonce.isEmpty {
            guard let nr = inner.nonce, (16...256).contains(nr.count) else {
                fail("no nonce in the CREATE_CHILD_SA answer"); return
            }
            nonceI = r.nonce
            nonceR = nr
            if let g = alg.dh {
                guard let dh = r.dh, dh.group == g, case let (kg, kd)? = inner.ke,
                      kg == g.rawValue, let sh = try? dh.sharedSecret(peer: kd) else {
                    fail("the answer's key exchange is missing or invalid"); return
                }
                secret = sh
            }
        }
        // A simultaneous rekey of the same SA (§2.8.1): the new SA with the lowest nonce goes.
        let collision = r.rekeys?.peerRekey
        let lost = collision.map { Self.ourRekeyLoses(ours: (nonceI, nonceR), theirs: ($0.nonceI, $0.nonceR)) } ?? false
        guard let child = installChild(s, r.profile, alg, inbound: r.spi, outbound: peerSPI, secret: secret, nonceI: nonceI, nonceR: nonceR,
                                       local: tsi, remote: tsr, now: now, reason: r.reason, weInitiated: true, outboundNow: !lost) else {
            fail("the data plane refused the SA")
            return
        }
        lastAcquire[r.profile.name] = nil
        guard let old = r.rekeys else { return }
        if let collision {
            resolveChildRekeyCollision(s, old: old, ours: child, theirs: collision, weLost: lost, now: now)
        } else if owner(of: old, from: s) != nil {
            // Make-before-break: outbound already moved to the new SA; delete the old one.
            // (Unless the peer deleted it meanwhile: then there is nothing left to retire.)
            old.state = .deleting
            enqueue(s.current, .deleteChild(old), now: now)
        }
    }

    /// KEYMAT, SA configs and policies of a negotiated child; installs them. nil when refused.
    @discardableResult
    func installChild(_ s: IKESession, _ p: ChildProfile, _ alg: NegotiatedAlgorithms, inbound: UInt32, outbound: UInt32,
                      secret: SecretBytes?, nonceI: [UInt8], nonceR: [UInt8], local: [WireTrafficSelector],
                      remote: [WireTrafficSelector], now: Double, reason: String, weInitiated: Bool,
                      outboundNow: Bool = true) -> ChildSA? {
        guard let keys = s.keys, let prf = s.algorithms?.prf, let proposal = alg.espProposal else {
            log(AgentLog(.error, "CHILD_SA \(p.name): \(alg.summary) is not something the data plane can run"))
            return nil
        }
        if s.usesEncapsulation && p.mode == .transport {
            log(AgentLog(.error, "CHILD_SA \(p.name): transport mode with UDP encapsulation is not supported by the data plane"))
            return nil
        }
        let each = alg.encryption.keyMaterialLength + (alg.integrity?.keyLength ?? 0)
        defer { secret?.wipe() }
        guard let keymat = try? childKeyMaterial(prf: prf, skD: keys.skD, sharedSecret: secret, nonceI: nonceI, nonceR: nonceR, length: 2 * each) else {
            log(AgentLog(.error, "CHILD_SA \(p.name): KEYMAT derivation failed"))
            return nil
        }
        let ir = SecretBytes(Array(keymat.bytes[0..<each])), ri = SecretBytes(Array(keymat.bytes[each..<(2 * each)]))
        keymat.wipe()
        // §2.17: "initiator" is whoever sent this exchange's request (its nonce is Ni), which in
        // CREATE_CHILD_SA need not be the IKE SA's original initiator.
        let (outKey, inKey) = weInitiated ? (ir, ri) : (ri, ir)
        var life = Lifetime()
        if p.rekeyBytes > 0 { life.softBytes = p.rekeyBytes }
        if p.rekeyPackets > 0 { life.softPackets = p.rekeyPackets }
        if p.lifeBytes > 0 { life.hardBytes = p.lifeBytes }
        if p.lifePackets > 0 { life.hardPackets = p.lifePackets }
        if p.lifeTime > 0 { life.hardSeconds = UInt64(p.lifeTime) }
        let inName = "\(p.name)-\(Self.hex(inbound))-in", outName = "\(p.name)-\(Self.hex(outbound))-out"
        func config(_ name: String, _ d: Direction, _ spi: UInt32, _ key: SecretBytes) -> SAConfig {
            var c = SAConfig(name: name, direction: d, spi: spi, mode: p.mode, local: s.local.address, remote: s.remote.address,
                             proposal: proposal, keyMaterial: key, esn: alg.esn, replayWindow: p.replayWindow, lifetime: life,
                             tfcPadTo: p.mode == .tunnel ? p.tfcPadTo : 0, mtu: p.mtu, dfPolicy: p.dfPolicy,
                             udpEncapsulation: s.usesEncapsulation)
            c.durable = false   // a negotiated key never outlives this process: nothing to keep on disk
            return c
        }
        let policies = ChildPolicies.make(local: local, remote: remote, outboundSA: outName, inboundSA: inName, origin: Self.trapOrigin(p.name))
        let install = ChildInstall(child: p.name, inbound: config(inName, .inbound, inbound, inKey), outbound: config(outName, .outbound, outbound, outKey),
                                   outboundPolicies: policies.outbound, inboundPolicies: policies.inbound)
        do { try backend.installChild(install, outbound: outboundNow) } catch {
            log(AgentLog(.error, "CHILD_SA \(p.name): the data plane refused it: \(error)"))
            return nil
        }
        let child = ChildSA(profile: p, inboundSPI: inbound, outboundSPI: outbound, algorithms: alg, localTS: local, remoteTS: remote,
                            install: install, now: now)
        child.rekeyAt = p.rekeyTime > 0 ? now + Self.jittered(p.rekeyTime) : nil
        if !outboundNow { child.outboundPendingUntil = now + rekeyedInboundDelay }
        // An answer that arrives after the IKE SA was rekeyed belongs to its successor.
        s.current.children.append(child)
        log(AgentLog(.notice, "CHILD_SA \(p.name){\(Self.hex(inbound))_i \(Self.hex(outbound))_o} established (\(reason)): \(alg.summary), \(p.mode.rawValue), \(local.map(\.description).joined(separator: ",")) === \(remote.map(\.description).joined(separator: ","))"))
        return child
    }

    /// A rekey's responder moves outbound traffic to the new SA once the initiator deleted the
    /// old one (it has the new inbound SA then), or after a few seconds at the latest.
    func activateOutbound(_ s: IKESession, _ child: ChildSA) {
        guard child.outboundPendingUntil != nil else { return }
        child.outboundPendingUntil = nil
        do { try backend.activateOutbound(child.install) } catch {
            log(AgentLog(.error, "CHILD_SA \(child.profile.name): cannot move outbound traffic to the new SA: \(error)"))
        }
    }

    func startRekey(_ s: IKESession, _ child: ChildSA, now: Double) {
        guard child.state == .installed else { return }
        child.state = .rekeying
        s.queuedChildren.append(ChildRequest(profile: child.profile, reason: "rekey", rekeys: child))
        pump(s, now: now)
    }
}

extension ProposalSpec {
    /// True when negotiated algorithms are all among this proposal's.
    func admits(_ a: NegotiatedAlgorithms) -> Bool {
        encryption.contains(a.encryption)
            && (a.integrity.map { integrity.contains($0) } ?? true)
            && (a.prf.map { prf.isEmpty || prf.contains($0) } ?? true)
            && (a.dh.map { dh.contains($0) } ?? true)
            && esn.contains(a.esn)
    }
}
