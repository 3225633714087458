import Testing
@testable import SluiceIKE
import SluiceCore

/// Two agents wired back to back in memory: each datagram goes to the agent that owns its
/// destination address, unless the test's `filter` drops it.
final class AgentPair: IKETransport {
    struct Datagram { var bytes: [UInt8]; var from: Endpoint; var to: Endpoint }
    var agents: [IPAddress: IKEAgent] = [:]
    var queue: [Datagram] = []
    var sent: [Datagram] = []
    var filter: (Datagram) -> Bool = { _ in true }
    var logs: [String: [String]] = [:]
    let backendA = MemoryBackend(), backendB = MemoryBackend()
    var a: IKEAgent!, b: IKEAgent!
    var now: Double = 1000

    init(a ca: ConnectionProfile, b cb: ConnectionProfile, schedule: RetransmitSchedule = RetransmitSchedule()) {
        a = IKEAgent(connections: [ca], schedule: schedule, backend: backendA, transport: self) { [unowned self] in self.logs["a", default: []].append($0.message) }
        b = IKEAgent(connections: [cb], schedule: schedule, backend: backendB, transport: self) { [unowned self] in self.logs["b", default: []].append($0.message) }
        for x in ca.localAddresses { agents[x] = a }
        for x in cb.localAddresses { agents[x] = b }
    }

    var keepalives: [(from: Endpoint, to: Endpoint, at: Double)] = []
    func sendKeepalive(from: Endpoint, to: Endpoint) { keepalives.append((from, to, now)) }

    func send(_ datagram: [UInt8], from: Endpoint, to: Endpoint) {
        let d = Datagram(bytes: datagram, from: from, to: to)
        sent.append(d)
        if filter(d) { queue.append(d) }
    }

    /// Delivers until quiet (bounded: a loop between agents is a failure, not a hang).
    func run(limit: Int = 100) {
        var n = 0
        while !queue.isEmpty, n < limit {
            let d = queue.removeFirst()
            agents[d.to.address]?.receive(d.bytes, from: d.from, to: d.to, now: now)
            n += 1
        }
    }

    /// Runs `steps` to quiet with the datagrams `matching` held back, then delivers those.
    func holdingBack(_ matching: @escaping (Datagram) -> Bool, _ steps: () throws -> Void) rethrows {
        var held: [Datagram] = []
        filter = { d in
            if matching(d) { held.append(d); return false }
            return true
        }
        try steps()
        run()
        filter = { _ in true }
        queue += held
        run()
    }

    func advance(_ seconds: Double) {
        now += seconds
        a.tick(now: now); b.tick(now: now)
        run()
    }

    func log(_ side: String) -> String { (logs[side] ?? []).joined(separator: "\n") }
}

enum Profiles {
    static let gwA = IPAddress("192.0.2.1")!, gwB = IPAddress("192.0.2.2")!

    static func ts(_ p: String) -> WireTrafficSelector { WireTrafficSelector(prefix: IPPrefix(p)!) }

    static func connection(local: IPAddress, remote: IPAddress, psk: String = "a shared secret of 32 bytes......",
                           ike: String = "aes128gcm16-prfsha256-x25519", esp: String = "aes128gcm16",
                           localTS: String, remoteTS: String, mode: ESPMode = .tunnel, dpd: Double = 0,
                           start: StartAction = .none, dpdAction: DeadPeerAction = .clear) throws -> ConnectionProfile {
        let child = ChildProfile(name: local == gwA ? "net-a" : "net-b", localTS: [ts(localTS)], remoteTS: [ts(remoteTS)],
                                 espProposals: try ProposalSpec.parseESP(esp), mode: mode, startAction: start, dpdAction: dpdAction)
        return ConnectionProfile(name: local == gwA ? "to-b" : "to-a", localAddresses: [local], remoteAddresses: [remote],
                                 proposals: try ProposalSpec.parseIKE(ike), psk: SecretBytes(Array(psk.utf8)), dpdDelay: dpd,
                                 children: [child])
    }

    static func pair(ikeA: String = "aes128gcm16-prfsha256-x25519", ikeB: String = "aes128gcm16-prfsha256-x25519",
                     espA: String = "aes128gcm16", espB: String = "aes128gcm16", pskB: String = "a shared secret of 32 bytes......",
                     mode: ESPMode = .tunnel, dpdA: Double = 0, dpdActionA: DeadPeerAction = .clear) throws -> AgentPair {
        AgentPair(a: try connection(local: gwA, remote: gwB, ike: ikeA, esp: espA, localTS: "198.51.100.0/24", remoteTS: "203.0.113.0/24",
                                    mode: mode, dpd: dpdA, dpdAction: dpdActionA),
                  b: try connection(local: gwB, remote: gwA, psk: pskB, ike: ikeB, esp: espB, localTS: "203.0.113.0/24",
                                    remoteTS: "198.51.100.0/24", mode: mode))
    }
}

@Suite struct AgentTests {
    /// Both sides install matching SAs: A's outbound key and SPI are B's inbound ones, and back.
    func expectMatching(_ p: AgentPair) {
        guard let ca = p.backendA.children.last, let cb = p.backendB.children.last else {
            Issue.record("no CHILD_SA installed:\nA: \(p.log("a"))\nB: \(p.log("b"))")
            return
        }
        #expect(ca.outbound.spi == cb.inbound.spi)
        #expect(ca.inbound.spi == cb.outbound.spi)
        #expect(ca.outbound.keyMaterial == cb.inbound.keyMaterial)
        #expect(ca.inbound.keyMaterial == cb.outbound.keyMaterial)
        #expect(ca.outbound.keyMaterial != ca.inbound.keyMaterial)
        #expect(ca.outbound.remote == Profiles.gwB && cb.outbound.remote == Profiles.gwA)
    }

    @Test func pskTunnelEstablishesWithMatchingKeysAndPolicies() throws {
        let p = try Profiles.pair()
        p.a.start(now: p.now); p.b.start(now: p.now)
        #expect(p.backendA.traps["net-a"]?.outbound.count == 1)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectMatching(p)
        let ca = try #require(p.backendA.children.first)
        #expect(ca.outbound.proposal == .aes128gcm16)
        #expect(ca.outboundPolicies.map(\.selector.src) == [IPPrefix("198.51.100.0/24")])
        #expect(ca.outboundPolicies.map(\.selector.dst) == [IPPrefix("203.0.113.0/24")])
        #expect(p.backendB.children.first?.outboundPolicies.map(\.selector.dst) == [IPPrefix("198.51.100.0/24")])
        // IKE_SA_INIT and IKE_AUTH: two requests, two responses, no retransmission.
        #expect(p.sent.count == 4)
        #expect(p.log("a").contains("established"))
    }

    @Test func cbcWithModpAndTransportMode() throws {
        let p = try Profiles.pair(ikeA: "aes128-sha256-modp2048", ikeB: "aes128-sha256-modp2048", espA: "aes128-sha256", espB: "aes128-sha256", mode: .transport)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectMatching(p)
        #expect(p.backendA.children.first?.outbound.proposal == .aes128sha256)
        #expect(p.backendA.children.first?.outbound.mode == .transport)
    }

    @Test func wrongPSKFailsWithAuthenticationFailedAndNoSA() throws {
        let p = try Profiles.pair(pskB: "another secret, also long enough")
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        #expect(p.backendA.children.isEmpty && p.backendB.children.isEmpty)
        #expect(p.log("a").contains("AUTHENTICATION_FAILED"))
        #expect(p.log("b").contains("AUTHENTICATION_FAILED"))
        #expect(p.a.sessions.isEmpty && p.b.sessions.isEmpty)
    }

    @Test func proposalMismatchFailsWithNoProposalChosen() throws {
        let p = try Profiles.pair(ikeA: "aes256gcm16-prfsha384-ecp384", ikeB: "aes128gcm16-prfsha256-x25519")
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        #expect(p.backendA.children.isEmpty)
        #expect(p.log("a").contains("NO_PROPOSAL_CHOSEN"))
    }

    @Test func childProposalMismatchKeepsTheIKESA() throws {
        let p = try Profiles.pair(espA: "chacha20poly1305", espB: "aes128gcm16")
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        #expect(p.backendA.children.isEmpty && p.backendB.children.isEmpty)
        #expect(p.log("a").contains("NO_PROPOSAL_CHOSEN"))
        #expect(p.a.sessions.values.first?.state == .established)
    }

    @Test func invalidKEPayloadRetriesWithTheResponderGroup() throws {
        let p = try Profiles.pair(ikeA: "aes128gcm16-prfsha256-x25519-ecp256", ikeB: "aes128gcm16-prfsha256-ecp256")
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectMatching(p)
        #expect(p.log("a").contains("INVALID_KE_PAYLOAD"))
        #expect(p.a.sessions.values.first?.algorithms?.dh == .ecp256)
    }

    @Test func lostResponseIsRetransmittedAndAnsweredFromTheCache() throws {
        let p = try Profiles.pair()
        var dropped = 0
        // Drop B's first IKE_AUTH response (the second datagram B sends).
        p.filter = { d in
            if d.from.address == Profiles.gwB, (try? IKEMessage.decodeHeader(d.bytes))?.exchange == .ikeAuth, dropped == 0 { dropped += 1; return false }
            return true
        }
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        #expect(p.backendA.children.isEmpty)
        #expect(p.backendB.children.count == 1)
        p.advance(4.5)
        expectMatching(p)
        #expect(p.a.counters.retransmits == 1)
        #expect(p.b.counters.retransmitsAnswered == 1)
        #expect(p.backendB.children.count == 1)   // processed once, not twice
    }

    @Test func onlyTheSameRequestGetsTheCachedResponseAgain() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        // A's IKE_AUTH request again, byte for byte, then with one byte changed (as anyone who
        // saw the SPIs could send, from any address).
        let auth = try #require(p.sent.first { $0.from.address == Profiles.gwA && (try? IKEMessage.decodeHeader($0.bytes))?.exchange == .ikeAuth })
        let before = p.sent.count
        p.b.receive(auth.bytes, from: auth.from, to: auth.to, now: p.now)
        #expect(p.sent.count == before + 1 && p.b.counters.retransmitsAnswered == 1)
        var forged = auth.bytes
        forged[forged.count - 1] ^= 1
        p.b.receive(forged, from: Endpoint(IPAddress("203.0.113.66")!, 500), to: auth.to, now: p.now)
        #expect(p.sent.count == before + 1, "no response bounced to the forger's address")
        #expect(p.b.counters.retransmitsAnswered == 1)
    }

    @Test func childRekeyIsMakeBeforeBreak() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let old = try #require(p.backendA.children.first)
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        // Both the old and the new CHILD_SA are installed for a moment, new one last.
        #expect(p.backendA.children.count == 2)
        expectMatching(p)
        #expect(p.backendA.children.last?.inbound.spi != old.inbound.spi)
        p.advance(6)
        #expect(p.backendA.children.count == 1 && p.backendB.children.count == 1)
        #expect(p.backendA.children.first?.inbound.spi != old.inbound.spi)
        expectMatching(p)
    }

    @Test func ikeRekeyMovesTheChildrenAndDerivesFromTheOldKeys() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let before = Set(p.a.sessions.keys)
        try p.a.rekey(ike: "to-b", now: p.now)
        p.run()
        #expect(p.a.sessions.count == 1 && p.b.sessions.count == 1, "the old IKE SA is deleted after the rekey")
        #expect(before.isDisjoint(with: p.a.sessions.keys))
        #expect(p.backendA.removed.isEmpty && p.backendA.children.count == 1, "the CHILD_SA lives on")
        #expect(p.a.sessions.values.first?.children.count == 1 && p.b.sessions.values.first?.children.count == 1)
        // A CHILD_SA rekey on the new IKE SA: KEYMAT comes from the new SK_d, the same on both sides.
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        expectMatching(p)
        // The peer can rekey too.
        try p.b.rekey(ike: "to-a", now: p.now)
        p.run()
        #expect(p.a.sessions.count == 1 && p.b.sessions.count == 1)
        #expect(p.a.sessions.values.first?.role == .responder)
        try p.b.rekey(child: "net-b", now: p.now)
        p.run()
        expectMatching(p)
    }

    @Test func aChildRekeyByTheIKEResponderLeavesBothSidesOnMatchingSAs() throws {
        // §2.17: in CREATE_CHILD_SA, "initiator" is whoever sent the request, here B, the IKE
        // SA's responder. Two Sluices agree either way; strongSwan checks the split for real
        // (test_ike_strongswan.py: test_sluice_initiated_rekeys_under_ping_lose_nothing).
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        try p.b.rekey(child: "net-b", now: p.now)
        p.run()
        expectMatching(p)
        #expect(p.backendA.activeOutbound?.outbound.spi == p.backendB.activeOutbound?.inbound.spi)
        #expect(p.backendB.activeOutbound?.outbound.spi == p.backendA.activeOutbound?.inbound.spi)
    }

    @Test func theRekeyResponderKeepsSendingOnTheOldSAUntilTheInitiatorDeletesIt() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let old = try #require(p.backendB.children.first)
        // Hold back A's delete of the old CHILD_SA: A may not have the new inbound SA yet as far as B knows.
        var held: [AgentPair.Datagram] = []
        p.filter = { d in
            if d.from.address == Profiles.gwA, (try? IKEMessage.decodeHeader(d.bytes))?.exchange == .informational { held.append(d); return false }
            return true
        }
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        #expect(p.backendB.children.count == 2)
        #expect(p.backendB.activeOutbound?.inbound.name == old.inbound.name, "B still sends on the old SA")
        #expect(p.backendA.activeOutbound?.inbound.name != p.backendA.children.first?.inbound.name, "A, the initiator, moved at once")
        p.filter = { _ in true }
        p.queue += held
        p.run()
        #expect(p.backendB.activeOutbound?.inbound.name == p.backendB.children.last?.inbound.name, "the delete moves B over")
        expectMatching(p)
    }

    @Test func theRekeyResponderMovesOverByItselfWhenTheDeleteNeverComes() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        p.filter = { d in !(d.from.address == Profiles.gwA && (try? IKEMessage.decodeHeader(d.bytes))?.exchange == .informational) }
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        let newest = try #require(p.backendB.children.last)
        #expect(p.backendB.activeOutbound?.inbound.name != newest.inbound.name)
        p.advance(6)
        #expect(p.backendB.activeOutbound?.inbound.name == newest.inbound.name)
    }

    @Test func aChildRekeyAndAnIKERekeyAtOnceDeleteTheOldChildOnTheNewIKESA() throws {
        // The old CHILD_SA's delete, queued behind the IKE SA rekey, must go on the IKE SA
        // that holds the child by then: the peer moves its outbound traffic on that delete.
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        try p.a.rekey(child: "net-a", now: p.now)
        try p.a.rekey(ike: "to-b", now: p.now)
        p.run()
        #expect(p.a.sessions.count == 1 && p.b.sessions.count == 1)
        #expect(p.backendB.activeOutbound?.inbound.name == p.backendB.children.last?.inbound.name,
                "B moved to the new CHILD_SA at A's delete, without waiting for its timeout")
        p.advance(6)
        #expect(p.backendA.children.count == 1 && p.backendB.children.count == 1)
        expectMatching(p)
    }

    @Test func terminateChildAndIKERemoveEverything() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        try p.a.terminate(child: "net-a", now: p.now)
        p.run()
        #expect(p.backendA.children.isEmpty && p.backendB.children.isEmpty)
        #expect(p.a.sessions.count == 1)
        try p.a.terminate(ike: "to-b", now: p.now)
        p.run()
        #expect(p.a.sessions.isEmpty && p.b.sessions.isEmpty)
    }

    @Test func deadPeerIsDetectedAndRestarted() throws {
        let p = try Profiles.pair(dpdA: 10, dpdActionA: .restart)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectMatching(p)
        p.filter = { _ in false }   // B is gone
        let before = p.sent.count
        for _ in 0..<200 { p.advance(1) }
        #expect(p.backendA.children.isEmpty)
        #expect(p.log("a").contains("peer not responding"))
        // dpd_action = restart: a new IKE_SA_INIT went out after the peer was declared dead.
        let inits = p.sent[before...].filter { (try? IKEMessage.decodeHeader($0.bytes))?.exchange == .ikeSAInit }
        #expect(!inits.isEmpty)
    }

    @Test func trafficSelectorsAreNarrowedByTheResponder() throws {
        let a = try Profiles.connection(local: Profiles.gwA, remote: Profiles.gwB, localTS: "198.51.100.0/24", remoteTS: "203.0.113.0/24")
        let b = try Profiles.connection(local: Profiles.gwB, remote: Profiles.gwA, localTS: "203.0.113.0/25", remoteTS: "198.51.100.64/26")
        let p = AgentPair(a: a, b: b)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectMatching(p)
        #expect(p.backendA.children.first?.outboundPolicies.map(\.selector.src) == [IPPrefix("198.51.100.64/26")])
        #expect(p.backendA.children.first?.outboundPolicies.map(\.selector.dst) == [IPPrefix("203.0.113.0/25")])
    }

    @Test func disjointSelectorsAreRefusedWithTSUnacceptable() throws {
        let a = try Profiles.connection(local: Profiles.gwA, remote: Profiles.gwB, localTS: "198.51.100.0/24", remoteTS: "203.0.113.0/24")
        let b = try Profiles.connection(local: Profiles.gwB, remote: Profiles.gwA, localTS: "203.0.113.0/24", remoteTS: "192.0.2.128/25")
        let p = AgentPair(a: a, b: b)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        #expect(p.backendA.children.isEmpty)
        #expect(p.log("a").contains("TS_UNACCEPTABLE"))
    }

    @Test func underLoadTheResponderAsksForACookieFirst() throws {
        let p = try Profiles.pair()
        p.b.cookieThreshold = 0
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectMatching(p)
        #expect(p.b.counters.cookiesSent == 1)
        // Request, COOKIE, request with the cookie, response, IKE_AUTH both ways.
        #expect(p.sent.count == 6)
    }

    @Test func aForgedCookieCreatesNoState() throws {
        let p = try Profiles.pair()
        p.b.cookieThreshold = 0
        var first = true
        // Replace the cookie A echoes with a forged one of the right shape.
        p.filter = { d in
            guard d.from.address == Profiles.gwA, first, var m = try? IKEMessage.decode(d.bytes),
                  case let .notify(n)? = m.payloads.first, n.type == NotifyType.cookie else { return true }
            first = false
            m.payloads[0] = .notify(NotifyPayload(type: NotifyType.cookie, data: [n.data[0]] + [UInt8](repeating: 0x42, count: 32)))
            p.queue.append(AgentPair.Datagram(bytes: m.encode(), from: d.from, to: d.to))
            return false
        }
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        #expect(p.b.sessions.isEmpty, "no state for an unproven address")
        #expect(p.b.counters.cookiesSent == 2)
        #expect(p.backendB.children.isEmpty)
    }

    @Test func rangesBecomeTheFewestPrefixes() {
        let r = WireTrafficSelector(startAddress: IPAddress("192.0.2.1")!, endAddress: IPAddress("192.0.2.6")!)
        #expect(r.prefixes.map(\.description) == ["192.0.2.1/32", "192.0.2.2/31", "192.0.2.4/31", "192.0.2.6/32"])
        let all = WireTrafficSelector(startAddress: IPAddress("0.0.0.0")!, endAddress: IPAddress("255.255.255.255")!)
        #expect(all.prefixes.map(\.description) == ["0.0.0.0/0"])
        let v6 = WireTrafficSelector(prefix: IPPrefix("2001:db8::/32")!)
        #expect(v6.prefixes.map(\.description) == ["2001:db8::/32"])
    }
}
