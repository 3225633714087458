import Testing
@testable import SluiceIKE
import SluiceCore
import SluiceTestFixtures

/// IKE fragmentation (RFC 7383) between two agents in memory: RSA certificates make IKE_AUTH
/// outgrow a small fragment_size, so it travels as SKF fragments both ways.
@Suite struct FragmentationTests {
    /// An RSA 2048 / RSA 3072 pair: IKE_AUTH carries a certificate and a signature each way.
    static func pair(fragmentSize: Int = 576, a: IKEFragmentation = .yes, b: IKEFragmentation = .yes) throws -> AgentPair {
        let ca = try PKI.credentials(TestPKI.gwARsa2048Cert, TestPKI.gwARsa2048Key, cas: [TestPKI.rsaCaCert])
        let cb = try PKI.credentials(TestPKI.gwBRsa3072Cert, TestPKI.gwBRsa3072Key, cas: [TestPKI.rsaCaCert])
        let p = try CertificateAgentTests.pair(a: ca, b: cb, fragmentationA: a, fragmentationB: b)
        p.a.fragmentSize = fragmentSize
        p.b.fragmentSize = fragmentSize
        return p
    }

    /// (number, total) of an SKF datagram; nil for anything else.
    static func fragment(_ d: AgentPair.Datagram) -> (number: UInt16, total: UInt16)? {
        guard let m = try? IKEMessage.decode(d.bytes), case let .encryptedFragment(n, t, _, _)? = m.payloads.last else { return nil }
        return (n, t)
    }

    static func announces(_ d: AgentPair.Datagram) throws -> Bool {
        try IKEMessage.decode(d.bytes).payloads.contains(.notify(NotifyPayload(type: NotifyType.ikev2FragmentationSupported)))
    }

    static func ikeAuth(_ p: AgentPair, from: IPAddress) -> [AgentPair.Datagram] {
        p.sent.filter { $0.from.address == from && (try? IKEMessage.decodeHeader($0.bytes))?.exchange == .ikeAuth }
    }

    func expectEstablished(_ p: AgentPair) {
        #expect(p.backendA.children.count == 1 && p.backendB.children.count == 1, "A: \(p.log("a"))\nB: \(p.log("b"))")
        #expect(p.a.sessions.values.first?.state == .established && p.b.sessions.values.first?.state == .established)
    }

    @Test func ikeAuthTravelsInFragmentsEachWithinFragmentSize() throws {
        let p = try Self.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        #expect(try Self.announces(p.sent[0]) && Self.announces(p.sent[1]), "both IKE_SA_INITs carry IKEV2_FRAGMENTATION_SUPPORTED")
        for (side, from) in [("A", Profiles.gwA), ("B", Profiles.gwB)] {
            let auth = Self.ikeAuth(p, from: from)
            let numbers = auth.compactMap(Self.fragment)
            #expect(numbers.count == auth.count && auth.count >= 3, "\(side): IKE_AUTH in \(auth.count) datagrams, all SKF")
            #expect(numbers.map(\.number) == Array(1...UInt16(auth.count)) && numbers.allSatisfy { Int($0.total) == auth.count })
            // 576-byte IPv4 datagrams on port 500: 548 bytes of IKE each, at most.
            #expect(auth.allSatisfy { $0.bytes.count <= 576 - 20 - 8 }, "\(side): \(auth.map(\.bytes.count))")
            let header = try IKEMessage.decodeHeader(auth[0].bytes)
            #expect(auth.allSatisfy { (try? IKEMessage.decodeHeader($0.bytes))?.messageID == header.messageID })
        }
        let (request, response) = try CertificateAgentTests.authMessages(p)
        #expect(CertificateAgentTests.certs(request).count == 1 && CertificateAgentTests.certs(response).count == 1)
        #expect(p.a.counters.fragmentsSent == UInt64(Self.ikeAuth(p, from: Profiles.gwA).count))
        #expect(p.b.counters.fragmentedMessages == 1 && p.a.counters.fragmentedMessages == 1)
        #expect(p.a.counters.fragmentsDropped == 0 && p.b.counters.fragmentsDropped == 0)
        // The first fragment names the inner chain's first payload (IDi / IDr); the rest carry 0.
        let first = try IKEMessage.decode(Self.ikeAuth(p, from: Profiles.gwA)[0].bytes)
        let second = try IKEMessage.decode(Self.ikeAuth(p, from: Profiles.gwA)[1].bytes)
        guard case let .encryptedFragment(_, _, f1, _)? = first.payloads.last, case let .encryptedFragment(_, _, f2, _)? = second.payloads.last else {
            Issue.record("not SKF"); return
        }
        #expect(f1 == PayloadType.idi && f2 == PayloadType.none)
    }

    @Test func largerFragmentSizeSendsIKEAuthWhole() throws {
        let p = try Self.pair(fragmentSize: 4000)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        #expect(p.sent.count == 4 && p.sent.allSatisfy { Self.fragment($0) == nil })
    }

    /// "no" announces nothing, so neither side cuts; "accept" announces but sends whole.
    @Test(arguments: [(IKEFragmentation.no, false, false), (.accept, true, false)])
    func peerPolicyDecidesWhoFragments(b: IKEFragmentation, aFragments: Bool, bFragments: Bool) throws {
        let p = try Self.pair(b: b)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        #expect(try Self.announces(p.sent[1]) == (b != .no))
        #expect((Self.ikeAuth(p, from: Profiles.gwA).count > 1) == aFragments)
        #expect((Self.ikeAuth(p, from: Profiles.gwB).count > 1) == bFragments)
    }

    /// A initiates; the first fragment 2 that `sender` sends is lost.
    static func losingFragmentTwo(from sender: IPAddress) throws -> AgentPair {
        let p = try pair()
        var dropped = false
        p.filter = { d in
            if !dropped, d.from.address == sender, fragment(d)?.number == 2 { dropped = true; return false }
            return true
        }
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        return p
    }

    @Test func lostRequestFragmentRetransmitsAllOfThem() throws {
        let p = try Self.losingFragmentTwo(from: Profiles.gwA)
        #expect(p.backendB.children.isEmpty, "B waits for the missing fragment")
        let firstTry = Self.ikeAuth(p, from: Profiles.gwA).count
        p.advance(p.a.schedule.wait(after: 0) + 0.1)
        expectEstablished(p)
        #expect(Self.ikeAuth(p, from: Profiles.gwA).count == 2 * firstTry, "every fragment went again")
        #expect(p.a.counters.retransmits == 1)
        // Of the second try, fragment 1 is a repeat (dropped) and 2 completes the message; B
        // has answered by the time the rest come, and ignores them (§2.6.1).
        #expect(p.b.counters.fragmentsDropped == 1 && p.b.counters.fragmentedMessages == 1)
    }

    @Test func lostResponseFragmentIsResentOnceForTheFirstRequestFragment() throws {
        let p = try Self.losingFragmentTwo(from: Profiles.gwB)
        #expect(p.backendA.children.isEmpty)
        let responseFragments = Self.ikeAuth(p, from: Profiles.gwB).count
        p.advance(p.a.schedule.wait(after: 0) + 0.1)
        expectEstablished(p)
        // §2.6.1: B answers fragment 1 of the retransmitted request with its whole response, and
        // ignores the others, so the response goes twice, not once per request fragment.
        #expect(p.b.counters.retransmitsAnswered == 1)
        #expect(Self.ikeAuth(p, from: Profiles.gwB).count == 2 * responseFragments)
        #expect(p.backendB.children.count == 1, "the request was processed once")
    }

    @Test func corruptFragmentIsDroppedBeforeItIsStored() throws {
        let p = try Self.pair()
        var corrupted = false
        p.filter = { d in
            guard !corrupted, d.from.address == Profiles.gwA, Self.fragment(d)?.number == 2 else { return true }
            corrupted = true
            var bad = d
            bad.bytes[bad.bytes.count - 1] ^= 0x01
            p.queue.append(bad)
            return false
        }
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        #expect(p.b.counters.integrityFailures == 1)
        #expect(p.backendB.children.isEmpty)
        p.advance(p.a.schedule.wait(after: 0) + 0.1)
        expectEstablished(p)
    }

    @Test func fragmentsAreRefusedWhereNotNegotiated() throws {
        let p = try Self.pair(b: .no)
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        // A sends B fragments anyway (as if B had announced support): B drops each one.
        let sa = try #require(p.a.sessions.values.first)
        sa.peerFragmentation = true
        p.a.fragmentSize = 100   // a CREATE_CHILD_SA in 11-byte pieces
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        #expect(p.b.counters.fragmentsDropped > 5 && p.b.counters.fragmentedMessages == 0)
        #expect(p.backendB.children.count == 1, "the rekey never arrived whole")
    }

    @Test func theRekeyedIKESAKeepsFragmentation() throws {
        let p = try Self.pair()
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        let old = try #require(p.a.sessions.values.first).spiI
        // Small enough that a CREATE_CHILD_SA needs fragments too.
        p.a.fragmentSize = 200; p.b.fragmentSize = 200
        try p.a.rekey(ike: "to-b", now: p.now)
        p.run()
        let rekeyed = try #require(p.a.sessions.values.first { $0.spiI != old && $0.state == .established })
        #expect(rekeyed.peerFragmentation && p.a.sessions.count == 1, "A: \(p.log("a"))")
        let before = p.b.counters.fragmentedMessages
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        #expect(p.b.counters.fragmentedMessages == before + 1, "the CHILD_SA rekey on the new IKE SA came in fragments")
        #expect(p.backendA.children.filter { $0.child == "net-a" }.count == 2, "old and new, make-before-break")
    }

    /// The agent fuzzer's setting (fuzz/FuzzIKEAgent.swift): PSK, PFS, 200-byte datagrams.
    @Test func pskWithPFSAtTinyDatagramsFragmentsIKEAuthAndRekeys() throws {
        let p = try Profiles.pair(espA: "aes128gcm16-x25519", espB: "aes128gcm16-x25519")
        p.a.fragmentSize = 200; p.b.fragmentSize = 200
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        #expect(p.a.counters.fragmentsSent >= 2 && p.b.counters.fragmentedMessages == 1, "\(p.sent.map(\.bytes.count))")
        try p.a.rekey(child: "net-a", now: p.now)
        p.run()
        #expect(p.b.counters.fragmentedMessages == 2 && p.a.counters.fragmentedMessages >= 2)
        // All but IKE_SA_INIT (never fragmented, §2.5) within 200-byte datagrams.
        #expect(p.sent.dropFirst(2).allSatisfy { $0.bytes.count <= 200 - 28 })
    }

    @Test func cbcFragmentsFitTheirBlocks() throws {
        var ca = try Profiles.connection(local: Profiles.gwA, remote: Profiles.gwB, ike: "aes256-sha384-ecp384",
                                         localTS: "198.51.100.0/24", remoteTS: "203.0.113.0/24")
        var cb = try Profiles.connection(local: Profiles.gwB, remote: Profiles.gwA, ike: "aes256-sha384-ecp384",
                                         localTS: "203.0.113.0/24", remoteTS: "198.51.100.0/24")
        ca.auth = .certificates(try PKI.credentials(TestPKI.gwARsa2048Cert, TestPKI.gwARsa2048Key, cas: [TestPKI.rsaCaCert]))
        cb.auth = .certificates(try PKI.credentials(TestPKI.gwBRsa3072Cert, TestPKI.gwBRsa3072Key, cas: [TestPKI.rsaCaCert]))
        let p = AgentPair(a: ca, b: cb)
        for agent in [p.a!, p.b!] { agent.certificateTime = { PKI.time }; agent.fragmentSize = 600 }
        try p.a.initiate(child: "net-a", now: p.now)
        p.run()
        expectEstablished(p)
        let auth = Self.ikeAuth(p, from: Profiles.gwB)
        #expect(auth.count > 1 && auth.allSatisfy { $0.bytes.count <= 600 - 28 })
    }
}

/// The reassembly buffer alone (RFC 7383 §2.6).
@Suite struct FragmentReassemblyTests {
    static func add(_ r: inout FragmentReassembly, _ n: UInt16, of total: UInt16, _ bytes: [UInt8], max: Int = 100) -> FragmentReassembly.Outcome {
        r.add(number: n, total: total, firstInner: n == 1 ? PayloadType.idi : 0, plaintext: bytes, datagram: [UInt8(n)], maxBytes: max)
    }

    @Test func joinsOutOfOrderFragmentsInOrder() {
        var r = FragmentReassembly(messageID: 1, total: 3)
        #expect(Self.add(&r, 3, of: 3, [5, 6]) == .stored)
        #expect(Self.add(&r, 1, of: 3, [1, 2]) == .stored)
        #expect(Self.add(&r, 2, of: 3, [3, 4]) == .complete([1, 2, 3, 4, 5, 6]))
        #expect(r.firstInner == PayloadType.idi && r.firstDatagram == [1])
    }

    @Test func repeatsAndCoarserCutsAreIgnoredAFinerCutStartsOver() {
        var r = FragmentReassembly(messageID: 1, total: 2)
        #expect(Self.add(&r, 1, of: 2, [1]) == .stored)
        guard case .ignored = Self.add(&r, 1, of: 2, [9]) else { Issue.record("a repeat is ignored"); return }
        // The sender cut smaller after losses: what was stored is of the old cut.
        #expect(Self.add(&r, 2, of: 3, [2]) == .stored)
        guard case .ignored = Self.add(&r, 2, of: 2, [7]) else { Issue.record("the old cut is ignored"); return }
        #expect(Self.add(&r, 1, of: 3, [1]) == .stored)
        #expect(Self.add(&r, 3, of: 3, [3]) == .complete([1, 2, 3]))
    }

    @Test func sizeAndCountLimitsRefuseTheMessage() {
        var r = FragmentReassembly(messageID: 1, total: 2)
        #expect(Self.add(&r, 1, of: 2, [UInt8](repeating: 0, count: 60)) == .stored)
        guard case .refused = Self.add(&r, 2, of: 2, [UInt8](repeating: 0, count: 41)) else { Issue.record("past max_packet"); return }
        var many = FragmentReassembly(messageID: 1, total: 200)
        guard case .refused = Self.add(&many, 1, of: 200, [1]) else { Issue.record("more than 128 fragments"); return }
    }
}
