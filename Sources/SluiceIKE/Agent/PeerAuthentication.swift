import SluiceCore

/// Checking what the peer proved in IKE_AUTH (RFC 7296 §2.15): its identity against
/// remote_id, then its AUTH: a PSK MAC, or a signature (RFC 7427, RFC 4754) with the key
/// of a certificate that verifies to one of our CAs and holds that identity.
extension IKEAgent {
    /// Nil when the peer proved `id` with `method` / `data` (and, for certificates, the CERT
    /// payloads in `inner`); otherwise why not, for the log.
    func verifyPeer(_ s: IKESession, _ inner: [Payload], id: IDPayload, method: UInt8, data: [UInt8]) -> String? {
        if let want = s.connection.remoteID, !want.matches(id) {
            return "identity mismatch: the peer is \(id.text), remote_id is \(want.text)"
        }
        let signer: IKESession.Role = s.isInitiator ? .responder : .initiator
        switch s.connection.auth {
        case let .psk(key):
            guard method == AuthMethod.sharedKey else {
                return "the peer uses \(AuthMethod.name(method)), the connection a pre-shared key"
            }
            guard let expected = pskAuth(s, signer: signer, id: id, psk: key), Self.constantTimeEqual(expected, data) else {
                return "its AUTH does not verify with our pre-shared key"
            }
            return nil
        case let .certificates(c):
            guard method != AuthMethod.sharedKey else { return "the peer uses a pre-shared key, the connection certificates" }
            return verifyCertificateAuth(s, inner, id: id, method: method, data: data, signer: signer, authorities: c.authorities)
        }
    }

    private func verifyCertificateAuth(_ s: IKESession, _ inner: [Payload], id: IDPayload, method: UInt8, data: [UInt8],
                                       signer: IKESession.Role, authorities: CertificateAuthorities) -> String? {
        let scheme: SignatureScheme, signature: [UInt8]
        do { (scheme, signature) = try SignatureAuthData.decode(method: method, data) } catch { return "\(error)" }
        let certs = inner.compactMap { p -> [UInt8]? in
            if case let .cert(encoding, der) = p, encoding == CertEncoding.x509Signature { return der }
            return nil
        }
        guard let leafDER = certs.first else { return "the peer sent no X.509 certificate (CERT payload, encoding 4)" }
        let leaf: Certificate
        do { leaf = try Certificate(der: leafDER) } catch { return "the peer's certificate: \(error)" }
        var intermediates: [Certificate] = []
        for der in certs.dropFirst() {
            do { intermediates.append(try Certificate(der: der)) } catch { return "an intermediate certificate the peer sent: \(error)" }
        }
        if let failure = authorities.verify(leaf, intermediates: intermediates, at: certificateTime?()) { return "\(failure)" }
        guard leaf.contains(id) else {
            return "identity mismatch: certificate \"\(leaf.subject)\" does not hold the peer's identity \(id.text) (subject \(leaf.subject); \(leaf.subjectAltNames.isEmpty ? "no subjectAltName" : leaf.subjectAltNames.map(\.description).joined(separator: ", ")))"
        }
        guard leaf.maySign else { return "certificate \"\(leaf.subject)\" has a keyUsage without digitalSignature" }
        if let bits = SignatureAuthData.classicCurveBits(method), leaf.keyKind != .ecdsa(bits: bits) {
            return "\(AuthMethod.name(method)) with a \(leaf.keyKind) key"
        }
        guard let octets = signedOctets(s, signer: signer, id: id) else { return "no keys for AUTH" }
        switch SignatureCheck.verify(signature, over: octets, scheme: scheme, certificate: leaf) {
        case nil: return "\(scheme) does not fit the \(leaf.keyKind) key of certificate \"\(leaf.subject)\""
        case false?: return "bad signature: the AUTH (\(scheme)) does not verify with the key of certificate \"\(leaf.subject)\""
        case true?: return nil
        }
    }
}
