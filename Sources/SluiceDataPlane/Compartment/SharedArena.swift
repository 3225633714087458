import CSluiceNetfilter
#if canImport(Glibc)
import Glibc
#endif

/// Memory the supervisor shares with its worker processes (doc/compartments.md): a memfd
/// mapped `MAP_SHARED`, cut into 64-byte cells of eight 64-bit words, one cache line each,
/// so that two writers never share a line. The supervisor creates it and hands out cells
/// (`allocate`); a worker maps the same file from the descriptor it inherited.
///
/// Concurrency: words are read and written only with the atomics of `ArenaCell`, which hold
/// between threads and between processes alike. What a worker wrote is a worker's word:
/// the supervisor reads it as untrusted (a counter, never an index or a length).
public final class SharedArena: @unchecked Sendable {
    public static let cellSize = 64
    public static let wordsPerCell = cellSize / 8

    public let fd: Int32
    public let cellCount: Int
    let base: UnsafeMutableRawPointer
    /// Supervisor side: cells not handed out (the worker side never allocates).
    private var free: [Int]

    public struct ArenaError: Error, CustomStringConvertible {
        public let description: String
    }

    /// A new arena of `cells` cells, zeroed.
    public init(cells: Int, name: String = "sluice-arena") throws(ArenaError) {
        guard cells > 0, cells <= 1 << 24 else { throw ArenaError(description: "arena of \(cells) cells") }
        let r = sluice_arena_create(name, cells * Self.cellSize)
        guard r >= 0 else { throw ArenaError(description: "cannot create the shared arena: \(Errno(-r))") }
        fd = r
        cellCount = cells
        var err: Int32 = 0
        guard let p = sluice_arena_map(r, cells * Self.cellSize, &err) else {
            Glibc.close(r)
            throw ArenaError(description: "cannot map the shared arena: \(Errno(err))")
        }
        base = p
        free = Array((0..<cells).reversed())
    }

    /// Maps an arena another process created (a worker, from its inherited descriptor).
    /// The descriptor stays the caller's to close.
    public init(mapping fd: Int32, cells: Int) throws(ArenaError) {
        guard cells > 0, cells <= 1 << 24 else { throw ArenaError(description: "arena of \(cells) cells") }
        var err: Int32 = 0
        guard let p = sluice_arena_map(fd, cells * Self.cellSize, &err) else {
            throw ArenaError(description: "cannot map the shared arena from descriptor \(fd): \(Errno(err))")
        }
        self.fd = -1
        cellCount = cells
        base = p
        free = []
    }

    deinit {
        sluice_arena_unmap(base, cellCount * Self.cellSize)
        if fd >= 0 { Glibc.close(fd) }
    }

    /// The cell at `index`; nil outside the arena (an index from a message is checked here).
    public func cell(_ index: Int) -> ArenaCell? {
        guard index >= 0, index < cellCount else { return nil }
        return ArenaCell(index: index, words: (base + index * Self.cellSize).assumingMemoryBound(to: UInt64.self))
    }

    /// A zeroed cell for a new owner; nil when all are in use.
    public func allocate() -> ArenaCell? {
        guard let i = free.popLast(), let c = cell(i) else { return nil }
        for w in 0..<Self.wordsPerCell { c.store(w, 0) }
        return c
    }

    /// Gives a cell back (once no worker uses it: after the database without its SA is acknowledged).
    public func release(_ c: ArenaCell) {
        guard c.index < cellCount, !free.contains(c.index) else { return }
        free.append(c.index)
    }

    public var cellsInUse: Int { cellCount - free.count }
}

/// Eight 64-bit words in the arena, with atomic access only.
public struct ArenaCell: @unchecked Sendable, Equatable {
    public let index: Int
    let words: UnsafeMutablePointer<UInt64>

    public static func == (a: ArenaCell, b: ArenaCell) -> Bool { a.words == b.words }

    @inline(__always) func word(_ w: Int) -> UnsafeMutablePointer<UInt64> {
        precondition(w >= 0 && w < SharedArena.wordsPerCell, "arena word \(w) of \(SharedArena.wordsPerCell)")
        return words + w
    }

    /// Adds and returns the value before: a sequence number is `fetchAdd(0, 1) + 1`, never twice.
    @inline(__always) public func fetchAdd(_ w: Int, _ v: UInt64) -> UInt64 { sluice_atomic_fetch_add_u64(word(w), v) }
    @inline(__always) public func load(_ w: Int) -> UInt64 { sluice_atomic_load_u64(word(w)) }
    @inline(__always) public func store(_ w: Int, _ v: UInt64) { sluice_atomic_store_u64(word(w), v) }
    /// Stores `desired` if the word is `expected`; returns whether it did and the value seen.
    @inline(__always) public func compareExchange(_ w: Int, expected: UInt64, desired: UInt64) -> (exchanged: Bool, original: UInt64) {
        var e = expected
        let ok = sluice_atomic_cas_u64(word(w), &e, desired) == 1
        return (ok, ok ? expected : e)
    }
}
