import SluiceCore

extension TrafficSelectorSpec {
    public struct SyntaxError: Error, Equatable, CustomStringConvertible, Sendable {
        public let message: String
        public var description: String { message }
        init(_ message: String) { self.message = message }
    }

    /// swanctl's selector syntax: `PREFIX`, `PREFIX[PROTO]`, `PREFIX[PROTO/PORT]` or
    /// `PREFIX[PROTO/LOW-HIGH]`; PROTO by name (tcp, udp, sctp, icmp, ipv6-icmp, esp,
    /// gre) or number 1-255, ports with tcp, udp and sctp only.
    public init(parsing text: String) throws(SyntaxError) {
        var body = Substring(text)
        var proto: UInt8? = nil
        var ports: ClosedRange<UInt16>? = nil
        if let open = body.firstIndex(of: "[") {
            guard body.hasSuffix("]"), body.firstIndex(of: "]") == body.index(before: body.endIndex) else {
                throw SyntaxError("\"\(text)\" must end in one [PROTO], [PROTO/PORT] or [PROTO/LOW-HIGH]")
            }
            let inner = body[body.index(after: open)..<body.index(before: body.endIndex)]
            body = body[..<open]
            let parts = inner.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw SyntaxError("\"\(text)\": write [PROTO], [PROTO/PORT] or [PROTO/LOW-HIGH]") }
            let p = try Self.protocolNumber(parts[0], in: text)
            proto = p
            if parts.count == 2 {
                guard Self.portProtocols.contains(p) else {
                    throw SyntaxError("\"\(text)\": ports need tcp, udp or sctp")
                }
                ports = try Self.portRange(parts[1], in: text)
            }
        }
        if body.isEmpty { throw SyntaxError("\"\(text)\" has no prefix: write one before the '[', e.g. \"0.0.0.0/0[udp]\"") }
        if body == "dynamic" || body == "%dynamic" {
            throw SyntaxError("\"\(text)\": dynamic is not supported; leave the key out for the connection's own address")
        }
        if body.contains("-") { throw SyntaxError("\"\(body)\": address ranges are not supported; write a prefix") }
        guard let prefix = IPPrefix(String(body)) else {
            throw SyntaxError("\"\(body)\" is not an address or prefix like 198.51.100.0/24")
        }
        self.init(prefix: prefix, ipProtocol: proto, ports: ports)
    }

    /// The prefix part of `text` has bits set past its length (10.1.2.3/8): worth a warning.
    static func hasHostBits(_ text: String) -> Bool {
        IPPrefix.hasHostBits(String(text.prefix { $0 != "[" }))
    }

    static func protocolNumber(_ word: Substring, in text: String) throws(SyntaxError) -> UInt8 {
        if let n = protocolNames[String(word)] ?? protocolAliases[String(word)] { return n }
        guard let n = UInt8(word) else {
            throw SyntaxError("\"\(text)\": \"\(word)\" is not a protocol (tcp, udp, sctp, icmp, ipv6-icmp, esp, gre or 1-255)")
        }
        guard n != 0 else { throw SyntaxError("\"\(text)\": protocol 0 means any; leave the [...] out") }
        return n
    }

    static func portRange(_ word: Substring, in text: String) throws(SyntaxError) -> ClosedRange<UInt16> {
        let ends = word.split(separator: "-", omittingEmptySubsequences: false).map { UInt16($0) }
        guard (1...2).contains(ends.count), let low = ends.first ?? nil, let high = ends.last ?? nil else {
            throw SyntaxError("\"\(text)\": \"\(word)\" is not a port (0-65535) or a range like 1000-2000")
        }
        guard low <= high else { throw SyntaxError("\"\(text)\": port range \(word) runs backwards") }
        return low...high
    }
}
