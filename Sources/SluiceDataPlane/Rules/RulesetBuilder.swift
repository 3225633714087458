import Foundation
import SluiceConfig
import SluiceCore
import SluiceIKE

/// How packets reach the queues.
public enum QueueBackend: String, Sendable {
    /// nftables' own `queue` statement.
    case native
    /// Kernels without nft_queue: nftables classifies and marks, and the xtables NFQUEUE
    /// target (installed with iptables-nft, through nft_compat) queues by that mark.
    case xtables
}

/// Compiles the SPD into Sluice's own nftables table, `inet sluice`.
///
/// Where each chain sits, and why (priorities relative to the kernel's named ones):
/// - `esp_in`      prerouting, raw - 1 (-301): inbound ESP to our SA addresses, after
///                 defragmentation (-400) and before conntrack (-200), so conntrack and
///                 the admin's filters see the decrypted inner packet.
/// - `clear_in`    prerouting, raw + 10 (-290): drops clear packets that an inbound
///                 PROTECT policy says must arrive encrypted (decrypted ones carry our mark).
/// - `protect_fwd` prerouting, mangle - 1 (-151): forwarded PROTECT traffic, before the
///                 routing decision so the ESP packet is routed to the peer.
/// - `protect_out` output, 140: locally sent PROTECT traffic after the admin's filter (0);
///                 the kernel re-routes a mangled packet only in OUTPUT.
/// - `guard_*`     one priority after each queueing point: a packet that carries a queue
///                 mark but was never processed is dropped. If someone flushes the
///                 iptables-nft rules, traffic stops instead of leaking (fail closed).
///
/// Marks: bits [shift, shift+8) of the packet mark are Sluice's. Bit 7 of that field
/// ("processed") is set in every verdict, so nothing is queued twice; bits 0-6 carry
/// queue+1 between classification and the xtables NFQUEUE rule.
public struct RulesetBuilder: Sendable {
    /// Settings (queues, marks, defaults, fail mode, ...) come from the config file.
    public let config: SluiceConfiguration
    /// The SPD and SAD the rules are compiled from: the config's, or the SA manager's whole
    /// set (config and runtime entries) in the daemon.
    public let policies: [Policy]
    public let associations: [SAConfig]
    public let backend: QueueBackend

    public static let tableName = "sluice"
    public static let iptablesComment = "sluice"

    /// The rules a start installs: the file's policies and SAs, and the trap policies of its
    /// IKE children (their traffic is queued from the first packet, SA or not).
    public init(config: SluiceConfiguration, backend: QueueBackend) {
        self.init(config: config, policies: config.policies + RulesetBuilder.trapPolicies(config),
                  associations: config.associations.map(\.config), backend: backend)
    }

    static func trapPolicies(_ config: SluiceConfiguration) -> [Policy] {
        guard let profiles = try? Daemon.trapProfiles(config) else { return [] }
        return profiles.flatMap { c in c.children.flatMap { ch in
            let t = IKEAgent.trapPolicies(c, ch)
            return t.outbound + t.inbound
        } }
    }

    public init(config: SluiceConfiguration, policies: [Policy], associations: [SAConfig], backend: QueueBackend) {
        self.config = config
        self.policies = policies
        self.associations = associations
        self.backend = backend
    }

    var fieldMask: UInt32 { UInt32(0xFF) << UInt32(config.markShift) }
    var processedBit: UInt32 { UInt32(0x80) << UInt32(config.markShift) }
    func queueMark(_ index: Int) -> UInt32 { UInt32(index + 1) << UInt32(config.markShift) }
    static func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }

    /// The mark a verdict gives a packet: Sluice's field cleared, processed bit set.
    public static func verdictMark(original: UInt32, shift: Int) -> UInt32 {
        (original & ~(UInt32(0xFF) << UInt32(shift))) | (UInt32(0x80) << UInt32(shift))
    }

    public enum Hook: String, CaseIterable, Sendable {
        case espIn = "esp_in", protectForward = "protect_fwd", protectOutput = "protect_out"

        var nftHook: String { self == .protectOutput ? "output" : "prerouting" }
        /// Priority of the classifying chain in `inet sluice`.
        var priority: String {
            switch self {
            case .espIn: return "raw - 1"
            case .protectForward: return "mangle - 1"
            case .protectOutput: return "140"
            }
        }
        /// Where iptables-nft puts the table that queues for this hook (one priority later).
        var xtTable: String {
            switch self {
            case .espIn: return "raw"
            case .protectForward: return "mangle"
            case .protectOutput: return "security"
            }
        }
        var xtChain: String { self == .protectOutput ? "OUTPUT" : "PREROUTING" }
        var guardPriority: String {
            switch self {
            case .espIn: return "raw + 1"
            case .protectForward: return "mangle + 1"
            case .protectOutput: return "160"
            }
        }
    }

    // MARK: selectors

    static func protoName(_ p: UInt8) -> String {
        switch p {
        case 1: return "icmp"
        case 6: return "tcp"
        case 17: return "udp"
        case 50: return "esp"
        case 58: return "ipv6-icmp"
        case 132: return "sctp"
        default: return String(p)
        }
    }

    static func range(_ r: ClosedRange<UInt16>) -> String {
        r.lowerBound == r.upperBound ? "\(r.lowerBound)" : "\(r.lowerBound)-\(r.upperBound)"
    }

    /// nftables match expressions for an SPD selector.
    public static func match(_ s: TrafficSelector) -> String {
        var parts: [String] = []
        if let p = s.src { parts.append("\(p.address.family == .v4 ? "ip" : "ip6") saddr \(p)") }
        if let p = s.dst { parts.append("\(p.address.family == .v4 ? "ip" : "ip6") daddr \(p)") }
        if let proto = s.proto {
            let name = protoName(proto)
            switch proto {
            case 6, 17, 132:
                if s.srcPorts == nil && s.dstPorts == nil { parts.append("meta l4proto \(name)") }
                if let r = s.srcPorts { parts.append("\(name) sport \(range(r))") }
                if let r = s.dstPorts { parts.append("\(name) dport \(range(r))") }
            case 1, 58:
                let kw = proto == 1 ? "icmp" : "icmpv6"
                if s.icmpType == nil { parts.append("meta l4proto \(name)") }
                if let t = s.icmpType { parts.append("\(kw) type \(t)") }
                if let c = s.icmpCode { parts.append("\(kw) code \(c)") }
            default:
                parts.append("meta l4proto \(name)")
            }
        }
        return parts.joined(separator: " ")
    }

    // MARK: queueing

    /// The statement that hands a packet to the queues, keeping each flow (or SA) on one.
    func spread(_ hook: Hook, hashExpression: String) -> String {
        let n = config.queues
        if n == 1 { return "goto \(queueChain(hook, 0))" }
        let targets = (0..<n).map { "\($0) : goto \(queueChain(hook, $0))" }.joined(separator: ", ")
        return "\(hashExpression) mod \(n) vmap { \(targets) }"
    }

    func queueChain(_ hook: Hook, _ index: Int) -> String { "\(hook.rawValue)_q\(index)" }

    /// The GSO twin of queue `index` (see `SluiceConfiguration.gso`), as an index past the
    /// plain queues: its number is queue_base + queues + index, its mark index + queues + 1.
    func gsoIndex(_ index: Int) -> Int { config.queues + index }

    /// Hooks whose TCP goes to the GSO twins: outbound clear traffic only. Inbound ESP is
    /// never GSO, and a whole UDP GSO packet could not be cut right (its datagram size is
    /// not passed to user space), so the kernel segments everything else first.
    func usesGSO(_ hook: Hook) -> Bool { config.gso && hook != .espIn }

    func queueStatement(_ index: Int) -> String {
        let q = config.queueBase + index
        switch backend {
        case .native:
            return config.fail == .open ? "queue flags bypass num \(q)" : "queue num \(q)"
        case .xtables:
            return "meta mark set meta mark & \(RulesetBuilder.hex(~fieldMask)) | \(RulesetBuilder.hex(queueMark(index)))"
        }
    }

    /// The MSS that still fits once ESP is added (per SA), for TCP SYNs under PROTECT.
    static func clampedMSS(_ sa: SAConfig, innerFamily: IPAddress.Family) -> Int {
        let outer = sa.mode == .tunnel ? (sa.local.family == .v4 ? 20 : 40) : 0
        let udp = sa.udpEncapsulation ? 8 : 0
        let inner = innerFamily == .v4 ? 20 : 40
        return sa.mtu - outer - udp - sa.proposal.maxOverhead - inner - 20
    }

    /// The rules that lower the MSS of TCP SYNs under a PROTECT policy so the segments still
    /// fit once sealed: one per inner family the selector can match, to the smallest MSS of
    /// the policy's SAs. None when the selector cannot match TCP (another protocol).
    func mssClampRules(_ selector: TrafficSelector, sas names: [String]) -> [String] {
        guard selector.proto == nil || selector.proto == 6 else { return [] }
        let sas = associations.filter { names.contains($0.name) }
        guard !sas.isEmpty else { return [] }
        let m = RulesetBuilder.match(selector)
        return (selector.family.map { [$0] } ?? [.v4, .v6]).map { fam in
            let mss = sas.map { RulesetBuilder.clampedMSS($0, innerFamily: fam) }.min()!
            let fm = selector.family == nil ? "meta nfproto \(fam == .v4 ? "ipv4" : "ipv6") " : ""
            return "\(fm)\(m.isEmpty ? "" : m + " ")tcp flags syn tcp option maxseg size > \(mss) tcp option maxseg size set \(mss)"
        }
    }

    /// Neighbour discovery must work before any SA does (RFC 4301 §4.4.1 leaves it to policy).
    static let ndExemption = "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } return"

    // MARK: ruleset

    /// The complete `nft -f` script: creates (or replaces) `inet sluice` and nothing else.
    ///
    /// `reload` keeps the table and its chains and only swaps the rules (one transaction):
    /// deleting a base chain unregisters its hook, and the kernel then flushes every packet
    /// waiting in any queue of the namespace (nf_queue_nf_hook_drop), losing packets in flight.
    public func nftScript(reload: Bool = false) -> String {
        let t = RulesetBuilder.tableName
        let P = RulesetBuilder.hex(processedBit)
        var out: [String] = []
        out.append("# Generated by sluice from \(config.path); backend: \(backend.rawValue)")
        out.append("# Installing replaces table inet \(t) only; every other table is left alone.")
        out.append("table inet \(t)")
        out.append(reload ? "flush table inet \(t)" : "delete table inet \(t)")
        out.append("table inet \(t) {")

        // Inbound ESP.
        let inbound = associations.filter { $0.direction == .inbound }
        var locals4: [String] = [], locals6: [String] = []
        for sa in inbound {
            let a = sa.local.description
            if sa.local.family == .v4 { if !locals4.contains(a) { locals4.append(a) } } else if !locals6.contains(a) { locals6.append(a) }
        }
        let natT = inbound.contains { $0.udpEncapsulation }
        out.append("\tchain esp_in {")
        out.append("\t\ttype filter hook prerouting priority raw - 1; policy accept;")
        out.append("\t\tmeta mark & \(P) == \(P) return")
        if config.passthrough {
            out.append("\t\t# passthrough mode: queue and accept unchanged")
        }
        for (fam, list) in [("ip", locals4), ("ip6", locals6)] where !list.isEmpty {
            let set = list.count == 1 ? list[0] : "{ \(list.joined(separator: ", ")) }"
            out.append("\t\t\(fam) daddr \(set) meta l4proto esp \(spread(.espIn, hashExpression: "jhash esp spi"))")
            if natT {
                out.append("\t\t\(fam) daddr \(set) udp dport 4500 \(spread(.espIn, hashExpression: "jhash @th,64,32"))")
            }
        }
        out.append("\t}")

        // Clear packets that must have arrived encrypted.
        out.append("\tchain clear_in {")
        out.append("\t\ttype filter hook prerouting priority raw + 10; policy accept;")
        out.append("\t\tiif lo return")
        out.append("\t\tmeta mark & \(P) == \(P) return")
        out.append("\t\t# IKE, ESP and IPv6 neighbour discovery are never policed as clear traffic")
        out.append("\t\tmeta l4proto esp return")
        out.append("\t\tudp dport { 500, 4500 } return")
        out.append("\t\t\(RulesetBuilder.ndExemption)")
        for p in policies where p.direction == .inbound {
            let m = RulesetBuilder.match(p.selector)
            let sel = m.isEmpty ? "" : m + " "
            switch p.action {
            case .protect:
                // Passthrough measures the redirect alone: nothing is encrypted, so clear
                // arrivals are expected and must not be dropped.
                if config.passthrough { out.append("\t\t\(sel)return comment \"passthrough: clear allowed\"") }
                else { out.append("\t\t\(sel)counter drop comment \"\(DropReason.clearProtected.rawValue) \(p.origin)\"") }
            case .bypass: out.append("\t\t\(sel)return")
            case .discard: out.append("\t\t\(sel)counter drop comment \"\(DropReason.policyDiscard.rawValue) \(p.origin)\"")
            }
        }
        if config.defaultInbound == .discard { out.append("\t\tcounter drop comment \"\(DropReason.noPolicy.rawValue) default_in\"") }
        out.append("\t}")

        // Outbound policies, once for forwarded and once for local traffic.
        for hook in [Hook.protectForward, .protectOutput] {
            out.append("\tchain \(hook.rawValue) {")
            out.append("\t\ttype filter hook \(hook.nftHook) priority \(hook.priority); policy accept;")
            out.append("\t\tmeta mark & \(P) == \(P) return")
            if hook == .protectOutput { out.append("\t\toif lo return") } else { out.append("\t\tfib daddr type local return") }
            out.append("\t\tmeta l4proto esp return")
            out.append("\t\tudp sport { 500, 4500 } udp dport { 500, 4500 } return")
            out.append("\t\t\(RulesetBuilder.ndExemption)")
            for p in policies where p.direction == .outbound {
                let m = RulesetBuilder.match(p.selector)
                let sel = m.isEmpty ? "" : m + " "
                switch p.action {
                case let .protect(names):
                    if config.mssClamp { out += mssClampRules(p.selector, sas: names).map { "\t\t" + $0 } }
                    out.append("\t\t\(sel)\(spread(hook, hashExpression: "symhash"))")
                case .bypass:
                    out.append("\t\t\(sel)return")
                case .discard:
                    out.append("\t\t\(sel)counter drop comment \"\(DropReason.policyDiscard.rawValue) \(p.origin)\"")
                }
            }
            if config.defaultOutbound == .discard { out.append("\t\tcounter drop comment \"\(DropReason.noPolicy.rawValue) default_out\"") }
            out.append("\t}")
        }

        for hook in Hook.allCases {
            for i in 0..<config.queues {
                out.append("\tchain \(queueChain(hook, i)) {")
                if usesGSO(hook) {
                    let twin = queueStatement(gsoIndex(i))
                    out.append("\t\tmeta l4proto tcp \(twin)\(backend == .xtables ? " return" : "") comment \"whole TCP packets (GSO)\"")
                }
                out.append("\t\t\(queueStatement(i))")
                out.append("\t}")
            }
        }

        if backend == .xtables && config.fail == .closed {
            // Fail closed even if the iptables-nft half goes missing.
            for hook in Hook.allCases {
                out.append("\tchain guard_\(hook.rawValue) {")
                out.append("\t\ttype filter hook \(hook.nftHook) priority \(hook.guardPriority); policy accept;")
                out.append("\t\tmeta mark & \(RulesetBuilder.hex(fieldMask)) != 0 meta mark & \(P) == 0 counter drop comment \"\(DropReason.unprocessed.rawValue) queued but never processed\"")
                out.append("\t}")
            }
        }
        out.append("}")
        return out.joined(separator: "\n") + "\n"
    }

    /// For the xtables backend: the iptables-nft / ip6tables-nft rules (as argument lists,
    /// without the leading -A/-D) that queue marked packets.
    public func xtRules() -> [(tool: String, table: String, chain: String, spec: [String])] {
        guard backend == .xtables else { return [] }
        var rules: [(String, String, String, [String])] = []
        for tool in ["iptables-nft", "ip6tables-nft"] {
            for hook in Hook.allCases {
                let indexes = Array(0..<config.queues) + (usesGSO(hook) ? (0..<config.queues).map(gsoIndex) : [])
                for i in indexes {
                    var spec = ["-m", "mark", "--mark", "\(RulesetBuilder.hex(queueMark(i)))/\(RulesetBuilder.hex(fieldMask))",
                                "-m", "comment", "--comment", RulesetBuilder.iptablesComment,
                                "-j", "NFQUEUE", "--queue-num", String(config.queueBase + i)]
                    if config.fail == .open { spec.append("--queue-bypass") }
                    rules.append((tool, hook.xtTable, hook.xtChain, spec))
                }
            }
        }
        return rules
    }

    /// Reads the drop counters of Sluice's own rules (`nft -j list table inet sluice`),
    /// summed by reason: the first word of each counting rule's comment.
    public static func kernelDrops(nftJSON: String) -> [String: UInt64] {
        guard let data = nftJSON.data(using: .utf8),
              let doc = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let items = doc["nftables"] as? [[String: Any]] else { return [:] }
        var out: [String: UInt64] = [:]
        for item in items {
            guard let rule = item["rule"] as? [String: Any], let comment = rule["comment"] as? String,
                  let exprs = rule["expr"] as? [[String: Any]] else { continue }
            let reason = String(comment.split(separator: " ").first ?? "")
            guard DropReason(rawValue: reason) != nil else { continue }
            for e in exprs {
                if let c = e["counter"] as? [String: Any], let n = (c["packets"] as? NSNumber)?.uint64Value {
                    out[reason, default: 0] += n
                }
            }
        }
        return out
    }

    /// Everything `sluice rules` prints: the nft script, then any iptables-nft commands.
    public func describe() -> String {
        var s = nftScript()
        let xt = xtRules()
        if !xt.isEmpty {
            s += "\n# This kernel has no nft 'queue' expression: the xt NFQUEUE target queues marked packets.\n"
            for r in xt { s += "# \(r.tool) -t \(r.table) -A \(r.chain) \(r.spec.joined(separator: " "))\n" }
        }
        return s
    }
}
