/// Simultaneous rekeys (RFC 7296 §2.8.1 CHILD_SA, §2.8.2 IKE SA) and the other exchange
/// collisions of §2.25.
///
/// When both peers rekey the same SA at once, each answers the other's request as usual, so
/// two new SAs exist. Of the four nonces of the two exchanges, the lowest (octet by octet, a
/// shorter prefix being lower) marks the redundant SA, and the peer that created it (sent
/// that exchange's request) deletes it. Both peers see the same four nonces, so they agree
/// without another message. The peer whose new SA survives retires the old one, as in a
/// rekey without collision.
///
/// A peer that refuses our rekey instead (TEMPORARY_FAILURE, as an older Sluice did) leaves
/// its own rekey standing: we take that one.
extension IKEAgent {
    /// A fresh nonce (§2.10): tests may pick them to steer a collision.
    func newNonce() -> [UInt8] { nonceSource(Self.nonceLength) }

    /// True when our exchange holds the lowest of the four nonces: our new SA is redundant.
    static func ourRekeyLoses(ours: (nonceI: [UInt8], nonceR: [UInt8]), theirs: (nonceI: [UInt8], nonceR: [UInt8])) -> Bool {
        nonceLess(lowerNonce(ours.nonceI, ours.nonceR), lowerNonce(theirs.nonceI, theirs.nonceR))
    }

    /// §2.8.1's order: octet by octet, a nonce that ends first being the lower.
    static func nonceLess(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.lexicographicallyPrecedes(b) }

    static func lowerNonce(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] { nonceLess(b, a) ? b : a }

    enum PeerRekeyAdmission { case alone, collides, refuse }

    /// The peer asks to rekey `old`. §2.25: one we are closing (or that was rekeyed already)
    /// gets TEMPORARY_FAILURE; one we are rekeying ourselves is a collision if our request is
    /// on the wire, and simply theirs if ours was still waiting for the window.
    func admitPeerRekey(of old: ChildSA) -> PeerRekeyAdmission {
        switch old.state {
        case .installed: return .alone
        case .rekeyed, .deleting: return .refuse
        case .rekeying:
            let inFlight = sessions.values.contains { s in
                if case let .createChild(r)? = s.outstanding?.purpose { return r.rekeys === old }
                return false
            }
            if inFlight { return .collides }
            for s in sessions.values { s.queuedChildren.removeAll { $0.rekeys === old } }
            old.state = .installed
            return .alone
        }
    }

    /// Both rekeys of one CHILD_SA succeeded: keep one new SA, retire the rest (§2.8.1).
    func resolveChildRekeyCollision(_ s: IKESession, old: ChildSA, ours: ChildSA, theirs: PeerRekey, weLost: Bool, now: Double) {
        old.peerRekey = nil
        counters.rekeyCollisions += 1
        let holder = s.current
        let name = old.profile.name
        if weLost {
            // Ours is redundant and ours to delete; it never carries our traffic. The peer
            // retires the old SA, and its delete moves our outbound to the peer's new SA.
            ours.outboundPendingUntil = nil
            ours.state = .deleting
            old.state = .rekeyed
            old.rekeyAt = nil
            log(AgentLog(.notice, "CHILD_SA \(name): simultaneous rekey, the peer's {\(Self.hex(theirs.child.inboundSPI))_i} stays; deleting ours {\(Self.hex(ours.inboundSPI))_i}"))
            enqueue(holder, .deleteChild(ours), now: now)
        } else {
            // Theirs is redundant: the peer deletes it; our traffic never moves to it.
            theirs.child.outboundPendingUntil = nil
            theirs.child.state = .rekeyed
            theirs.child.rekeyAt = nil
            log(AgentLog(.notice, "CHILD_SA \(name): simultaneous rekey, ours {\(Self.hex(ours.inboundSPI))_i} stays; the peer deletes its {\(Self.hex(theirs.child.inboundSPI))_i}"))
            if owner(of: old, from: s) != nil {
                old.state = .deleting
                enqueue(holder, .deleteChild(old), now: now)
            }
        }
    }

    /// Our rekey of `old` failed. Without a collision it is retried later; with one, the
    /// peer's rekey stands and the peer retires the old SA.
    func ourChildRekeyFailed(_ old: ChildSA, now: Double) {
        // The peer deleted it meanwhile (a rekey and a delete crossed): nothing to retry.
        guard sessions.values.contains(where: { $0.children.contains { $0 === old } }) else { return }
        if let theirs = old.peerRekey {
            old.peerRekey = nil
            old.state = .rekeyed
            old.rekeyAt = nil
            log(AgentLog(.notice, "CHILD_SA \(old.profile.name): our rekey failed, the peer's {\(Self.hex(theirs.child.inboundSPI))_i} stays"))
        } else {
            old.state = .installed
            old.rekeyAt = now + acquireRetry * 6
        }
    }

    /// The peer asks to rekey IKE SA `s`: true when our own rekey of it is on the wire (a
    /// collision). Ours, if it was still waiting for the window, gives way to theirs.
    func admitPeerIKERekey(_ s: IKESession) -> Bool {
        if case .rekeyIKE? = s.outstanding?.purpose { return true }
        s.pending.removeAll { if case .rekeyIKE = $0 { return true }; return false }
        return false
    }

    /// Both rekeys of IKE SA `s` succeeded (§2.8.2): the survivor takes the children; the
    /// creator of the redundant one deletes it; the survivor's creator deletes `s`.
    func resolveIKERekeyCollision(_ s: IKESession, ours: IKESession, theirs: PeerIKERekey, now: Double) {
        counters.rekeyCollisions += 1
        let lost = Self.ourRekeyLoses(ours: (ours.nonceI, ours.nonceR), theirs: (theirs.nonceI, theirs.nonceR))
        if lost {
            handOver(s, to: theirs.session)
            log(AgentLog(.notice, "IKE SA \(s.label): simultaneous rekey, the peer's \(theirs.session.label) stays; deleting ours \(ours.label)"))
            enqueue(ours, .deleteIKE, now: now)
            pump(theirs.session, now: now)
        } else {
            handOver(s, to: ours)
            // The peer deletes its redundant IKE SA; requests about children go on ours.
            theirs.session.state = .rekeyed
            theirs.session.rekeyAt = nil
            theirs.session.successor = ours
            // Should its delete never come (it may have lost our answer), we delete it.
            theirs.session.retireAt = now + 2 * rekeyedInboundDelay
            log(AgentLog(.notice, "IKE SA \(s.label): simultaneous rekey, ours \(ours.label) stays; the peer deletes its \(theirs.session.label)"))
            enqueue(s, .deleteIKE, now: now)
            pump(ours, now: now)
        }
    }
}

/// The CHILD_SA a peer's rekey made while ours of the same SA was in flight, and that exchange's nonces.
struct PeerRekey {
    var child: ChildSA
    var nonceI: [UInt8]
    var nonceR: [UInt8]
}

/// The IKE SA a peer's rekey made while ours was in flight, and that exchange's nonces.
struct PeerIKERekey {
    var session: IKESession
    var nonceI: [UInt8]
    var nonceR: [UInt8]
}
