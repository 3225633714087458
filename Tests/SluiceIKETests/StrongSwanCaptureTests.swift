import Foundation
import Testing
@testable import SluiceIKE
import SluiceCore

/// strongSwan 5.9.8's IKE_SA_INIT request, captured from the wire by
/// tests/fixtures/ike/capture-strongswan.sh (proposals aes128gcm16-prfsha256-x25519 and
/// aes128-sha256-modp2048). The expected values follow tshark's dissection of the same
/// bytes, committed next to them (strongswan-ike-sa-init.txt).
@Suite("IKE codec against a real strongSwan IKE_SA_INIT")
struct StrongSwanCaptureTests {
    static var fixture: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("tests/fixtures/ike/strongswan-ike-sa-init.hex").path
    }

    static func load() throws -> [UInt8] {
        let text = try String(contentsOfFile: fixture, encoding: .utf8)
        guard let bytes = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), !bytes.isEmpty else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: fixture])
        }
        return bytes
    }

    @Test("decodes into the fields tshark shows, and re-encodes to the same bytes")
    func decodeAndReencode() throws {
        let bytes = try Self.load()
        #expect(bytes.count == 276)
        let message = try IKEMessage.decode(bytes)
        let h = message.header
        #expect(h.spiI == 0x9512_90b9_2078_fb49 && h.spiR == 0)
        #expect(h.exchange == .ikeSAInit && h.isInitiator && !h.isResponse && h.messageID == 0 && h.length == 276)
        #expect(h.nextPayload == PayloadType.sa)
        #expect(message.payloads.map(\.type) == [33, 34, 40, 41, 41, 41, 41, 41])

        guard case let .sa(proposals) = message.payloads[0] else { Issue.record("first payload is not SA"); return }
        #expect(proposals == [
            WireProposal(number: 1, protocolID: .ike, spi: [], transforms: [
                WireTransform(type: .encryption, id: 20, keyLength: 128),   // AES-GCM-16, 128 bits
                WireTransform(type: .prf, id: 5),                           // PRF_HMAC_SHA2_256
                WireTransform(type: .keyExchange, id: 31)]),                // Curve25519
            WireProposal(number: 2, protocolID: .ike, spi: [], transforms: [
                WireTransform(type: .encryption, id: 12, keyLength: 128),   // ENCR_AES_CBC, 128 bits
                WireTransform(type: .integrity, id: 12),                    // AUTH_HMAC_SHA2_256_128
                WireTransform(type: .prf, id: 5),
                WireTransform(type: .keyExchange, id: 14)]),                // 2048-bit MODP
        ])

        guard case let .ke(group, keyData) = message.payloads[1] else { Issue.record("second payload is not KE"); return }
        #expect(group == 31 && keyData.count == 32)
        #expect(keyData == hex("a671388f8a47a28a5de652a4b53e915edc63b1715ddfaec89041e9ea73123d45"))
        guard case let .nonce(nonce) = message.payloads[2] else { Issue.record("third payload is not a Nonce"); return }
        #expect(nonce.count == 32 && nonce.prefix(4) == [0x25, 0xbf, 0xeb, 0xd4])

        let notifies = message.payloads.compactMap { p -> NotifyPayload? in if case let .notify(n) = p { return n }; return nil }
        #expect(notifies.map(\.type) == [NotifyType.natDetectionSourceIP, NotifyType.natDetectionDestinationIP,
                                         NotifyType.ikev2FragmentationSupported, NotifyType.signatureHashAlgorithms, 16406])
        #expect(notifies.compactMap { NotifyType.name($0.type) } == ["NAT_DETECTION_SOURCE_IP", "NAT_DETECTION_DESTINATION_IP",
                                                                   "IKEV2_FRAGMENTATION_SUPPORTED", "SIGNATURE_HASH_ALGORITHMS",
                                                                   "REDIRECT_SUPPORTED"])
        #expect(notifies.allSatisfy { $0.protocolID == 0 && $0.spi.isEmpty })
        #expect(notifies[0].data == hex("f81bbedc563a2980e455c630044b8f646893dea7"))
        #expect(notifies[1].data == hex("bcd3d4a5850fa62e58d942549b3724e0833a85bb"))
        #expect(notifies[2].data.isEmpty && notifies[4].data.isEmpty)
        #expect(notifies[3].data == [0, 2, 0, 3, 0, 4, 0, 5])   // SHA2-256, SHA2-384, SHA2-512, Identity

        #expect(message.encode() == bytes)
    }
}
