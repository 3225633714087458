import SluiceCore

/// What the agent needs to know about one connection, with every string already parsed:
/// the daemon builds these from the config file (`[[connection]]`), tests build them directly.
public struct ConnectionProfile: Sendable {
    public var name: String
    /// Our IKE and outer ESP addresses.
    public var localAddresses: [IPAddress]
    /// The peer's addresses; empty accepts any peer (responder only).
    public var remoteAddresses: [IPAddress]
    public var proposals: [ProposalSpec]
    /// nil: our address (PSK) or our certificate's subject DN (certificates), as strongSwan.
    public var localID: IDPayload?
    /// nil: any identity the peer proves.
    public var remoteID: IDPayload?
    public var auth: ConnectionAuth
    /// ESP-in-UDP even without a NAT (strongSwan's `encap`).
    public var forceEncapsulation: Bool
    /// Seconds of silence before a liveness check; 0 = off.
    public var dpdDelay: Double
    /// IKE SA rekey after this many seconds; 0 = off.
    public var rekeyTime: Double
    public var children: [ChildProfile]
    /// IKE fragmentation (RFC 7383), as swanctl's `fragmentation`.
    public var fragmentation: IKEFragmentation = .yes

    public init(name: String, localAddresses: [IPAddress], remoteAddresses: [IPAddress], proposals: [ProposalSpec],
                localID: IDPayload? = nil, remoteID: IDPayload? = nil, auth: ConnectionAuth, forceEncapsulation: Bool = false,
                dpdDelay: Double = 0, rekeyTime: Double = 14400, children: [ChildProfile]) {
        self.name = name; self.localAddresses = localAddresses; self.remoteAddresses = remoteAddresses
        self.proposals = proposals; self.localID = localID; self.remoteID = remoteID; self.auth = auth
        self.forceEncapsulation = forceEncapsulation; self.dpdDelay = dpdDelay; self.rekeyTime = rekeyTime
        self.children = children
    }

    /// A connection authenticated with a pre-shared key.
    public init(name: String, localAddresses: [IPAddress], remoteAddresses: [IPAddress], proposals: [ProposalSpec],
                localID: IDPayload? = nil, remoteID: IDPayload? = nil, psk: SecretBytes, forceEncapsulation: Bool = false,
                dpdDelay: Double = 0, rekeyTime: Double = 14400, children: [ChildProfile]) {
        self.init(name: name, localAddresses: localAddresses, remoteAddresses: remoteAddresses, proposals: proposals,
                  localID: localID, remoteID: remoteID, auth: .psk(psk), forceEncapsulation: forceEncapsulation,
                  dpdDelay: dpdDelay, rekeyTime: rekeyTime, children: children)
    }

    /// The certificate material when the connection uses it.
    public var certificates: CertificateCredentials? {
        if case let .certificates(c) = auth { return c }
        return nil
    }
}

/// How a connection authenticates: both ends the same way, as strongSwan's `auth = psk`
/// or `auth = pubkey`.
public enum ConnectionAuth: Sendable {
    case psk(SecretBytes)
    /// X.509 certificates with RFC 7427 signatures.
    case certificates(CertificateCredentials)
}

/// Our certificate (with the intermediates sent after it), its private key, and the CAs
/// the peer's certificate must lead to.
public struct CertificateCredentials: Sendable {
    public var certificate: Certificate
    public var intermediates: [Certificate]
    public var privateKey: PrivateKey
    public var authorities: CertificateAuthorities

    /// Checks that the key is the certificate's, that the certificate may sign, and that
    /// every authority is a CA.
    public init(certificate: Certificate, intermediates: [Certificate] = [], privateKey: PrivateKey,
                authorities: [Certificate]) throws(CertificateError) {
        guard privateKey.matches(certificate) else {
            throw CertificateError("the private key (\(privateKey.kind)) is not the key of certificate \"\(certificate.subject)\" (\(certificate.keyKind))")
        }
        guard certificate.maySign else {
            throw CertificateError("certificate \"\(certificate.subject)\" has a keyUsage without digitalSignature: it cannot sign IKE AUTH")
        }
        guard !authorities.isEmpty else { throw CertificateError("no CA certificate to verify the peer with") }
        if let notCA = authorities.first(where: { !$0.isCA }) {
            throw CertificateError("\"\(notCA.subject)\" is not a CA certificate (no basicConstraints CA:TRUE)")
        }
        self.certificate = certificate; self.intermediates = intermediates; self.privateKey = privateKey
        self.authorities = CertificateAuthorities(authorities)
    }
}

public enum StartAction: String, Sendable { case none, trap, start }
public enum DeadPeerAction: String, Sendable { case clear, trap, restart }

/// One `[[connection.child]]`: what a CHILD_SA of this connection may carry.
public struct ChildProfile: Sendable {
    public var name: String
    /// Empty: "dynamic", our own outer address (the peer's for `remoteTS`), as strongSwan.
    public var localTS: [WireTrafficSelector]
    public var remoteTS: [WireTrafficSelector]
    public var espProposals: [ProposalSpec]
    public var mode: ESPMode
    public var startAction: StartAction
    public var dpdAction: DeadPeerAction
    /// Seconds / bytes / packets; 0 = off. `life*`: hard limits.
    public var rekeyTime: Double, rekeyBytes: UInt64, rekeyPackets: UInt64
    public var lifeTime: Double, lifeBytes: UInt64, lifePackets: UInt64
    public var replayWindow: Int, mtu: Int, dfPolicy: DFPolicy, tfcPadTo: Int

    public init(name: String, localTS: [WireTrafficSelector] = [], remoteTS: [WireTrafficSelector] = [],
                espProposals: [ProposalSpec], mode: ESPMode = .tunnel, startAction: StartAction = .none,
                dpdAction: DeadPeerAction = .clear, rekeyTime: Double = 3600, rekeyBytes: UInt64 = 0,
                rekeyPackets: UInt64 = 0, lifeTime: Double = 3960, lifeBytes: UInt64 = 0, lifePackets: UInt64 = 0,
                replayWindow: Int = 1024, mtu: Int = 1500, dfPolicy: DFPolicy = .copy, tfcPadTo: Int = 0) {
        self.name = name; self.localTS = localTS; self.remoteTS = remoteTS; self.espProposals = espProposals
        self.mode = mode; self.startAction = startAction; self.dpdAction = dpdAction; self.rekeyTime = rekeyTime
        self.rekeyBytes = rekeyBytes; self.rekeyPackets = rekeyPackets; self.lifeTime = lifeTime
        self.lifeBytes = lifeBytes; self.lifePackets = lifePackets; self.replayWindow = replayWindow
        self.mtu = mtu; self.dfPolicy = dfPolicy; self.tfcPadTo = tfcPadTo
    }
}

/// The `[ike]` schedule, with strongSwan's names and defaults (charon.retransmit_*).
public struct RetransmitSchedule: Sendable, Equatable {
    public var timeout: Double
    public var base: Double
    public var tries: Int
    public init(timeout: Double = 4.0, base: Double = 1.8, tries: Int = 5) { self.timeout = timeout; self.base = base; self.tries = tries }

    /// Seconds to wait after send number `n` (0 = the first send).
    public func wait(after n: Int) -> Double { timeout * pow(base, n) }

    private func pow(_ b: Double, _ e: Int) -> Double { var r = 1.0; for _ in 0..<max(0, e) { r *= b }; return r }
}

/// A UDP endpoint.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public init(_ address: IPAddress, _ port: UInt16) { self.address = address; self.port = port }
    public var description: String { address.family == .v6 ? "[\(address)]:\(port)" : "\(address):\(port)" }
}

extension IDPayload {
    /// An identity as strongSwan writes it: an address, a DN ("CN=gw-a, O=Example": it has
    /// an '='), "user@fqdn", or a name.
    public static func parse(_ text: String) throws(DistinguishedNameError) -> IDPayload {
        if let a = IPAddress(text) { return IDPayload(address: a) }
        if text.contains("=") { return IDPayload(type: .derDN, data: try DistinguishedName(parsing: text).der) }
        if text.contains("@") { return IDPayload(type: .rfc822, data: Array(text.utf8)) }
        return IDPayload(type: .fqdn, data: Array(text.utf8))
    }

    public init(address a: IPAddress) { self.init(type: a.family == .v4 ? .ipv4 : .ipv6, data: a.bytes) }

    /// Whether a peer presenting `presented` is this (configured) identity: DNs as RFC 5280
    /// compares them (a `*` value matches any), FQDNs and user@fqdn without regard to case,
    /// the rest byte for byte.
    public func matches(_ presented: IDPayload) -> Bool {
        guard type == presented.type else { return false }
        switch type {
        case .derDN:
            guard let mine = try? DistinguishedName(der: data), let theirs = try? DistinguishedName(der: presented.data) else { return data == presented.data }
            return mine.matches(theirs)
        case .fqdn, .rfc822:
            return String(decoding: data, as: UTF8.self).lowercased() == String(decoding: presented.data, as: UTF8.self).lowercased()
        default:
            return data == presented.data
        }
    }

    /// A DN with a `*` value: a pattern for the peer's identity, not an identity to send.
    public var hasWildcard: Bool {
        type == .derDN && ((try? DistinguishedName(der: data))?.hasWildcard ?? false)
    }

    public var text: String {
        switch type {
        case .ipv4, .ipv6: return IPAddress(bytes: data[...]).map(\.description) ?? "?"
        case .fqdn, .rfc822: return String(decoding: data, as: UTF8.self).printable
        case .derDN: return (try? DistinguishedName(der: data)).map(\.description) ?? "DN(\(data.count) bytes)"
        default: return "\(type)(\(data.count) bytes)"
        }
    }
}
