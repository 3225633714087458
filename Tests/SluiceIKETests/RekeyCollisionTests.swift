import Testing
@testable import SluiceIKE
import SluiceCore

/// Simultaneous rekeys (RFC 7296 §2.8.1, §2.8.2) and the crossings of §2.25, with the nonces
/// picked so that each test knows which side's new SA must survive.
@Suite struct RekeyCollisionTests {
    /// Nonces of `first` then `second` (then random): one side's request and its response.
    static func nonces(_ first: UInt8, _ second: UInt8) -> (Int) -> [UInt8] {
        var queue: [[UInt8]] = [[UInt8](repeating: first, count: 32), [UInt8](repeating: second, count: 32)]
        return { n in queue.isEmpty ? IKEAgent.randomBytes(n) : queue.removeFirst() }
    }

    /// Nonces that make A's exchange hold the lowest (`aLoses`) or B's.
    static func steer(_ p: AgentPair, aLoses: Bool) {
        p.a.nonceSource = aLoses ? nonces(0x10, 0xF0) : nonces(0xF0, 0xE0)
        p.b.nonceSource = aLoses ? nonces(0x80, 0x90) : nonces(0x20, 0xD0)
    }

    static func established() throws -> AgentPair {
        let p = try Profiles.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        return p
    }

    static func isRequest(_ d: AgentPair.Datagram, from: IPAddress, _ exchange: ExchangeType) -> Bool {
        guard d.from.address == from, let h = try? IKEMessage.decodeHeader(d.bytes) else { return false }
        return h.exchange == exchange && !h.isResponse
    }

    /// One CHILD_SA left on each side, the same SA, carrying both directions' traffic.
    func expectOneMatchingChild(_ p: AgentPair, _ note: Comment) {
        #expect(p.backendA.children.count == 1 && p.backendB.children.count == 1, note)
        guard let ca = p.backendA.children.first, let cb = p.backendB.children.first else { return }
        #expect(ca.outbound.spi == cb.inbound.spi && ca.inbound.spi == cb.outbound.spi, note)
        #expect(ca.outbound.keyMaterial == cb.inbound.keyMaterial && ca.inbound.keyMaterial == cb.outbound.keyMaterial, note)
        #expect(p.backendA.activeOutbound?.inbound.name == ca.inbound.name, note)
        #expect(p.backendB.activeOutbound?.inbound.name == cb.inbound.name, note)
        #expect(p.a.sessions.values.flatMap(\.children).count == 1 && p.b.sessions.values.flatMap(\.children).count == 1, note)
    }

    @Test func theOrderOfNoncesIsOctetByOctetWithAShorterPrefixLower() {
        #expect(IKEAgent.nonceLess([1, 2], [1, 2, 0]))
        #expect(IKEAgent.nonceLess([1, 0xFF], [2]))
        #expect(!IKEAgent.nonceLess([2], [1, 0xFF]))
        // Our exchange (Ni, Nr) holds 0x01, theirs at best 0x02: ours is the redundant one.
        #expect(IKEAgent.ourRekeyLoses(ours: ([9], [1]), theirs: ([2], [8])))
        #expect(!IKEAgent.ourRekeyLoses(ours: ([9], [3]), theirs: ([2], [8])))
    }

    /// Both rekey at once and each sees the other's request while its own is in flight.
    /// `aLoses`: A's exchange holds the lowest nonce, so A deletes its new SA.
    @Test("a simultaneous CHILD_SA rekey keeps the winner's SA", arguments: [false, true])
    func simultaneousChildRekey(aLoses: Bool) throws {
        let p = try Self.established()
        let old = try #require(p.backendA.children.first)
        Self.steer(p, aLoses: aLoses)
        try p.a.rekey(child: "net-a", now: p.now)
        try p.b.rekey(child: "net-b", now: p.now)
        p.run()
        #expect(p.a.counters.rekeyCollisions == 1 && p.b.counters.rekeyCollisions == 1, "\(p.log("a"))\n\(p.log("b"))")
        let loser = aLoses ? "a" : "b"
        #expect(p.log(loser).contains("simultaneous rekey, the peer's"), "the loser deletes its own new SA")
        p.advance(6)
        expectOneMatchingChild(p, "\(p.log("a"))\n\(p.log("b"))")
        let survivor = try #require(p.backendA.children.first)
        #expect(survivor.inbound.spi != old.inbound.spi)
        // The survivor is the winner's: its initiator allocated the inbound SPI it asked with.
        let winnerBackend = aLoses ? p.backendB : p.backendA
        let winnerSurvivor = try #require(winnerBackend.children.first)
        let winnerAgent = aLoses ? p.b! : p.a!
        let child = try #require(winnerAgent.sessions.values.flatMap(\.children).first)
        #expect(child.inboundSPI == winnerSurvivor.inbound.spi)
        #expect(p.log(aLoses ? "b" : "a").contains("ours {\(IKEAgent.hex(child.inboundSPI))_i} stays"))
        // The survivor rekeys normally afterwards.
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        p.advance(6)
        expectOneMatchingChild(p, "after a later rekey")
    }

    @Test func aPeerRekeyOfAnSAWeAlreadyRetiredGetsTemporaryFailure() throws {
        // B's request overtakes nothing: it arrives after A finished its own rekey and
        // deleted the old SA. §2.25: TEMPORARY_FAILURE; B keeps A's new SA.
        let p = try Self.established()
        try p.holdingBack({ Self.isRequest($0, from: Profiles.gwB, .createChildSA) }) {
            try p.a.rekey(child: "net-a", now: p.now)
            try p.b.rekey(child: "net-b", now: p.now)
        }
        #expect(p.log("b").contains("TEMPORARY_FAILURE"), "\(p.log("b"))")
        p.advance(6)
        expectOneMatchingChild(p, "\(p.log("a"))\n\(p.log("b"))")
    }

    @Test func aPeerRekeyWhileOursStillWaitsForTheWindowIsSimplyTheirs() throws {
        let p = try Self.established()
        // A's window is busy (a liveness check held back), so A's rekey only waits in the queue.
        let s = try #require(p.a.sessions.values.first)
        try p.holdingBack({ Self.isRequest($0, from: Profiles.gwA, .informational) }) {
            p.a.enqueue(s, .dpd, now: p.now)
            try p.a.rekey(child: "net-a", now: p.now)
            try p.b.rekey(child: "net-b", now: p.now)
        }
        p.advance(6)
        #expect(p.a.counters.rekeyCollisions == 0 && p.b.counters.rekeyCollisions == 0)
        #expect(!p.log("a").contains("TEMPORARY_FAILURE") && !p.log("b").contains("TEMPORARY_FAILURE"))
        #expect(p.backendA.removed.count == 1, "one rekey, one retired SA")
        expectOneMatchingChild(p, "\(p.log("a"))\n\(p.log("b"))")
    }

    @Test func aRekeyCrossingADeleteLeavesNoSA() throws {
        let p = try Self.established()
        try p.a.rekey(child: "net-a", now: p.now)
        try p.b.terminate(child: "net-b", now: p.now)
        p.run()
        p.advance(6)
        #expect(p.backendA.children.isEmpty && p.backendB.children.isEmpty, "\(p.log("a"))\n\(p.log("b"))")
        #expect(p.a.sessions.values.allSatisfy { $0.children.isEmpty && $0.queuedChildren.isEmpty })
        // And no retry of the rekey for an SA that is gone.
        p.advance(60)
        #expect(p.backendA.children.isEmpty && p.backendB.children.isEmpty)
    }

    /// Both rekey the IKE SA at once. `aLoses`: A's exchange holds the lowest nonce.
    @Test("a simultaneous IKE SA rekey keeps the winner's IKE SA", arguments: [false, true])
    func simultaneousIKERekey(aLoses: Bool) throws {
        let p = try Self.established()
        let before = try #require(p.a.sessions.values.first).spiI
        Self.steer(p, aLoses: aLoses)
        try p.a.rekey(ike: "to-b", now: p.now)
        try p.b.rekey(ike: "to-a", now: p.now)
        p.run()
        #expect(p.a.counters.rekeyCollisions == 1 && p.b.counters.rekeyCollisions == 1, "\(p.log("a"))\n\(p.log("b"))")
        #expect(p.a.sessions.count == 1 && p.b.sessions.count == 1, "\(p.log("a"))\n\(p.log("b"))")
        let sa = try #require(p.a.sessions.values.first), sb = try #require(p.b.sessions.values.first)
        #expect(sa.spiI == sb.spiI && sa.spiR == sb.spiR && sa.spiI != before)
        // The survivor was started by the winner: it is the IKE SA's initiator there.
        #expect(sa.role == (aLoses ? .responder : .initiator))
        #expect(sa.children.count == 1 && sb.children.count == 1)
        #expect(p.backendA.removed.isEmpty && p.backendB.removed.isEmpty, "no CHILD_SA was lost")
        // The keys agree: a CHILD_SA rekey on the survivor derives matching KEYMAT.
        try p.b.rekey(child: "net-b", now: p.now)
        p.run()
        p.advance(6)
        expectOneMatchingChild(p, "\(p.log("a"))\n\(p.log("b"))")
    }

    @Test func theWinnersDeleteOfTheOldIKESAMayOvertakeTheAnswerToOurRekey() throws {
        // B wins (A's exchange holds the lowest nonce). A's answer from B is held back, so the
        // first A hears of the outcome is B's delete of the old IKE SA: B's rekey stands.
        let p = try Self.established()
        Self.steer(p, aLoses: true)
        let answerFromB = { (d: AgentPair.Datagram) -> Bool in
            guard d.from.address == Profiles.gwB, let h = try? IKEMessage.decodeHeader(d.bytes) else { return false }
            return h.isResponse && h.exchange == .createChildSA
        }
        try p.holdingBack(answerFromB) {
            try p.a.rekey(ike: "to-b", now: p.now)
            try p.b.rekey(ike: "to-a", now: p.now)
        }
        // A never learns its own new IKE SA's SPIs (the answer came to an IKE SA already
        // gone), so B, the winner, deletes that redundant IKE SA itself after a grace period.
        p.advance(11)
        #expect(p.a.sessions.count == 1 && p.b.sessions.count == 1, "\(p.log("a"))\n\(p.log("b"))")
        let sa = try #require(p.a.sessions.values.first), sb = try #require(p.b.sessions.values.first)
        #expect(sa.spiI == sb.spiI && sa.spiR == sb.spiR)
        #expect(sa.children.count == 1 && sb.children.count == 1)
        #expect(p.backendA.removed.isEmpty && p.backendB.removed.isEmpty)
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        p.advance(6)
        expectOneMatchingChild(p, "\(p.log("a"))\n\(p.log("b"))")
    }
}
