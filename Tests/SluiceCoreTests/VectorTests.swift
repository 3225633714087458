import CSluiceCrypto
import Testing
@testable import SluiceCore

/// Reproduces every published vector in ../shared/vectors/esp-vectors.json that applies
/// to what Sluice implements. The list of expected ids is explicit, so a vector that
/// silently stops applying fails the suite too.
@Suite("Published ESP vectors")
struct VectorTests {
    static let gcmIDs = (1...17).map { String(format: "mcgrew-gcm-test-01-tc%02d", $0) }

    @Test("vector file is present and complete")
    func vectorFilePresent() throws {
        let all = try Vectors.load()
        #expect(all.count == 54, "expected 54 vectors in \(Vectors.path)")
        let ids = Set(all.compactMap { $0.string("id") })
        for id in Self.gcmIDs + ["rfc7634-appendix-a", "rfc3602-case5", "rfc4231-tc7"] { #expect(ids.contains(id)) }
    }

    @Test("AES-GCM ESP packets (draft-mcgrew-gcm-test-01), sealed and opened byte for byte")
    func gcmPackets() throws {
        let all = try Vectors.load().filter { ($0.string("algorithm") ?? "").hasPrefix("aes-gcm-16") && $0.string("kind") == "esp_packet" }
        #expect(all.count == 16)
        var esnSeen = 0
        for v in all {
            let id = v.string("id")!
            let key = try v.hex("enc_key"), salt = try v.hex("salt"), esp = try v.hex("esp_packet")
            let plain = try v.hex("cipher_input"), icv = try v.hex("icv")
            let esn = (v["esn"] as? Bool) ?? false
            let seqHigh: UInt32? = esn ? UInt32(v.string("seq_hi").flatMap { UInt32($0, radix: 16) } ?? 0xDEAD_BEEF) : nil
            if esn { esnSeen += 1 }
            // AES-192-GCM has no proposal keyword here but the transform handles its key.
            let t = try OpenSSLTransform(proposal: key.count == 32 ? .aes256gcm16 : .aes128gcm16,
                                         cipherKind: SLUICE_CIPHER_AES_GCM, encryptionKey: key[...], saltOrIntegrityKey: salt[...])
            let ctLen = esp.count - 16 - 16
            #expect(ctLen == plain.count, "\(id): length")
            // Open the published packet.
            var opened = esp
            try withMutable(&opened) { (p) throws(DropReason) in
                try t.open(esp: p, payloadOffset: 16, payloadLength: ctLen, seqHigh: seqHigh)
            }
            #expect(Array(opened[16..<(16 + ctLen)]) == plain, "\(id): decrypt")
            // Seal the plaintext and compare with the published packet.
            var sealed = Array(esp[0..<16]) + plain + [UInt8](repeating: 0, count: 16)
            try withMutable(&sealed) { (p) throws(DropReason) in
                try t.seal(esp: p, payloadOffset: 16, payloadLength: ctLen, seqHigh: seqHigh)
            }
            #expect(sealed == esp, "\(id): encrypt")
            #expect(Array(sealed.suffix(16)) == icv, "\(id): ICV")
            // One flipped ciphertext bit must fail authentication.
            var bad = esp
            bad[20] ^= 0x01
            #expect(throws: DropReason.icvMismatch) {
                try withMutable(&bad) { (p) throws(DropReason) in
                    try t.open(esp: p, payloadOffset: 16, payloadLength: ctLen, seqHigh: seqHigh)
                }
            }
        }
        #expect(esnSeen >= 5, "the GCM set carries ESN cases")
    }

    @Test("ChaCha20-Poly1305 (RFC 7634 App. A): the whole datagram through the processor")
    func chachaDatagram() throws {
        let v = try #require(try Vectors.load().first { $0.string("id") == "rfc7634-appendix-a" })
        let outer = try v.hex("outer_packet"), inner = try v.hex("original_packet"), esp = try v.hex("esp_packet")
        let key = SecretBytes(try v.hex("key"))
        let cfg = SAConfig(name: "rfc7634", direction: .inbound, spi: 0x01020304, mode: .tunnel,
                           local: IPAddress("203.0.113.5")!, remote: IPAddress("203.0.113.153")!,
                           proposal: .chacha20poly1305, keyMaterial: key)
        let sa = try SecurityAssociation(config: cfg)
        let sel = TrafficSelector(src: IPPrefix("198.51.100.5/32"), dst: IPPrefix("192.0.2.5/32"))
        let db = try SecurityDatabase(policies: [Policy(direction: .inbound, selector: sel, action: .protect(sa: "rfc7634"))],
                                      associations: [sa])
        var buf = PacketBuffer(outer)
        #expect(PacketProcessor.process(&buf, database: db, context: .init()) == .opened)
        #expect(buf.bytes == inner)
        // The same packet again is a replay.
        var again = PacketBuffer(outer)
        #expect(PacketProcessor.process(&again, database: db, context: .init()) == .drop(.replay))
        // Sealing the plaintext with the published IV reproduces the ESP bytes.
        let t = try OpenSSLTransform(proposal: .chacha20poly1305, keyMaterial: key)
        let plain = try v.hex("cipher_input")
        var sealed = Array(esp[0..<16]) + plain + [UInt8](repeating: 0, count: 16)
        try withMutable(&sealed) { (p) throws(DropReason) in
            try t.seal(esp: p, payloadOffset: 16, payloadLength: plain.count, seqHigh: nil)
        }
        #expect(sealed == esp)
    }

    @Test("AES-CBC ESP packets (RFC 3602 cases 5-8) through the cipher layer, trailer checked")
    func cbcPackets() throws {
        let ids = (5...8).map { "rfc3602-case\($0)" }
        let all = try Vectors.load().filter { ids.contains($0.string("id") ?? "") }
        #expect(all.count == 4)
        for v in all {
            let id = v.string("id")!
            let key = try v.hex("key"), iv = try v.hex("iv"), esp = try v.hex("esp_packet"), plain = try v.hex("cipher_input")
            let ct = Array(esp[24...])
            #expect(Array(esp[8..<24]) == iv, "\(id): IV follows SPI and seq")
            #expect(CryptoPrimitives.aesCBC(key: key, iv: iv, data: ct, encrypt: false) == plain, "\(id): decrypt")
            #expect(CryptoPrimitives.aesCBC(key: key, iv: iv, data: plain, encrypt: true) == ct, "\(id): encrypt")
            // The trailer is the RFC 4303 self-describing padding Sluice verifies on open.
            let padLen = Int(plain[plain.count - 2])
            #expect(padLen == v.int("pad_length"), "\(id): pad length")
            #expect(Int(plain[plain.count - 1]) == v.int("next_header"), "\(id): next header")
            let padBytes: [UInt8] = Array(plain[(plain.count - 2 - padLen)..<(plain.count - 2)])
            let expectedPad: [UInt8] = (0..<padLen).map { UInt8($0 + 1) }
            #expect(padBytes == expectedPad)
            let outerPacket = try v.hex("outer_packet")
            let h = try parseHeader(outerPacket)
            #expect(h.proto == IPProto.esp && h.totalLength == outerPacket.count, "\(id): outer header parses")
            #expect(outerPacket.withUnsafeBytes { IPv4Header.checksumIsValid($0, headerLength: 20) })
        }
    }

    @Test("AES-CBC primitive (RFC 3602 cases 1-4)")
    func cbcPrimitive() throws {
        let all = try Vectors.load().filter { ($0.string("id") ?? "").hasPrefix("rfc3602-case") && $0.string("kind") == "cipher_primitive" }
        #expect(all.count == 4)
        for v in all {
            let key = try v.hex("key"), iv = try v.hex("iv"), pt = try v.hex("plaintext"), ct = try v.hex("ciphertext")
            #expect(CryptoPrimitives.aesCBC(key: key, iv: iv, data: pt, encrypt: true) == ct, "\(v.string("id")!)")
            #expect(CryptoPrimitives.aesCBC(key: key, iv: iv, data: ct, encrypt: false) == pt)
        }
    }

    @Test("HMAC-SHA-256 (RFC 4231 1-7, RFC 4868 AUTH256 1-4) and its 128-bit ESP truncation")
    func hmacSHA256() throws {
        let all = try Vectors.load().filter {
            $0.string("kind") == "integrity_primitive" && ($0.string("hash") ?? "") == "sha256"
        }
        #expect(all.count == 11)
        for v in all {
            let id = v.string("id")!
            let mac = try #require(CryptoPrimitives.hmacSHA256(key: try v.hex("key"), data: try v.hex("data")))
            let icv = try v.hex("icv")
            #expect(Array(mac.prefix(icv.count)) == icv, "\(id)")
            if let full = v.string("mac_full"), let f = Hex.decode(full) { #expect(mac == f, "\(id): full MAC") }
        }
    }
}
