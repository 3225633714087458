import SluiceCore
import Testing
@testable import SluiceIKE

/// SA payload proposals: building them, choosing one as responder, reading the answer as initiator.
@Suite("Proposal selection")
struct SelectionTests {
    static func t(_ type: TransformType, _ id: UInt16, _ bits: UInt16? = nil) -> WireTransform { WireTransform(type: type, id: id, keyLength: bits) }
    static func ike(_ text: String) throws -> [ProposalSpec] { try ProposalSpec.parseIKE(text) }
    static func esp(_ text: String) throws -> [ProposalSpec] { try ProposalSpec.parseESP(text) }
    static let espSPI: [UInt8] = [0xc0, 0xff, 0xee, 0x01]

    @Test("wire proposals: key length on AES, PRFs and no ESN for IKE, always an ESN for ESP")
    func wireProposals() throws {
        let ikeWire = try Self.ike("aes128-aes256-sha256-prfsha384-x25519-ecp256")[0].wireProposal(number: 1, protocolID: .ike, spi: [])
        #expect(ikeWire == WireProposal(number: 1, protocolID: .ike, spi: [], transforms: [
            Self.t(.encryption, 12, 128), Self.t(.encryption, 12, 256), Self.t(.prf, 6), Self.t(.integrity, 12),
            Self.t(.keyExchange, 31), Self.t(.keyExchange, 19),
        ]))
        let espWire = try Self.esp("aes256gcm16-chacha20poly1305-modp2048")[0].wireProposal(number: 2, protocolID: .esp, spi: Self.espSPI)
        #expect(espWire.transforms == [Self.t(.encryption, 20, 256), Self.t(.encryption, 28), Self.t(.keyExchange, 14), Self.t(.esn, 0)])
        #expect(espWire.spi == Self.espSPI && espWire.number == 2)
        let noDH = try Self.esp("aes128-sha256-esn-noesn-x25519")[0].wireProposal(number: 1, protocolID: .esp, spi: Self.espSPI,
                                                                                 includeKeyExchange: false)
        #expect(noDH.transforms == [Self.t(.encryption, 12, 128), Self.t(.integrity, 12), Self.t(.esn, 1), Self.t(.esn, 0)])
    }

    @Test("the configured order wins over the offered order, across and within proposals")
    func preference() throws {
        let configured = try Self.ike("aes256gcm16-prfsha384-prfsha256-ecp384-x25519, aes128-sha256-x25519")
        let offered = [
            try Self.ike("aes128-sha256-x25519")[0].wireProposal(number: 1, protocolID: .ike, spi: []),
            try Self.ike("aes128gcm16-aes256gcm16-prfsha256-prfsha384-x25519-ecp384")[0].wireProposal(number: 2, protocolID: .ike, spi: []),
        ]
        let chosen = try #require(NegotiatedAlgorithms.select(offered: offered, configured: configured, protocolID: .ike))
        #expect(chosen.algorithms == NegotiatedAlgorithms(encryption: .aesGCM16(bits: 256), prf: .hmacSHA384, dh: .ecp384))
        #expect(chosen.proposal == WireProposal(number: 2, protocolID: .ike, spi: [], transforms: [
            Self.t(.encryption, 20, 256), Self.t(.prf, 6), Self.t(.keyExchange, 20),
        ]))
        // The initiator reads the answer back to the same algorithms.
        #expect(try NegotiatedAlgorithms(chosen: chosen.proposal, offered: offered) == chosen.algorithms)
        // Only the second configured proposal fits the first offer.
        let second = try #require(ProposalSpec.select(offered: [offered[0]], configured: configured, protocolID: .ike))
        #expect(second.algorithms == NegotiatedAlgorithms(encryption: .aesCBC(bits: 128), integrity: .hmacSHA256_128,
                                                          prf: .hmacSHA256, dh: .curve25519))
        #expect(second.proposal.number == 1)
    }

    @Test("no common algorithm, protocol or SPI size: no match")
    func noMatch() throws {
        let configured = try Self.ike("aes128gcm16-prfsha256-x25519")
        let offers = [
            try Self.ike("aes256gcm16-prfsha256-x25519")[0].wireProposal(number: 1, protocolID: .ike, spi: []),
            try Self.ike("aes128gcm16-prfsha512-x25519")[0].wireProposal(number: 2, protocolID: .ike, spi: []),
            try Self.ike("aes128gcm16-prfsha256-ecp256")[0].wireProposal(number: 3, protocolID: .ike, spi: []),
            try Self.ike("aes128gcm16-prfsha256-x25519")[0].wireProposal(number: 4, protocolID: .esp, spi: Self.espSPI),
            try Self.ike("aes128gcm16-prfsha256-x25519")[0].wireProposal(number: 5, protocolID: .ike, spi: [1, 2, 3, 4]),
        ]
        #expect(NegotiatedAlgorithms.select(offered: offers, configured: configured, protocolID: .ike) == nil)
        #expect(NegotiatedAlgorithms.select(offered: [], configured: configured, protocolID: .ike) == nil)
        // An IKE rekey offer carries an 8-byte SPI, which is fine.
        let rekey = try Self.ike("aes128gcm16-prfsha256-x25519")[0].wireProposal(number: 1, protocolID: .ike, spi: [UInt8](repeating: 9, count: 8))
        #expect(NegotiatedAlgorithms.select(offered: [rekey], configured: configured, protocolID: .ike)?.proposal.spi == rekey.spi)
    }

    @Test("unknown transform ids, AES-192, missing or stray key lengths never match; known ones beside them do")
    func unknownIDs() throws {
        let configured = try Self.ike("aes128-aes256-sha256-x25519, chacha20poly1305-prfsha256-x25519")
        func offer(_ ts: [WireTransform]) -> WireProposal { WireProposal(number: 1, protocolID: .ike, spi: [], transforms: ts) }
        let rest = [Self.t(.prf, 5), Self.t(.integrity, 12), Self.t(.keyExchange, 31)]
        // Only ids or attributes Sluice does not implement: no match.
        for enc in [Self.t(.encryption, 99, 128), Self.t(.encryption, 12, 192), Self.t(.encryption, 12), Self.t(.encryption, 28, 256)] {
            #expect(NegotiatedAlgorithms.select(offered: [offer([enc] + rest)], configured: configured, protocolID: .ike) == nil, "\(enc)")
        }
        #expect(NegotiatedAlgorithms.select(offered: [offer([Self.t(.encryption, 12, 128), Self.t(.prf, 99), Self.t(.integrity, 12), Self.t(.keyExchange, 31)])],
                                            configured: configured, protocolID: .ike) == nil)
        #expect(NegotiatedAlgorithms.select(offered: [offer([Self.t(.encryption, 12, 128), Self.t(.prf, 5), Self.t(.integrity, 12), Self.t(.keyExchange, 2)])],
                                            configured: configured, protocolID: .ike) == nil)
        #expect(NegotiatedAlgorithms.select(offered: [offer([Self.t(.encryption, 12, 128), Self.t(.prf, 5), Self.t(.integrity, 12, 128), Self.t(.keyExchange, 31)])],
                                            configured: configured, protocolID: .ike) == nil)
        // Unknown ones beside a known one of the same type: the known one is chosen (RFC 7296 §3.3.6).
        let mixed = offer([Self.t(.encryption, 99), Self.t(.encryption, 12, 192), Self.t(.encryption, 12, 256), Self.t(.prf, 99)] + rest)
        let m = try #require(NegotiatedAlgorithms.select(offered: [mixed], configured: configured, protocolID: .ike))
        #expect(m.algorithms.encryption == .aesCBC(bits: 256))
        #expect(m.proposal.transforms == [Self.t(.encryption, 12, 256), Self.t(.prf, 5), Self.t(.integrity, 12), Self.t(.keyExchange, 31)])
        // A transform type that does not belong to IKE (ESN) makes the proposal unacceptable.
        #expect(NegotiatedAlgorithms.select(offered: [offer([Self.t(.encryption, 12, 256)] + rest + [Self.t(.esn, 0)])],
                                            configured: configured, protocolID: .ike) == nil)
        // A missing mandatory type (no DH in IKE) likewise.
        #expect(NegotiatedAlgorithms.select(offered: [offer([Self.t(.encryption, 12, 256), Self.t(.prf, 5), Self.t(.integrity, 12)])],
                                            configured: configured, protocolID: .ike) == nil)
    }

    @Test("ESP: PFS on both sides or neither (NONE allows either), IKE_AUTH skips DH, ESN in configured order")
    func esp() throws {
        func offer(_ ts: [WireTransform]) -> WireProposal { WireProposal(number: 3, protocolID: .esp, spi: Self.espSPI, transforms: ts) }
        let gcm = Self.t(.encryption, 20, 128), noESN = Self.t(.esn, 0), esnOn = Self.t(.esn, 1)
        let plain = try Self.esp("aes128gcm16"), pfs = try Self.esp("aes128gcm16-x25519")
        #expect(NegotiatedAlgorithms.select(offered: [offer([gcm, noESN])], configured: plain, protocolID: .esp)?.algorithms
                == NegotiatedAlgorithms(encryption: .aesGCM16(bits: 128)))
        #expect(NegotiatedAlgorithms.select(offered: [offer([gcm, Self.t(.keyExchange, 31), noESN])], configured: plain, protocolID: .esp) == nil)
        let either = offer([gcm, Self.t(.keyExchange, 31), Self.t(.keyExchange, 0), noESN])
        let none = try #require(NegotiatedAlgorithms.select(offered: [either], configured: plain, protocolID: .esp))
        #expect(none.algorithms.dh == nil && none.proposal.transforms == [gcm, noESN])
        #expect(try NegotiatedAlgorithms(chosen: none.proposal, offered: [either]).dh == nil)
        #expect(NegotiatedAlgorithms.select(offered: [either], configured: pfs, protocolID: .esp)?.algorithms.dh == .curve25519)
        #expect(NegotiatedAlgorithms.select(offered: [offer([gcm, noESN])], configured: pfs, protocolID: .esp) == nil)
        let inAuth = try #require(NegotiatedAlgorithms.select(offered: [offer([gcm, noESN])], configured: pfs, protocolID: .esp, skipKeyExchange: true))
        #expect(inAuth.algorithms.dh == nil && inAuth.proposal.spi == Self.espSPI && inAuth.proposal.number == 3)
        // ESN: the configured order decides; an ESP offer without ESN is not acceptable.
        let both = offer([gcm, noESN, esnOn])
        #expect(NegotiatedAlgorithms.select(offered: [both], configured: try Self.esp("aes128gcm16-esn-noesn"), protocolID: .esp)?.algorithms.esn == true)
        #expect(NegotiatedAlgorithms.select(offered: [both], configured: plain, protocolID: .esp)?.algorithms.esn == false)
        #expect(NegotiatedAlgorithms.select(offered: [offer([gcm, noESN])], configured: try Self.esp("aes128gcm16-esn"), protocolID: .esp) == nil)
        #expect(NegotiatedAlgorithms.select(offered: [offer([gcm])], configured: plain, protocolID: .esp) == nil)
        // ESP has no PRF; SPIs are 4 bytes.
        #expect(NegotiatedAlgorithms.select(offered: [offer([gcm, Self.t(.prf, 5), noESN])], configured: plain, protocolID: .esp) == nil)
        #expect(NegotiatedAlgorithms.select(offered: [WireProposal(number: 1, protocolID: .esp, spi: [], transforms: [gcm, noESN])],
                                            configured: plain, protocolID: .esp) == nil)
        // CBC needs integrity; an AEAD offer listing integrity still matches without it.
        #expect(NegotiatedAlgorithms.select(offered: [offer([Self.t(.encryption, 12, 128), noESN])], configured: try Self.esp("aes128-sha256"),
                                            protocolID: .esp) == nil)
        let aeadWithInteg = try #require(NegotiatedAlgorithms.select(offered: [offer([gcm, Self.t(.integrity, 12), noESN])], configured: plain, protocolID: .esp))
        #expect(aeadWithInteg.proposal.transforms == [gcm, noESN])
    }

    @Test("the initiator refuses answers with two transforms of a type, unoffered ones, or missing types")
    func initiatorChecks() throws {
        let offered = [
            try Self.ike("aes128-aes256-sha256-sha384-x25519-ecp256")[0].wireProposal(number: 1, protocolID: .ike, spi: []),
            try Self.ike("aes128gcm16-prfsha256-x25519")[0].wireProposal(number: 2, protocolID: .ike, spi: []),
        ]
        func answer(_ n: UInt8, _ ts: [WireTransform]) -> WireProposal { WireProposal(number: n, protocolID: .ike, spi: [], transforms: ts) }
        let good = answer(1, [Self.t(.encryption, 12, 256), Self.t(.prf, 6), Self.t(.integrity, 13), Self.t(.keyExchange, 19)])
        #expect(try NegotiatedAlgorithms(chosen: good, offered: offered)
                == NegotiatedAlgorithms(encryption: .aesCBC(bits: 256), integrity: .hmacSHA384_192, prf: .hmacSHA384, dh: .ecp256))
        let bad: [(WireProposal, String)] = [
            (answer(1, [Self.t(.encryption, 12, 256), Self.t(.encryption, 12, 128), Self.t(.prf, 6), Self.t(.integrity, 13), Self.t(.keyExchange, 19)]),
             "the responder's proposal #1 (ike) has more than one encryption transform"),
            (answer(1, [Self.t(.encryption, 20, 128), Self.t(.prf, 5), Self.t(.keyExchange, 31)]),
             "the responder's proposal #1 (ike) chose encryption transform 20 that was not offered"),
            (answer(3, [Self.t(.encryption, 20, 128), Self.t(.prf, 5), Self.t(.keyExchange, 31)]),
             "the responder's proposal #3 (ike) answers no proposal that was offered"),
            (answer(2, [Self.t(.encryption, 20, 128), Self.t(.keyExchange, 31)]), "the responder's proposal #2 (ike) has no PRF"),
            (answer(2, [Self.t(.encryption, 20, 128), Self.t(.prf, 5)]),
             "the responder's proposal #2 (ike) has no DH group, but one was required"),
            (answer(1, [Self.t(.encryption, 12, 256), Self.t(.prf, 6), Self.t(.keyExchange, 19)]),
             "the responder's proposal #1 (ike) has no integrity algorithm for aes256"),
            (answer(2, [Self.t(.encryption, 20, 128), Self.t(.prf, 5), Self.t(.keyExchange, 31), Self.t(.esn, 0)]),
             "the responder's proposal #2 (ike) has an unexpected esn transform"),
        ]
        for (a, message) in bad {
            #expect(throws: NegotiationError(message)) { try NegotiatedAlgorithms(chosen: a, offered: offered) }
        }
        // ESP answers need the ESN transform and a 4-byte SPI.
        let espOffer = [try Self.esp("aes256gcm16")[0].wireProposal(number: 1, protocolID: .esp, spi: Self.espSPI)]
        let espAnswer = WireProposal(number: 1, protocolID: .esp, spi: [9, 9, 9, 9], transforms: [Self.t(.encryption, 20, 256)])
        #expect(throws: NegotiationError("the responder's proposal #1 (esp) has no ESN transform")) {
            try NegotiatedAlgorithms(chosen: espAnswer, offered: espOffer)
        }
        var withESN = espAnswer
        withESN.transforms.append(Self.t(.esn, 0))
        #expect(try NegotiatedAlgorithms(chosen: withESN, offered: espOffer).espProposal == .aes256gcm16)
        withESN.spi = [1, 2]
        #expect(throws: NegotiationError("the responder's proposal #1 (esp) has a 2-byte SPI")) {
            try NegotiatedAlgorithms(chosen: withESN, offered: espOffer)
        }
    }

    @Test("negotiated ESP algorithms map to the data plane's transforms where it has them")
    func dataPlaneMapping() {
        #expect(NegotiatedAlgorithms(encryption: .aesGCM16(bits: 128)).espProposal == .aes128gcm16)
        #expect(NegotiatedAlgorithms(encryption: .chacha20poly1305, esn: true).espProposal == .chacha20poly1305)
        #expect(NegotiatedAlgorithms(encryption: .aesCBC(bits: 256), integrity: .hmacSHA256_128).espProposal == .aes256sha256)
        #expect(NegotiatedAlgorithms(encryption: .aesCBC(bits: 256), integrity: .hmacSHA512_256).espProposal == nil)
    }
}
