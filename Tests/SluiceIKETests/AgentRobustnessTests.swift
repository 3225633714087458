import Testing
@testable import SluiceIKE
import SluiceCore

/// NAT keepalives (RFC 3948 §2.3), and authentic messages whose payloads do not decode
/// (RFC 7296 §2.21.1, §3.10.1).
@Suite struct AgentRobustnessTests {
    static func established(keepAlive: Double = 20, behindNAT: Bool) throws -> (AgentPair, IKESession) {
        let p = try Profiles.pair()
        p.a.keepAlive = keepAlive
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let s = try #require(p.a.sessions.values.first)
        if behindNAT {
            // As NAT detection leaves it: A's own address is translated, IKE floated to 4500.
            s.localBehindNAT = true
            s.local.port = 4500
        }
        return (p, s)
    }

    @Test func behindANATAKeepaliveGoesAfterTwentySilentSeconds() throws {
        let (p, s) = try Self.established(behindNAT: true)
        p.advance(10)
        #expect(p.keepalives.isEmpty)
        p.advance(11)
        #expect(p.keepalives.count == 1)
        let k = try #require(p.keepalives.first)
        #expect(k.from == s.local && k.to == s.remote && k.from.port == 4500)
        p.advance(10)
        #expect(p.keepalives.count == 1, "the next one waits another 20 s")
        p.advance(10)
        #expect(p.keepalives.count == 2)
        #expect(p.a.counters.keepalivesSent == 2)
    }

    @Test func espTrafficOrIKEMessagesMakeKeepalivesUnneeded() throws {
        let (p, s) = try Self.established(behindNAT: true)
        let out = try #require(s.children.first).install.outbound.name
        p.advance(1)   // the first look at the SA's counter
        for i in 1...12 {
            p.backendA.packets[out] = UInt64(i)   // ESP leaves every 5 s
            p.advance(5)
        }
        #expect(p.keepalives.isEmpty, "ESP kept the mapping open")
        // IKE traffic counts too: a liveness check at 15 s of ESP silence.
        p.advance(15)
        p.a.enqueue(s, .dpd, now: p.now)
        p.run()
        p.advance(10)
        #expect(p.keepalives.isEmpty)
        p.advance(11)
        #expect(p.keepalives.count == 1)
    }

    @Test func noKeepalivesWithoutANATOrWhenOff() throws {
        let (p, _) = try Self.established(behindNAT: false)
        p.advance(30); p.advance(30)
        #expect(p.keepalives.isEmpty)
        let (q, _) = try Self.established(keepAlive: 0, behindNAT: true)
        q.advance(30); q.advance(30)
        #expect(q.keepalives.isEmpty)
    }

    @Test func aReceivedKeepaliveIsCountedAndNothingElse() throws {
        let (p, _) = try Self.established(behindNAT: false)
        let before = p.sent.count
        p.b.keepaliveReceived()
        #expect(p.b.counters.keepalivesReceived == 1 && p.sent.count == before)
    }

    /// A KE payload of one byte: it verifies (sealed with the right keys) but cannot decode.
    static let undecodable: [Payload] = [.other(type: PayloadType.ke, critical: false, body: [1])]

    @Test func anAuthenticRequestThatDoesNotDecodeIsAnsweredInvalidSyntax() throws {
        let (p, s) = try Self.established(behindNAT: false)
        let request = try s.seal(s.header(.informational, response: false, id: s.nextRequestID), Self.undecodable)
        s.nextRequestID += 1
        let before = p.sent.count
        p.b.receive(request, from: s.local, to: s.remote, now: p.now)
        #expect(p.b.counters.malformed == 1 && p.b.counters.integrityFailures == 0)
        let answer = try #require(p.sent.dropFirst(before).first, "B did not answer")
        let inner = try #require(s.open(answer.bytes, try IKEMessage.decode(answer.bytes)).payloads)
        #expect(inner == [.notify(NotifyPayload(type: NotifyType.invalidSyntax))])
        // The message ID moved on as for any answered request: the next exchange works.
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        #expect(p.backendA.children.count == 2 && p.backendB.children.count == 2)
        // An unknown critical payload is named instead (§2.5).
        let critical = try s.seal(s.header(.informational, response: false, id: s.nextRequestID),
                                  [.other(type: 200, critical: true, body: [])])
        s.nextRequestID += 1
        let mark = p.sent.count
        p.b.receive(critical, from: s.local, to: s.remote, now: p.now)
        let named = try #require(p.sent.dropFirst(mark).first)
        #expect(s.open(named.bytes, try IKEMessage.decode(named.bytes)).payloads
                == [.notify(NotifyPayload(type: NotifyType.unsupportedCriticalPayload, data: [200]))])
    }

    @Test func anAuthenticResponseThatDoesNotDecodeIsDroppedAndTheRequestStaysOutstanding() throws {
        let (p, s) = try Self.established(behindNAT: false)
        let sb = try #require(p.b.sessions.values.first)
        var held: [AgentPair.Datagram] = []
        p.filter = { d in if d.from.address == Profiles.gwB { held.append(d); return false }; return true }
        p.a.enqueue(s, .dpd, now: p.now)
        p.run()
        let id = try #require(s.outstanding?.id)
        let forged = try sb.seal(sb.header(.informational, response: true, id: id), Self.undecodable)
        p.a.receive(forged, from: sb.local, to: sb.remote, now: p.now)
        #expect(p.a.counters.malformed == 1 && p.a.counters.integrityFailures == 0)
        #expect(s.outstanding?.id == id, "still waiting for a readable answer")
        p.filter = { _ in true }
        p.queue += held
        p.run()
        #expect(s.outstanding == nil)
    }
}
