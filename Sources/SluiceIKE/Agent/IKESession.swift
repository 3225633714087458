import SluiceCore

/// One IKE SA (RFC 7296): its keys, message IDs, the one request it has in flight, the
/// response it last gave (resent byte for byte to a retransmitted request), and its CHILD_SAs.
///
/// Concurrency: an IKE SA belongs to the agent's thread; nothing here is shared.
final class IKESession {
    enum Role: String { case initiator, responder }
    enum State: String { case connecting, authenticating, established, rekeyed, deleting }

    let role: Role
    let connection: ConnectionProfile
    var spiI: UInt64
    var spiR: UInt64
    var local: Endpoint
    var remote: Endpoint
    var state: State = .connecting
    var algorithms: NegotiatedAlgorithms?
    var keys: IKEKeys?
    var sendCipher: SKCipher?
    var receiveCipher: SKCipher?
    var nonceI: [UInt8] = []
    var nonceR: [UInt8] = []
    var dh: DiffieHellman?
    /// The IKE_SA_INIT request and response as sent: AUTH signs them.
    var initRequest: [UInt8] = []
    var initResponse: [UInt8] = []
    var cookie: [UInt8]?
    var peerBehindNAT = false
    var localBehindNAT = false
    var remoteID: IDPayload?
    /// The peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4) from IKE_SA_INIT; nil if it sent none.
    var peerHashes: Set<UInt16>?
    /// Message IDs (§2.2): ours for requests we send, the peer's for requests it sends.
    var nextRequestID: UInt32 = 0
    var expectedPeerRequestID: UInt32 = 0
    var outstanding: Outstanding?
    /// Requests waiting for the window (deletes, liveness checks, rekeys).
    var pending: [Purpose] = []
    /// The last response (its datagrams: fragments, or one) and the request it answered (its
    /// first fragment, or the whole): only that same request, byte for byte, gets it again.
    var cachedResponse: CachedResponse?
    /// The peer announced IKE fragmentation in IKE_SA_INIT and so did we (RFC 7383 §2.3).
    var peerFragmentation = false
    /// A fragmented request and a fragmented response being reassembled, by the response flag.
    var reassembly: [Bool: FragmentReassembly] = [:]
    var children: [ChildSA] = []
    /// Children waiting for this IKE SA (or for its one request window) to be free.
    var queuedChildren: [ChildRequest] = []
    var createdAt: Double
    var establishedAt: Double?
    var lastHeard: Double
    /// When we last sent the peer anything (IKE, a keepalive, or ESP seen at a tick): NAT keepalives.
    var lastSent: Double
    /// Packets of each child's outbound SA at the last look: more is traffic sent.
    var outboundPacketsSeen: [String: UInt64] = [:]
    var rekeyAt: Double?
    /// Why this IKE SA was started (for logs): "trap", "start", "peer", "initiate".
    var reason: String
    /// After a rekey: the IKE SA that took over this one's CHILD_SAs.
    weak var successor: IKESession?
    /// While our rekey of this IKE SA is in flight: the IKE SA the peer's simultaneous rekey made.
    var peerRekey: PeerIKERekey?
    /// A redundant IKE SA of a rekey collision that the peer should delete: by then we do.
    var retireAt: Double?

    /// The IKE SA that owns this one's children now (itself, or the end of its rekeys).
    var current: IKESession {
        var s = self
        while let n = s.successor { s = n }
        return s
    }

    struct CachedResponse {
        var id: UInt32
        var request: [UInt8]
        var datagrams: [[UInt8]]
    }

    struct Outstanding {
        var id: UInt32
        /// The request as sent: one datagram, or all its fragments (retransmitted together, §2.6.1).
        var datagrams: [[UInt8]]
        var sends: Int
        var nextAt: Double
        var purpose: Purpose
    }

    enum Purpose {
        case ikeInit(child: ChildRequest?)
        case ikeAuth(child: ChildRequest?)
        case createChild(ChildRequest)
        case deleteChild(ChildSA)
        case deleteIKE
        case dpd
        case rekeyIKE(IKERekey)
    }

    init(role: Role, connection: ConnectionProfile, spiI: UInt64, spiR: UInt64, local: Endpoint, remote: Endpoint,
         now: Double, reason: String) {
        self.role = role; self.connection = connection; self.spiI = spiI; self.spiR = spiR
        self.local = local; self.remote = remote; self.createdAt = now; self.lastHeard = now; self.lastSent = now; self.reason = reason
    }

    /// Our own SPI: how the agent files this IKE SA.
    var ourSPI: UInt64 { role == .initiator ? spiI : spiR }
    var isInitiator: Bool { role == .initiator }
    var usesEncapsulation: Bool { peerBehindNAT || localBehindNAT || connection.forceEncapsulation }
    var name: String { connection.name }
    var label: String { "\(connection.name)[\(String(spiI, radix: 16)):\(String(spiR, radix: 16))]" }

    func header(_ exchange: ExchangeType, response: Bool, id: UInt32) -> IKEHeader {
        IKEHeader(spiI: spiI, spiR: spiR, exchange: exchange, isInitiator: isInitiator, isResponse: response, messageID: id)
    }

    /// Takes the IKE SA's keys: SK_ei/SK_ai protect what the initiator sends, SK_er/SK_ar
    /// what the responder sends (RFC 7296 §2.14), so the role picks which is ours.
    func installKeys(_ keys: IKEKeys, _ alg: NegotiatedAlgorithms) throws {
        let mine = isInitiator ? (keys.skEi, keys.skAi) : (keys.skEr, keys.skAr)
        let theirs = isInitiator ? (keys.skEr, keys.skAr) : (keys.skEi, keys.skAi)
        let integrated = alg.integrity != nil
        sendCipher = try SKCipher(encryption: alg.encryption, integrity: alg.integrity, key: mine.0, integrityKey: integrated ? mine.1 : nil)
        receiveCipher = try SKCipher(encryption: alg.encryption, integrity: alg.integrity, key: theirs.0, integrityKey: integrated ? theirs.1 : nil)
        self.keys = keys
        algorithms = alg
    }

    /// Encodes a message protected by this IKE SA.
    func seal(_ header: IKEHeader, _ inner: [Payload]) throws -> [UInt8] {
        guard let c = sendCipher else { throw AgentError.internalState("no keys yet") }
        return try IKEMessage.encodeEncrypted(header: header, inner: inner, sealedLength: { c.sealedLength($0) },
                                              seal: { try c.seal(prefix: $0, plaintext: $1) })
    }

    /// What opening a received message's SK payload gave.
    enum Opened {
        case payloads([Payload])
        /// No SK payload, no keys, or it does not verify: not known to come from the peer.
        case unverified
        /// Verified, so from the peer, but its inner chain does not decode (§2.21.1: INVALID_SYNTAX).
        case malformed(IKEDecodeError)

        /// The inner payloads, when it opened and decoded.
        var payloads: [Payload]? { if case let .payloads(p) = self { return p }; return nil }
    }

    /// Opens the SK payload of a received message and decodes the inner payloads.
    func open(_ bytes: [UInt8], _ message: IKEMessage) -> Opened {
        guard let c = receiveCipher, case let .encrypted(first, body)? = message.payloads.last else { return .unverified }
        let prefix = Array(bytes[0..<(bytes.count - body.count)])
        guard let plain = try? c.open(prefix: prefix, body: body) else { return .unverified }
        do { return .payloads(try Payload.decodeChain(first: first, plain, baseOffset: bytes.count - body.count)) } catch {
            return .malformed(error)
        }
    }

    func wipe() {
        keys?.wipe()
        keys = nil
        sendCipher = nil
        receiveCipher = nil
        dh = nil
    }
}

/// Our half of an IKE SA rekey in flight: the new IKE SA's SPI (ours), nonce and key exchange.
struct IKERekey {
    var spi: UInt64
    var nonce: [UInt8]
    var dh: DiffieHellman
}

/// A CHILD_SA to be negotiated: which child, why, and (for trap) the packet that asked.
struct ChildRequest {
    var profile: ChildProfile
    var reason: String
    /// A trap-triggered request's packet: its selector goes first in TSi/TSr (§2.9).
    var trigger: (local: WireTrafficSelector, remote: WireTrafficSelector)?
    /// The CHILD_SA this one replaces (CREATE_CHILD_SA with REKEY_SA).
    var rekeys: ChildSA?
    /// Our inbound SPI, allocated when the request is built.
    var spi: UInt32 = 0
    var nonce: [UInt8] = []
    var dh: DiffieHellman?
}

/// A negotiated CHILD_SA, installed in the data plane.
final class ChildSA {
    enum State: String { case installed, rekeying, rekeyed, deleting }
    let profile: ChildProfile
    let inboundSPI: UInt32
    let outboundSPI: UInt32
    let algorithms: NegotiatedAlgorithms
    let localTS: [WireTrafficSelector]
    let remoteTS: [WireTrafficSelector]
    let install: ChildInstall
    let establishedAt: Double
    var state: State = .installed
    var rekeyAt: Double?
    /// After a rekey, the old inbound SA keeps accepting until then (make-before-break).
    var removeAt: Double?
    /// A rekey's responder: outbound traffic moves to this SA at the initiator's delete of
    /// the old one, or at this time.
    var outboundPendingUntil: Double?
    /// While our rekey of this SA is in flight: the SA the peer's simultaneous rekey of it made.
    var peerRekey: PeerRekey?

    init(profile: ChildProfile, inboundSPI: UInt32, outboundSPI: UInt32, algorithms: NegotiatedAlgorithms,
         localTS: [WireTrafficSelector], remoteTS: [WireTrafficSelector], install: ChildInstall, now: Double) {
        self.profile = profile; self.inboundSPI = inboundSPI; self.outboundSPI = outboundSPI; self.algorithms = algorithms
        self.localTS = localTS; self.remoteTS = remoteTS; self.install = install; self.establishedAt = now
    }
}

public enum AgentError: Error, CustomStringConvertible, Equatable {
    case unknownConnection(String)
    case unknownChild(String)
    case noAddress(String)
    case internalState(String)
    case unsupported(String)
    public var description: String {
        switch self {
        case let .unknownConnection(n): return "no connection named \"\(n)\""
        case let .unknownChild(n): return "no child named \"\(n)\""
        case let .noAddress(n): return "connection \(n) has no remote address to initiate to (remote_addrs = [\"%any\"])"
        case let .internalState(w): return "internal: \(w)"
        case let .unsupported(w): return w
        }
    }
}
