import SluiceCore

/// Payload type numbers (RFC 7296 §3.2, RFC 7383).
public enum PayloadType {
    public static let none: UInt8 = 0
    public static let sa: UInt8 = 33, ke: UInt8 = 34, idi: UInt8 = 35, idr: UInt8 = 36, cert: UInt8 = 37
    public static let certreq: UInt8 = 38, auth: UInt8 = 39, nonce: UInt8 = 40, notify: UInt8 = 41
    public static let delete: UInt8 = 42, vendor: UInt8 = 43, tsi: UInt8 = 44, tsr: UInt8 = 45
    public static let encrypted: UInt8 = 46, configuration: UInt8 = 47, eap: UInt8 = 48, encryptedFragment: UInt8 = 53

    /// The RFC's short name ("SA", "IDi", "SKF"), or "payload type N" for others; for errors and logs.
    public static func name(_ t: UInt8) -> String {
        switch t {
        case none: return "no next payload"
        case sa: return "SA"
        case ke: return "KE"
        case idi: return "IDi"
        case idr: return "IDr"
        case cert: return "CERT"
        case certreq: return "CERTREQ"
        case auth: return "AUTH"
        case nonce: return "Nonce"
        case notify: return "Notify"
        case delete: return "Delete"
        case vendor: return "Vendor ID"
        case tsi: return "TSi"
        case tsr: return "TSr"
        case encrypted: return "SK"
        case configuration: return "CP"
        case eap: return "EAP"
        case encryptedFragment: return "SKF"
        default: return "payload type \(t)"
        }
    }
}

public enum ProtocolID: UInt8, Sendable { case ike = 1, ah = 2, esp = 3 }

/// Transform type numbers (§3.3.2).
public enum TransformType: UInt8, Sendable { case encryption = 1, prf = 2, integrity = 3, keyExchange = 4, esn = 5 }

public struct WireTransform: Sendable, Equatable, Hashable {
    public var type: TransformType
    public var id: UInt16
    /// The Key Length attribute (type 14, TV), in bits, when present.
    public var keyLength: UInt16?
    public init(type: TransformType, id: UInt16, keyLength: UInt16? = nil) { self.type = type; self.id = id; self.keyLength = keyLength }
}

public struct WireProposal: Sendable, Equatable {
    public var number: UInt8
    public var protocolID: ProtocolID
    /// Empty for IKE in IKE_SA_INIT, 8 bytes for an IKE rekey, 4 for ESP.
    public var spi: [UInt8]
    public var transforms: [WireTransform]
    public init(number: UInt8, protocolID: ProtocolID, spi: [UInt8], transforms: [WireTransform]) {
        self.number = number; self.protocolID = protocolID; self.spi = spi; self.transforms = transforms
    }
}

/// Identification types (§3.5).
public enum IDType: UInt8, Sendable { case ipv4 = 1, fqdn = 2, rfc822 = 3, ipv6 = 5, derDN = 9, keyID = 11 }

public struct IDPayload: Sendable, Equatable {
    public var type: IDType
    public var data: [UInt8]
    public init(type: IDType, data: [UInt8]) { self.type = type; self.data = data }
    /// ID type, 3 reserved bytes, data: what AUTH MACs (RestOfInitIDPayload / RestOfRespIDPayload).
    public var restOfPayload: [UInt8] { [type.rawValue, 0, 0, 0] + data }
}

/// Notify message types used by Sluice (§3.10.1 and later RFCs). Others pass through as numbers.
public enum NotifyType {
    public static let unsupportedCriticalPayload: UInt16 = 1, invalidIKESPI: UInt16 = 4, invalidMajorVersion: UInt16 = 5
    public static let invalidSyntax: UInt16 = 7, invalidMessageID: UInt16 = 9, invalidSPI: UInt16 = 11
    public static let noProposalChosen: UInt16 = 14, invalidKEPayload: UInt16 = 17, authenticationFailed: UInt16 = 24
    public static let singlePairRequired: UInt16 = 34, noAdditionalSAs: UInt16 = 35, internalAddressFailure: UInt16 = 36
    public static let failedCPRequired: UInt16 = 37, tsUnacceptable: UInt16 = 38, invalidSelectors: UInt16 = 39
    public static let temporaryFailure: UInt16 = 43, childSANotFound: UInt16 = 44
    public static let initialContact: UInt16 = 16384, setWindowSize: UInt16 = 16385, additionalTSPossible: UInt16 = 16386
    public static let natDetectionSourceIP: UInt16 = 16388, natDetectionDestinationIP: UInt16 = 16389
    public static let cookie: UInt16 = 16390, useTransportMode: UInt16 = 16391, rekeySA: UInt16 = 16393
    public static let espTFCPaddingNotSupported: UInt16 = 16394, nonFirstFragmentsAlso: UInt16 = 16395
    public static let mobikeSupported: UInt16 = 16396, ikev2FragmentationSupported: UInt16 = 16430
    public static let signatureHashAlgorithms: UInt16 = 16431

    /// Names for logs ("AUTHENTICATION_FAILED"); nil for numbers Sluice does not know.
    public static func name(_ t: UInt16) -> String? { notifyTypeNames[t] }
    /// Error types are below 16384.
    public static func isError(_ t: UInt16) -> Bool { t < 16384 }
}

public struct NotifyPayload: Sendable, Equatable {
    public var protocolID: UInt8      // 0 when no SPI, 1 IKE, 3 ESP
    public var spi: [UInt8]
    public var type: UInt16
    public var data: [UInt8]
    public init(protocolID: UInt8 = 0, spi: [UInt8] = [], type: UInt16, data: [UInt8] = []) {
        self.protocolID = protocolID; self.spi = spi; self.type = type; self.data = data
    }
}

public struct DeletePayload: Sendable, Equatable {
    public var protocolID: ProtocolID
    /// Empty list for an IKE SA delete; 4-byte SPIs for ESP.
    public var spis: [[UInt8]]
    public init(protocolID: ProtocolID, spis: [[UInt8]]) { self.protocolID = protocolID; self.spis = spis }
}

/// One traffic selector (§3.13.1): TS_IPV4_ADDR_RANGE (7) or TS_IPV6_ADDR_RANGE (8).
public struct WireTrafficSelector: Sendable, Equatable, Hashable {
    public var ipProtocol: UInt8       // 0 = any
    public var startPort: UInt16
    public var endPort: UInt16
    public var startAddress: IPAddress
    public var endAddress: IPAddress   // same family as start
    public init(ipProtocol: UInt8 = 0, startPort: UInt16 = 0, endPort: UInt16 = 65535,
                startAddress: IPAddress, endAddress: IPAddress) {
        self.ipProtocol = ipProtocol; self.startPort = startPort; self.endPort = endPort
        self.startAddress = startAddress; self.endAddress = endAddress
    }
}

public enum Payload: Sendable, Equatable {
    case sa([WireProposal])
    case ke(group: UInt16, data: [UInt8])
    case idi(IDPayload)
    case idr(IDPayload)
    case cert(encoding: UInt8, data: [UInt8])
    case certreq(encoding: UInt8, data: [UInt8])
    case auth(method: UInt8, data: [UInt8])
    case nonce([UInt8])
    case notify(NotifyPayload)
    case delete(DeletePayload)
    case vendor([UInt8])
    case tsi([WireTrafficSelector])
    case tsr([WireTrafficSelector])
    /// SK (46): `firstInner` is the type of the first payload inside; `body` is IV | ciphertext | ICV.
    case encrypted(firstInner: UInt8, body: [UInt8])
    /// SKF (53, RFC 7383).
    case encryptedFragment(number: UInt16, total: UInt16, firstInner: UInt8, body: [UInt8])
    /// Any payload Sluice does not interpret (CP, EAP, unknown non-critical): kept whole.
    case other(type: UInt8, critical: Bool, body: [UInt8])

    public var type: UInt8 {
        switch self {
        case .sa: return PayloadType.sa
        case .ke: return PayloadType.ke
        case .idi: return PayloadType.idi
        case .idr: return PayloadType.idr
        case .cert: return PayloadType.cert
        case .certreq: return PayloadType.certreq
        case .auth: return PayloadType.auth
        case .nonce: return PayloadType.nonce
        case .notify: return PayloadType.notify
        case .delete: return PayloadType.delete
        case .vendor: return PayloadType.vendor
        case .tsi: return PayloadType.tsi
        case .tsr: return PayloadType.tsr
        case .encrypted: return PayloadType.encrypted
        case .encryptedFragment: return PayloadType.encryptedFragment
        case let .other(type, _, _): return type
        }
    }

    /// Encodes a chain (the inside of SK, or a whole message after the header); returns the first type.
    /// Lengths and next-payload fields are computed; `.encrypted` / `.encryptedFragment` may only
    /// come last (their next-payload field is `firstInner`). Known payloads go out non-critical.
    public static func encodeChain(_ payloads: [Payload]) -> (first: UInt8, bytes: [UInt8]) { PayloadChain.encode(payloads) }
    /// Decodes a chain that starts with a payload of type `first`. Unknown non-critical payloads
    /// become `.other`; unknown critical ones throw `.unsupportedCritical`. The chain must fill
    /// `bytes` exactly (bytes after its last payload: `.badLength`). `baseOffset` is added to
    /// the offsets in errors (where the chain sits in the message, for a decrypted one).
    public static func decodeChain(first: UInt8, _ bytes: [UInt8], baseOffset: Int = 0) throws(IKEDecodeError) -> [Payload] {
        try PayloadChain.decode(first: first, bytes, from: 0, to: bytes.count, baseOffset: baseOffset)
    }
}
