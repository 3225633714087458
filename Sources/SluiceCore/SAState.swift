import CSluiceCrypto
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// State that must outlive an SA object: the outbound sequence counter (a number sent twice
// under one key is a reused AES-GCM nonce) and the inbound replay window (a number accepted
// twice is a replay). Both belong to the key, not to the SA's other settings: a reload that
// changes `mtu` or renames an SA makes a new `SecurityAssociation` that shares the running
// state object, and the durable record on disk is named by SPI and key fingerprint only.
//
// Ownership: one state object per `SAStateKey` in a process (`SAManager` hands out the
// live one); on disk one record per key, written only through `SAStateStore`, which refuses
// to go backwards. Workers never wait on fsync in steady state: records are written ahead
// on a background writer; only a worker that outruns the writer writes synchronously.

/// Names the durable record of an SA's state: direction, SPI, addresses and a one-way
/// fingerprint of the key, never the SA's name or anything that shows the key.
public struct SAStateKey: Hashable, Sendable, CustomStringConvertible {
    public let direction: Direction
    public let spi: UInt32
    public let local: IPAddress
    public let remote: IPAddress
    /// The first 8 bytes of HMAC-SHA-256(key material, "sluice sa-state v1"): tells keys
    /// apart without revealing anything of them.
    public let keyID: UInt64

    public init(_ c: SAConfig) {
        direction = c.direction
        spi = c.spi
        local = c.local
        remote = c.remote
        keyID = SAStateKey.fingerprint(c.keyMaterial)
    }

    static func fingerprint(_ key: SecretBytes) -> UInt64 {
        let label = Array("sluice sa-state v1".utf8)
        var mac = [UInt8](repeating: 0, count: 32)
        key.bytes.withUnsafeBufferPointer { k in
            guard let h = sluice_hmac_sha256_new(k.baseAddress, k.count) else { return }
            _ = label.withUnsafeBufferPointer { l in sluice_hmac_sha256(h, l.baseAddress, l.count, nil, 0, &mac) }
            sluice_hmac_free(h)
        }
        return mac.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// File name stem: `out-00001001-192.0.2.2-3f2a...` (the peer for outbound, our address for inbound).
    public var stem: String {
        let spiHex = String(spi, radix: 16)
        let addr = (direction == .outbound ? remote : local).description.map { $0 == ":" ? "_" : $0 }
        let id = String(keyID, radix: 16)
        return "\(direction.rawValue)-\(String(repeating: "0", count: 8 - spiHex.count))\(spiHex)-\(String(addr))-\(String(repeating: "0", count: 16 - id.count))\(id)"
    }

    public var description: String { "\(direction.rawValue) SPI 0x\(String(spi, radix: 16))" }
}

/// What the store keeps per key.
/// - outbound: `mark` = the highest sequence number that may have been sent.
/// - inbound: `mark` = no number above it was accepted; `confirmed` = a number known
///   accepted when the record was written; `clean` = written at a clean stop, when
///   `confirmed` is exactly the top of the window (then `mark == confirmed`).
public struct SAStateRecord: Sendable, Equatable {
    public var mark: UInt64
    public var confirmed: UInt64
    public var clean: Bool
    public init(mark: UInt64, confirmed: UInt64? = nil, clean: Bool = false) {
        self.mark = mark; self.confirmed = confirmed ?? mark; self.clean = clean
    }
}

/// Durable SA state (see `FileStateStore`). `save` must not return before the record is
/// on disk, and must refuse a record that would go backwards.
public protocol SAStateStore: Sendable {
    /// The record for `key`; `legacyName` finds a record an older Sluice kept by SA name.
    func load(_ key: SAStateKey, legacyName: String) throws -> SAStateRecord?
    func save(_ key: SAStateKey, _ record: SAStateRecord) throws
}

/// Keeps nothing: for tests and benchmarks.
public struct EphemeralStateStore: SAStateStore {
    public init() {}
    public func load(_ key: SAStateKey, legacyName: String) throws -> SAStateRecord? { nil }
    public func save(_ key: SAStateKey, _ record: SAStateRecord) throws {}
}

/// Runs durable writes off the workers' threads. `submit` never blocks; it returns false
/// when the job was not taken (then the caller writes itself when it must).
public protocol DeferredWriter: Sendable {
    func submit(_ key: SAStateKey, _ job: @escaping @Sendable () -> Void) -> Bool
}

/// An outbound SA's sequence counter with its durable reservation.
///
/// The words live in an arena cell (`SharedArena`), so that every worker that seals for the
/// SA, thread or process, takes from one counter, and the counter outlives any worker:
/// word 0 is the next number, 1 how far the reservation on disk reaches, 2 how far a write
/// was asked for (so it is asked once).
///
/// Concurrency: `next` is taken with one atomic add per packet by any worker. Numbers up to
/// `reserved` are on disk; when fewer than half a block remain, a write of the next block
/// is handed to the background writer; a worker that still reaches `reserved` writes
/// itself under `writeLock`. A number is never handed out twice, even when a write fails.
/// A worker process holds a view (`init(viewing:)`) that cannot write: it asks the
/// supervisor, which owns the store and moves `reserved`; a view that reaches `reserved`
/// drops (`state_error`) until it has.
public final class OutboundSequence: Sendable {
    public let key: SAStateKey
    let state: SharedCell
    static let nextWord = 0, reservedWord = 1, requestedWord = 2
    let writeLock = Mutex<Void>(())
    /// Nil in a worker process's view: the supervisor writes, asked through `ask`.
    let store: SAStateStore?
    let writer: DeferredWriter?
    let ask: (@Sendable (SAStateKey) -> Void)?
    let block: UInt64
    let maxSequence: UInt64
    let onFailure: (@Sendable (String) -> Void)?
    /// Set when the counter was seen going back: the SA seals no more (its key is retired).
    let faulted = Atomic<Bool>(false)

    /// Loads the record: the counter continues above anything that may have been sent.
    public init(_ c: SAConfig, store: SAStateStore, writer: DeferredWriter?, block: UInt64,
                arena: SharedArena = .process, onFailure: (@Sendable (String) -> Void)? = nil) throws {
        key = SAStateKey(c)
        let used = try store.load(key, legacyName: c.name)?.mark ?? 0
        state = try SharedCell(in: arena)
        state.cell.store(Self.nextWord, used &+ 1)
        state.cell.store(Self.reservedWord, used)
        state.cell.store(Self.requestedWord, used)
        self.store = store
        self.writer = writer
        ask = nil
        self.block = max(1, block)
        maxSequence = c.maxSequence
        self.onFailure = onFailure
    }

    /// A worker process's view of a counter the supervisor owns, in the cell it named.
    public init(viewing state: SharedCell, key: SAStateKey, maxSequence: UInt64, block: UInt64,
                ask: @escaping @Sendable (SAStateKey) -> Void, onFailure: (@Sendable (String) -> Void)? = nil) {
        self.key = key
        self.state = state
        store = nil
        writer = nil
        self.ask = ask
        self.block = max(1, block)
        self.maxSequence = maxSequence
        self.onFailure = onFailure
    }

    /// The arena cell that holds the counter (named in the database sent to workers).
    public var cellIndex: Int { state.index }
    /// The last number handed out (for stats).
    public var current: UInt64 { state.cell.load(Self.nextWord) &- 1 }
    /// How far the durable reservation reaches.
    public var reservedThrough: UInt64 { state.cell.load(Self.reservedWord) }
    public var isFaulted: Bool { faulted.load(ordering: .relaxed) }

    /// Makes the next block durable (control plane): before the first packet, and when a
    /// worker process asks.
    public func prime() throws {
        do {
            try reserve(through: min(max(reservedThrough, current) &+ block, maxSequence))
        } catch {
            state.cell.store(Self.requestedWord, reservedThrough)   // let the next packet ask again
            throw error
        }
    }

    /// `lastTaken`: the highest number this lane took before; a number at or below it
    /// means the shared counter was moved back, and the SA stops sealing.
    @inline(__always)
    func take(lastTaken: SharedCounter?, exhausted: () -> Void) throws(DropReason) -> UInt64 {
        guard !faulted.load(ordering: .relaxed) else { throw .sequenceFault }
        let seq = state.cell.fetchAdd(Self.nextWord, 1)
        if let lastTaken {
            guard seq > lastTaken.load else {
                if !faulted.exchange(true, ordering: .relaxed) {
                    onFailure?("sequence counter of \(key) went back (\(seq) after \(lastTaken.load)): shared memory corrupted")
                }
                throw .sequenceFault
            }
            lastTaken.store(seq)
        }
        guard seq <= maxSequence else { exhausted(); throw .seqExhausted }
        let r = reservedThrough
        if seq > r {
            guard store != nil else { askOnce(limit: min(max(seq, r &+ block), maxSequence)); throw .stateError }
            do { try reserve(through: min(max(seq, r &+ block), maxSequence)) } catch { throw .stateError }
        } else if r &- seq < block / 2 {
            reserveAhead(from: r)
        }
        return seq
    }

    /// Marks a write of `limit` as asked for; true for the one caller that gets to ask.
    func claimRequest(limit: UInt64) -> Bool {
        let asked = state.cell.load(Self.requestedWord)
        return asked < limit && state.cell.compareExchange(Self.requestedWord, expected: asked, desired: limit).exchanged
    }

    func askOnce(limit: UInt64) {
        if let ask, claimRequest(limit: limit) { ask(key) }
    }

    /// Hands the next block to the writer (or, in a worker process, asks the supervisor) once.
    func reserveAhead(from r: UInt64) {
        let limit = min(r &+ block, maxSequence)
        guard limit > r else { return }
        if store == nil { askOnce(limit: limit); return }
        guard let writer, claimRequest(limit: limit) else { return }
        let accepted = writer.submit(key) { [self] in
            do { try reserve(through: limit) } catch {
                state.cell.store(Self.requestedWord, reservedThrough) // let the next packet ask again
                onFailure?("\(error)")
            }
        }
        if !accepted { state.cell.store(Self.requestedWord, r) }
    }

    /// Writes `limit` durably (never lower than what is on disk), then publishes it.
    func reserve(through limit: UInt64) throws {
        guard let store else { return }
        try writeLock.withLock { _ in
            guard limit > reservedThrough else { return }
            try store.save(key, SAStateRecord(mark: limit))
            state.cell.store(Self.reservedWord, limit)
        }
    }
}

/// An inbound SA's anti-replay window with its durable mark.
///
/// The mark is written ahead of the window's top (`interval` numbers): every accepted number
/// is at or below the mark on disk, so after a crash the window restarts at the mark and
/// refuses everything below it. Numbers between the last one known accepted and the mark
/// are refused then too (`replay_restart`): the price of not writing every packet. A clean
/// stop writes the exact top, so nothing is lost then.
///
/// The window is the memory of the worker that holds it; the words others read live in an
/// arena cell: 0 the durable mark, 1 the mark asked for, 2 the window's top (for stats, and
/// for the supervisor's clean stop when a worker process holds the window).
///
/// Concurrency: the window is behind `window`'s mutex, held for the check and the update,
/// never during crypto or I/O. The mark is written by the background writer, or by the
/// worker itself (before accepting) when a number jumps past the durable mark. A worker
/// process's view (`init(viewing:)`) asks the supervisor instead, and waits for the mark
/// when a number jumps past it.
public final class InboundReplay: Sendable {
    public let key: SAStateKey
    struct Window {
        var bits: ReplayWindow
        /// From the restored record: at or below `floor` refused; above `certain` as replay_restart.
        var floor: UInt64
        var certain: UInt64
    }
    let window: Mutex<Window>
    let state: SharedCell
    static let durableWord = 0, requestedWord = 1, topWord = 2
    let writeLock = Mutex<Void>(())
    /// Nil in a worker process's view: the supervisor writes, asked through `ask`.
    let store: SAStateStore?
    let writer: DeferredWriter?
    let ask: (@Sendable (SAStateKey, _ mark: UInt64, _ confirmed: UInt64) -> Void)?
    let interval: UInt64
    let onFailure: (@Sendable (String) -> Void)?
    /// How long a view waits for the supervisor to make a mark durable before it refuses.
    static let askTimeoutMillis = 1000

    public init(_ c: SAConfig, store: SAStateStore, writer: DeferredWriter?, interval: UInt64,
                arena: SharedArena = .process, onFailure: (@Sendable (String) -> Void)? = nil) throws {
        key = SAStateKey(c)
        let record = try store.load(key, legacyName: c.name)
        let floor = record.map { $0.clean ? $0.confirmed : max($0.mark, $0.confirmed) } ?? 0
        window = Mutex(Window(bits: ReplayWindow(size: c.replayWindow, restoredTop: floor), floor: floor,
                              certain: record?.confirmed ?? 0))
        state = try SharedCell(in: arena)
        state.cell.store(Self.durableWord, floor)
        state.cell.store(Self.requestedWord, floor)
        state.cell.store(Self.topWord, floor)
        self.store = store
        self.writer = writer
        ask = nil
        self.interval = max(1, interval)
        self.onFailure = onFailure
    }

    /// A worker process's view of an SA the supervisor owns, its window restored at
    /// `start.floor` (at or below refused; above `start.confirmed` as `replay_restart`):
    /// what `handover(afterWorkerDeath:)` gave the supervisor.
    public init(viewing state: SharedCell, key: SAStateKey, windowSize: Int, start: (floor: UInt64, confirmed: UInt64),
                interval: UInt64, ask: @escaping @Sendable (SAStateKey, UInt64, UInt64) -> Void,
                onFailure: (@Sendable (String) -> Void)? = nil) {
        self.key = key
        self.state = state
        window = Mutex(Window(bits: ReplayWindow(size: windowSize, restoredTop: start.floor), floor: start.floor,
                              certain: min(start.confirmed, start.floor)))
        state.cell.store(Self.topWord, start.floor)
        store = nil
        writer = nil
        self.ask = ask
        self.interval = max(1, interval)
        self.onFailure = onFailure
    }

    /// Supervisor: where a worker's window starts. The first worker starts where this
    /// object's window is (restored from disk); after a worker died, anything up to the
    /// durable mark may have been accepted, and the top it last published was.
    public func handover(afterWorkerDeath: Bool) -> (floor: UInt64, confirmed: UInt64) {
        guard afterWorkerDeath else { return window.withLock { ($0.bits.top, $0.certain) } }
        let t = top, d = durableMark
        return (max(d, t), min(t, d))
    }

    /// The arena cell that holds the marks (named in the database sent to workers).
    public var cellIndex: Int { state.index }
    /// The top of the window, as its holder last published it.
    public var top: UInt64 { state.cell.load(Self.topWord) }
    public var durableMark: UInt64 { state.cell.load(Self.durableWord) }

    /// Writes the first mark ahead, so the first packets do not wait (control plane).
    public func prime() throws {
        let t = window.withLock { $0.bits.top }
        try persist(mark: t &+ interval, confirmed: t)
    }

    /// A reload changed the window size: a new window at the same top, everything at or
    /// below it taken as seen (a few reordered packets in flight may be refused, never a replay).
    func resize(_ size: Int) {
        window.withLock { w in
            guard w.bits.size != size else { return }
            w.bits = ReplayWindow(size: size, restoredTop: w.bits.top)
        }
    }

    /// The cheap pre-authentication step, under one lock: infer seq-high (ESN) from the
    /// window and check the full number against it.
    func precheck(low: UInt32, esn: Bool) -> (seqHigh: UInt32?, seq: UInt64, refusal: DropReason?) {
        window.withLock { w in
            let high: UInt32? = esn ? w.bits.inferHigh(low: low) : nil
            let seq = UInt64(high ?? 0) << 32 | UInt64(low)
            return (high, seq, w.bits.check(seq) ? nil : Self.refusal(seq, w))
        }
    }

    static func refusal(_ seq: UInt64, _ w: Window) -> DropReason {
        seq > w.certain && seq <= w.floor ? .replayAfterRestart : .replay
    }

    /// After authentication: makes sure the number is covered by the durable mark, then
    /// marks it in the window. Returns the refusal, or nil when accepted.
    func update(_ seq: UInt64) -> DropReason? {
        if seq > durableMark {
            // Past the mark on disk (a jump, or the writer fell behind): durable before accepting.
            guard persistNow(mark: seq &+ interval, confirmed: window.withLock { $0.bits.top }, covering: seq) else {
                return .stateError
            }
        }
        let (refusal, top): (DropReason?, UInt64) = window.withLock { w in
            guard w.bits.update(seq) else { return (Self.refusal(seq, w), w.bits.top) }
            state.cell.store(Self.topWord, w.bits.top)
            return (nil, w.bits.top)
        }
        if refusal == nil { markAhead(top: top) }
        return refusal
    }

    /// Makes `mark` durable before returning: written here, or in a view asked of the
    /// supervisor and waited for (as long as a slow disk would take). False when it is not.
    func persistNow(mark: UInt64, confirmed: UInt64, covering seq: UInt64) -> Bool {
        guard store == nil else {
            do { try persist(mark: mark, confirmed: confirmed); return true } catch {
                onFailure?("\(error)")
                return false
            }
        }
        if let ask, claimRequest(limit: mark) { ask(key, mark, confirmed) }
        for _ in 0..<Self.askTimeoutMillis {
            if durableMark >= seq { return true }
            usleep(1000)
        }
        state.cell.store(Self.requestedWord, durableMark)   // the next packet asks again
        return false
    }

    func claimRequest(limit: UInt64) -> Bool {
        let asked = state.cell.load(Self.requestedWord)
        return asked < limit && state.cell.compareExchange(Self.requestedWord, expected: asked, desired: limit).exchanged
    }

    /// Hands the next mark to the writer (a view: asks the supervisor) when less than half
    /// an interval is left.
    func markAhead(top: UInt64) {
        let d = durableMark
        guard d &- top < interval / 2 || top >= d else { return }
        let limit = top &+ interval
        let asked = state.cell.load(Self.requestedWord)
        guard asked < limit &- interval / 2,
              state.cell.compareExchange(Self.requestedWord, expected: asked, desired: limit).exchanged else { return }
        guard store != nil else { ask?(key, limit, top); return }
        guard let writer else { state.cell.store(Self.requestedWord, asked); return }
        let accepted = writer.submit(key) { [self] in
            do { try persist(mark: limit, confirmed: top) } catch {
                state.cell.store(Self.requestedWord, durableMark)
                onFailure?("\(error)")
            }
        }
        if !accepted { state.cell.store(Self.requestedWord, asked) }
    }

    /// Supervisor: a worker process asks for `mark` to be made durable. The numbers are a
    /// worker's (untrusted): only a mark above the durable one is written, never one lower.
    public func persistAsked(mark: UInt64, confirmed: UInt64) throws {
        do { try persist(mark: mark, confirmed: min(confirmed, mark)) } catch {
            state.cell.store(Self.requestedWord, durableMark)
            throw error
        }
    }

    func persist(mark: UInt64, confirmed: UInt64) throws {
        guard let store else { return }
        try writeLock.withLock { _ in
            guard mark > durableMark else { return }
            try store.save(key, SAStateRecord(mark: mark, confirmed: confirmed))
            state.cell.store(Self.durableWord, mark)
        }
    }

    /// At a clean stop, once no worker runs: the exact top, so a restart loses nothing.
    /// The top is read from the cell, where the window's holder (here, or a worker process
    /// that has stopped) last published it.
    public func persistExact() throws {
        guard let store else { return }
        try writeLock.withLock { _ in
            let t = top
            try store.save(key, SAStateRecord(mark: t, confirmed: t, clean: true))
            state.cell.store(Self.durableWord, t)
        }
    }
}
