@testable import SluiceIKE

/// strongSwan's printed algorithm names ("IKE:AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048")
/// mapped to Sluice's; names Sluice does not implement map to nil.
enum StrongSwanNames {
    enum Algorithm: Equatable {
        case encryption(EncryptionAlgorithm), integrity(IntegrityAlgorithm), prf(PRFAlgorithm), dh(DHGroup), esn(Bool)
    }

    static let table: [String: Algorithm] = [
        "AES_CBC_128": .encryption(.aesCBC(bits: 128)), "AES_CBC_256": .encryption(.aesCBC(bits: 256)),
        "AES_GCM_16_128": .encryption(.aesGCM16(bits: 128)), "AES_GCM_16_256": .encryption(.aesGCM16(bits: 256)),
        "CHACHA20_POLY1305": .encryption(.chacha20poly1305),
        "HMAC_SHA2_256_128": .integrity(.hmacSHA256_128), "HMAC_SHA2_384_192": .integrity(.hmacSHA384_192),
        "HMAC_SHA2_512_256": .integrity(.hmacSHA512_256),
        "PRF_HMAC_SHA2_256": .prf(.hmacSHA256), "PRF_HMAC_SHA2_384": .prf(.hmacSHA384), "PRF_HMAC_SHA2_512": .prf(.hmacSHA512),
        "MODP_2048": .dh(.modp2048), "MODP_3072": .dh(.modp3072), "ECP_256": .dh(.ecp256), "ECP_384": .dh(.ecp384),
        "CURVE_25519": .dh(.curve25519), "NO_EXT_SEQ": .esn(false), "EXT_SEQ": .esn(true),
    ]

    /// One printed proposal as a spec, keeping only what Sluice implements.
    static func spec(_ printed: String) -> ProposalSpec {
        var s = ProposalSpec(encryption: [], esn: [])
        let body = printed.split(separator: ":", maxSplits: 1).last.map(String.init) ?? ""
        for name in body.split(separator: "/") {
            switch table[String(name)] {
            case let .encryption(e)?: s.encryption.append(e)
            case let .integrity(i)?: s.integrity.append(i)
            case let .prf(p)?: s.prf.append(p)
            case let .dh(g)?: s.dh.append(g)
            case let .esn(v)?: s.esn.append(v)
            case nil: break
            }
        }
        if s.esn.isEmpty { s.esn = [false] }
        return s
    }

    /// "IKE:a/b, IKE:c/d" as specs.
    static func specs(_ printed: String) -> [ProposalSpec] {
        printed.split(separator: ",").map { spec($0.trimmingPrefix(" ").description) }
    }

    /// The single algorithms of a selected proposal.
    static func negotiated(_ printed: String) -> NegotiatedAlgorithms? {
        let s = spec(printed)
        guard s.encryption.count == 1, let e = s.encryption.first else { return nil }
        return NegotiatedAlgorithms(encryption: e, integrity: s.integrity.first, prf: s.prf.first, dh: s.dh.first,
                                    esn: s.esn.first ?? false)
    }
}
