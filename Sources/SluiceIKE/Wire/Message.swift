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
    public func encode() -> [UInt8] { fatalError("codec: encode") }

    /// Decodes a whole datagram (without the 4-byte non-ESP marker).
    public static func decode(_ bytes: [UInt8]) throws(IKEDecodeError) -> IKEMessage { fatalError("codec: decode") }

    /// Reads only the header (first 28 bytes), for demultiplexing before the rest is trusted.
    public static func decodeHeader(_ bytes: [UInt8]) throws(IKEDecodeError) -> IKEHeader { fatalError("codec: header") }

    /// Builds an encrypted message: header, then one SK payload whose body `seal` produces.
    /// `sealedLength(n)` is the SK body size for n bytes of plaintext; `seal(prefix, plaintext)` gets
    /// the final header plus SK generic payload header (the AAD / the start of the MACed data).
    public static func encodeEncrypted(header: IKEHeader, inner: [Payload],
                                       sealedLength: (Int) -> Int,
                                       seal: (_ prefix: [UInt8], _ plaintext: [UInt8]) throws -> [UInt8]) rethrows -> [UInt8] {
        fatalError("codec: encodeEncrypted")
    }
}
