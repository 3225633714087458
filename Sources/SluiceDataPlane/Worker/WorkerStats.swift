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
    /// Processing time per packet, log2 buckets of nanoseconds.
    public let latency: [Counter] = (0..<40).map { _ in Counter() }
    /// Last time the loop went round (for the systemd watchdog).
    public let heartbeat = Counter()

    public init(queue: Int) { self.queue = queue }

    @inline(__always) func drop(_ r: DropReason, count: UInt64 = 1) {
        dropped.add(count)
        drops[r.index].add(count)
    }

    @inline(__always) func recordLatency(_ ns: UInt64) {
        let b = min(39, ns == 0 ? 0 : 63 - ns.leadingZeroBitCount)
        latency[b].add()
    }

    /// Approximate percentile (upper bound of the bucket), in nanoseconds.
    public func percentile(_ q: Double) -> UInt64 {
        let counts = latency.map(\.load)
        let total = counts.reduce(0, +)
        guard total > 0 else { return 0 }
        let target = UInt64((Double(total) * q).rounded(.up))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() {
            seen += c
            if seen >= target { return UInt64(1) << UInt64(i + 1) }
        }
        return UInt64(1) << 40
    }
}
