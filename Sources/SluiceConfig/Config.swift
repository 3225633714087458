#if canImport(Glibc)
import Glibc
#endif
import SluiceCore

/// What to do with PROTECT traffic when no worker is there to take it.
public enum FailMode: String, Sendable {
    /// Drop (the default): nothing a PROTECT policy covers ever leaves in clear.
    case closed
    /// Pass in clear. A documented leak, for admins who value reachability more.
    case open
}

/// One config problem, located. Printed as `FILE:LINE: message`.
public struct ConfigIssue: Error, Sendable, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int
    public let message: String
    public let isWarning: Bool

    public init(file: String, line: Int, message: String, isWarning: Bool = false) {
        self.file = file; self.line = line; self.message = message; self.isWarning = isWarning
    }

    /// Line 0 means the file as a whole (it cannot be read, or something is missing from it).
    public var description: String { "\(file):\(line > 0 ? "\(line):" : "") \(isWarning ? "warning: " : "")\(message)" }
}

/// All problems found in one pass, so an admin fixes them in one go.
public struct ConfigErrors: Error, CustomStringConvertible {
    public let issues: [ConfigIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

public struct SAEntry: Sendable {
    public var config: SAConfig
    public var line: Int
}

/// The whole validated configuration.
public struct SluiceConfiguration: Sendable {
    public var path: String
    public var queues: Int
    public var queueBase: Int
    public var fail: FailMode
    public var stateDir: String
    public var controlSocket: String
    /// Bits [markShift, markShift+8) of the packet mark belong to Sluice (see RulesetBuilder).
    public var markShift: Int
    public var queueMaxLen: Int
    public var receiveBuffer: Int
    public var defaultOutbound: PolicyAction
    public var defaultInbound: PolicyAction
    public var mssClamp: Bool
    public var logLevel: String
    /// Passes packets through the queues untouched (measures the redirect cost alone).
    public var passthrough: Bool
    /// Packets per receive (recvmmsg) and verdicts per send; 1 = one syscall per packet.
    public var batch: Int
    /// After a batch, keep polling (without sleeping) this long for the next one: trades
    /// CPU for latency, since waking a sleeping thread costs tens of microseconds. 0 = off.
    public var busyPollMicros: Int
    /// TCP under PROTECT goes to a second set of queues bound with NFQA_CFG_F_GSO: the
    /// kernel hands over up to 64 KB at once and Sluice cuts the ESP segments itself.
    public var gso: Bool
    /// Prometheus listener ("127.0.0.1:9816" or "[::1]:9816"); nil = off.
    public var metricsListen: (host: String, port: Int)?
    /// Inbound: how far ahead of the highest accepted sequence number the durable replay
    /// mark is written, so a restart never accepts a number it accepted before.
    public var replayMarkInterval: Int
    /// The line of every key written in `[sluice]` ("queues": 3); unset keys are absent.
    public var settingLines: [String: Int]
    /// The line of the `[sluice]` header, 0 when the file has none.
    public var sluiceTableLine: Int
    public var associations: [SAEntry]
    public var policies: [Policy]
    /// IKEv2 connections in file order, each with its children; read at start (a reload
    /// that finds them changed is refused: the IKE agent takes them at start only).
    public var connections: [IKEConnection]
    /// `[ike]`: takes effect at start only.
    public var ike: IKESettings
    /// The line of every key written in `[ike]`, and of its header (0 when absent).
    public var ikeSettingLines: [String: Int]
    public var ikeTableLine: Int
    public var warnings: [ConfigIssue]

    /// `[sluice]` keys that only take effect when the daemon starts. Everything else
    /// (log_level, default_out, default_in, mss_clamp, SAs and policies) is applied on
    /// reload; all of `[ike]` and any change to `[[connection]]` need a restart as well.
    public static let restartOnlyKeys = ["queues", "queue_base", "mark_shift", "fail", "state_dir", "control_socket", "gso",
                                         "passthrough", "batch", "busy_poll_us", "queue_maxlen", "receive_buffer",
                                         "metrics_listen", "replay_mark_interval"]

    /// The value of a restart-only setting as it would be written in the file.
    func restartSetting(_ key: String) -> String {
        switch key {
        case "queues": return "\(queues)"
        case "queue_base": return "\(queueBase)"
        case "mark_shift": return "\(markShift)"
        case "fail": return "\"\(fail.rawValue)\""
        case "state_dir": return "\"\(stateDir)\""
        case "control_socket": return "\"\(controlSocket)\""
        case "gso": return "\(gso)"
        case "passthrough": return "\(passthrough)"
        case "batch": return "\(batch)"
        case "busy_poll_us": return "\(busyPollMicros)"
        case "queue_maxlen": return "\(queueMaxLen)"
        case "receive_buffer": return "\(receiveBuffer)"
        case "metrics_listen":
            guard let m = metricsListen else { return "off" }
            return m.host.contains(":") ? "\"[\(m.host)]:\(m.port)\"" : "\"\(m.host):\(m.port)\""
        case "replay_mark_interval": return "\(replayMarkInterval)"
        default: preconditionFailure("not a restart-only setting: \(key)")
        }
    }

    /// The settings that changed from `running` (the daemon's configuration) to this one
    /// but only take effect at start: one warning each, at this file's line of the key
    /// (the `[sluice]` header, or 0, when the key was removed).
    public func restartRequired(comparedTo running: SluiceConfiguration) -> [ConfigIssue] {
        let sluice = SluiceConfiguration.restartOnlyKeys.compactMap { (key: String) -> ConfigIssue? in
            let old = running.restartSetting(key), new = restartSetting(key)
            guard old != new else { return nil }
            return ConfigIssue(file: path, line: settingLines[key] ?? sluiceTableLine,
                               message: "\(key) changed from \(old) to \(new): needs a restart (systemctl restart sluice)",
                               isWarning: true)
        }
        let ikeKeys = IKESettings.fields.compactMap { (key: String, value: (IKESettings) -> String) -> ConfigIssue? in
            let old = value(running.ike), new = value(ike)
            guard old != new else { return nil }
            return ConfigIssue(file: path, line: ikeSettingLines[key] ?? ikeTableLine,
                               message: "[ike] \(key) changed from \(old) to \(new): needs a restart (systemctl restart sluice)",
                               isWarning: true)
        }
        return sluice + ikeKeys
    }
}

public enum ConfigLoader {
    public static let defaultStateDir = "/var/lib/sluice"
    public static let defaultControlSocket = "/run/sluice/control.sock"

    /// Reads and validates `path`. Throws `ConfigErrors` listing every problem.
    public static func load(path: String, cpuCount: Int = ConfigLoader.onlineCPUs()) throws -> SluiceConfiguration {
        let text: String
        do { text = try readFile(path) } catch { throw ConfigErrors(issues: [ConfigIssue(file: path, line: 0, message: "\(error)")]) }
        return try parse(text, path: path, cpuCount: cpuCount)
    }

    public static func onlineCPUs() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    public static func parse(_ text: String, path: String, cpuCount: Int = 1) throws -> SluiceConfiguration {
        let doc: TOMLDocument
        do { doc = try TOMLParser.parse(text) } catch {
            throw ConfigErrors(issues: [ConfigIssue(file: path, line: error.line, message: error.message)])
        }
        var v = Validator(path: path)
        let cfg = v.build(doc, cpuCount: cpuCount)
        let errors = v.issues.filter { !$0.isWarning }
        if !errors.isEmpty || cfg == nil { throw ConfigErrors(issues: v.issues) }
        return cfg!
    }

    static func readFile(_ path: String) throws -> String {
        String(decoding: try readBytes(path), as: UTF8.self)
    }

    /// A whole file (at most 16 MiB). Key files go through here too: the read buffer is
    /// zeroed before it goes, and the caller wipes what it gets (SecretBytes).
    public static func readBytes(_ path: String) throws -> [UInt8] {
        guard let f = fopen(path, "r") else { throw FileError(message: "cannot open: \(String(cString: strerror(errno)))") }
        defer { fclose(f) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        defer { SecretBytes(chunk).wipe() }
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n > 0 { data.append(contentsOf: chunk[0..<n]) }
            if n < chunk.count { break }
            if data.count > 16 << 20 { throw FileError(message: "file is larger than 16 MiB") }
        }
        if ferror(f) != 0 { throw FileError(message: "read error") }
        return data
    }

    struct FileError: Error, CustomStringConvertible { let message: String; var description: String { message } }
}

/// Walks the document, collecting every issue instead of stopping at the first.
struct Validator {
    let path: String
    var issues: [ConfigIssue] = []

    init(path: String) { self.path = path }

    mutating func error(_ line: Int, _ m: String) { issues.append(ConfigIssue(file: path, line: line, message: m)) }
    mutating func warn(_ line: Int, _ m: String) { issues.append(ConfigIssue(file: path, line: line, message: m, isWarning: true)) }

    var errorCount: Int { issues.count { !$0.isWarning } }

    /// The line of `k` in `t`, or of the table's header when `k` is not set.
    func line(_ t: TOMLTable, _ k: String) -> Int { t[k]?.line ?? t.line }

    /// `name` relative to the config file's directory.
    func resolve(_ name: String) -> String { name.hasPrefix("/") ? name : configDir + "/" + name }

    var configDir: String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash]).isEmpty ? "/" : String(path[..<slash])
    }

    // MARK: typed getters

    mutating func string(_ t: TOMLTable, _ k: String) -> (String, Int)? {
        guard let e = t[k] else { return nil }
        if case let .string(s) = e.value { return (s, e.line) }
        error(e.line, "\(k) must be a string, not \(e.value.typeName)")
        return nil
    }

    mutating func int(_ t: TOMLTable, _ k: String, _ range: ClosedRange<Int64>) -> (Int64, Int)? {
        guard let e = t[k] else { return nil }
        guard case let .integer(n) = e.value else { error(e.line, "\(k) must be an integer, not \(e.value.typeName)"); return nil }
        guard range.contains(n) else { error(e.line, "\(k) = \(n) is out of range \(range.lowerBound)...\(range.upperBound)"); return nil }
        return (n, e.line)
    }

    /// An integer or a decimal float.
    mutating func number(_ t: TOMLTable, _ k: String, _ range: ClosedRange<Double>) -> (Double, Int)? {
        guard let e = t[k] else { return nil }
        let x: Double
        switch e.value {
        case let .float(f): x = f
        case let .integer(n): x = Double(n)
        default: error(e.line, "\(k) must be a number, not \(e.value.typeName)"); return nil
        }
        guard range.contains(x) else { error(e.line, "\(k) = \(x) is out of range \(range.lowerBound)...\(range.upperBound)"); return nil }
        return (x, e.line)
    }

    mutating func bool(_ t: TOMLTable, _ k: String) -> Bool? {
        guard let e = t[k] else { return nil }
        if case let .boolean(b) = e.value { return b }
        error(e.line, "\(k) must be true or false, not \(e.value.typeName)")
        return nil
    }

    mutating func choice<T>(_ t: TOMLTable, _ k: String, _ options: [String: T]) -> (T, Int)? {
        guard let (s, line) = string(t, k) else { return nil }
        if let v = options[s] { return (v, line) }
        error(line, "\(k) = \"\(s)\" is not one of: \(options.keys.sorted().joined(separator: ", "))")
        return nil
    }

    mutating func unknownKeys(_ t: TOMLTable, allowed: Set<String>, context: String) {
        for k in t.keys where !allowed.contains(k) {
            let hint = allowed.sorted().first { editDistance($0, k) <= 2 }.map { " (did you mean \"\($0)\"?)" } ?? ""
            error(t[k]!.line, "unknown key \"\(k)\" in \(context)\(hint)")
        }
    }

    // MARK: document

    static let tableNames: Set<String> = ["sluice", "ike"]
    static let arrayNames: Set<String> = ["sa", "policy", "connection", "connection.child"]
    static let sluiceKeys: Set<String> = ["queues", "queue_base", "fail", "state_dir", "control_socket", "mark_shift",
                                          "queue_maxlen", "receive_buffer", "default_out", "default_in", "mss_clamp",
                                          "log_level", "passthrough", "metrics_listen", "batch", "busy_poll_us", "gso",
                                          "replay_mark_interval"]
    static let saKeys: Set<String> = ["name", "direction", "spi", "mode", "local", "remote", "proposal", "key", "key_file",
                                      "esn", "replay_window", "mtu", "df", "tfc_pad", "nat_t",
                                      "soft_bytes", "hard_bytes", "soft_packets", "hard_packets", "soft_seconds", "hard_seconds"]
    static let policyKeys: Set<String> = ["direction", "src", "dst", "protocol", "src_port", "dst_port", "icmp_type",
                                          "icmp_code", "action", "sa"]

    mutating func build(_ doc: TOMLDocument, cpuCount: Int) -> SluiceConfiguration? {
        for k in doc.root.keys { error(doc.root[k]!.line, "key \"\(k)\" is outside any table; put it under [sluice]") }
        for (name, t) in doc.tables.sorted(by: { $0.value.line < $1.value.line }) where !Validator.tableNames.contains(name) {
            error(t.line, "unknown table [\(name)]\(Validator.arrayNames.contains(name) ? " (write [[\(name)]]: there can be several)" : "")")
        }
        for (name, list) in doc.arrays.sorted(by: { $0.value[0].line < $1.value[0].line }) where !Validator.arrayNames.contains(name) {
            error(list[0].line, "unknown table [[\(name)]]\(Validator.tableNames.contains(name) ? " (write [\(name)]: there is one)" : "")")
        }
        let s = doc.tables["sluice"] ?? TOMLTable(name: "sluice", line: 0)
        unknownKeys(s, allowed: Validator.sluiceKeys, context: "[sluice]")

        let gso = bool(s, "gso") ?? true
        // The mark field carries queue + 1 in 7 bits; GSO doubles the queues.
        let queuesEntry = int(s, "queues", 1...64)
        let queues = Int(queuesEntry?.0 ?? Int64(min(cpuCount, 63)))
        if gso && queues > 63 {
            error(queuesEntry?.1 ?? s.line, "queues = \(queues) is too many with gso = true (each queue has a GSO twin): at most 63")
        }
        let queueBase = Int(int(s, "queue_base", 0...65535)?.0 ?? 0)
        let span = gso ? 2 * queues : queues
        if queueBase + span > 65536 {
            error(queuesEntry?.1 ?? s.line, "queue_base + \(gso ? "2 x queues (gso = true)" : "queues") exceeds 65535")
        }
        let fail = choice(s, "fail", ["closed": FailMode.closed, "open": .open])?.0 ?? .closed
        let stateDir = string(s, "state_dir")?.0 ?? ConfigLoader.defaultStateDir
        let control = string(s, "control_socket")?.0 ?? ConfigLoader.defaultControlSocket
        for (k, v) in [("state_dir", stateDir), ("control_socket", control)] where !v.hasPrefix("/") {
            error(s[k]?.line ?? s.line, "\(k) must be an absolute path")
        }
        let markShift = Int(int(s, "mark_shift", 0...24)?.0 ?? 16)
        let maxlen = Int(int(s, "queue_maxlen", 16...1_048_576)?.0 ?? 4096)
        let rcvbuf = Int(int(s, "receive_buffer", 1 << 20...1 << 30)?.0 ?? 8 << 20)
        let defaults = ["bypass": PolicyAction.bypass, "discard": .discard]
        let defaultOut = choice(s, "default_out", defaults)?.0 ?? .bypass
        let defaultIn = choice(s, "default_in", defaults)?.0 ?? .bypass
        let mss = bool(s, "mss_clamp") ?? true
        let logLevel = choice(s, "log_level", ["trace": "trace", "debug": "debug", "info": "info", "notice": "notice",
                                                "warning": "warning", "error": "error"])?.0 ?? "info"
        let passthrough = bool(s, "passthrough") ?? false
        let batch = Int(int(s, "batch", 1...64)?.0 ?? 32)
        let busyPoll = Int(int(s, "busy_poll_us", 0...10_000)?.0 ?? 0)
        let replayMark = Int(int(s, "replay_mark_interval", 64...1_048_576)?.0 ?? 4096)
        var metrics: (String, Int)? = nil
        if let (text, line) = string(s, "metrics_listen") {
            if let hp = Validator.hostPort(text) { metrics = hp } else {
                error(line, "metrics_listen = \"\(text)\" is not ADDRESS:PORT (e.g. \"127.0.0.1:9816\" or \"[::1]:9816\")")
            }
        }

        var sas: [SAEntry] = []
        var names: [String: Int] = [:]
        var spis: [String: Int] = [:]
        for t in doc.arrays["sa"] ?? [] {
            guard let sa = buildSA(t) else { continue }
            if let first = names[sa.config.name] {
                error(t["name"]?.line ?? t.line, "SA name \"\(sa.config.name)\" is already used at line \(first)")
                continue
            }
            names[sa.config.name] = t.line
            let spiKey = "\(sa.config.direction.rawValue)/\(sa.config.spi)/\(sa.config.direction == .inbound ? sa.config.local : sa.config.remote)"
            if let first = spis[spiKey] {
                error(t["spi"]?.line ?? t.line, "SPI 0x\(String(sa.config.spi, radix: 16)) is already used by the \(sa.config.direction == .inbound ? "inbound" : "outbound") SA at line \(first)")
            }
            spis[spiKey] = t.line
            sas.append(sa)
        }
        var policies: [Policy] = []
        for t in doc.arrays["policy"] ?? [] {
            if let p = buildPolicy(t, sas: sas) { policies.append(p) }
        }
        for sa in sas where sa.config.direction == .inbound {
            let used = policies.contains { $0.direction == .inbound && $0.protects(sa.config.name) }
            if !used { error(sa.line, "inbound SA \"\(sa.config.name)\" has no inbound protect policy: every packet it opens would be dropped (RFC 4301 §5.2)") }
        }
        for sa in sas where sa.config.direction == .outbound {
            let used = policies.contains { $0.direction == .outbound && $0.protects(sa.config.name) }
            if !used { warn(sa.line, "outbound SA \"\(sa.config.name)\" is not used by any policy") }
        }
        let connections = buildConnections(doc, saNames: names)
        let ikeTable = doc.tables["ike"] ?? TOMLTable(name: "ike", line: 0)
        let ike = buildIKESettings(ikeTable)
        if sas.isEmpty && policies.isEmpty && doc.arrays["connection"] == nil {
            warn(0, "no [[sa]], [[policy]] or [[connection]]: Sluice would do nothing")
        }
        return SluiceConfiguration(
            path: path, queues: queues, queueBase: queueBase, fail: fail, stateDir: stateDir, controlSocket: control,
            markShift: markShift, queueMaxLen: maxlen, receiveBuffer: rcvbuf, defaultOutbound: defaultOut,
            defaultInbound: defaultIn, mssClamp: mss, logLevel: logLevel, passthrough: passthrough, batch: batch, busyPollMicros: busyPoll, gso: gso, metricsListen: metrics,
            replayMarkInterval: replayMark, settingLines: s.entries.mapValues(\.line), sluiceTableLine: s.line,
            associations: sas, policies: policies, connections: connections, ike: ike,
            ikeSettingLines: ikeTable.entries.mapValues(\.line), ikeTableLine: ikeTable.line, warnings: issues.filter(\.isWarning))
    }

    static func hostPort(_ text: String) -> (String, Int)? {
        let host: Substring, port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2 else { return nil }
            host = parts[0]; port = parts[1]
        }
        guard IPAddress(String(host)) != nil, let p = Int(port), (1...65535).contains(p) else { return nil }
        return (String(host), p)
    }

    mutating func require<T>(_ t: TOMLTable, _ k: String, _ v: T?, what: String) -> T? {
        if v == nil && t[k] == nil { error(t.line, "[[\(what)]] needs \"\(k)\"") }
        return v
    }

    mutating func address(_ t: TOMLTable, _ k: String) -> IPAddress? {
        guard let (s, line) = string(t, k) else { return nil }
        if let a = IPAddress(s) { return a }
        error(line, "\(k) = \"\(s)\" is not an IPv4 or IPv6 address")
        return nil
    }

    mutating func buildSA(_ t: TOMLTable) -> SAEntry? {
        unknownKeys(t, allowed: Validator.saKeys, context: "[[sa]]")
        let errorsBefore = issues.count
        let name = require(t, "name", validName(t), what: "sa")
        let direction = require(t, "direction", choice(t, "direction", ["out": Direction.outbound, "in": .inbound])?.0, what: "sa")
        let spi = require(t, "spi", int(t, "spi", 256...0xFFFF_FFFF)?.0, what: "sa") // 1-255 are reserved (RFC 4303 §2.1)
        let mode = choice(t, "mode", ["tunnel": ESPMode.tunnel, "transport": .transport])?.0 ?? .tunnel
        let local = require(t, "local", address(t, "local"), what: "sa")
        let remote = require(t, "remote", address(t, "remote"), what: "sa")
        let proposals = Dictionary(uniqueKeysWithValues: Proposal.allCases.map { ($0.rawValue, $0) })
        let proposal = require(t, "proposal", choice(t, "proposal", proposals)?.0, what: "sa")
        let esn = bool(t, "esn") ?? false
        let options = dataPlaneOptions(t, mode: mode)
        let window = options.replayWindow
        let natT = bool(t, "nat_t") ?? false
        var lt = Lifetime()
        lt.softBytes = int(t, "soft_bytes", 1...Int64.max).map { UInt64($0.0) }
        lt.hardBytes = int(t, "hard_bytes", 1...Int64.max).map { UInt64($0.0) }
        lt.softPackets = int(t, "soft_packets", 1...Int64.max).map { UInt64($0.0) }
        lt.hardPackets = int(t, "hard_packets", 1...Int64.max).map { UInt64($0.0) }
        lt.softSeconds = int(t, "soft_seconds", 1...Int64.max).map { UInt64($0.0) }
        lt.hardSeconds = int(t, "hard_seconds", 1...Int64.max).map { UInt64($0.0) }
        for (soft, hard, k) in [(lt.softBytes, lt.hardBytes, "bytes"), (lt.softPackets, lt.hardPackets, "packets"),
                                (lt.softSeconds, lt.hardSeconds, "seconds")] {
            if let s = soft, let h = hard, s >= h { error(t["soft_\(k)"]!.line, "soft_\(k) must be below hard_\(k)") }
        }
        if let l = local, let r = remote, l.family != r.family {
            error(t["remote"]!.line, "local and remote must be the same address family")
        }
        if mode == .transport, natT { error(t["nat_t"]!.line, "nat_t is supported in tunnel mode only") }
        if direction == .outbound, t["replay_window"] != nil { warn(t["replay_window"]!.line, "replay_window only applies to inbound SAs") }
        if esn && window == 0 { warn(t["esn"]!.line, "esn with replay_window = 0: seq-high is still inferred from a nominal window") }

        // Keying material: inline or in a file of its own, never both.
        var key: [UInt8]? = nil
        switch (t["key"], t["key_file"]) {
        case (nil, nil): error(t.line, "[[sa]] needs \"key\" or \"key_file\"")
        case (.some, .some): error(t["key_file"]!.line, "give either key or key_file, not both")
        case (.some, nil):
            if let (s, line) = string(t, "key") {
                key = Hex.decode(s)
                if key == nil { error(line, "key must be hex digits (optionally 0x-prefixed)") }
            }
        case (nil, .some):
            if let (s, line) = string(t, "key_file") { key = readKeyFile(s, line: line) }
        }
        if let p = proposal, let k = key, k.count != p.keyMaterialLength {
            let line = (t["key"] ?? t["key_file"])!.line
            error(line, "\(p.rawValue) needs \(p.keyMaterialLength) bytes of keying material (\(describeLayout(p))), got \(k.count)")
        }
        guard issues.count == errorsBefore || !issues[errorsBefore...].contains(where: { !$0.isWarning }) else { return nil }
        guard let name, let direction, let spi, let local, let remote, let proposal, let key else { return nil }
        let cfg = SAConfig(name: name, direction: direction, spi: UInt32(spi), mode: mode, local: local, remote: remote,
                           proposal: proposal, keyMaterial: SecretBytes(key), esn: esn, replayWindow: window, lifetime: lt,
                           tfcPadTo: options.tfcPadTo, mtu: options.mtu, dfPolicy: options.dfPolicy, udpEncapsulation: natT)
        return SAEntry(config: cfg, line: t.line)
    }

    /// `name` of an [[sa]], [[connection]] or [[connection.child]]; nil when missing or malformed.
    mutating func validName(_ t: TOMLTable) -> String? {
        guard let (n, line) = string(t, "name") else { return nil }
        guard !n.isEmpty, n.count <= 64, n.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            error(line, "name must be 1-64 letters, digits, '-', '_' or '.'")
            return nil
        }
        return n
    }

    struct DataPlaneOptions { var replayWindow: Int; var mtu: Int; var dfPolicy: DFPolicy; var tfcPadTo: Int }

    /// replay_window, mtu, df and tfc_pad: the same keys for a static [[sa]] and a CHILD_SA.
    mutating func dataPlaneOptions(_ t: TOMLTable, mode: ESPMode) -> DataPlaneOptions {
        let window = Int(int(t, "replay_window", 0...Int64(ReplayWindow.maxSize))?.0 ?? 1024)
        let mtu = Int(int(t, "mtu", 576...65535)?.0 ?? 1500)
        let df = choice(t, "df", ["copy": DFPolicy.copy, "set": .set, "clear": .clear])?.0 ?? .copy
        let tfc = Int(int(t, "tfc_pad", 0...1500)?.0 ?? 0)
        if mode == .transport, tfc > 0 { error(line(t, "tfc_pad"), "tfc_pad needs tunnel mode (transport mode cannot carry the inner length)") }
        return DataPlaneOptions(replayWindow: window, mtu: mtu, dfPolicy: df, tfcPadTo: tfc)
    }

    func describeLayout(_ p: Proposal) -> String {
        p.isAEAD ? "\(p.encryptionKeyLength)-byte key + 4-byte salt"
            : p.encryptionKeyLength == 0 ? "32-byte integrity key" : "\(p.encryptionKeyLength)-byte key + 32-byte integrity key"
    }

    /// The full path of a file holding a secret (`key` names it in messages), or nil with
    /// an error when it is missing or open to group or others.
    mutating func privateFile(_ key: String, _ name: String, line: Int) -> String? {
        let full = resolve(name)
        var st = stat()
        guard stat(full, &st) == 0 else {
            error(line, "\(key) \(full): \(String(cString: strerror(errno)))")
            return nil
        }
        // Like wg(8): a key others can read is a key already lost.
        if st.st_mode & 0o077 != 0 {
            error(line, "\(key) \(full) is readable by group or others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it")
            return nil
        }
        return full
    }

    mutating func readKeyFile(_ name: String, line: Int) -> [UInt8]? {
        guard let full = privateFile("key_file", name, line: line) else { return nil }
        guard let text = try? ConfigLoader.readFile(full) else { error(line, "key_file \(full) cannot be read"); return nil }
        let body = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined()
        guard let k = Hex.decode(body.trimmingSpaces) else { error(line, "key_file \(full) must hold hex digits only"); return nil }
        return k
    }

    mutating func ports(_ t: TOMLTable, _ k: String) -> ClosedRange<UInt16>? {
        guard let e = t[k] else { return nil }
        switch e.value {
        case let .integer(n):
            guard (0...65535).contains(n) else { error(e.line, "\(k) = \(n) is not a port (0-65535)"); return nil }
            return UInt16(n)...UInt16(n)
        case let .string(s):
            let parts = s.split(separator: "-", omittingEmptySubsequences: false)
            let nums = parts.map { UInt16($0.trimmingSpaces) }
            guard (1...2).contains(parts.count), nums.allSatisfy({ $0 != nil }) else {
                error(e.line, "\(k) = \"\(s)\" is not a port or a range like \"1024-65535\"")
                return nil
            }
            let lo = nums[0]!, hi = nums.last!!
            guard lo <= hi else { error(e.line, "\(k) range \"\(s)\" runs backwards"); return nil }
            return lo...hi
        default:
            error(e.line, "\(k) must be a number or a string range, not \(e.value.typeName)")
            return nil
        }
    }

    /// A policy's `sa`: one name, or a one-line array of names (an SA set, e.g. old and
    /// new key during a rotation). Reports what is wrong with the list itself.
    mutating func saNames(_ t: TOMLTable) -> (list: [String], line: Int)? {
        guard let e = t["sa"] else { return nil }
        switch e.value {
        case let .string(name): return ([name], e.line)
        case let .array(items):
            if items.isEmpty { error(e.line, "sa = [] names no SA: give at least one"); return nil }
            var list: [String] = []
            for item in items {
                guard case let .string(name) = item else {
                    error(e.line, "sa = [...] must hold SA names (strings), not \(item.typeName)"); return nil
                }
                if list.contains(name) { error(e.line, "sa = [...] names \"\(name)\" twice"); return nil }
                list.append(name)
            }
            return (list, e.line)
        default:
            error(e.line, "sa must be an SA name or an array of SA names, not \(e.value.typeName)")
            return nil
        }
    }

    mutating func buildPolicy(_ t: TOMLTable, sas: [SAEntry]) -> Policy? {
        unknownKeys(t, allowed: Validator.policyKeys, context: "[[policy]]")
        let before = issues.filter { !$0.isWarning }.count
        let direction = require(t, "direction", choice(t, "direction", ["out": Direction.outbound, "in": .inbound])?.0, what: "policy")
        var sel = TrafficSelector()
        for k in ["src", "dst"] {
            guard let (s, line) = string(t, k) else { continue }
            if s == "any" { continue }
            guard let p = IPPrefix(s) else { error(line, "\(k) = \"\(s)\" is not an address or prefix like 198.51.100.0/24"); continue }
            if IPPrefix.hasHostBits(s) { warn(line, "\(k) = \"\(s)\" has host bits set; it means \(p)") }
            if k == "src" { sel.src = p } else { sel.dst = p }
        }
        if let a = sel.src, let b = sel.dst, a.address.family != b.address.family {
            error(t["dst"]!.line, "src and dst are of different address families")
        }
        let protoNames = TrafficSelectorSpec.protocolNames.merging(TrafficSelectorSpec.protocolAliases) { a, _ in a }
        if let e = t["protocol"] {
            switch e.value {
            case let .string(s) where s == "any": break
            case let .string(s):
                if let n = protoNames[s] { sel.proto = n } else if let n = UInt8(s) { sel.proto = n } else {
                    error(e.line, "protocol = \"\(s)\" is not one of any, tcp, udp, icmp, ipv6-icmp, sctp, esp, gre or a number 0-255")
                }
            case let .integer(n):
                if (0...255).contains(n) { sel.proto = UInt8(n) } else { error(e.line, "protocol = \(n) is not 0-255") }
            default:
                error(e.line, "protocol must be a name or a number, not \(e.value.typeName)")
            }
        }
        sel.srcPorts = ports(t, "src_port")
        sel.dstPorts = ports(t, "dst_port")
        if sel.srcPorts != nil || sel.dstPorts != nil {
            if ![UInt8(6), 17, 132].contains(sel.proto ?? 0) {
                error((t["src_port"] ?? t["dst_port"])!.line, "ports need protocol = \"tcp\", \"udp\" or \"sctp\"")
            }
        }
        sel.icmpType = int(t, "icmp_type", 0...255).map { UInt8($0.0) }
        sel.icmpCode = int(t, "icmp_code", 0...255).map { UInt8($0.0) }
        if sel.icmpType != nil || sel.icmpCode != nil, sel.proto != 1 && sel.proto != 58 {
            error((t["icmp_type"] ?? t["icmp_code"])!.line, "icmp_type/icmp_code need protocol = \"icmp\" or \"ipv6-icmp\"")
        }
        if sel.icmpCode != nil && sel.icmpType == nil { error(t["icmp_code"]!.line, "icmp_code needs icmp_type") }
        let actionWord = require(t, "action", choice(t, "action", ["protect": "protect", "bypass": "bypass", "discard": "discard"])?.0, what: "policy")
        var action: PolicyAction? = nil
        switch actionWord {
        case "protect":
            if let names = saNames(t) {
                var ok = true
                for name in names.list {
                    guard let sa = sas.first(where: { $0.config.name == name }) else {
                        error(names.line, "sa = \"\(name)\" is not defined by any [[sa]]"); ok = false; continue
                    }
                    if let d = direction, sa.config.direction != d {
                        error(names.line, "SA \"\(name)\" (line \(sa.line)) is direction \"\(sa.config.direction.rawValue)\", this policy is \"\(d.rawValue)\"")
                        ok = false
                    }
                    if sa.config.mode == .transport, let fam = sel.family, fam != sa.config.local.family {
                        error(names.line, "transport-mode SA \"\(name)\" cannot carry traffic of the other address family")
                        ok = false
                    }
                }
                if ok { action = .protect(sas: names.list) }
            } else if t["sa"] == nil {
                error(t["action"]!.line, "action = \"protect\" needs sa = \"NAME\" (or an SA set: sa = [\"OLD\", \"NEW\"])")
            }
        case "bypass": action = .bypass
        case "discard": action = .discard
        default: break
        }
        if actionWord != nil && actionWord != "protect", let e = t["sa"] { error(e.line, "sa only goes with action = \"protect\"") }
        guard issues.filter({ !$0.isWarning }).count == before, let direction, let action else { return nil }
        return Policy(direction: direction, selector: sel, action: action, origin: "\(path):\(t.line)")
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(self.drop { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }.reversed())
    }
}

func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a), y = Array(b)
    if x.isEmpty { return y.count }
    if y.isEmpty { return x.count }
    var prev = Array(0...y.count)
    for i in 1...x.count {
        var cur = [i] + [Int](repeating: 0, count: y.count)
        for j in 1...y.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[y.count]
}
