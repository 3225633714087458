import CSluiceShared
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Memory for the words that more than one worker writes or that must outlive a worker:
/// outbound sequence counters and their reservations, replay marks, SA and worker counters
/// (doc/compartments.md). A memfd mapped `MAP_SHARED`, cut into 64-byte cells of eight
/// 64-bit words, one cache line each, so two writers never share a line. Thread mode maps
/// one privately, process mode hands its descriptor to the worker processes, which map the
/// same file: one code path for both.
///
/// Ownership: the process that created the arena hands out cells (`allocate`, `region`)
/// and takes them back; a process that only maps it (a worker) never allocates.
///
/// Concurrency: words are read and written only with the atomics of `ArenaCell`, which hold
/// between threads and between processes alike; the allocator is behind a mutex. What a
/// worker process wrote is a worker's word: its reader takes it as untrusted (a counter,
/// never an index or a length).
public final class SharedArena: @unchecked Sendable {
    public static let cellSize = 64
    public static let wordsPerCell = cellSize / 8

    /// The descriptor to hand to a worker; -1 for a mapping of another process's arena.
    public let fd: Int32
    public let cellCount: Int
    let base: UnsafeMutableRawPointer
    struct Allocator {
        /// Cells below this were handed out at least once.
        var fresh = 0
        var free: [Int] = []
        var inUse = 0
    }
    private let allocator: Mutex<Allocator>
    let owner: Bool

    public struct ArenaError: Error, CustomStringConvertible {
        public let description: String
    }

    static func describe(_ errno: Int32) -> String { String(cString: strerror(errno)) }

    /// A new arena of `cells` cells, zeroed. Pages are made only when touched, so a large
    /// arena costs what its used cells cost.
    public init(cells: Int, name: String = "sluice-arena") throws(ArenaError) {
        guard cells > 0, cells <= 1 << 24 else { throw ArenaError(description: "arena of \(cells) cells") }
        let r = sluice_arena_create(name, cells * Self.cellSize)
        guard r >= 0 else { throw ArenaError(description: "cannot create the shared arena: \(Self.describe(-r))") }
        fd = r
        cellCount = cells
        var err: Int32 = 0
        guard let p = sluice_arena_map(r, cells * Self.cellSize, &err) else {
            Glibc.close(r)
            throw ArenaError(description: "cannot map the shared arena: \(Self.describe(err))")
        }
        base = p
        allocator = Mutex(Allocator())
        owner = true
    }

    /// Maps an arena another process created (a worker, from its inherited descriptor).
    /// The descriptor stays the caller's to close.
    public init(mapping fd: Int32, cells: Int) throws(ArenaError) {
        guard cells > 0, cells <= 1 << 24 else { throw ArenaError(description: "arena of \(cells) cells") }
        var err: Int32 = 0
        guard let p = sluice_arena_map(fd, cells * Self.cellSize, &err) else {
            throw ArenaError(description: "cannot map the shared arena from descriptor \(fd): \(Self.describe(err))")
        }
        self.fd = -1
        cellCount = cells
        base = p
        allocator = Mutex(Allocator(fresh: cells))
        owner = false
    }

    deinit {
        sluice_arena_unmap(base, cellCount * Self.cellSize)
        if fd >= 0 { Glibc.close(fd) }
    }

    /// The arena of SA objects made without one (tests, benchmarks, tools): 16 MiB of
    /// address space, of which only the cells in use take memory.
    public static let process: SharedArena = {
        do { return try SharedArena(cells: 1 << 18, name: "sluice-process") } catch {
            fatalError("\(error)")   // no memfd at all: nothing of Sluice can run
        }
    }()

    /// The cell at `index`; nil outside the arena (an index from a message is checked here).
    public func cell(_ index: Int) -> ArenaCell? {
        guard index >= 0, index < cellCount else { return nil }
        return ArenaCell(index: index, words: (base + index * Self.cellSize).assumingMemoryBound(to: UInt64.self))
    }

    /// A zeroed cell for a new owner; nil when all are in use.
    public func allocate() -> ArenaCell? {
        let i: Int? = allocator.withLock { a in
            guard owner else { return nil }
            if let i = a.free.popLast() { a.inUse += 1; return i }
            guard a.fresh < cellCount else { return nil }
            a.fresh += 1
            a.inUse += 1
            return a.fresh - 1
        }
        guard let i, let c = cell(i) else { return nil }
        c.zero()
        return c
    }

    /// `count` adjacent zeroed cells (a worker's counters); nil when there is no such run.
    public func region(cells count: Int) -> [ArenaCell]? {
        let first: Int? = allocator.withLock { a in
            guard owner, count > 0, a.fresh + count <= cellCount else { return nil }
            a.fresh += count
            a.inUse += count
            return a.fresh - count
        }
        guard let first else { return nil }
        return (first..<first + count).compactMap { i in
            let c = cell(i)
            c?.zero()
            return c
        }
    }

    /// Gives a cell back: only once no one uses it (its owning object is gone, and in
    /// process mode every worker acknowledged a database without it).
    public func release(_ c: ArenaCell) {
        allocator.withLock { a in
            guard owner, c.index < a.fresh, !a.free.contains(c.index) else { return }
            a.free.append(c.index)
            a.inUse -= 1
        }
    }

    public var cellsInUse: Int { allocator.withLock { $0.inUse } }
}

/// Eight 64-bit words in an arena, with atomic access only.
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
    /// The word as a counter (relaxed atomics: it orders nothing).
    public func counter(_ w: Int) -> SharedCounter { SharedCounter(word(w)) }

    func zero() { for w in 0..<SharedArena.wordsPerCell { store(w, 0) } }
}

/// One cell that goes back to its arena when the object holding it goes away: an SA
/// object's counters, a sequence counter. The arena outlives it (it is retained).
public final class SharedCell: Sendable {
    public let cell: ArenaCell
    let arena: SharedArena
    /// False for a view of a cell another process owns (a worker's copy of an SA).
    let owned: Bool

    public struct Exhausted: Error, CustomStringConvertible {
        public let cells: Int
        public var description: String { "the shared arena is full (\(cells) cells): too many SAs" }
    }

    /// A fresh zeroed cell of `arena`.
    public init(in arena: SharedArena) throws(Exhausted) {
        guard let c = arena.allocate() else { throw Exhausted(cells: arena.cellCount) }
        cell = c
        self.arena = arena
        owned = true
    }

    /// A cell someone else owns, by index; nil when the index is outside the arena.
    public init?(viewing index: Int, of arena: SharedArena) {
        guard let c = arena.cell(index) else { return nil }
        cell = c
        self.arena = arena
        owned = false
    }

    public var index: Int { cell.index }

    deinit { if owned { arena.release(cell) } }
}

/// A 64-bit counter in shared memory: written by one worker, read by anyone.
public struct SharedCounter: @unchecked Sendable {
    let word: UnsafeMutablePointer<UInt64>
    init(_ word: UnsafeMutablePointer<UInt64>) { self.word = word }
    @inline(__always) public func add(_ n: UInt64 = 1) { sluice_atomic_add_relaxed_u64(word, n) }
    @inline(__always) public var load: UInt64 { sluice_atomic_load_relaxed_u64(word) }
    @inline(__always) public func store(_ v: UInt64) { sluice_atomic_store_relaxed_u64(word, v) }
}
