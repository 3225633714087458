import SluiceCore

/// Requests and responses on an IKE SA after IKE_SA_INIT: message IDs (§2.2), the cached
/// response (§2.1), and INFORMATIONAL (§1.4: deletes, liveness checks).
extension IKEAgent {
    func handleRequest(_ s: IKESession, _ m: IKEMessage, _ bytes: [UInt8], from: Endpoint, to: Endpoint, now: Double) {
        counters.received += 1
        let id = m.header.messageID
        if let cached = s.cachedResponse, cached.id == id {
            resendCachedResponse(s, cached, request: bytes, to: from, now: now)
            return
        }
        guard id == s.expectedPeerRequestID else {
            counters.unexpected += 1
            log(AgentLog(.debug, "\(s.label): request with message ID \(id), expected \(s.expectedPeerRequestID); dropped"))
            return
        }
        handleOpenedRequest(s, m.header, s.open(bytes, m), request: bytes, from: from, to: to, now: now)
    }

    /// A retransmitted request: the same response, byte for byte, without processing it again.
    /// Only for the very same bytes: anything else with the SPIs and this ID could otherwise
    /// bounce our response to an address of the sender's choosing.
    func resendCachedResponse(_ s: IKESession, _ cached: IKESession.CachedResponse, request: [UInt8], to: Endpoint, now: Double) {
        guard cached.request == request else { counters.unexpected += 1; return }
        counters.retransmitsAnswered += 1
        for d in cached.datagrams { transport.send(d, from: s.local, to: to) }
        s.lastSent = now
    }

    /// A request in the expected message ID, its SK payload opened (or its fragments joined).
    /// `request`: the datagram (or first fragment) a retransmission of it will repeat.
    func handleOpenedRequest(_ s: IKESession, _ header: IKEHeader, _ opened: IKESession.Opened, request bytes: [UInt8],
                             from: Endpoint, to: Endpoint, now: Double) {
        let id = header.messageID
        let inner: [Payload], refusal: Payload?
        switch opened {
        case let .payloads(p): (inner, refusal) = (p, nil)
        case .unverified:
            counters.integrityFailures += 1
            log(AgentLog(.debug, "\(s.label): request \(id) from \(from) does not verify; dropped"))
            return
        case let .malformed(e):
            counters.malformed += 1
            log(AgentLog(.warning, "\(s.label): request \(id) from \(from) verifies but its payloads do not decode (\(e)); answered with an error"))
            (inner, refusal) = ([], Self.undecodableNotify(e))
        }
        // The peer's address is what its last authenticated message came from (NAT mapping changes).
        if s.state == .established, from != s.remote, from.port != 500 || !s.usesEncapsulation { s.remote = from }
        if s.role == .responder, s.state == .authenticating, to.port == 4500 { s.local.port = 4500; s.remote = from }
        s.lastHeard = now
        var response: [Payload]
        var closeAfter = false
        switch header.exchange {
        case _ where refusal != nil:
            response = refusal.map { [$0] } ?? []
            // An IKE_AUTH we cannot read leaves nothing to authenticate (§2.21.2): the IKE SA goes.
            if s.state == .authenticating { s.state = .deleting; closeAfter = true }
        case .ikeAuth:
            response = handleAuthRequest(s, inner, now: now)
            closeAfter = s.state == .deleting
        case .createChildSA:
            guard s.state == .established else {
                // A rekeyed (or deleting) IKE SA takes no new work (§2.8.2 TEMPORARY_FAILURE).
                response = [.notify(NotifyPayload(type: s.state == .rekeyed || s.state == .deleting ? NotifyType.temporaryFailure : NotifyType.invalidSyntax))]
                break
            }
            if inner.contains(where: { if case let .notify(n) = $0 { return n.type == NotifyType.rekeySA }; return false })
                || !inner.contains(where: { if case let .sa(p) = $0 { return p.first?.protocolID == .ike }; return false }) {
                response = childResponsePayloads(s, inner, initial: false, now: now)
            } else {
                response = handleIKERekeyRequest(s, inner, now: now)
            }
        case .informational:
            (response, closeAfter) = handleInformational(s, inner, now: now)
        case .ikeSAInit:
            return
        }
        guard let datagrams = try? s.sealMessage(s.header(header.exchange, response: true, id: id), response, fragmentSize: fragmentSize) else {
            log(AgentLog(.error, "\(s.label): cannot build the response to request \(id)"))
            return
        }
        s.expectedPeerRequestID &+= 1
        s.cachedResponse = IKESession.CachedResponse(id: id, request: bytes, datagrams: datagrams)
        send(s, datagrams, to: from, now: now)
        if closeAfter { close(s, why: s.state == .rekeyed ? "replaced by its rekey" : s.state == .deleting && s.establishedAt == nil ? "authentication failed" : "deleted by the peer") }
        else {
            pump(s, now: now)
            // After answering the peer's IKE SA rekey: what moved to the new IKE SA may go now.
            if let n = s.successor { pump(n, now: now) }
        }
    }

    func handleResponse(_ s: IKESession, _ m: IKEMessage, _ bytes: [UInt8], from: Endpoint, now: Double) {
        guard let o = s.outstanding, o.id == m.header.messageID else {
            counters.unexpected += 1
            return
        }
        handleOpenedResponse(s, m.header, s.open(bytes, m), from: from, now: now)
    }

    /// The response to our outstanding request, its SK payload opened (or its fragments joined).
    func handleOpenedResponse(_ s: IKESession, _ header: IKEHeader, _ opened: IKESession.Opened, from: Endpoint, now: Double) {
        guard let o = s.outstanding, o.id == header.messageID else {
            counters.unexpected += 1
            return
        }
        let inner: [Payload]
        switch opened {
        case let .payloads(p): inner = p
        case .unverified:
            counters.integrityFailures += 1
            log(AgentLog(.debug, "\(s.label): response \(header.messageID) from \(from) does not verify; dropped"))
            return
        case let .malformed(e):
            // From the peer, but unreadable: nothing to act on; the request stays outstanding.
            counters.malformed += 1
            log(AgentLog(.warning, "\(s.label): response \(header.messageID) from \(from) verifies but its payloads do not decode (\(e)); dropped"))
            return
        }
        counters.received += 1
        s.outstanding = nil
        s.lastHeard = now
        switch o.purpose {
        case let .ikeAuth(child):
            handleAuthResponse(s, inner, child: child, now: now)
        case let .createChild(r):
            completeChild(s, r, inner, now: now)
            if let old = r.rekeys, old.state == .rekeying { ourChildRekeyFailed(old, now: now) }
        case let .deleteChild(child):
            // The old inbound SA of a rekey keeps taking stragglers for a moment; a plain delete goes now.
            // An IKE SA rekey may have moved the child to the successor meanwhile: decide there.
            guard let holder = owner(of: child, from: s) else { break }
            if child.removeAt == nil {
                if holder.children.contains(where: { $0.profile.name == child.profile.name && $0 !== child && $0.state == .installed }) {
                    child.removeAt = now + rekeyedInboundDelay
                    log(AgentLog(.info, "CHILD_SA \(child.profile.name){\(Self.hex(child.inboundSPI))_i \(Self.hex(child.outboundSPI))_o} rekeyed; old SA removed in \(Int(rekeyedInboundDelay)) s"))
                } else {
                    removeChild(holder, child, why: "deleted (terminate)")
                }
            }
        case .deleteIKE:
            close(s, why: s.state == .rekeyed ? "rekeyed" : "deleted")
            return
        case let .rekeyIKE(r):
            completeIKERekey(s, r, inner, now: now)
        case .dpd, .ikeInit:
            break
        }
        pump(s, now: now)
    }

    /// The answer to an authentic request whose payloads do not decode (§3.10.1): an unknown
    /// critical payload names its type (§2.5), anything else is INVALID_SYNTAX.
    static func undecodableNotify(_ e: IKEDecodeError) -> Payload {
        if case let .unsupportedCritical(type) = e.kind {
            return .notify(NotifyPayload(type: NotifyType.unsupportedCriticalPayload, data: [type]))
        }
        return .notify(NotifyPayload(type: NotifyType.invalidSyntax))
    }

    /// The peer's INFORMATIONAL request: deletes and liveness checks. Returns the response and
    /// whether the IKE SA goes away once it is sent.
    func handleInformational(_ s: IKESession, _ inner: [Payload], now: Double) -> ([Payload], Bool) {
        var response: [Payload] = []
        // §2.21.2: the initiator could not verify us and says so; the IKE SA goes.
        if inner.contains(where: { if case let .notify(n) = $0 { return n.type == NotifyType.authenticationFailed }; return false }) {
            counters.authFailures += 1
            log(AgentLog(.error, "IKE SA \(s.label) with \(s.remote): the peer refused our authentication (AUTHENTICATION_FAILED)"))
            return ([], true)
        }
        for case let .delete(d) in inner {
            switch d.protocolID {
            case .ike:
                // The peer won a rekey collision and retires this IKE SA before our own
                // rekey's answer came: its rekey stands (§2.8.2).
                if let c = s.peerRekey { s.peerRekey = nil; handOver(s, to: c.session) }
                return ([], true)
            case .esp:
                var ours: [[UInt8]] = []
                for raw in d.spis {
                    guard let spi = Self.spi32(raw), let child = s.children.first(where: { $0.outboundSPI == spi }) else { continue }
                    ours.append(Self.spiBytes(child.inboundSPI))
                    // The initiator of a rekey deletes the old SA once it has the new one: ours may follow.
                    for newer in s.children where newer !== child && newer.profile.name == child.profile.name { activateOutbound(s, newer) }
                    if child.state == .rekeyed || s.children.contains(where: { $0.profile.name == child.profile.name && $0 !== child && $0.state == .installed }) {
                        child.state = .deleting
                        child.removeAt = now + rekeyedInboundDelay
                    } else {
                        removeChild(s, child, why: "deleted by the peer")
                        // For a simultaneous delete (both sides terminating), nothing more to send.
                        s.pending.removeAll { if case let .deleteChild(c) = $0 { return c === child }; return false }
                    }
                }
                if !ours.isEmpty { response.append(.delete(DeletePayload(protocolID: .esp, spis: ours))) }
            case .ah:
                continue
            }
        }
        return (response, false)
    }
}
