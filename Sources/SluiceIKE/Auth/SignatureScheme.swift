import CSluiceCrypto

/// AUTH methods (RFC 7296 §3.8, RFC 4754, RFC 7427).
public enum AuthMethod {
    /// RSA PKCS#1 v1.5 with SHA-1: refused, SHA-1 signatures are not accepted.
    public static let rsaSignature: UInt8 = 1
    public static let sharedKey: UInt8 = 2
    /// RFC 4754: ECDSA with SHA-256 on P-256, SHA-384 on P-384, SHA-512 on P-521; r|s.
    public static let ecdsaP256: UInt8 = 9, ecdsaP384: UInt8 = 10, ecdsaP521: UInt8 = 11
    /// RFC 7427: an AlgorithmIdentifier, then the signature.
    public static let digitalSignature: UInt8 = 14

    public static func name(_ m: UInt8) -> String {
        switch m {
        case rsaSignature: return "RSA signature with SHA-1 (1)"
        case sharedKey: return "shared key (2)"
        case 3: return "DSS signature (3)"
        case ecdsaP256: return "ECDSA P-256 with SHA-256 (9)"
        case ecdsaP384: return "ECDSA P-384 with SHA-384 (10)"
        case ecdsaP521: return "ECDSA P-521 with SHA-512 (11)"
        case digitalSignature: return "digital signature (14)"
        default: return "method \(m)"
        }
    }
}

/// Hash algorithms of SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4, IANA registry).
public enum SignatureHash: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case sha1 = 1, sha256 = 2, sha384 = 3, sha512 = 4
    /// The message itself is signed (Ed25519, RFC 8420).
    case identity = 5

    /// What Sluice announces and accepts: never SHA-1.
    public static let supported: [SignatureHash] = [.sha256, .sha384, .sha512, .identity]

    /// The SIGNATURE_HASH_ALGORITHMS notify data: 2-byte identifiers.
    public static func notifyData(_ hashes: [SignatureHash] = supported) -> [UInt8] {
        hashes.flatMap { [UInt8($0.rawValue >> 8), UInt8(truncatingIfNeeded: $0.rawValue)] }
    }

    /// The identifiers in a SIGNATURE_HASH_ALGORITHMS notify (unknown ones kept as numbers;
    /// nil for an odd length).
    public static func parse(notifyData d: [UInt8]) -> Set<UInt16>? {
        guard d.count % 2 == 0 else { return nil }
        return Set(stride(from: 0, to: d.count, by: 2).map { UInt16(d[$0]) << 8 | UInt16(d[$0 + 1]) })
    }

    public var description: String {
        switch self {
        case .sha1: return "SHA-1"
        case .sha256: return "SHA-256"
        case .sha384: return "SHA-384"
        case .sha512: return "SHA-512"
        case .identity: return "identity"
        }
    }

    var cDigest: Int32 {
        switch self {
        case .sha256: return Int32(SLUICE_DIGEST_SHA256.rawValue)
        case .sha384: return Int32(SLUICE_DIGEST_SHA384.rawValue)
        case .sha512: return Int32(SLUICE_DIGEST_SHA512.rawValue)
        case .sha1, .identity: return SLUICE_DIGEST_NONE
        }
    }

    /// The hash's DER AlgorithmIdentifier OID content (RSASSA-PSS parameters name it).
    static let oids: [(SignatureHash, [UInt8])] = [
        (.sha1, [0x2b, 0x0e, 0x03, 0x02, 0x1a]),
        (.sha256, [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]),
        (.sha384, [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02]),
        (.sha512, [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03]),
    ]
}

/// A signature algorithm as RFC 7427 names it with an AlgorithmIdentifier.
public struct SignatureScheme: Sendable, Equatable, CustomStringConvertible {
    public enum Algorithm: Sendable, Equatable {
        case rsaPKCS1
        /// RSASSA-PSS with MGF1 of the same hash and this salt length.
        case rsaPSS(saltLength: Int)
        case ecdsa
        case ed25519
    }
    public var algorithm: Algorithm
    public var hash: SignatureHash

    public init(_ algorithm: Algorithm, _ hash: SignatureHash) { self.algorithm = algorithm; self.hash = hash }

    public var description: String {
        switch algorithm {
        case .rsaPKCS1: return "RSA PKCS#1 v1.5 with \(hash)"
        case let .rsaPSS(salt): return "RSASSA-PSS with \(hash) (salt \(salt))"
        case .ecdsa: return "ECDSA with \(hash)"
        case .ed25519: return "Ed25519"
        }
    }

    /// Whether a key of `kind` makes (or checks) this kind of signature.
    public func fits(_ kind: PublicKeyKind) -> Bool {
        switch (algorithm, kind) {
        case (.rsaPKCS1, .rsa), (.rsaPSS, .rsa), (.ecdsa, .ecdsa), (.ed25519, .ed25519): return true
        default: return false
        }
    }

    // MARK: RFC 7427 AlgorithmIdentifiers

    static let rsaEncryptionArc: [UInt8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]
    static let ecdsaArc: [UInt8] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04]
    static let ed25519OID: [UInt8] = [0x2b, 0x65, 0x70]
    static let pssOID = rsaEncryptionArc + [0x0a]
    static let mgf1OID = rsaEncryptionArc + [0x08]
    /// sha*WithRSAEncryption (PKCS#1 v2.1 OIDs 1.2.840.113549.1.1.5 / .11 / .12 / .13).
    static let rsaOIDs: [(SignatureHash, [UInt8])] = [(.sha1, rsaEncryptionArc + [0x05]), (.sha256, rsaEncryptionArc + [0x0b]),
                                                      (.sha384, rsaEncryptionArc + [0x0c]), (.sha512, rsaEncryptionArc + [0x0d])]
    /// ecdsa-with-SHA1 (1.2.840.10045.4.1) and ecdsa-with-SHA256/384/512 (4.3.2-4).
    static let ecdsaOIDs: [(SignatureHash, [UInt8])] = [(.sha1, ecdsaArc + [0x01]), (.sha256, ecdsaArc + [0x03, 0x02]),
                                                        (.sha384, ecdsaArc + [0x03, 0x03]), (.sha512, ecdsaArc + [0x03, 0x04])]

    /// The DER AlgorithmIdentifier (RFC 7427 Appendix A): RSA with NULL parameters, ECDSA and
    /// Ed25519 without, PSS with its parameters (hash, MGF1 with the hash, salt length, trailer).
    public var algorithmIdentifier: [UInt8] {
        func oid(_ table: [(SignatureHash, [UInt8])]) -> [UInt8] { table.first { $0.0 == hash }?.1 ?? [] }
        func hashAlg(_ h: SignatureHash) -> [UInt8] { DER.encode(DER.sequence, DER.encode(DER.oid, oid(SignatureHash.oids)) + DER.encode(DER.null, [])) }
        switch algorithm {
        case .rsaPKCS1:
            return DER.encode(DER.sequence, DER.encode(DER.oid, oid(Self.rsaOIDs)) + DER.encode(DER.null, []))
        case .ecdsa:
            return DER.encode(DER.sequence, DER.encode(DER.oid, oid(Self.ecdsaOIDs)))
        case .ed25519:
            return DER.encode(DER.sequence, DER.encode(DER.oid, Self.ed25519OID))
        case let .rsaPSS(salt):
            let h = hashAlg(hash)
            let mgf = DER.encode(DER.sequence, DER.encode(DER.oid, Self.mgf1OID) + h)
            let saltBytes = DER.unsignedInteger(withUnsafeBytes(of: UInt32(salt).bigEndian) { Array($0) }[...])
            // With the (default) trailer field, as RFC 7427 A.4.3 writes it.
            let params = DER.encode(0xa0, h) + DER.encode(0xa1, mgf) + DER.encode(0xa2, saltBytes) + DER.encode(0xa3, DER.unsignedInteger([1]))
            return DER.encode(DER.sequence, DER.encode(DER.oid, Self.pssOID) + DER.encode(DER.sequence, params))
        }
    }

    /// The scheme an AlgorithmIdentifier names. Throws, naming the algorithm, for what Sluice
    /// does not accept: SHA-1 in any form, unknown algorithms, odd parameters.
    public init(algorithmIdentifier der: ArraySlice<UInt8>) throws(SignatureSchemeError) {
        do {
            var outer = DERReader(der)
            var alg = try outer.read(DER.sequence, "AlgorithmIdentifier").contentReader
            try outer.expectEnd("AlgorithmIdentifier")
            let oid = Array(try alg.read(DER.oid, "algorithm").content)
            let params = alg.isAtEnd ? nil : try alg.read("parameters")
            try alg.expectEnd("AlgorithmIdentifier")
            let absentOrNull = params == nil || (params?.tag == DER.null && params?.content.isEmpty == true)
            if let (h, _) = Self.rsaOIDs.first(where: { $0.1 == oid }) {
                guard h != .sha1 else { throw SignatureSchemeError.sha1("sha1WithRSAEncryption") }
                guard absentOrNull else { throw SignatureSchemeError.unsupported("RSA with parameters") }
                self.init(.rsaPKCS1, h)
            } else if let (h, _) = Self.ecdsaOIDs.first(where: { $0.1 == oid }) {
                guard h != .sha1 else { throw SignatureSchemeError.sha1("ecdsa-with-SHA1") }
                guard absentOrNull else { throw SignatureSchemeError.unsupported("ECDSA with parameters") }
                self.init(.ecdsa, h)
            } else if oid == Self.ed25519OID {
                guard params == nil else { throw SignatureSchemeError.unsupported("Ed25519 with parameters") }
                self.init(.ed25519, .identity)
            } else if oid == Self.pssOID {
                guard let p = params, p.tag == DER.sequence else { throw SignatureSchemeError.sha1("RSASSA-PSS with default (SHA-1) parameters") }
                self = try Self.pss(p.contentReader)
            } else {
                throw SignatureSchemeError.unsupported("algorithm \(OID.dotted(oid[...]))")
            }
        } catch let e as DERError {
            throw SignatureSchemeError.malformed("\(e)")
        } catch let e as SignatureSchemeError {
            throw e
        } catch {
            throw SignatureSchemeError.malformed("\(error)")
        }
    }

    /// RSASSA-PSS-params (RFC 4055 §3.1): the hash (default SHA-1: refused), MGF1 with the
    /// same hash, the salt length (default 20), trailer field 1.
    private static func pss(_ params: DERReader) throws -> SignatureScheme {
        var r = params
        var hash = SignatureHash.sha1, mgfHash = SignatureHash.sha1, salt = 20
        func hashOf(_ e: DERElement) throws -> SignatureHash {
            var content = e.contentReader
            var alg = try content.read(DER.sequence, "hash AlgorithmIdentifier").contentReader
            let oid = Array(try alg.read(DER.oid, "hash algorithm").content)
            guard let h = SignatureHash.oids.first(where: { $0.1 == oid })?.0 else {
                throw SignatureSchemeError.unsupported("RSASSA-PSS with hash \(OID.dotted(oid[...]))")
            }
            return h
        }
        if r.nextTag == 0xa0 { hash = try hashOf(try r.read("PSS hashAlgorithm")) }
        if r.nextTag == 0xa1 {
            var wrapped = try r.read("PSS maskGenAlgorithm").contentReader
            var mgf = try wrapped.read(DER.sequence, "MGF").contentReader
            guard Array(try mgf.read(DER.oid, "MGF algorithm").content) == mgf1OID else { throw SignatureSchemeError.unsupported("RSASSA-PSS with a mask generation other than MGF1") }
            var inner = try mgf.read(DER.sequence, "MGF1 hash").contentReader
            let oid = Array(try inner.read(DER.oid, "MGF1 hash algorithm").content)
            guard let h = SignatureHash.oids.first(where: { $0.1 == oid })?.0 else { throw SignatureSchemeError.unsupported("MGF1 with hash \(OID.dotted(oid[...]))") }
            mgfHash = h
        }
        if r.nextTag == 0xa2 {
            var s = try r.read("PSS saltLength").contentReader
            let v = try s.read(DER.integer, "salt length").content
            guard v.count <= 3, v.first.map({ $0 & 0x80 == 0 }) ?? false else { throw SignatureSchemeError.malformed("RSASSA-PSS salt length") }
            salt = v.reduce(0) { $0 << 8 | Int($1) }
        }
        if r.nextTag == 0xa3 {
            var t = try r.read("PSS trailerField").contentReader
            guard Array(try t.read(DER.integer, "trailer field").content) == [1] else { throw SignatureSchemeError.unsupported("RSASSA-PSS trailer field other than 1") }
        }
        try r.expectEnd("RSASSA-PSS parameters")
        guard hash != .sha1, mgfHash != .sha1 else { throw SignatureSchemeError.sha1("RSASSA-PSS with SHA-1") }
        guard hash == mgfHash else { throw SignatureSchemeError.unsupported("RSASSA-PSS with \(hash) but MGF1 with \(mgfHash)") }
        return SignatureScheme(.rsaPSS(saltLength: salt), hash)
    }

    /// What we sign with: Ed25519 alone; ECDSA with the hash of its curve's size (RFC 5656's
    /// pairing), RSA with SHA-256; else the first other hash the peer announced. `peer` is
    /// the peer's SIGNATURE_HASH_ALGORITHMS (nil: it sent none; RFC 7427 §4 then leaves the
    /// choice to us). Nil when the peer announced none that fits the key.
    public static func choose(for kind: PublicKeyKind, peer: Set<UInt16>?) -> SignatureScheme? {
        let allowed = { (h: SignatureHash) in peer?.contains(h.rawValue) ?? true }
        switch kind {
        case .ed25519:
            return allowed(.identity) ? SignatureScheme(.ed25519, .identity) : nil
        case let .ecdsa(bits):
            let first: SignatureHash = bits > 384 ? .sha512 : bits > 256 ? .sha384 : .sha256
            return ([first, .sha256, .sha384, .sha512].first(where: allowed)).map { SignatureScheme(.ecdsa, $0) }
        case .rsa:
            return [SignatureHash.sha256, .sha384, .sha512].first(where: allowed).map { SignatureScheme(.rsaPKCS1, $0) }
        }
    }
}

public enum SignatureSchemeError: Error, Equatable, CustomStringConvertible {
    case sha1(String)
    case unsupported(String)
    case malformed(String)
    public var description: String {
        switch self {
        case let .sha1(what): return "\(what) is refused: SHA-1 signatures are not accepted"
        case let .unsupported(what): return "\(what) is not supported"
        case let .malformed(what): return "malformed AlgorithmIdentifier: \(what)"
        }
    }
}

/// AUTH data of the signature methods: RFC 7427's (method 14) and RFC 4754's (9-11).
public enum SignatureAuthData {
    /// Method 14: the AlgorithmIdentifier's length (one byte), the AlgorithmIdentifier, the signature.
    public static func encode(_ scheme: SignatureScheme, signature: [UInt8]) -> [UInt8] {
        let alg = scheme.algorithmIdentifier
        return [UInt8(truncatingIfNeeded: alg.count)] + alg + signature
    }

    /// The scheme and the signature (as libcrypto takes it: ECDSA as DER) of AUTH data of
    /// `method`. Throws for method 1 (SHA-1), PSK and unknown methods, and malformed data.
    public static func decode(method: UInt8, _ data: [UInt8]) throws(SignatureSchemeError) -> (SignatureScheme, [UInt8]) {
        switch method {
        case AuthMethod.digitalSignature:
            guard let n = data.first.map(Int.init), n > 0, data.count > 1 + n else {
                throw .malformed("AUTH data of \(data.count) bytes cannot hold its AlgorithmIdentifier and a signature")
            }
            let scheme = try SignatureScheme(algorithmIdentifier: data[1...n])
            return (scheme, Array(data[(1 + n)...]))
        case AuthMethod.ecdsaP256, AuthMethod.ecdsaP384, AuthMethod.ecdsaP521:
            let (hash, width): (SignatureHash, Int) = method == AuthMethod.ecdsaP256 ? (.sha256, 32) : method == AuthMethod.ecdsaP384 ? (.sha384, 48) : (.sha512, 66)
            guard data.count == 2 * width else { throw .malformed("\(AuthMethod.name(method)) signature is \(data.count) bytes, expected \(2 * width)") }
            let sig = DER.encode(DER.sequence, DER.unsignedInteger(data[0..<width]) + DER.unsignedInteger(data[width...]))
            return (SignatureScheme(.ecdsa, hash), sig)
        case AuthMethod.rsaSignature:
            throw .sha1(AuthMethod.name(method))
        default:
            throw .unsupported("AUTH \(AuthMethod.name(method))")
        }
    }

    /// The curve size that RFC 4754 methods 9-11 tie the key to.
    static func classicCurveBits(_ method: UInt8) -> Int? {
        switch method {
        case AuthMethod.ecdsaP256: return 256
        case AuthMethod.ecdsaP384: return 384
        case AuthMethod.ecdsaP521: return 521
        default: return nil
        }
    }
}
