/// Anti-replay window (RFC 4303 §3.4.3) as a ring of 64-bit words (RFC 6479):
/// advancing the window clears whole words instead of shifting the bitmap.
/// Sequence numbers are the full 64-bit values (with ESN, seq-high is inferred first).
/// Not thread-safe by itself: `SecurityAssociation` guards it with a mutex.
public struct ReplayWindow: Sendable {
    public static let maxSize = 65536
    /// Window size in packets; 0 disables replay protection (the top is still tracked for ESN).
    public let size: Int
    public private(set) var top: UInt64 = 0
    private var words: [UInt64]
    private let wordMask: UInt64

    public init(size: Int) {
        precondition(size >= 0 && size <= ReplayWindow.maxSize, "window size out of range")
        self.size = size
        // One spare word so the word being filled never overlaps the oldest one in use.
        var n = 1
        while n < (size + 63) / 64 + 1 { n <<= 1 }
        words = [UInt64](repeating: 0, count: n)
        wordMask = UInt64(n - 1)
    }

    /// A window whose right edge is `restoredTop` with everything at or below it taken as
    /// seen: after a restart nothing accepted before can be accepted again.
    public init(size: Int, restoredTop: UInt64) {
        self.init(size: size)
        guard restoredTop > 0 else { return }
        top = restoredTop
        for i in words.indices { words[i] = ~0 }
    }

    /// The cheap pre-authentication check: may `seq` be new?
    public func check(_ seq: UInt64) -> Bool {
        if seq == 0 { return false }
        if seq > top { return true }
        if size == 0 { return true }
        if top - seq >= UInt64(size) { return false }
        let word = words[Int((seq >> 6) & wordMask)]
        return word & (1 << (seq & 63)) == 0
    }

    /// Marks `seq` as received after authentication. Re-checks, since another thread
    /// may have accepted the same number in between. Returns false for a replay.
    public mutating func update(_ seq: UInt64) -> Bool {
        guard check(seq) else { return false }
        if seq > top {
            let oldIndex = top >> 6
            let newIndex = seq >> 6
            let diff = min(newIndex &- oldIndex, UInt64(words.count))
            if diff > 0 {
                var i: UInt64 = 1
                while i <= diff {
                    words[Int((oldIndex &+ i) & wordMask)] = 0
                    i += 1
                }
            }
            top = seq
        }
        if size > 0 {
            words[Int((seq >> 6) & wordMask)] |= 1 << (seq & 63)
        }
        return true
    }

    /// RFC 4303 Appendix A3: the seq-high that makes `low` closest to the window.
    public func inferHigh(low: UInt32) -> UInt32 {
        let w = UInt32(clamping: max(size, 1))
        let tl = UInt32(truncatingIfNeeded: top)
        let th = UInt32(truncatingIfNeeded: top >> 32)
        if tl >= w - 1 {
            // Window within one 2^32 subspace.
            return low >= tl &- w &+ 1 ? th : th &+ 1
        }
        // Window spans two subspaces.
        return low >= tl &- w &+ 1 ? th &- 1 : th
    }
}
