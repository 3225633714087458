// libFuzzer target for the IKEv2 responder's state machine (Sources/SluiceIKE/Agent). Each
// input is a short script that drives one responder agent ("to-a" on 192.0.2.2: a PSK, two
// children, the usual proposals) through a conversation with a real initiator agent in the
// same process ("to-b" on 192.0.2.1), whose datagrams the script delivers, drops, reorders,
// replays or mutates, and with messages the harness builds and seals itself for any of the
// responder's IKE SAs (it reads their keys: the module is built with -enable-testing). So
// the fuzzer gets past the crypto: it edits the decrypted payloads of real messages and
// re-seals them, which reaches IKE_AUTH, CREATE_CHILD_SA and INFORMATIONAL handling.
// Built by fuzz/run.sh (mode `agent`) with `swiftc -sanitize=fuzzer,address`.
//
// Input: byte 0 picks the configuration (bits 0-1 proposals: gcm/x25519, gcm with PFS,
// cbc-sha256/x25519, cbc-sha256/modp2048; 2 transport mode; 3 the initiator has the WRONG
// PSK; 4 the responder requires the initiator's identity; 5 the responder accepts any peer
// address; 6 DPD on the responder; 7 UDP encapsulation forced by the initiator; with the PFS
// proposals, messages above 200-byte datagrams go in IKE fragments both ways). Then ops,
// one byte each (value % 15) with their arguments, at most `maxOps`:
//   0 deliver the next initiator datagram      1 drop it
//   2 o16 x  deliver it with byte o (mod its length) XORed with x|1, after encryption
//   3 o16 x  the same, in the decrypted SK plaintext (re-sealed), or after the header of IKE_SA_INIT
//   4 k i a  deliver it with its payloads edited (see `edit`), re-sealed
//   5 k      replay the k-th datagram the responder received   6 swap the next two
//   7 t      advance the clock (table `steps`) and tick both agents
//   8 c      initiator command   9 c  responder command (table in `command`)
//  10 ...    a message sealed for one of the responder's IKE SAs with a raw inner chain
//  11 ...    a new IKE_SA_INIT of the harness's own (other SPIs, addresses, groups, nonces)
//  12 ...    a structured request sealed for one of the responder's IKE SAs: IKE_AUTH with an
//            AUTH computed from the initiator's PSK, a new or rekeyed CHILD_SA (with many ragged
//            traffic selectors if asked), an IKE rekey, deletes
//  13 f      drop the responder's next datagram (f odd) or make its next install fail (f even)
//  14 p      deliver the next initiator datagram from another source port (a NAT rebinding)
// Invariants (a failed precondition is a finding): no trap; every CHILD_SA the responder
// installs belongs to the IKE SA the current message is for, which has authenticated (and with
// the wrong PSK nothing ever is installed or established); message IDs (the agent's counters
// and the IDs on what it sends) never go backwards; the data plane never holds two children
// with one inbound SPI, nor one the agent does not own, nor an SPI it did not reserve; one
// datagram installs at most one child, with at most `maxChildPolicies` policies a direction;
// IKE SAs, half-open entries and queues stay bounded by what the input could create; half-open
// IKE SAs go after `halfOpenTimeout`. The initiator's data plane is checked the same way.
#if canImport(Glibc)
import Glibc
#endif
import SluiceCore
@testable import SluiceIKE

let gwA = IPAddress("192.0.2.1")!, gwB = IPAddress("192.0.2.2")!
// Fresh arrays each time: a SecretBytes wipes its buffer in place when it goes, even a shared one.
var goodPSK: [UInt8] { Array("a shared secret of 32 bytes......".utf8) }
var wrongPSK: [UInt8] { Array("not the secret, also long enough".utf8) }
let maxOps = 64
/// Policies a direction one CHILD_SA may bring (the agent's bound on a peer's selectors).
let maxChildPolicies = 1024
let steps: [Double] = [0.5, 1, 2, 4.5, 10, 31, 65, 400]
let proposalSets: [(ike: String, esp: String)] = [
    ("aes128gcm16-prfsha256-x25519", "aes128gcm16"), ("aes128gcm16-prfsha256-x25519", "aes128gcm16-x25519"),
    ("aes128-sha256-x25519", "aes128-sha256"), ("aes128-sha256-modp2048", "aes128gcm16"),
]
let fakePeers: [IPAddress] = [gwA, IPAddress("192.0.2.77")!, IPAddress("198.51.100.9")!, IPAddress("2001:db8::1")!]

/// A finding: stops with its message (`precondition` drops the message in -O builds).
func require(_ ok: Bool, _ message: @autoclosure () -> String) {
    if !ok { fatalError(message()) }
}

// MARK: the input

struct Script {
    let bytes: [UInt8]
    var at = 0
    var done: Bool { at >= bytes.count }
    mutating func u8() -> UInt8 { guard at < bytes.count else { return 0 }; defer { at += 1 }; return bytes[at] }
    mutating func u16() -> Int { Int(u8()) << 8 | Int(u8()) }
    mutating func take(_ n: Int) -> [UInt8] { let e = min(bytes.count, at + n); defer { at = e }; return Array(bytes[at..<e]) }
}

struct Datagram { var bytes: [UInt8]; var from: Endpoint; var to: Endpoint }

// MARK: the data plane: MemoryBackend, with reservations kept as the SA manager keeps them

/// Lowest free SPI first, so an SPI used twice shows at once (random ones almost never collide).
final class FuzzBackend: IPsecBackend {
    let memory = MemoryBackend()
    private(set) var reserved: Set<UInt32> = []
    /// Called before each install: the harness's authentication check.
    var authorize: (ChildInstall) -> Void = { _ in }

    func allocateSPI() -> UInt32 {
        var spi: UInt32 = 0x100
        while reserved.contains(spi) || memory.children.contains(where: { $0.inbound.spi == spi }) { spi += 1 }
        reserved.insert(spi)
        return spi
    }
    func releaseSPI(_ spi: UInt32) { reserved.remove(spi) }
    func installTrap(child: String, outbound: [Policy], inbound: [Policy]) throws { try memory.installTrap(child: child, outbound: outbound, inbound: inbound) }
    func removeTrap(child: String) { memory.removeTrap(child: child) }
    func installChild(_ c: ChildInstall, outbound: Bool) throws {
        require(reserved.contains(c.inbound.spi), "CHILD_SA \(c.child) installed with inbound SPI \(c.inbound.spi), which is not reserved")
        authorize(c)
        try memory.installChild(c, outbound: outbound)
        reserved.remove(c.inbound.spi)
        require(Set(memory.children.map(\.inbound.spi)).count == memory.children.count, "two children with inbound SPI \(c.inbound.spi)")
    }
    func activateOutbound(_ c: ChildInstall) throws { try memory.activateOutbound(c) }
    func removeChild(_ c: ChildInstall) { memory.removeChild(c) }
    func counters(sa name: String) -> (packets: UInt64, bytes: UInt64)? { memory.counters(sa: name) }
}

// MARK: the wire between the two agents

final class Wire: IKETransport {
    var toResponder: [Datagram] = []
    var toInitiator: [Datagram] = []
    var dropResponderNext = false
    /// Highest message ID the responder sent per IKE SA (SPIs), requests and responses apart.
    var sentIDs: [String: UInt32] = [:]

    func send(_ bytes: [UInt8], from: Endpoint, to: Endpoint) {
        if from.address == gwB {
            checkResponderOutput(bytes)
            if dropResponderNext { dropResponderNext = false; return }
            if to.address == gwA { toInitiator.append(Datagram(bytes: bytes, from: from, to: to)) }
        } else if to.address == gwB, toResponder.count < 32 {
            toResponder.append(Datagram(bytes: bytes, from: from, to: to))
        }
    }

    /// Forged NAT-D notifies can put the responder "behind a NAT": its keepalives carry nothing to check.
    func sendKeepalive(from: Endpoint, to: Endpoint) {}

    /// What the responder sends must decode, and its IDs per IKE SA never go backwards (an
    /// IKE_SA_INIT response resent to a retransmitted request is the one exception: ID 0).
    func checkResponderOutput(_ bytes: [UInt8]) {
        let m: IKEMessage
        do { m = try IKEMessage.decode(bytes) } catch { fatalError("the responder sent a datagram that does not decode: \(error)") }
        let h = m.header
        if h.exchange == .ikeSAInit { return }
        let key = "\(h.spiI):\(h.spiR):\(h.isResponse ? "response" : "request")"
        if let last = sentIDs[key] { require(h.messageID >= last, "the responder sent \(key) ID \(h.messageID) after \(last)") }
        sentIDs[key] = h.messageID
    }
}

extension Payload {
    /// SK and SKF: the encoder takes them last in a chain only (a programming error otherwise).
    var isSealed: Bool {
        switch self { case .encrypted, .encryptedFragment: return true; default: return false }
    }
}

// MARK: the conversation

func profile(local: IPAddress, remote: IPAddress, config: UInt8, responder: Bool) -> ConnectionProfile {
    let set = proposalSets[Int(config & 3)]
    let mode: ESPMode = config & 4 != 0 ? .transport : .tunnel
    func ts(_ p: String) -> WireTrafficSelector { WireTrafficSelector(prefix: IPPrefix(p)!) }
    // The responder's second child allows two adjacent halves of 10.0.0.0/24: a peer's range
    // across both narrows into two selectors.
    let (mine, theirs, extraMine, extraTheirs) = responder
        ? ("203.0.113.0/24", "198.51.100.0/24", ["203.0.113.128/25"], ["10.0.0.0/25", "10.0.0.128/25"])
        : ("198.51.100.0/24", "203.0.113.0/24", ["10.0.0.0/24"], ["203.0.113.128/25"])
    let esp = try! ProposalSpec.parseESP(set.esp)
    let prefix = responder ? "net-b" : "net-a"
    let children = [
        ChildProfile(name: prefix, localTS: [ts(mine)], remoteTS: [ts(theirs)], espProposals: esp, mode: mode,
                     rekeyTime: 60, lifeTime: 70),
        ChildProfile(name: prefix + "2", localTS: extraMine.map(ts), remoteTS: extraTheirs.map(ts), espProposals: esp, mode: mode,
                     rekeyTime: 60, lifeTime: 70),
    ]
    let psk = responder || config & 8 == 0 ? goodPSK : wrongPSK
    return ConnectionProfile(name: responder ? "to-a" : "to-b", localAddresses: [local],
                             remoteAddresses: responder && config & 32 != 0 ? [] : [remote],
                             proposals: try! ProposalSpec.parseIKE(set.ike),
                             remoteID: responder && config & 16 != 0 ? IDPayload(address: remote) : nil,
                             psk: SecretBytes(psk), forceEncapsulation: !responder && config & 128 != 0,
                             dpdDelay: responder && config & 64 != 0 ? 20 : 0, rekeyTime: responder ? 0 : 300,
                             children: children)
}

final class Conversation {
    let config: UInt8
    let wire = Wire()
    let backendR = FuzzBackend(), backendI = FuzzBackend()
    let responder: IKEAgent, initiator: IKEAgent
    let peerPSK: [UInt8]
    var now: Double = 1000
    var history: [Datagram] = []
    /// The IKE SA the datagram being delivered is for (nil: none, or no datagram).
    var current: IKESession?
    var delivering = false
    /// Responder IKE SAs in the order they appeared (our SPI), for the ops that pick one.
    var known: [UInt64] = []
    var seenIDs: [UInt64: (expected: UInt32, next: UInt32)] = [:]
    /// What could have created an IKE SA: IKE_SA_INIT and CREATE_CHILD_SA datagrams, initiate commands.
    var creators = 0
    var commands = 0

    init(config: UInt8) {
        self.config = config
        peerPSK = config & 8 == 0 ? goodPSK : wrongPSK
        responder = IKEAgent(connections: [profile(local: gwB, remote: gwA, config: config, responder: true)],
                             backend: backendR, transport: wire, log: { _ in })
        initiator = IKEAgent(connections: [profile(local: gwA, remote: gwB, config: config, responder: false)],
                             backend: backendI, transport: wire, log: { _ in })
        // With the PFS proposals both agents cut messages above 200-byte datagrams into IKE
        // fragments (RFC 7383): IKE_AUTH and CREATE_CHILD_SA then reach the reassembly.
        if config & 3 == 1 { responder.fragmentSize = 200; initiator.fragmentSize = 200 }
        responder.installTraps()
        initiator.installTraps()
        backendR.authorize = { [unowned self] c in
            require(self.delivering, "CHILD_SA \(c.child) installed outside any peer message")
            guard let s = self.current else { fatalError("CHILD_SA \(c.child) installed for a message of no IKE SA") }
            require(s.remoteID != nil && s.establishedAt != nil, "CHILD_SA \(c.child) installed on \(s.label), which has not authenticated")
            require(self.config & 8 == 0, "CHILD_SA \(c.child) installed although the peer has the wrong PSK")
        }
    }

    var sessions: [IKESession] { known.compactMap { responder.sessions[$0] } }

    func pick(_ i: UInt8) -> IKESession? {
        let s = sessions
        return s.isEmpty ? nil : s[Int(i) % s.count]
    }

    /// The responder IKE SA a datagram is for, as the agent demultiplexes.
    func target(_ bytes: [UInt8]) -> IKESession? {
        guard let h = try? IKEMessage.decodeHeader(bytes) else { return nil }
        guard let s = responder.sessions[h.isInitiator ? h.spiR : h.spiI], s.spiI == h.spiI else { return nil }
        return s
    }

    func deliver(_ d: Datagram) {
        if history.count < 16 { history.append(d) }
        if let h = try? IKEMessage.decodeHeader(d.bytes), h.exchange == .ikeSAInit || h.exchange == .createChildSA { creators += 1 }
        current = target(d.bytes)
        delivering = true
        let before = backendR.memory.children.count
        responder.receive(d.bytes, from: d.from, to: d.to, now: now)
        delivering = false
        current = nil
        backendR.memory.failInstall = false   // op 13 refuses the installs of one datagram only
        require(backendR.memory.children.count <= before + 1, "one datagram installed \(backendR.memory.children.count - before) CHILD_SAs")
        // What one datagram can make the data plane hold: a bounded number of policies.
        for c in backendR.memory.children.dropFirst(before) {
            require(c.outboundPolicies.count <= maxChildPolicies && c.inboundPolicies.count <= maxChildPolicies,
                    "CHILD_SA \(c.child) installed with \(c.outboundPolicies.count) outbound and \(c.inboundPolicies.count) inbound policies")
        }
    }

    /// The responder's datagrams go to the initiator at once; the initiator's wait for the script.
    func settle() {
        var n = 0
        while !wire.toInitiator.isEmpty, n < 16 {
            let d = wire.toInitiator.removeFirst()
            initiator.receive(d.bytes, from: d.from, to: d.to, now: now)
            n += 1
        }
        wire.toInitiator.removeAll()
        check()
    }

    func check() {
        let r = responder
        for (spi, s) in r.sessions.sorted(by: { $0.value.createdAt < $1.value.createdAt }) where !known.contains(spi) {
            _ = s
            known.append(spi)
        }
        require(known.count <= creators, "\(known.count) IKE SAs from \(creators) messages and commands that could create one")
        for s in r.sessions.values {
            if let last = seenIDs[s.ourSPI] {
                require(s.expectedPeerRequestID >= last.expected, "\(s.label): expected peer message ID went from \(last.expected) to \(s.expectedPeerRequestID)")
                require(s.nextRequestID >= last.next, "\(s.label): our next message ID went from \(last.next) to \(s.nextRequestID)")
            }
            seenIDs[s.ourSPI] = (s.expectedPeerRequestID, s.nextRequestID)
            require(s.pending.count + s.queuedChildren.count <= 4 * (commands + 4), "\(s.label): \(s.pending.count) pending, \(s.queuedChildren.count) queued")
            if config & 8 != 0 { require(s.establishedAt == nil, "\(s.label) established although the peer has the wrong PSK") }
        }
        if config & 8 != 0 {
            for s in initiator.sessions.values { require(s.establishedAt == nil, "the initiator's \(s.label) established with the wrong PSK") }
        }
        for (key, spi) in r.halfOpen { require(r.sessions[spi] != nil, "half-open entry for \(key.remote) points at no IKE SA") }
        require(r.halfOpen.count <= r.sessions.count, "\(r.halfOpen.count) half-open entries, \(r.sessions.count) IKE SAs")
        // The data plane holds exactly the children the IKE SAs own (the initiator's too: it
        // runs the same code on what the responder answers).
        for (agent, backend, name) in [(r, backendR, "responder"), (initiator, backendI, "initiator")] {
            let owned = agent.sessions.values.flatMap(\.children).map(\.inboundSPI).sorted()
            let installed = backend.memory.children.map(\.inbound.spi).sorted()
            require(owned == installed, "the \(name) owns children \(owned), its data plane holds \(installed)")
        }
        require(r.lastAcquire.count <= 2, "\(r.lastAcquire.count) acquire entries for 2 children")
    }

    func tick(_ dt: Double) {
        now += dt
        responder.tick(now: now)
        initiator.tick(now: now)
        for s in responder.sessions.values where s.role == .responder && s.state != .established {
            require(now - s.createdAt <= responder.halfOpenTimeout, "\(s.label) still half-open after \(now - s.createdAt) s")
        }
    }

    func command(_ agent: IKEAgent, _ c: UInt8, child: String, ike: String) {
        commands += 1
        switch c % 8 {
        case 0: try? agent.rekey(child: child, now: now)
        case 1: try? agent.rekey(ike: ike, now: now)
        case 2: try? agent.terminate(child: child, now: now)
        case 3: try? agent.terminate(ike: ike, now: now)
        case 4: try? agent.initiate(child: child, now: now); creators += 1
        case 5: try? agent.initiate(child: child + "2", now: now); creators += 1
        case 6: agent.acquire(child: child, now: now); creators += 1
        default: try? agent.initiate(ike: ike, now: now); creators += 1
        }
    }

    // MARK: sealing for a responder IKE SA (as its peer would)

    /// Header, SK payload around `plain` (a chain whose first payload is `first`), sealed with
    /// the key the peer sends with (the responder's receive cipher holds it).
    func seal(_ header: IKEHeader, first: UInt8, _ plain: [UInt8], for s: IKESession) -> [UInt8]? {
        guard let c = s.receiveCipher, plain.count < 60000 else { return nil }
        var h = header
        h.nextPayload = PayloadType.encrypted
        let length = 4 + c.sealedLength(plain.count)
        h.length = UInt32(IKEHeader.size + length)
        let prefix = h.encode() + [first, 0, UInt8(length >> 8), UInt8(truncatingIfNeeded: length)]
        guard let body = try? c.seal(prefix: prefix, plaintext: plain) else { return nil }
        return prefix + body
    }

    /// The SK plaintext of a datagram for `s`: (first payload type, bytes).
    func open(_ bytes: [UInt8], for s: IKESession) -> (IKEHeader, UInt8, [UInt8])? {
        guard let m = try? IKEMessage.decode(bytes), let c = s.receiveCipher, case let .encrypted(first, body)? = m.payloads.last,
              m.payloads.count == 1, let plain = try? c.open(prefix: Array(bytes[0..<(bytes.count - body.count)]), body: body) else { return nil }
        return (m.header, first, plain)
    }

    func peerHeader(_ s: IKESession, _ exchange: ExchangeType, response: Bool, id: UInt32) -> IKEHeader {
        IKEHeader(spiI: s.spiI, spiR: s.spiR, exchange: exchange, isInitiator: !s.isInitiator, isResponse: response, messageID: id)
    }

    /// AUTH for the peer's side (RFC 7296 §2.15), computed here from the initiator's PSK.
    func peerAuth(_ s: IKESession, id: IDPayload) -> [UInt8] {
        guard let a = s.algorithms?.prf, let keys = s.keys else { return [] }
        let prf = PRF(a)
        guard let pad = try? prf.compute(key: peerPSK, Array("Key Pad for IKEv2".utf8)),
              let maced = try? prf.compute(key: keys.skPi.bytes, id.restOfPayload),
              let auth = try? prf.compute(key: pad, s.initRequest + s.nonceR + maced) else { return [] }
        return auth
    }

    // MARK: ops

    func run(_ script: inout Script) {
        try? initiator.initiate(child: "net-a", now: now)
        settle()
        var ops = 0
        while !script.done, ops < maxOps {
            ops += 1
            step(&script)
            settle()
        }
    }

    func next() -> Datagram? { wire.toResponder.isEmpty ? nil : wire.toResponder.removeFirst() }

    func step(_ sc: inout Script) {
        let op = sc.u8() % 15
        if trace { print("op \(op) at byte \(sc.at - 1)") }
        defer { if trace { summary() } }
        switch op {
        case 0: if let d = next() { deliver(d) }
        case 1: _ = next()
        case 2:
            let o = sc.u16(), x = sc.u8() | 1
            if var d = next(), !d.bytes.isEmpty { d.bytes[o % d.bytes.count] ^= x; deliver(d) }
        case 3:
            let o = sc.u16(), x = sc.u8() | 1
            guard var d = next() else { return }
            if let s = target(d.bytes), let (h, first, plain) = open(d.bytes, for: s), !plain.isEmpty {
                var p = plain
                p[o % p.count] ^= x
                guard let b = seal(h, first: first, p, for: s) else { return }
                d.bytes = b
            } else if d.bytes.count > IKEHeader.size {
                d.bytes[IKEHeader.size + o % (d.bytes.count - IKEHeader.size)] ^= x
            }
            deliver(d)
        case 4:
            let k = sc.u8(), i = sc.u8(), a = sc.u8(), extra = sc.take(Int(a % 24))
            guard var d = next() else { return }
            if let s = target(d.bytes), let (h0, first, plain) = open(d.bytes, for: s),
               var payloads = try? Payload.decodeChain(first: first, plain) {
                var h = h0
                edit(&payloads, &h, k, i, a, extra)
                let chain = Payload.encodeChain(payloads)
                guard let b = seal(h, first: chain.first, chain.bytes, for: s) else { return }
                d.bytes = b
            } else if var m = try? IKEMessage.decode(d.bytes), !m.payloads.contains(where: \.isSealed) {
                // A clear message (IKE_SA_INIT); sealed ones for no IKE SA of the responder go as they are.
                edit(&m.payloads, &m.header, k, i, a, extra)
                d.bytes = m.encode()
            }
            deliver(d)
        case 5:
            let k = Int(sc.u8())
            if !history.isEmpty { deliver(history[k % history.count]) }
        case 6:
            if wire.toResponder.count >= 2 { wire.toResponder.swapAt(0, 1) }
        case 7:
            tick(steps[Int(sc.u8() % UInt8(steps.count))])
        case 8:
            command(initiator, sc.u8(), child: "net-a", ike: "to-b")
        case 9:
            command(responder, sc.u8(), child: "net-b", ike: "to-a")
        case 10:
            injectRaw(&sc)
        case 11:
            injectInit(&sc)
        case 12:
            injectRequest(&sc)
        case 13:
            let f = sc.u8()
            if f & 1 == 1 { wire.dropResponderNext = true } else { backendR.memory.failInstall = true }
        default:
            // A NAT rebinding: the next datagram arrives from another port of the initiator.
            let port = UInt16(sc.u8()) << 4 | 1
            if var d = next() { d.from.port = port; deliver(d) }
        }
    }

    /// Structural edits of a message's payloads (after decryption for SK messages).
    func edit(_ p: inout [Payload], _ h: inout IKEHeader, _ k: UInt8, _ i: UInt8, _ a: UInt8, _ extra: [UInt8]) {
        defer { if p.dropLast().contains(where: \.isSealed) { p.removeAll(where: \.isSealed) } }
        let at = p.isEmpty ? 0 : Int(i) % p.count
        let children: [ChildSA] = responder.sessions.values.flatMap(\.children)
        let spis: [UInt32] = children.flatMap { [$0.inboundSPI, $0.outboundSPI] } + [0, 0x100, UInt32(a)]
        let spi = IKEAgent.spiBytes(spis[Int(a) % spis.count])
        switch k % 10 {
        case 0: if !p.isEmpty { p.remove(at: at) }
        case 1: if !p.isEmpty { p.insert(p[at], at: at) }
        case 2: if !p.isEmpty { p.insert(p.remove(at: at), at: 0) }
        case 3:
            // Another SPI where the message names one: a rekey, a delete, the proposals.
            if p.isEmpty { return }
            switch p[at] {
            case var .notify(n): n.spi = spi; n.protocolID = ProtocolID.esp.rawValue; p[at] = .notify(n)
            case let .delete(d) where d.protocolID != .ike:
                p[at] = .delete(DeletePayload(protocolID: d.protocolID, spis: d.spis.isEmpty ? [spi] : d.spis.map { _ in spi }))
            case let .sa(props): p[at] = .sa(props.map { var x = $0; x.spi = x.protocolID == .ike ? extra : spi; return x })
            default: p.insert(.notify(NotifyPayload(protocolID: ProtocolID.esp.rawValue, spi: spi, type: NotifyType.rekeySA)), at: at)
            }
        case 4: h.messageID = h.messageID &+ UInt32(bitPattern: Int32(Int(a % 5) - 2))
        case 5:
            h.exchange = ExchangeType(rawValue: 34 + a % 4)!
            if a & 4 != 0 { h.isResponse.toggle() }
            if a & 8 != 0 { h.isInitiator.toggle() }
        case 6:
            // Other bytes in a nonce, KE, ID, AUTH or notify.
            if p.isEmpty { return }
            switch p[at] {
            case .nonce: p[at] = .nonce(extra)
            case let .ke(g, _): p[at] = .ke(group: a & 1 == 0 ? g : UInt16(a), data: extra)
            case let .idi(id): p[at] = .idi(IDPayload(type: id.type, data: extra))
            case let .auth(m, _): p[at] = .auth(method: a & 1 == 0 ? m : a, data: extra)
            case var .notify(n): n.data = extra; p[at] = .notify(n)
            default: p[at] = .other(type: 40 + a % 16, critical: a & 16 != 0, body: extra)
            }
        case 7:
            // Traffic selectors: swapped, emptied, or one range from the input.
            if p.isEmpty { return }
            let ts = extra.count >= 8 ? [WireTrafficSelector(ipProtocol: a & 1 == 0 ? 0 : 6, startPort: UInt16(a), endPort: UInt16(a) << 8,
                                                             startAddress: IPAddress(bytes: extra[0..<4])!, endAddress: IPAddress(bytes: extra[4..<8])!)] : []
            switch p[at] {
            case let .tsi(t): p[at] = a & 2 == 0 ? .tsr(t) : .tsi(ts)
            case let .tsr(t): p[at] = a & 2 == 0 ? .tsi(t) : .tsr(ts)
            default: p.insert(a & 2 == 0 ? .tsi(ts) : .tsr(ts), at: at)
            }
        case 8:
            // A notify or delete that changes what the message asks for.
            let inserts: [Payload] = [
                .notify(NotifyPayload(protocolID: ProtocolID.esp.rawValue, spi: spi, type: NotifyType.rekeySA)),
                .notify(NotifyPayload(type: NotifyType.useTransportMode)),
                .notify(NotifyPayload(type: NotifyType.initialContact)),
                .notify(NotifyPayload(type: NotifyType.cookie, data: extra)),
                .notify(NotifyPayload(type: NotifyType.invalidKEPayload, data: [0, 31])),
                .delete(DeletePayload(protocolID: .ike, spis: [])),
                .delete(DeletePayload(protocolID: .esp, spis: [spi])),
                .notify(NotifyPayload(type: UInt16(a) << 6, data: extra)),
            ]
            p.insert(inserts[Int(a) % inserts.count], at: p.isEmpty ? 0 : at)
        default:
            // A proposal edit: transforms dropped or their order reversed, proposals duplicated.
            guard case var .sa(props) = p.isEmpty ? nil : p[at], !props.isEmpty else { return }
            let j = Int(a) % props.count
            if a & 1 == 0, !props[j].transforms.isEmpty { props[j].transforms.remove(at: Int(a >> 1) % props[j].transforms.count) }
            else if a & 2 == 0 { props[j].transforms.reverse() } else { props.append(props[j]) }
            p[at] = .sa(props)
        }
    }

    /// Op 10: [session] [exchange/flags] [first type] [length] bytes: a raw chain sealed for an IKE SA.
    func injectRaw(_ sc: inout Script) {
        let which = sc.u8(), flags = sc.u8(), first = sc.u8(), n = Int(sc.u8())
        let chain = sc.take(n)
        guard let s = pick(which) else { return }
        let response = flags & 4 != 0
        let base = response ? (s.outstanding?.id ?? s.nextRequestID) : s.expectedPeerRequestID
        let id = base &+ UInt32(bitPattern: Int32(Int(flags >> 4 & 3) - 1))
        let types: [UInt8] = [PayloadType.sa, PayloadType.nonce, PayloadType.notify, PayloadType.delete, PayloadType.idi,
                              PayloadType.auth, PayloadType.tsi, PayloadType.ke]
        let firstType = first < 200 ? types[Int(first) % types.count] : first
        guard let b = seal(peerHeader(s, ExchangeType(rawValue: 34 + flags % 4)!, response: response, id: id), first: firstType, chain, for: s) else { return }
        deliverOrQueue(Datagram(bytes: b, from: s.remote, to: s.local), queue: flags & 64 != 0)
    }

    func deliverOrQueue(_ d: Datagram, queue: Bool) {
        if queue { wire.toResponder.insert(d, at: 0) } else { deliver(d) }
    }

    /// Op 11: [flags] [spi] [peer] [nonce length] [group]: an IKE_SA_INIT of the harness's own.
    func injectInit(_ sc: inout Script) {
        let flags = sc.u8(), spiByte = sc.u8(), peer = sc.u8(), nonceLength = Int(sc.u8()), g = sc.u8()
        let address = fakePeers[Int(peer) % fakePeers.count]
        let from = Endpoint(address, peer & 0x80 != 0 ? 4500 : (peer & 0x40 != 0 ? 10500 : 500))
        let to = Endpoint(gwB, flags & 0x80 != 0 ? 4500 : 500)
        let spiI = UInt64(spiByte) << 32 | 0x5eed
        let specs = try! ProposalSpec.parseIKE(proposalSets[Int(config & 3)].ike + (flags & 1 != 0 ? ",aes256gcm16-prfsha384-ecp256" : ""))
        let groups: [DHGroup] = [specs[0].dh[0], .curve25519, .ecp256, .modp2048]
        let group = groups[Int(g) % groups.count]
        guard let dh = try? DiffieHellman(group: group) else { return }
        var payloads: [Payload] = []
        if flags & 2 != 0 { payloads.append(.notify(NotifyPayload(type: NotifyType.cookie, data: [spiByte, g]))) }
        payloads.append(.sa(specs.enumerated().map { $1.wireProposal(number: UInt8($0 + 1), protocolID: .ike, spi: flags & 4 != 0 ? [1, 2, 3, 4, 5, 6, 7, 8] : []) }))
        payloads.append(.ke(group: (g & 0x80 != 0 ? groups[Int(g >> 2) % groups.count] : group).rawValue, data: dh.publicValue))
        if flags & 8 == 0 { payloads.append(.nonce((0..<nonceLength).map { UInt8(truncatingIfNeeded: $0) })) }
        if flags & 16 != 0 { payloads += NATDetection.notifies(spiI: spiI, spiR: 0, source: from, destination: to, fakeSource: flags & 32 != 0) }
        let h = IKEHeader(spiI: spiI, spiR: 0, exchange: .ikeSAInit, isInitiator: flags & 64 == 0, isResponse: false, messageID: 0)
        deliver(Datagram(bytes: IKEMessage(header: h, payloads: payloads).encode(), from: from, to: to))
    }

    /// Op 12: [session] [kind/flags] [arg] [spi]: a well-formed request of the peer, sealed for an IKE SA.
    func injectRequest(_ sc: inout Script) {
        let which = sc.u8(), kind = sc.u8(), arg = sc.u8(), spiByte = sc.u8()
        guard let s = pick(which) else { return }
        let child = s.connection.children[Int(arg) % 2]
        var tsi = child.remoteTS, tsr = child.localTS
        if arg & 64 != 0 {
            // Many selectors (up to the payload's 255): `spiByte` different ranges from the start of
            // the first allowed one, each up to 256 addresses wide and ragged (many prefixes).
            func spread(_ t: [WireTrafficSelector]) -> [WireTrafficSelector] {
                guard let base = t.first, base.family == .v4 else { return t }
                let start = UInt32(truncatingIfNeeded: base.startAddress.low)
                return (0..<Int(spiByte)).map { (i: Int) -> WireTrafficSelector in
                    let lo: UInt32 = start &+ UInt32(i % 128)
                    let hi: UInt32 = start &+ 255 &- UInt32(i % 128 + i / 128)
                    return WireTrafficSelector(startAddress: IPAddress(v4: lo), endAddress: IPAddress(v4: hi))
                }
            }
            tsi = spread(tsi)
            tsr = spread(tsr)
        }
        let peerSPI: [UInt8] = [0xc0, 0, 0, spiByte]
        let mode: [Payload] = child.mode == .transport ? [.notify(NotifyPayload(type: NotifyType.useTransportMode))] : []
        var exchange = ExchangeType.createChildSA
        var payloads: [Payload]
        switch kind % 5 {
        case 0:
            // IKE_AUTH, with the first child unless bit 3.
            exchange = .ikeAuth
            let id = arg & 16 != 0 ? IDPayload(type: .fqdn, data: Array("peer.example".utf8)) : IDPayload(address: gwA)
            payloads = [.idi(id), .auth(method: arg & 32 != 0 ? 1 : 2, data: peerAuth(s, id: id)), .notify(NotifyPayload(type: NotifyType.initialContact))]
            if kind & 8 == 0 {
                let esp = child.espProposals.enumerated().map { $1.wireProposal(number: UInt8($0 + 1), protocolID: .esp, spi: peerSPI, includeKeyExchange: false) }
                payloads += mode + [.sa(esp), .tsi(tsi), .tsr(tsr)]
            }
        case 1, 2:
            // A new CHILD_SA, or (2) a rekey of one of the IKE SA's children.
            let esp = child.espProposals.enumerated().map { $1.wireProposal(number: UInt8($0 + 1), protocolID: .esp, spi: peerSPI) }
            payloads = mode + [.sa(esp), .nonce(Array(repeating: spiByte, count: 32))]
            if let g = child.espProposals.first?.dh.first, kind & 8 == 0, let dh = try? DiffieHellman(group: g) { payloads.append(.ke(group: g.rawValue, data: dh.publicValue)) }
            payloads += [.tsi(tsi), .tsr(tsr)]
            if kind % 5 == 2 {
                let old = s.children.isEmpty ? 0 : s.children[Int(arg >> 1) % s.children.count].outboundSPI
                payloads.insert(.notify(NotifyPayload(protocolID: ProtocolID.esp.rawValue, spi: IKEAgent.spiBytes(old), type: NotifyType.rekeySA)), at: 0)
            }
        case 3:
            // An IKE SA rekey.
            let specs = s.connection.proposals
            guard let g = specs.first?.dh.first, let dh = try? DiffieHellman(group: g) else { return }
            payloads = [.sa(specs.enumerated().map { $1.wireProposal(number: UInt8($0 + 1), protocolID: .ike, spi: [1, 2, 3, 4, 5, 6, 7, spiByte]) }),
                        .nonce(Array(repeating: arg, count: 32)), .ke(group: g.rawValue, data: dh.publicValue)]
        default:
            // INFORMATIONAL: deletes of children (their SPIs, or one from the input), of the IKE SA, or nothing (DPD).
            exchange = .informational
            let ours = s.children.map { IKEAgent.spiBytes($0.outboundSPI) }
            switch arg % 4 {
            case 0: payloads = [.delete(DeletePayload(protocolID: .esp, spis: ours))]
            case 1: payloads = [.delete(DeletePayload(protocolID: .esp, spis: ours + ours + [peerSPI]))]
            case 2: payloads = [.delete(DeletePayload(protocolID: .ike, spis: []))]
            default: payloads = []
            }
        }
        let chain = Payload.encodeChain(payloads)
        let id = s.expectedPeerRequestID &+ (kind & 0x80 != 0 ? 1 : 0)
        guard let b = seal(peerHeader(s, exchange, response: kind & 0x40 != 0, id: id), first: chain.first, chain.bytes, for: s) else { return }
        deliverOrQueue(Datagram(bytes: b, from: s.remote, to: s.local), queue: kind & 0x20 != 0)
    }
}

/// FUZZ_AGENT_TRACE=1: one line per input on what the conversation reached (to check seeds).
let trace: Bool = {
    guard getenv("FUZZ_AGENT_TRACE") != nil else { return false }
    setvbuf(stdout, nil, _IONBF, 0)   // a finding stops the process: lose no line before it
    return true
}()

extension Conversation {
    func summary() {
        let states = responder.sessions.values.map { s in
            "\(s.role.rawValue)/\(s.state.rawValue)/ids \(s.expectedPeerRequestID),\(s.nextRequestID)/children \(s.children.map { "\($0.inboundSPI):\($0.state.rawValue)" })"
        }
        print("responder: \(states), installed \(backendR.memory.children.map(\.inbound.spi)), removed \(backendR.memory.removed.count), counters \(responder.counters)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1, size < 4096 else { return 0 }
    var script = Script(bytes: Array(UnsafeBufferPointer(start: data, count: size)))
    let c = Conversation(config: script.u8())
    c.run(&script)
    if trace { c.summary() }
    return 0
}
