/// A packet in a fixed buffer with headroom and tailroom, so ESP can grow a packet at
/// both ends in place. One buffer per worker is reused for every packet: after the
/// first packet no heap allocation happens on the hot path.
///
/// Indexes used by the public API are relative to the first byte of the packet.
/// Every accessor checks its bounds and reports `.truncated` rather than trapping.
public struct PacketBuffer {
    @usableFromInline var storage: [UInt8]
    public private(set) var head: Int
    public private(set) var tail: Int
    public let defaultHeadroom: Int

    public static let maxPacket = 65535

    public init(capacity: Int = 65535 + 1024, headroom: Int = 256) {
        precondition(capacity > headroom, "capacity must exceed headroom")
        storage = [UInt8](repeating: 0, count: capacity)
        head = headroom
        tail = headroom
        defaultHeadroom = headroom
    }

    public init(_ bytes: [UInt8], headroom: Int = 256, tailroom: Int = 512) {
        self.init(capacity: headroom + bytes.count + tailroom, headroom: headroom)
        storage.replaceSubrange(head..<(head + bytes.count), with: bytes)
        tail = head + bytes.count
    }

    public var count: Int { tail - head }
    public var headroom: Int { head }
    public var tailroom: Int { storage.count - tail }

    /// Replaces the content with `bytes`, keeping the default headroom.
    public mutating func load(_ bytes: UnsafeRawBufferPointer) throws(DropReason) {
        guard bytes.count + defaultHeadroom <= storage.count else { throw .tooBig }
        head = defaultHeadroom
        tail = head + bytes.count
        if bytes.count > 0 {
            storage.withUnsafeMutableBytes { dst in
                dst.baseAddress!.advanced(by: head).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            }
        }
    }

    public mutating func load(_ bytes: [UInt8]) throws(DropReason) {
        var result: Result<Void, DropReason> = .success(())
        bytes.withUnsafeBytes { p in
            do throws(DropReason) { try load(p) } catch { result = .failure(error) }
        }
        try result.get()
    }

    /// Grows the packet at the front by `n` bytes (contents unspecified).
    public mutating func prepend(_ n: Int) throws(DropReason) {
        guard n >= 0, n <= head else { throw .tooBig }
        head -= n
    }

    /// Grows the packet at the back by `n` bytes (contents unspecified).
    public mutating func append(_ n: Int) throws(DropReason) {
        guard n >= 0, n <= tailroom, count + n <= PacketBuffer.maxPacket else { throw .tooBig }
        tail += n
    }

    public mutating func removeFirst(_ n: Int) throws(DropReason) {
        guard n >= 0, n <= count else { throw .truncated }
        head += n
    }

    public mutating func removeLast(_ n: Int) throws(DropReason) {
        guard n >= 0, n <= count else { throw .truncated }
        tail -= n
    }

    public mutating func truncate(to length: Int) throws(DropReason) {
        guard length >= 0, length <= count else { throw .truncated }
        tail = head + length
    }

    /// Moves `length` bytes from `from` to `to` (relative offsets); ranges may overlap.
    public mutating func move(from: Int, to: Int, length: Int) throws(DropReason) {
        guard length >= 0, from >= 0, to >= 0, from + length <= count, to + length <= count else {
            throw .truncated
        }
        if length == 0 || from == to { return }
        let h = head
        storage.withUnsafeMutableBytes { p in
            let base = p.baseAddress!.advanced(by: h)
            (base + to).copyMemory(from: base + from, byteCount: length) // memmove semantics
        }
    }

    public var bytes: [UInt8] { Array(storage[head..<tail]) }

    /// The packet's bytes, bounded to exactly `count`.
    @inlinable
    public func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let (h, t) = (head, tail)
        var result: Result<R, E>? = nil
        storage.withUnsafeBytes { p in
            do throws(E) { result = .success(try body(UnsafeRawBufferPointer(rebasing: p[h..<t]))) } catch { result = .failure(error) }
        }
        return try result!.get()
    }

    @inlinable
    public mutating func withMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let (h, t) = (head, tail)
        var result: Result<R, E>? = nil
        storage.withUnsafeMutableBytes { p in
            do throws(E) { result = .success(try body(UnsafeMutableRawBufferPointer(rebasing: p[h..<t]))) } catch { result = .failure(error) }
        }
        return try result!.get()
    }

    public func u8(_ o: Int) throws(DropReason) -> UInt8 {
        guard o >= 0, o < count else { throw .truncated }
        return storage[head + o]
    }

    public func u16(_ o: Int) throws(DropReason) -> UInt16 {
        guard o >= 0, o + 2 <= count else { throw .truncated }
        return storage.withUnsafeBytes { readU16($0, head + o) }
    }

    public func u32(_ o: Int) throws(DropReason) -> UInt32 {
        guard o >= 0, o + 4 <= count else { throw .truncated }
        return storage.withUnsafeBytes { readU32($0, head + o) }
    }

    public mutating func setU8(_ o: Int, _ v: UInt8) throws(DropReason) {
        guard o >= 0, o < count else { throw .truncated }
        storage[head + o] = v
    }

    public mutating func setU16(_ o: Int, _ v: UInt16) throws(DropReason) {
        guard o >= 0, o + 2 <= count else { throw .truncated }
        let at = head + o
        storage.withUnsafeMutableBytes { writeU16($0, at, v) }
    }

    public mutating func setU32(_ o: Int, _ v: UInt32) throws(DropReason) {
        guard o >= 0, o + 4 <= count else { throw .truncated }
        let at = head + o
        storage.withUnsafeMutableBytes { writeU32($0, at, v) }
    }

    public mutating func setBytes(_ o: Int, _ v: [UInt8]) throws(DropReason) {
        guard o >= 0, o + v.count <= count else { throw .truncated }
        for (i, b) in v.enumerated() { storage[head + o + i] = b }
    }
}
