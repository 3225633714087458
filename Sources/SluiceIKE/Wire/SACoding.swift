/// SA payload bodies (RFC 7296 §3.3): proposal substructures, each with its transform
/// substructures and their attributes.
///
/// A proposal whose protocol ID or any transform type is not one `ProtocolID` / `TransformType`
/// knows is parsed strictly and then left out of the result: §3.3.6 says such a proposal is
/// unacceptable while the others are processed as usual, so the selector never sees it (and a
/// reply choosing it fails as "not what we proposed"). The remaining proposals keep their wire
/// numbers. An SA payload whose every proposal was left out decodes as `.sa([])`.
enum SACoding {
    static let lastProposal: UInt8 = 0, moreProposals: UInt8 = 2
    static let lastTransform: UInt8 = 0, moreTransforms: UInt8 = 3
    /// Attribute Format bit: set for TV (2-byte value inline), clear for TLV.
    static let attributeTV: UInt16 = 0x8000
    static let keyLengthAttribute: UInt16 = 14

    static func decode(_ r: inout WireReader) throws(IKEDecodeError) -> [WireProposal] {
        guard !r.isAtEnd else { throw r.malformed("SA payload has no proposals") }
        var proposals: [WireProposal] = []
        var ordinal = 0
        while !r.isAtEnd {
            ordinal += 1
            let what = "SA proposal \(ordinal)"
            let last = try r.u8("\(what) last-substructure byte")
            guard last == lastProposal || last == moreProposals else {
                throw r.malformed("\(what) last-substructure value \(last), must be 0 or 2")
            }
            try r.skip(1, "\(what) reserved byte")
            let length = Int(try r.u16("\(what) length"))
            guard length >= 8 else { throw r.malformed("\(what) length \(length), below the 8-byte minimum") }
            guard length - 4 <= r.remaining else {
                throw r.malformed("\(what) length \(length) runs past its payload (\(r.remaining + 4) bytes left)")
            }
            var p = try r.substructure(length - 4, what)
            if let proposal = try decodeProposal(&p, what) { proposals.append(proposal) }
            if last == lastProposal, !r.isAtEnd {
                throw r.malformed("\(what) is marked last but \(r.remaining) bytes follow it")
            }
            if last == moreProposals, r.isAtEnd {
                throw r.malformed("\(what) says another proposal follows but the SA payload ends")
            }
        }
        return proposals
    }

    /// One proposal after its 4-byte header; nil when it names something Sluice cannot negotiate.
    private static func decodeProposal(_ p: inout WireReader, _ what: String) throws(IKEDecodeError) -> WireProposal? {
        let number = try p.u8("\(what) number")
        let rawProtocol = try p.u8("\(what) protocol ID")
        let spiSize = Int(try p.u8("\(what) SPI size"))
        let count = Int(try p.u8("\(what) transform count"))
        let protocolID = ProtocolID(rawValue: rawProtocol)
        switch protocolID {
        case .ike?:
            guard spiSize == 0 || spiSize == 8 else { throw p.malformed("\(what) is for IKE with a \(spiSize)-byte SPI, must be 0 or 8") }
        case .ah?, .esp?:
            guard spiSize == 4 else { throw p.malformed("\(what) is for AH/ESP with a \(spiSize)-byte SPI, must be 4") }
        case nil:
            break
        }
        let spi = try p.take(spiSize, "\(what) SPI")
        var transforms: [WireTransform] = []
        var understood = protocolID != nil
        for index in stride(from: 1, through: count, by: 1) {
            let tWhat = "\(what) transform \(index)"
            let last = try p.u8("\(tWhat) last-substructure byte")
            let expected = index == count ? lastTransform : moreTransforms
            guard last == expected else {
                throw p.malformed("\(tWhat) of \(count) has last-substructure value \(last), must be \(expected)")
            }
            try p.skip(1, "\(tWhat) reserved byte")
            let length = Int(try p.u16("\(tWhat) length"))
            guard length >= 8 else { throw p.malformed("\(tWhat) length \(length), below the 8-byte minimum") }
            guard length - 4 <= p.remaining else {
                throw p.malformed("\(tWhat) length \(length) runs past its proposal (\(p.remaining + 4) bytes left)")
            }
            var t = try p.substructure(length - 4, tWhat)
            if let transform = try decodeTransform(&t, tWhat) { transforms.append(transform) } else { understood = false }
        }
        guard p.isAtEnd else { throw p.malformed("\(what) has \(p.remaining) bytes after its \(count) transforms") }
        guard understood, let protocolID else { return nil }
        return WireProposal(number: number, protocolID: protocolID, spi: spi, transforms: transforms)
    }

    /// One transform after its 4-byte header; nil for a transform type Sluice does not know.
    private static func decodeTransform(_ t: inout WireReader, _ what: String) throws(IKEDecodeError) -> WireTransform? {
        let rawType = try t.u8("\(what) type")
        try t.skip(1, "\(what) reserved byte")
        let id = try t.u16("\(what) ID")
        var keyLength: UInt16? = nil
        while !t.isAtEnd {
            let word = try t.u16("\(what) attribute type")
            let attribute = word & ~attributeTV
            if word & attributeTV != 0 {
                let value = try t.u16("\(what) attribute value")
                if attribute == keyLengthAttribute {
                    guard keyLength == nil else { throw t.malformed("\(what) has two Key Length attributes") }
                    keyLength = value
                }
            } else {
                // TLV: skipped by its own length; Key Length is defined as TV only (§3.3.5).
                guard attribute != keyLengthAttribute else { throw t.malformed("\(what) has a Key Length attribute in TLV form") }
                let length = Int(try t.u16("\(what) attribute length"))
                try t.skip(length, "\(what) attribute \(attribute) value")
            }
        }
        guard let type = TransformType(rawValue: rawType) else { return nil }
        return WireTransform(type: type, id: id, keyLength: keyLength)
    }

    static func encode(_ proposals: [WireProposal], into out: inout [UInt8]) {
        for (i, proposal) in proposals.enumerated() {
            let start = out.count
            out.append(i == proposals.count - 1 ? lastProposal : moreProposals)
            out.append(0)
            out.appendU16(0) // length, below
            out.append(proposal.number)
            out.append(proposal.protocolID.rawValue)
            out.append(wireU8(proposal.spi.count, "proposal SPI size"))
            out.append(wireU8(proposal.transforms.count, "proposal transform count"))
            out += proposal.spi
            for (j, transform) in proposal.transforms.enumerated() {
                out.append(j == proposal.transforms.count - 1 ? lastTransform : moreTransforms)
                out.append(0)
                out.appendU16(transform.keyLength == nil ? 8 : 12)
                out.append(transform.type.rawValue)
                out.append(0)
                out.appendU16(transform.id)
                if let bits = transform.keyLength {
                    out.appendU16(attributeTV | keyLengthAttribute)
                    out.appendU16(bits)
                }
            }
            out.setU16(wireU16(out.count - start, "proposal length"), at: start + 2)
        }
    }
}
