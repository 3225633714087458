import Testing
@testable import SluiceIKE
import SluiceCore

/// Conversations found by fuzz/FuzzIKEAgent.swift that broke an invariant, replayed with
/// two agents back to back (AgentPair).
@Suite struct AgentFuzzFindingsTests {
    static func header(_ d: AgentPair.Datagram) -> IKEHeader? { try? IKEMessage.decodeHeader(d.bytes) }

    /// The children the agent's IKE SAs own must be exactly those in the data plane.
    func expectDataPlaneMatches(_ agent: IKEAgent, _ backend: MemoryBackend, _ comment: Comment) {
        let owned = agent.sessions.values.flatMap(\.children).map(\.inboundSPI).sorted()
        let installed = backend.children.map(\.inbound.spi).sorted()
        #expect(owned == installed, comment)
    }

    /// B rekeys its child and sends the delete of the old one; before A's answer to that delete
    /// arrives, A rekeys the IKE SA (the children move to the new IKE SA). The answer, on the
    /// old IKE SA, must retire the old child where it now lives: it used to remove the SA from
    /// the data plane while the new IKE SA kept it (and never removed it again).
    @Test func deleteAnsweredOnTheOldIKESAAfterAnIKERekeyRetiresTheMovedChild() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let first = try #require(p.backendB.children.first)
        // From here on, A's INFORMATIONAL messages to B are held back.
        p.filter = { d in !(d.from.address == Profiles.gwA && Self.header(d)?.exchange == .informational) }
        try p.b.rekey(child: "net-b", now: p.now)
        p.run()
        #expect(p.backendB.children.count == 2)
        let held = try #require(p.sent.first { $0.from.address == Profiles.gwA && Self.header($0)?.exchange == .informational && Self.header($0)?.isResponse == true })
        try p.a.rekey(ike: "to-b", now: p.now)
        p.run()
        #expect(p.b.sessions.values.contains { $0.state == .rekeyed }, "the old IKE SA waits for A's delete")
        expectDataPlaneMatches(p.b, p.backendB, "after the IKE SA rekey")
        // A's answer to B's delete of the old child, on the old IKE SA.
        p.b.receive(held.bytes, from: held.from, to: held.to, now: p.now)
        expectDataPlaneMatches(p.b, p.backendB, "after the answer to the delete")
        #expect(p.backendB.children.contains { $0.inbound.spi == first.inbound.spi }, "the old SA takes stragglers for a moment")
        p.advance(6)
        expectDataPlaneMatches(p.b, p.backendB, "after the stragglers' delay")
        #expect(p.backendB.children.count == 1 && p.backendB.children.first?.inbound.spi != first.inbound.spi)
    }

    /// `count` different ranges from the start of `base`, each ragged (many prefixes): the
    /// lower ones end in the upper half, so against two adjacent allowed halves each narrows
    /// into two selectors.
    static func ragged(_ base: String, _ count: Int) -> [WireTrafficSelector] {
        let start = UInt32(IPPrefix(base)!.address.low)
        return (0..<count).map { (i: Int) -> WireTrafficSelector in
            let lo: UInt32 = start + UInt32(i % 128), hi: UInt32 = start + 255 - UInt32(i % 128 + i / 128)
            return WireTrafficSelector(startAddress: IPAddress(v4: lo), endAddress: IPAddress(v4: hi))
        }
    }

    /// A's CREATE_CHILD_SA request for a new child with these selectors, sealed on its IKE SA
    /// and handed to B; returns B's answer, opened with A's keys.
    func requestChild(_ p: AgentPair, tsi: [WireTrafficSelector], tsr: [WireTrafficSelector]) throws -> [Payload] {
        let s = try #require(p.a.sessions.values.first)
        let esp = try ProposalSpec.parseESP("aes128gcm16").enumerated().map { $1.wireProposal(number: UInt8($0 + 1), protocolID: .esp, spi: [0xc0, 0, 0, 1]) }
        let request = try s.seal(s.header(.createChildSA, response: false, id: s.nextRequestID),
                                 [.sa(esp), .nonce(Array(repeating: 7, count: 32)), .tsi(tsi), .tsr(tsr)])
        s.nextRequestID += 1
        let before = p.sent.count
        p.b.receive(request, from: Endpoint(Profiles.gwA, 500), to: Endpoint(Profiles.gwB, 500), now: p.now)
        let answer = try #require(p.sent.dropFirst(before).first, "B did not answer")
        return try #require(s.open(answer.bytes, try IKEMessage.decode(answer.bytes)).payloads)
    }

    /// A peer's ranges across two adjacent allowed halves used to narrow into more selectors than
    /// a TS payload carries (255): encoding the answer trapped the daemon. Now they are cut to
    /// the first `maxSelectors`, and the child comes up on those.
    @Test func selectorsNarrowedPast255AreCutNotTrapping() throws {
        var b = try Profiles.connection(local: Profiles.gwB, remote: Profiles.gwA, localTS: "203.0.113.0/24", remoteTS: "198.51.100.0/24")
        b.children[0].remoteTS = [Profiles.ts("198.51.100.0/25"), Profiles.ts("198.51.100.128/25")]
        let p = AgentPair(a: try Profiles.connection(local: Profiles.gwA, remote: Profiles.gwB, localTS: "198.51.100.0/24", remoteTS: "203.0.113.0/24"), b: b)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let answer = try requestChild(p, tsi: Self.ragged("198.51.100.0/24", 200), tsr: [Profiles.ts("203.0.113.0/24")])
        let tsi = answer.compactMap { if case let .tsi(t) = $0 { return t } else { return nil } }.first
        #expect(tsi?.count == ChildPolicies.maxSelectors)
        #expect(tsi?.first == WireTrafficSelector(startAddress: IPAddress("198.51.100.0")!, endAddress: IPAddress("198.51.100.127")!))
        let child = try #require(p.backendB.children.last)
        #expect(p.backendB.children.count == 2)
        #expect(child.outboundPolicies.count <= ChildPolicies.maxPolicies && child.inboundPolicies.count <= ChildPolicies.maxPolicies)
    }

    /// 40 ragged ranges a side (a 1.3 KB request) used to become 126025 policies a direction.
    @Test func raggedSelectorsStayWithinThePolicyBound() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let answer = try requestChild(p, tsi: Self.ragged("198.51.100.0/24", 40), tsr: Self.ragged("203.0.113.0/24", 40))
        #expect(answer.contains { if case .sa = $0 { return true }; return false }, "the child is accepted, narrowed")
        let child = try #require(p.backendB.children.last)
        #expect(p.backendB.children.count == 2)
        #expect(child.outboundPolicies.count <= ChildPolicies.maxPolicies && child.inboundPolicies.count <= ChildPolicies.maxPolicies)
        #expect(!child.outboundPolicies.isEmpty)
    }

    /// The initiator holds a responder to the same bounds: an answer whose selectors (each
    /// within what was offered) would make too many policies is refused, not installed.
    @Test func initiatorRefusesAnAnswerOverThePolicyBound() throws {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        // A asks for a second child of the same profile; its request is held back.
        p.filter = { d in d.from.address != Profiles.gwA }
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        let request = try #require(p.sent.last)
        let bs = try #require(p.b.sessions.values.first)
        let m = try IKEMessage.decode(request.bytes)
        let inner = try #require(bs.open(request.bytes, m).payloads)
        guard case let .sa(offered)? = inner.first(where: { if case .sa = $0 { return true }; return false }),
              case let .nonce(ni)? = inner.first(where: { if case .nonce = $0 { return true }; return false }) else {
            Issue.record("no SA or nonce in A's request"); return
        }
        _ = ni
        var chosen = offered[0]
        chosen.spi = [0xc0, 0, 0, 2]
        let answer = try bs.seal(bs.header(.createChildSA, response: true, id: m.header.messageID),
                                 [.sa([chosen]), .nonce(Array(repeating: 9, count: 32)),
                                  .tsi(Self.ragged("198.51.100.0/24", 40)), .tsr(Self.ragged("203.0.113.0/24", 40))])
        p.a.receive(answer, from: request.to, to: request.from, now: p.now)
        #expect(p.backendA.children.count == 1, "no second CHILD_SA on A")
        #expect(p.log("a").contains("too many or too ragged"))
    }
}
