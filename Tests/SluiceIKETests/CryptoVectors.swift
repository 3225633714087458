import Foundation
import SluiceCore

/// The vector files the crypto tests read. A missing file fails the test: vectors are not optional.
enum CryptoVectors {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// ../shared/vectors/esp-vectors.json (or $SLUICE_VECTORS), the published ESP/HMAC vectors.
    static func published() throws -> [[String: Any]] {
        let path = ProcessInfo.processInfo.environment["SLUICE_VECTORS"]
            ?? repo.deletingLastPathComponent().appendingPathComponent("shared/vectors/esp-vectors.json").path
        guard let list = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [[String: Any]] else {
            throw VectorFileError("\(path): not a JSON list")
        }
        return list
    }

    /// tests/fixtures/ike/strongswan-vectors.json, recorded from strongSwan by the script beside it.
    static func strongSwan() throws -> [String: Any] {
        let url = repo.appendingPathComponent("tests/fixtures/ike/strongswan-vectors.json")
        guard let doc = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] else {
            throw VectorFileError("\(url.path): not a JSON object")
        }
        return doc
    }
}

struct VectorFileError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension Dictionary where Key == String, Value == Any {
    func bytes(_ k: String) throws -> [UInt8] {
        guard let s = self[k] as? String, s.count % 2 == 0 else { throw VectorFileError("no hex field '\(k)'") }
        return hex(s)
    }
    func object(_ k: String) throws -> [String: Any] {
        guard let o = self[k] as? [String: Any] else { throw VectorFileError("no object '\(k)'") }
        return o
    }
    func text(_ k: String) throws -> String {
        guard let s = self[k] as? String else { throw VectorFileError("no string '\(k)'") }
        return s
    }
    func spi(_ k: String) throws -> UInt64 {
        guard let s = self[k] as? String, let v = UInt64(s, radix: 16) else { throw VectorFileError("no SPI '\(k)'") }
        return v
    }
}

extension SecretBytes {
    /// A real copy of the key bytes, for comparisons: `bytes` shares the buffer this object
    /// wipes when it goes away, which a temporary does before the comparison runs.
    var copied: [UInt8] { bytes.map { $0 } }
}
