import Foundation
import Logging
import SluiceConfig
import SluiceCore
import SluiceIKE

/// The IKE agent as the SA manager's second user (after reload): connections from the
/// config file become profiles; negotiated CHILD_SAs arrive through `DataPlaneBackend`, and
/// the rules are re-rendered from everything the manager holds after each change.
extension Daemon {
    /// Profiles for the agent, with every string parsed (proposals were checked at load).
    static func profiles(_ config: SluiceConfiguration) throws -> [ConnectionProfile] {
        try config.connections.map { c in
            let psk: SecretBytes
            switch c.auth {
            case let .psk(secret): psk = secret
            case .pubkey: throw DaemonError("\(config.path):\(c.line): connection \(c.name): auth = \"pubkey\" is not supported yet; use auth = \"psk\"")
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
            return ConnectionProfile(
                name: c.name, localAddresses: c.localAddrs, remoteAddresses: c.remoteAddrs,
                proposals: try parse(c.proposals, esp: false, line: c.line), localID: c.localID.map(IDPayload.parse),
                remoteID: c.remoteID.map(IDPayload.parse), psk: psk, forceEncapsulation: c.encap,
                dpdDelay: Double(c.dpdDelay), rekeyTime: Double(c.rekeyTime), children: children)
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
