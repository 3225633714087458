import Foundation
@testable import SluiceCore

/// Locates ../shared/vectors/esp-vectors.json relative to the repository root
/// (or $SLUICE_VECTORS). A missing file fails the suite: vectors are not optional.
enum Vectors {
    static var path: String {
        if let p = ProcessInfo.processInfo.environment["SLUICE_VECTORS"] { return p }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return repo.deletingLastPathComponent().appendingPathComponent("shared/vectors/esp-vectors.json").path
    }

    static func load() throws -> [[String: Any]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard let list = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
            throw VectorError("\(path): not a JSON list")
        }
        return list
    }
}

struct VectorError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension Dictionary where Key == String, Value == Any {
    func hex(_ k: String) throws -> [UInt8] {
        guard let s = self[k] as? String, let b = Hex.decode(s) else { throw VectorError("\(self["id"] ?? "?"): no hex field \(k)") }
        return b
    }
    func int(_ k: String) -> Int? { (self[k] as? NSNumber)?.intValue }
    func string(_ k: String) -> String? { self[k] as? String }
}

/// Builders for test packets with correct lengths and checksums.
enum TestPackets {
    static func ipv4(src: String, dst: String, proto: UInt8, payload: [UInt8], df: Bool = false, tos: UInt8 = 0) -> [UInt8] {
        var p = [UInt8](repeating: 0, count: 20)
        p[0] = 0x45; p[1] = tos
        let total = 20 + payload.count
        p[2] = UInt8(total >> 8); p[3] = UInt8(total & 0xFF)
        p[4] = 0x12; p[5] = 0x34
        p[6] = df ? 0x40 : 0
        p[8] = 64; p[9] = proto
        p.replaceSubrange(12..<16, with: IPAddress(src)!.bytes)
        p.replaceSubrange(16..<20, with: IPAddress(dst)!.bytes)
        let c = p.withUnsafeBytes { internetChecksum($0) }
        p[10] = UInt8(c >> 8); p[11] = UInt8(c & 0xFF)
        return p + payload
    }

    static func ipv6(src: String, dst: String, next: UInt8, payload: [UInt8]) -> [UInt8] {
        var p = [UInt8](repeating: 0, count: 40)
        p[0] = 0x60
        p[4] = UInt8(payload.count >> 8); p[5] = UInt8(payload.count & 0xFF)
        p[6] = next; p[7] = 64
        p.replaceSubrange(8..<24, with: IPAddress(src)!.bytes)
        p.replaceSubrange(24..<40, with: IPAddress(dst)!.bytes)
        return p + payload
    }

    static func udp(sport: UInt16, dport: UInt16, data: [UInt8]) -> [UInt8] {
        let len = 8 + data.count
        return [UInt8(sport >> 8), UInt8(sport & 0xFF), UInt8(dport >> 8), UInt8(dport & 0xFF),
                UInt8(len >> 8), UInt8(len & 0xFF), 0, 0] + data
    }

    static func icmpEcho(id: UInt16 = 1, seq: UInt16 = 1, data: [UInt8], v6: Bool = false) -> [UInt8] {
        [v6 ? 128 : 8, 0, 0, 0, UInt8(id >> 8), UInt8(id & 0xFF), UInt8(seq >> 8), UInt8(seq & 0xFF)] + data
    }

    static func pattern(_ n: Int, seed: Int = 0) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) } }
}

/// A matched pair of SAs (sender and receiver) with policies, as two peers would have.
struct PeerPair {
    let sender: SecurityDatabase
    let receiver: SecurityDatabase
    let out: SecurityAssociation
    let inb: SecurityAssociation

    init(proposal: Proposal, mode: ESPMode, outer: IPAddress.Family, inner: IPAddress.Family, esn: Bool = false,
         window: Int = 1024, startSeq: UInt64 = 0, tfc: Int = 0, mtu: Int = 9000, udp: Bool = false,
         lifetime: Lifetime = Lifetime()) throws {
        let key = SecretBytes(TestPackets.pattern(proposal.keyMaterialLength, seed: 3))
        let (l, r) = outer == .v4 ? ("192.0.2.1", "192.0.2.2") : ("2001:db8::1", "2001:db8::2")
        let outCfg = SAConfig(name: "out", direction: .outbound, spi: 0x1001, mode: mode, local: IPAddress(l)!,
                              remote: IPAddress(r)!, proposal: proposal, keyMaterial: key, esn: esn,
                              replayWindow: window, lifetime: lifetime, tfcPadTo: tfc, mtu: mtu, udpEncapsulation: udp)
        var inCfg = outCfg
        inCfg.name = "in"; inCfg.direction = .inbound; inCfg.local = IPAddress(r)!; inCfg.remote = IPAddress(l)!
        out = try SecurityAssociation(config: outCfg, store: FixedStore(start: startSeq))
        inb = try SecurityAssociation(config: inCfg)
        let (src, dst) = inner == .v4 ? ("198.51.100.0/24", "203.0.113.0/24") : ("2001:db8:1::/48", "2001:db8:2::/48")
        let innerSrc = mode == .transport ? (outer == .v4 ? "192.0.2.1/32" : "2001:db8::1/128") : src
        let innerDst = mode == .transport ? (outer == .v4 ? "192.0.2.2/32" : "2001:db8::2/128") : dst
        let sel = TrafficSelector(src: IPPrefix(innerSrc), dst: IPPrefix(innerDst))
        sender = try SecurityDatabase(policies: [Policy(direction: .outbound, selector: sel, action: .protect(sa: "out"))],
                                      associations: [out])
        receiver = try SecurityDatabase(policies: [Policy(direction: .inbound, selector: sel, action: .protect(sa: "in"))],
                                        associations: [inb])
    }

    /// A packet the policy covers.
    func packet(mode: ESPMode, outer: IPAddress.Family, inner: IPAddress.Family, size: Int, seed: Int = 0) -> [UInt8] {
        let fam = mode == .transport ? outer : inner
        let data = TestPackets.pattern(size, seed: seed)
        if fam == .v4 {
            let (s, d) = mode == .transport ? ("192.0.2.1", "192.0.2.2") : ("198.51.100.7", "203.0.113.9")
            return TestPackets.ipv4(src: s, dst: d, proto: IPProto.udp, payload: TestPackets.udp(sport: 5000, dport: 53, data: data))
        }
        let (s, d) = mode == .transport ? ("2001:db8::1", "2001:db8::2") : ("2001:db8:1::7", "2001:db8:2::9")
        return TestPackets.ipv6(src: s, dst: d, next: IPProto.udp, payload: TestPackets.udp(sport: 5000, dport: 53, data: data))
    }
}

/// A state store that starts an SA at a chosen number and records what is saved.
final class FixedStore: SAStateStore, @unchecked Sendable {
    let start: UInt64
    private let lock = NSLock()
    private var saved: [SAStateRecord] = []
    var failNext = false
    init(start: UInt64) { self.start = start }
    var reservations: [UInt64] { lock.withLock { saved.map(\.mark) } }
    var records: [SAStateRecord] { lock.withLock { saved } }
    func load(_ key: SAStateKey, legacyName: String) throws -> SAStateRecord? { start == 0 ? nil : SAStateRecord(mark: start) }
    func save(_ key: SAStateKey, _ record: SAStateRecord) throws {
        try lock.withLock {
            if failNext { throw VectorError("disk full") }
            saved.append(record)
        }
    }
}

/// Typed-throws bridges for tests (Array's rethrowing closures do not carry typed errors).
func withMutable(_ a: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(DropReason) -> Void) throws(DropReason) {
    var failure: DropReason? = nil
    a.withUnsafeMutableBytes { p in
        do throws(DropReason) { try body(p) } catch { failure = error }
    }
    if let failure { throw failure }
}

func parseHeader(_ a: [UInt8]) throws(DropReason) -> IPHeaderInfo {
    var result: Result<IPHeaderInfo, DropReason> = .failure(.truncated)
    a.withUnsafeBytes { p in
        do throws(DropReason) { result = .success(try IPHeaderInfo.parse(p)) } catch { result = .failure(error) }
    }
    return try result.get()
}
