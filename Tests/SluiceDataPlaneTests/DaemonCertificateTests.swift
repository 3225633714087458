import Foundation
import Testing
import SluiceConfig
import SluiceCore
import SluiceIKE
import SluiceTestFixtures
@testable import SluiceDataPlane

/// `auth = "pubkey"` at start: Daemon.profiles reads the certificate, key and CA files into
/// the agent's profiles, and every problem names its file (and never shows the key).
@Suite("Daemon: certificate files")
struct DaemonCertificateTests {
    final class Dir {
        let path: String
        init() throws {
            path = NSTemporaryDirectory() + "sluice-daemon-pki-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        @discardableResult
        func write(_ name: String, _ text: String, mode: mode_t = 0o644) throws -> String {
            let p = path + "/" + name
            try text.write(toFile: p, atomically: false, encoding: .utf8)
            chmod(p, mode)
            return p
        }
    }

    /// A config with one pubkey connection; `extra` lines go into the [[connection]].
    func profiles(_ dir: Dir, cert: String = TestPKI.gwAP256Cert, key: String = TestPKI.gwAP256Key, ca: String = TestPKI.caCert,
                  extra: String = "") throws -> [ConnectionProfile] {
        try dir.write("gw-a.pem", cert)
        try dir.write("gw-a.key", key, mode: 0o600)
        try dir.write("ca.pem", ca)
        let text = """
            [[connection]]
            name = "gw-b"
            local_addrs = ["192.0.2.1"]
            remote_addrs = ["192.0.2.2"]
            auth = "pubkey"
            local_cert = "gw-a.pem"
            local_key = "gw-a.key"
            ca_certs = ["ca.pem"]
            \(extra)

            [[connection.child]]
            name = "net"
            local_ts = ["198.51.100.0/24"]
            remote_ts = ["203.0.113.0/24"]

            """
        return try Daemon.profiles(try ConfigLoader.parse(text, path: dir.path + "/sluice.toml"))
    }

    func failure(_ dir: Dir, cert: String = TestPKI.gwAP256Cert, key: String = TestPKI.gwAP256Key, ca: String = TestPKI.caCert,
                 extra: String = "") -> String {
        do {
            _ = try profiles(dir, cert: cert, key: key, ca: ca, extra: extra)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func certificatesBecomeTheProfilesCredentials() throws {
        let dir = try Dir()
        let p = try #require(try profiles(dir, extra: "remote_id = \"CN=gw-b, O=Sluice Test\"").first)
        let c = try #require(p.certificates)
        #expect(c.certificate.subject.description == "CN=gw-a, O=Sluice Test")
        #expect(c.privateKey.kind == .ecdsa(bits: 256))
        #expect(c.authorities.certificates.map(\.subject.description) == ["C=CH, O=Sluice Test, CN=Sluice Test CA"])
        #expect(p.localID == nil, "the agent sends the subject DN")
        #expect(p.remoteID == IDPayload(type: .derDN, data: try DistinguishedName(parsing: "CN=gw-b, O=Sluice Test").der))
        // local_id may name the subject or a subjectAltName.
        #expect(try profiles(dir, extra: "local_id = \"gw-a.example\"").first?.localID == (try IDPayload.parse("gw-a.example")))
        #expect(try profiles(dir, extra: "local_id = \"cn=gw-a, o=sluice test\"").first?.localID?.type == .derDN)
        // A chain in local_cert: the first is ours, the rest go along as intermediates.
        let chained = try #require(try profiles(dir, cert: TestPKI.gwAP256Cert + "\n" + TestPKI.caCert).first?.certificates)
        #expect(chained.intermediates.count == 1)
    }

    @Test func everyProblemNamesItsFile() throws {
        let dir = try Dir()
        let at = "\(dir.path)/sluice.toml:1: connection gw-b"
        #expect(failure(dir, cert: "not a certificate") == "\(at): local_cert \(dir.path)/gw-a.pem: holds no certificate (no PEM \"BEGIN CERTIFICATE\" block)")
        #expect(failure(dir, ca: "") == "\(at): ca_certs \(dir.path)/ca.pem: is empty")
        #expect(failure(dir, ca: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                == "\(at): ca_certs \(dir.path)/ca.pem: not a PEM or DER X.509 certificate")
        #expect(failure(dir, ca: TestPKI.gwAP256Cert)
                == "\(at): ca_certs \(dir.path)/ca.pem: \"CN=gw-a, O=Sluice Test\" is not a CA certificate (no basicConstraints CA:TRUE)")
        #expect(failure(dir, key: "junk") == "\(at): local_key \(dir.path)/gw-a.key is not a PEM or DER private key")
        #expect(failure(dir, key: TestPKI.gwAP256EncryptedKey)
                == "\(at): local_key \(dir.path)/gw-a.key is an encrypted key: Sluice reads unencrypted keys only (protect the file with mode 0600)")
        let mismatch = failure(dir, key: TestPKI.gwBP384Key)
        #expect(mismatch == "\(at): local_cert \(dir.path)/gw-a.pem with local_key \(dir.path)/gw-a.key: the private key (ECDSA P-384) is not the key of certificate \"CN=gw-a, O=Sluice Test\" (ECDSA P-256)")
        #expect(!mismatch.contains("PRIVATE KEY"))
        #expect(failure(dir, extra: "local_id = \"gw-x.example\"")
                == "\(at): local_id gw-x.example is not in local_cert \(dir.path)/gw-a.pem (subject CN=gw-a, O=Sluice Test; DNS:gw-a.example, email:gw-a@example.net, IP:192.0.2.1)")
    }
}
