import Foundation
import Testing
@testable import SluiceConfig
@testable import SluiceCore
import SluiceIKE

/// One connection with one child; the line numbers of the corpus below count on it.
let ikeBase = """
    [[connection]]
    name = "gw-b"
    local_addrs = ["192.0.2.1"]
    remote_addrs = ["192.0.2.2"]
    auth = "psk"
    psk = "0x00112233445566778899aabbccddeeff"

    [[connection.child]]
    name = "net"
    local_ts = ["198.51.100.0/24"]
    remote_ts = ["203.0.113.0/24"]

    """

/// A directory of its own for files a config names, removed by `cleanUp`.
struct TempDir {
    let url: URL
    init(_ tag: String) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    var path: String { url.path }
    @discardableResult
    func write(_ name: String, _ text: String, mode: mode_t) throws -> String {
        let p = url.appendingPathComponent(name).path
        try text.write(toFile: p, atomically: false, encoding: .utf8)
        chmod(p, mode)
        return p
    }
    func cleanUp() { try? FileManager.default.removeItem(at: url) }
}

@Suite("IKE configuration")
struct IKEConfigTests {
    func errors(_ text: String, path: String = "bad.toml") -> [ConfigIssue] {
        do {
            _ = try ConfigLoader.parse(text, path: path)
            return []
        } catch let e as ConfigErrors {
            return e.issues
        } catch {
            return [ConfigIssue(file: "?", line: -1, message: "\(error)")]
        }
    }

    func load(_ path: String) -> Result<SluiceConfiguration, ConfigErrors> {
        do { return .success(try ConfigLoader.load(path: path)) } catch let e as ConfigErrors { return .failure(e) } catch {
            return .failure(ConfigErrors(issues: [ConfigIssue(file: "?", line: -1, message: "\(error)")]))
        }
    }

    func ts(_ text: String) -> TrafficSelectorSpec? { try? TrafficSelectorSpec(parsing: text) }

    @Test("the issue's full example parses to the values written")
    func fullExample() throws {
        let dir = try TempDir("ike-full")
        defer { dir.cleanUp() }
        try dir.write("gw-b.psk", "a PSK of more than sixteen bytes\n", mode: 0o600)
        let text = """
            [[connection]]
            name = "gw-b"
            local_addrs = ["192.0.2.1"]
            remote_addrs = ["192.0.2.2"]
            proposals = ["aes128gcm16-prfsha256-x25519", "aes128-sha256-modp2048"]
            local_id = "192.0.2.1"
            remote_id = "gw-b.example"
            auth = "psk"
            psk_file = "gw-b.psk"
            encap = true
            dpd_delay = 30
            rekey_time = 14400
            [[connection.child]]
            name = "net"
            local_ts = ["198.51.100.0/24", "10.0.0.0/8[tcp/80]"]
            remote_ts = ["203.0.113.0/24", "0.0.0.0/0[udp]", "192.0.2.128/25[tcp/1000-2000]", "10.9.0.0/16[47]"]
            esp_proposals = ["aes128gcm16", "aes128gcm16-x25519"]
            mode = "tunnel"
            start_action = "trap"
            dpd_action = "restart"
            rekey_time = 3600
            rekey_bytes = 1_000_000_000
            rekey_packets = 5000000
            life_time = 3960
            life_bytes = 2_000_000_000
            life_packets = 6000000
            replay_window = 4096
            mtu = 1400
            df = "clear"
            tfc_pad = 64

            [ike]
            retransmit_timeout = 2.5
            retransmit_base = 1.5
            retransmit_tries = 3
            """
        let path = try dir.write("sluice.toml", text, mode: 0o600)
        let cfg = try ConfigLoader.load(path: path)
        #expect(cfg.warnings.isEmpty, "\(cfg.warnings)")
        #expect(cfg.connections.count == 1)
        let c = try #require(cfg.connections.first)
        #expect(c.name == "gw-b" && c.line == 1)
        #expect(c.localAddrs == [IPAddress("192.0.2.1")!])
        #expect(c.remoteAddrs == [IPAddress("192.0.2.2")!])
        #expect(c.proposals == ["aes128gcm16-prfsha256-x25519", "aes128-sha256-modp2048"])
        #expect(c.localID == "192.0.2.1" && c.remoteID == "gw-b.example")
        #expect(c.auth == .psk(SecretBytes(Array("a PSK of more than sixteen bytes".utf8))), "the final newline is not part of the PSK")
        #expect(c.encap && c.dpdDelay == 30 && c.rekeyTime == 14400)
        let n = try #require(c.children.first)
        #expect(c.children.count == 1)
        #expect(n.name == "net" && n.line == 13)
        #expect(n.localTS == [TrafficSelectorSpec(prefix: IPPrefix("198.51.100.0/24")!),
                              TrafficSelectorSpec(prefix: IPPrefix("10.0.0.0/8")!, ipProtocol: 6, ports: 80...80)])
        #expect(n.remoteTS == [TrafficSelectorSpec(prefix: IPPrefix("203.0.113.0/24")!),
                               TrafficSelectorSpec(prefix: IPPrefix("0.0.0.0/0")!, ipProtocol: 17),
                               TrafficSelectorSpec(prefix: IPPrefix("192.0.2.128/25")!, ipProtocol: 6, ports: 1000...2000),
                               TrafficSelectorSpec(prefix: IPPrefix("10.9.0.0/16")!, ipProtocol: 47)])
        #expect(n.espProposals == ["aes128gcm16", "aes128gcm16-x25519"])
        #expect(n.mode == .tunnel && n.startAction == .trap && n.dpdAction == .restart)
        #expect(n.rekeyTime == 3600 && n.rekeyBytes == 1_000_000_000 && n.rekeyPackets == 5_000_000)
        #expect(n.lifeTime == 3960 && n.lifeBytes == 2_000_000_000 && n.lifePackets == 6_000_000)
        #expect(n.replayWindow == 4096 && n.mtu == 1400 && n.dfPolicy == .clear && n.tfcPadTo == 64)
        #expect(cfg.ike == IKESettings(retransmitTimeout: 2.5, retransmitBase: 1.5, retransmitTries: 3))
        #expect(cfg.ikeSettingLines == ["retransmit_timeout": 33, "retransmit_base": 34, "retransmit_tries": 35])
        #expect(cfg.ikeTableLine == 32)
        #expect(!cfg.warnings.contains { $0.message.contains("would do nothing") })
    }

    @Test("every default, as strongSwan's swanctl.conf and charon")
    func defaults() throws {
        let text = """
            [[connection]]
            name = "any"
            local_addrs = ["192.0.2.1", "2001:db8::1"]
            auth = "psk"
            psk = "sixteen byte psk"
            [[connection.child]]
            name = "host"
            """
        let cfg = try ConfigLoader.parse(text, path: "d.toml")
        let c = try #require(cfg.connections.first)
        #expect(c.remoteAddrs.isEmpty, "no remote_addrs: any peer")
        #expect(c.proposals == ["default"])
        #expect(c.localID == nil && c.remoteID == nil)
        #expect(!c.encap && c.dpdDelay == 0 && c.rekeyTime == 14400)
        let n = try #require(c.children.first)
        #expect(n.localTS.isEmpty && n.remoteTS.isEmpty, "dynamic: the connection's own addresses")
        #expect(n.espProposals == ["default"])
        #expect(n.mode == .tunnel && n.startAction == .none && n.dpdAction == .clear)
        #expect(n.rekeyTime == 3600 && n.rekeyBytes == 0 && n.rekeyPackets == 0)
        #expect(n.lifeTime == 3960 && n.lifeBytes == 0 && n.lifePackets == 0, "life_* = rekey_* + 10%")
        #expect(n.replayWindow == 1024 && n.mtu == 1500 && n.dfPolicy == .copy && n.tfcPadTo == 0)
        #expect(cfg.ike == IKESettings() && cfg.ike.retransmitTimeout == 4.0 && cfg.ike.retransmitBase == 1.8 && cfg.ike.retransmitTries == 5)
        #expect(cfg.ikeSettingLines.isEmpty && cfg.ikeTableLine == 0)
        #expect(!cfg.warnings.contains { $0.message.contains("would do nothing") }, "connections are something to do")

        // The hard limits follow their rekey values unless set; "%any" is the default spelled out.
        let derived = try ConfigLoader.parse(text.replacingOccurrences(of: "name = \"host\"", with: """
            name = "host"
            rekey_time = 1000
            rekey_bytes = 1000000
            rekey_packets = 0
            life_packets = 50
            """).replacingOccurrences(of: "auth = \"psk\"", with: "auth = \"psk\"\nremote_addrs = [\"%any\"]\nremote_id = \"%any\""), path: "d.toml")
        let d = try #require(derived.connections.first?.children.first)
        #expect(d.lifeTime == 1100 && d.lifeBytes == 1_100_000 && d.lifePackets == 50)
        #expect(derived.connections.first?.remoteAddrs == [] && derived.connections.first?.remoteID == nil)

        // A connection without children is fine; a file without connections has none.
        let bare = try ConfigLoader.parse(text.components(separatedBy: "[[connection.child]]")[0], path: "d.toml")
        #expect(bare.connections.first?.children.isEmpty == true)
        let none = try ConfigLoader.parse(goodSA, path: "d.toml")
        #expect(none.connections.isEmpty && none.ike == IKESettings())
    }

    @Test("children belong to the [[connection]] above them, in file order")
    func childrenByLine() throws {
        let text = ikeBase + """
            [[connection.child]]
            name = "net2"
            local_ts = ["198.51.100.0/24"]

            [[connection]]
            name = "gw-c"
            local_addrs = ["2001:db8::1"]
            remote_addrs = ["2001:db8::3"]
            auth = "psk"
            psk = "another sixteen byte psk"

            [[connection.child]]
            name = "v6"
            remote_ts = ["2001:db8:3::/48"]
            mode = "transport"
            """
        let cfg = try ConfigLoader.parse(text, path: "c.toml")
        #expect(cfg.connections.map(\.name) == ["gw-b", "gw-c"])
        #expect(cfg.connections.map { $0.children.map(\.name) } == [["net", "net2"], ["v6"]])
        #expect(cfg.connections[1].children[0].line == 23)
    }

    /// Each broken config: (what, replace this in ikeBase, with this, error line, message).
    static let corpus: [(String, String, String, Int, String)] = [
        ("unknown key", "name = \"gw-b\"", "name = \"gw-b\"\ndpd_dealy = 30", 3, "unknown key \"dpd_dealy\" in [[connection]] (did you mean \"dpd_delay\"?)"),
        ("unknown child key", "name = \"net\"", "name = \"net\"\nesp_proposal = [\"aes128gcm16\"]", 10,
         "unknown key \"esp_proposal\" in [[connection.child]] (did you mean \"esp_proposals\"?)"),
        ("no name", "name = \"gw-b\"\n", "", 1, "[[connection]] needs \"name\""),
        ("bad name", "name = \"gw-b\"", "name = \"gw b\"", 2, "name must be 1-64 letters, digits, '-', '_' or '.'"),
        ("no local_addrs", "local_addrs = [\"192.0.2.1\"]\n", "", 1, "[[connection]] needs \"local_addrs\""),
        ("local %any", "local_addrs = [\"192.0.2.1\"]", "local_addrs = [\"%any\"]", 3, "local_addrs must be literal addresses, not %any"),
        ("local host name", "local_addrs = [\"192.0.2.1\"]", "local_addrs = [\"gw-a.example\"]", 3,
         "local_addrs: \"gw-a.example\" is not an IPv4 or IPv6 address (host names and ranges are not supported)"),
        ("local empty", "local_addrs = [\"192.0.2.1\"]", "local_addrs = []", 3, "local_addrs = [] is empty: give at least one"),
        ("local not strings", "local_addrs = [\"192.0.2.1\"]", "local_addrs = [1]", 3, "local_addrs must hold strings, not an integer"),
        ("local not a list", "local_addrs = [\"192.0.2.1\"]", "local_addrs = true", 3, "local_addrs must be an array of strings, not a boolean"),
        ("local duplicate", "local_addrs = [\"192.0.2.1\"]", "local_addrs = [\"192.0.2.1\", \"192.0.2.1\"]", 3, "local_addrs lists 192.0.2.1 twice"),
        ("%any with others", "remote_addrs = [\"192.0.2.2\"]", "remote_addrs = [\"%any\", \"192.0.2.2\"]", 4, "%any stands alone: remote_addrs = [\"%any\"]"),
        ("remote family", "remote_addrs = [\"192.0.2.2\"]", "remote_addrs = [\"2001:db8::2\"]", 4,
         "remote_addrs (IPv6) and local_addrs (IPv4) share no address family"),
        ("bad proposal", "auth = \"psk\"", "proposals = [\"AES128-sha256\"]\nauth = \"psk\"", 5,
         "proposals: \"AES128-sha256\" is not a proposal like \"aes128gcm16-prfsha256-x25519\""),
        ("empty proposal", "auth = \"psk\"", "proposals = [\"aes128-sha256-modp2048\", \"\"]\nauth = \"psk\"", 5, "proposals: \"\" is not a proposal"),
        ("proposal shape", "auth = \"psk\"", "proposals = [\"aes128--sha256\"]\nauth = \"psk\"", 5, "proposals: \"aes128--sha256\" is not a proposal"),
        ("local_id with @", "auth = \"psk\"", "local_id = \"@gw-a.example\"\nauth = \"psk\"", 5,
         "local_id = \"@gw-a.example\" is not an IP address, a DN (CN=gw, O=Example), an FQDN (gw.example) or user@fqdn (write the FQDN without '@')"),
        ("local_id %any", "auth = \"psk\"", "local_id = \"%any\"\nauth = \"psk\"", 5, "local_id cannot be %any"),
        ("remote_id user@", "auth = \"psk\"", "remote_id = \"user@\"\nauth = \"psk\"", 5, "remote_id = \"user@\" is not an IP address"),
        ("remote_id label", "auth = \"psk\"", "remote_id = \"gw-.example\"\nauth = \"psk\"", 5, "remote_id = \"gw-.example\" is not an IP address"),
        ("remote_id DN type", "auth = \"psk\"", "remote_id = \"CN=gw-b, XY=Example\"\nauth = \"psk\"", 5,
         "remote_id = \"CN=gw-b, XY=Example\" is not a distinguished name like \"CN=gw-a, O=Example\": unknown attribute type \"XY\""),
        ("remote_id DN quote", "auth = \"psk\"", "remote_id = \"CN=\\\"gw-b\"\nauth = \"psk\"", 5,
         "ends inside a quoted value or an escape"),
        ("local_id DN pattern", "auth = \"psk\"", "local_id = \"CN=*, O=Example\"\nauth = \"psk\"", 5,
         "local_id = \"CN=*, O=Example\" has a '*' value: only remote_id may be a pattern"),
        ("auth word", "auth = \"psk\"", "auth = \"eap\"", 5, "auth = \"eap\" is not one of: psk, pubkey"),
        ("psk missing", "psk = \"0x00112233445566778899aabbccddeeff\"\n", "", 5, "auth = \"psk\" needs psk_file = \"PATH\" (mode 0600) or psk = \"...\""),
        ("psk and psk_file", "psk = \"0x00112233445566778899aabbccddeeff\"", "psk = \"0x00112233445566778899aabbccddeeff\"\npsk_file = \"x.psk\"", 7,
         "give either psk or psk_file, not both"),
        ("psk under pubkey", "auth = \"psk\"", "auth = \"pubkey\"", 6, "psk goes with auth = \"psk\", not \"pubkey\""),
        ("psk without auth", "auth = \"psk\"\n", "", 5, "psk needs auth = \"psk\" (auth is \"pubkey\" by default, as in strongSwan)"),
        ("no auth at all", "auth = \"psk\"\npsk = \"0x00112233445566778899aabbccddeeff\"\n", "", 1, "[[connection]] needs \"auth\": \"psk\" with psk_file"),
        ("cert under psk", "auth = \"psk\"", "auth = \"psk\"\nlocal_cert = \"a.pem\"", 6, "local_cert goes with auth = \"pubkey\", not \"psk\""),
        ("psk not hex", "psk = \"0x00112233445566778899aabbccddeeff\"", "psk = \"0x0011zz\"", 6, "psk starts with 0x but is not hex digits (after 0x)"),
        ("psk not base64", "psk = \"0x00112233445566778899aabbccddeeff\"", "psk = \"0sAB*C\"", 6, "psk starts with 0s but is not base64 (after 0s)"),
        ("psk empty", "psk = \"0x00112233445566778899aabbccddeeff\"", "psk = \"\"", 6, "psk is empty"),
        ("dpd_delay range", "auth = \"psk\"", "dpd_delay = -1\nauth = \"psk\"", 5, "dpd_delay = -1 is out of range 0...2147483647"),
        ("rekey_time type", "auth = \"psk\"", "rekey_time = \"4h\"\nauth = \"psk\"", 5, "rekey_time must be an integer, not a string"),
        ("encap type", "auth = \"psk\"", "encap = \"yes\"\nauth = \"psk\"", 5, "encap must be true or false, not a string"),
        ("child without name", "name = \"net\"\n", "", 8, "[[connection.child]] needs \"name\""),
        ("bad TS prefix", "local_ts = [\"198.51.100.0/24\"]", "local_ts = [\"198.51.100.0/33\"]", 10,
         "local_ts: \"198.51.100.0/33\" is not an address or prefix like 198.51.100.0/24"),
        ("ports with icmp", "local_ts = [\"198.51.100.0/24\"]", "local_ts = [\"198.51.100.0/24[icmp/8]\"]", 10,
         "local_ts: \"198.51.100.0/24[icmp/8]\": ports need tcp, udp or sctp"),
        ("TS families", "remote_ts = [\"203.0.113.0/24\"]", "remote_ts = [\"2001:db8::/32\"]", 11,
         "local_ts (IPv4) and remote_ts (IPv6) share no address family, so no packet could match"),
        ("dynamic TS families", "local_ts = [\"198.51.100.0/24\"]\nremote_ts = [\"203.0.113.0/24\"]", "remote_ts = [\"2001:db8::/32\"]", 10,
         "local_ts (by default local_addrs: IPv4) and remote_ts (IPv6) share no address family"),
        ("mode", "name = \"net\"", "name = \"net\"\nmode = \"tunel\"", 10, "mode = \"tunel\" is not one of: transport, tunnel"),
        ("start_action", "name = \"net\"", "name = \"net\"\nstart_action = \"route\"", 10, "start_action = \"route\" is not one of: none, start, trap"),
        ("dpd_action", "name = \"net\"", "name = \"net\"\ndpd_action = \"hold\"", 10, "dpd_action = \"hold\" is not one of: clear, restart, trap"),
        ("life_time below rekey_time", "name = \"net\"", "name = \"net\"\nlife_time = 3000", 10,
         "life_time = 3000 must be above rekey_time = 3600: the CHILD_SA would end before it is rekeyed"),
        ("life_bytes below rekey_bytes", "name = \"net\"", "name = \"net\"\nrekey_bytes = 1000\nlife_bytes = 1000", 11, "life_bytes = 1000 must be above rekey_bytes = 1000"),
        ("rekey_packets negative", "name = \"net\"", "name = \"net\"\nrekey_packets = -5", 10, "rekey_packets = -5 is out of range"),
        ("replay_window", "name = \"net\"", "name = \"net\"\nreplay_window = 70000", 10, "replay_window = 70000 is out of range 0...65536"),
        ("mtu", "name = \"net\"", "name = \"net\"\nmtu = 100", 10, "mtu = 100 is out of range 576...65535"),
        ("df", "name = \"net\"", "name = \"net\"\ndf = \"keep\"", 10, "df = \"keep\" is not one of: clear, copy, set"),
        ("tfc_pad in transport", "name = \"net\"", "name = \"net\"\nmode = \"transport\"\ntfc_pad = 16", 11, "tfc_pad needs tunnel mode"),
        ("esp_proposals", "name = \"net\"", "name = \"net\"\nesp_proposals = [\"aes128gcm16\", \"AES\"]", 10, "esp_proposals: \"AES\" is not a proposal"),
        ("child name taken by an SA", "name = \"net\"", "name = \"a-to-b\"", 9, "@SA@"),
        // Parsed as the agent will: algorithms are named, not only the shape checked.
        ("unknown algorithm", "auth = \"psk\"", "proposals = [\"aes128-sha256-modp2049\"]\nauth = \"psk\"", 5,
         "proposals: unknown algorithm 'modp2049' in 'aes128-sha256-modp2049'"),
        ("unsupported algorithm", "auth = \"psk\"", "proposals = [\"3des-sha1-modp1024\"]\nauth = \"psk\"", 5, "not supported"),
        ("ESP integrity the data plane lacks", "name = \"net\"", "name = \"net\"\nesp_proposals = [\"aes128-sha512\"]", 10, "esp_proposals: "),
    ]

    @Test("broken connections and children: one FILE:LINE error each", arguments: corpus.indices)
    func broken(_ i: Int) {
        let (what, from, to, line, message) = Self.corpus[i]
        #expect(ikeBase.contains(from), "\(what): corpus entry no longer matches ikeBase")
        var text = ikeBase.replacingOccurrences(of: from, with: to)
        var expected = message
        var expectedLine = line
        if message == "@SA@" {
            // The SAs go after the connection, so the connection's lines stay put.
            text += "\n" + goodSA
            let saLine = text.components(separatedBy: "\n").firstIndex(of: "[[sa]]")! + 1
            expected = "child name \"a-to-b\" is already used by the [[sa]] at line \(saLine)"
            expectedLine = line
        }
        let e = errors(text).filter { !$0.isWarning }
        #expect(e.count == 1, "\(what): \(e.map(\.description))")
        #expect(e.first?.line == expectedLine, "\(what): \(e.map(\.description))")
        #expect(e.first?.message.contains(expected) == true, "\(what): \(e.map(\.description))")
        #expect(e.first?.description.hasPrefix("bad.toml:\(expectedLine): ") == true)
    }

    /// Whole files: (what, text, error line, message).
    static let fileCorpus: [(String, String, Int, String)] = [
        ("child before any connection", "[[connection.child]]\nname = \"net\"\n\n" + ikeBase, 1,
         "[[connection.child]] comes before any [[connection]]: a child belongs to the [[connection]] above it"),
        ("same connection name", ikeBase + ikeBase.replacingOccurrences(of: "name = \"net\"", with: "name = \"net2\""), 13,
         "connection name \"gw-b\" is already used at line 1"),
        ("child name in two connections", ikeBase + ikeBase.replacingOccurrences(of: "name = \"gw-b\"", with: "name = \"gw-c\""), 20,
         "child name \"net\" is already used at line 8"),
        ("connection named as an SA", ikeBase.replacingOccurrences(of: "name = \"gw-b\"", with: "name = \"b-to-a\"") + goodSA, 2,
         "connection name \"b-to-a\" is already used by the [[sa]] at line 22"),
        ("[connection]", "[connection]\nname = \"x\"\n", 1, "unknown table [connection] (write [[connection]]: there can be several)"),
        ("start with %any", ikeBase.replacingOccurrences(of: "[\"192.0.2.2\"]", with: "[\"%any\"]")
            .replacingOccurrences(of: "name = \"net\"", with: "name = \"net\"\nstart_action = \"trap\""), 10,
         "start_action = \"trap\" needs remote_addrs: with %any there is no peer to start it with"),
        ("[connection.child]", "[connection.child]\nname = \"x\"\n", 1, "unknown table [connection.child] (write [[connection.child]]: there can be several)"),
        ("[connection.child] after [[connection.child]]", ikeBase + "[connection.child]\nname = \"x\"\n", 12,
         "[connection.child] clashes with [[connection.child]] defined earlier (write [[connection.child]] for one more)"),
        ("[[ike]]", ikeBase + "[[ike]]\nretransmit_tries = 3\n", 12, "unknown table [[ike]] (write [ike]: there is one)"),
        ("[ike] unknown key", ikeBase + "[ike]\nretransmit_limit = 3\n", 13, "unknown key \"retransmit_limit\" in [ike]"),
        ("[ike] timeout zero", ikeBase + "[ike]\nretransmit_timeout = 0.0\n", 13, "retransmit_timeout = 0.0 is out of range 0.1...600.0"),
        ("[ike] timeout string", ikeBase + "[ike]\nretransmit_timeout = \"4s\"\n", 13, "retransmit_timeout must be a number, not a string"),
        ("[ike] base below 1", ikeBase + "[ike]\nretransmit_base = 0.5\n", 13, "retransmit_base = 0.5 is out of range 1.0...10.0"),
        ("[ike] tries as float", ikeBase + "[ike]\nretransmit_tries = 1.5\n", 13, "retransmit_tries must be an integer, not a float"),
        ("[ike] too many tries", ikeBase + "[ike]\n\nretransmit_tries = 31\n", 14, "retransmit_tries = 31 is out of range 0...30"),
        ("bad float", ikeBase + "[ike]\nretransmit_base = 1.\n", 13, "\"1.\" is not a value"),
        ("[ike] negative keep_alive", ikeBase + "[ike]\nkeep_alive = -1\n", 13, "keep_alive = -1.0 is out of range 0.0...3600.0"),
        ("[ike] hold_packets string", ikeBase + "[ike]\nhold_packets = \"32\"\n", 13, "hold_packets must be an integer, not a string"),
        ("[ike] hold_bytes too big", ikeBase + "[ike]\n\nhold_bytes = 1000000000\n", 14, "hold_bytes = 1000000000 is out of range 0...16777216"),
        ("[ike] hold_packets_total negative", ikeBase + "[ike]\nhold_packets_total = -1\n", 13, "hold_packets_total = -1 is out of range 0...65536"),
        ("[ike] hold_timeout zero", ikeBase + "[ike]\nhold_timeout = 0\n", 13, "hold_timeout = 0.0 is out of range 0.1...300.0"),
        ("fragmentation typo", ikeBase.replacingOccurrences(of: "auth = \"psk\"", with: "auth = \"psk\"\nfragmentation = \"on\""), 6,
         "fragmentation = \"on\" is not one of: accept, force, no, yes"),
        ("fragmentation as bool", ikeBase.replacingOccurrences(of: "auth = \"psk\"", with: "auth = \"psk\"\nfragmentation = true"), 6,
         "fragmentation must be a string, not a boolean"),
        ("[ike] fragment_size too small", ikeBase + "[ike]\nfragment_size = 500\n", 13,
         "fragment_size = 500 is below 576, the smallest IPv4 datagram every host takes; 0 picks 576 for IPv4 and 1280 for IPv6"),
        ("[ike] fragment_size too big", ikeBase + "[ike]\nfragment_size = 70000\n", 13, "fragment_size = 70000 is out of range 0...65535"),
        ("[ike] max_packet too small", ikeBase + "[ike]\nmax_packet = 1000\n", 13, "max_packet = 1000 is out of range 1280...65535"),
    ]

    @Test func fragmentationDefaultsToYesAndTakesSwanctlsValues() throws {
        let d = try ConfigLoader.parse(ikeBase, path: "d.toml")
        #expect(d.connections.first?.fragmentation == .yes && d.ike.fragmentSize == 1280 && d.ike.maxPacket == 10000)
        for (value, expected) in [("yes", IKEFragmentation.yes), ("force", .yes), ("accept", .accept), ("no", .no)] {
            let text = ikeBase.replacingOccurrences(of: "auth = \"psk\"", with: "auth = \"psk\"\nfragmentation = \"\(value)\"")
            #expect(try ConfigLoader.parse(text, path: "f.toml").connections.first?.fragmentation == expected, "\(value)")
        }
        let s = try ConfigLoader.parse(ikeBase + "[ike]\nfragment_size = 0\nmax_packet = 20000\n", path: "s.toml").ike
        #expect(s.fragmentSize == 0 && s.maxPacket == 20000)
    }

    @Test func keepAliveAndHoldLimitsHaveStrongSwansDefaultsAndCanBeSet() throws {
        let defaults = try ConfigLoader.parse(ikeBase, path: "d.toml").ike
        #expect(defaults.keepAlive == 20 && defaults.holdPackets == 32 && defaults.holdBytes == 65536)
        #expect(defaults.holdPacketsTotal == 512 && defaults.holdTimeout == 10)
        let set = try ConfigLoader.parse(ikeBase + "[ike]\nkeep_alive = 0\nhold_packets = 4\nhold_bytes = 9000\nhold_packets_total = 64\nhold_timeout = 2.5\n",
                                         path: "s.toml")
        #expect(set.ike.keepAlive == 0 && set.ike.holdPackets == 4 && set.ike.holdBytes == 9000)
        #expect(set.ike.holdPacketsTotal == 64 && set.ike.holdTimeout == 2.5)
        #expect(set.ikeSettingLines["hold_timeout"] == 17)
    }

    @Test("broken files: one FILE:LINE error each", arguments: fileCorpus.indices)
    func brokenFiles(_ i: Int) {
        let (what, text, line, message) = Self.fileCorpus[i]
        let e = errors(text).filter { !$0.isWarning }
        #expect(e.count == 1, "\(what): \(e.map(\.description))")
        #expect(e.first?.line == line, "\(what): \(e.map(\.description))")
        #expect(e.first?.message.contains(message) == true, "\(what): \(e.map(\.description))")
    }

    @Test("every problem is reported at once, in the connection and its children")
    func manyErrors() {
        let text = ikeBase.replacingOccurrences(of: "auth = \"psk\"", with: "auth = \"psk\"\ndpd_delay = -1")
            .replacingOccurrences(of: "remote_ts = [\"203.0.113.0/24\"]", with: "remote_ts = [\"203.0.113.0/24[tcp/9-1]\", \"x\"]\nmtu = 1")
        let e = errors(text).filter { !$0.isWarning }
        #expect(e.map(\.line) == [6, 12, 12, 13], "\(e.map(\.description))")
        #expect(e[1].message == "remote_ts: \"203.0.113.0/24[tcp/9-1]\": port range 9-1 runs backwards")
        #expect(e[2].message == "remote_ts: \"x\" is not an address or prefix like 198.51.100.0/24")
    }

    @Test("transport mode keeps to the family of local_addrs; tunnel mode mixes")
    func transportFamilies() throws {
        let v6 = ikeBase.replacingOccurrences(of: "local_ts = [\"198.51.100.0/24\"]\nremote_ts = [\"203.0.113.0/24\"]",
                                              with: "local_ts = [\"2001:db8:1::/48\"]\nremote_ts = [\"2001:db8:2::/48\"]")
        let cfg = try ConfigLoader.parse(v6, path: "t.toml")
        #expect(cfg.connections.first?.children.first?.remoteTS.first?.prefix == IPPrefix("2001:db8:2::/48"), "IPv6 inside an IPv4 tunnel")
        let e = errors(v6.replacingOccurrences(of: "name = \"net\"", with: "name = \"net\"\nmode = \"transport\"")).filter { !$0.isWarning }
        #expect(e.map(\.description) == [
            "bad.toml:11: local_ts \"2001:db8:1::/48\" is not of the family of local_addrs (IPv4): only tunnel mode carries the other family",
            "bad.toml:12: remote_ts \"2001:db8:2::/48\" is not of the family of local_addrs (IPv4): only tunnel mode carries the other family",
        ])
    }

    @Test("warnings: a short PSK (strongSwan accepts it) and host bits in a selector")
    func warnings() throws {
        let short = ikeBase.replacingOccurrences(of: "psk = \"0x00112233445566778899aabbccddeeff\"", with: "psk = \"0x0011223344\"")
            .replacingOccurrences(of: "local_ts = [\"198.51.100.0/24\"]", with: "local_ts = [\"198.51.100.7/24\"]")
        let cfg = try ConfigLoader.parse(short, path: "w.toml")
        #expect(cfg.warnings.map(\.description) == [
            "w.toml:6: warning: psk is only 5 bytes: strongSwan accepts it, but a short PSK can be guessed offline from one captured IKE_AUTH; use 16 or more random bytes",
            "w.toml:10: warning: local_ts: \"198.51.100.7/24\" has host bits set; it means 198.51.100.0/24",
        ])
        #expect(cfg.connections.first?.auth == .psk(SecretBytes([0x00, 0x11, 0x22, 0x33, 0x44])))
        #expect(cfg.connections.first?.children.first?.localTS.first?.prefix == IPPrefix("198.51.100.0/24"))
        let sixteen = try ConfigLoader.parse(ikeBase, path: "w.toml")
        #expect(sixteen.warnings.isEmpty, "\(sixteen.warnings)")
    }

    @Test("psk encodings as strongSwan's: 0x hex, 0s base64, otherwise the text itself")
    func pskEncodings() throws {
        func psk(_ value: String) throws -> [UInt8]? {
            let cfg = try ConfigLoader.parse(ikeBase.replacingOccurrences(of: "psk = \"0x00112233445566778899aabbccddeeff\"", with: "psk = \"\(value)\""), path: "p.toml")
            guard case let .psk(s)? = cfg.connections.first?.auth else { return nil }
            return s.bytes.map { $0 } // a copy: `s` wipes its own buffer when `cfg` goes
        }
        #expect(try psk("0x00112233445566778899aabbccddeeff") == Array(stride(from: 0, through: 0xff, by: 0x11)).map(UInt8.init))
        #expect(try psk("0sAAECAwQFBgcICQoLDA0ODw==") == Array(0...15).map(UInt8.init))
        #expect(try psk("0sAAECAwQFBgcICQoLDA0ODxA") == Array(0...16).map(UInt8.init), "padding is optional")
        #expect(try psk("correct horse battery staple") == Array("correct horse battery staple".utf8))
        #expect(PSKText.base64(Array("A".utf8)[...]) == nil, "one sextet is no byte")
        #expect(PSKText.base64(Array("QQ===".utf8)[...]) == nil)
    }

    @Test("PSKs never appear in errors, warnings or descriptions")
    func pskNeverShown() throws {
        let secret = "0xdeadbeefcafef00d0123456789abcdefzz"
        let bad = errors(ikeBase.replacingOccurrences(of: "0x00112233445566778899aabbccddeeff", with: secret))
        #expect(!bad.isEmpty)
        #expect(!bad.map(\.description).joined().contains("deadbeef"))
        let shortText = "hunter2"
        let cfg = try ConfigLoader.parse(ikeBase.replacingOccurrences(of: "0x00112233445566778899aabbccddeeff", with: shortText), path: "p.toml")
        #expect(!cfg.warnings.map(\.description).joined().contains(shortText))
        let conn = try #require(cfg.connections.first)
        for text in [String(describing: conn), String(reflecting: conn), "\(conn.auth)"] {
            #expect(!text.contains(shortText) && text.contains("redacted"), "\(text)")
        }
    }

    @Test("psk_file: relative to the config, 0600 only, the final newline dropped")
    func pskFile() throws {
        let dir = try TempDir("ike-psk")
        defer { dir.cleanUp() }
        let text = ikeBase.replacingOccurrences(of: "psk = \"0x00112233445566778899aabbccddeeff\"", with: "psk_file = \"gw-b.psk\"")
        let config = try dir.write("sluice.toml", text, mode: 0o600)
        let file = try dir.write("gw-b.psk", "0x000102030405060708090a0b0c0d0e0f\r\n", mode: 0o644)

        guard case let .failure(open) = load(config) else { Issue.record("a 0644 psk_file was accepted"); return }
        #expect(open.issues.map(\.description) == ["\(config):6: psk_file \(file) is readable by group or others (mode 644); chmod 600 it"])
        chmod(file, 0o640)
        guard case let .failure(group) = load(config) else { Issue.record("a 0640 psk_file was accepted"); return }
        #expect(group.issues.first?.message.contains("(mode 640)") == true)

        chmod(file, 0o600)
        let cfg = try ConfigLoader.load(path: config)
        #expect(cfg.connections.first?.auth == .psk(SecretBytes(Array(0...15).map(UInt8.init))))
        #expect(cfg.warnings.isEmpty)

        try dir.write("gw-b.psk", "\n", mode: 0o600)
        guard case let .failure(empty) = load(config) else { Issue.record("an empty psk_file was accepted"); return }
        #expect(empty.issues.map(\.message) == ["psk_file \(file) is empty"])

        try dir.write("gw-b.psk", "0xnothex\n", mode: 0o600)
        guard case let .failure(hex) = load(config) else { Issue.record("bad hex was accepted"); return }
        #expect(hex.issues.map(\.message) == ["psk_file \(file) starts with 0x but is not hex digits (after 0x)"])

        let missing = try dir.write("sluice.toml", text.replacingOccurrences(of: "gw-b.psk", with: "none.psk"), mode: 0o600)
        guard case let .failure(gone) = load(missing) else { Issue.record("a missing psk_file was accepted"); return }
        #expect(gone.issues.map(\.description) == ["\(config):6: psk_file \(dir.path)/none.psk: No such file or directory"])

        // Unreadable even for root: a directory passes stat and the mode check, then fails to read.
        let sub = dir.url.appendingPathComponent("sub").path
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false)
        chmod(sub, 0o700)
        try dir.write("sluice.toml", text.replacingOccurrences(of: "gw-b.psk", with: sub), mode: 0o600)
        guard case let .failure(unreadable) = load(config) else { Issue.record("a directory was accepted as psk_file"); return }
        #expect(unreadable.issues.map(\.message) == ["psk_file \(sub) cannot be read"])
    }

    @Test("an inline psk in a config others can read is a warning")
    func inlinePSKInOpenConfig() throws {
        let dir = try TempDir("ike-inline")
        defer { dir.cleanUp() }
        let config = try dir.write("sluice.toml", ikeBase, mode: 0o644)
        let cfg = try ConfigLoader.load(path: config)
        #expect(cfg.warnings.map(\.description) == [
            "\(config):6: warning: psk is inline in a config that group or others can read (mode 644): use psk_file, or chmod 600 the config",
        ])
        chmod(config, 0o600)
        #expect(try ConfigLoader.load(path: config).warnings.isEmpty)
    }

    @Test("auth = pubkey: the certificate, key and CAs must exist; the key 0600 only")
    func pubkey() throws {
        let dir = try TempDir("ike-pubkey")
        defer { dir.cleanUp() }
        try dir.write("gw-a.pem", "-----BEGIN CERTIFICATE-----\n", mode: 0o644)
        try dir.write("gw-a.key", "-----BEGIN PRIVATE KEY-----\n", mode: 0o600)
        try dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\n", mode: 0o644)
        let auth = "auth = \"pubkey\"\nlocal_cert = \"gw-a.pem\"\nlocal_key = \"gw-a.key\"\nca_certs = [\"ca.pem\", \"\(dir.path)/ca.pem\"]"
        let text = ikeBase.replacingOccurrences(of: "auth = \"psk\"\npsk = \"0x00112233445566778899aabbccddeeff\"", with: auth)
        let config = try dir.write("sluice.toml", text, mode: 0o600)
        let cfg = try ConfigLoader.load(path: config)
        #expect(cfg.connections.first?.auth == .pubkey(certificate: "\(dir.path)/gw-a.pem", privateKey: "\(dir.path)/gw-a.key",
                                                       caCertificates: ["\(dir.path)/ca.pem", "\(dir.path)/ca.pem"]))
        // Without auth, pubkey is strongSwan's default.
        try dir.write("sluice.toml", text.replacingOccurrences(of: "auth = \"pubkey\"\n", with: ""), mode: 0o600)
        #expect(try ConfigLoader.load(path: config).connections.first?.auth == cfg.connections.first?.auth)

        try dir.write("open.key", "k", mode: 0o644)
        try FileManager.default.createDirectory(atPath: dir.path + "/cadir", withIntermediateDirectories: false)
        let cases: [(String, String, String, [String])] = [
            ("missing certificate", "local_cert = \"gw-a.pem\"", "local_cert = \"x.pem\"",
             ["\(config):6: local_cert \(dir.path)/x.pem: No such file or directory"]),
            ("key for all to read", "local_key = \"gw-a.key\"", "local_key = \"open.key\"",
             ["\(config):7: local_key \(dir.path)/open.key is readable by group or others (mode 644); chmod 600 it"]),
            ("a CA that is a directory", "ca_certs = [\"ca.pem\"", "ca_certs = [\"cadir\"", ["\(config):8: ca_certs \(dir.path)/cadir is not a regular file"]),
            ("no CAs", "\nca_certs = [\"ca.pem\", \"\(dir.path)/ca.pem\"]", "",
             ["\(config):5: auth = \"pubkey\" needs ca_certs = [\"PATH\", ...] to verify the peer"]),
            ("no key", "\nlocal_key = \"gw-a.key\"", "", ["\(config):5: auth = \"pubkey\" needs local_key = \"PATH\""]),
        ]
        for (what, from, to, expected) in cases {
            #expect(text.contains(from), "\(what)")
            try dir.write("sluice.toml", text.replacingOccurrences(of: from, with: to), mode: 0o600)
            guard case let .failure(e) = load(config) else { Issue.record("\(what): accepted"); continue }
            #expect(e.issues.map(\.description) == expected, "\(what)")
        }
    }

    @Test("traffic selectors: swanctl's PREFIX[PROTO/PORT] forms")
    func selectorSyntax() throws {
        let good: [(String, TrafficSelectorSpec)] = [
            ("10.0.0.0/8", TrafficSelectorSpec(prefix: IPPrefix("10.0.0.0/8")!)),
            ("192.0.2.7", TrafficSelectorSpec(prefix: IPPrefix("192.0.2.7/32")!)),
            ("2001:db8::/32[udp]", TrafficSelectorSpec(prefix: IPPrefix("2001:db8::/32")!, ipProtocol: 17)),
            ("10.0.0.0/8[tcp/80]", TrafficSelectorSpec(prefix: IPPrefix("10.0.0.0/8")!, ipProtocol: 6, ports: 80...80)),
            ("0.0.0.0/0[tcp/1000-2000]", TrafficSelectorSpec(prefix: IPPrefix("0.0.0.0/0")!, ipProtocol: 6, ports: 1000...2000)),
            ("::/0[sctp/0-65535]", TrafficSelectorSpec(prefix: IPPrefix("::/0")!, ipProtocol: 132, ports: 0...65535)),
            ("10.0.0.0/8[icmpv6]", TrafficSelectorSpec(prefix: IPPrefix("10.0.0.0/8")!, ipProtocol: 58)),
            ("10.0.0.0/8[ipv6-icmp]", TrafficSelectorSpec(prefix: IPPrefix("10.0.0.0/8")!, ipProtocol: 58)),
            ("10.0.0.0/8[50]", TrafficSelectorSpec(prefix: IPPrefix("10.0.0.0/8")!, ipProtocol: 50)),
            ("10.0.0.0/8[17/53]", TrafficSelectorSpec(prefix: IPPrefix("10.0.0.0/8")!, ipProtocol: 17, ports: 53...53)),
        ]
        for (text, spec) in good {
            #expect(ts(text) == spec, "\(text)")
        }
        #expect(ts("10.0.0.0/8[tcp/1000-2000]")?.description == "10.0.0.0/8[tcp/1000-2000]")
        #expect(ts("10.0.0.0/8[6/80]")?.description == "10.0.0.0/8[tcp/80]")
        #expect(ts("2001:db8::/32[icmpv6]")?.description == "2001:db8::/32[ipv6-icmp]")
        #expect(ts("10.0.0.0/8[99]")?.description == "10.0.0.0/8[99]")

        let bad: [(String, String)] = [
            ("[udp]", "\"[udp]\" has no prefix: write one before the '[', e.g. \"0.0.0.0/0[udp]\""),
            ("dynamic[tcp/80]", "\"dynamic[tcp/80]\": dynamic is not supported; leave the key out for the connection's own address"),
            ("10.0.0.1-10.0.0.9", "\"10.0.0.1-10.0.0.9\": address ranges are not supported; write a prefix"),
            ("10.0.0.0/8[tcp", "\"10.0.0.0/8[tcp\" must end in one [PROTO], [PROTO/PORT] or [PROTO/LOW-HIGH]"),
            ("10.0.0.0/8[tcp]x", "must end in one [PROTO]"),
            ("10.0.0.0/8[tcp/80]]", "must end in one [PROTO]"),
            ("10.0.0.0/8[tcp/80/90]", "\"10.0.0.0/8[tcp/80/90]\": write [PROTO], [PROTO/PORT] or [PROTO/LOW-HIGH]"),
            ("10.0.0.0/8[tpc]", "\"10.0.0.0/8[tpc]\": \"tpc\" is not a protocol (tcp, udp, sctp, icmp, ipv6-icmp, esp, gre or 1-255)"),
            ("10.0.0.0/8[256]", "\"256\" is not a protocol"),
            ("10.0.0.0/8[0]", "\"10.0.0.0/8[0]\": protocol 0 means any; leave the [...] out"),
            ("10.0.0.0/8[]", "\"\" is not a protocol"),
            ("10.0.0.0/8[udp/65536]", "\"10.0.0.0/8[udp/65536]\": \"65536\" is not a port (0-65535) or a range like 1000-2000"),
            ("10.0.0.0/8[udp/]", "\"\" is not a port"),
            ("10.0.0.0/8[udp/1-2-3]", "\"1-2-3\" is not a port"),
            ("10.0.0.0/8[udp/http]", "\"http\" is not a port"),
            ("10.0.0.0/8[udp/90-80]", "port range 90-80 runs backwards"),
            ("10.0.0.0/8[esp/80]", "ports need tcp, udp or sctp"),
            ("10.0.0.0/8[icmp/8]", "ports need tcp, udp or sctp"),
            ("10.0.0.0/33", "\"10.0.0.0/33\" is not an address or prefix like 198.51.100.0/24"),
            ("gw.example", "\"gw.example\" is not an address or prefix"),
            ("", "has no prefix"),
        ]
        for (text, message) in bad {
            do {
                let spec = try TrafficSelectorSpec(parsing: text)
                Issue.record("\(text) parsed as \(spec)")
            } catch {
                #expect(error.message.contains(message), "\(text): \(error.message)")
            }
        }
    }

    @Test("TOML floats: decimal with fraction and/or exponent, on the right line")
    func tomlFloats() throws {
        let doc = try TOMLParser.parse("[t]\na = 1.8\nb = -0.5\n\nc = 4e0\nd = 1_000.000_1\ne = 6.02E+23\nf = +0.0\ng = [1.5, 2, -3e-2]\nh = 1e-400 # underflows to 0\ni = 7\n")
        let t = try #require(doc.tables["t"])
        #expect(t["a"]?.value == .float(1.8) && t["a"]?.line == 2)
        #expect(t["b"]?.value == .float(-0.5))
        #expect(t["c"]?.value == .float(4) && t["c"]?.line == 5)
        #expect(t["d"]?.value == .float(1000.0001))
        #expect(t["e"]?.value == .float(6.02e23))
        #expect(t["f"]?.value == .float(0))
        #expect(t["g"]?.value == .array([.float(1.5), .integer(2), .float(-0.03)]))
        #expect(t["h"]?.value == .float(0))
        #expect(t["i"]?.value == .integer(7), "integers stay integers")
        #expect(TOMLValue.float(1).typeName == "a float")

        let bad = ["01.5", "00.5", ".5", "5.", "1._5", "1_.5", "1.5_", "1__0.5", "1e", "1e+", "1.5.2", "1.5e3.1", "e5",
                   "inf", "nan", "+inf", "1.5f", "0x1.8", "1,5"]
        for word in bad {
            do {
                let doc = try TOMLParser.parse("[t]\n\nx = \(word)\n")
                Issue.record("\(word) parsed as \(String(describing: doc.tables["t"]?["x"]?.value))")
            } catch {
                #expect(error.line == 3, "\(word): \(error)")
            }
        }
        do {
            _ = try TOMLParser.parse("[t]\nx = 1e999\n")
            Issue.record("1e999 parsed")
        } catch {
            #expect(error == TOMLError(line: 2, message: "1e999 is too large for a float"))
        }
    }

    @Test("TOML headers: dotted names stay flat; dotted keys are still refused")
    func tomlDottedHeaders() throws {
        let doc = try TOMLParser.parse("[[a]]\nx = 1\n[[ a . b ]]\ny = 2\n[[\"a\".b]]\n[c.d]\nz = 3\n")
        #expect(doc.arrays["a"]?.count == 1)
        #expect(doc.arrays["a.b"]?.map(\.line) == [3, 5])
        #expect(doc.arrays["a.b"]?.first?["y"]?.value == .integer(2))
        #expect(doc.tables["c.d"]?["z"]?.line == 7)
        for (text, line, message) in [("[[a.]]\n", 1, "expected a key, found \"]\""), ("[a..b]\n", 1, "expected a key, found \".\""),
                                      ("[t]\n\na.b = 1\n", 3, "dotted keys are not supported; use a [table] header")] {
            do {
                _ = try TOMLParser.parse(text)
                Issue.record("\(text) parsed")
            } catch {
                #expect(error == TOMLError(line: line, message: message), "\(text)")
            }
        }
    }

    @Test("restartRequired: a changed [ike] needs a restart; changed connections do not")
    func restart() throws {
        let running = try ConfigLoader.parse(ikeBase + "[ike]\nretransmit_tries = 5\n", path: "old.toml")
        #expect(try ConfigLoader.parse(ikeBase, path: "new.toml").restartRequired(comparedTo: running).isEmpty, "an explicit default is no change")
        let moved = ikeBase.replacingOccurrences(of: "192.0.2.2", with: "192.0.2.3").replacingOccurrences(of: "name = \"net\"", with: "name = \"net\"\nmode = \"transport\"")
            + "[[connection.child]]\nname = \"more\"\n"
        #expect(try ConfigLoader.parse(moved, path: "new.toml").restartRequired(comparedTo: running).isEmpty)

        let next = try ConfigLoader.parse(ikeBase + "[ike]\nretransmit_timeout = 2\n\nretransmit_base = 2.5\n", path: "new.toml")
        #expect(next.restartRequired(comparedTo: running).map(\.description) == [
            "new.toml:13: warning: [ike] retransmit_timeout changed from 4.0 to 2.0: needs a restart (systemctl restart sluice)",
            "new.toml:15: warning: [ike] retransmit_base changed from 1.8 to 2.5: needs a restart (systemctl restart sluice)",
        ])
        // Removed keys are located at [ike], or at 0 without one.
        let header = try ConfigLoader.parse(ikeBase + "[ike]\n", path: "new.toml")
        #expect(header.restartRequired(comparedTo: next).map(\.line) == [12, 12])
        #expect(try ConfigLoader.parse(ikeBase, path: "new.toml").restartRequired(comparedTo: next).map(\.line) == [0, 0])
        #expect(IKESettings.keys == ["retransmit_timeout", "retransmit_base", "retransmit_tries", "keep_alive",
                                     "hold_packets", "hold_bytes", "hold_packets_total", "hold_timeout",
                                     "fragment_size", "max_packet"])
        #expect(Set(IKESettings.keys) == Set(IKESettings.fields.map(\.key)))
    }

    @Test("examples/ikev2-psk.toml is valid")
    func example() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/ikev2-psk.toml").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let cfg = try ConfigLoader.parse(text, path: "ikev2-psk.toml")
        #expect(cfg.connections.map(\.name) == ["gw-b"])
        #expect(cfg.connections.first?.children.map(\.name) == ["net", "net6"])
    }
}
