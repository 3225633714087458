import SluiceCore

/// TSi / TSr bodies (RFC 7296 §3.13): a count, 3 reserved bytes, then that many selectors.
/// Only address ranges are understood (type 7 IPv4, 8 IPv6); any other type cannot be
/// narrowed or matched, so it makes the payload malformed rather than silently ignored.
enum TrafficSelectorCoding {
    static let ipv4Range: UInt8 = 7, ipv6Range: UInt8 = 8
    static let ipv4Length = 16, ipv6Length = 40

    static func decode(_ r: inout WireReader) throws(IKEDecodeError) -> [WireTrafficSelector] {
        let name = PayloadType.name(r.payload)
        let count = Int(try r.u8("selector count"))
        try r.skip(3, "reserved bytes")
        guard count > 0 else { throw r.malformed("\(name) payload lists no traffic selectors") }
        var selectors: [WireTrafficSelector] = []
        for index in 1...count {
            let what = "\(name) selector \(index)"
            let type = try r.u8("\(what) type")
            let ipProtocol = try r.u8("\(what) IP protocol")
            let length = Int(try r.u16("\(what) length"))
            let family: IPAddress.Family
            switch (type, length) {
            case (ipv4Range, ipv4Length): family = .v4
            case (ipv6Range, ipv6Length): family = .v6
            case (ipv4Range, _), (ipv6Range, _):
                throw r.malformed("\(what) of type \(type) has length \(length), must be \(type == ipv4Range ? ipv4Length : ipv6Length)")
            default:
                throw r.malformed("\(what) has type \(type), not TS_IPV4_ADDR_RANGE (7) or TS_IPV6_ADDR_RANGE (8)")
            }
            guard length - 4 <= r.remaining else {
                throw r.malformed("\(what) length \(length) runs past its payload (\(r.remaining + 4) bytes left)")
            }
            var s = try r.substructure(length - 4, what)
            let startPort = try s.u16("\(what) start port"), endPort = try s.u16("\(what) end port")
            let width = family == .v4 ? 4 : 16
            let start = try s.take(width, "\(what) start address"), end = try s.take(width, "\(what) end address")
            guard let startAddress = IPAddress(bytes: start[...]), let endAddress = IPAddress(bytes: end[...]) else {
                throw s.malformed("\(what) addresses are not \(width) bytes")
            }
            selectors.append(WireTrafficSelector(ipProtocol: ipProtocol, startPort: startPort, endPort: endPort,
                                                 startAddress: startAddress, endAddress: endAddress))
        }
        guard r.isAtEnd else { throw r.malformed("\(name) payload has \(r.remaining) bytes after its \(count) selectors") }
        return selectors
    }

    static func encode(_ selectors: [WireTrafficSelector], into out: inout [UInt8]) {
        out.append(wireU8(selectors.count, "traffic selector count"))
        out += [0, 0, 0]
        for s in selectors {
            guard s.startAddress.family == s.endAddress.family else {
                preconditionFailure("IKE encode: traffic selector \(s.startAddress)-\(s.endAddress) mixes address families")
            }
            let v4 = s.startAddress.family == .v4
            out.append(v4 ? ipv4Range : ipv6Range)
            out.append(s.ipProtocol)
            out.appendU16(UInt16(v4 ? ipv4Length : ipv6Length))
            out.appendU16(s.startPort)
            out.appendU16(s.endPort)
            out += s.startAddress.bytes
            out += s.endAddress.bytes
        }
    }
}
