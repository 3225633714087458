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
    /// Protect with an SA set: outbound uses the newest live SA of the set, inbound
    /// accepts any of them (make-before-break during a rotation, RFC 7296 §2.8).
    case protect(sas: [String])
    case bypass
    case discard

    /// Protect with one SA.
    public static func protect(sa: String) -> PolicyAction { .protect(sas: [sa]) }

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

    /// True when this is a PROTECT policy whose SA set names `sa`.
    public func protects(_ sa: String) -> Bool {
        if case let .protect(names) = action { return names.contains(sa) }
        return false
    }
}

/// A policy with its SA set resolved, as workers use it. `sas` keeps the policy's order;
/// SAs that are gone (removed, expired) are simply absent.
public struct ResolvedPolicy: Sendable {
    public let policy: Policy
    public let sas: [SecurityAssociation]

    /// The SA outbound traffic takes: the newest live one of the set (the last installed),
    /// so a new SA takes over at once when it is added beside the old one.
    @inline(__always)
    public var outboundSA: SecurityAssociation? {
        var best: SecurityAssociation? = nil
        for sa in sas where !sa.isExpired && (best == nil || sa.generation > best!.generation) { best = sa }
        return best
    }
}

/// The SPD and SAD together: one immutable snapshot. A change builds a new snapshot and
/// swaps it in; workers pick it up between packets, so no packet sees half a change.
public final class SecurityDatabase: Sendable {
    public let outbound: [ResolvedPolicy]
    public let inbound: [ResolvedPolicy]
    public let defaultOutbound: PolicyAction
    public let defaultInbound: PolicyAction
    public let associations: [SecurityAssociation]
    let bySPI: [UInt32: [SecurityAssociation]]
    /// Outer addresses inbound SAs receive on: ESP to these is opened, not policed as clear.
    public let localAddresses: Set<IPAddress>
    /// Where the data plane reports what the control plane must act on (`no_sa`).
    public let events: EventQueue?

    public enum BuildError: Error, CustomStringConvertible, Equatable {
        case unknownSA(policy: String, sa: String)
        case wrongDirection(policy: String, sa: String)
        case duplicateSPI(UInt32, String, String)
        case duplicateName(String)
        public var description: String {
            switch self {
            case let .unknownSA(p, s): return "\(p): policy names SA \"\(s)\", which is not defined"
            case let .wrongDirection(p, s): return "\(p): policy and SA \"\(s)\" have different directions"
            case let .duplicateSPI(spi, a, b): return "inbound SAs \"\(a)\" and \"\(b)\" share SPI 0x\(String(spi, radix: 16)) and local address"
            case let .duplicateName(n): return "two SAs are named \"\(n)\""
            }
        }
    }

    /// `allowMissingSAs`: a policy may name an SA that is not (or no longer) there; its
    /// traffic is then dropped as `no_sa`. The config path leaves it off, so a typo is an
    /// error; the SA manager turns it on, since SAs come and go at run time.
    public init(policies: [Policy], associations: [SecurityAssociation],
                defaultOutbound: PolicyAction = .bypass, defaultInbound: PolicyAction = .bypass,
                allowMissingSAs: Bool = false, events: EventQueue? = nil) throws {
        self.events = events
        var byName: [String: SecurityAssociation] = [:]
        for sa in associations {
            guard byName.updateValue(sa, forKey: sa.name) == nil else { throw BuildError.duplicateName(sa.name) }
        }
        func resolve(_ p: Policy) throws -> ResolvedPolicy {
            guard case let .protect(names) = p.action else { return ResolvedPolicy(policy: p, sas: []) }
            var set: [SecurityAssociation] = []
            for name in names {
                guard let sa = byName[name] else {
                    if allowMissingSAs { continue }
                    throw BuildError.unknownSA(policy: p.origin, sa: name)
                }
                guard sa.config.direction == p.direction else { throw BuildError.wrongDirection(policy: p.origin, sa: name) }
                set.append(sa)
            }
            return ResolvedPolicy(policy: p, sas: set)
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
    /// protects it with this very SA. Matching PROTECT policies of other SAs are passed
    /// over (two inbound SAs with the same selectors, old and new key, both accept during
    /// a rotation); a matching BYPASS or DISCARD ends the search: clear traffic was meant.
    public func inboundPolicyAllows(_ k: FlowKey, sa: SecurityAssociation) -> Bool {
        for p in inbound where p.policy.selector.matches(k) {
            guard case .protect = p.policy.action else { return false }
            if p.sas.contains(where: { $0 === sa }) { return true }
        }
        return false
    }

    public func association(named name: String) -> SecurityAssociation? {
        associations.first { $0.name == name }
    }
}

/// Where workers take the current database from, once per batch.
public protocol DatabaseSource: Sendable {
    var database: SecurityDatabase { get }
}

extension SAManager: DatabaseSource {}
