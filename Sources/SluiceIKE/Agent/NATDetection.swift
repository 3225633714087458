import CSluiceCrypto
import SluiceCore

/// NAT detection (RFC 7296 §2.23): SHA-1(SPIi | SPIr | IP | port). A hash that does not
/// match the address a side sees means a NAT sits in between (or, for strongSwan's
/// user-space backend and `encap = true`, a side that asks for UDP encapsulation).
enum NATDetection {
    static func hash(spiI: UInt64, spiR: UInt64, _ e: Endpoint) -> [UInt8] {
        var data = IKEAgent.spiBytes(spiI) + IKEAgent.spiBytes(spiR)
        data += e.address.bytes
        data += [UInt8(e.port >> 8), UInt8(truncatingIfNeeded: e.port)]
        var out = [UInt8](repeating: 0, count: 20)
        _ = data.withUnsafeBufferPointer { d in out.withUnsafeMutableBufferPointer { sluice_sha1(d.baseAddress, d.count, $0.baseAddress) } }
        return out
    }

    /// The pair of notifies a message carries. `fakeSource`: claim a NAT so the peer encapsulates.
    static func notifies(spiI: UInt64, spiR: UInt64, source: Endpoint, destination: Endpoint, fakeSource: Bool) -> [Payload] {
        var src = hash(spiI: spiI, spiR: spiR, source)
        if fakeSource { src = (0..<20).map { _ in UInt8.random(in: 0...255) } }
        return [.notify(NotifyPayload(type: NotifyType.natDetectionSourceIP, data: src)),
                .notify(NotifyPayload(type: NotifyType.natDetectionDestinationIP, data: hash(spiI: spiI, spiR: spiR, destination)))]
    }

    /// (we are behind a NAT, the peer is behind a NAT) from the peer's notifies; nil when it sent none.
    static func evaluate(_ payloads: [Payload], spiI: UInt64, spiR: UInt64, local: Endpoint, remote: Endpoint) -> (local: Bool, remote: Bool)? {
        var sources: [[UInt8]] = [], destination: [UInt8]? = nil
        for case let .notify(n) in payloads {
            if n.type == NotifyType.natDetectionSourceIP { sources.append(n.data) }
            if n.type == NotifyType.natDetectionDestinationIP { destination = n.data }
        }
        guard let destination, !sources.isEmpty else { return nil }
        let remoteBehind = !sources.contains(hash(spiI: spiI, spiR: spiR, remote))
        let localBehind = destination != hash(spiI: spiI, spiR: spiR, local)
        return (localBehind, remoteBehind)
    }
}
