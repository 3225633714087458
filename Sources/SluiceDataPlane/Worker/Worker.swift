import CSluiceNetfilter
import SluiceCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A fixed database (tests and benchmarks); the daemon's workers read the `SAManager`.
public final class DatabaseHolder: DatabaseSource {
    private let current: Mutex<SecurityDatabase>
    public init(_ db: SecurityDatabase) { current = Mutex(db) }
    public var database: SecurityDatabase { current.withLock { $0 } }
    public func replace(_ db: SecurityDatabase) { current.withLock { $0 = db } }
}

/// One thread, one socket (its queue and, with gso, the queue's GSO twin): receives a
/// batch, runs every packet through the ESP core, sends the ESP segments cut from whole
/// TCP packets in one sendmmsg, and every verdict of the batch in one message train.
/// This file is the receive loop and the per-packet decision; `WorkerSend.swift` holds
/// verdicts and raw-send ordering, `WorkerOffload.swift` whole GSO packets and the
/// receive merge. All I/O goes through `PacketIO` (`MemoryIO` in tests).
///
/// Concurrency: a worker touches only its own sockets, buffers, stats and crypto lane
/// (`lane == index`). Shared state is the database snapshot (immutable), the SAs'
/// atomics and replay mutex, and two small locked tables: the MSS hints (taken per SYN,
/// ICMP error or whole packet) and the local addresses (copied once per batch).
public final class Worker: @unchecked Sendable {
    public let index: Int
    public let stats: WorkerStats
    let queueNumber: UInt16
    let packetIO: PacketIO
    let holder: any DatabaseSource
    let markShift: Int
    let passthrough: Bool
    let running = Atomic<Bool>(true)
    let io: QueueBuffers
    var packet = PacketBuffer()
    /// One segment of a GSO packet, before and after sealing.
    var segment = PacketBuffer()
    /// Packets for the raw sockets (IPv4, IPv6), sent in batches.
    let rawOut = (RawBatch(), RawBatch())
    /// Accept verdicts waiting in the verdict buffer: a raw send must not overtake them.
    var pendingAccepts = 0
    /// Shared with every worker: receivers' MSS for sizing GSO segments.
    public var mssHints: MSSHints?
    /// When set, decrypted TCP to these addresses is merged (see `TCPCoalescer`).
    public var localAddresses: LocalAddresses?
    var locals: Set<IPAddress> = []
    var merge = TCPCoalescer()
    var mergeFirst = sluice_nfq_message()
    var mergeMark: UInt32 = 0
    /// Packets waiting for an SA being negotiated (see `WorkerHold.swift`).
    var holdQueue = HoldQueue()
    /// Which PROTECT policies without an SA hold their packets (those an IKE agent
    /// negotiates on demand); nil: none, every such packet is dropped as no_sa.
    public var holds: (@Sendable (String) -> Bool)?
    /// See `SluiceConfiguration.busyPollMicros`.
    public var busyPollNanos: UInt64 = 0
    var onVerdictError: (@Sendable (Int32) -> Void)?
    static let skbGSO = UInt32(SLUICE_NFQ_SKB_GSO)
    static let skbChecksumNotReady = UInt32(SLUICE_NFQ_SKB_CSUM_NOTREADY)

    /// `queueNumber`: the plain queue this worker serves (its stats label). `stats`: the
    /// counters to write (the daemon's, in its arena); nil makes fresh ones.
    public init(index: Int, io: PacketIO, queueNumber: UInt16, holder: any DatabaseSource, markShift: Int,
                passthrough: Bool, batch: Int = 32, stats: WorkerStats? = nil) {
        self.index = index
        self.packetIO = io
        self.queueNumber = queueNumber
        self.holder = holder
        self.markShift = markShift
        self.passthrough = passthrough
        self.stats = stats ?? WorkerStats(queue: Int(queueNumber))
        self.io = QueueBuffers(slots: batch)
    }

    /// One receive without waiting and the batch it brings (tests, benchmarks); returns
    /// how many datagrams were processed.
    @discardableResult
    public func runOnce() -> Int {
        let n = packetIO.receive(into: io, wait: false)
        guard n > 0 else { return 0 }
        processBatch(count: n)
        return n
    }

    public func stop() { running.store(false, ordering: .relaxed) }

    public func run() {
        while running.load(ordering: .relaxed) {
            stats.heartbeat.store(monotonicNanos())
            // A merge in progress holds its first packet's verdict: look for more without
            // sleeping, and close it as soon as the queue runs dry.
            let open = merge.count > 0
            // Holding packets for an SA being negotiated: poll every 2 ms instead of sleeping
            // in the receive, so they leave as soon as the SA is in (bounded by the hold timeout).
            let holding = !holdQueue.isEmpty
            let n = packetIO.receive(into: io, wait: !open && !holding)
            if n < 0 {
                if open { finishBatch(closingMerge: true) }
                if holding {
                    releaseHeld()
                    usleep(2000)
                }
                if !isTransient(receiveError: Int32(-n)) { usleep(1000) }
                continue
            }
            processBatch(count: n, closingMerge: false)
            if busyPollNanos > 0 { busyPoll() }
            if !holdQueue.isEmpty { releaseHeld() }
        }
    }

    /// Polls without blocking until `busyPollNanos` pass with nothing to do, yielding the
    /// CPU between polls: on a small machine the threads whose packets we wait for (the
    /// application, the other daemon) must still get to run.
    func busyPoll() {
        var deadline = monotonicNanos() &+ busyPollNanos
        while running.load(ordering: .relaxed) && monotonicNanos() < deadline {
            let m = packetIO.receive(into: io, wait: false)
            if m > 0 {
                processBatch(count: m)
                deadline = monotonicNanos() &+ busyPollNanos
            } else if m < 0 && !isTransient(receiveError: Int32(-m)) {
                return
            } else {
                sched_yield()
            }
        }
    }

    /// Counts a failed receive. Timeouts, signals and ENOBUFS (the kernel dropped for a
    /// full socket: counted, then go on) are transient; anything else is an I/O error.
    func isTransient(receiveError code: Int32) -> Bool {
        switch code {
        case EAGAIN, EINTR: return true
        case ENOBUFS: stats.receiveOverruns.add(); return true
        default: stats.ioErrors.add(); return false
        }
    }

    /// Runs every received message of the batch through the core and sends the verdicts.
    /// `closingMerge: false` (the receive loop) lets a merge of decrypted TCP continue
    /// into the next batch when one is already waiting.
    public func processBatch(count n: Int, closingMerge: Bool = true) {
        stats.batches.add()
        if UInt64(n) > stats.maxBatch.load { stats.maxBatch.store(UInt64(n)) }
        let db = holder.database
        let now = monotonicNanos()
        let ctx = ProcessingContext(lane: index, now: now / 1_000_000_000, mssHints: mssHints)
        if let localAddresses { locals = localAddresses.current }
        for slot in 0..<n {
            if io.truncated[slot] != 0 { stats.ioErrors.add(); continue }
            let m = io.parse(slot: slot)
            if m < 0 { stats.ioErrors.add(); continue }
            for k in 0..<m {
                let msg = io.messages[k]
                if msg.kind == 2 {
                    if msg.error != 0 { stats.verdictErrors.add(); onVerdictError?(msg.error) }
                    continue
                }
                handle(msg, slot: slot, database: db, context: ctx)
            }
        }
        finishBatch(closingMerge: closingMerge)
    }

    /// Sends what the batch produced: the merge (unless it may go on), raw packets, verdicts.
    func finishBatch(closingMerge: Bool) {
        if closingMerge { closeMerge() }
        flushRaw()
        flushVerdicts()
    }

    @inline(__always)
    func handle(_ msg: sluice_nfq_message, slot: Int, database db: SecurityDatabase, context ctx: ProcessingContext) {
        #if !SLUICE_NO_STATS
        let start = monotonicNanos()
        #endif
        stats.received.add()
        stats.bytesIn.add(UInt64(msg.payload_len))
        let mark = RulesetBuilder.verdictMark(original: msg.has_mark != 0 ? msg.mark : 0, shift: markShift)
        let outcome: Outcome?
        if msg.cap_len != 0 && msg.cap_len > msg.payload_len {
            outcome = .drop(.kernelTruncated)
        } else if passthrough {
            outcome = .unchanged
        } else if msg.skb_info & Worker.skbGSO != 0 {
            outcome = handleWhole(msg, slot: slot, database: db, context: ctx)
        } else {
            do {
                try packet.load(io.payload(slot: slot, msg))
                if msg.skb_info & Worker.skbChecksumNotReady != 0 {
                    // Only a GSO queue sends these; the checksum must be whole before it is encrypted.
                    try packet.withMutableBytes { (p) throws(DropReason) in
                        try Checksum.finishTransport(p, header: try IPHeaderInfo.parse(UnsafeRawBufferPointer(p)))
                    }
                }
                outcome = PacketProcessor.process(&packet, database: db, context: ctx)
            } catch {
                outcome = .drop(error)
            }
        }
        if let outcome { settle(msg, outcome, mark: mark) }
        #if !SLUICE_NO_STATS
        stats.recordLatency(monotonicNanos() &- start, WorkerStats.LatencyClass(outcome))
        #endif
    }

    /// Counts the outcome and gives the packet its verdict (or sends it on a raw socket).
    @inline(__always)
    func settle(_ msg: sluice_nfq_message, _ outcome: Outcome, mark: UInt32) {
        switch outcome {
        case .unchanged:
            stats.unchanged.add()
            verdict(msg, accept: true, mark: mark, rewritten: false)
        case .sealed:
            stats.sealed.add()
            passRewritten(msg, mark: mark, sourceIsLocal: true)
        case .opened:
            stats.opened.add()
            if localAddresses == nil || !tryMerge(msg, mark: mark) {
                passRewritten(msg, mark: mark, sourceIsLocal: false)
            }
        case let .icmpError(reason):
            stats.drop(reason)
            stats.icmpSent.add()
            passRewritten(msg, mark: mark, sourceIsLocal: true)
        case .drop(.noSA) where holds != nil && msg.skb_info & Worker.skbGSO == 0:
            // Being negotiated: the packet waits for its SA (a copy; the original is dropped).
            switch hold() {
            case .held: break
            case .full: stats.drop(.holdFull)
            case .notHeld: stats.drop(.noSA)
            }
            verdict(msg, accept: false, mark: nil, rewritten: false)
        case let .drop(reason):
            stats.drop(reason)
            verdict(msg, accept: false, mark: nil, rewritten: false)
        }
    }
}
