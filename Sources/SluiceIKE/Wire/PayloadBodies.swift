/// The bodies of the payloads Sluice interprets (RFC 7296 §3.4-3.14, RFC 7383 §2.5), each read
/// strictly from a reader bounded by its payload length, and written back the same way.
enum PayloadBodies {
    /// Nonce data length limits (§3.9).
    static let nonceRange = 16...256

    /// Decodes the body under `r` of a payload of `type`; `nextField` is the generic header's
    /// next-payload byte (for SK and SKF: the first inner payload's type). Nil, with nothing
    /// read, for a type Sluice does not interpret (CP, EAP, unknown ones).
    static func decode(type: UInt8, nextField: UInt8, _ r: inout WireReader) throws(IKEDecodeError) -> Payload? {
        switch type {
        case PayloadType.sa:
            return .sa(try SACoding.decode(&r))
        case PayloadType.ke:
            let group = try r.u16("DH group")
            try r.skip(2, "reserved bytes")
            let data = r.rest()
            guard !data.isEmpty else { throw r.malformed("KE payload has no key exchange data") }
            return .ke(group: group, data: data)
        case PayloadType.idi:
            return .idi(try decodeID(&r))
        case PayloadType.idr:
            return .idr(try decodeID(&r))
        case PayloadType.cert:
            let encoding = try r.u8("certificate encoding")
            let data = r.rest()
            guard !data.isEmpty else { throw r.malformed("CERT payload has no certificate data") }
            return .cert(encoding: encoding, data: data)
        case PayloadType.certreq:
            // An empty CA list is allowed: "any certificate of this encoding".
            return .certreq(encoding: try r.u8("certificate encoding"), data: r.rest())
        case PayloadType.auth:
            let method = try r.u8("auth method")
            try r.skip(3, "reserved bytes")
            let data = r.rest()
            guard !data.isEmpty else { throw r.malformed("AUTH payload has no authentication data") }
            return .auth(method: method, data: data)
        case PayloadType.nonce:
            let data = r.rest()
            guard nonceRange.contains(data.count) else {
                throw r.malformed("Nonce is \(data.count) bytes, must be 16 to 256 (RFC 7296 §3.9)")
            }
            return .nonce(data)
        case PayloadType.notify:
            let protocolID = try r.u8("protocol ID")
            let spiSize = Int(try r.u8("SPI size"))
            let notifyType = try r.u16("notify message type")
            let spi = try r.take(spiSize, "SPI (\(spiSize) bytes)")
            return .notify(NotifyPayload(protocolID: protocolID, spi: spi, type: notifyType, data: r.rest()))
        case PayloadType.delete:
            return .delete(try decodeDelete(&r))
        case PayloadType.vendor:
            return .vendor(r.rest())
        case PayloadType.tsi:
            return .tsi(try TrafficSelectorCoding.decode(&r))
        case PayloadType.tsr:
            return .tsr(try TrafficSelectorCoding.decode(&r))
        case PayloadType.encrypted:
            return .encrypted(firstInner: nextField, body: r.rest())
        case PayloadType.encryptedFragment:
            let number = try r.u16("fragment number")
            let total = try r.u16("total fragments")
            guard number >= 1, number <= total else {
                throw r.malformed("SKF fragment number \(number) of \(total) total, must be 1 to the total (RFC 7383 §2.5)")
            }
            return .encryptedFragment(number: number, total: total, firstInner: nextField, body: r.rest())
        default:
            return nil
        }
    }

    private static func decodeID(_ r: inout WireReader) throws(IKEDecodeError) -> IDPayload {
        let raw = try r.u8("ID type")
        guard let type = IDType(rawValue: raw) else {
            throw r.malformed("\(PayloadType.name(r.payload)) type \(raw) is not one Sluice supports (1, 2, 3, 5, 9, 11)")
        }
        try r.skip(3, "reserved bytes")
        let data = r.rest()
        switch type {
        case .ipv4 where data.count != 4, .ipv6 where data.count != 16:
            throw r.malformed("\(PayloadType.name(r.payload)) address of \(data.count) bytes for ID type \(raw)")
        case _ where data.isEmpty:
            throw r.malformed("\(PayloadType.name(r.payload)) payload has no identification data")
        default:
            return IDPayload(type: type, data: data)
        }
    }

    private static func decodeDelete(_ r: inout WireReader) throws(IKEDecodeError) -> DeletePayload {
        let raw = try r.u8("protocol ID")
        guard let protocolID = ProtocolID(rawValue: raw) else {
            throw r.malformed("Delete payload protocol ID \(raw) is not IKE (1), AH (2) or ESP (3)")
        }
        let spiSize = Int(try r.u8("SPI size"))
        let count = Int(try r.u16("SPI count"))
        switch protocolID {
        case .ike:
            // §3.11: the IKE SA is named by the header's SPIs; the payload carries none.
            guard spiSize == 0, count == 0 else {
                throw r.malformed("Delete payload for IKE has SPI size \(spiSize) and \(count) SPIs, must be 0 and 0")
            }
        case .ah, .esp:
            guard spiSize == 4 else { throw r.malformed("Delete payload for AH/ESP has SPI size \(spiSize), must be 4") }
        }
        guard r.remaining == spiSize * count else {
            throw r.malformed("Delete payload lists \(count) SPIs of \(spiSize) bytes but has \(r.remaining) bytes for them")
        }
        var spis: [[UInt8]] = []
        for index in stride(from: 1, through: count, by: 1) { spis.append(try r.take(spiSize, "SPI \(index)")) }
        return DeletePayload(protocolID: protocolID, spis: spis)
    }

    /// The body of `payload`, written after its generic header.
    static func encode(_ payload: Payload, into out: inout [UInt8]) {
        switch payload {
        case let .sa(proposals):
            SACoding.encode(proposals, into: &out)
        case let .ke(group, data):
            out.appendU16(group); out += [0, 0]; out += data
        case let .idi(id), let .idr(id):
            out += id.restOfPayload
        case let .cert(encoding, data), let .certreq(encoding, data):
            out.append(encoding); out += data
        case let .auth(method, data):
            out.append(method); out += [0, 0, 0]; out += data
        case let .nonce(data), let .vendor(data):
            out += data
        case let .notify(n):
            out.append(n.protocolID)
            out.append(wireU8(n.spi.count, "Notify SPI size"))
            out.appendU16(n.type)
            out += n.spi
            out += n.data
        case let .delete(d):
            let spiSize = d.protocolID == .ike ? 0 : 4
            for spi in d.spis where spi.count != spiSize {
                preconditionFailure("IKE encode: a \(spi.count)-byte SPI in a Delete payload for \(d.protocolID)")
            }
            out.append(d.protocolID.rawValue)
            out.append(UInt8(spiSize))
            out.appendU16(wireU16(d.spis.count, "Delete SPI count"))
            for spi in d.spis { out += spi }
        case let .tsi(selectors), let .tsr(selectors):
            TrafficSelectorCoding.encode(selectors, into: &out)
        case let .encrypted(_, body):
            out += body
        case let .encryptedFragment(number, total, _, body):
            out.appendU16(number); out.appendU16(total); out += body
        case let .other(_, _, body):
            out += body
        }
    }
}
