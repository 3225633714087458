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
}
