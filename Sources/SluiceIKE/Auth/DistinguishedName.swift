/// An X.501 distinguished name (RFC 5280 §4.1.2.4) as IKE carries it in ID_DER_ASN1_DN,
/// written as strongSwan writes it: `"CN=gw-a, O=Example"`, the RDNs in DER order.
/// Names compare as RFC 5280 §7.1 asks (attribute types equal, string values equal without
/// regard to case, string type or runs of spaces), not byte for byte.
public struct DistinguishedName: Sendable, CustomStringConvertible {
    public struct Attribute: Sendable, Equatable {
        /// The attribute type's OID, as its DER content bytes.
        public var type: [UInt8]
        /// The value's DER tag (PrintableString, UTF8String, IA5String, ...).
        public var tag: UInt8
        public var value: [UInt8]
    }

    /// The relative distinguished names in order; each usually holds one attribute.
    public let rdns: [[Attribute]]
    /// The DER Name, as it goes into an ID payload.
    public let der: [UInt8]

    /// Reads a DER Name (SEQUENCE OF SET OF AttributeTypeAndValue), all of it.
    public init(der: [UInt8]) throws(DistinguishedNameError) {
        do {
            var outer = DERReader(der)
            var seq = try outer.read(DER.sequence, "Name").contentReader
            try outer.expectEnd("Name")
            var rdns: [[Attribute]] = []
            while !seq.isAtEnd {
                var set = try seq.read(DER.set, "RDN \(rdns.count + 1)").contentReader
                var rdn: [Attribute] = []
                while !set.isAtEnd {
                    var atv = try set.read(DER.sequence, "attribute").contentReader
                    let type = try atv.read(DER.oid, "attribute type")
                    let value = try atv.read("attribute value")
                    try atv.expectEnd("attribute")
                    guard !type.content.isEmpty else { throw DERError(what: "empty attribute type", offset: 0) }
                    rdn.append(Attribute(type: Array(type.content), tag: value.tag, value: Array(value.content)))
                }
                guard !rdn.isEmpty else { throw DERError(what: "RDN \(rdns.count + 1) is empty", offset: 0) }
                rdns.append(rdn)
            }
            self.rdns = rdns
            self.der = der
        } catch {
            throw DistinguishedNameError("not a DER distinguished name: \(error)")
        }
    }

    /// Parses strongSwan's text form: `"C=CH, O=strongSwan, CN=moon"`. Separators are
    /// commas; a value may be in double quotes or use `\` before `,`, `"`, `\`. Values are
    /// PrintableString when they fit, else UTF8String; E (emailAddress) and DC are IA5String.
    public init(parsing text: String) throws(DistinguishedNameError) {
        var rdns: [[Attribute]] = []
        for (key, parsedValue) in try Self.split(text) {
            guard let value = parsedValue else { throw DistinguishedNameError("\"\(key)\" in \"\(text)\" is not TYPE=value") }
            guard let known = Self.attributes.first(where: { $0.names.contains(where: { $0.lowercased() == key.lowercased() }) }) else {
                throw DistinguishedNameError("unknown attribute type \"\(key)\" in \"\(text)\" (known: \(Self.attributes.map { $0.names[0] }.joined(separator: ", ")))")
            }
            guard !value.isEmpty else { throw DistinguishedNameError("\(key) has an empty value in \"\(text)\"") }
            let tag: UInt8
            if known.ia5 {
                guard value.unicodeScalars.allSatisfy(\.isASCII) else {
                    throw DistinguishedNameError("\(key) = \"\(value)\" must be ASCII (IA5String)")
                }
                tag = DER.ia5String
            } else {
                tag = value.allSatisfy(Self.isPrintable) ? DER.printableString : DER.utf8String
            }
            rdns.append([Attribute(type: known.oid, tag: tag, value: Array(value.utf8))])
        }
        guard !rdns.isEmpty else { throw DistinguishedNameError("\"\(text)\" names no attribute") }
        self.rdns = rdns
        let encoded = rdns.map { rdn in
            DER.encode(DER.set, rdn.flatMap { a in DER.encode(DER.sequence, DER.encode(DER.oid, a.type) + DER.encode(a.tag, a.value)) })
        }
        der = DER.encode(DER.sequence, encoded.flatMap { $0 })
    }

    /// `"CN=gw-a, O=Example"`; unknown types as dotted OIDs, non-string values as `#hex`.
    public var description: String {
        rdns.flatMap { $0 }.map { a in
            let name = Self.attributes.first { $0.oid == a.type }?.names[0] ?? OID.dotted(a.type[...])
            return "\(name)=\(Self.text(a)?.printable ?? "#" + a.value.map { String($0, radix: 16).leftPadded(2) }.joined())"
        }.joined(separator: ", ")
    }

    /// Whether `other` is this name (RFC 5280 §7.1). In `self`, a value of exactly `*`
    /// matches any value of that attribute (strongSwan's wildcard for remote IDs).
    public func matches(_ other: DistinguishedName) -> Bool {
        guard rdns.count == other.rdns.count else { return false }
        for (mine, theirs) in zip(rdns, other.rdns) {
            guard mine.count == theirs.count else { return false }
            for (a, b) in zip(mine, theirs) {
                guard a.type == b.type else { return false }
                if Self.text(a) == "*" { continue }
                if let ta = Self.text(a), let tb = Self.text(b) {
                    guard Self.folded(ta) == Self.folded(tb) else { return false }
                } else if a.tag != b.tag || a.value != b.value {
                    return false
                }
            }
        }
        return true
    }

    /// Whether some value is `*` (a remote ID pattern).
    public var hasWildcard: Bool { rdns.joined().contains { Self.text($0) == "*" } }

    // MARK: attribute types (strongSwan's names first; RFC 4514's where they differ)

    struct Known { var names: [String]; var oid: [UInt8]; var ia5 = false }
    static let attributes: [Known] = [
        Known(names: ["CN", "commonName"], oid: [0x55, 0x04, 0x03]),
        Known(names: ["C", "countryName"], oid: [0x55, 0x04, 0x06]),
        Known(names: ["O", "organizationName"], oid: [0x55, 0x04, 0x0a]),
        Known(names: ["OU", "organizationalUnitName"], oid: [0x55, 0x04, 0x0b]),
        Known(names: ["L", "localityName"], oid: [0x55, 0x04, 0x07]),
        Known(names: ["ST", "stateOrProvinceName"], oid: [0x55, 0x04, 0x08]),
        Known(names: ["STREET", "streetAddress"], oid: [0x55, 0x04, 0x09]),
        Known(names: ["SN", "serialNumber"], oid: [0x55, 0x04, 0x05]),
        Known(names: ["S", "surname"], oid: [0x55, 0x04, 0x04]),
        Known(names: ["G", "givenName"], oid: [0x55, 0x04, 0x2a]),
        Known(names: ["I", "initials"], oid: [0x55, 0x04, 0x2b]),
        Known(names: ["T", "title"], oid: [0x55, 0x04, 0x0c]),
        Known(names: ["postalCode"], oid: [0x55, 0x04, 0x11]),
        Known(names: ["dnQualifier"], oid: [0x55, 0x04, 0x2e]),
        Known(names: ["pseudonym"], oid: [0x55, 0x04, 0x41]),
        Known(names: ["UID", "userId"], oid: [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01]),
        Known(names: ["DC", "domainComponent"], oid: [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19], ia5: true),
        Known(names: ["E", "emailAddress", "Email"], oid: [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01], ia5: true),
    ]

    /// PrintableString's alphabet (X.680 §41.4).
    static func isPrintable(_ c: Character) -> Bool {
        guard c.isASCII, let v = c.asciiValue else { return false }
        return (v >= 0x41 && v <= 0x5a) || (v >= 0x61 && v <= 0x7a) || (v >= 0x30 && v <= 0x39) || " '()+,-./:=?".utf8.contains(v)
    }

    /// The value as text, for the string types; nil for others (and for BMP/Universal
    /// strings, compared by bytes).
    static func text(_ a: Attribute) -> String? {
        switch a.tag {
        case DER.utf8String, DER.printableString, DER.ia5String, DER.t61String:
            return String(validating: a.value, as: UTF8.self)
        default:
            return nil
        }
    }

    /// RFC 5280 §7.1 (simplified from RFC 4518): case folded, spaces trimmed and collapsed.
    static func folded(_ s: String) -> String {
        s.lowercased().split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    /// `TYPE=value` parts, unquoted and unescaped; a nil value for a part without `=`.
    static func split(_ text: String) throws(DistinguishedNameError) -> [(key: String, value: String?)] {
        var parts: [(key: String, value: String?)] = []
        var key = "", value = "", inValue = false, quoted = false, wasQuoted = false, escaped = false
        func finish() throws(DistinguishedNameError) {
            let k = key.trimmingSpaces
            guard !k.isEmpty else { throw DistinguishedNameError("an attribute without a type in \"\(text)\"") }
            parts.append((k, inValue ? (wasQuoted ? value : value.trimmingSpaces) : nil))
            key = ""; value = ""; inValue = false; wasQuoted = false
        }
        for c in text {
            if escaped { value.append(c); escaped = false; continue }
            if !inValue {
                switch c {
                case "=": inValue = true
                case ",": try finish()
                default: key.append(c)
                }
                continue
            }
            switch c {
            case "\\": escaped = true
            case "\"" where quoted: quoted = false
            case "\"" where !wasQuoted && value.trimmingSpaces.isEmpty: quoted = true; wasQuoted = true; value = ""
            case "," where !quoted: try finish()
            case _ where wasQuoted && !quoted:
                guard c == " " else { throw DistinguishedNameError("text after a quoted value in \"\(text)\"") }
            default: value.append(c)
            }
        }
        guard !quoted, !escaped else { throw DistinguishedNameError("\"\(text)\" ends inside a quoted value or an escape") }
        try finish()
        return parts
    }
}

public struct DistinguishedNameError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension String {
    /// Control characters escaped (`\u{a}`): names from the peer go into log lines.
    var printable: String {
        unicodeScalars.map { c in
            c.value < 0x20 || (0x7f...0x9f).contains(c.value) ? "\\u{\(String(c.value, radix: 16))}" : String(c)
        }.joined()
    }

    var trimmingSpaces: String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

extension Substring {
    var trimmingSpaces: String { String(self).trimmingSpaces }
}
