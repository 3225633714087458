import CSluiceCrypto

/// Why a peer's certificate was not accepted; the text names the certificate, never a key.
public enum CertificateFailure: Error, Equatable, CustomStringConvertible {
    case expired(subject: String, notAfter: Int64)
    case notYetValid(subject: String, notBefore: Int64)
    /// No configured CA issued it (nor any intermediate the peer sent that leads to one).
    case unknownCA(subject: String, issuer: String)
    /// A certificate's signature does not verify with its issuer's key.
    case badSignature(subject: String)
    /// An issuer in the path is not a CA (basicConstraints, keyUsage).
    case notACA(subject: String)
    /// Anything else libcrypto's path validation refused, in its words.
    case invalid(subject: String, reason: String)

    public var description: String {
        switch self {
        case let .expired(s, t): return "certificate \"\(s)\" expired on \(UTCTime.text(t))"
        case let .notYetValid(s, t): return "certificate \"\(s)\" is not valid before \(UTCTime.text(t))"
        case let .unknownCA(s, i): return "certificate \"\(s)\" is issued by \"\(i)\", an unknown CA (not in ca_certs)"
        case let .badSignature(s): return "certificate \"\(s)\" has a bad signature"
        case let .notACA(s): return "certificate \"\(s)\" issues certificates but is not a CA"
        case let .invalid(s, r): return "certificate \"\(s)\": \(r)"
        }
    }
}

/// The configured CAs (`ca_certs`): trust anchors for the peer's certificate.
public struct CertificateAuthorities: Sendable, Equatable {
    public let certificates: [Certificate]
    public init(_ certificates: [Certificate]) { self.certificates = certificates }

    /// CERTREQ data (RFC 7296 §3.7): the SHA-1 of each CA's SubjectPublicKeyInfo, concatenated.
    public var certificateRequest: [UInt8] { certificates.flatMap(\.publicKeyInfoSHA1) }

    /// RFC 5280 path validation of `leaf` through `intermediates` to one of these CAs, at
    /// `time` (Unix seconds; nil: now). Nil when it verifies.
    public func verify(_ leaf: Certificate, intermediates: [Certificate], at time: Int64?) -> CertificateFailure? {
        guard !certificates.isEmpty else { return .unknownCA(subject: "\(leaf.subject)", issuer: "\(leaf.issuer)") }
        var error: Int32 = 0, depth: Int32 = 0
        let r = Self.withBuffers(intermediates.map(\.der)) { chain, chainLens in
            Self.withBuffers(certificates.map(\.der)) { roots, rootLens in
                sluice_cert_verify(leaf.der, leaf.der.count, chain, chainLens, intermediates.count,
                                   roots, rootLens, certificates.count, time ?? 0, &error, &depth)
            }
        }
        if r == 1 { return nil }
        guard r == 0 else { return .invalid(subject: "\(leaf.subject)", reason: "libcrypto could not check it") }
        // The certificate at fault: the leaf, or the intermediate at that depth of the path
        // (found by the issuer names, as libcrypto built it).
        let path = Self.path(leaf, intermediates + certificates)
        let at = depth >= 0 && Int(depth) < path.count ? path[Int(depth)] : leaf
        let subject = "\(at.subject)"
        switch error {
        case SLUICE_X509_CERT_HAS_EXPIRED: return .expired(subject: subject, notAfter: at.notAfter)
        case SLUICE_X509_CERT_NOT_YET_VALID: return .notYetValid(subject: subject, notBefore: at.notBefore)
        case SLUICE_X509_UNABLE_TO_GET_ISSUER_CERT, SLUICE_X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
             SLUICE_X509_DEPTH_ZERO_SELF_SIGNED_CERT, SLUICE_X509_SELF_SIGNED_CERT_IN_CHAIN:
            return .unknownCA(subject: subject, issuer: "\(at.issuer)")
        case SLUICE_X509_CERT_SIGNATURE_FAILURE: return .badSignature(subject: subject)
        case SLUICE_X509_INVALID_CA: return .notACA(subject: subject)
        default: return .invalid(subject: subject, reason: String(cString: sluice_cert_error_string(error)))
        }
    }

    /// The leaf and its issuers by name, as far as they are found (for naming a fault).
    static func path(_ leaf: Certificate, _ pool: [Certificate]) -> [Certificate] {
        var path = [leaf]
        while path.count < 9, let last = path.last, !(last.isCA && last.issuer.matches(last.subject)),
              let next = pool.first(where: { $0.subject.matches(last.issuer) && !path.contains($0) }) {
            path.append(next)
        }
        return path
    }

    /// C arrays of pointers and lengths over `buffers`, valid inside `body`.
    static func withBuffers<R>(_ buffers: [[UInt8]], _ body: (UnsafePointer<UnsafePointer<UInt8>?>?, UnsafePointer<Int>?) -> R) -> R {
        let lengths = buffers.map(\.count)
        let total = buffers.reduce(0) { $0 + $1.count }
        var flat = [UInt8](); flat.reserveCapacity(total)
        for b in buffers { flat += b }
        return flat.withUnsafeBufferPointer { base in
            var offset = 0
            var pointers: [UnsafePointer<UInt8>?] = []
            for n in lengths { pointers.append(base.baseAddress.map { $0 + offset }); offset += n }
            return pointers.withUnsafeBufferPointer { p in lengths.withUnsafeBufferPointer { l in body(p.baseAddress, l.baseAddress) } }
        }
    }
}

/// Unix seconds as `2021-01-01 00:00:00 UTC`, for logs.
enum UTCTime {
    static func text(_ t: Int64) -> String {
        let days = t >= 0 ? t / 86400 : (t - 86399) / 86400
        let secs = t - days * 86400
        // Days to civil date (the proleptic Gregorian calendar's 400-year cycle).
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { String(v).leftPadded(2) }
        return "\(y)-\(two(m))-\(two(d)) \(two(secs / 3600)):\(two(secs % 3600 / 60)):\(two(secs % 60)) UTC"
    }
}
