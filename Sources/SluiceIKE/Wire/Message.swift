/// IKEv2 messages on the wire (RFC 7296 §3): the fixed header and the payload chain.
/// Values only: no crypto, no state. Decoding is strict and bounded; every error names the
/// payload and the byte offset where the message stopped making sense.

public enum ExchangeType: UInt8, Sendable {
    case ikeSAInit = 34, ikeAuth = 35, createChildSA = 36, informational = 37
}

public struct IKEHeader: Sendable, Equatable {
    public var spiI: UInt64
    public var spiR: UInt64
    /// Type of the first payload (filled in by `IKEMessage.encode`).
    public var nextPayload: UInt8
    public var exchange: ExchangeType
    /// Flags: Initiator (the original initiator of the IKE SA sent it), Response.
    public var isInitiator: Bool
    public var isResponse: Bool
    public var messageID: UInt32
    /// Whole message length; `encode` computes it.
    public var length: UInt32

    public static let size = 28

    public init(spiI: UInt64, spiR: UInt64, exchange: ExchangeType, isInitiator: Bool, isResponse: Bool,
                messageID: UInt32, nextPayload: UInt8 = 0, length: UInt32 = 0) {
        self.spiI = spiI; self.spiR = spiR; self.exchange = exchange; self.isInitiator = isInitiator
        self.isResponse = isResponse; self.messageID = messageID; self.nextPayload = nextPayload; self.length = length
    }
}

public struct IKEDecodeError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Kind: Equatable, Sendable {
        case truncated               // a length runs past the end
        case badLength               // a length field below its minimum or not matching the message
        case badVersion(UInt8)       // major version not 2
        case unknownExchange(UInt8)
        case unsupportedCritical(UInt8)   // unknown payload with the critical bit (answer UNSUPPORTED_CRITICAL_PAYLOAD)
        case malformed(String)       // a payload's body does not parse (what, in words)
    }
    public var kind: Kind
    /// Byte offset in the message (or the decrypted chain) where decoding stopped.
    public var offset: Int
    /// Payload type being decoded, 0 for the header.
    public var payload: UInt8
    public init(_ kind: Kind, offset: Int, payload: UInt8) { self.kind = kind; self.offset = offset; self.payload = payload }
    public var description: String { "IKE message: \(kind) in payload \(payload) at byte \(offset)" }
}

/// A message as decoded: the header and the clear payloads. An encrypted message has `.encrypted`
/// as its last payload; open it with `SKCipher` and decode its chain with `Payload.decodeChain`.
public struct IKEMessage: Sendable, Equatable {
    public var header: IKEHeader
    public var payloads: [Payload]
    public init(header: IKEHeader, payloads: [Payload]) { self.header = header; self.payloads = payloads }

    /// Encodes header and payloads (header.nextPayload and lengths computed).
    public func encode() -> [UInt8] {
        let chain = Payload.encodeChain(payloads)
        var h = header
        h.nextPayload = chain.first
        h.length = UInt32(IKEHeader.size + chain.bytes.count)
        return h.encode() + chain.bytes
    }

    /// Decodes a whole datagram (without the 4-byte non-ESP marker).
    public static func decode(_ bytes: [UInt8]) throws(IKEDecodeError) -> IKEMessage {
        let header = try decodeHeader(bytes)
        let length = Int(header.length)
        guard length >= IKEHeader.size else { throw IKEDecodeError(.badLength, offset: IKEHeader.lengthOffset, payload: PayloadType.none) }
        guard bytes.count >= length else { throw IKEDecodeError(.truncated, offset: bytes.count, payload: PayloadType.none) }
        guard bytes.count == length else { throw IKEDecodeError(.badLength, offset: length, payload: PayloadType.none) }
        let payloads = try PayloadChain.decode(first: header.nextPayload, bytes, from: IKEHeader.size, to: length, baseOffset: 0)
        return IKEMessage(header: header, payloads: payloads)
    }

    /// Reads only the header (first 28 bytes), for demultiplexing before the rest is trusted.
    /// Checks the version (major 2; minor ignored) and the exchange type, not the length field.
    /// `.badVersion` carries the major version received (for INVALID_MAJOR_VERSION).
    public static func decodeHeader(_ bytes: [UInt8]) throws(IKEDecodeError) -> IKEHeader {
        var r = WireReader(bytes, from: 0, to: bytes.count, payload: PayloadType.none, baseOffset: 0)
        guard r.remaining >= IKEHeader.size else { throw IKEDecodeError(.truncated, offset: bytes.count, payload: PayloadType.none) }
        let spiI = try r.u64("initiator SPI"), spiR = try r.u64("responder SPI")
        let nextPayload = try r.u8("next payload")
        let version = try r.u8("version")
        guard version >> 4 == IKEHeader.majorVersion else {
            throw IKEDecodeError(.badVersion(version >> 4), offset: IKEHeader.versionOffset, payload: PayloadType.none)
        }
        let rawExchange = try r.u8("exchange type")
        guard let exchange = ExchangeType(rawValue: rawExchange) else {
            throw IKEDecodeError(.unknownExchange(rawExchange), offset: IKEHeader.versionOffset + 1, payload: PayloadType.none)
        }
        let flags = try r.u8("flags")
        let messageID = try r.u32("message ID"), length = try r.u32("length")
        return IKEHeader(spiI: spiI, spiR: spiR, exchange: exchange, isInitiator: flags & IKEHeader.initiatorFlag != 0,
                         isResponse: flags & IKEHeader.responseFlag != 0, messageID: messageID,
                         nextPayload: nextPayload, length: length)
    }

    /// Builds an encrypted message: header, then one SK payload whose body `seal` produces.
    /// `sealedLength(n)` is the SK body size for n bytes of plaintext; `seal(prefix, plaintext)` gets
    /// the final header plus SK generic payload header (the AAD / the start of the MACed data).
    /// `seal` must return exactly `sealedLength(plaintext.count)` bytes (the lengths are already written).
    public static func encodeEncrypted(header: IKEHeader, inner: [Payload],
                                       sealedLength: (Int) -> Int,
                                       seal: (_ prefix: [UInt8], _ plaintext: [UInt8]) throws -> [UInt8]) rethrows -> [UInt8] {
        let chain = Payload.encodeChain(inner)
        return try sealed(header: header, type: PayloadType.encrypted, nextField: chain.first, fields: [],
                          plaintext: chain.bytes, sealedLength: sealedLength, seal: seal)
    }

    /// Builds one fragment (RFC 7383 §2.5): header, then an SKF payload carrying fragment
    /// `number` of `total` of an inner chain's bytes (cut by the caller). `firstInner` (the
    /// chain's first payload type) is written in fragment 1 only; the others carry 0. `prefix`
    /// for `seal` is the header, the SKF generic header and the fragment number and total.
    public static func encodeEncryptedFragment(header: IKEHeader, number: UInt16, total: UInt16, firstInner: UInt8,
                                               plaintext: [UInt8], sealedLength: (Int) -> Int,
                                               seal: (_ prefix: [UInt8], _ plaintext: [UInt8]) throws -> [UInt8]) rethrows -> [UInt8] {
        var fields: [UInt8] = []
        fields.appendU16(number)
        fields.appendU16(total)
        return try sealed(header: header, type: PayloadType.encryptedFragment, nextField: number == 1 ? firstInner : PayloadType.none,
                          fields: fields, plaintext: plaintext, sealedLength: sealedLength, seal: seal)
    }

    /// Header | generic header (with `fields` after it) | seal(those bytes, plaintext).
    private static func sealed(header: IKEHeader, type: UInt8, nextField: UInt8, fields: [UInt8], plaintext: [UInt8],
                               sealedLength: (Int) -> Int,
                               seal: (_ prefix: [UInt8], _ plaintext: [UInt8]) throws -> [UInt8]) rethrows -> [UInt8] {
        let bodyLength = sealedLength(plaintext.count)
        let payloadLength = PayloadChain.genericHeaderSize + fields.count + bodyLength
        var h = header
        h.nextPayload = type
        h.length = UInt32(IKEHeader.size + payloadLength)
        var prefix = h.encode()
        prefix.append(nextField)
        prefix.append(0)
        prefix.appendU16(wireU16(payloadLength, "\(PayloadType.name(type)) payload length"))
        prefix += fields
        let body = try seal(prefix, plaintext)
        guard body.count == bodyLength else {
            preconditionFailure("IKE encode: seal returned \(body.count) bytes, sealedLength promised \(bodyLength)")
        }
        return prefix + body
    }
}

extension IKEHeader {
    static let majorVersion: UInt8 = 2
    static let versionOffset = 17, lengthOffset = 24
    static let initiatorFlag: UInt8 = 0x08, responseFlag: UInt8 = 0x20

    /// The 28 header bytes as the fields stand (`IKEMessage.encode` fills in next payload and length).
    /// Version 2.0; the Version flag (0x10) is never set: Sluice speaks nothing above 2.
    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(IKEHeader.size)
        out.appendU64(spiI)
        out.appendU64(spiR)
        out.append(nextPayload)
        out.append(IKEHeader.majorVersion << 4)
        out.append(exchange.rawValue)
        out.append((isInitiator ? IKEHeader.initiatorFlag : 0) | (isResponse ? IKEHeader.responseFlag : 0))
        out.appendU32(messageID)
        out.appendU32(length)
        return out
    }
}
