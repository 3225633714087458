import Foundation
@testable import SluiceIKE
import SluiceCore

/// Hex helpers for the IKE tests' vectors.
func hex(_ s: String) -> [UInt8] {
    let c = Array(s.filter { !$0.isWhitespace }.utf8)
    var out: [UInt8] = []
    var i = 0
    while i + 1 < c.count {
        out.append(UInt8(String(bytes: c[i...i + 1], encoding: .utf8)!, radix: 16)!)
        i += 2
    }
    return out
}

/// The inner payloads of one message as `s` (the receiving IKE SA) opens it: its one SK
/// datagram, or its SKF fragments (any order) joined as RFC 7383 §2.6 reassembles them.
func innerPayloads(_ datagrams: [[UInt8]], openedBy s: IKESession) throws -> [Payload] {
    let messages = try datagrams.map { try IKEMessage.decode($0) }
    if datagrams.count == 1, case .encrypted? = messages[0].payloads.last {
        guard let p = s.open(datagrams[0], messages[0]).payloads else { throw TestFailure("SK payload does not open") }
        return p
    }
    var pieces: [UInt16: [UInt8]] = [:]
    var first = PayloadType.none
    for (bytes, m) in zip(datagrams, messages) {
        guard case let .encryptedFragment(number, total, firstInner, body)? = m.payloads.last, Int(total) == datagrams.count,
              let cipher = s.receiveCipher else { throw TestFailure("not a set of \(datagrams.count) SKF fragments") }
        pieces[number] = try cipher.open(prefix: Array(bytes[0..<(bytes.count - body.count)]), body: body)
        if number == 1 { first = firstInner }
    }
    let chain = (1...UInt16(datagrams.count)).flatMap { pieces[$0] ?? [] }
    return try Payload.decodeChain(first: first, chain, baseOffset: 0)
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
