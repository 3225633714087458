import CSluiceCrypto
import Synchronization

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
/// Concurrency: `next` is taken with one atomic add per packet by any worker. Numbers up to
/// `reserved` are on disk; when fewer than half a block remain, a write of the next block
/// is handed to the background writer; a worker that still reaches `reserved` writes
/// itself under `writeLock`. A number is never handed out twice, even when a write fails.
public final class OutboundSequence: Sendable {
    public let key: SAStateKey
    let next: Atomic<UInt64>
    let reserved: Atomic<UInt64>
    /// The limit of the write handed to the writer (so it is handed over once).
    let requested: Atomic<UInt64>
    let writeLock = Mutex<Void>(())
    let store: SAStateStore
    let writer: DeferredWriter?
    let block: UInt64
    let maxSequence: UInt64
    let onFailure: (@Sendable (String) -> Void)?

    /// Loads the record: the counter continues above anything that may have been sent.
    public init(_ c: SAConfig, store: SAStateStore, writer: DeferredWriter?, block: UInt64,
                onFailure: (@Sendable (String) -> Void)? = nil) throws {
        key = SAStateKey(c)
        let used = try store.load(key, legacyName: c.name)?.mark ?? 0
        next = Atomic(used &+ 1)
        reserved = Atomic(used)
        requested = Atomic(used)
        self.store = store
        self.writer = writer
        self.block = max(1, block)
        maxSequence = c.maxSequence
        self.onFailure = onFailure
    }

    /// The last number handed out (for stats).
    public var current: UInt64 { next.load(ordering: .relaxed) &- 1 }
    /// How far the durable reservation reaches.
    public var reservedThrough: UInt64 { reserved.load(ordering: .acquiring) }

    /// Makes the first block durable, so the first packet does not wait (control plane).
    public func prime() throws {
        try reserve(through: min(max(reserved.load(ordering: .relaxed), current) &+ block, maxSequence))
    }

    @inline(__always)
    func take(exhausted: () -> Void) throws(DropReason) -> UInt64 {
        let seq = next.wrappingAdd(1, ordering: .relaxed).oldValue
        guard seq <= maxSequence else { exhausted(); throw .seqExhausted }
        let r = reserved.load(ordering: .acquiring)
        if seq > r {
            do { try reserve(through: min(max(seq, r &+ block), maxSequence)) } catch { throw .stateError }
        } else if r &- seq < block / 2 {
            reserveAhead(from: r)
        }
        return seq
    }

    /// Hands the next block to the writer once.
    func reserveAhead(from r: UInt64) {
        let limit = min(r &+ block, maxSequence)
        guard let writer, limit > r else { return }
        let asked = requested.load(ordering: .relaxed)
        guard asked < limit, requested.compareExchange(expected: asked, desired: limit, ordering: .relaxed).exchanged else { return }
        let accepted = writer.submit(key) { [self] in
            do { try reserve(through: limit) } catch {
                requested.store(reserved.load(ordering: .relaxed), ordering: .relaxed) // let the next packet ask again
                onFailure?("\(error)")
            }
        }
        if !accepted { requested.store(r, ordering: .relaxed) }
    }

    /// Writes `limit` durably (never lower than what is on disk), then publishes it.
    func reserve(through limit: UInt64) throws {
        try writeLock.withLock { _ in
            guard limit > reserved.load(ordering: .relaxed) else { return }
            try store.save(key, SAStateRecord(mark: limit))
            reserved.store(limit, ordering: .releasing)
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
/// Concurrency: the window is behind `window`'s mutex, held for the check and the update,
/// never during crypto or I/O. The mark is written by the background writer, or by the
/// worker itself (before accepting) when a number jumps past the durable mark.
public final class InboundReplay: Sendable {
    public let key: SAStateKey
    struct Window {
        var bits: ReplayWindow
        /// From the restored record: at or below `floor` refused; above `certain` as replay_restart.
        var floor: UInt64
        var certain: UInt64
    }
    let window: Mutex<Window>
    let durable: Atomic<UInt64>
    let requested: Atomic<UInt64>
    let writeLock = Mutex<Void>(())
    let store: SAStateStore
    let writer: DeferredWriter?
    let interval: UInt64
    let onFailure: (@Sendable (String) -> Void)?

    public init(_ c: SAConfig, store: SAStateStore, writer: DeferredWriter?, interval: UInt64,
                onFailure: (@Sendable (String) -> Void)? = nil) throws {
        key = SAStateKey(c)
        let record = try store.load(key, legacyName: c.name)
        let floor = record.map { $0.clean ? $0.confirmed : max($0.mark, $0.confirmed) } ?? 0
        window = Mutex(Window(bits: ReplayWindow(size: c.replayWindow, restoredTop: floor), floor: floor,
                              certain: record?.confirmed ?? 0))
        durable = Atomic(floor)
        requested = Atomic(floor)
        self.store = store
        self.writer = writer
        self.interval = max(1, interval)
        self.onFailure = onFailure
    }

    public var top: UInt64 { window.withLock { $0.bits.top } }
    public var durableMark: UInt64 { durable.load(ordering: .acquiring) }

    /// Writes the first mark ahead, so the first packets do not wait (control plane).
    public func prime() throws {
        let t = top
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
        if seq > durable.load(ordering: .acquiring) {
            // Past the mark on disk (a jump, or the writer fell behind): write before accepting.
            do { try persist(mark: seq &+ interval, confirmed: window.withLock { $0.bits.top }) } catch {
                onFailure?("\(error)")
                return .stateError
            }
        }
        let (refusal, top): (DropReason?, UInt64) = window.withLock { w in
            w.bits.update(seq) ? (nil, w.bits.top) : (Self.refusal(seq, w), w.bits.top)
        }
        if refusal == nil { markAhead(top: top) }
        return refusal
    }

    /// Hands the next mark to the writer when less than half an interval is left.
    func markAhead(top: UInt64) {
        let d = durable.load(ordering: .relaxed)
        guard let writer, d &- top < interval / 2 || top >= d else { return }
        let limit = top &+ interval
        let asked = requested.load(ordering: .relaxed)
        guard asked < limit &- interval / 2,
              requested.compareExchange(expected: asked, desired: limit, ordering: .relaxed).exchanged else { return }
        let accepted = writer.submit(key) { [self] in
            do { try persist(mark: limit, confirmed: top) } catch {
                requested.store(durable.load(ordering: .relaxed), ordering: .relaxed)
                onFailure?("\(error)")
            }
        }
        if !accepted { requested.store(asked, ordering: .relaxed) }
    }

    func persist(mark: UInt64, confirmed: UInt64) throws {
        try writeLock.withLock { _ in
            guard mark > durable.load(ordering: .relaxed) else { return }
            try store.save(key, SAStateRecord(mark: mark, confirmed: confirmed))
            durable.store(mark, ordering: .releasing)
        }
    }

    /// At a clean stop, once no worker runs: the exact top, so a restart loses nothing.
    public func persistExact() throws {
        try writeLock.withLock { _ in
            let t = window.withLock { $0.bits.top }
            try store.save(key, SAStateRecord(mark: t, confirmed: t, clean: true))
            durable.store(t, ordering: .releasing)
        }
    }
}
