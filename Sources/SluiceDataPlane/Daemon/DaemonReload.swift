import Foundation
import Logging
import SluiceConfig
import SluiceCore
#if canImport(Glibc)
import Glibc
#endif

/// Reload: the config file as the SA manager's first user.
extension Daemon {
    /// SIGHUP, in the order that leaves nothing half done: read and validate the file;
    /// refuse settings that only take effect at start (each named with FILE:LINE); build
    /// every new SA and check the database they make (nothing changes yet); install the
    /// nftables transaction; only then swap the SAs and policies in, and publish the new
    /// state. A failure at any step leaves the running SAs, policies and rules in place.
    func reload() {
        reloadLock.withLock { _ in
            let running = state.withLock { $0 }
            let next: SluiceConfiguration
            do {
                next = try ConfigLoader.load(path: configPath)
            } catch {
                logger.error("reload refused, keeping the running configuration:\n\(error)")
                return
            }
            let restart = next.restartRequired(comparedTo: running.config)
            if !restart.isEmpty {
                logger.error("reload refused, keeping the running configuration:\n\(restart.map(\.description).joined(separator: "\n"))")
                return
            }
            if let changed = Daemon.changedConnection(running.config, next) {
                // The agent reads its connections at start only; refusing is honest, applying half is not.
                logger.error("reload refused, keeping the running configuration:\n\(changed)")
                return
            }
            for w in next.warnings { logger.warning("\(w)") }
            let plan: SAManager.Plan
            do {
                plan = try manager.prepare(associations: next.associations.map(\.config), policies: next.policies,
                                           settings: Daemon.settings(next))
            } catch {
                logger.error("reload refused, keeping the running configuration: \(error)")
                return
            }
            // Rules for everything the manager will hold, not only the file's entries.
            let nextBuilder = RulesetBuilder(config: next, policies: plan.policiesAfter, associations: plan.associationsAfter,
                                             backend: running.builder.backend)
            if nextBuilder.nftScript() != running.builder.nftScript() {
                do { try Firewall.install(nextBuilder, reload: true) } catch {
                    logger.error("reload failed, keeping the running configuration (SAs, policies and rules unchanged): \(error)")
                    return
                }
            }
            manager.commit(plan)
            logger.logLevel = Logger.Level(rawValue: next.logLevel) ?? .info
            state.withLock { $0 = State(config: next, builder: nextBuilder, reloads: running.reloads + 1) }
            for name in plan.skippedExpired { logger.warning("SA \(name): not installed, its key reached the hard lifetime; configure a new key") }
            func list(_ names: [String]) -> String { names.isEmpty ? "-" : names.joined(separator: ",") }
            logger.info("reloaded: \(next.associations.count) SA(s) (added \(list(plan.added)), changed \(list(plan.changed)), removed \(list(plan.removed))), \(next.policies.count) policies")
        }
    }

    /// "FILE:LINE: connection NAME changed: needs a restart", or nil when the connections
    /// are the same (line numbers aside).
    static func changedConnection(_ old: SluiceConfiguration, _ new: SluiceConfiguration) -> String? {
        func plain(_ c: IKEConnection) -> IKEConnection {
            var c = c
            c.line = 0
            c.children = c.children.map { var ch = $0; ch.line = 0; return ch }
            return c
        }
        guard old.connections.map(plain) != new.connections.map(plain) else { return nil }
        let first = new.connections.first { n in !old.connections.map(plain).contains(plain(n)) }
        let gone = old.connections.first { o in !new.connections.map(plain).contains(plain(o)) }
        if let first { return "\(new.path):\(first.line): connection \(first.name) changed: connections need a restart (the IKE agent reads them at start)" }
        return "\(new.path): connection \(gone?.name ?? "?") removed: connections need a restart (the IKE agent reads them at start)"
    }

    static func settings(_ c: SluiceConfiguration) -> SAManager.Settings {
        SAManager.Settings(lanes: c.queues, replayMarkInterval: UInt64(c.replayMarkInterval),
                           defaultOutbound: c.defaultOutbound, defaultInbound: c.defaultInbound)
    }
}
