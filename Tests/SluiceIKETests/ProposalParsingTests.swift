import Testing
@testable import SluiceIKE

/// strongSwan's proposal keywords (swanctl.conf) as Sluice reads them.
@Suite("Proposal keywords")
struct ProposalParsingTests {
    typealias PE = ProposalSpec.ParseError

    @Test("IKE proposals: encryption, integrity, PRF (explicit or from integrity), DH, in the order given")
    func ikeGood() throws {
        #expect(try ProposalSpec.parseIKE("aes128-sha256-modp2048") == [
            ProposalSpec(encryption: [.aesCBC(bits: 128)], integrity: [.hmacSHA256_128], prf: [.hmacSHA256], dh: [.modp2048]),
        ])
        #expect(try ProposalSpec.parseIKE("aes128gcm16-prfsha256-x25519") == [
            ProposalSpec(encryption: [.aesGCM16(bits: 128)], prf: [.hmacSHA256], dh: [.curve25519]),
        ])
        // Aliases, several of a kind, case, spaces around commas.
        #expect(try ProposalSpec.parseIKE("AES256GCM128-aes128gcm-prfsha384-curve25519-ecp256 , chacha20poly1305-prfsha512-ecp384") == [
            ProposalSpec(encryption: [.aesGCM16(bits: 256), .aesGCM16(bits: 128)], prf: [.hmacSHA384], dh: [.curve25519, .ecp256]),
            ProposalSpec(encryption: [.chacha20poly1305], prf: [.hmacSHA512], dh: [.ecp384]),
        ])
        // Every integrity algorithm brings its PRF when none is named, as strongSwan does...
        #expect(try ProposalSpec.parseIKE("aes256-aes-sha384-sha2_256-modp3072")[0].prf == [.hmacSHA384, .hmacSHA256])
        // ...but a named PRF replaces them.
        let spec = try ProposalSpec.parseIKE("aes256-sha512-prfsha256-ecp384")[0]
        #expect(spec.prf == [.hmacSHA256] && spec.integrity == [.hmacSHA512_256])
        #expect(spec.keywords == "aes256-sha512-prfsha256-ecp384")
    }

    @Test("ESP proposals: no PRF, optional DH (PFS), ESN defaults to no")
    func espGood() throws {
        #expect(try ProposalSpec.parseESP("aes128gcm16") == [ProposalSpec(encryption: [.aesGCM16(bits: 128)], esn: [false])])
        #expect(try ProposalSpec.parseESP("aes128-sha256-esn")[0].esn == [true])
        #expect(try ProposalSpec.parseESP("aes256gcm16-esn-noesn")[0].esn == [true, false])
        let pfs = try ProposalSpec.parseESP("chacha20poly1305-x25519-modp2048, aes256-sha256")
        #expect(pfs[0].dh == [.curve25519, .modp2048] && pfs[0].integrity.isEmpty)
        #expect(pfs[1] == ProposalSpec(encryption: [.aesCBC(bits: 256)], integrity: [.hmacSHA256_128]))
        for text in ["aes128gcm16-esn", "aes256-sha256-ecp256", "chacha20poly1305"] {
            #expect(try ProposalSpec.parseESP(ProposalSpec.parseESP(text)[0].keywords) == ProposalSpec.parseESP(text))
        }
    }

    @Test("unknown keywords are errors naming the keyword and the proposal")
    func unknown() {
        #expect(throws: PE("unknown algorithm 'aes999' in 'aes999-sha256-modp2048'")) { try ProposalSpec.parseIKE("aes999-sha256-modp2048") }
        #expect(throws: PE("unknown algorithm 'sha265' in 'aes128-sha265'")) { try ProposalSpec.parseESP("aes128gcm16,aes128-sha265") }
        #expect(throws: PE("unknown algorithm 'X25519 x' in 'aes128gcm16-prfsha256-X25519 x'")) {
            try ProposalSpec.parseIKE("aes128gcm16-prfsha256-X25519 x")
        }
    }

    @Test("strongSwan keywords Sluice does not implement are 'not supported', not unknown")
    func unsupported() {
        for (text, word) in [("aes192-sha256-modp2048", "aes192"), ("3des-sha1-modp1024", "3des"), ("aes128-md5-x25519", "md5"),
                             ("aes128-sha1-x25519", "sha1"), ("aes128-sha256-modp1024", "modp1024"), ("aes128ccm16-prfsha256-ecp521", "aes128ccm16"),
                             ("aes256gcm8-prfsha256-x25519", "aes256gcm8"), ("camellia256-sha256-x448", "camellia256")] {
            #expect(throws: PE("algorithm '\(word)' in '\(text)' is not supported by Sluice")) { try ProposalSpec.parseIKE(text) }
        }
        #expect(throws: PE("algorithm 'aes128ctr' in 'aes128ctr-sha256' is not supported by Sluice")) { try ProposalSpec.parseESP("aes128ctr-sha256") }
    }

    @Test("structural errors: AEAD with integrity, missing parts, wrong protocol, empty pieces")
    func structure() {
        let ike: [(String, String)] = [
            ("aes128gcm16-sha256-x25519", "'aes128gcm16-sha256-x25519': aes128gcm16 is an AEAD and takes no integrity algorithm ('sha256')"),
            ("aes128-x25519", "'aes128-x25519' needs an integrity algorithm (sha256, sha384, sha512) for aes128"),
            ("aes128gcm16-x25519", "'aes128gcm16-x25519' needs a PRF (prfsha256, prfsha384, prfsha512) with an AEAD"),
            ("aes128-sha256", "'aes128-sha256' needs a key exchange group (x25519, ecp256, ecp384, modp2048, modp3072)"),
            ("sha256-prfsha256-x25519", "'sha256-prfsha256-x25519' names no encryption algorithm"),
            ("aes128-aes256gcm16-sha256-x25519", "'aes128-aes256gcm16-sha256-x25519' mixes AEAD (aes256gcm16) and non-AEAD (aes128) encryption"),
            ("aes128-sha256-x25519-esn", "'aes128-sha256-x25519-esn': 'esn' is for ESP proposals only"),
            ("aes128--sha256-x25519", "empty algorithm in 'aes128--sha256-x25519'"),
            ("aes128-sha256-x25519,", "empty IKE proposal in 'aes128-sha256-x25519,'"),
            ("  ", "empty IKE proposal list"),
        ]
        for (text, message) in ike {
            #expect(throws: PE(message)) { try ProposalSpec.parseIKE(text) }
        }
        let esp: [(String, String)] = [
            ("aes128gcm16-prfsha256", "'aes128gcm16-prfsha256': 'prfsha256' is a PRF, for IKE proposals only"),
            ("aes128-sha384", "'aes128-sha384': 'sha384' is not supported for ESP by Sluice (its ESP has HMAC-SHA-256-128 only)"),
            ("aes256gcm16-sha2_256", "'aes256gcm16-sha2_256': aes256gcm16 is an AEAD and takes no integrity algorithm ('sha2_256')"),
            ("aes256", "'aes256' needs an integrity algorithm (sha256, sha384, sha512) for aes256"),
            ("", "empty ESP proposal list"),
        ]
        for (text, message) in esp {
            #expect(throws: PE(message)) { try ProposalSpec.parseESP(text) }
        }
    }

    @Test("'default' expands to strongSwan 5.9's defaults, less what Sluice lacks")
    func defaults() throws {
        let ike = try ProposalSpec.parseIKE("default")
        #expect(ike.map(\.keywords) == [
            "aes128-aes256-sha256-sha384-sha512-prfsha256-prfsha384-prfsha512-x25519-ecp256-ecp384-modp3072-modp2048",
            "aes128gcm16-aes256gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512-x25519-ecp256-ecp384-modp3072-modp2048",
        ])
        #expect(try ProposalSpec.parseESP("default").map(\.keywords) == ["aes128-aes256-sha256", "aes128gcm16-aes256gcm16"])
        #expect(try ProposalSpec.parseIKE("aes128gcm16-prfsha256-x25519, DEFAULT").count == 3)
    }

    @Test("the 'default' expansion equals what charon 5.9.8 configured, filtered to Sluice's algorithms")
    func defaultsMatchStrongSwan() throws {
        let logged = try CryptoVectors.strongSwan().object("default_proposals")
        let ike = StrongSwanNames.specs(try logged.text("ike"))
        #expect(ike.count == 2)
        #expect(try ProposalSpec.parseIKE("default") == ike)
        // ESP: Sluice's data plane has HMAC-SHA-256 only.
        var esp = StrongSwanNames.specs(try logged.text("esp"))
        for i in esp.indices { esp[i].integrity.removeAll { $0 != .hmacSHA256_128 } }
        #expect(try ProposalSpec.parseESP("default") == esp)
    }
}
