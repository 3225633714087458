import Foundation
import Logging
import SluiceConfig
import SluiceCore
import SluiceIKE

/// The IKE agent as the SA manager's second user (after reload): connections from the
/// config file become profiles; negotiated CHILD_SAs arrive through `DataPlaneBackend`, and
/// the rules are re-rendered from everything the manager holds after each change.
extension Daemon {
    /// Profiles for the agent, with every string parsed (proposals were checked at load)
    /// and the certificate and key files of `auth = "pubkey"` read.
    static func profiles(_ config: SluiceConfiguration) throws -> [ConnectionProfile] {
        try profiles(config, credentials: true)
    }

    /// What the trap policies need (addresses, children), without reading any certificate
    /// or key file. Not for the agent: a pubkey connection's auth is left empty here.
    static func trapProfiles(_ config: SluiceConfiguration) throws -> [ConnectionProfile] {
        try profiles(config, credentials: false)
    }

    private static func profiles(_ config: SluiceConfiguration, credentials: Bool) throws -> [ConnectionProfile] {
        try config.connections.map { c in
            let at = "\(config.path):\(c.line): connection \(c.name)"
            func identity(_ text: String?, _ key: String) throws -> IDPayload? {
                guard let text else { return nil }
                do { return try IDPayload.parse(text) } catch { throw DaemonError("\(at): \(key) = \"\(text)\": \(error)") }
            }
            let localID = try identity(c.localID, "local_id"), remoteID = try identity(c.remoteID, "remote_id")
            let auth: ConnectionAuth
            switch c.auth {
            case let .psk(secret): auth = .psk(secret)
            case .pubkey where !credentials:
                auth = .psk(SecretBytes([]))
            case let .pubkey(certificate, privateKey, caCertificates):
                auth = .certificates(try Self.credentials(at: at, certificate: certificate, privateKey: privateKey,
                                                          caCertificates: caCertificates, localID: localID))
            }
            func parse(_ list: [String], esp: Bool, line: Int) throws -> [ProposalSpec] {
                var out: [ProposalSpec] = []
                for text in list {
                    do { out += esp ? try ProposalSpec.parseESP(text) : try ProposalSpec.parseIKE(text) } catch {
                        throw DaemonError("\(config.path):\(line): connection \(c.name): \(error)")
                    }
                }
                return out
            }
            let children = try c.children.map { ch in
                ChildProfile(
                    name: ch.name, localTS: ch.localTS.map(Self.selector), remoteTS: ch.remoteTS.map(Self.selector),
                    espProposals: try parse(ch.espProposals, esp: true, line: ch.line), mode: ch.mode,
                    startAction: StartAction(rawValue: ch.startAction.rawValue) ?? .none,
                    dpdAction: DeadPeerAction(rawValue: ch.dpdAction.rawValue) ?? .clear,
                    rekeyTime: Double(ch.rekeyTime), rekeyBytes: ch.rekeyBytes, rekeyPackets: ch.rekeyPackets,
                    lifeTime: Double(ch.lifeTime), lifeBytes: ch.lifeBytes, lifePackets: ch.lifePackets,
                    replayWindow: ch.replayWindow, mtu: ch.mtu, dfPolicy: ch.dfPolicy, tfcPadTo: ch.tfcPadTo)
            }
            var profile = ConnectionProfile(
                name: c.name, localAddresses: c.localAddrs, remoteAddresses: c.remoteAddrs,
                proposals: try parse(c.proposals, esp: false, line: c.line), localID: localID,
                remoteID: remoteID, auth: auth, forceEncapsulation: c.encap,
                dpdDelay: Double(c.dpdDelay), rekeyTime: Double(c.rekeyTime), children: children)
            profile.fragmentation = c.fragmentation
            return profile
        }
    }

    /// Reads `auth = "pubkey"`'s files: local_cert (our certificate, then any intermediates
    /// to send with it), local_key, ca_certs. Errors name the file, never the key's bytes.
    static func credentials(at: String, certificate: String, privateKey: String, caCertificates: [String],
                            localID: IDPayload?) throws -> CertificateCredentials {
        func read(_ key: String, _ path: String) throws -> [UInt8] {
            do { return try ConfigLoader.readBytes(path) } catch { throw DaemonError("\(at): \(key) \(path): \(error)") }
        }
        func certificates(_ key: String, _ path: String) throws -> [Certificate] {
            do { return try Certificate.load(try read(key, path)) } catch let e as CertificateError {
                throw DaemonError("\(at): \(key) \(path): \(e)")
            }
        }
        let chain = try certificates("local_cert", certificate)
        let keyFile = SecretBytes(try read("local_key", privateKey))
        defer { keyFile.wipe() }
        let key: PrivateKey
        do { key = try PrivateKey(keyFile) } catch { throw DaemonError("\(at): local_key \(privateKey) \(error)") }
        var authorities: [Certificate] = []
        for path in caCertificates {
            let cas = try certificates("ca_certs", path)
            if let notCA = cas.first(where: { !$0.isCA }) {
                throw DaemonError("\(at): ca_certs \(path): \"\(notCA.subject)\" is not a CA certificate (no basicConstraints CA:TRUE)")
            }
            authorities += cas
        }
        let leaf = chain[0]
        if let id = localID, !leaf.contains(id) {
            throw DaemonError("\(at): local_id \(id.text) is not in local_cert \(certificate) (subject \(leaf.subject)\(leaf.subjectAltNames.isEmpty ? "" : "; " + leaf.subjectAltNames.map(\.description).joined(separator: ", ")))")
        }
        do {
            return try CertificateCredentials(certificate: leaf, intermediates: Array(chain.dropFirst()), privateKey: key, authorities: authorities)
        } catch {
            throw DaemonError("\(at): local_cert \(certificate) with local_key \(privateKey): \(error)")
        }
    }

    static func selector(_ t: TrafficSelectorSpec) -> WireTrafficSelector {
        WireTrafficSelector(prefix: t.prefix, ipProtocol: t.ipProtocol ?? 0, ports: t.ports ?? 0...65535)
    }

    /// Builds the agent and its sockets, and installs every child's trap policies in the SA
    /// manager, before the first rules are installed (so no child's traffic is ever clear).
    func prepareIKE(_ config: SluiceConfiguration) throws -> IKEService? {
        guard !config.connections.isEmpty else { return nil }
        let profiles = try Self.profiles(config)
        let sockets = try IKESockets(addresses: profiles.flatMap(\.localAddresses))
        let log = logger
        let backend = DataPlaneBackend(manager: manager) { [unowned self] in self.rerenderRules() }
        let schedule = RetransmitSchedule(timeout: config.ike.retransmitTimeout, base: config.ike.retransmitBase,
                                          tries: config.ike.retransmitTries)
        let agent = IKEAgent(connections: profiles, schedule: schedule, backend: backend, transport: sockets) { entry in
            switch entry.level {
            case .debug: log.debug("\(entry.message)")
            case .info: log.info("\(entry.message)")
            case .notice: log.notice("\(entry.message)")
            case .warning: log.warning("\(entry.message)")
            case .error: log.error("\(entry.message)")
            }
        }
        agent.keepAlive = config.ike.keepAlive
        agent.fragmentSize = config.ike.fragmentSize
        agent.maxPacket = config.ike.maxPacket
        sockets.onSendError = { to, e in log.debug("IKE send to \(to) failed: \(e)") }
        rulesLive.store(false, ordering: .relaxed)
        agent.installTraps()
        return try IKEService(agent: agent, sockets: sockets, logger: logger)
    }

    /// Renders the rules from the SA manager's whole SPD and SAD and installs them when they
    /// changed. Before the first install (start-up), only records nothing: run() installs them.
    func rerenderRules() -> Bool {
        guard rulesLive.load(ordering: .relaxed) else { return true }
        return reloadLock.withLock { _ in
            let running = state.withLock { $0 }
            let e = manager.entries
            let next = RulesetBuilder(config: running.config, policies: e.policies, associations: e.associations,
                                      backend: running.builder.backend)
            guard next.nftScript() != running.builder.nftScript() else { return true }
            do { try Firewall.install(next, reload: true) } catch {
                logger.error("nftables refused the rules for a runtime SA change: \(error)")
                return false
            }
            state.withLock { $0.builder = next }
            return true
        }
    }

    func ikeControl(_ command: String, _ request: [String: Any]) -> [String: Any]? {
        guard ["list-sas", "initiate", "terminate", "rekey"].contains(command) else { return nil }
        guard let ike else { return ["error": "no IKE connections are configured ([[connection]] in \(configPath))"] }
        if command == "list-sas" {
            guard let list = ike.ask({ a, now in a.status(now: now) }),
                  let data = try? JSONEncoder().encode(list),
                  let obj = try? JSONSerialization.jsonObject(with: data) else { return ["error": "the IKE agent did not answer"] }
            return ["ike_sas": obj]
        }
        let child = request["child"] as? String, conn = request["ike"] as? String
        guard (child == nil) != (conn == nil) else { return ["error": "\(command) needs exactly one of \"child\" or \"ike\""] }
        let answer: String?? = ike.ask { a, now in
            do {
                switch (command, child, conn) {
                case let ("initiate", c?, _): try a.initiate(child: c, now: now)
                case let ("initiate", _, i?): try a.initiate(ike: i, now: now)
                case let ("terminate", c?, _): try a.terminate(child: c, now: now)
                case let ("terminate", _, i?): try a.terminate(ike: i, now: now)
                case let ("rekey", c?, _): try a.rekey(child: c, now: now)
                case let ("rekey", _, i?): try a.rekey(ike: i, now: now)
                default: return "bad request"
                }
                return nil
            } catch { return "\(error)" }
        }
        guard let answer else { return ["error": "the IKE agent did not answer"] }
        if let why = answer { return ["error": why] }
        return ["ok": true, "command": command, (child != nil ? "child" : "ike"): child ?? conn ?? ""]
    }
}

extension HoldQueue.Limits {
    /// From the `[ike]` table's hold_* keys.
    init(_ s: IKESettings) {
        self.init()
        packets = s.holdPackets
        bytes = s.holdBytes
        totalPackets = s.holdPacketsTotal
        timeoutNanos = UInt64(s.holdTimeout * 1e9)
    }
}
