import SluiceCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A counter written by one worker and read by anyone; relaxed atomics, no lock. Its word
/// lives in a shared arena, so a worker process's counts are the supervisor's to read and
/// outlive the worker.
public struct Counter: Sendable {
    let word: SharedCounter
    /// Keeps a standalone counter's cell (nil for one in a `WorkerStats` region).
    let owner: SharedCell?
    /// A counter of its own (benchmarks, tests).
    public init() {
        let cell = try! SharedCell(in: .process)   // full only with 16 Mi counters in use
        word = cell.cell.counter(0)
        owner = cell
    }
    init(_ word: SharedCounter) { self.word = word; owner = nil }
    @inline(__always) public func add(_ n: UInt64 = 1) {
        #if !SLUICE_NO_STATS // a benchmark build measures what counting costs
        word.add(n)
        #endif
    }
    public var load: UInt64 { word.load }
    public var value: UInt64 { load }
    public func store(_ v: UInt64) { word.store(v) }
}

/// Everything one worker counts. Only its worker writes; stats readers load. The counters
/// are one run of arena cells (`region`), in the order of `init`: the supervisor keeps the
/// run for a queue across its worker's restarts, and a worker process views the same run.
public final class WorkerStats: Sendable {
    public let queue: Int
    public let received: Counter
    public let accepted: Counter
    public let dropped: Counter
    public let sealed: Counter
    public let opened: Counter
    public let unchanged: Counter
    public let icmpSent: Counter
    public let bytesIn: Counter
    public let bytesOut: Counter
    public let batches: Counter
    public let receiveOverruns: Counter   // ENOBUFS: the kernel dropped for a full socket
    public let verdictErrors: Counter     // the kernel refused a verdict
    public let ioErrors: Counter
    public let maxBatch: Counter
    public let injected: Counter          // packets sent on a raw socket instead of in a verdict
    public let injectErrors: Counter
    public let wholePackets: Counter      // GSO packets taken whole and cut here
    public let segments: Counter          // ESP packets sent for them
    public let coalesced: Counter         // decrypted TCP segments merged into the one before
    public let held: Counter              // packets held for an SA being negotiated (acquire)
    public let heldSent: Counter          // of those, sent once the SA was there
    public let drops: [Counter]
    /// Processing time per packet by direction (`LatencyClass`): counts per bucket of
    /// `latencyBounds` (not cumulative; the last one is above 100 ms), and the sum in ns.
    public let latency: [[Counter]]
    public let latencySum: [Counter]
    /// Last time the loop went round (for the systemd watchdog and hang detection).
    public let heartbeat: Counter

    static let namedCounters = 22
    /// Words the counters take, and the cells of their run.
    public static let words = namedCounters + DropReason.allCases.count
        + LatencyClass.allCases.count * (latencyBounds.count + 2)
    public static let cells = (words + SharedArena.wordsPerCell - 1) / SharedArena.wordsPerCell

    let arena: SharedArena
    /// The first cell of the run; it goes back to the arena with this object unless viewed.
    public let firstCell: Int
    let owned: Bool

    /// New, zeroed counters in `arena`.
    public convenience init(queue: Int, arena: SharedArena = .process) {
        // A region of a few cells fails only when the arena is full of SAs; the daemon sizes it.
        guard let run = arena.region(cells: Self.cells) else { fatalError("shared arena full: no room for a worker's counters") }
        self.init(queue: queue, arena: arena, first: run[0], owned: true)
    }

    /// A worker process's view of the run the supervisor keeps for its queue; nil when
    /// the run does not fit in the arena.
    public convenience init?(queue: Int, viewing first: Int, of arena: SharedArena) {
        guard first >= 0, first + Self.cells <= arena.cellCount, let c = arena.cell(first) else { return nil }
        self.init(queue: queue, arena: arena, first: c, owned: false)
    }

    init(queue: Int, arena: SharedArena, first: ArenaCell, owned: Bool) {
        self.queue = queue
        self.arena = arena
        firstCell = first.index
        self.owned = owned
        var next = 0
        func take() -> Counter {
            defer { next += 1 }
            let cell = arena.cell(first.index + next / SharedArena.wordsPerCell)!
            return Counter(cell.counter(next % SharedArena.wordsPerCell))
        }
        received = take(); accepted = take(); dropped = take(); sealed = take(); opened = take()
        unchanged = take(); icmpSent = take(); bytesIn = take(); bytesOut = take(); batches = take()
        receiveOverruns = take(); verdictErrors = take(); ioErrors = take(); maxBatch = take()
        injected = take(); injectErrors = take(); wholePackets = take(); segments = take()
        coalesced = take(); held = take(); heldSent = take(); heartbeat = take()
        drops = DropReason.allCases.map { _ in take() }
        latency = LatencyClass.allCases.map { _ in (0...Self.latencyBounds.count).map { _ in take() } }
        latencySum = LatencyClass.allCases.map { _ in take() }
        precondition(next == Self.words, "WorkerStats.words is \(Self.words), init took \(next)")
    }

    deinit {
        guard owned else { return }
        for i in firstCell..<firstCell + Self.cells { if let c = arena.cell(i) { arena.release(c) } }
    }

    @inline(__always) func drop(_ r: DropReason, count: UInt64 = 1) {
        dropped.add(count)
        drops[r.index].add(count)
    }

    /// Bucket upper bounds in nanoseconds, 1 us to 100 ms: the Prometheus histogram
    /// `sluice_queue_latency_seconds` exports these, and `stats` takes its p50/p99 from them.
    public static let latencyBounds: [UInt64] = [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
                                                 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000]

    /// Which way a packet went: sealed (out), opened (in), or neither (passed unchanged, dropped).
    public enum LatencyClass: Int, CaseIterable, Sendable {
        case outbound, inbound, other
        public var label: String { ["out", "in", "other"][rawValue] }
        init(_ o: Outcome?) {
            switch o {
            case .sealed?, nil: self = .outbound   // nil: a whole GSO packet, sealed segment by segment
            case .opened?: self = .inbound
            default: self = .other
            }
        }
    }

    @inline(__always) func recordLatency(_ ns: UInt64, _ c: LatencyClass) {
        var b = 0
        while b < Self.latencyBounds.count, ns > Self.latencyBounds[b] { b += 1 }
        latency[c.rawValue][b].add()
        latencySum[c.rawValue].add(ns)
    }

    /// The bucket counts of all directions together.
    public var latencyTotals: [UInt64] {
        (0...Self.latencyBounds.count).map { b in latency.reduce(0) { $0 + $1[b].load } }
    }

    /// The q-quantile in nanoseconds, interpolated within its bucket as Prometheus'
    /// histogram_quantile does (so `stats` and a dashboard show the same figure).
    public static func quantile(_ q: Double, buckets counts: [UInt64]) -> UInt64 {
        let total = counts.reduce(0, +)
        guard total > 0 else { return 0 }
        let rank = q * Double(total)
        var below: UInt64 = 0
        for (i, c) in counts.enumerated() {
            if c > 0, Double(below + c) >= rank {
                // Above the last bound Prometheus answers that bound; so do we.
                guard i < latencyBounds.count else { return latencyBounds[latencyBounds.count - 1] }
                let lower = i == 0 ? 0 : Double(latencyBounds[i - 1]), upper = Double(latencyBounds[i])
                return UInt64(lower + (upper - lower) * max(0, rank - Double(below)) / Double(c))
            }
            below += c
        }
        return latencyBounds[latencyBounds.count - 1]
    }
}
