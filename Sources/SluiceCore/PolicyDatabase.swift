/// One SPD selector (RFC 4301 §4.4.1.1). `nil` fields match anything.
public struct TrafficSelector: Sendable, Equatable {
    public var src: IPPrefix?
    public var dst: IPPrefix?
    public var proto: UInt8?
    public var srcPorts: ClosedRange<UInt16>?
    public var dstPorts: ClosedRange<UInt16>?
    /// For ICMP / ICMPv6: type (and optional code).
    public var icmpType: UInt8?
    public var icmpCode: UInt8?

    public init(src: IPPrefix? = nil, dst: IPPrefix? = nil, proto: UInt8? = nil,
                srcPorts: ClosedRange<UInt16>? = nil, dstPorts: ClosedRange<UInt16>? = nil,
                icmpType: UInt8? = nil, icmpCode: UInt8? = nil) {
        self.src = src; self.dst = dst; self.proto = proto; self.srcPorts = srcPorts
        self.dstPorts = dstPorts; self.icmpType = icmpType; self.icmpCode = icmpCode
    }

    @inline(__always)
    public func matches(_ k: FlowKey) -> Bool {
        if let s = src, !s.contains(k.src) { return false }
        if let d = dst, !d.contains(k.dst) { return false }
        if let p = proto, p != k.proto { return false }
        if let r = srcPorts { guard let v = k.srcPort, r.contains(v) else { return false } }
        if let r = dstPorts { guard let v = k.dstPort, r.contains(v) else { return false } }
        if let t = icmpType { guard let v = k.srcPort, UInt16(t) == v else { return false } }
        if let c = icmpCode { guard let v = k.dstPort, UInt16(c) == v else { return false } }
        return true
    }

    /// The address family the selector is limited to, if any.
    public var family: IPAddress.Family? { src?.address.family ?? dst?.address.family }
}

public enum PolicyAction: Sendable, Equatable {
    case protect(sa: String)
    case bypass
    case discard

    public var keyword: String {
        switch self {
        case .protect: return "protect"
        case .bypass: return "bypass"
        case .discard: return "discard"
        }
    }
}

public struct Policy: Sendable, Equatable {
    public var direction: Direction
    public var selector: TrafficSelector
    public var action: PolicyAction
    /// Where it came from, for messages ("sluice.toml:42").
    public var origin: String

    public init(direction: Direction, selector: TrafficSelector, action: PolicyAction, origin: String = "") {
        self.direction = direction; self.selector = selector; self.action = action; self.origin = origin
    }
}

/// A policy with its SA resolved, as workers use it.
public struct ResolvedPolicy: Sendable {
    public let policy: Policy
    public let sa: SecurityAssociation?
}

/// The SPD and SAD together: one immutable snapshot. A reload builds a new snapshot and
/// swaps it in; workers pick it up between packets, so no packet sees half a reload.
public final class SecurityDatabase: Sendable {
    public let outbound: [ResolvedPolicy]
    public let inbound: [ResolvedPolicy]
    public let defaultOutbound: PolicyAction
    public let defaultInbound: PolicyAction
    public let associations: [SecurityAssociation]
    let bySPI: [UInt32: [SecurityAssociation]]
    /// Outer addresses inbound SAs receive on: ESP to these is opened, not policed as clear.
    public let localAddresses: Set<IPAddress>

    public enum BuildError: Error, CustomStringConvertible {
        case unknownSA(policy: String, sa: String)
        case wrongDirection(policy: String, sa: String)
        case duplicateSPI(UInt32, String, String)
        public var description: String {
            switch self {
            case let .unknownSA(p, s): return "\(p): policy names SA \"\(s)\", which is not defined"
            case let .wrongDirection(p, s): return "\(p): policy and SA \"\(s)\" have different directions"
            case let .duplicateSPI(spi, a, b): return "inbound SAs \"\(a)\" and \"\(b)\" share SPI 0x\(String(spi, radix: 16)) and local address"
            }
        }
    }

    public init(policies: [Policy], associations: [SecurityAssociation],
                defaultOutbound: PolicyAction = .bypass, defaultInbound: PolicyAction = .bypass) throws {
        var byName: [String: SecurityAssociation] = [:]
        for sa in associations { byName[sa.name] = sa }
        func resolve(_ p: Policy) throws -> ResolvedPolicy {
            guard case let .protect(name) = p.action else { return ResolvedPolicy(policy: p, sa: nil) }
            guard let sa = byName[name] else { throw BuildError.unknownSA(policy: p.origin, sa: name) }
            guard sa.config.direction == p.direction else { throw BuildError.wrongDirection(policy: p.origin, sa: name) }
            return ResolvedPolicy(policy: p, sa: sa)
        }
        outbound = try policies.filter { $0.direction == .outbound }.map(resolve)
        inbound = try policies.filter { $0.direction == .inbound }.map(resolve)
        var spis: [UInt32: [SecurityAssociation]] = [:]
        for sa in associations where sa.config.direction == .inbound {
            if let other = spis[sa.config.spi]?.first(where: { $0.config.local == sa.config.local }) {
                throw BuildError.duplicateSPI(sa.config.spi, other.name, sa.name)
            }
            spis[sa.config.spi, default: []].append(sa)
        }
        bySPI = spis
        localAddresses = Set(associations.filter { $0.config.direction == .inbound }.map { $0.config.local })
        self.associations = associations
        self.defaultOutbound = defaultOutbound
        self.defaultInbound = defaultInbound
    }

    /// First matching outbound policy (RFC 4301: ordered, first match wins); nil when
    /// none matches and the default applies.
    @inline(__always)
    public func lookupOutbound(_ k: FlowKey) -> ResolvedPolicy? {
        for p in outbound where p.policy.selector.matches(k) { return p }
        return nil
    }

    /// Inbound SA by SPI and destination (RFC 4301 §4.1); protocol is ESP by construction.
    @inline(__always)
    public func lookupInbound(spi: UInt32, destination: IPAddress) -> SecurityAssociation? {
        guard let list = bySPI[spi] else { return nil }
        for sa in list where sa.config.local == destination { return sa }
        return nil
    }

    /// RFC 4301 §5.2: after decryption, the inner packet must fall under a policy that
    /// protects it with this very SA.
    public func inboundPolicyAllows(_ k: FlowKey, sa: SecurityAssociation) -> Bool {
        for p in inbound where p.policy.selector.matches(k) {
            return p.sa === sa
        }
        return false
    }

    public func association(named name: String) -> SecurityAssociation? {
        associations.first { $0.name == name }
    }
}
