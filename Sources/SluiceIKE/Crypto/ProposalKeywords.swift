/// strongSwan's proposal syntax (swanctl.conf `proposals` / `esp_proposals`; the keywords of
/// strongSwan's proposal_keywords_static.txt), for the algorithms Sluice implements.
///
/// A proposal is keywords joined by "-"; several proposals are separated by ",". Keywords:
///   encryption  aes128 (alias aes), aes256, aes128gcm16 (aliases aes128gcm128, aes128gcm),
///               aes256gcm16 (aes256gcm128, aes256gcm), chacha20poly1305
///   integrity   sha256 (sha2_256), sha384 (sha2_384), sha512 (sha2_512); for IKE also the PRF
///               (prfsha256/384/512) when the proposal names none, as strongSwan does
///   PRF         prfsha256, prfsha384, prfsha512 (IKE only)
///   DH          x25519 (curve25519), ecp256, ecp384, modp2048, modp3072
///   ESN         esn, noesn (ESP only; default noesn)
///
/// "default" expands as strongSwan 5.9 does (checked against charon 5.9.8's "configured
/// proposals", tests/fixtures/ike/strongswan-vectors.json), keeping what Sluice implements:
///   IKE: aes128-aes256-sha256-sha384-sha512-prfsha256-prfsha384-prfsha512-x25519-ecp256-ecp384-modp3072-modp2048,
///        aes128gcm16-aes256gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512-x25519-ecp256-ecp384-modp3072-modp2048
///   ESP: aes128-aes256-sha256-noesn, aes128gcm16-aes256gcm16-noesn
/// (strongSwan also lists AES-192, AES-CTR, Camellia, 3DES, SHA-1, AES-XCBC, Curve448, ECP-521,
/// Brainpool and MODP 4096-8192, and for ESP SHA-384/512: Sluice has none of them.)
enum ProposalKeywords {
    enum Token: Equatable {
        case encryption(EncryptionAlgorithm), integrity(IntegrityAlgorithm), prf(PRFAlgorithm), dh(DHGroup), esn(Bool)
    }

    static let supported: [String: Token] = [
        "aes": .encryption(.aesCBC(bits: 128)), "aes128": .encryption(.aesCBC(bits: 128)),
        "aes256": .encryption(.aesCBC(bits: 256)),
        "aes128gcm16": .encryption(.aesGCM16(bits: 128)), "aes128gcm128": .encryption(.aesGCM16(bits: 128)),
        "aes128gcm": .encryption(.aesGCM16(bits: 128)),
        "aes256gcm16": .encryption(.aesGCM16(bits: 256)), "aes256gcm128": .encryption(.aesGCM16(bits: 256)),
        "aes256gcm": .encryption(.aesGCM16(bits: 256)),
        "chacha20poly1305": .encryption(.chacha20poly1305),
        "sha256": .integrity(.hmacSHA256_128), "sha2_256": .integrity(.hmacSHA256_128),
        "sha384": .integrity(.hmacSHA384_192), "sha2_384": .integrity(.hmacSHA384_192),
        "sha512": .integrity(.hmacSHA512_256), "sha2_512": .integrity(.hmacSHA512_256),
        "prfsha256": .prf(.hmacSHA256), "prfsha384": .prf(.hmacSHA384), "prfsha512": .prf(.hmacSHA512),
        "modp2048": .dh(.modp2048), "modp3072": .dh(.modp3072), "ecp256": .dh(.ecp256), "ecp384": .dh(.ecp384),
        "x25519": .dh(.curve25519), "curve25519": .dh(.curve25519),
        "esn": .esn(true), "noesn": .esn(false),
    ]

    /// strongSwan keywords Sluice does not implement: weak (3DES, SHA-1, MD5, small MODP groups)
    /// or simply not built. They get "not supported" rather than "unknown".
    static let knownUnsupported: Set<String> = {
        var s: Set<String> = [
            "null", "des", "3des", "aes192", "chacha20poly1305compat", "cast128",
            "sha", "sha1", "sha1_160", "sha256_96", "sha2_256_96", "md5", "md5_128", "aesxcbc", "camelliaxcbc", "aescmac",
            "prfsha1", "prfmd5", "prfaesxcbc", "prfcamelliaxcbc", "prfaescmac",
            "none", "modpnone", "modpnull", "modp768", "modp1024", "modp1536", "modp4096", "modp6144", "modp8192",
            "ecp192", "ecp224", "ecp521", "modp1024s160", "modp2048s224", "modp2048s256",
            "ecp224bp", "ecp256bp", "ecp384bp", "ecp512bp", "curve448", "x448",
            "ntru112", "ntru128", "ntru192", "ntru256", "newhope128",
            "kyber1", "kyber3", "kyber5", "mlkem512", "mlkem768", "mlkem1024",
        ]
        for bits in ["128", "192", "256"] {
            s.insert("aes\(bits)ctr"); s.insert("aes\(bits)gmac")
            for icv in ["8", "64", "12", "96", "16", "128", ""] {
                s.insert("aes\(bits)ccm\(icv)"); s.insert("camellia\(bits)ccm\(icv)")
            }
            for icv in ["8", "64", "12", "96"] { s.insert("aes\(bits)gcm\(icv)") }
            for family in ["blowfish", "camellia", "serpent", "twofish"] { s.insert("\(family)\(bits)") }
            s.insert("camellia\(bits)ctr")
        }
        for bits in ["16", "128", ""] { s.insert("aes192gcm\(bits)") }
        for family in ["blowfish", "camellia", "serpent", "twofish"] { s.insert(family) }
        return s
    }()

    static let allPRFs: [PRFAlgorithm] = [.hmacSHA256, .hmacSHA384, .hmacSHA512]
    static let defaultGroups: [DHGroup] = [.curve25519, .ecp256, .ecp384, .modp3072, .modp2048]

    static let defaultIKE = [
        ProposalSpec(encryption: [.aesCBC(bits: 128), .aesCBC(bits: 256)],
                     integrity: [.hmacSHA256_128, .hmacSHA384_192, .hmacSHA512_256],
                     prf: allPRFs, dh: defaultGroups),
        ProposalSpec(encryption: [.aesGCM16(bits: 128), .aesGCM16(bits: 256), .chacha20poly1305],
                     prf: allPRFs, dh: defaultGroups),
    ]
    static let defaultESP = [
        ProposalSpec(encryption: [.aesCBC(bits: 128), .aesCBC(bits: 256)], integrity: [.hmacSHA256_128]),
        ProposalSpec(encryption: [.aesGCM16(bits: 128), .aesGCM16(bits: 256)]),
    ]

    /// Integrity Sluice's ESP data plane implements (SluiceCore.Proposal).
    static let espIntegrity: Set<IntegrityAlgorithm> = [.hmacSHA256_128]

    typealias ParseError = ProposalSpec.ParseError

    static func parse(_ text: String, forESP: Bool) throws(ParseError) -> [ProposalSpec] {
        let what = forESP ? "ESP" : "IKE"
        guard !trimmed(text).isEmpty else { throw ParseError("empty \(what) proposal list") }
        var out: [ProposalSpec] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false).map({ trimmed(String($0)) }) {
            guard !item.isEmpty else { throw ParseError("empty \(what) proposal in '\(text)'") }
            if item.lowercased() == "default" {
                out += forESP ? defaultESP : defaultIKE
            } else {
                out.append(try parseOne(item, forESP: forESP))
            }
        }
        return out
    }

    private static func parseOne(_ item: String, forESP: Bool) throws(ParseError) -> ProposalSpec {
        var encryption: [EncryptionAlgorithm] = [], integrity: [IntegrityAlgorithm] = [], prf: [PRFAlgorithm] = []
        var dh: [DHGroup] = [], esn: [Bool] = []
        var firstWord: [String: String] = [:] // the first keyword of each kind, as written, for messages
        for word in item.split(separator: "-", omittingEmptySubsequences: false).map(String.init) {
            guard !word.isEmpty else { throw ParseError("empty algorithm in '\(item)'") }
            guard let token = supported[word.lowercased()] else {
                if knownUnsupported.contains(word.lowercased()) {
                    throw ParseError("algorithm '\(word)' in '\(item)' is not supported by Sluice")
                }
                throw ParseError("unknown algorithm '\(word)' in '\(item)'")
            }
            switch token {
            case let .encryption(e): appendOnce(&encryption, e)
            case let .integrity(i): appendOnce(&integrity, i); firstWord["integrity"] = firstWord["integrity"] ?? word
            case let .prf(p): appendOnce(&prf, p); firstWord["prf"] = firstWord["prf"] ?? word
            case let .dh(g): appendOnce(&dh, g)
            case let .esn(v): appendOnce(&esn, v); firstWord["esn"] = firstWord["esn"] ?? word
            }
        }
        guard !encryption.isEmpty else { throw ParseError("'\(item)' names no encryption algorithm") }
        let aead = encryption.filter(\.isAEAD), classic = encryption.filter { !$0.isAEAD }
        if !aead.isEmpty && !classic.isEmpty {
            throw ParseError("'\(item)' mixes AEAD (\(aead[0].keyword)) and non-AEAD (\(classic[0].keyword)) encryption")
        }
        if !aead.isEmpty && !integrity.isEmpty {
            throw ParseError("'\(item)': \(aead[0].keyword) is an AEAD and takes no integrity algorithm ('\(firstWord["integrity"] ?? "")')")
        }
        if aead.isEmpty && integrity.isEmpty {
            throw ParseError("'\(item)' needs an integrity algorithm (sha256, sha384, sha512) for \(classic[0].keyword)")
        }
        if forESP {
            if !prf.isEmpty { throw ParseError("'\(item)': '\(firstWord["prf"] ?? "")' is a PRF, for IKE proposals only") }
            if let i = integrity.first(where: { !espIntegrity.contains($0) }) {
                throw ParseError("'\(item)': '\(i.keyword)' is not supported for ESP by Sluice (its ESP has HMAC-SHA-256-128 only)")
            }
            return ProposalSpec(encryption: encryption, integrity: integrity, dh: dh, esn: esn.isEmpty ? [false] : esn)
        }
        if !esn.isEmpty { throw ParseError("'\(item)': '\(firstWord["esn"] ?? "")' is for ESP proposals only") }
        if prf.isEmpty {
            for i in integrity { appendOnce(&prf, i.matchingPRF) }
        }
        if prf.isEmpty { throw ParseError("'\(item)' needs a PRF (prfsha256, prfsha384, prfsha512) with an AEAD") }
        if dh.isEmpty {
            throw ParseError("'\(item)' needs a key exchange group (x25519, ecp256, ecp384, modp2048, modp3072)")
        }
        return ProposalSpec(encryption: encryption, integrity: integrity, prf: prf, dh: dh)
    }

    private static func appendOnce<T: Equatable>(_ list: inout [T], _ v: T) {
        if !list.contains(v) { list.append(v) }
    }

    private static func trimmed(_ s: String) -> String {
        String(s.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}

extension ProposalSpec {
    /// strongSwan keyword form, e.g. "aes128-sha256-prfsha256-x25519" or "aes128gcm16-esn" (for logs);
    /// ESN only when it is not the default "noesn" (IKE specs carry that default too, unused).
    public var keywords: String {
        var words = encryption.map(\.keyword) + integrity.map(\.keyword) + prf.map(\.keyword) + dh.map(\.keyword)
        if esn != [false] { words += esn.map { $0 ? "esn" : "noesn" } }
        return words.joined(separator: "-")
    }
}
