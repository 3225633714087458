import Testing
@testable import SluiceIKE
import SluiceCore

/// Every way a datagram can fail to decode, with the error kind, payload and offset it reports.
@Suite("IKE message codec: malformed input")
struct WireErrorTests {
    static let nonce = payload(next: 0, Array(repeating: 0x33, count: 16))
    static let good = datagram(first: PayloadType.nonce, nonce)

    /// An SA payload holding `proposals` (raw proposal substructures), followed by nothing.
    static func sa(_ proposals: [UInt8]) -> [UInt8] { datagram(first: PayloadType.sa, payload(next: 0, proposals)) }

    static func proposal(last: UInt8 = 0, number: UInt8 = 1, protocolID: UInt8 = 1, spi: [UInt8] = [],
                         count: UInt8, _ transforms: [UInt8], length: Int? = nil) -> [UInt8] {
        var p: [UInt8] = [last, 0]
        p.appendU16(UInt16(length ?? 8 + spi.count + transforms.count))
        return p + [number, protocolID, UInt8(spi.count), count] + spi + transforms
    }

    static func transform(last: UInt8 = 0, type: UInt8, id: UInt16, _ attributes: [UInt8] = [], length: Int? = nil) -> [UInt8] {
        var t: [UInt8] = [last, 0]
        t.appendU16(UInt16(length ?? 8 + attributes.count))
        t += [type, 0]
        t.appendU16(id)
        return t + attributes
    }

    @Test("the sanity case decodes")
    func goodDecodes() throws {
        #expect(try IKEMessage.decode(Self.good).payloads == [.nonce(Array(repeating: 0x33, count: 16))])
    }

    @Test("header: truncated, bad version (minor ignored), unknown exchange")
    func header() throws {
        let cut = Array(Self.good[0..<27])
        #expect(decodeError(cut) == IKEDecodeError(.truncated, offset: 27, payload: 0))
        #expect(throws: IKEDecodeError.self) { try IKEMessage.decodeHeader(cut) }
        var v1 = Self.good; v1[17] = 0x10
        #expect(decodeError(v1) == IKEDecodeError(.badVersion(1), offset: 17, payload: 0))
        var v3 = Self.good; v3[17] = 0x30
        #expect(decodeError(v3)?.kind == .badVersion(3))
        var minor = Self.good; minor[17] = 0x2F
        #expect(try IKEMessage.decode(minor).payloads.count == 1)
        var exchange = Self.good; exchange[18] = 99
        #expect(decodeError(exchange) == IKEDecodeError(.unknownExchange(99), offset: 18, payload: 0))
        var flags = Self.good; flags[19] = 0x20 | 0x10  // Response + Version: the Version flag is ignored
        let h = try IKEMessage.decodeHeader(flags)
        #expect(h.isResponse && !h.isInitiator && h.messageID == 1 && h.spiR == 0x1112_1314_1516_1718)
    }

    @Test("header length against the datagram")
    func lengthMismatch() {
        #expect(decodeError(Self.good + [0]) == IKEDecodeError(.badLength, offset: Self.good.count, payload: 0))
        #expect(decodeError(Array(Self.good.dropLast())) == IKEDecodeError(.truncated, offset: Self.good.count - 1, payload: 0))
        var small = Self.good; small[27] = 27; small[26] = 0
        #expect(decodeError(small) == IKEDecodeError(.badLength, offset: 24, payload: 0))
        // Bytes after the last payload, inside the header's length.
        #expect(decodeError(datagram(first: PayloadType.nonce, Self.nonce + [0, 0]))
                == IKEDecodeError(.badLength, offset: 28 + Self.nonce.count, payload: 0))
    }

    @Test("generic payload header: cut, length below 4, length past the message")
    func genericHeader() {
        // The header promises a Nonce but only 2 bytes follow.
        #expect(decodeError(datagram(first: PayloadType.nonce, [0, 0])) == IKEDecodeError(.truncated, offset: 28, payload: 40))
        #expect(decodeError(datagram(first: PayloadType.nonce, [0, 0, 0, 3])) == IKEDecodeError(.badLength, offset: 30, payload: 40))
        var long = Self.nonce; long[3] += 1
        #expect(decodeError(datagram(first: PayloadType.nonce, long)) == IKEDecodeError(.truncated, offset: 30, payload: 40))
        // A chain whose second payload runs past the end: the error names it and its place.
        let chain = payload(next: PayloadType.vendor, Array(repeating: 1, count: 16)) + [0, 0, 0, 9, 1]
        #expect(decodeError(datagram(first: PayloadType.nonce, chain)) == IKEDecodeError(.truncated, offset: 28 + 20 + 2, payload: 43))
    }

    @Test("unknown payloads: critical ones refused, others kept; CP and EAP kept either way")
    func unknownPayloads() throws {
        let critical = payload(next: PayloadType.nonce, [1, 2], critical: true) + Self.nonce
        #expect(decodeError(datagram(first: 200, critical)) == IKEDecodeError(.unsupportedCritical(200), offset: 29, payload: 200))
        // Reserved bits next to the critical bit are ignored.
        var quiet = payload(next: PayloadType.nonce, [1, 2]) + Self.nonce
        quiet[1] = 0x7F
        #expect(try IKEMessage.decode(datagram(first: 200, quiet)).payloads
                == [.other(type: 200, critical: false, body: [1, 2]), .nonce(Array(repeating: 0x33, count: 16))])
        let cp = payload(next: 0, [2, 0, 0, 0], critical: true)
        #expect(try IKEMessage.decode(datagram(first: PayloadType.configuration, cp)).payloads
                == [.other(type: 47, critical: true, body: [2, 0, 0, 0])])
        // The critical bit on a payload Sluice understands is ignored (§3.2).
        let criticalNonce = payload(next: 0, Array(repeating: 0x33, count: 16), critical: true)
        #expect(try IKEMessage.decode(datagram(first: PayloadType.nonce, criticalNonce)).payloads.count == 1)
    }

    @Test("SA: proposal and transform lengths, last-substructure bytes, counts")
    func saErrors() throws {
        let encr = Self.transform(type: 1, id: 20, [0x80, 0x0E, 0x00, 0x80])
        let ok = Self.proposal(count: 1, encr)
        #expect(try IKEMessage.decode(Self.sa(ok)).payloads
                == [.sa([WireProposal(number: 1, protocolID: .ike, spi: [], transforms: [WireTransform(type: .encryption, id: 20, keyLength: 128)])])])

        let longProposal = Self.proposal(count: 1, encr, length: 60)
        let reason = malformedReason(Self.sa(longProposal))
        #expect(reason.contains("SA proposal 1 length 60 runs past its payload"), "\(reason)")
        #expect(decodeError(Self.sa(longProposal))?.payload == PayloadType.sa)
        #expect(malformedReason(Self.sa(Self.proposal(count: 1, encr, length: 7))).contains("below the 8-byte minimum"))
        // A proposal cut short inside its header.
        #expect(malformedReason(Self.sa([0, 0, 0])).contains("SA payload ends inside its SA proposal 1 length"))

        let longTransform = Self.proposal(count: 1, Self.transform(type: 1, id: 20, [0x80, 0x0E, 0x00, 0x80], length: 40))
        #expect(malformedReason(Self.sa(longTransform)).contains("SA proposal 1 transform 1 length 40 runs past its proposal"))
        let shortTransform = Self.proposal(count: 1, Self.transform(type: 1, id: 20, length: 6) + [0, 0])
        #expect(malformedReason(Self.sa(shortTransform)).contains("transform 1 length 6, below the 8-byte minimum"))

        #expect(malformedReason(Self.sa(Self.proposal(last: 1, count: 1, encr))).contains("last-substructure value 1"))
        #expect(malformedReason(Self.sa(Self.proposal(last: 2, count: 1, encr))).contains("says another proposal follows"))
        #expect(malformedReason(Self.sa(Self.proposal(count: 1, encr) + Self.proposal(number: 2, count: 1, encr)))
                .contains("is marked last but 20 bytes follow"))
        #expect(malformedReason(Self.sa(Self.proposal(count: 2, encr))).contains("transform 1 of 2 has last-substructure value 0, must be 3"))
        #expect(malformedReason(Self.sa(Self.proposal(count: 1, encr + encr))).contains("has 12 bytes after its 1 transforms"))
        #expect(malformedReason(Self.sa(Self.proposal(count: 0, []))) == "")
        #expect(malformedReason(Self.sa([])) == "SA payload has no proposals")
        // SPI sizes: IKE 0 or 8, ESP 4; an SPI that runs past the proposal.
        #expect(malformedReason(Self.sa(Self.proposal(protocolID: 3, count: 1, encr))).contains("AH/ESP with a 0-byte SPI"))
        #expect(malformedReason(Self.sa(Self.proposal(protocolID: 1, spi: [1, 2, 3, 4], count: 1, encr))).contains("IKE with a 4-byte SPI"))
        var spiPast = Self.proposal(protocolID: 3, spi: [1, 2, 3, 4], count: 0, [])
        spiPast[6] = 9 // claims a 9-byte SPI: checked as ESP first
        #expect(malformedReason(Self.sa(spiPast)).contains("9-byte SPI"))
        spiPast[5] = 77 // unknown protocol, 9-byte SPI in 4 bytes
        #expect(malformedReason(Self.sa(spiPast)).contains("ends inside its SA proposal 1 SPI"))
    }

    @Test("SA: attributes skipped or refused; unknown transform types and protocols drop their proposal")
    func saAttributesAndUnknowns() throws {
        // Unknown TV attribute 0x8001 and TLV attribute 0x0002 of 3 bytes, around the Key Length.
        let attributes: [UInt8] = [0x80, 0x01, 0xAA, 0xBB, 0x00, 0x02, 0x00, 0x03, 1, 2, 3, 0x80, 0x0E, 0x01, 0x00]
        let p = Self.proposal(count: 1, Self.transform(type: 1, id: 12, attributes))
        #expect(try IKEMessage.decode(Self.sa(p)).payloads
                == [.sa([WireProposal(number: 1, protocolID: .ike, spi: [], transforms: [WireTransform(type: .encryption, id: 12, keyLength: 256)])])])
        let tlvPast = Self.proposal(count: 1, Self.transform(type: 1, id: 12, [0x00, 0x02, 0x00, 0x09, 1]))
        #expect(malformedReason(Self.sa(tlvPast)).contains("attribute 2 value"))
        let tlvKeyLength = Self.proposal(count: 1, Self.transform(type: 1, id: 12, [0x00, 0x0E, 0x00, 0x02, 1, 0]))
        #expect(malformedReason(Self.sa(tlvKeyLength)).contains("Key Length attribute in TLV form"))
        let twice = Self.proposal(count: 1, Self.transform(type: 1, id: 12, [0x80, 0x0E, 0, 128, 0x80, 0x0E, 0, 128]))
        #expect(malformedReason(Self.sa(twice)).contains("two Key Length attributes"))
        let halfAttribute = Self.proposal(count: 1, Self.transform(type: 1, id: 12, [0x80]))
        #expect(malformedReason(Self.sa(halfAttribute)).contains("attribute type"))

        // Proposal 1 has transform type 9 (unknown): dropped; proposal 3 has protocol 77: dropped.
        let unknownType = Self.proposal(last: 2, number: 1, count: 2,
                                        Self.transform(last: 3, type: 9, id: 1) + Self.transform(type: 2, id: 5))
        let known = Self.proposal(last: 2, number: 2, count: 1, Self.transform(type: 2, id: 7))
        let unknownProtocol = Self.proposal(number: 3, protocolID: 77, spi: [1, 2], count: 1, Self.transform(type: 2, id: 5))
        #expect(try IKEMessage.decode(Self.sa(unknownType + known + unknownProtocol)).payloads
                == [.sa([WireProposal(number: 2, protocolID: .ike, spi: [], transforms: [WireTransform(type: .prf, id: 7)])])])
        #expect(try IKEMessage.decode(Self.sa(unknownType.enumerated().map { $0.offset == 0 ? 0 : $0.element })).payloads == [.sa([])])
        // A dropped proposal is still parsed strictly.
        let brokenUnknown = Self.proposal(count: 1, Self.transform(type: 9, id: 1, length: 30))
        #expect(malformedReason(Self.sa(brokenUnknown)).contains("runs past its proposal"))
    }

    @Test("KE, ID, CERT, AUTH, Nonce bodies")
    func simpleBodies() throws {
        func one(_ type: UInt8, _ body: [UInt8]) -> [UInt8] { datagram(first: type, payload(next: 0, body)) }
        #expect(malformedReason(one(PayloadType.ke, [0, 14, 0])).contains("KE payload ends inside its reserved bytes"))
        #expect(malformedReason(one(PayloadType.ke, [0, 14, 0, 0])) == "KE payload has no key exchange data")
        #expect(try IKEMessage.decode(one(PayloadType.ke, [0, 31, 0xFF, 0xFF, 1])).payloads == [.ke(group: 31, data: [1])])
        #expect(malformedReason(one(PayloadType.idi, [4, 0, 0, 0, 1])).contains("IDi type 4 is not one Sluice supports"))
        #expect(malformedReason(one(PayloadType.idr, [1, 0, 0, 0, 192, 0, 2])).contains("IDr address of 3 bytes"))
        #expect(malformedReason(one(PayloadType.idi, [2, 0, 0, 0])) == "IDi payload has no identification data")
        #expect(malformedReason(one(PayloadType.idi, [2, 0])).contains("reserved bytes"))
        #expect(try IKEMessage.decode(one(PayloadType.idr, [5, 9, 9, 9] + Array(repeating: 0, count: 16))).payloads
                == [.idr(IDPayload(type: .ipv6, data: Array(repeating: 0, count: 16)))])
        #expect(malformedReason(one(PayloadType.cert, [])).contains("certificate encoding"))
        #expect(malformedReason(one(PayloadType.cert, [4])) == "CERT payload has no certificate data")
        #expect(malformedReason(one(PayloadType.auth, [2, 0, 0, 0])) == "AUTH payload has no authentication data")
        #expect(malformedReason(one(PayloadType.nonce, Array(repeating: 0, count: 15))).contains("Nonce is 15 bytes"))
        #expect(malformedReason(one(PayloadType.nonce, Array(repeating: 0, count: 257))).contains("Nonce is 257 bytes"))
        #expect(decodeError(one(PayloadType.nonce, Array(repeating: 0, count: 15)))?.offset == 28 + 4 + 15)
    }

    @Test("Notify and Delete bodies")
    func notifyDelete() throws {
        func one(_ type: UInt8, _ body: [UInt8]) -> [UInt8] { datagram(first: type, payload(next: 0, body)) }
        #expect(malformedReason(one(PayloadType.notify, [0, 0, 0x40])).contains("Notify payload ends inside its notify message type"))
        #expect(malformedReason(one(PayloadType.notify, [3, 4, 0x40, 0x09, 1, 2])).contains("SPI (4 bytes)"))
        #expect(try IKEMessage.decode(one(PayloadType.notify, [0, 0, 0x40, 0x04, 7])).payloads
                == [.notify(NotifyPayload(type: NotifyType.natDetectionSourceIP, data: [7]))])
        #expect(malformedReason(one(PayloadType.delete, [1, 8, 0, 1] + Array(repeating: 0, count: 8))).contains("for IKE has SPI size 8"))
        #expect(malformedReason(one(PayloadType.delete, [3, 8, 0, 1] + Array(repeating: 0, count: 8))).contains("SPI size 8, must be 4"))
        #expect(malformedReason(one(PayloadType.delete, [3, 4, 0, 2, 1, 2, 3, 4])).contains("lists 2 SPIs of 4 bytes but has 4"))
        #expect(malformedReason(one(PayloadType.delete, [6, 4, 0, 1, 1, 2, 3, 4])).contains("protocol ID 6"))
        #expect(try IKEMessage.decode(one(PayloadType.delete, [1, 0, 0, 0])).payloads == [.delete(DeletePayload(protocolID: .ike, spis: []))])
    }

    @Test("traffic selectors: counts, types, lengths, truncation")
    func trafficSelectors() throws {
        func ts(_ body: [UInt8]) -> [UInt8] { datagram(first: PayloadType.tsi, payload(next: 0, body)) }
        let v4: [UInt8] = [7, 6, 0, 16, 0, 0, 0xFF, 0xFF, 192, 0, 2, 0, 192, 0, 2, 255]
        #expect(try IKEMessage.decode(ts([1, 0, 0, 0] + v4)).payloads
                == [.tsi([WireTrafficSelector(ipProtocol: 6, startAddress: IPAddress("192.0.2.0")!, endAddress: IPAddress("192.0.2.255")!)])])
        #expect(malformedReason(ts([0, 0, 0, 0])) == "TSi payload lists no traffic selectors")
        #expect(malformedReason(ts([2, 0, 0, 0] + v4)).contains("TSi payload ends inside its TSi selector 2 type"))
        #expect(malformedReason(ts([1, 0, 0, 0] + v4 + [0])).contains("1 bytes after its 1 selectors"))
        #expect(malformedReason(ts([1, 0, 0, 0] + Array(v4[0..<12]))).contains("TSi selector 1 length 16 runs past its payload"))
        var wrongLength = v4; wrongLength[3] = 40
        #expect(malformedReason(ts([1, 0, 0, 0] + wrongLength)).contains("of type 7 has length 40, must be 16"))
        var fc = v4; fc[0] = 9
        #expect(malformedReason(ts([1, 0, 0, 0] + fc)).contains("has type 9, not TS_IPV4_ADDR_RANGE"))
        let tsr = datagram(first: PayloadType.tsr, payload(next: 0, [1, 0, 0, 0] + [8, 0, 0, 16] + Array(repeating: 0, count: 12)))
        #expect(malformedReason(tsr).contains("TSr selector 1 of type 8 has length 16, must be 40"))
    }

    @Test("SK and SKF: must be last; fragment numbers")
    func encryptedPayloads() throws {
        let sk = payload(next: PayloadType.idi, Array(repeating: 0xEE, count: 20))
        #expect(try IKEMessage.decode(datagram(first: PayloadType.encrypted, sk)).payloads
                == [.encrypted(firstInner: PayloadType.idi, body: Array(repeating: 0xEE, count: 20))])
        let followed = datagram(first: PayloadType.encrypted, sk + Self.nonce)
        #expect(decodeError(followed) == IKEDecodeError(.malformed("SK payload is followed by 20 bytes; it must be the last payload"),
                                                        offset: 28 + 24, payload: 46))
        func skf(_ number: UInt16, _ total: UInt16) -> [UInt8] {
            var body: [UInt8] = []; body.appendU16(number); body.appendU16(total)
            return datagram(first: PayloadType.encryptedFragment, payload(next: 0, body + [1, 2, 3]))
        }
        #expect(try IKEMessage.decode(skf(3, 3)).payloads == [.encryptedFragment(number: 3, total: 3, firstInner: 0, body: [1, 2, 3])])
        #expect(malformedReason(skf(0, 3)).contains("fragment number 0 of 3"))
        #expect(malformedReason(skf(4, 3)).contains("fragment number 4 of 3"))
        #expect(malformedReason(datagram(first: PayloadType.encryptedFragment, payload(next: 0, [0, 1, 0]))).contains("total fragments"))
        // decodeChain: offsets are shifted by baseOffset.
        #expect(throws: IKEDecodeError(.badLength, offset: 100 + 2, payload: PayloadType.nonce)) {
            try Payload.decodeChain(first: PayloadType.nonce, [0, 0, 0, 1], baseOffset: 100)
        }
    }
}
