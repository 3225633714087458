import SluiceCore

/// The IKEv2 agent: every IKE SA of every connection, driven by datagrams, operator
/// commands, acquires and the clock. It performs no I/O itself: datagrams leave through an
/// `IKETransport`, SAs and policies through an `IPsecBackend`, so two agents can talk to each
/// other in memory in tests.
///
/// Concurrency: not thread-safe. The daemon calls every method from its one IKE thread.
public final class IKEAgent {
    public private(set) var connections: [ConnectionProfile]
    let schedule: RetransmitSchedule
    let backend: IPsecBackend
    let transport: IKETransport
    let log: (AgentLog) -> Void
    var sessions: [UInt64: IKESession] = [:]
    /// Responder IKE SAs by the initiator's SPI and address: a retransmitted IKE_SA_INIT gets the same answer.
    var halfOpen: [HalfOpenKey: UInt64] = [:]
    /// Last acquire per child: at most one negotiation at a time, retried after a pause on failure.
    var lastAcquire: [String: Double] = [:]
    public internal(set) var counters = AgentCounters()
    /// Responder IKE SAs not yet authenticated give up after this long (strongSwan: half_open_timeout).
    public var halfOpenTimeout: Double = 30
    /// The old inbound SA of a rekeyed CHILD_SA keeps accepting this long (strongSwan: delete_rekeyed_delay).
    public var rekeyedInboundDelay: Double = 5
    /// An acquire for a child whose negotiation failed waits this long before trying again.
    public var acquireRetry: Double = 5
    /// Behind a NAT, a keepalive goes after this many seconds of sending nothing to the peer
    /// (strongSwan: keep_alive); 0 = off.
    public var keepAlive: Double = 20
    /// The time peer certificates are checked at (Unix seconds); nil: the system clock.
    public var certificateTime: (() -> Int64)?
    var trapsInstalled = false
    /// Half-open IKE SAs from which on a new IKE_SA_INIT must bring a cookie (strongSwan: cookie_threshold).
    public var cookieThreshold = 30
    /// Half-open IKE SAs at most (strongSwan: block_threshold is per peer; this is all of them).
    public var halfOpenLimit = 1000
    var cookies = CookieJar()
    /// IP datagram size above which a message goes in fragments, where the peer takes them
    /// (strongSwan: fragment_size); 0 = the family's minimum MTU.
    public var fragmentSize = 1280
    /// The largest message taken from the peer, whole or reassembled (strongSwan: max_packet).
    public var maxPacket = 10000
    /// Where nonces come from; tests pick them to steer rekey collisions (§2.8.1).
    var nonceSource: (Int) -> [UInt8] = IKEAgent.randomBytes

    struct HalfOpenKey: Hashable { var spiI: UInt64; var remote: Endpoint }

    public init(connections: [ConnectionProfile], schedule: RetransmitSchedule = RetransmitSchedule(),
                backend: IPsecBackend, transport: IKETransport, log: @escaping (AgentLog) -> Void) {
        self.connections = connections; self.schedule = schedule; self.backend = backend
        self.transport = transport; self.log = log
    }

    // MARK: operator and data-plane entry points

    /// Installs every child's trap policies: traffic of a configured child is never sent in
    /// clear, SA or not (dropped as no_sa; for trap children it raises an acquire).
    public func installTraps() {
        for c in connections { for child in c.children { installTrap(c, child) } }
        trapsInstalled = true
    }

    /// Traps (if not yet installed), then the children with `start_action = "start"`.
    public func start(now: Double) {
        if !trapsInstalled { installTraps() }
        for c in connections {
            for child in c.children where child.startAction == .start {
                try? initiate(child: child.name, reason: "start", now: now)
            }
        }
    }

    /// `sluice rekey --ike`: a new IKE SA with fresh keys; the CHILD_SAs move over.
    public func rekey(ike name: String, now: Double) throws(AgentError) {
        guard connections.contains(where: { $0.name == name }) else { throw .unknownConnection(name) }
        for s in sessions.values where s.connection.name == name && s.state == .established { startIKERekey(s, now: now) }
    }

    /// `sluice initiate --child`: an IKE SA to the peer if there is none, then the CHILD_SA.
    public func initiate(child name: String, reason: String = "initiate", now: Double) throws(AgentError) {
        guard let (c, child) = findChild(name) else { throw .unknownChild(name) }
        try initiate(c, ChildRequest(profile: child, reason: reason), now: now)
    }

    /// `sluice initiate --ike`: the IKE SA with its first child.
    public func initiate(ike name: String, now: Double) throws(AgentError) {
        guard let c = connections.first(where: { $0.name == name }) else { throw .unknownConnection(name) }
        try initiate(c, c.children.first.map { ChildRequest(profile: $0, reason: "initiate") }, now: now)
    }

    /// A worker found PROTECT traffic of a trap child without an SA.
    public func acquire(child name: String, trigger: FlowKey? = nil, now: Double) {
        guard let (c, child) = findChild(name), child.startAction == .trap || child.dpdAction != .clear else { return }
        if hasChild(name) || isNegotiating(child: name) { return }
        if let last = lastAcquire[name], now - last < acquireRetry { return }
        lastAcquire[name] = now
        var request = ChildRequest(profile: child, reason: "trap")
        if let k = trigger { request.trigger = (Self.selector(k, local: true), Self.selector(k, local: false)) }
        try? initiate(c, request, now: now)
    }

    /// `sluice terminate --child`: deletes the CHILD_SA(s) of that child (INFORMATIONAL delete).
    public func terminate(child name: String, now: Double) throws(AgentError) {
        guard findChild(name) != nil else { throw .unknownChild(name) }
        for s in sessions.values where s.state == .established {
            for child in s.children where child.profile.name == name && child.state == .installed {
                child.state = .deleting
                enqueue(s, .deleteChild(child), now: now)
            }
        }
    }

    /// `sluice terminate --ike`: deletes the IKE SA and with it all its children.
    public func terminate(ike name: String, now: Double) throws(AgentError) {
        guard connections.contains(where: { $0.name == name }) else { throw .unknownConnection(name) }
        for s in sessions.values where s.connection.name == name {
            if s.state == .established { enqueue(s, .deleteIKE, now: now) } else { close(s, why: "terminated") }
        }
    }

    /// `sluice rekey --child`.
    public func rekey(child name: String, now: Double) throws(AgentError) {
        guard findChild(name) != nil else { throw .unknownChild(name) }
        for s in sessions.values where s.state == .established {
            for child in s.children where child.profile.name == name && child.state == .installed { startRekey(s, child, now: now) }
        }
    }

    /// Daemon stop: tells every peer (one delete each, not retransmitted) and removes all SAs.
    public func shutdown(now: Double) {
        for s in Array(sessions.values) {
            if s.state == .established { sendDeleteOnce(s, now: now) }
            close(s, why: "daemon stopping", apply: false)
        }
        for c in connections { for child in c.children { backend.removeTrap(child: child.name) } }
    }

    /// An IKE SA's delete, sent once and not retransmitted: for leaving without waiting.
    func sendDeleteOnce(_ s: IKESession, now: Double) {
        if let d = try? s.sealMessage(s.header(.informational, response: false, id: s.nextRequestID),
                                      [.delete(DeletePayload(protocolID: .ike, spis: []))], fragmentSize: fragmentSize) {
            send(s, d, now: now)
        }
    }

    // MARK: datagrams

    /// A datagram from UDP 500, or from 4500 with its non-ESP marker removed.
    public func receive(_ bytes: [UInt8], from remote: Endpoint, to local: Endpoint, now: Double) {
        let message: IKEMessage
        do { message = try IKEMessage.decode(bytes) } catch {
            counters.malformed += 1
            log(AgentLog(.debug, "IKE datagram from \(remote) dropped: \(error)"))
            return
        }
        let h = message.header
        if h.exchange == .ikeSAInit && !h.isResponse && h.spiR == 0 {
            respondToInit(message, bytes, from: remote, to: local, now: now)
            return
        }
        let ours = h.isInitiator ? h.spiR : h.spiI
        guard let s = sessions[ours], s.spiI == h.spiI, h.isInitiator != s.isInitiator else {
            counters.unknownSPI += 1
            log(AgentLog(.debug, "IKE message from \(remote) for an unknown IKE SA \(String(h.spiI, radix: 16)):\(String(h.spiR, radix: 16)) dropped"))
            return
        }
        if h.exchange == .ikeSAInit {
            if h.isResponse { handleInitResponse(s, message, bytes, from: remote, now: now) } else { counters.unexpected += 1 }
            return
        }
        if case .encryptedFragment? = message.payloads.last {
            receiveFragment(s, message, bytes, from: remote, to: local, now: now)
            return
        }
        if h.isResponse { handleResponse(s, message, bytes, from: remote, now: now) } else { handleRequest(s, message, bytes, from: remote, to: local, now: now) }
    }

    /// Retransmissions, DPD, rekeys, half-open timeouts, delayed removals. Call about once a second.
    public func tick(now: Double) {
        for s in Array(sessions.values) {
            if var o = s.outstanding, now >= o.nextAt {
                if o.sends > schedule.tries {
                    peerDead(s, why: "no answer to message \(o.id) after \(schedule.tries) retransmissions", now: now)
                    continue
                }
                counters.retransmits += 1
                send(s, o.datagrams, now: now)
                o.nextAt = now + schedule.wait(after: o.sends)
                o.sends += 1
                s.outstanding = o
            }
            cookies.rotate(now: now)
            if s.role == .responder, s.state != .established, now - s.createdAt > halfOpenTimeout {
                close(s, why: "half-open for \(Int(halfOpenTimeout)) s", apply: false)
                continue
            }
            if let at = s.retireAt, now >= at, s.children.isEmpty {
                // The peer may never have learnt this IKE SA's SPIs: one delete, no waiting.
                sendDeleteOnce(s, now: now)
                close(s, why: "redundant after a rekey collision")
                continue
            }
            guard s.state == .established else { continue }
            if s.connection.dpdDelay > 0, s.outstanding == nil, s.queuedChildren.isEmpty, now - s.lastHeard >= s.connection.dpdDelay {
                enqueue(s, .dpd, now: now)
            }
            for child in s.children {
                if let at = child.outboundPendingUntil, now >= at { activateOutbound(s, child) }
                if let at = child.removeAt, now >= at { removeChild(s, child, why: nil) }
                else if child.state == .installed, let at = child.rekeyAt, now >= at { startRekey(s, child, now: now) }
            }
            if let at = s.rekeyAt, now >= at { startIKERekey(s, now: now) }
            keepNATMappingOpen(s, now: now)
        }
    }

    // MARK: helpers shared by the exchanges

    func findChild(_ name: String) -> (ConnectionProfile, ChildProfile)? {
        for c in connections { if let child = c.children.first(where: { $0.name == name }) { return (c, child) } }
        return nil
    }

    func hasChild(_ name: String) -> Bool {
        sessions.values.contains { $0.children.contains { $0.profile.name == name && $0.state == .installed } }
    }

    func isNegotiating(child name: String) -> Bool {
        sessions.values.contains { s in
            if s.queuedChildren.contains(where: { $0.profile.name == name }) { return true }
            switch s.outstanding?.purpose {
            case let .ikeInit(c)?, let .ikeAuth(c)?: return c?.profile.name == name
            case let .createChild(c)?: return c.profile.name == name && c.rekeys == nil
            default: return false
            }
        }
    }

    static func selector(_ k: FlowKey, local: Bool) -> WireTrafficSelector {
        let a = local ? k.src : k.dst
        let port = (k.proto == IPProto.tcp || k.proto == IPProto.udp) ? (local ? k.srcPort : k.dstPort) : nil
        return WireTrafficSelector(ipProtocol: k.proto, startPort: port ?? 0, endPort: port ?? 65535, startAddress: a, endAddress: a)
    }

    func installTrap(_ c: ConnectionProfile, _ child: ChildProfile) {
        let p = Self.trapPolicies(c, child)
        do { try backend.installTrap(child: child.name, outbound: p.outbound, inbound: p.inbound) } catch {
            log(AgentLog(.error, "child \(child.name): cannot install its trap policies: \(error)"))
        }
    }

    /// A child's SA-less PROTECT policies over its configured selectors ("dynamic": the
    /// connection's own and the peer's outer addresses).
    public static func trapPolicies(_ c: ConnectionProfile, _ child: ChildProfile) -> (outbound: [Policy], inbound: [Policy]) {
        guard let local = c.localAddresses.first else { return ([], []) }
        let l = child.localTS.isEmpty ? [WireTrafficSelector(host: local)] : child.localTS
        let r = child.remoteTS.isEmpty ? c.remoteAddresses.filter { $0.family == local.family }.map { WireTrafficSelector(host: $0) } : child.remoteTS
        let p = ChildPolicies.make(local: l, remote: r, outboundSA: nil, inboundSA: nil, origin: trapOrigin(child.name))
        return (p.outbound, p.inbound)
    }

    /// The policy origin workers report in `no_sa` events for a child's trap.
    public static func trapOrigin(_ child: String) -> String { "child \(child)" }
    public static func child(fromTrapOrigin o: String) -> String? { o.hasPrefix("child ") ? String(o.dropFirst(6)) : nil }

    /// Sends one message: its one datagram, or all its fragments; to the peer, or (a
    /// response) to where the request came from.
    func send(_ s: IKESession, _ datagrams: [[UInt8]], to: Endpoint? = nil, now: Double) {
        for d in datagrams { transport.send(d, from: s.local, to: to ?? s.remote) }
        counters.sent += 1
        if datagrams.count > 1 { counters.fragmentsSent += UInt64(datagrams.count) }
        s.lastSent = now
    }

    func send(_ s: IKESession, _ datagram: [UInt8], now: Double) { send(s, [datagram], now: now) }

    /// Queues a request; sends it when the IKE SA's window (one request) is free.
    func enqueue(_ s: IKESession, _ p: IKESession.Purpose, now: Double) {
        s.pending.append(p)
        pump(s, now: now)
    }

    /// Sends the next queued request if none is in flight.
    func pump(_ s: IKESession, now: Double) {
        // A rekeyed IKE SA still sends the delete that retires it.
        guard s.state == .established || (s.state == .rekeyed && !s.pending.isEmpty), s.outstanding == nil else { return }
        while s.outstanding == nil {
            if !s.pending.isEmpty {
                let p = s.pending.removeFirst()
                sendRequest(s, p, now: now)
            } else if !s.queuedChildren.isEmpty {
                let c = s.queuedChildren.removeFirst()
                sendRequest(s, .createChild(c), now: now)
            } else { return }
        }
    }

    func sendRequest(_ s: IKESession, _ p: IKESession.Purpose, now: Double) {
        let id = s.nextRequestID
        let exchange: ExchangeType
        var inner: [Payload]
        var purpose = p
        switch p {
        case .dpd:
            exchange = .informational; inner = []
        case .deleteIKE:
            exchange = .informational; inner = [.delete(DeletePayload(protocolID: .ike, spis: []))]
            if s.state != .rekeyed { s.state = .deleting }
        case let .deleteChild(child):
            exchange = .informational
            inner = [.delete(DeletePayload(protocolID: .esp, spis: [Self.spiBytes(child.inboundSPI)]))]
        case var .createChild(request):
            exchange = .createChildSA
            guard let built = childRequestPayloads(s, &request, initial: false) else { return }
            inner = built
            purpose = .createChild(request)
        case let .rekeyIKE(r):
            exchange = .createChildSA
            inner = ikeRekeyRequestPayloads(s, r)
        case .ikeInit, .ikeAuth:
            return
        }
        guard let datagrams = try? s.sealMessage(s.header(exchange, response: false, id: id), inner, fragmentSize: fragmentSize) else {
            log(AgentLog(.error, "\(s.label): cannot build a \(exchange) request"))
            return
        }
        s.nextRequestID &+= 1
        s.outstanding = IKESession.Outstanding(id: id, datagrams: datagrams, sends: 1, nextAt: now + schedule.wait(after: 0), purpose: purpose)
        send(s, datagrams, now: now)
    }

    static func spiBytes(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)] }
    static func spi32(_ b: [UInt8]) -> UInt32? { b.count == 4 ? b.reduce(0) { $0 << 8 | UInt32($1) } : nil }
    static func spiBytes(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> UInt64(56 - 8 * $0)) } }

    /// Removes an IKE SA and its children. `apply`: run the children's dpd_action (restart / trap).
    func close(_ s: IKESession, why: String, apply: Bool = false, now: Double = 0) {
        for child in s.children { removeChild(s, child, why: nil) }
        // A colliding rekey that was never settled goes with it.
        if let c = s.peerRekey { s.peerRekey = nil; close(c.session, why: "its IKE SA went before the rekey collision was settled") }
        if let o = s.outstanding, case let .createChild(r) = o.purpose, r.spi != 0 { backend.releaseSPI(r.spi) }
        sessions[s.ourSPI] = nil
        halfOpen = halfOpen.filter { $0.value != s.ourSPI }
        s.wipe()
        log(AgentLog(s.state == .established ? .notice : .info, "IKE SA \(s.label) with \(s.remote) deleted: \(why)"))
        s.state = .deleting
    }

    func peerDead(_ s: IKESession, why: String, now: Double) {
        let wasUp = s.state == .established
        let restart = s.children.map(\.profile) + s.queuedChildren.map(\.profile)
        log(AgentLog(.warning, "IKE SA \(s.label) with \(s.remote): peer not responding (\(why))"))
        counters.peersDead += 1
        close(s, why: wasUp ? "dead peer" : "negotiation timed out")
        for child in Set(restart.map(\.name)) {
            guard let (c, p) = findChild(child) else { continue }
            switch p.dpdAction {
            case .restart: try? initiate(c, ChildRequest(profile: p, reason: "dpd restart"), now: now)
            case .trap, .clear: break   // the trap policies stay: traffic is dropped (no_sa) and, for trap, acquires
            }
        }
    }

    /// The IKE SA that holds `child` now (nil: gone). An IKE SA rekey moves the children to
    /// its successor while requests about them may still be in flight on the old one.
    func owner(of child: ChildSA, from s: IKESession) -> IKESession? {
        if s.children.contains(where: { $0 === child }) { return s }
        return sessions.values.first { $0.children.contains { $0 === child } }
    }

    func removeChild(_ s: IKESession, _ child: ChildSA, why: String?) {
        s.children.removeAll { $0 === child }
        backend.removeChild(child.install)
        if let why { log(AgentLog(.notice, "CHILD_SA \(child.profile.name){\(Self.hex(child.inboundSPI))_i \(Self.hex(child.outboundSPI))_o} deleted: \(why)")) }
    }

    static func hex(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 8 - s.count)) + s
    }
}

/// What the agent counted (`sluice stats --json`: `ikeCounters`), never reset. `malformed`:
/// datagrams that do not decode, and protected messages that verify but whose payloads do not.
public struct AgentCounters: Sendable, Equatable, Codable {
    public var sent: UInt64 = 0
    public var received: UInt64 = 0
    public var retransmits: UInt64 = 0
    public var retransmitsAnswered: UInt64 = 0
    public var cookiesSent: UInt64 = 0
    public var halfOpenRefused: UInt64 = 0
    public var malformed: UInt64 = 0
    public var unknownSPI: UInt64 = 0
    public var integrityFailures: UInt64 = 0
    public var unexpected: UInt64 = 0
    public var authFailures: UInt64 = 0
    public var peersDead: UInt64 = 0
    /// Simultaneous rekeys of one SA by both peers, settled by their nonces (§2.8.1, §2.8.2).
    public var rekeyCollisions: UInt64 = 0
    /// NAT keepalives (RFC 3948 §2.3): one 0xFF byte on port 4500, never IKE.
    public var keepalivesSent: UInt64 = 0
    public var keepalivesReceived: UInt64 = 0
    /// IKE fragmentation (RFC 7383): fragments sent and received, messages reassembled from
    /// them, and fragments dropped (not negotiated, repeated, or past max_packet).
    public var fragmentsSent: UInt64 = 0
    public var fragmentsReceived: UInt64 = 0
    public var fragmentedMessages: UInt64 = 0
    public var fragmentsDropped: UInt64 = 0
}
