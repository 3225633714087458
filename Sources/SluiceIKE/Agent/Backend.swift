import SluiceCore

/// The seam between the IKE agent and the data plane, in the spirit of strongSwan's
/// kernel_ipsec_t (get_spi, add_sa, del_sa, add_policy). The daemon implements it with the
/// SA manager and the nftables rules; tests use `MemoryBackend`. Called on the agent's thread.
public protocol IPsecBackend: AnyObject {
    /// A fresh inbound SPI, reserved until installed or released.
    func allocateSPI() -> UInt32
    func releaseSPI(_ spi: UInt32)
    /// SA-less PROTECT policies for a configured child, so its traffic is dropped (and
    /// raises an acquire) instead of leaving in clear before, between and after its SAs.
    func installTrap(child: String, outbound: [Policy], inbound: [Policy]) throws
    func removeTrap(child: String)
    /// Installs inbound SA, then outbound SA, then the policies (ahead of the child's trap).
    /// `outbound: false` leaves out the outbound policies, so traffic keeps the old SA: the
    /// responder of a rekey waits until the initiator has the new inbound SA (its delete of
    /// the old one says so), as strongSwan does.
    func installChild(_ c: ChildInstall, outbound: Bool) throws
    /// The outbound policies of a child installed with `outbound: false`.
    func activateOutbound(_ c: ChildInstall) throws
    func removeChild(_ c: ChildInstall)
    /// Traffic through an installed SA, for `list-sas`.
    func counters(sa name: String) -> (packets: UInt64, bytes: UInt64)?
}

/// Everything one negotiated CHILD_SA puts into the data plane.
public struct ChildInstall: Sendable {
    public var child: String
    public var inbound: SAConfig
    public var outbound: SAConfig
    public var outboundPolicies: [Policy]
    public var inboundPolicies: [Policy]
}

/// Sends IKE datagrams. The daemon's transport adds the non-ESP marker on port 4500.
public protocol IKETransport: AnyObject {
    func send(_ datagram: [UInt8], from: Endpoint, to: Endpoint)
    /// A NAT keepalive (RFC 3948 §2.3): the one byte 0xFF, without the non-ESP marker.
    func sendKeepalive(from: Endpoint, to: Endpoint)
}

/// What the agent reports, once per event; the daemon logs it. Never carries key material.
public struct AgentLog: Sendable {
    public enum Level: Sendable { case debug, info, notice, warning, error }
    public var level: Level
    public var message: String
    public init(_ level: Level, _ message: String) { self.level = level; self.message = message }
}

/// An in-memory data plane for tests: records what the agent installs.
public final class MemoryBackend: IPsecBackend {
    public private(set) var children: [ChildInstall] = []
    public private(set) var traps: [String: (outbound: [Policy], inbound: [Policy])] = [:]
    public private(set) var removed: [ChildInstall] = []
    /// Inbound SA names of the children whose outbound policies are in.
    public private(set) var outboundActive: Set<String> = []
    public var failInstall = false
    private var spis: Set<UInt32> = []
    public var packets: [String: UInt64] = [:]
    public init() {}
    public func allocateSPI() -> UInt32 {
        while true {
            let s = UInt32.random(in: 256...UInt32.max)
            if spis.insert(s).inserted { return s }
        }
    }
    public func releaseSPI(_ spi: UInt32) { spis.remove(spi) }
    public func installTrap(child: String, outbound: [Policy], inbound: [Policy]) throws { traps[child] = (outbound, inbound) }
    public func removeTrap(child: String) { traps[child] = nil }
    public func installChild(_ c: ChildInstall, outbound: Bool) throws {
        struct Refused: Error {}
        if failInstall { throw Refused() }
        children.append(c)
        if outbound { outboundActive.insert(c.inbound.name) }
    }
    public func activateOutbound(_ c: ChildInstall) throws { outboundActive.insert(c.inbound.name) }
    /// The child whose outbound SA traffic takes now (the newest with its outbound policies in).
    public var activeOutbound: ChildInstall? { children.last { outboundActive.contains($0.inbound.name) } }
    public func removeChild(_ c: ChildInstall) {
        children.removeAll { $0.inbound.name == c.inbound.name }
        outboundActive.remove(c.inbound.name)
        removed.append(c)
    }
    public func counters(sa name: String) -> (packets: UInt64, bytes: UInt64)? { (packets[name] ?? 0, 0) }
}
