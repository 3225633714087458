import SluiceCore

/// What `sluice list-sas` shows: every IKE SA with its CHILD_SAs. Algorithm names are
/// strongSwan's (as `swanctl --list-sas` prints them), so the two views compare directly.
public struct IKESAStatus: Codable, Sendable, Equatable {
    public var connection: String
    public var state: String
    public var role: String
    public var local: String
    public var remote: String
    public var localID: String
    public var remoteID: String
    public var spiI: String
    public var spiR: String
    public var encryption: String?
    public var encryptionKeySize: Int?
    public var integrity: String?
    public var prf: String?
    public var dhGroup: String?
    public var encapsulated: Bool
    public var establishedSeconds: Int?
    public var rekeyInSeconds: Int?
    public var children: [ChildSAStatus]
}

public struct ChildSAStatus: Codable, Sendable, Equatable {
    public var name: String
    public var state: String
    public var spiIn: String
    public var spiOut: String
    public var encryption: String
    public var encryptionKeySize: Int?
    public var integrity: String?
    public var dhGroup: String?
    public var esn: Bool
    public var mode: String
    public var localTS: [String]
    public var remoteTS: [String]
    public var packetsIn: UInt64
    public var bytesIn: UInt64
    public var packetsOut: UInt64
    public var bytesOut: UInt64
    public var installedSeconds: Int
    public var rekeyInSeconds: Int?
    /// The data plane's names for the two SAs (`sluice stats` lists them).
    public var saIn: String
    public var saOut: String
}

extension EncryptionAlgorithm {
    var strongSwanName: String {
        switch self {
        case .aesCBC: return "AES_CBC"
        case .aesGCM16: return "AES_GCM_16"
        case .chacha20poly1305: return "CHACHA20_POLY1305"
        }
    }
    var keySizeBits: Int? {
        switch self {
        case let .aesCBC(b), let .aesGCM16(b): return b
        case .chacha20poly1305: return 256
        }
    }
}

extension IntegrityAlgorithm {
    var strongSwanName: String {
        switch self {
        case .hmacSHA256_128: return "HMAC_SHA2_256_128"
        case .hmacSHA384_192: return "HMAC_SHA2_384_192"
        case .hmacSHA512_256: return "HMAC_SHA2_512_256"
        }
    }
}

extension PRFAlgorithm {
    var strongSwanName: String {
        switch self {
        case .hmacSHA256: return "PRF_HMAC_SHA2_256"
        case .hmacSHA384: return "PRF_HMAC_SHA2_384"
        case .hmacSHA512: return "PRF_HMAC_SHA2_512"
        }
    }
}

extension DHGroup {
    var strongSwanName: String {
        switch self {
        case .modp2048: return "MODP_2048"
        case .modp3072: return "MODP_3072"
        case .ecp256: return "ECP_256"
        case .ecp384: return "ECP_384"
        case .curve25519: return "CURVE_25519"
        }
    }
}

extension NegotiatedAlgorithms {
    /// "AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519", for logs.
    public var summary: String {
        var parts = ["\(encryption.strongSwanName)\(encryption.keySizeBits.map { "-\($0)" } ?? "")"]
        if let i = integrity { parts.append(i.strongSwanName) }
        if let p = prf { parts.append(p.strongSwanName) }
        if let d = dh { parts.append(d.strongSwanName) }
        if esn { parts.append("ESN") }
        return parts.joined(separator: "/")
    }
}

extension IKEAgent {
    public func status(now: Double) -> [IKESAStatus] {
        sessions.values.sorted { $0.createdAt < $1.createdAt }.map { s in
            let a = s.algorithms
            return IKESAStatus(
                connection: s.connection.name, state: s.state.rawValue.uppercased(), role: s.role.rawValue,
                local: s.local.description, remote: s.remote.description, localID: localID(s).text,
                remoteID: s.remoteID?.text ?? s.connection.remoteID?.text ?? "%any",
                spiI: Self.hex64(s.spiI), spiR: Self.hex64(s.spiR),
                encryption: a?.encryption.strongSwanName, encryptionKeySize: a?.encryption.keySizeBits,
                integrity: a?.integrity?.strongSwanName, prf: a?.prf?.strongSwanName, dhGroup: a?.dh?.strongSwanName,
                encapsulated: s.usesEncapsulation, establishedSeconds: s.establishedAt.map { Int(now - $0) },
                rekeyInSeconds: s.rekeyAt.map { max(0, Int($0 - now)) },
                children: s.children.map { c in
                    let inn = backend.counters(sa: c.install.inbound.name), out = backend.counters(sa: c.install.outbound.name)
                    return ChildSAStatus(
                        name: c.profile.name, state: c.state.rawValue.uppercased(), spiIn: Self.hex(c.inboundSPI),
                        spiOut: Self.hex(c.outboundSPI), encryption: c.algorithms.encryption.strongSwanName,
                        encryptionKeySize: c.algorithms.encryption.keySizeBits, integrity: c.algorithms.integrity?.strongSwanName,
                        dhGroup: c.algorithms.dh?.strongSwanName, esn: c.algorithms.esn, mode: c.profile.mode.rawValue.uppercased(),
                        localTS: c.localTS.map(\.description), remoteTS: c.remoteTS.map(\.description),
                        packetsIn: inn?.packets ?? 0, bytesIn: inn?.bytes ?? 0, packetsOut: out?.packets ?? 0, bytesOut: out?.bytes ?? 0,
                        installedSeconds: Int(now - c.establishedAt), rekeyInSeconds: c.rekeyAt.map { max(0, Int($0 - now)) },
                        saIn: c.install.inbound.name, saOut: c.install.outbound.name)
                })
        }
    }

    static func hex64(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }

    /// A data-plane SA reached its soft lifetime (bytes or packets): rekey its child.
    public func softLifetime(sa name: String, now: Double) {
        for s in sessions.values where s.state == .established {
            for c in s.children where c.install.inbound.name == name || c.install.outbound.name == name { startRekey(s, c, now: now) }
        }
    }

    /// The data plane removed an SA at its hard lifetime: the child is gone; tell the peer.
    public func hardLifetime(sa name: String, now: Double) {
        for s in sessions.values {
            for c in s.children where c.install.inbound.name == name || c.install.outbound.name == name {
                removeChild(s, c, why: "hard lifetime reached")
                if s.state == .established { enqueue(s, .deleteChild(c), now: now) }
            }
        }
    }
}
