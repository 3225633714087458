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
