import SluiceCore
import SluiceIKE

/// The agent's view of the data plane: the SA manager for SAs and policies, and the daemon's
/// rule renderer, called after every change so the nftables rules carry what the manager holds.
///
/// Order, so no packet meets half a change: when adding, SAs first, then the rules (the peer's
/// ESP reaches the workers), then the policies that send traffic through the new SA; when
/// removing, the policies first, then the SAs, then the rules. A child's policies go before its trap (and before an older SA of
/// the same child, which a rekey replaces): first match wins.
final class DataPlaneBackend: IPsecBackend {
    let manager: SAManager
    let owner: SAManager.Owner = .runtime("ike")
    /// Re-renders and installs the rules; false when nftables refused them.
    let rerender: () -> Bool
    var traps: [String: [SAManager.PolicyID]] = [:]
    var childPolicies: [String: [SAManager.PolicyID]] = [:]   // by inbound SA name

    init(manager: SAManager, rerender: @escaping () -> Bool) {
        self.manager = manager
        self.rerender = rerender
    }

    func allocateSPI() -> UInt32 { manager.allocateSPI() }
    func releaseSPI(_ spi: UInt32) { manager.releaseSPI(spi) }

    func installTrap(child: String, outbound: [Policy], inbound: [Policy]) throws {
        removeTrap(child: child)
        var ids: [SAManager.PolicyID] = []
        do {
            for p in outbound + inbound { ids.append(try manager.addPolicy(p, owner: owner)) }
        } catch {
            ids.forEach { manager.removePolicy($0) }
            throw error
        }
        traps[child] = ids
        _ = rerender()
    }

    func removeTrap(child: String) {
        guard let ids = traps.removeValue(forKey: child) else { return }
        ids.forEach { manager.removePolicy($0) }
        _ = rerender()
    }

    func installChild(_ c: ChildInstall, outbound: Bool) throws {
        try manager.install(c.inbound, owner: owner)
        do {
            try manager.install(c.outbound, owner: owner)
            // The rules that steer the peer's ESP to the workers must be in before any packet
            // uses the new SA: its answer would otherwise reach the IKE socket and be lost.
            guard rerender() else { throw DaemonError("nftables refused the rules for CHILD_SA \(c.child)") }
            try addPolicies(c.inboundPolicies + (outbound ? c.outboundPolicies : []), of: c)
        } catch {
            childPolicies.removeValue(forKey: c.inbound.name)?.forEach { manager.removePolicy($0) }
            manager.remove(sa: c.outbound.name)
            manager.remove(sa: c.inbound.name)
            throw error
        }
        if !rerender() {
            removeChild(c)
            throw DaemonError("nftables refused the rules for CHILD_SA \(c.child)")
        }
    }

    func activateOutbound(_ c: ChildInstall) throws {
        try addPolicies(c.outboundPolicies, of: c)
        _ = rerender()
    }

    /// Each goes before every policy of its child already there (the trap, an older SA pair):
    /// reversed keeps their own order.
    private func addPolicies(_ policies: [Policy], of c: ChildInstall) throws {
        let origin = IKEAgent.trapOrigin(c.child)
        for p in policies.reversed() {
            let id = try manager.addPolicy(p, owner: owner, at: manager.firstPolicyIndex(origin: origin, direction: p.direction))
            childPolicies[c.inbound.name, default: []].append(id)
        }
    }

    func removeChild(_ c: ChildInstall) {
        childPolicies.removeValue(forKey: c.inbound.name)?.forEach { manager.removePolicy($0) }
        manager.remove(sa: c.outbound.name)
        manager.remove(sa: c.inbound.name)
        _ = rerender()
    }

    func counters(sa name: String) -> (packets: UInt64, bytes: UInt64)? {
        guard let sa = manager.database.association(named: name) else { return nil }
        return (sa.counters.packets, sa.counters.bytes)
    }
}
