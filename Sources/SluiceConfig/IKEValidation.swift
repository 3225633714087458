#if canImport(Glibc)
import Glibc
#endif
import SluiceCore
import SluiceIKE

/// `[[connection]]`, `[[connection.child]]` and `[ike]`. Defaults follow strongSwan's
/// swanctl.conf and charon, so a config ported from there means the same here.
extension Validator {
    static let connectionKeys: Set<String> = ["name", "local_addrs", "remote_addrs", "proposals", "local_id", "remote_id",
                                              "auth", "psk", "psk_file", "local_cert", "local_key", "ca_certs", "encap",
                                              "dpd_delay", "rekey_time", "fragmentation"]
    static let childKeys: Set<String> = ["name", "local_ts", "remote_ts", "esp_proposals", "mode", "start_action",
                                         "dpd_action", "rekey_time", "rekey_bytes", "rekey_packets", "life_time",
                                         "life_bytes", "life_packets", "replay_window", "mtu", "df", "tfc_pad"]
    /// Timers in seconds fit an Int32, as in the kernel's and strongSwan's own.
    static let maxSeconds = Int64(Int32.max)
    /// strongSwan warns below this; a shorter PSK falls to an offline guess from one IKE_AUTH.
    static let shortPSK = 16

    /// The addresses a connection's children are checked against, when they parsed.
    struct ConnectionEnds { var local: [IPAddress]; var remote: [IPAddress] }

    mutating func buildIKESettings(_ t: TOMLTable) -> IKESettings {
        unknownKeys(t, allowed: Set(IKESettings.keys), context: "[ike]")
        var s = IKESettings()
        if let (v, _) = number(t, "retransmit_timeout", 0.1...600) { s.retransmitTimeout = v }
        if let (v, _) = number(t, "retransmit_base", 1...10) { s.retransmitBase = v }
        if let (v, _) = int(t, "retransmit_tries", 0...30) { s.retransmitTries = Int(v) }
        if let (v, _) = number(t, "keep_alive", 0...3600) { s.keepAlive = v }
        if let (v, _) = int(t, "hold_packets", 0...4096) { s.holdPackets = Int(v) }
        if let (v, _) = int(t, "hold_bytes", 0...(16 << 20)) { s.holdBytes = Int(v) }
        if let (v, _) = int(t, "hold_packets_total", 0...65536) { s.holdPacketsTotal = Int(v) }
        if let (v, _) = number(t, "hold_timeout", 0.1...300) { s.holdTimeout = v }
        if let (v, line) = int(t, "fragment_size", 0...65535) {
            // A fragment must hold its headers and some payload; 0 picks the family's minimum MTU.
            if v != 0 && v < 576 { error(line, "fragment_size = \(v) is below 576, the smallest IPv4 datagram every host takes; 0 picks 576 for IPv4 and 1280 for IPv6") }
            else { s.fragmentSize = Int(v) }
        }
        if let (v, _) = int(t, "max_packet", 1280...65535) { s.maxPacket = Int(v) }
        return s
    }

    /// Every [[connection]], each with the [[connection.child]] tables between it and the
    /// next one (the TOML reader keeps them flat; line order says which is whose).
    mutating func buildConnections(_ doc: TOMLDocument, saNames: [String: Int]) -> [IKEConnection] {
        let parents = doc.arrays["connection"] ?? []
        var childTables = [[TOMLTable]](repeating: [], count: parents.count)
        for child in doc.arrays["connection.child"] ?? [] {
            guard let i = parents.lastIndex(where: { $0.line < child.line }) else {
                error(child.line, "[[connection.child]] comes before any [[connection]]: a child belongs to the [[connection]] above it")
                continue
            }
            childTables[i].append(child)
        }
        var connections: [IKEConnection] = []
        var connectionLines: [String: Int] = [:]
        var childLines: [String: Int] = [:]
        for (i, t) in parents.enumerated() {
            let (parsed, ends) = buildConnection(t)
            var built = parsed
            if let name = built?.name {
                if let first = connectionLines[name] {
                    error(line(t, "name"), "connection name \"\(name)\" is already used at line \(first)")
                    built = nil
                } else if let sa = saNames[name] {
                    error(line(t, "name"), "connection name \"\(name)\" is already used by the [[sa]] at line \(sa)")
                    built = nil
                } else {
                    connectionLines[name] = t.line
                }
            }
            var children: [IKEChildConfig] = []
            for c in childTables[i] {
                guard let child = buildChild(c, ends: ends) else { continue }
                // Child names are the CLI's handles, so they are unique across connections.
                if let first = childLines[child.name] {
                    error(line(c, "name"), "child name \"\(child.name)\" is already used at line \(first)")
                    continue
                }
                if let sa = saNames[child.name] {
                    error(line(c, "name"), "child name \"\(child.name)\" is already used by the [[sa]] at line \(sa)")
                    continue
                }
                childLines[child.name] = c.line
                children.append(child)
            }
            if var conn = built {
                conn.children = children
                connections.append(conn)
            }
        }
        return connections
    }

    mutating func buildConnection(_ t: TOMLTable) -> (IKEConnection?, ConnectionEnds?) {
        unknownKeys(t, allowed: Validator.connectionKeys, context: "[[connection]]")
        let before = errorCount
        let name = require(t, "name", validName(t), what: "connection")
        let local = require(t, "local_addrs", addressList(t, "local_addrs"), what: "connection")
        let remote = addressList(t, "remote_addrs") ?? []
        if let local, !remote.isEmpty, Set(local.map(\.family)).isDisjoint(with: remote.map(\.family)) {
            error(line(t, "remote_addrs"), "remote_addrs (\(familyNames(remote.map(\.family)))) and local_addrs (\(familyNames(local.map(\.family)))) share no address family")
        }
        let proposals = proposalList(t, "proposals") ?? ["default"]
        let localID = identity(t, "local_id")
        let remoteID = identity(t, "remote_id")
        let auth = authentication(t)
        let encap = bool(t, "encap") ?? false
        // swanctl's values; "force" differs from "yes" only for IKEv1, so here it is "yes".
        let fragmentation = choice(t, "fragmentation", ["yes": IKEFragmentation.yes, "force": .yes, "accept": .accept, "no": .no])?.0 ?? .yes
        let dpdDelay = Int(int(t, "dpd_delay", 0...Validator.maxSeconds)?.0 ?? 0)
        let rekeyTime = Int(int(t, "rekey_time", 0...Validator.maxSeconds)?.0 ?? 14400)
        let ends = local.map { ConnectionEnds(local: $0, remote: remote) }
        guard errorCount == before, let name, let local, let auth else { return (nil, ends) }
        let conn = IKEConnection(name: name, line: t.line, localAddrs: local, remoteAddrs: remote, proposals: proposals,
                                 localID: localID, remoteID: remoteID, auth: auth, encap: encap, dpdDelay: dpdDelay,
                                 rekeyTime: rekeyTime, fragmentation: fragmentation, children: [])
        return (conn, ends)
    }

    mutating func buildChild(_ t: TOMLTable, ends: ConnectionEnds?) -> IKEChildConfig? {
        unknownKeys(t, allowed: Validator.childKeys, context: "[[connection.child]]")
        let before = errorCount
        let name = require(t, "name", validName(t), what: "connection.child")
        let mode = choice(t, "mode", ["tunnel": ESPMode.tunnel, "transport": .transport])?.0 ?? .tunnel
        let localTS = selectors(t, "local_ts") ?? []
        let remoteTS = selectors(t, "remote_ts") ?? []
        let espProposals = proposalList(t, "esp_proposals") ?? ["default"]
        let starts = Dictionary(uniqueKeysWithValues: [StartAction.none, .trap, .start].map { ($0.rawValue, $0) })
        let startAction = choice(t, "start_action", starts)?.0 ?? .none
        let dpds = Dictionary(uniqueKeysWithValues: [DPDAction.clear, .trap, .restart].map { ($0.rawValue, $0) })
        let dpdAction = choice(t, "dpd_action", dpds)?.0 ?? .clear
        let rekeyTime = UInt64(int(t, "rekey_time", 0...Validator.maxSeconds)?.0 ?? 3600)
        let rekeyBytes = UInt64(int(t, "rekey_bytes", 0...Int64.max)?.0 ?? 0)
        let rekeyPackets = UInt64(int(t, "rekey_packets", 0...Int64.max)?.0 ?? 0)
        let lifeTime = hardLimit(t, "life_time", rekeyKey: "rekey_time", rekey: rekeyTime, max: Validator.maxSeconds)
        let lifeBytes = hardLimit(t, "life_bytes", rekeyKey: "rekey_bytes", rekey: rekeyBytes, max: Int64.max)
        let lifePackets = hardLimit(t, "life_packets", rekeyKey: "rekey_packets", rekey: rekeyPackets, max: Int64.max)
        let options = dataPlaneOptions(t, mode: mode)
        if let ends {
            checkFamilies(t, mode: mode, localTS: localTS, remoteTS: remoteTS, ends: ends)
            if startAction != .none, ends.remote.isEmpty {
                error(line(t, "start_action"), "start_action = \"\(startAction.rawValue)\" needs remote_addrs: with %any there is no peer to start it with")
            }
        }
        guard errorCount == before, let name else { return nil }
        return IKEChildConfig(name: name, line: t.line, localTS: localTS, remoteTS: remoteTS, espProposals: espProposals,
                              mode: mode, startAction: startAction, dpdAction: dpdAction, rekeyTime: Int(rekeyTime),
                              rekeyBytes: rekeyBytes, rekeyPackets: rekeyPackets, lifeTime: Int(lifeTime),
                              lifeBytes: lifeBytes, lifePackets: lifePackets, replayWindow: options.replayWindow,
                              mtu: options.mtu, dfPolicy: options.dfPolicy, tfcPadTo: options.tfcPadTo)
    }

    /// The selectors of both sides must share a family, or no packet could ever match;
    /// transport mode carries the hosts' own traffic, so only their own family.
    mutating func checkFamilies(_ t: TOMLTable, mode: ESPMode, localTS: [TrafficSelectorSpec], remoteTS: [TrafficSelectorSpec],
                                ends: ConnectionEnds) {
        let outer = Set(ends.local.map(\.family))
        let local = localTS.isEmpty ? outer : Set(localTS.map(\.prefix.address.family))
        let remote: Set<IPAddress.Family> = !remoteTS.isEmpty ? Set(remoteTS.map(\.prefix.address.family))
            : ends.remote.isEmpty ? [.v4, .v6] : Set(ends.remote.map(\.family))
        if local.isDisjoint(with: remote) {
            let localText = localTS.isEmpty ? "by default local_addrs: \(familyNames(local))" : familyNames(local)
            let remoteText = remoteTS.isEmpty ? "by default remote_addrs: \(familyNames(remote))" : familyNames(remote)
            let at = t["remote_ts"] != nil ? "remote_ts" : "local_ts"
            error(line(t, at), "local_ts (\(localText)) and remote_ts (\(remoteText)) share no address family, so no packet could match")
            return
        }
        guard mode == .transport else { return }
        for (k, list) in [("local_ts", localTS), ("remote_ts", remoteTS)] {
            if let ts = list.first(where: { !outer.contains($0.prefix.address.family) }) {
                error(line(t, k), "\(k) \"\(ts)\" is not of the family of local_addrs (\(familyNames(outer))): only tunnel mode carries the other family")
            }
        }
    }

    func familyNames<S: Sequence>(_ families: S) -> String where S.Element == IPAddress.Family {
        let set = Set(families)
        return [(IPAddress.Family.v4, "IPv4"), (.v6, "IPv6")].filter { set.contains($0.0) }.map(\.1).joined(separator: " and ")
    }

    /// A hard limit (life_*): by default 10% above its rekey value, as strongSwan; when set
    /// it must lie above it (0 = off on either side).
    mutating func hardLimit(_ t: TOMLTable, _ k: String, rekeyKey: String, rekey: UInt64, max: Int64) -> UInt64 {
        guard t[k] != nil else { return rekey + rekey / 10 }
        guard let (v, line) = int(t, k, 0...max) else { return 0 }
        let life = UInt64(v)
        if life != 0, rekey != 0, life <= rekey {
            error(line, "\(k) = \(life) must be above \(rekeyKey) = \(rekey): the CHILD_SA would end before it is rekeyed")
        }
        return life
    }

    // MARK: value shapes

    /// A one-line array of strings; one string stands for a list of one.
    mutating func stringList(_ t: TOMLTable, _ k: String) -> ([String], Int)? {
        guard let e = t[k] else { return nil }
        switch e.value {
        case let .string(s): return ([s], e.line)
        case let .array(items):
            guard !items.isEmpty else { error(e.line, "\(k) = [] is empty: give at least one, or leave \(k) out"); return nil }
            var list: [String] = []
            for item in items {
                guard case let .string(s) = item else { error(e.line, "\(k) must hold strings, not \(item.typeName)"); return nil }
                list.append(s)
            }
            return (list, e.line)
        default:
            error(e.line, "\(k) must be an array of strings, not \(e.value.typeName)")
            return nil
        }
    }

    /// local_addrs / remote_addrs: literal addresses; remote_addrs may be ["%any"] (returned empty).
    mutating func addressList(_ t: TOMLTable, _ k: String) -> [IPAddress]? {
        guard let (list, line) = stringList(t, k) else { return nil }
        if k == "remote_addrs", list == ["%any"] { return [] }
        var out: [IPAddress] = []
        for s in list {
            if s == "%any" {
                error(line, k == "remote_addrs" ? "%any stands alone: remote_addrs = [\"%any\"]"
                    : "local_addrs must be literal addresses, not %any: Sluice binds to each")
                return nil
            }
            guard let a = IPAddress(s) else {
                error(line, "\(k): \"\(s)\" is not an IPv4 or IPv6 address (host names and ranges are not supported)")
                return nil
            }
            guard !out.contains(a) else { error(line, "\(k) lists \(a) twice"); return nil }
            out.append(a)
        }
        return out
    }

    /// proposals / esp_proposals: strongSwan's words ("aes128gcm16-prfsha256-x25519"), each
    /// parsed as the IKE agent will, so an unknown or unsupported algorithm is named here.
    mutating func proposalList(_ t: TOMLTable, _ k: String) -> [String]? {
        guard let (list, line) = stringList(t, k) else { return nil }
        for p in list {
            let shaped = !p.isEmpty && !p.hasPrefix("-") && !p.hasSuffix("-") && !p.contains("--")
                && p.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
            if !shaped {
                error(line, "\(k): \"\(p)\" is not a proposal like \"aes128gcm16-prfsha256-x25519\" (lower-case letters, digits and '-')")
                return nil
            }
            do {
                _ = k == "esp_proposals" ? try ProposalSpec.parseESP(p) : try ProposalSpec.parseIKE(p)
            } catch {
                self.error(line, "\(k): \(error)")
                return nil
            }
        }
        return list
    }

    /// local_ts / remote_ts; each bad selector is reported.
    mutating func selectors(_ t: TOMLTable, _ k: String) -> [TrafficSelectorSpec]? {
        guard let (list, line) = stringList(t, k) else { return nil }
        var out: [TrafficSelectorSpec] = []
        var ok = true
        for s in list {
            do {
                let ts = try TrafficSelectorSpec(parsing: s)
                if TrafficSelectorSpec.hasHostBits(s) { warn(line, "\(k): \"\(s)\" has host bits set; it means \(ts)") }
                out.append(ts)
            } catch {
                self.error(line, "\(k): \(error.message)")
                ok = false
            }
        }
        return ok ? out : nil
    }

    /// local_id / remote_id: an IP address, a distinguished name ("CN=gw-a, O=Example"), an
    /// FQDN or user@fqdn (RFC 7296 §3.5 ID types); remote_id may be %any, which is also its
    /// default (nil), or a DN with `*` values.
    mutating func identity(_ t: TOMLTable, _ k: String) -> String? {
        guard let (s, line) = string(t, k) else { return nil }
        if s == "%any" {
            if k == "remote_id" { return nil }
            error(line, "local_id cannot be %any: the peer must be told who we are")
            return nil
        }
        if s.contains("=") {
            do {
                let dn = try DistinguishedName(parsing: s)
                if k == "local_id", dn.hasWildcard { error(line, "local_id = \"\(s)\" has a '*' value: only remote_id may be a pattern"); return nil }
            } catch {
                self.error(line, "\(k) = \"\(s)\" is not a distinguished name like \"CN=gw-a, O=Example\": \(error)")
                return nil
            }
            return s
        }
        guard Validator.isIdentity(s) else {
            error(line, "\(k) = \"\(s)\" is not an IP address, a DN (CN=gw, O=Example), an FQDN (gw.example) or user@fqdn\(s.hasPrefix("@") ? " (write the FQDN without '@')" : "")")
            return nil
        }
        return s
    }

    static func isIdentity(_ s: String) -> Bool {
        if IPAddress(s) != nil { return true }
        guard let at = s.firstIndex(of: "@") else { return isFQDN(s[...]) }
        let user = s[..<at]
        return !user.isEmpty && user.allSatisfy { $0.isASCII && $0 > " " && $0 != "\u{7f}" } && isFQDN(s[s.index(after: at)...])
    }

    static func isFQDN(_ s: Substring) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }

    // MARK: authentication

    /// auth with its own keys only: psk/psk_file for "psk"; local_cert, local_key and
    /// ca_certs for "pubkey", strongSwan's default.
    mutating func authentication(_ t: TOMLTable) -> IKEAuth? {
        let pskKeys = ["psk", "psk_file"].filter { t[$0] != nil }
        let certKeys = ["local_cert", "local_key", "ca_certs"].filter { t[$0] != nil }
        let chosen = choice(t, "auth", ["psk": "psk", "pubkey": "pubkey"])?.0
        if t["auth"] != nil && chosen == nil { return nil }
        if chosen == nil && pskKeys.isEmpty && certKeys.isEmpty {
            error(t.line, "[[connection]] needs \"auth\": \"psk\" with psk_file (or psk), or \"pubkey\" with local_cert, local_key and ca_certs")
            return nil
        }
        let kind = chosen ?? "pubkey"
        let misplaced = kind == "psk" ? certKeys : pskKeys
        for k in misplaced {
            error(line(t, k), chosen == nil ? "\(k) needs auth = \"psk\" (auth is \"pubkey\" by default, as in strongSwan)"
                : "\(k) goes with auth = \"\(kind == "psk" ? "pubkey" : "psk")\", not \"\(kind)\"")
        }
        guard misplaced.isEmpty else { return nil }
        return kind == "psk" ? presharedKey(t) : certificates(t)
    }

    mutating func presharedKey(_ t: TOMLTable) -> IKEAuth? {
        let raw: SecretBytes, key: String, keyLine: Int
        switch (t["psk"], t["psk_file"]) {
        case (nil, nil):
            error(line(t, "auth"), "auth = \"psk\" needs psk_file = \"PATH\" (mode 0600) or psk = \"...\"")
            return nil
        case (.some, .some):
            error(line(t, "psk_file"), "give either psk or psk_file, not both")
            return nil
        case (.some, nil):
            guard let (s, l) = string(t, "psk") else { return nil }
            raw = SecretBytes(Array(s.utf8)); key = "psk"; keyLine = l
            warnIfConfigIsOpen(l)
        case (nil, .some):
            guard let (name, l) = string(t, "psk_file"), let full = privateFile("psk_file", name, line: l) else { return nil }
            guard let bytes = try? ConfigLoader.readBytes(full) else { error(l, "psk_file \(full) cannot be read"); return nil }
            let file = SecretBytes(bytes) // wiped when this scope ends
            var end = file.count
            while end > 0, file.bytes[end - 1] == 0x0A || file.bytes[end - 1] == 0x0D { end -= 1 } // the editor's final newline
            raw = SecretBytes(Array(file.bytes[..<end])); key = "psk_file \(full)"; keyLine = l
        }
        guard raw.count > 0 else { error(keyLine, "\(key) is empty"); return nil }
        guard let psk = PSKText.decode(raw.bytes) else {
            error(keyLine, "\(key) starts with \(raw.bytes.starts(with: Array("0s".utf8)) ? "0s" : "0x") but is not \(PSKText.encodingName(raw.bytes))")
            return nil
        }
        if psk.count < Validator.shortPSK {
            warn(keyLine, "\(key) is only \(psk.count) bytes: strongSwan accepts it, but a short PSK can be guessed offline from one captured IKE_AUTH; use 16 or more random bytes")
        }
        return .psk(SecretBytes(psk))
    }

    /// An inline PSK is only as private as the config file holding it.
    mutating func warnIfConfigIsOpen(_ line: Int) {
        var st = stat()
        guard stat(path, &st) == 0, st.st_mode & 0o077 != 0 else { return }
        warn(line, "psk is inline in a config that group or others can read (mode \(String(st.st_mode & 0o777, radix: 8))): use psk_file, or chmod 600 the config")
    }

    mutating func certificates(_ t: TOMLTable) -> IKEAuth? {
        let before = errorCount
        for k in ["local_cert", "local_key", "ca_certs"] where t[k] == nil {
            error(line(t, "auth"), "auth = \"pubkey\" needs \(k)\(k == "ca_certs" ? " = [\"PATH\", ...] to verify the peer" : " = \"PATH\"")")
        }
        var cert: String? = nil, key: String? = nil, cas: [String] = []
        if let (name, l) = string(t, "local_cert") { cert = existingFile("local_cert", name, line: l) }
        if let (name, l) = string(t, "local_key") { key = privateFile("local_key", name, line: l) }
        if let (names, l) = stringList(t, "ca_certs") {
            cas = names.compactMap { existingFile("ca_certs", $0, line: l) }
        }
        guard errorCount == before, let cert, let key, !cas.isEmpty else { return nil }
        return .pubkey(certificate: cert, privateKey: key, caCertificates: cas)
    }

    /// The full path of a regular file that exists, or nil with an error.
    mutating func existingFile(_ k: String, _ name: String, line: Int) -> String? {
        let full = resolve(name)
        var st = stat()
        guard stat(full, &st) == 0 else { error(line, "\(k) \(full): \(String(cString: strerror(errno)))"); return nil }
        guard st.st_mode & S_IFMT == S_IFREG else { error(line, "\(k) \(full) is not a regular file"); return nil }
        return full
    }
}
