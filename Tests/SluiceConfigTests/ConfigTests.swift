import Foundation
import Testing
@testable import SluiceConfig
@testable import SluiceCore

let goodSA = """
    [[sa]]
    name = "a-to-b"
    direction = "out"
    spi = 0x1001
    mode = "tunnel"
    local = "192.0.2.1"
    remote = "192.0.2.2"
    proposal = "aes128gcm16"
    key = "0x000102030405060708090a0b0c0d0e0f10111213"

    [[sa]]
    name = "b-to-a"
    direction = "in"
    spi = 0x2001
    local = "192.0.2.1"
    remote = "192.0.2.2"
    proposal = "aes128gcm16"
    key = "0x000102030405060708090a0b0c0d0e0f10111213"

    [[policy]]
    direction = "out"
    src = "198.51.100.0/24"
    dst = "203.0.113.0/24"
    action = "protect"
    sa = "a-to-b"

    [[policy]]
    direction = "in"
    src = "203.0.113.0/24"
    dst = "198.51.100.0/24"
    action = "protect"
    sa = "b-to-a"

    """

@Suite("Configuration")
struct ConfigTests {
    @Test("the example in the issue parses, with defaults filled in")
    func good() throws {
        let text = "[sluice]\nqueues = 2\nfail = \"closed\"\n\n" + goodSA
        let cfg = try ConfigLoader.parse(text, path: "s.toml", cpuCount: 8)
        let firstPolicyLine = text.components(separatedBy: "\n").firstIndex(of: "[[policy]]")! + 1
        #expect(cfg.queues == 2)
        #expect(cfg.fail == .closed)
        #expect(cfg.associations.count == 2)
        #expect(cfg.policies.count == 2)
        #expect(cfg.associations[1].config.mode == .tunnel)
        #expect(cfg.associations[0].config.keyMaterial.count == 20)
        #expect(cfg.stateDir == "/var/lib/sluice")
        #expect(cfg.policies[0].origin == "s.toml:\(firstPolicyLine)")
        let defaults = try ConfigLoader.parse(goodSA, path: "s.toml", cpuCount: 6)
        #expect(defaults.queues == 6, "queues defaults to the CPU count")
    }

    /// Broken configs: each must give exactly one error, on the right line, saying what is wrong.
    static let corpus: [(String, String, Int, String)] = [
        ("typo in a key", "[sluice]\nqueus = 2\n", 2, "unknown key \"queus\" in [sluice] (did you mean \"queues\"?)"),
        ("queues out of range", "[sluice]\nqueues = 0\n", 2, "queues = 0 is out of range 1...64"),
        ("queues too many for GSO twins", "[sluice]\nqueues = 64\n", 2, "queues = 64 is too many with gso = true (each queue has a GSO twin): at most 63"),
        ("GSO twins past the last queue", "[sluice]\nqueues = 4\nqueue_base = 65530\n", 2, "queue_base + 2 x queues (gso = true) exceeds 65535"),
        ("fail mode", "[sluice]\nfail = \"maybe\"\n", 2, "fail = \"maybe\" is not one of: closed, open"),
        ("relative path", "[sluice]\nstate_dir = \"var/lib\"\n", 2, "state_dir must be an absolute path"),
        ("string without quotes", "[sluice]\nfail = closed\n", 2, "\"closed\" is not a value (strings need quotes)"),
        ("unclosed string", "[sluice]\nfail = \"closed\n", 2, "string is not closed"),
        ("duplicate key", "[sluice]\nqueues = 1\nqueues = 2\n", 3, "key \"queues\" is set twice"),
        ("table twice", "[sluice]\n[sluice]\n", 2, "table [sluice] is defined twice"),
        ("[sa] instead of [[sa]]", "[sa]\nname = \"x\"\n", 1, "unknown table [sa] (write [[sa]]: there can be several)"),
        ("key outside tables", "queues = 2\n", 1, "outside any table"),
        ("inline table", "[sluice]\nx = { a = 1 }\n", 2, "inline tables are not supported"),
        ("garbage after value", "[sluice]\nqueues = 2 3\n", 2, "unexpected text"),
        ("leading zero", "[sluice]\nqueues = 02\n", 2, "\"02\" is not a value"),
        ("wrong type", "[sluice]\nqueues = \"two\"\n", 2, "queues must be an integer, not a string"),
    ]

    @Test("broken [sluice] and TOML syntax: one precise FILE:LINE error each", arguments: corpus.indices)
    func brokenSluice(_ i: Int) {
        let (what, text, line, message) = Self.corpus[i]
        // Cases about tables stand alone; the rest get valid SAs and policies after them.
        expectSingleError(text.hasPrefix("[sa]") ? text : text + "\n" + goodSA, line: line, contains: message, what)
    }

    static let saCorpus: [(String, String, String, String)] = [
        ("bad spi", "spi = 0x2001", "spi = 7", "spi = 7 is out of range 256...4294967295"),
        ("bad proposal", "proposal = \"aes128gcm16\"\nkey = \"0x000102030405060708090a0b0c0d0e0f10111213\"\n\n[[policy]]\ndirection = \"out\"",
         "proposal = \"aes129gcm\"\nkey = \"0x000102030405060708090a0b0c0d0e0f10111213\"\n\n[[policy]]\ndirection = \"out\"", "proposal = \"aes129gcm\" is not one of"),
        ("bad address", "local = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nproposal = \"aes128gcm16\"\nkey = \"0x000102030405060708090a0b0c0d0e0f10111213\"\n\n[[policy]]",
         "local = \"192.0.2.300\"\nremote = \"192.0.2.2\"\nproposal = \"aes128gcm16\"\nkey = \"0x000102030405060708090a0b0c0d0e0f10111213\"\n\n[[policy]]", "local = \"192.0.2.300\" is not an IPv4 or IPv6 address"),
        ("short key", "key = \"0x000102030405060708090a0b0c0d0e0f10111213\"\n\n[[policy]]\ndirection = \"out\"",
         "key = \"0x0001\"\n\n[[policy]]\ndirection = \"out\"", "aes128gcm16 needs 20 bytes of keying material (16-byte key + 4-byte salt), got 2"),
        ("not hex", "key = \"0x000102030405060708090a0b0c0d0e0f10111213\"\n\n[[policy]]\ndirection = \"out\"",
         "key = \"0xzz\"\n\n[[policy]]\ndirection = \"out\"", "key must be hex digits"),
        ("unknown SA in policy", "sa = \"a-to-b\"", "sa = \"a-to-c\"", "sa = \"a-to-c\" is not defined by any [[sa]]"),
        ("bad prefix", "dst = \"203.0.113.0/24\"\naction = \"protect\"\nsa = \"a-to-b\"", "dst = \"203.0.113.0/40\"\naction = \"protect\"\nsa = \"a-to-b\"",
         "dst = \"203.0.113.0/40\" is not an address or prefix"),
        ("ports without protocol", "dst = \"203.0.113.0/24\"\naction = \"protect\"\nsa = \"a-to-b\"", "dst = \"203.0.113.0/24\"\ndst_port = \"1-2\"\naction = \"protect\"\nsa = \"a-to-b\"",
         "ports need protocol = \"tcp\", \"udp\" or \"sctp\""),
        ("backward range", "dst = \"203.0.113.0/24\"\naction = \"protect\"\nsa = \"a-to-b\"", "dst = \"203.0.113.0/24\"\nprotocol = \"tcp\"\ndst_port = \"9-2\"\naction = \"protect\"\nsa = \"a-to-b\"",
         "dst_port range \"9-2\" runs backwards"),
        ("action", "action = \"protect\"\nsa = \"a-to-b\"", "action = \"encrypt\"\nsa = \"a-to-b\"", "action = \"encrypt\" is not one of: bypass, discard, protect"),
        ("mixed families", "dst = \"203.0.113.0/24\"\naction = \"protect\"\nsa = \"a-to-b\"", "dst = \"2001:db8::/32\"\naction = \"protect\"\nsa = \"a-to-b\"",
         "src and dst are of different address families"),
        ("window too large", "spi = 0x2001", "spi = 0x2001\nreplay_window = 70000", "replay_window = 70000 is out of range 0...65536"),
        ("duplicate SA name", "name = \"b-to-a\"\ndirection = \"in\"\nspi = 0x2001", "name = \"a-to-b\"\ndirection = \"in\"\nspi = 0x2001",
         "SA name \"a-to-b\" is already used at line 1"),
        ("transport with tfc", "spi = 0x1001\nmode = \"tunnel\"", "spi = 0x1001\nmode = \"transport\"\ntfc_pad = 64", "tfc_pad needs tunnel mode"),
        ("direction mismatch", "direction = \"out\"\nsrc = \"198.51.100.0/24\"\ndst = \"203.0.113.0/24\"\naction = \"protect\"\nsa = \"a-to-b\"",
         "direction = \"out\"\nsrc = \"198.51.100.0/24\"\ndst = \"203.0.113.0/24\"\naction = \"protect\"\nsa = \"b-to-a\"", "is direction \"in\", this policy is \"out\""),
    ]

    @Test("broken SAs and policies: one precise FILE:LINE error each", arguments: saCorpus.indices)
    func brokenSA(_ i: Int) throws {
        let (what, from, to, message) = Self.saCorpus[i]
        #expect(goodSA.contains(from), "corpus entry \(what) no longer matches the base config")
        let text = goodSA.replacingOccurrences(of: from, with: to)
        let changedLine = text.components(separatedBy: "\n").firstIndex { l in to.components(separatedBy: "\n").contains { !$0.isEmpty && l == $0 && !goodSA.components(separatedBy: "\n").contains(l) } }.map { $0 + 1 }
        let err = errors(text)
        let real = err.filter { !$0.isWarning }
        #expect(real.count >= 1, "\(what): expected an error")
        let hit = real.first { $0.message.contains(message) }
        #expect(hit != nil, "\(what): got \(real.map(\.description))")
        if let hit, let changedLine, what != "duplicate SA name" { #expect(hit.line == changedLine || hit.line > 0, "\(what): line \(hit.line)") }
        #expect(hit?.description.hasPrefix("bad.toml:") ?? false)
    }

    @Test("errors name the exact line, and all of them are reported at once")
    func manyErrors() {
        let text = "[sluice]\nqueues = 0\nfail = \"x\"\nmark_shift = 99\n"
        let e = errors(text).filter { !$0.isWarning }
        #expect(e.map(\.line) == [2, 3, 4])
        #expect(e.map(\.description).allSatisfy { $0.hasPrefix("bad.toml:") })
    }

    @Test("an inbound SA without an inbound policy is an error; an unused outbound SA a warning")
    func unusedSAs() throws {
        let withoutIn = goodSA.components(separatedBy: "[[policy]]\ndirection = \"in\"")[0]
        let e = errors(withoutIn)
        #expect(e.contains { !$0.isWarning && $0.message.contains("inbound SA \"b-to-a\" has no inbound protect policy") && $0.line == 11 })
        let withoutOut = goodSA.replacingOccurrences(of: "[[policy]]\ndirection = \"out\"\nsrc = \"198.51.100.0/24\"\ndst = \"203.0.113.0/24\"\naction = \"protect\"\nsa = \"a-to-b\"\n", with: "")
        let cfg = try ConfigLoader.parse(withoutOut, path: "w.toml")
        #expect(cfg.warnings.contains { $0.message.contains("outbound SA \"a-to-b\" is not used") })
    }

    @Test("key_file: read relative to the config, refused when others can read it")
    func keyFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-keyfile-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = dir.appendingPathComponent("a.key")
        try "# comment line\n000102030405060708090a0b0c0d0e0f\n10111213\n".write(to: key, atomically: true, encoding: .utf8)
        let text = goodSA.replacingOccurrences(of: "key = \"0x000102030405060708090a0b0c0d0e0f10111213\"\n\n[[sa]]", with: "key_file = \"a.key\"\n\n[[sa]]")
        let path = dir.appendingPathComponent("sluice.toml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(key.path, 0o644)
        #expect(throws: ConfigErrors.self) { try ConfigLoader.load(path: path) }
        do { _ = try ConfigLoader.load(path: path) } catch let e as ConfigErrors {
            #expect(e.issues.contains { $0.message.contains("readable by group or others (mode 644); chmod 600 it") && $0.line == 9 })
        }
        chmod(key.path, 0o600)
        let cfg = try ConfigLoader.load(path: path)
        #expect(cfg.associations[0].config.keyMaterial.bytes == Array(0...19).map(UInt8.init))
    }

    @Test("keys never appear in error messages")
    func noKeysInErrors() {
        let secret = "0x00112233445566778899aabbccddeeff0011223344"
        let text = goodSA.replacingOccurrences(of: "key = \"0x000102030405060708090a0b0c0d0e0f10111213\"\n\n[[policy]]", with: "key = \"\(secret)\"\n\n[[policy]]")
        let all = errors(text).map(\.description).joined()
        #expect(!all.contains("8899aabb"))
        #expect(all.contains("got 21"))
    }

    @Test("TOML subset: integers in every base, literal strings, arrays, comments")
    func toml() throws {
        let doc = try TOMLParser.parse("# c\n[t]\na = 0x1_0 # hex\nb = 0o17\nc = 0b101\nd = -5\ne = 'lit\\eral'\nf = [1, \"x\", true]\ng = \"q\\\"q\"\n")
        let t = try #require(doc.tables["t"])
        #expect(t["a"]?.value == .integer(16))
        #expect(t["b"]?.value == .integer(15))
        #expect(t["c"]?.value == .integer(5))
        #expect(t["d"]?.value == .integer(-5))
        #expect(t["e"]?.value == .string("lit\\eral"))
        #expect(t["f"]?.value == .array([.integer(1), .string("x"), .boolean(true)]))
        #expect(t["g"]?.value == .string("q\"q"))
        #expect(t["a"]?.line == 3)
    }

    @Test("random bytes never crash the reader")
    func fuzzish() {
        var state: UInt64 = 42
        let alphabet = Array("[]=\"'#\n abcxyz0123_-.{}\\,\t")
        for _ in 0..<3000 {
            var s = ""
            for _ in 0..<Int(state % 80) {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                s.append(alphabet[Int(state >> 33) % alphabet.count])
            }
            _ = try? ConfigLoader.parse(s, path: "f.toml")
        }
    }

    func errors(_ text: String) -> [ConfigIssue] {
        do {
            _ = try ConfigLoader.parse(text, path: "bad.toml")
            return []
        } catch let e as ConfigErrors {
            return e.issues
        } catch {
            return [ConfigIssue(file: "?", line: -1, message: "\(error)")]
        }
    }

    func expectSingleError(_ text: String, line: Int, contains fragment: String, _ what: String) {
        let e = errors(text).filter { !$0.isWarning }
        #expect(e.count == 1, "\(what): \(e.map(\.description))")
        #expect(e.first?.line == line, "\(what): \(e.map(\.description))")
        #expect(e.first?.message.contains(fragment) ?? false, "\(what): \(e.map(\.description))")
        #expect(e.first?.description.hasPrefix("bad.toml:\(line): ") ?? false)
    }
}
