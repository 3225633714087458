import SluiceCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A counter written by one worker and read by anyone; relaxed atomics, no lock.
public final class Counter: Sendable {
    private let storage = Atomic<UInt64>(0)
    public init() {}
    @inline(__always) public func add(_ n: UInt64 = 1) {
        #if !SLUICE_NO_STATS // a benchmark build measures what counting costs
        storage.wrappingAdd(n, ordering: .relaxed)
        #endif
    }
    public var load: UInt64 { storage.load(ordering: .relaxed) }
    public var value: UInt64 { load }
    public func store(_ v: UInt64) { storage.store(v, ordering: .relaxed) }
}

/// Everything one worker counts. Only its worker writes; stats readers load.
public final class WorkerStats: Sendable {
    public let queue: Int
    public let received = Counter()
    public let accepted = Counter()
    public let dropped = Counter()
    public let sealed = Counter()
    public let opened = Counter()
    public let unchanged = Counter()
    public let icmpSent = Counter()
    public let bytesIn = Counter()
    public let bytesOut = Counter()
    public let batches = Counter()
    public let receiveOverruns = Counter()   // ENOBUFS: the kernel dropped for a full socket
    public let verdictErrors = Counter()     // the kernel refused a verdict
    public let ioErrors = Counter()
    public let maxBatch = Counter()
    public let injected = Counter()          // packets sent on a raw socket instead of in a verdict
    public let injectErrors = Counter()
    public let wholePackets = Counter()      // GSO packets taken whole and cut here
    public let segments = Counter()          // ESP packets sent for them
    public let coalesced = Counter()         // decrypted TCP segments merged into the one before
    public let held = Counter()              // packets held for an SA being negotiated (acquire)
    public let heldSent = Counter()          // of those, sent once the SA was there
    public let drops: [Counter] = DropReason.allCases.map { _ in Counter() }
    /// Processing time per packet by direction (`LatencyClass`): counts per bucket of
    /// `latencyBounds` (not cumulative; the last one is above 100 ms), and the sum in ns.
    public let latency: [[Counter]] = LatencyClass.allCases.map { _ in (0...latencyBounds.count).map { _ in Counter() } }
    public let latencySum: [Counter] = LatencyClass.allCases.map { _ in Counter() }
    /// Last time the loop went round (for the systemd watchdog).
    public let heartbeat = Counter()

    public init(queue: Int) { self.queue = queue }

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
