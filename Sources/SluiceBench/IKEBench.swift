// `sluice-bench ike`: IKEv2 agents back to back in memory (no sockets, no data plane: a
// MemoryBackend each). Establishments (IKE_SA_INIT + IKE_AUTH with one CHILD_SA) per second,
// then CHILD_SA rekeys per second on one IKE SA (CREATE_CHILD_SA with REKEY_SA, then the
// INFORMATIONAL delete of the old SA, both sides' old SAs removed), per proposal set.
import SluiceCore
import SluiceIKE

/// The in-memory wire: every datagram goes to the agent that owns its destination address.
final class BenchWire: IKETransport {
    var agents: [IPAddress: IKEAgent] = [:]
    var queue: [(bytes: [UInt8], from: Endpoint, to: Endpoint)] = []
    var delivered = 0

    func send(_ datagram: [UInt8], from: Endpoint, to: Endpoint) { queue.append((datagram, from, to)) }
    /// No NAT between the benchmark's agents: none are sent.
    func sendKeepalive(from: Endpoint, to: Endpoint) {}

    /// Delivers until quiet; a loop between the agents is a failure, not a hang.
    func run(now: Double) {
        var n = 0
        while !queue.isEmpty {
            let d = queue.removeFirst()
            agents[d.to.address]?.receive(d.bytes, from: d.from, to: d.to, now: now)
            n += 1
            if n > 64 { fatalError("the agents did not settle after 64 datagrams") }
        }
        delivered += n
    }
}

struct IKEBenchCase {
    var ike: String
    var esp: String
    var label: String { "ike=\(ike) esp=\(esp)" }
}

/// Two agents ("a" initiates) with one child each, selectors 198.51.100.0/24 <-> 203.0.113.0/24.
final class BenchPair {
    static let gwA = IPAddress("192.0.2.1")!, gwB = IPAddress("192.0.2.2")!
    let wire = BenchWire()
    let backendA = MemoryBackend(), backendB = MemoryBackend()
    let a: IKEAgent, b: IKEAgent
    var now: Double = 1000

    init(_ c: IKEBenchCase) throws {
        func profile(local: IPAddress, remote: IPAddress, mine: String, theirs: String, child: String, name: String) throws -> ConnectionProfile {
            let ch = ChildProfile(name: child, localTS: [WireTrafficSelector(prefix: IPPrefix(mine)!)],
                                  remoteTS: [WireTrafficSelector(prefix: IPPrefix(theirs)!)], espProposals: try ProposalSpec.parseESP(c.esp))
            return ConnectionProfile(name: name, localAddresses: [local], remoteAddresses: [remote], proposals: try ProposalSpec.parseIKE(c.ike),
                                     psk: SecretBytes(Array("a benchmark pre-shared key, 32 bytes".utf8)), children: [ch])
        }
        a = IKEAgent(connections: [try profile(local: Self.gwA, remote: Self.gwB, mine: "198.51.100.0/24", theirs: "203.0.113.0/24", child: "net-a", name: "to-b")],
                     backend: backendA, transport: wire, log: { _ in })
        b = IKEAgent(connections: [try profile(local: Self.gwB, remote: Self.gwA, mine: "203.0.113.0/24", theirs: "198.51.100.0/24", child: "net-b", name: "to-a")],
                     backend: backendB, transport: wire, log: { _ in })
        // The rekeyed SAs go at the next tick, so each rekey ends with one SA per side.
        a.rekeyedInboundDelay = 0
        b.rekeyedInboundDelay = 0
        wire.agents = [Self.gwA: a, Self.gwB: b]
    }

    /// IKE_SA_INIT, IKE_AUTH and the first CHILD_SA; both sides must have installed it.
    func establish() throws {
        try a.initiate(child: "net-a", now: now)
        wire.run(now: now)
        guard backendA.children.count == 1, backendB.children.count == 1,
              backendA.children[0].outbound.spi == backendB.children[0].inbound.spi else {
            fatalError("the IKE SA or its CHILD_SA did not come up: the benchmark measures failures")
        }
    }

    /// One CHILD_SA rekey and the delete of the old SA; checks both sides moved to the new SA.
    func rekey() throws {
        let before = backendA.children[0].inbound.spi
        try a.rekey(child: "net-a", now: now)
        wire.run(now: now)
        now += 0.001
        a.tick(now: now)
        b.tick(now: now)
        guard backendA.children.count == 1, backendB.children.count == 1, backendA.children[0].inbound.spi != before,
              backendA.children[0].outbound.spi == backendB.children[0].inbound.spi else {
            fatalError("a rekey did not complete (A holds \(backendA.children.count) SAs, B \(backendB.children.count))")
        }
    }
}

/// Operations per second of `body` over about `seconds` (at least `minimum` operations).
func ratePerSecond(seconds: Double, minimum: Int = 3, _ body: () throws -> Void) rethrows -> Double {
    var n = 0
    let t0 = now()
    var t1 = t0
    while t1 - t0 < seconds || n < minimum {
        try body()
        n += 1
        t1 = now()
    }
    return Double(n) / (t1 - t0)
}

/// Establishments/s (fresh agents each time) and rekeys/s (one IKE SA), per case, the best of
/// `rounds` rounds taken in turn; then the ratios against the baselines of the same run.
func ikeBench(seconds: Double, rounds: Int) throws {
    let cases = [
        IKEBenchCase(ike: "aes128gcm16-prfsha256-x25519", esp: "aes128gcm16"),
        IKEBenchCase(ike: "aes128gcm16-prfsha256-x25519", esp: "aes128gcm16-x25519"),
        IKEBenchCase(ike: "aes128-sha256-modp2048", esp: "aes128-sha256"),
        IKEBenchCase(ike: "aes128-sha256-modp2048", esp: "aes128-sha256-modp2048"),
    ]
    var establish = [Double](repeating: 0, count: cases.count), rekey = establish
    var rekeysDone = 0
    for _ in 0..<rounds {
        for (i, c) in cases.enumerated() {
            establish[i] = max(establish[i], try ratePerSecond(seconds: seconds) { try BenchPair(c).establish() })
            let p = try BenchPair(c)
            try p.establish()
            let r = try ratePerSecond(seconds: seconds) { try p.rekey() }
            rekeysDone += p.backendA.removed.count
            rekey[i] = max(rekey[i], r)
        }
    }
    print(String(format: "IKEv2 agents in memory, best of %d rounds of %.1f s per figure (%d rekeys checked)", rounds, seconds, rekeysDone))
    for (i, c) in cases.enumerated() {
        print(String(format: "  %@: establish/s=%.0f rekeys/s=%.0f rekeys_per_establish=%.2f", c.label, establish[i], rekey[i], rekey[i] / establish[i]))
    }
    // Baselines in the same run: each PFS rekey against the same IKE SA's rekey without PFS,
    // and MODP against X25519.
    print(String(format: "  rekey with PFS / without: x25519 %.2f, modp2048 %.2f", rekey[1] / rekey[0], rekey[3] / rekey[2]))
    print(String(format: "  establish modp2048 / x25519: %.2f", establish[2] / establish[0]))
}
