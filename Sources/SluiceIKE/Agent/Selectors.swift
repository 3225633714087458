import SluiceCore

/// Traffic selectors (RFC 7296 §2.9): narrowing, and the step from IKE's address ranges to
/// the SPD's prefixes. Address arithmetic runs on UInt128 so one code path serves both families.

extension IPAddress {
    var value: UInt128 { family == .v4 ? UInt128(low) : UInt128(high) << 64 | UInt128(low) }
    init(family: Family, value: UInt128) {
        self = family == .v4 ? IPAddress(v4: UInt32(truncatingIfNeeded: value))
                             : IPAddress(v6High: UInt64(truncatingIfNeeded: value >> 64), low: UInt64(truncatingIfNeeded: value))
    }
    var bitCount: Int { family == .v4 ? 32 : 128 }
}

extension WireTrafficSelector {
    /// One address, any protocol and port: strongSwan's "dynamic" selector.
    public init(host a: IPAddress) { self.init(startAddress: a, endAddress: a) }

    public init(prefix p: IPPrefix, ipProtocol: UInt8 = 0, ports: ClosedRange<UInt16> = 0...65535) {
        let bits = p.address.bitCount
        let hostBits = bits - p.length
        let size: UInt128 = hostBits >= 128 ? .max : (UInt128(1) << hostBits) - 1
        let start = p.address.value
        self.init(ipProtocol: ipProtocol, startPort: ports.lowerBound, endPort: ports.upperBound, startAddress: p.address,
                  endAddress: IPAddress(family: p.address.family, value: start | size))
    }

    var family: IPAddress.Family { startAddress.family }
    var isValid: Bool {
        startAddress.family == endAddress.family && startAddress.value <= endAddress.value && startPort <= endPort
    }

    /// The selector both sides allow, or nil when they share nothing.
    public func intersection(_ o: WireTrafficSelector) -> WireTrafficSelector? {
        guard isValid, o.isValid, family == o.family else { return nil }
        let proto: UInt8
        if ipProtocol == 0 { proto = o.ipProtocol } else if o.ipProtocol == 0 || o.ipProtocol == ipProtocol { proto = ipProtocol } else { return nil }
        let lo = max(startAddress.value, o.startAddress.value), hi = min(endAddress.value, o.endAddress.value)
        let plo = max(startPort, o.startPort), phi = min(endPort, o.endPort)
        guard lo <= hi, plo <= phi else { return nil }
        return WireTrafficSelector(ipProtocol: proto, startPort: plo, endPort: phi,
                                   startAddress: IPAddress(family: family, value: lo), endAddress: IPAddress(family: family, value: hi))
    }

    /// True when every packet this selector admits is also admitted by `o`.
    func isSubset(of o: WireTrafficSelector) -> Bool { intersection(o) == self }

    /// The fewest prefixes covering exactly the address range.
    public var prefixes: [IPPrefix] {
        guard isValid else { return [] }
        var out: [IPPrefix] = []
        var start = startAddress.value
        let end = endAddress.value
        let bits = startAddress.bitCount
        while true {
            // Largest aligned block at `start` that does not pass `end`.
            var size = start == 0 ? bits : min(bits, start.trailingZeroBitCount)
            while size > 0 {
                let last = start &+ ((size >= 128 ? UInt128.max : (UInt128(1) << size) - 1))
                if last >= start && last <= end { break }
                size -= 1
            }
            out.append(IPPrefix(address: IPAddress(family: startAddress.family, value: start), length: bits - size))
            let span: UInt128 = size >= 128 ? .max : (UInt128(1) << size) - 1
            let last = start &+ span
            if last >= end || last == (bits == 32 ? UInt128(UInt32.max) : .max) { break }
            start = last + 1
        }
        return out
    }

    var ports: ClosedRange<UInt16>? {
        startPort == 0 && endPort == 65535 ? nil : startPort...endPort
    }

    public var description: String {
        let addr = prefixes.count == 1 ? prefixes[0].description : "\(startAddress)-\(endAddress)"
        if ipProtocol == 0 && ports == nil { return addr }
        let proto = ipProtocol == 0 ? "any" : "\(ipProtocol)"
        guard let p = ports else { return "\(addr)[\(proto)]" }
        return "\(addr)[\(proto)/\(p.lowerBound == p.upperBound ? "\(p.lowerBound)" : "\(p.lowerBound)-\(p.upperBound)")]"
    }
}

enum Narrowing {
    /// The leading selectors of both lists that stay within `ChildPolicies`' bounds (§2.9 lets
    /// the responder choose a subset; the first ones, a trigger's among them, are kept); nil
    /// when even one pair is over. A peer's ragged ranges would otherwise multiply into
    /// millions of policies, or into more selectors than a TS payload can carry.
    static func bounded(_ i: [WireTrafficSelector], _ r: [WireTrafficSelector]) -> ([WireTrafficSelector], [WireTrafficSelector])? {
        var i = Array(i.prefix(ChildPolicies.maxSelectors)), r = Array(r.prefix(ChildPolicies.maxSelectors))
        // Prefixes per family on each side: the policies are at most their products' sum.
        func sums(_ l: [WireTrafficSelector]) -> [IPAddress.Family: Int] {
            l.reduce(into: [:]) { $0[$1.family, default: 0] += $1.prefixes.count }
        }
        var si = sums(i), sr = sums(r)
        func count() -> Int { si.reduce(0) { $0 + $1.value * (sr[$1.key] ?? 0) } }
        while count() > ChildPolicies.maxPolicies {
            if i.count >= r.count, i.count > 1 { let x = i.removeLast(); si[x.family, default: 0] -= x.prefixes.count }
            else if r.count > 1 { let x = r.removeLast(); sr[x.family, default: 0] -= x.prefixes.count }
            else { return nil }
        }
        return (i, r)
    }

    /// Every pairwise intersection of what the peer proposed with what we allow (§2.9:
    /// the responder may narrow to a subset). Duplicates removed, peer's order kept.
    static func narrow(_ proposed: [WireTrafficSelector], to allowed: [WireTrafficSelector]) -> [WireTrafficSelector] {
        var out: [WireTrafficSelector] = []
        for p in proposed { for a in allowed { if let x = p.intersection(a), !out.contains(x) { out.append(x) } } }
        return out
    }
}

/// SPD policies for a CHILD_SA: one per (local, remote) selector pair and prefix, each direction.
enum ChildPolicies {
    /// How far one CHILD_SA may spread: selectors a side (a TS payload carries 255 at most) and
    /// policies a direction (far above any configuration's; a peer cannot go past them).
    static let maxSelectors = 64, maxPolicies = 1024

    static func make(local: [WireTrafficSelector], remote: [WireTrafficSelector], outboundSA: String?,
                     inboundSA: String?, origin: String) -> (outbound: [Policy], inbound: [Policy]) {
        var out: [Policy] = [], inb: [Policy] = []
        for l in local {
            for r in remote where l.family == r.family {
                let proto: UInt8
                if l.ipProtocol == 0 { proto = r.ipProtocol } else if r.ipProtocol == 0 || r.ipProtocol == l.ipProtocol { proto = l.ipProtocol } else { continue }
                let ported = proto == IPProto.tcp || proto == IPProto.udp || proto == 132
                for lp in l.prefixes {
                    for rp in r.prefixes {
                        let outSel = TrafficSelector(src: lp, dst: rp, proto: proto == 0 ? nil : proto,
                                                     srcPorts: ported ? l.ports : nil, dstPorts: ported ? r.ports : nil)
                        let inSel = TrafficSelector(src: rp, dst: lp, proto: proto == 0 ? nil : proto,
                                                    srcPorts: ported ? r.ports : nil, dstPorts: ported ? l.ports : nil)
                        out.append(Policy(direction: .outbound, selector: outSel,
                                          action: .protect(sas: outboundSA.map { [$0] } ?? []), origin: origin))
                        inb.append(Policy(direction: .inbound, selector: inSel,
                                          action: .protect(sas: inboundSA.map { [$0] } ?? []), origin: origin))
                    }
                }
            }
        }
        return (out, inb)
    }
}
