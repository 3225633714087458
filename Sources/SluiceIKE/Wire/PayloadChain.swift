/// Payload chains (RFC 7296 §3.2): generic headers linked by their next-payload fields.
enum PayloadChain {
    static let genericHeaderSize = 4
    static let criticalBit: UInt8 = 0x80

    /// Types Sluice does not interpret but which are defined: kept as `.other` whatever their
    /// critical bit says (the bit only matters for types the receiver does not understand).
    static let definedUninterpreted: Set<UInt8> = [PayloadType.configuration, PayloadType.eap]

    /// Decodes the chain in `bytes[start ..< end]` whose first payload has type `first`; errors
    /// report offsets as `baseOffset` plus the index in `bytes`. The chain must fill the range:
    /// it ends at a next-payload of 0, or with SK / SKF, which must be the last payload (§3.14).
    static func decode(first: UInt8, _ bytes: [UInt8], from start: Int, to end: Int,
                       baseOffset: Int) throws(IKEDecodeError) -> [Payload] {
        var payloads: [Payload] = []
        var type = first
        var at = start
        while type != PayloadType.none {
            guard end - at >= genericHeaderSize else {
                throw IKEDecodeError(.truncated, offset: baseOffset + at, payload: type)
            }
            let nextField = bytes[at]
            let critical = bytes[at + 1] & criticalBit != 0
            let length = Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
            guard length >= genericHeaderSize else { throw IKEDecodeError(.badLength, offset: baseOffset + at + 2, payload: type) }
            guard length <= end - at else { throw IKEDecodeError(.truncated, offset: baseOffset + at + 2, payload: type) }
            var body = WireReader(bytes, from: at + genericHeaderSize, to: at + length, payload: type, baseOffset: baseOffset)
            if let payload = try PayloadBodies.decode(type: type, nextField: nextField, &body) {
                payloads.append(payload)
            } else if critical && !definedUninterpreted.contains(type) {
                throw IKEDecodeError(.unsupportedCritical(type), offset: baseOffset + at + 1, payload: type)
            } else {
                payloads.append(.other(type: type, critical: critical, body: body.rest()))
            }
            at += length
            if type == PayloadType.encrypted || type == PayloadType.encryptedFragment {
                guard at == end else {
                    throw IKEDecodeError(.malformed("\(PayloadType.name(type)) payload is followed by \(end - at) bytes; it must be the last payload"),
                                         offset: baseOffset + at, payload: type)
                }
                return payloads
            }
            type = nextField
        }
        guard at == end else { throw IKEDecodeError(.badLength, offset: baseOffset + at, payload: PayloadType.none) }
        return payloads
    }

    static func encode(_ payloads: [Payload]) -> (first: UInt8, bytes: [UInt8]) {
        var out: [UInt8] = []
        for (i, payload) in payloads.enumerated() {
            let isLast = i == payloads.count - 1
            let nextField: UInt8
            var critical = false
            switch payload {
            case let .encrypted(firstInner, _), let .encryptedFragment(_, _, firstInner, _):
                guard isLast else { preconditionFailure("IKE encode: an SK/SKF payload must be the last in its chain") }
                nextField = firstInner
            case let .other(_, isCritical, _):
                critical = isCritical
                nextField = isLast ? PayloadType.none : payloads[i + 1].type
            default:
                nextField = isLast ? PayloadType.none : payloads[i + 1].type
            }
            let start = out.count
            out.append(nextField)
            out.append(critical ? criticalBit : 0)
            out.appendU16(0) // length, below
            PayloadBodies.encode(payload, into: &out)
            out.setU16(wireU16(out.count - start, "\(PayloadType.name(payload.type)) payload length"), at: start + 2)
        }
        return (payloads.first?.type ?? PayloadType.none, out)
    }
}
