import Foundation
import Testing
@testable import SluiceConfig
@testable import SluiceCore
@testable import SluiceDataPlane

@Suite("nftables ruleset")
struct RulesetTests {
    static let config = """
        [sluice]
        queues = 2
        queue_base = 10
        mark_shift = 16

        [[sa]]
        name = "out1"
        direction = "out"
        spi = 0x1001
        local = "192.0.2.1"
        remote = "192.0.2.2"
        proposal = "aes256gcm16"
        key = "0x000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f01020304"

        [[sa]]
        name = "in1"
        direction = "in"
        spi = 0x2001
        local = "192.0.2.1"
        remote = "192.0.2.2"
        proposal = "aes256gcm16"
        nat_t = true
        key = "0x000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f01020304"

        [[policy]]
        direction = "out"
        dst = "203.0.113.9/32"
        protocol = "tcp"
        dst_port = 22
        action = "bypass"

        [[policy]]
        direction = "out"
        dst = "203.0.113.66/32"
        action = "discard"

        [[policy]]
        direction = "out"
        src = "198.51.100.0/24"
        dst = "203.0.113.0/24"
        action = "protect"
        sa = "out1"

        [[policy]]
        direction = "in"
        src = "203.0.113.0/24"
        dst = "198.51.100.0/24"
        action = "protect"
        sa = "in1"
        """

    func builder(_ backend: QueueBackend, fail: String = "closed") throws -> RulesetBuilder {
        let text = RulesetTests.config.replacingOccurrences(of: "queues = 2", with: "queues = 2\nfail = \"\(fail)\"")
        return RulesetBuilder(config: try ConfigLoader.parse(text, path: "t.toml"), backend: backend)
    }

    func lines(_ s: String, chain: String) -> [String] {
        let all = s.components(separatedBy: "\n")
        guard let start = all.firstIndex(where: { $0.contains("chain \(chain) {") }) else { return [] }
        return Array(all[(start + 1)...].prefix { !$0.hasPrefix("\t}") }).map { $0.trimmingCharacters(in: .whitespaces) }
    }

    @Test("SPD order is kept: bypass and discard decided in the kernel, protect queued")
    func order() throws {
        let s = try builder(.native).nftScript()
        let out = lines(s, chain: "protect_out")
        let bypass = try #require(out.firstIndex { $0.hasPrefix("ip daddr 203.0.113.9/32 tcp dport 22 return") })
        let discard = try #require(out.firstIndex { $0.hasPrefix("ip daddr 203.0.113.66/32 counter drop") })
        let protect = try #require(out.firstIndex { $0.contains("symhash mod 2 vmap") })
        #expect(bypass < discard && discard < protect)
        #expect(out.contains { $0.contains("tcp option maxseg size set") }, "MSS clamp for protected TCP")
        #expect(lines(s, chain: "protect_fwd").contains { $0.contains("symhash mod 2 vmap") })
    }

    @Test("hooks and priorities are the documented ones")
    func hooks() throws {
        let s = try builder(.native).nftScript()
        #expect(lines(s, chain: "esp_in").first == "type filter hook prerouting priority raw - 1; policy accept;")
        #expect(lines(s, chain: "clear_in").first == "type filter hook prerouting priority raw + 10; policy accept;")
        #expect(lines(s, chain: "protect_fwd").first == "type filter hook prerouting priority mangle - 1; policy accept;")
        #expect(lines(s, chain: "protect_out").first == "type filter hook output priority 140; policy accept;")
        #expect(s.contains("table inet sluice\ndelete table inet sluice\ntable inet sluice {"), "atomic replace of our own table only")
    }

    @Test("reload swaps rules in place: base chains (and their hooks) stay, so queued packets survive")
    func reload() throws {
        let s = try builder(.xtables).nftScript(reload: true)
        #expect(s.contains("flush table inet sluice\n"))
        #expect(!s.contains("delete table"))
    }

    @Test("native backend queues with `queue num`, spread by SPI and flow hash")
    func native() throws {
        let s = try builder(.native).nftScript()
        #expect(lines(s, chain: "esp_in_q0") == ["queue num 10"])
        #expect(lines(s, chain: "protect_out_q1") == ["meta l4proto tcp queue num 13 comment \"whole TCP packets (GSO)\"", "queue num 11"],
                "outbound TCP goes to the GSO twin (queue_base + queues + index), the rest to the plain queue")
        #expect(s.contains("ip daddr 192.0.2.1 meta l4proto esp jhash esp spi mod 2 vmap { 0 : goto esp_in_q0, 1 : goto esp_in_q1 }"))
        #expect(s.contains("ip daddr 192.0.2.1 udp dport 4500 jhash @th,64,32 mod 2"), "NAT-T spread by the SPI after the UDP header")
        #expect(!s.contains("guard_"))
        #expect(try builder(.native).xtRules().isEmpty)
        let open = try builder(.native, fail: "open").nftScript()
        #expect(lines(open, chain: "esp_in_q0") == ["queue flags bypass num 10"])
    }

    @Test("xtables backend marks in nft, queues in iptables-nft one priority later, and guards")
    func xtables() throws {
        let b = try builder(.xtables)
        let s = b.nftScript()
        #expect(lines(s, chain: "esp_in_q1") == ["meta mark set meta mark & 0xff00ffff | 0x20000"])
        #expect(lines(s, chain: "guard_esp_in").contains { $0.contains("meta mark & 0xff0000 != 0 meta mark & 0x800000 == 0 counter drop") })
        #expect(lines(s, chain: "protect_fwd_q0") == ["meta l4proto tcp meta mark set meta mark & 0xff00ffff | 0x30000 return comment \"whole TCP packets (GSO)\"",
                                                       "meta mark set meta mark & 0xff00ffff | 0x10000"])
        let rules = b.xtRules()
        #expect(rules.count == 2 * (2 + 2 * 2 * 2), "two tools x (ESP: 2 queues; two outbound hooks: 2 queues + 2 twins)")
        #expect(rules.contains { $0.table == "mangle" && $0.spec.suffix(2) == ["--queue-num", "12"] && $0.spec.contains("0x30000/0xff0000") })
        #expect(!rules.contains { $0.table == "raw" && $0.spec.contains("12") }, "inbound ESP has no twin")
        let raw = try #require(rules.first { $0.tool == "iptables-nft" && $0.table == "raw" && $0.spec.contains("11") })
        #expect(raw.chain == "PREROUTING")
        #expect(raw.spec == ["-m", "mark", "--mark", "0x20000/0xff0000", "-m", "comment", "--comment", "sluice",
                             "-j", "NFQUEUE", "--queue-num", "11"])
        #expect(rules.contains { $0.table == "security" && $0.chain == "OUTPUT" })
        #expect(rules.contains { $0.table == "mangle" && $0.chain == "PREROUTING" })
        #expect(!rules.contains { $0.spec.contains("--queue-bypass") }, "fail closed: no bypass")
        #expect(try builder(.xtables, fail: "open").xtRules().allSatisfy { $0.spec.contains("--queue-bypass") })
    }

    @Test("clear packets under an inbound PROTECT policy are dropped unless decrypted")
    func clearIn() throws {
        let s = try builder(.native).nftScript()
        let c = lines(s, chain: "clear_in")
        let mark = try #require(c.firstIndex { $0 == "meta mark & 0x800000 == 0x800000 return" })
        let drop = try #require(c.firstIndex { $0.hasPrefix("ip saddr 203.0.113.0/24 ip daddr 198.51.100.0/24 counter drop") })
        #expect(mark < drop)
    }

    @Test("the verdict mark clears Sluice's field and sets the processed bit, keeping the admin's bits")
    func marks() {
        #expect(RulesetBuilder.verdictMark(original: 0x1234_0042, shift: 16) == 0x1280_0042)
        #expect(RulesetBuilder.verdictMark(original: 0, shift: 8) == 0x8000)
    }

    @Test("selectors compile to nft matches")
    func selectors() {
        #expect(RulesetBuilder.match(TrafficSelector(src: IPPrefix("2001:db8:1::/48"), proto: 17, srcPorts: 500...500, dstPorts: 1000...2000))
                == "ip6 saddr 2001:db8:1::/48 udp sport 500 udp dport 1000-2000")
        #expect(RulesetBuilder.match(TrafficSelector(proto: 1, icmpType: 8, icmpCode: 0)) == "icmp type 8 icmp code 0")
        #expect(RulesetBuilder.match(TrafficSelector(proto: 58)) == "meta l4proto ipv6-icmp")
        #expect(RulesetBuilder.match(TrafficSelector()) == "")
    }

    @Test("MSS clamp leaves room for the worst-case ESP overhead")
    func mss() throws {
        let sa = try ConfigLoader.parse(RulesetTests.config, path: "t.toml").associations[0].config
        let mss = RulesetBuilder.clampedMSS(sa, innerFamily: .v4)
        // 1500 - outer 20 - (8 + 8 IV + 3 pad + 2 + 16 ICV) - inner 20 - TCP 20
        #expect(mss == 1500 - 20 - 37 - 40)
    }
}

extension RulesetTests {
    /// RulesetTests.config plus a second, smaller outbound SA and one more out policy.
    func clampScript(_ policy: String, header: String = "") throws -> [String] {
        let text = RulesetTests.config.replacingOccurrences(of: "mark_shift = 16", with: "mark_shift = 16\n" + header) + """

            [[sa]]
            name = "out2"
            direction = "out"
            spi = 0x1002
            local = "192.0.2.1"
            remote = "192.0.2.2"
            proposal = "aes256-sha256"
            mtu = 1400
            nat_t = true
            key = "0x\(String(repeating: "ab", count: 64))"

            [[policy]]
            direction = "out"
            \(policy)
            action = "protect"

            """
        let b = RulesetBuilder(config: try ConfigLoader.parse(text, path: "t.toml"), backend: .xtables)
        let out = lines(b.nftScript(), chain: "protect_out")
        #expect(lines(b.nftScript(), chain: "protect_fwd").filter { $0.contains("maxseg") } == out.filter { $0.contains("maxseg") })
        // The clamp of RulesetTests.config's own protect policy comes first.
        return Array(out.filter { $0.contains("maxseg") }.dropFirst())
    }

    @Test("MSS clamp only where TCP can match: never for udp, sctp, icmp or another protocol number")
    func clampOnlyTCP() throws {
        for proto in ["protocol = \"udp\"\ndst_port = \"5301\"", "protocol = \"sctp\"\nsrc_port = 9", "protocol = \"icmp\"\nicmp_type = 8",
                      "protocol = \"ipv6-icmp\"", "protocol = 47", "protocol = \"udp\""] {
            #expect(try clampScript("dst = \"203.0.113.0/24\"\n\(proto)\nsa = \"out1\"").isEmpty, "\(proto)")
        }
        #expect(try clampScript("protocol = \"tcp\"\ndst_port = 22\nsa = \"out1\"", header: "mss_clamp = false").isEmpty)
        #expect(try clampScript("dst = \"2001:db8::/32\"\nprotocol = \"tcp\"\ndst_port = \"1000-2000\"\nsa = \"out1\"")
                == ["ip6 daddr 2001:db8::/32 tcp dport 1000-2000 tcp flags syn tcp option maxseg size > 1383 tcp option maxseg size set 1383"])
        #expect(try clampScript("protocol = \"tcp\"\nsa = \"out1\"")
                == ["meta nfproto ipv4 meta l4proto tcp tcp flags syn tcp option maxseg size > 1403 tcp option maxseg size set 1403",
                    "meta nfproto ipv6 meta l4proto tcp tcp flags syn tcp option maxseg size > 1383 tcp option maxseg size set 1383"])
    }

    @Test("MSS clamp of an SA set: the smallest MSS of its SAs, per inner family")
    func clampSASet() throws {
        let cfg = try ConfigLoader.parse(RulesetTests.config, path: "t.toml")
        let got = try clampScript("dst = \"203.0.113.0/24\"\nsa = [\"out1\", \"out2\"]")
        // out2: 1400 - 20 outer - 8 UDP - (8 + 16 IV + 15 pad + 2 + 16 ICV) - 20 inner - 20 TCP
        let out2 = try #require(try clampScript("dst = \"203.0.113.0/24\"\nsa = \"out2\"").first)
        #expect(got == [out2])
        #expect(RulesetBuilder.clampedMSS(cfg.associations[0].config, innerFamily: .v4) == 1403, "out1 alone allows more")
        #expect(out2 == "ip daddr 203.0.113.0/24 tcp flags syn tcp option maxseg size > 1275 tcp option maxseg size set 1275")
    }
}

@Suite("Kernel queue view")
struct KernelQueueTests {
    @Test("parses /proc/net/netfilter/nfnetlink_queue lines")
    func parse() {
        let text = "    0  12345     3 2 65531     7     9   100 1\n    1 4036243233 0 2 65531 0 0 3 1\n garbage\n"
        let q = KernelQueue.parse(text)
        #expect(q.count == 2)
        #expect(q[0] == KernelQueue(queue: 0, portID: 12345, waiting: 3, copyMode: 2, copyRange: 65531, queueDropped: 7, userDropped: 9, idSequence: 100))
        #expect(q[1].portID == 4_036_243_233)
    }

    @Test("the xt NFQUEUE rules depend only on settings that need a restart, so a reload may leave them alone")
    func xtRulesOnlyFromRestartSettings() throws {
        let base = try ConfigLoader.parse(RulesetTests.config, path: "t.toml")
        let fewer = try ConfigLoader.parse(RulesetTests.config + """

            [[policy]]
            direction = "out"
            dst = "198.51.100.0/24"
            action = "discard"
            """, path: "t.toml")
        func xt(_ c: SluiceConfiguration) -> [String] { RulesetBuilder(config: c, backend: .xtables).xtRules().map { "\($0)" } }
        #expect(!xt(base).isEmpty)
        #expect(xt(base) == xt(fewer), "policies changed, xt rules did not")
        #expect(fewer.restartRequired(comparedTo: base).isEmpty)
        let moreQueues = try ConfigLoader.parse(RulesetTests.config.replacingOccurrences(of: "queues = 2", with: "queues = 3"), path: "t.toml")
        #expect(xt(moreQueues) != xt(base))
        #expect(!moreQueues.restartRequired(comparedTo: base).isEmpty, "what changes the xt rules needs a restart")
    }
}
