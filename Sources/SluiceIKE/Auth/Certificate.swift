import CSluiceCrypto
import SluiceCore

/// The kind of a public key Sluice signs or verifies with.
public enum PublicKeyKind: Sendable, Equatable, CustomStringConvertible {
    case rsa(bits: Int)
    /// P-256, P-384 or P-521 (bits 256, 384, 521).
    case ecdsa(bits: Int)
    case ed25519

    init?(kind: Int32, bits: Int32) {
        switch Int(kind) {
        case Int(SLUICE_PK_RSA.rawValue): self = .rsa(bits: Int(bits))
        case Int(SLUICE_PK_EC.rawValue): self = .ecdsa(bits: Int(bits))
        case Int(SLUICE_PK_ED25519.rawValue): self = .ed25519
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case let .rsa(bits): return "RSA \(bits)"
        case let .ecdsa(bits): return "ECDSA P-\(bits)"
        case .ed25519: return "Ed25519"
        }
    }
}

/// A subjectAltName entry that an IKE identity can match (RFC 7296 §3.5, RFC 4945 §5.1.2).
public enum SubjectAltName: Sendable, Equatable, CustomStringConvertible {
    case dns(String)
    case email(String)
    case ip(IPAddress)

    public var description: String {
        switch self {
        case let .dns(n): return "DNS:\(n.printable)"
        case let .email(e): return "email:\(e.printable)"
        case let .ip(a): return "IP:\(a)"
        }
    }
}

public struct CertificateError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An X.509 certificate (RFC 5280), parsed by libcrypto: the DER it came as and the
/// fields the IKE agent needs (subject, SANs, key, validity, CA flag).
public struct Certificate: Sendable, Equatable, CustomStringConvertible {
    public let der: [UInt8]
    public let subject: DistinguishedName
    public let issuer: DistinguishedName
    /// DER SubjectPublicKeyInfo.
    public let publicKeyInfo: [UInt8]
    public let keyKind: PublicKeyKind
    public let subjectAltNames: [SubjectAltName]
    /// Unix seconds.
    public let notBefore: Int64, notAfter: Int64
    /// basicConstraints CA:TRUE.
    public let isCA: Bool
    /// keyUsage bits in OpenSSL's KU_ layout (0x80 digitalSignature, 0x40 nonRepudiation),
    /// nil when the certificate has no keyUsage extension.
    public let keyUsage: UInt32?

    public init(der: [UInt8]) throws(CertificateError) {
        func field(_ f: sluice_cert_field_kind, _ name: String) throws(CertificateError) -> [UInt8] {
            guard let v = CBuffer.read({ sluice_cert_field(der, der.count, f, $0, $1, $2) }) else {
                throw CertificateError("not an X.509 certificate (its \(name) does not parse)")
            }
            return v
        }
        let subjectDER = try field(SLUICE_CERT_SUBJECT, "subject")
        let issuerDER = try field(SLUICE_CERT_ISSUER, "issuer")
        publicKeyInfo = try field(SLUICE_CERT_SPKI, "public key")
        do {
            subject = try DistinguishedName(der: subjectDER)
            issuer = try DistinguishedName(der: issuerDER)
        } catch {
            throw CertificateError("its names do not parse: \(error)")
        }
        var kind: Int32 = 0, bits: Int32 = 0
        guard sluice_pubkey_info(publicKeyInfo, publicKeyInfo.count, &kind, &bits) == 1, let k = PublicKeyKind(kind: kind, bits: bits) else {
            throw CertificateError("certificate \(subject): its public key is not RSA, ECDSA (P-256, P-384, P-521) or Ed25519")
        }
        keyKind = k
        var sans: [SubjectAltName] = []
        for index in 0..<256 {
            var type: Int32 = 0
            var value: [UInt8] = []
            let r = CBuffer.call({ sluice_cert_san(der, der.count, index, &type, $0, $1, $2) }, into: &value)
            if r == 2 { break }
            guard r == 1 else { throw CertificateError("certificate \(subject): its subjectAltName does not parse") }
            switch UInt32(type) {
            case SLUICE_SAN_DNS.rawValue: sans.append(.dns(String(decoding: value, as: UTF8.self)))
            case SLUICE_SAN_EMAIL.rawValue: sans.append(.email(String(decoding: value, as: UTF8.self)))
            case SLUICE_SAN_IP.rawValue: if let a = IPAddress(bytes: value[...]) { sans.append(.ip(a)) }
            default: break
            }
        }
        subjectAltNames = sans
        var nb: Int64 = 0, na: Int64 = 0, ca: Int32 = 0, ku: UInt32 = 0
        guard sluice_cert_info(der, der.count, &nb, &na, &ca, &ku) == 1 else {
            throw CertificateError("certificate \(subject): its validity dates do not parse")
        }
        notBefore = nb; notAfter = na; isCA = ca == 1
        keyUsage = ku == UInt32.max ? nil : ku
        self.der = der
    }

    /// Every certificate in a file: PEM ("CERTIFICATE" blocks, in order) or one DER.
    public static func load(_ file: [UInt8]) throws(CertificateError) -> [Certificate] {
        guard !file.isEmpty else { throw CertificateError("is empty") }
        var out: [Certificate] = []
        for index in 0..<64 {
            var der: [UInt8] = []
            let r = CBuffer.call({ sluice_cert_from_file(file, file.count, index, $0, $1, $2) }, into: &der)
            if r == 2 { break }
            guard r == 1 else {
                throw CertificateError(index == 0 ? "not a PEM or DER X.509 certificate" : "certificate \(index + 1) in the file does not parse")
            }
            out.append(try Certificate(der: der))
        }
        guard !out.isEmpty else { throw CertificateError("holds no certificate (no PEM \"BEGIN CERTIFICATE\" block)") }
        return out
    }

    /// Whether the certificate proves identity `id`: its subject for a DN, a subjectAltName
    /// for an FQDN, RFC 822 address or IP address (RFC 4945 §5.1.2; no CN fallback).
    public func contains(_ id: IDPayload) -> Bool {
        switch id.type {
        case .derDN:
            guard let dn = try? DistinguishedName(der: id.data) else { return false }
            return dn.matches(subject) && subject.matches(dn)
        case .fqdn:
            let name = String(decoding: id.data, as: UTF8.self).lowercased()
            return subjectAltNames.contains { if case let .dns(d) = $0 { return d.lowercased() == name }; return false }
        case .rfc822:
            let name = String(decoding: id.data, as: UTF8.self).lowercased()
            return subjectAltNames.contains { if case let .email(e) = $0 { return e.lowercased() == name }; return false }
        case .ipv4, .ipv6:
            guard let a = IPAddress(bytes: id.data[...]) else { return false }
            return subjectAltNames.contains(.ip(a))
        case .keyID:
            return false
        }
    }

    /// SHA-1 of the SubjectPublicKeyInfo: how CERTREQ names a CA (RFC 7296 §3.7; a lookup
    /// key, not a signature).
    public var publicKeyInfoSHA1: [UInt8] {
        var out = [UInt8](repeating: 0, count: 20)
        _ = sluice_sha1(publicKeyInfo, publicKeyInfo.count, &out)
        return out
    }

    /// Whether the key may sign IKE AUTH: keyUsage, when present, must allow
    /// digitalSignature or nonRepudiation (RFC 4945 §5.1.3.2).
    public var maySign: Bool { keyUsage.map { $0 & 0xc0 != 0 } ?? true }

    public var description: String { subject.description }

    public static func == (a: Certificate, b: Certificate) -> Bool { a.der == b.der }
}

/// Calls to the C shim's output convention (sluice_pki.h): a buffer, grown once.
enum CBuffer {
    typealias Body = (UnsafeMutablePointer<UInt8>?, Int, UnsafeMutablePointer<Int>) -> Int32

    /// Runs `body` into `out`; returns its answer (1 with `out` filled; 2, -1 as it said).
    static func call(_ body: Body, into out: inout [UInt8], initial: Int = 2048) -> Int32 {
        var buffer = [UInt8](repeating: 0, count: initial)
        var n = 0
        var r = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress, $0.count, &n) }
        if r == 0, n > initial {
            buffer = [UInt8](repeating: 0, count: n)
            r = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress, $0.count, &n) }
        }
        guard r == 1, n <= buffer.count else { return r == 0 ? -1 : r }
        out = Array(buffer[0..<n])
        return 1
    }

    /// The bytes when `body` answered 1; nil otherwise.
    static func read(_ body: Body) -> [UInt8]? {
        var out: [UInt8] = []
        return call(body, into: &out) == 1 ? out : nil
    }
}
