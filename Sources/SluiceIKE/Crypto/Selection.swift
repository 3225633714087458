import SluiceCore

/// What one SA negotiation chose: one algorithm of each kind (RFC 7296 §2.7, §3.3).
public struct NegotiatedAlgorithms: Sendable, Equatable {
    public var encryption: EncryptionAlgorithm
    /// nil for AEADs.
    public var integrity: IntegrityAlgorithm?
    /// IKE SAs only.
    public var prf: PRFAlgorithm?
    /// nil for an ESP SA without PFS.
    public var dh: DHGroup?
    /// ESP only; false for IKE.
    public var esn: Bool

    public init(encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm? = nil, prf: PRFAlgorithm? = nil,
                dh: DHGroup? = nil, esn: Bool = false) {
        self.encryption = encryption; self.integrity = integrity; self.prf = prf; self.dh = dh; self.esn = esn
    }

    /// The data plane's transform for a negotiated ESP SA; nil when SluiceCore has none for it.
    public var espProposal: Proposal? {
        switch (encryption, integrity) {
        case (.aesGCM16(bits: 128), nil): return .aes128gcm16
        case (.aesGCM16(bits: 256), nil): return .aes256gcm16
        case (.chacha20poly1305, nil): return .chacha20poly1305
        case (.aesCBC(bits: 128), .hmacSHA256_128?): return .aes128sha256
        case (.aesCBC(bits: 256), .hmacSHA256_128?): return .aes256sha256
        default: return nil
        }
    }

    /// Responder side (strongSwan's default order): for each configured proposal in order, for each
    /// offered proposal in order, the first configured algorithm of each type that the offer has.
    /// An offer with a transform type that does not belong to the protocol, without a mandatory type,
    /// or whose transforms of a needed type are all unknown to Sluice (other ids, AES-192, unknown
    /// key lengths) never matches (RFC 7296 §3.3.6).
    ///
    /// The returned proposal has one transform per type, the offer's number and the offer's SPI
    /// (the peer's: for ESP and an IKE rekey the answer must carry the responder's own SPI instead).
    /// `skipKeyExchange` ignores DH transforms on both sides: the CHILD_SA of IKE_AUTH has none.
    public static func select(offered: [WireProposal], configured: [ProposalSpec], protocolID: ProtocolID,
                              skipKeyExchange: Bool = false) -> (proposal: WireProposal, algorithms: NegotiatedAlgorithms)? {
        for spec in configured {
            for offer in offered {
                if let m = match(spec, offer, protocolID: protocolID, skipKeyExchange: skipKeyExchange) { return m }
            }
        }
        return nil
    }

    private static func match(_ spec: ProposalSpec, _ offer: WireProposal, protocolID: ProtocolID,
                              skipKeyExchange: Bool) -> (proposal: WireProposal, algorithms: NegotiatedAlgorithms)? {
        guard offer.protocolID == protocolID, spiSizeFits(offer.spi.count, protocolID),
              offer.transforms.allSatisfy({ allowedTypes(protocolID).contains($0.type) }) else { return nil }
        var chosen: [WireTransform] = []

        guard let encryption = spec.encryption.first(where: { $0.isSupported && offer.transforms.contains($0.wireTransform) }) else {
            return nil
        }
        chosen.append(encryption.wireTransform)

        var prf: PRFAlgorithm?
        if protocolID == .ike {
            guard let p = spec.prf.first(where: { offer.transforms.contains($0.wireTransform) }) else { return nil }
            prf = p
            chosen.append(p.wireTransform)
        }

        var integrity: IntegrityAlgorithm?
        if !encryption.isAEAD { // for an AEAD any integrity transform offered (at most NONE) is left out
            guard let i = spec.integrity.first(where: { offer.transforms.contains($0.wireTransform) }) else { return nil }
            integrity = i
            chosen.append(i.wireTransform)
        }

        var dh: DHGroup?
        if !skipKeyExchange {
            let offeredDH = offer.transforms.filter { $0.type == .keyExchange }
            if protocolID == .ike || !spec.dh.isEmpty {
                guard let g = spec.dh.first(where: { offer.transforms.contains($0.wireTransform) }) else { return nil }
                dh = g
                chosen.append(g.wireTransform)
            } else if !offeredDH.isEmpty && !offeredDH.contains(noKeyExchange) {
                return nil // the peer insists on PFS, this proposal has none
            }
        }

        var esn = false
        if protocolID != .ike {
            let values = spec.esn.isEmpty ? [false] : spec.esn
            guard let e = values.first(where: { offer.transforms.contains(esnTransform($0)) }) else { return nil }
            esn = e
            chosen.append(esnTransform(e))
        }
        let proposal = WireProposal(number: offer.number, protocolID: protocolID, spi: offer.spi, transforms: chosen)
        return (proposal, NegotiatedAlgorithms(encryption: encryption, integrity: integrity, prf: prf, dh: dh, esn: esn))
    }

    /// Initiator side: reads the responder's answer, which must be one of `offered` (same number and
    /// protocol) cut to exactly one transform of each type it needs, every one of them offered.
    public init(chosen: WireProposal, offered: [WireProposal], skipKeyExchange: Bool = false) throws(NegotiationError) {
        let p = chosen.protocolID
        let name = "the responder's proposal #\(chosen.number) (\(p))"
        guard let offer = offered.first(where: { $0.number == chosen.number && $0.protocolID == p }) else {
            throw NegotiationError("\(name) answers no proposal that was offered")
        }
        guard Self.spiSizeFits(chosen.spi.count, p) else {
            throw NegotiationError("\(name) has a \(chosen.spi.count)-byte SPI")
        }
        var byType: [TransformType: WireTransform] = [:]
        for t in chosen.transforms {
            guard Self.allowedTypes(p).contains(t.type) else { throw NegotiationError("\(name) has an unexpected \(t.type) transform") }
            guard byType[t.type] == nil else { throw NegotiationError("\(name) has more than one \(t.type) transform") }
            guard offer.transforms.contains(t) else {
                throw NegotiationError("\(name) chose \(t.type) transform \(t.id) that was not offered")
            }
            byType[t.type] = t
        }
        guard let e = byType[.encryption], let encryption = EncryptionAlgorithm(transformID: e.id, keyLength: e.keyLength) else {
            throw NegotiationError("\(name) has no encryption algorithm Sluice offered")
        }
        var integrity: IntegrityAlgorithm?
        if encryption.isAEAD {
            if let i = byType[.integrity], i.id != 0 { throw NegotiationError("\(name) pairs an AEAD with integrity \(i.id)") }
        } else {
            guard let i = byType[.integrity], i.keyLength == nil, let alg = IntegrityAlgorithm(rawValue: i.id) else {
                throw NegotiationError("\(name) has no integrity algorithm for \(encryption.keyword)")
            }
            integrity = alg
        }
        var prf: PRFAlgorithm?
        if p == .ike {
            guard let t = byType[.prf], t.keyLength == nil, let alg = PRFAlgorithm(rawValue: t.id) else {
                throw NegotiationError("\(name) has no PRF")
            }
            prf = alg
        }
        var dh: DHGroup?
        if let t = byType[.keyExchange] {
            if skipKeyExchange { throw NegotiationError("\(name) has a key exchange where none was negotiated") }
            if t.id != 0 {
                guard t.keyLength == nil, let g = DHGroup(rawValue: t.id) else { throw NegotiationError("\(name) has an unknown DH group \(t.id)") }
                dh = g
            }
        }
        if dh == nil && !skipKeyExchange {
            let offeredDH = offer.transforms.filter { $0.type == .keyExchange }
            if p == .ike || (!offeredDH.isEmpty && !offeredDH.contains(Self.noKeyExchange)) {
                throw NegotiationError("\(name) has no DH group, but one was required")
            }
        }
        var esn = false
        if p != .ike {
            guard let t = byType[.esn], t.id <= 1, t.keyLength == nil else { throw NegotiationError("\(name) has no ESN transform") }
            esn = t.id == 1
        }
        self.init(encryption: encryption, integrity: integrity, prf: prf, dh: dh, esn: esn)
    }

    static let noKeyExchange = WireTransform(type: .keyExchange, id: 0)

    static func esnTransform(_ on: Bool) -> WireTransform { WireTransform(type: .esn, id: on ? 1 : 0) }

    static func allowedTypes(_ p: ProtocolID) -> Set<TransformType> {
        p == .ike ? [.encryption, .prf, .integrity, .keyExchange] : [.encryption, .integrity, .keyExchange, .esn]
    }

    /// IKE: none in IKE_SA_INIT, 8 bytes in a rekey; ESP/AH: 4 bytes (RFC 7296 §3.3.1).
    static func spiSizeFits(_ n: Int, _ p: ProtocolID) -> Bool {
        p == .ike ? (n == 0 || n == 8) : n == 4
    }
}

public struct NegotiationError: Error, Equatable, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

extension ProposalSpec {
    /// The SA payload proposal for this spec: AES transforms carry the Key Length attribute; IKE gets
    /// its PRFs and no ESN; ESP gets no PRF and always an ESN transform (noesn when none is set).
    /// `includeKeyExchange: false` leaves the DH groups out (the CHILD_SA carried in IKE_AUTH).
    public func wireProposal(number: UInt8, protocolID: ProtocolID, spi: [UInt8],
                             includeKeyExchange: Bool = true) -> WireProposal {
        var t = encryption.map(\.wireTransform)
        if protocolID == .ike { t += prf.map(\.wireTransform) }
        if !encryption.allSatisfy(\.isAEAD) { t += integrity.map(\.wireTransform) }
        if includeKeyExchange { t += dh.map(\.wireTransform) }
        if protocolID != .ike { t += (esn.isEmpty ? [false] : esn).map(NegotiatedAlgorithms.esnTransform) }
        return WireProposal(number: number, protocolID: protocolID, spi: spi, transforms: t)
    }

    /// Same as `NegotiatedAlgorithms.select`.
    public static func select(offered: [WireProposal], configured: [ProposalSpec], protocolID: ProtocolID,
                              skipKeyExchange: Bool = false) -> (proposal: WireProposal, algorithms: NegotiatedAlgorithms)? {
        NegotiatedAlgorithms.select(offered: offered, configured: configured, protocolID: protocolID,
                                    skipKeyExchange: skipKeyExchange)
    }
}

extension EncryptionAlgorithm {
    public var wireTransform: WireTransform {
        WireTransform(type: .encryption, id: transformID, keyLength: keyLengthAttribute)
    }
}

extension PRFAlgorithm {
    public var wireTransform: WireTransform { WireTransform(type: .prf, id: rawValue) }
}

extension IntegrityAlgorithm {
    public var wireTransform: WireTransform { WireTransform(type: .integrity, id: rawValue) }
}

extension DHGroup {
    public var wireTransform: WireTransform { WireTransform(type: .keyExchange, id: rawValue) }
}
