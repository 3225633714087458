import Testing
@testable import SluiceIKE
import SluiceCore

/// A datagram: a header (request from the original initiator, INFORMATIONAL, message ID 1)
/// whose next payload is `first` and whose length field is right, then `chain`.
func datagram(first: UInt8, _ chain: [UInt8], exchange: UInt8 = 37) -> [UInt8] {
    var h = hex("0102030405060708 1112131415161718") + [first, 0x20, exchange, 0x08] + [0, 0, 0, 1]
    h.appendU32(UInt32(28 + chain.count))
    return h + chain
}

/// A generic payload header plus body.
func payload(next: UInt8, _ body: [UInt8], critical: Bool = false) -> [UInt8] {
    var out: [UInt8] = [next, critical ? 0x80 : 0]
    out.appendU16(UInt16(4 + body.count))
    return out + body
}

func decodeError(_ bytes: [UInt8]) -> IKEDecodeError? {
    do { _ = try IKEMessage.decode(bytes); return nil } catch { return error }
}

/// The reason of a `.malformed` error ("" when it decoded or failed otherwise).
func malformedReason(_ bytes: [UInt8]) -> String {
    if case let .malformed(reason)? = decodeError(bytes)?.kind { return reason }
    return ""
}

func v4(_ s: String) -> IPAddress { IPAddress(s)! }

@Suite("IKE message codec")
struct WireTests {
    static let header = IKEHeader(spiI: 0x0102_0304_0506_0708, spiR: 0x1112_1314_1516_1718, exchange: .ikeAuth,
                                  isInitiator: true, isResponse: false, messageID: 1)

    static let everyClearPayload: [Payload] = [
        .sa([WireProposal(number: 1, protocolID: .ike, spi: [], transforms: [
                WireTransform(type: .encryption, id: 20, keyLength: 256), WireTransform(type: .prf, id: 5),
                WireTransform(type: .keyExchange, id: 31)]),
             WireProposal(number: 2, protocolID: .esp, spi: [1, 2, 3, 4], transforms: [
                WireTransform(type: .encryption, id: 12, keyLength: 128), WireTransform(type: .integrity, id: 12),
                WireTransform(type: .esn, id: 0)])]),
        .ke(group: 14, data: Array(repeating: 0xAB, count: 256)),
        .idi(IDPayload(type: .fqdn, data: Array("gw-a.example".utf8))),
        .idr(IDPayload(type: .ipv4, data: [192, 0, 2, 2])),
        .cert(encoding: 4, data: [0x30, 0x82, 0x01, 0x00]),
        .certreq(encoding: 4, data: Array(repeating: 7, count: 20)),
        .certreq(encoding: 4, data: []),
        .auth(method: 2, data: Array(repeating: 0x55, count: 32)),
        .nonce(Array(repeating: 0x11, count: 16)),
        .nonce(Array(repeating: 0x22, count: 256)),
        .notify(NotifyPayload(type: NotifyType.initialContact)),
        .notify(NotifyPayload(protocolID: 3, spi: [0xCA, 0xFE, 0xF0, 0x0D], type: NotifyType.rekeySA)),
        .notify(NotifyPayload(type: NotifyType.invalidKEPayload, data: [0, 31])),
        .delete(DeletePayload(protocolID: .ike, spis: [])),
        .delete(DeletePayload(protocolID: .esp, spis: [[1, 2, 3, 4], [5, 6, 7, 8]])),
        .vendor(Array("sluice".utf8)),
        .tsi([WireTrafficSelector(ipProtocol: 17, startPort: 500, endPort: 500,
                                  startAddress: v4("192.0.2.1"), endAddress: v4("192.0.2.1")),
              WireTrafficSelector(startAddress: IPAddress("2001:db8::")!, endAddress: IPAddress("2001:db8::ffff")!)]),
        .tsr([WireTrafficSelector(startAddress: v4("192.0.2.0"), endAddress: v4("192.0.2.255"))]),
        .other(type: PayloadType.configuration, critical: true, body: [1, 0, 0, 0]),
        .other(type: 200, critical: false, body: [9, 9, 9]),
        .encrypted(firstInner: PayloadType.idi, body: Array(repeating: 0xEE, count: 48)),
    ]

    @Test("a message with every payload kind round-trips through encode and decode")
    func roundTripEveryKind() throws {
        let message = IKEMessage(header: Self.header, payloads: Self.everyClearPayload)
        let bytes = message.encode()
        let decoded = try IKEMessage.decode(bytes)
        #expect(decoded.payloads == message.payloads)
        #expect(decoded.header.nextPayload == PayloadType.sa)
        #expect(decoded.header.length == UInt32(bytes.count))
        #expect(decoded.header.exchange == .ikeAuth && decoded.header.isInitiator && !decoded.header.isResponse)
        #expect(decoded.encode() == bytes)

        let fragment = IKEMessage(header: Self.header, payloads: [
            .encryptedFragment(number: 2, total: 3, firstInner: 0, body: Array(repeating: 0xDD, count: 40))])
        let fragmentBytes = fragment.encode()
        #expect(try IKEMessage.decode(fragmentBytes).payloads == fragment.payloads)
        #expect(fragmentBytes[16] == PayloadType.encryptedFragment)
    }

    @Test("a small message encodes to the bytes of the RFC 7296 layout, written out by hand")
    func byteExactEncoding() throws {
        let message = IKEMessage(
            header: IKEHeader(spiI: 0x0102_0304_0506_0708, spiR: 0x1112_1314_1516_1718, exchange: .informational,
                              isInitiator: true, isResponse: false, messageID: 5),
            payloads: [
                .delete(DeletePayload(protocolID: .esp, spis: [[0xAA, 0xBB, 0xCC, 0xDD]])),
                .notify(NotifyPayload(protocolID: 3, spi: [0xCA, 0xFE, 0xF0, 0x0D], type: NotifyType.rekeySA)),
                .sa([WireProposal(number: 1, protocolID: .esp, spi: [1, 2, 3, 4], transforms: [
                    WireTransform(type: .encryption, id: 20, keyLength: 128), WireTransform(type: .esn, id: 0)])]),
                .tsi([WireTrafficSelector(ipProtocol: 17, startPort: 500, endPort: 500,
                                          startAddress: v4("192.0.2.1"), endAddress: v4("192.0.2.1"))]),
            ])
        let expected = hex("""
            0102030405060708 1112131415161718 2a 20 25 08 00000005 00000070
            29 00 000c  03 04 0001 aabbccdd
            21 00 000c  03 04 4009 cafef00d
            2c 00 0024  00 00 0020 01 03 04 02 01020304
                        03 00 000c 01 00 0014 800e 0080
                        00 00 0008 05 00 0000
            00 00 0018  01 000000  07 11 0010 01f4 01f4 c0000201 c0000201
            """)
        #expect(message.encode() == expected)
        #expect(try IKEMessage.decode(expected) == IKEMessage(header: {
            var h = message.header; h.nextPayload = PayloadType.delete; h.length = 0x70; return h }(), payloads: message.payloads))
    }

    @Test("encodeEncrypted seals header and SK header with their final lengths, and decodes back")
    func encryptedMessage() throws {
        let inner: [Payload] = [.idi(IDPayload(type: .fqdn, data: Array("a.example".utf8))),
                                .auth(method: 2, data: Array(repeating: 1, count: 32))]
        var seenPrefix: [UInt8] = []
        // A stand-in cipher: 8-byte "IV", plaintext XOR 0x5A, 16-byte tag; body = n + 24.
        let bytes = IKEMessage.encodeEncrypted(header: Self.header, inner: inner, sealedLength: { $0 + 24 }) { prefix, plain in
            seenPrefix = prefix
            return Array(repeating: 0x01, count: 8) + plain.map { $0 ^ 0x5A } + Array(repeating: 0x02, count: 16)
        }
        let plainLength = Payload.encodeChain(inner).bytes.count
        #expect(bytes.count == 28 + 4 + plainLength + 24)
        #expect(seenPrefix == Array(bytes[0..<32]))
        #expect(seenPrefix[16] == PayloadType.encrypted)
        #expect(Array(seenPrefix[24..<28]) == [0, 0, UInt8((bytes.count >> 8) & 0xFF), UInt8(bytes.count & 0xFF)])
        #expect(seenPrefix[28] == PayloadType.idi)            // SK's next payload: the first inner one
        #expect(Int(seenPrefix[30]) << 8 | Int(seenPrefix[31]) == 4 + plainLength + 24)
        let decoded = try IKEMessage.decode(bytes)
        guard case let .encrypted(firstInner, body)? = decoded.payloads.last, decoded.payloads.count == 1 else {
            Issue.record("expected one SK payload, got \(decoded.payloads)"); return
        }
        #expect(firstInner == PayloadType.idi)
        let opened = Array(body[8 ..< body.count - 16]).map { $0 ^ 0x5A }
        #expect(try Payload.decodeChain(first: firstInner, opened, baseOffset: 40) == inner)

        // An empty inner chain (a liveness check): SK's next payload is 0.
        let empty = IKEMessage.encodeEncrypted(header: Self.header, inner: [], sealedLength: { $0 + 24 }) { _, p in
            Array(repeating: 0, count: 8) + p + Array(repeating: 0, count: 16)
        }
        #expect(empty.count == 28 + 4 + 24 && empty[28] == 0)
    }

    @Test("encodeEncryptedFragment writes number and total into the sealed prefix")
    func encryptedFragment() throws {
        var prefixes: [[UInt8]] = []
        func fragment(_ n: UInt16) -> [UInt8] {
            IKEMessage.encodeEncryptedFragment(header: Self.header, number: n, total: 2, firstInner: PayloadType.idi,
                                               plaintext: [1, 2, 3], sealedLength: { $0 + 4 }) { prefix, plain in
                prefixes.append(prefix); return plain + [9, 9, 9, 9]
            }
        }
        let first = fragment(1), second = fragment(2)
        #expect(prefixes[0] == Array(first[0..<36]) && prefixes[0].count == 36)
        #expect(Array(first[28..<36]) == [PayloadType.idi, 0, 0, 15, 0, 1, 0, 2])
        #expect(Array(second[28..<36]) == [0, 0, 0, 15, 0, 2, 0, 2])
        #expect(try IKEMessage.decode(first).payloads == [.encryptedFragment(number: 1, total: 2, firstInner: PayloadType.idi,
                                                                             body: [1, 2, 3, 9, 9, 9, 9])])
    }

    @Test("Payload.type and the RFC names of notify types")
    func typesAndNames() {
        for p in Self.everyClearPayload {
            let (first, bytes) = Payload.encodeChain([p])
            #expect(first == p.type && bytes.count >= 4)
        }
        #expect(Payload.nonce([]).type == 40 && Payload.encryptedFragment(number: 1, total: 1, firstInner: 0, body: []).type == 53)
        #expect(NotifyType.name(NotifyType.authenticationFailed) == "AUTHENTICATION_FAILED")
        #expect(NotifyType.name(NotifyType.noProposalChosen) == "NO_PROPOSAL_CHOSEN")
        #expect(NotifyType.name(NotifyType.tsUnacceptable) == "TS_UNACCEPTABLE")
        #expect(NotifyType.name(NotifyType.invalidKEPayload) == "INVALID_KE_PAYLOAD")
        #expect(NotifyType.name(NotifyType.natDetectionSourceIP) == "NAT_DETECTION_SOURCE_IP")
        #expect(NotifyType.name(NotifyType.signatureHashAlgorithms) == "SIGNATURE_HASH_ALGORITHMS")
        #expect(NotifyType.name(12345) == nil)
        let declared: [UInt16] = [1, 4, 5, 7, 9, 11, 14, 17, 24, 34, 35, 36, 37, 38, 39, 43, 44, 16384, 16385, 16386,
                                  16388, 16389, 16390, 16391, 16393, 16394, 16395, 16396, 16430, 16431]
        for t in declared { #expect(NotifyType.name(t) != nil, "no name for notify type \(t)") }
    }
}
