import Testing
@testable import SluiceCore

/// Key material is wiped where it lives, and the crypto contexts keep their own key, so
/// nothing in Swift memory needs to hold it once a transform exists.
@Suite("Key material wiping")
struct KeyWipeTests {
    @Test("wipe zeroes the buffer itself, also while another holder shares it (no copy-on-write escape)")
    func wipeShared() {
        let key = SecretBytes(TestPackets.pattern(36, seed: 5))
        let alias = key.bytes // shares the buffer
        #expect(alias.contains { $0 != 0 })
        key.wipe()
        #expect(key.count == 36)
        #expect(key.bytes.allSatisfy { $0 == 0 })
        #expect(alias.withUnsafeBufferPointer { p in p.allSatisfy { $0 == 0 } }, "the shared buffer was wiped, not a copy")
        var unique = TestPackets.pattern(8)
        unique.withUnsafeMutableBytes { _ in } // its own buffer
        wipeInPlace(unique)
        #expect(unique.allSatisfy { $0 == 0 })
    }

    @Test("a transform works the same after the key it was made from is wiped", arguments: Proposal.allCases)
    func contextsHoldTheKey(proposal: Proposal) throws {
        let reference = try OpenSSLTransform(proposal: proposal,
                                             keyMaterial: SecretBytes(TestPackets.pattern(proposal.keyMaterialLength, seed: 9)))
        let material = TestPackets.pattern(proposal.keyMaterialLength, seed: 9)
        let wiped = SecretBytes(material)
        let t = try OpenSSLTransform(proposal: proposal, keyMaterial: wiped)
        wiped.wipe()
        #expect(material.withUnsafeBufferPointer { p in p.allSatisfy { $0 == 0 } },
                "SecretBytes takes over the caller's buffer: wiped with it")
        let iv = proposal.ivLength, body = 32
        var a: [UInt8] = [0, 0, 0x10, 1, 0, 0, 0, 7] + [UInt8](repeating: 0x5A, count: iv) + TestPackets.pattern(body) + [UInt8](repeating: 0, count: 16)
        var b = a
        try withMutable(&a) { (p) throws(DropReason) in try t.seal(esp: p, payloadOffset: 8 + iv, payloadLength: body, seqHigh: 1) }
        try withMutable(&b) { (p) throws(DropReason) in try reference.seal(esp: p, payloadOffset: 8 + iv, payloadLength: body, seqHigh: 1) }
        #expect(a == b, "same key in the contexts: same ciphertext and ICV")
        try withMutable(&a) { (p) throws(DropReason) in try reference.open(esp: p, payloadOffset: 8 + iv, payloadLength: body, seqHigh: 1) }
        #expect(Array(a[(8 + iv)..<(8 + iv + body)]) == TestPackets.pattern(body))
    }
}
