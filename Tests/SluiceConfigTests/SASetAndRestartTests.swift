import Testing
@testable import SluiceConfig
@testable import SluiceCore

/// A second outbound and inbound SA beside goodSA's, for SA sets (a key rotation).
let rotatedSAs = """
    [[sa]]
    name = "a-to-b-new"
    direction = "out"
    spi = 0x1002
    local = "192.0.2.1"
    remote = "192.0.2.2"
    proposal = "aes128gcm16"
    key = "0x000102030405060708090a0b0c0d0e0f10111213"

    [[sa]]
    name = "b-to-a-new"
    direction = "in"
    spi = 0x2002
    local = "192.0.2.1"
    remote = "192.0.2.2"
    proposal = "aes128gcm16"
    key = "0x000102030405060708090a0b0c0d0e0f10111213"

    [[sa]]
    name = "v6-transport"
    direction = "out"
    spi = 0x1003
    mode = "transport"
    local = "2001:db8::1"
    remote = "2001:db8::2"
    proposal = "aes128gcm16"
    key = "0x000102030405060708090a0b0c0d0e0f10111213"

    """

extension ConfigTests {
    /// goodSA and rotatedSAs with the out policy's `sa = "a-to-b"` line replaced, and the
    /// in policy's by `inbound`.
    func withOutSA(_ value: String, inbound: String = "[\"b-to-a\", \"b-to-a-new\"]") -> String {
        (goodSA + rotatedSAs).replacingOccurrences(of: "sa = \"a-to-b\"", with: "sa = \(value)")
            .replacingOccurrences(of: "sa = \"b-to-a\"", with: "sa = \(inbound)")
    }

    /// The line `sa = ` of the out policy is on.
    func outSALine(_ text: String) -> Int {
        text.components(separatedBy: "\n").firstIndex { $0.hasPrefix("sa = ") }! + 1
    }

    @Test("sa names one SA or an SA set; either way every SA of it counts as used")
    func saSets() throws {
        let one = try ConfigLoader.parse(withOutSA("\"a-to-b\""), path: "s.toml")
        #expect(one.policies[1].action == .protect(sas: ["b-to-a", "b-to-a-new"]))
        #expect(one.policies[0].action == .protect(sa: "a-to-b"))
        #expect(one.warnings.contains { $0.message.contains("outbound SA \"a-to-b-new\" is not used") })

        let set = withOutSA("[\"a-to-b\", \"a-to-b-new\"]", inbound: "[ \"b-to-a\" , \"b-to-a-new\" ]  # old and new key")
        let cfg = try ConfigLoader.parse(set, path: "s.toml")
        #expect(cfg.policies[0].action == .protect(sas: ["a-to-b", "a-to-b-new"]))
        #expect(cfg.policies[1].action == .protect(sas: ["b-to-a", "b-to-a-new"]))
        #expect(cfg.policies[1].protects("b-to-a-new"))
        #expect(!cfg.warnings.contains { $0.message.contains("a-to-b") }, "both outbound SAs are used: \(cfg.warnings)")
    }

    static let saSetCorpus: [(String, String, String)] = [
        ("empty set", "[]", "sa = [] names no SA: give at least one"),
        ("duplicate", "[\"a-to-b\", \"a-to-b-new\", \"a-to-b\"]", "sa = [...] names \"a-to-b\" twice"),
        ("undefined member", "[\"a-to-b\", \"a-to-c\"]", "sa = \"a-to-c\" is not defined by any [[sa]]"),
        ("member of the other direction", "[\"a-to-b\", \"b-to-a-new\"]", "SA \"b-to-a-new\" (line @SALINE@) is direction \"in\", this policy is \"out\""),
        ("transport member of the other family", "[\"a-to-b\", \"v6-transport\"]",
         "transport-mode SA \"v6-transport\" cannot carry traffic of the other address family"),
        ("not a name", "[\"a-to-b\", 7]", "sa = [...] must hold SA names (strings), not an integer"),
        ("nested", "[[\"a-to-b\"]]", "sa = [...] must hold SA names (strings), not an array"),
        ("not a string", "7", "sa must be an SA name or an array of SA names, not an integer"),
    ]

    @Test("broken SA sets: one error each, on the line of sa", arguments: saSetCorpus.indices)
    func brokenSASets(_ i: Int) {
        let (what, value, template) = Self.saSetCorpus[i]
        let text = withOutSA(value)
        let saLine = text.components(separatedBy: "\n").firstIndex(of: "name = \"b-to-a-new\"")! // the [[sa]] line above it, 1-based
        let message = template.replacingOccurrences(of: "@SALINE@", with: "\(saLine)")
        let e = errors(text).filter { !$0.isWarning }
        #expect(e.count == 1, "\(what): \(e.map(\.description))")
        #expect(e.first?.line == outSALine(text), "\(what): \(e.map(\.description))")
        #expect(e.first?.message == message, "\(what): \(e.map(\.description))")
    }

    @Test("protect without sa says how to name one SA or a set")
    func protectNeedsSA() {
        let text = goodSA.replacingOccurrences(of: "sa = \"a-to-b\"\n", with: "")
        let e = errors(text).filter { !$0.isWarning }
        #expect(e.map(\.message) == ["action = \"protect\" needs sa = \"NAME\" (or an SA set: sa = [\"OLD\", \"NEW\"])"])
    }

    @Test("an inbound SA protected only through a set has its inbound policy")
    func inboundThroughSet() throws {
        let text = withOutSA("\"a-to-b\"", inbound: "[\"b-to-a-new\"]")
        let e = errors(text).filter { !$0.isWarning }
        #expect(e.map(\.message) == ["inbound SA \"b-to-a\" has no inbound protect policy: every packet it opens would be dropped (RFC 4301 §5.2)"])
    }

    @Test("replay_mark_interval: 4096 by default, 64...1048576")
    func replayMarkInterval() throws {
        #expect(try ConfigLoader.parse(goodSA, path: "s.toml").replayMarkInterval == 4096)
        #expect(try ConfigLoader.parse("[sluice]\nreplay_mark_interval = 0x10000\n" + goodSA, path: "s.toml").replayMarkInterval == 65536)
        expectSingleError("[sluice]\nreplay_mark_interval = 63\n" + goodSA, line: 2,
                          contains: "replay_mark_interval = 63 is out of range 64...1048576", "too small")
        expectSingleError("[sluice]\n\nreplay_mark_interval = 1048577\n" + goodSA, line: 3,
                          contains: "replay_mark_interval = 1048577 is out of range 64...1048576", "too large")
        expectSingleError("[sluice]\nreplay_mark_interval = \"4k\"\n" + goodSA, line: 2,
                          contains: "replay_mark_interval must be an integer, not a string", "not a number")
    }

    @Test("settingLines holds the line of every [sluice] key")
    func settingLines() throws {
        let cfg = try ConfigLoader.parse("# header\n[sluice]\nqueues = 2\n\nlog_level = \"debug\"\n" + goodSA, path: "s.toml")
        #expect(cfg.settingLines == ["queues": 3, "log_level": 5])
        #expect(cfg.sluiceTableLine == 2)
        let bare = try ConfigLoader.parse(goodSA, path: "s.toml")
        #expect(bare.settingLines.isEmpty && bare.sluiceTableLine == 0)
    }

    func config(_ sluice: String?, path: String = "new.toml") throws -> SluiceConfiguration {
        try ConfigLoader.parse((sluice.map { "[sluice]\n" + $0 + "\n" } ?? "") + goodSA, path: path, cpuCount: 4)
    }

    @Test("restartRequired: one warning per changed restart-only setting, at its new line")
    func restartRequired() throws {
        let running = try config("queues = 2\nfail = \"closed\"\nbatch = 16\nmetrics_listen = \"127.0.0.1:9816\"", path: "old.toml")
        #expect(try config("queues = 2\nfail = \"closed\"\nbatch = 16\nmetrics_listen = \"127.0.0.1:9816\"").restartRequired(comparedTo: running).isEmpty)
        // Reloadable settings and SAs change freely; an explicit default is no change.
        let reloadable = try config("queues = 2\nbatch = 16\nmetrics_listen = \"127.0.0.1:9816\"\nlog_level = \"debug\"\nmss_clamp = false\n"
                                    + "default_out = \"discard\"\ndefault_in = \"discard\"\ngso = true\nreplay_mark_interval = 4096")
        #expect(reloadable.restartRequired(comparedTo: running).isEmpty)

        let next = try config("queues = 4\nbatch = 16\nreplay_mark_interval = 128\nstate_dir = \"/var/lib/sluice2\"\nmetrics_listen = \"[::1]:9816\"")
        let issues = next.restartRequired(comparedTo: running)
        #expect(issues.map(\.description) == [
            "new.toml:2: warning: queues changed from 2 to 4: needs a restart (systemctl restart sluice)",
            "new.toml:5: warning: state_dir changed from \"/var/lib/sluice\" to \"/var/lib/sluice2\": needs a restart (systemctl restart sluice)",
            "new.toml:6: warning: metrics_listen changed from \"127.0.0.1:9816\" to \"[::1]:9816\": needs a restart (systemctl restart sluice)",
            "new.toml:4: warning: replay_mark_interval changed from 4096 to 128: needs a restart (systemctl restart sluice)",
        ])
        // A removed key is located at [sluice], or at 0 without one.
        let removed = try config(nil).restartRequired(comparedTo: running)
        #expect(removed.map(\.line) == [0, 0, 0])
        #expect(removed.map(\.message) == [
            "queues changed from 2 to 4: needs a restart (systemctl restart sluice)",
            "batch changed from 16 to 32: needs a restart (systemctl restart sluice)",
            "metrics_listen changed from \"127.0.0.1:9816\" to off: needs a restart (systemctl restart sluice)",
        ])
        let header = try config("log_level = \"info\"").restartRequired(comparedTo: running)
        #expect(header.allSatisfy { $0.line == 1 && $0.file == "new.toml" && $0.isWarning })
    }

    @Test("every restart-only key is a [sluice] key, and each one's change is noticed")
    func everyRestartKey() throws {
        let changes = ["queues = 3", "queue_base = 7", "mark_shift = 8", "fail = \"open\"", "state_dir = \"/tmp/s\"",
                       "control_socket = \"/tmp/c.sock\"", "gso = false", "passthrough = true", "batch = 8",
                       "busy_poll_us = 50", "queue_maxlen = 1024", "receive_buffer = 2097152",
                       "metrics_listen = \"127.0.0.1:9900\"", "replay_mark_interval = 256"]
        #expect(Set(SluiceConfiguration.restartOnlyKeys).isSubset(of: Validator.sluiceKeys))
        #expect(changes.map { String($0.prefix { $0 != " " }) } == SluiceConfiguration.restartOnlyKeys)
        let running = try config(nil, path: "old.toml")
        for change in changes {
            let key = String(change.prefix { $0 != " " })
            let issues = try config(change).restartRequired(comparedTo: running)
            #expect(issues.count == 1 && issues.first?.line == 2 && issues.first?.message.hasPrefix("\(key) changed from ") == true,
                    "\(change): \(issues)")
        }
    }
}
