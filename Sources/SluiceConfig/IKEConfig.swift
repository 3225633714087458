import SluiceCore
import SluiceIKE

// The IKEv2 agent's configuration: `[[connection]]`, `[[connection.child]]` and `[ike]`,
// named and shaped like strongSwan's swanctl.conf. Validated in IKEValidation.swift.

/// One traffic selector as written: `198.51.100.0/24`, `10.0.0.0/8[tcp/80]`,
/// `2001:db8::/32[udp/1000-2000]`. nil protocol and ports mean any.
public struct TrafficSelectorSpec: Sendable, Equatable, CustomStringConvertible {
    public var prefix: IPPrefix
    public var ipProtocol: UInt8?
    public var ports: ClosedRange<UInt16>?

    public init(prefix: IPPrefix, ipProtocol: UInt8? = nil, ports: ClosedRange<UInt16>? = nil) {
        self.prefix = prefix; self.ipProtocol = ipProtocol; self.ports = ports
    }

    /// In the config's own syntax, so it reads back the same.
    public var description: String {
        guard let p = ipProtocol else { return "\(prefix)" }
        let name = TrafficSelectorSpec.protocolNames.first { $0.value == p }?.key ?? "\(p)"
        guard let r = ports else { return "\(prefix)[\(name)]" }
        return "\(prefix)[\(name)/\(r.lowerBound == r.upperBound ? "\(r.lowerBound)" : "\(r.lowerBound)-\(r.upperBound)")]"
    }

    /// Protocol names a selector or policy may use; the rest are numbers.
    static let protocolNames: [String: UInt8] = ["tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "sctp": 132,
                                                 "esp": 50, "gre": 47]
    static let protocolAliases: [String: UInt8] = ["icmpv6": 58]
    /// Protocols with ports (RFC 7296 §3.13.1 leaves the others' port fields at 0-65535).
    static let portProtocols: Set<UInt8> = [6, 17, 132]
}

/// When a CHILD_SA is set up (swanctl's `start_action`).
public enum StartAction: String, Sendable {
    /// Only when the peer asks (the default).
    case none
    /// Install the policies and negotiate on the first packet they catch.
    case trap
    /// Negotiate at once, at start and on reload.
    case start
}

/// What to do with a CHILD_SA when its peer is found dead (swanctl's `dpd_action`).
public enum DPDAction: String, Sendable {
    /// Close it (the default).
    case clear
    /// Close it and go back to trap policies.
    case trap
    /// Negotiate it again at once.
    case restart
}

/// How both ends authenticate. Paths are absolute (relative ones are taken from the
/// config file's directory) and were checked to exist when the config was read.
public enum IKEAuth: Sendable, Equatable {
    case psk(SecretBytes)
    case pubkey(certificate: String, privateKey: String, caCertificates: [String])
}

public struct IKEChildConfig: Sendable, Equatable {
    public var name: String
    /// The line of its `[[connection.child]]` header.
    public var line: Int
    /// Empty means the connection's own address (strongSwan's "dynamic").
    public var localTS: [TrafficSelectorSpec]
    /// Empty means the peer's address.
    public var remoteTS: [TrafficSelectorSpec]
    /// Strings in strongSwan's syntax ("aes128gcm16-x25519"); the IKE agent checks the algorithms.
    public var espProposals: [String]
    public var mode: ESPMode
    public var startAction: StartAction
    public var dpdAction: DPDAction
    /// Seconds, bytes and packets before rekeying; 0 = off.
    public var rekeyTime: Int
    public var rekeyBytes: UInt64
    public var rekeyPackets: UInt64
    /// Hard limits; by default 10% above the rekey values, as strongSwan. 0 = off.
    public var lifeTime: Int
    public var lifeBytes: UInt64
    public var lifePackets: UInt64
    public var replayWindow: Int
    public var mtu: Int
    public var dfPolicy: DFPolicy
    public var tfcPadTo: Int
}

public struct IKEConnection: Sendable, Equatable {
    public var name: String
    /// The line of its `[[connection]]` header.
    public var line: Int
    public var localAddrs: [IPAddress]
    /// Empty means any peer (`["%any"]`, or the key left out): a responder only.
    public var remoteAddrs: [IPAddress]
    /// IKE proposals in strongSwan's syntax; the IKE agent checks the algorithms.
    public var proposals: [String]
    /// An IP address, DN, FQDN or user@fqdn. nil: the local address in use (psk), the
    /// certificate's subject (pubkey).
    public var localID: String?
    /// nil: any identity the peer proves (strongSwan's %any); a DN may use `*` values.
    public var remoteID: String?
    public var auth: IKEAuth
    /// Force ESP-in-UDP (port 4500) even without a NAT in the path.
    public var encap: Bool
    /// Seconds between liveness checks; 0 = off.
    public var dpdDelay: Int
    /// IKE SA rekey seconds; 0 = off.
    public var rekeyTime: Int
    /// IKE fragmentation (RFC 7383): announce and use ("yes"), announce only ("accept"), or not ("no").
    public var fragmentation: IKEFragmentation = .yes
    public var children: [IKEChildConfig]
}

/// Retransmission of IKE requests, as strongSwan's charon: try k (0-based) waits
/// `retransmitTimeout * retransmitBase^k`; after `retransmitTries` the peer is dead.
public struct IKESettings: Sendable, Equatable {
    public var retransmitTimeout: Double = 4.0
    public var retransmitBase: Double = 1.8
    public var retransmitTries: Int = 5
    /// Behind a NAT, seconds without sending before a NAT keepalive (strongSwan: keep_alive); 0 = off.
    public var keepAlive: Double = 20
    /// The hold queue of packets waiting for a negotiation, per child and worker, and in all per worker.
    public var holdPackets: Int = 32
    public var holdBytes: Int = 64 * 1024
    public var holdPacketsTotal: Int = 512
    /// Seconds a held packet may wait for its SA.
    public var holdTimeout: Double = 10
    /// IP datagram size above which IKE messages go in fragments (strongSwan: fragment_size); 0 = family minimum.
    public var fragmentSize: Int = 1280
    /// The largest IKE message taken, whole or reassembled (strongSwan: max_packet).
    public var maxPacket: Int = 10000

    public init(retransmitTimeout: Double = 4.0, retransmitBase: Double = 1.8, retransmitTries: Int = 5) {
        self.retransmitTimeout = retransmitTimeout; self.retransmitBase = retransmitBase; self.retransmitTries = retransmitTries
    }

    /// Every `[ike]` key, as it would be written in the file; all of them take effect at start only.
    static let fields: [(key: String, value: @Sendable (IKESettings) -> String)] = [
        ("retransmit_timeout", { "\($0.retransmitTimeout)" }),
        ("retransmit_base", { "\($0.retransmitBase)" }),
        ("retransmit_tries", { "\($0.retransmitTries)" }),
        ("keep_alive", { "\($0.keepAlive)" }),
        ("hold_packets", { "\($0.holdPackets)" }),
        ("hold_bytes", { "\($0.holdBytes)" }),
        ("hold_packets_total", { "\($0.holdPacketsTotal)" }),
        ("hold_timeout", { "\($0.holdTimeout)" }),
        ("fragment_size", { "\($0.fragmentSize)" }),
        ("max_packet", { "\($0.maxPacket)" }),
    ]
    public static var keys: [String] { fields.map(\.key) }
}
