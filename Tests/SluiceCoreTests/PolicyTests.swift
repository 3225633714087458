import Testing
@testable import SluiceCore

@Suite("SPD selectors and order")
struct PolicyTests {
    func key(_ s: String, _ d: String, proto: UInt8 = 6, sp: UInt16? = 1234, dp: UInt16? = 80) -> FlowKey {
        FlowKey(src: IPAddress(s)!, dst: IPAddress(d)!, proto: proto, srcPort: sp, dstPort: dp)
    }

    @Test("prefixes, protocol, ports and ICMP type")
    func selectors() {
        let s = TrafficSelector(src: IPPrefix("198.51.100.0/24"), dst: IPPrefix("203.0.113.0/25"), proto: 6, dstPorts: 80...443)
        #expect(s.matches(key("198.51.100.9", "203.0.113.1")))
        #expect(!s.matches(key("198.51.101.9", "203.0.113.1")))
        #expect(!s.matches(key("198.51.100.9", "203.0.113.200")))
        #expect(!s.matches(key("198.51.100.9", "203.0.113.1", proto: 17)))
        #expect(!s.matches(key("198.51.100.9", "203.0.113.1", dp: 22)))
        #expect(!s.matches(key("198.51.100.9", "203.0.113.1", sp: nil, dp: nil)), "opaque ports do not match a port range")
        let icmp = TrafficSelector(proto: 1, icmpType: 8)
        #expect(icmp.matches(key("192.0.2.1", "192.0.2.2", proto: 1, sp: 8, dp: 0)))
        #expect(!icmp.matches(key("192.0.2.1", "192.0.2.2", proto: 1, sp: 0, dp: 0)))
        let v6 = TrafficSelector(dst: IPPrefix("2001:db8:2::/48"))
        #expect(v6.matches(key("2001:db8:1::1", "2001:db8:2:5::1")))
        #expect(!v6.matches(key("2001:db8:1::1", "2001:db8:3::1")))
        #expect(!v6.matches(key("192.0.2.1", "192.0.2.2")), "families never cross")
    }

    @Test("prefix parsing normalises and rejects nonsense")
    func prefixes() {
        #expect(IPPrefix("198.51.100.77/24") == IPPrefix("198.51.100.0/24"))
        #expect(IPPrefix.hasHostBits("198.51.100.77/24"))
        #expect(IPPrefix("198.51.100.0/33") == nil)
        #expect(IPPrefix("2001:db8::/129") == nil)
        #expect(IPPrefix("banana/8") == nil)
        #expect(IPPrefix("0.0.0.0/0")!.contains(IPAddress("203.0.113.1")!))
        #expect(IPPrefix("2001:db8::/32")!.contains(IPAddress("2001:db8:ffff::1")!))
        #expect(IPPrefix("2001:db8::1/128")!.contains(IPAddress("2001:db8::1")!))
        #expect(!IPPrefix("2001:db8::1/128")!.contains(IPAddress("2001:db8::2")!))
        #expect(IPAddress("2001:db8::1")!.description == "2001:db8::1")
    }

    @Test("first match wins; BYPASS and DISCARD; default action")
    func order() throws {
        let key = SecretBytes(TestPackets.pattern(20))
        let sa = try SecurityAssociation(config: SAConfig(name: "t", direction: .outbound, spi: 1, mode: .tunnel,
                                                          local: IPAddress("192.0.2.1")!, remote: IPAddress("192.0.2.2")!,
                                                          proposal: .aes128gcm16, keyMaterial: key))
        let policies = [
            Policy(direction: .outbound, selector: TrafficSelector(dst: IPPrefix("203.0.113.5/32"), proto: 6, dstPorts: 22...22), action: .bypass),
            Policy(direction: .outbound, selector: TrafficSelector(dst: IPPrefix("203.0.113.6/32")), action: .discard),
            Policy(direction: .outbound, selector: TrafficSelector(dst: IPPrefix("203.0.113.0/24")), action: .protect(sa: "t")),
        ]
        let db = try SecurityDatabase(policies: policies, associations: [sa], defaultOutbound: .discard)
        func run(_ dst: String, dport: UInt16) -> Outcome {
            var b = PacketBuffer(TestPackets.ipv4(src: "198.51.100.1", dst: dst, proto: 6, payload: TestPackets.udp(sport: 999, dport: dport, data: [])))
            return PacketProcessor.process(&b, database: db, context: .init())
        }
        #expect(run("203.0.113.5", dport: 22) == .unchanged)
        #expect(run("203.0.113.5", dport: 80) == .sealed)
        #expect(run("203.0.113.6", dport: 22) == .drop(.policyDiscard))
        #expect(run("198.51.100.99", dport: 22) == .drop(.noPolicy))
    }

    @Test("database refuses unknown SAs, direction mix-ups and duplicate SPIs")
    func buildErrors() throws {
        let key = SecretBytes(TestPackets.pattern(20))
        let cfg = SAConfig(name: "i", direction: .inbound, spi: 7, mode: .tunnel, local: IPAddress("192.0.2.1")!,
                           remote: IPAddress("192.0.2.2")!, proposal: .aes128gcm16, keyMaterial: key)
        let a = try SecurityAssociation(config: cfg)
        var cfg2 = cfg; cfg2.name = "j"
        let b = try SecurityAssociation(config: cfg2)
        #expect(throws: SecurityDatabase.BuildError.self) {
            try SecurityDatabase(policies: [Policy(direction: .inbound, selector: .init(), action: .protect(sa: "nope"))], associations: [a])
        }
        #expect(throws: SecurityDatabase.BuildError.self) {
            try SecurityDatabase(policies: [Policy(direction: .outbound, selector: .init(), action: .protect(sa: "i"))], associations: [a])
        }
        #expect(throws: SecurityDatabase.BuildError.self) { try SecurityDatabase(policies: [], associations: [a, b]) }
    }

    @Test("keys never print")
    func redaction() {
        let k = SecretBytes([0xde, 0xad, 0xbe, 0xef])
        #expect("\(k)" == "<4 bytes redacted>")
        #expect(!String(reflecting: k).contains("de"))
    }
}
