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

/// Complete IP packets waiting for one sendmmsg on a raw socket (one family).
final class RawBatch {
    static let maxPackets = 64
    private var storage = [UInt8](repeating: 0, count: 256 * 1024)
    private var offsets = [UInt32](repeating: 0, count: RawBatch.maxPackets)
    private var lengths = [UInt32](repeating: 0, count: RawBatch.maxPackets)
    private(set) var count = 0
    private var used = 0

    /// Copies `p` in; false when it does not fit (send the batch first).
    @inline(__always)
    func add(_ p: UnsafeRawBufferPointer) -> Bool {
        guard count < RawBatch.maxPackets, used + p.count <= storage.count, !p.isEmpty else { return false }
        let at = used
        storage.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[at..<(at + p.count)]).copyMemory(from: p) }
        offsets[count] = UInt32(at)
        lengths[count] = UInt32(p.count)
        count += 1
        used = (at + p.count + 7) & ~7
        return true
    }

    /// Sends everything; returns how many packets the kernel took.
    func send(fd: Int32) -> Int {
        let n = storage.withUnsafeBytes { s in
            offsets.withUnsafeBufferPointer { o in
                lengths.withUnsafeBufferPointer { l in
                    sluice_raw_send_batch(fd, s.baseAddress!.assumingMemoryBound(to: UInt8.self), o.baseAddress, l.baseAddress, Int32(count))
                }
            }
        }
        return max(0, Int(n))
    }

    func clear() { count = 0; used = 0 }

    /// The packets, for in-memory workers (tests).
    func packets() -> [[UInt8]] {
        (0..<count).map { i in Array(storage[Int(offsets[i])..<Int(offsets[i] + lengths[i])]) }
    }
}

/// One thread, one socket (its queue and, with gso, the queue's GSO twin): receives a
/// batch, runs every packet through the ESP core, sends the ESP segments cut from whole
/// TCP packets in one sendmmsg, and every verdict of the batch in one message train.
///
/// Concurrency: a worker touches only its own sockets, buffers, stats and crypto lane
/// (`lane == index`). Shared state is the database snapshot (immutable), the SAs'
/// atomics and replay mutex, and two small locked tables: the MSS hints (taken per SYN,
/// ICMP error or whole packet) and the local addresses (copied once per batch).
public final class Worker: @unchecked Sendable {
    public let index: Int
    public let stats: WorkerStats
    /// nil for an in-memory worker (benchmarks): verdicts are built but not sent.
    let nfq: NFQueue?
    let queueNumber: UInt16
    let fd: Int32
    let holder: any DatabaseSource
    let markShift: Int
    let passthrough: Bool
    let running = Atomic<Bool>(true)
    let io: QueueIO
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
    /// See `SluiceConfiguration.busyPollMicros`.
    public var busyPollNanos: UInt64 = 0
    var onVerdictError: (@Sendable (Int32) -> Void)?
    /// Raw sockets (IPv4, IPv6) for what a verdict cannot carry: ESP segments of whole TCP
    /// packets, family-changing tunnel packets, IPv4 sealed in prerouting; -1 when absent.
    var rawSockets: (Int32, Int32) = (-1, -1)
    static let skbGSO = UInt32(SLUICE_NFQ_SKB_GSO)
    static let skbChecksumNotReady = UInt32(SLUICE_NFQ_SKB_CSUM_NOTREADY)

    public init(index: Int, queue: NFQueue?, queueNumber: UInt16? = nil, holder: any DatabaseSource, markShift: Int,
                passthrough: Bool, batch: Int = 32) {
        self.index = index
        self.nfq = queue
        self.queueNumber = queue?.queue ?? queueNumber ?? 0
        self.fd = queue?.fd ?? -1
        self.holder = holder
        self.markShift = markShift
        self.passthrough = passthrough
        self.stats = WorkerStats(queue: Int(self.queueNumber))
        self.io = QueueIO(slots: batch)
    }

    /// Fills the receive slots with the messages the kernel would send for `packets`
    /// (IPv4 or IPv6, as queued in `hook`), for in-process benchmarks. Returns the count.
    public func loadFakeBatch(_ packets: [[UInt8]], hook: UInt8 = 3, queue: UInt16? = nil, skbInfo: UInt32 = 0) -> Int {
        let n = min(packets.count, io.slots)
        for i in 0..<n {
            let p = packets[i]
            let proto: UInt16 = p.first.map { $0 >> 4 == 6 ? 0x86DD : 0x0800 } ?? 0x0800
            let len = io.receive.withUnsafeMutableBytes { buf in
                p.withUnsafeBytes { src in
                    sluice_nfq_build_packet(buf.baseAddress! + i * QueueIO.slotSize, QueueIO.slotSize, queue ?? queueNumber,
                                            UInt32(i + 1), proto, hook, skbInfo, src.baseAddress, src.count)
                }
            }
            io.lengths[i] = UInt32(max(0, len))
            io.truncated[i] = 0
        }
        return n
    }

    public func stop() { running.store(false, ordering: .relaxed) }

    public func run() {
        while running.load(ordering: .relaxed) {
            stats.heartbeat.store(monotonicNanos())
            // A merge in progress holds its first packet's verdict: look for more without
            // sleeping, and close it as soon as the queue runs dry.
            let open = merge.count > 0
            let n = io.receiveBatch(fd: fd, wait: !open)
            if n < 0 {
                if open { finishBatch(closingMerge: true) }
                if !isTransient(receiveError: Int32(-n)) { usleep(1000) }
                continue
            }
            processBatch(count: n, closingMerge: false)
            if busyPollNanos > 0 { busyPoll() }
        }
    }

    /// Polls without blocking until `busyPollNanos` pass with nothing to do, yielding the
    /// CPU between polls: on a small machine the threads whose packets we wait for (the
    /// application, the other daemon) must still get to run.
    func busyPoll() {
        var deadline = monotonicNanos() &+ busyPollNanos
        while running.load(ordering: .relaxed) && monotonicNanos() < deadline {
            let m = io.receiveBatch(fd: fd, wait: false)
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

    func flushVerdicts() {
        pendingAccepts = 0
        if io.flush(fd: fd) < 0 { stats.ioErrors.add() }
    }

    /// In-memory workers (tests) keep what they would have sent on the raw sockets.
    var capturedRaw: [[UInt8]] = []

    func flushRaw() {
        flushRaw(rawOut.0, fd: rawSockets.0)
        flushRaw(rawOut.1, fd: rawSockets.1)
    }

    private func flushRaw(_ batch: RawBatch, fd: Int32) {
        guard batch.count > 0 else { return }
        if nfq == nil && io.keepLastTrain { capturedRaw += batch.packets() }
        let sent = fd >= 0 ? batch.send(fd: fd) : (nfq == nil ? batch.count : 0)
        stats.injected.add(UInt64(sent))
        if sent < batch.count {
            // What the kernel did not take is lost: a drop with its reason, as every drop.
            let refused = UInt64(batch.count - sent)
            stats.injectErrors.add(refused)
            stats.drop(.injectFailed, count: refused)
        }
        batch.clear()
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
        stats.recordLatency(monotonicNanos() &- start)
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
        case let .drop(reason):
            stats.drop(reason)
            verdict(msg, accept: false, mark: nil, rewritten: false)
        }
    }

    /// A GSO packet: cut, sealed and sent here as ESP packets on the raw socket; the
    /// original then gets DROP (it left as ESP, so it is not counted as a drop) and the
    /// result is nil. BYPASS and refusals come back as an `Outcome` to settle as usual.
    func handleWhole(_ msg: sluice_nfq_message, slot: Int, database db: SecurityDatabase, context ctx: ProcessingContext) -> Outcome? {
        let whole: WholeOutcome
        do {
            try packet.load(io.payload(slot: slot, msg))
            whole = PacketProcessor.processWhole(&packet, scratch: &segment, database: db, context: ctx) { esp in
                queueRaw(esp)
            }
        } catch {
            whole = .drop(error)
        }
        switch whole {
        case .unchanged: return .unchanged
        case let .drop(reason): return .drop(reason)
        case let .segmented(count, failed, reason):
            stats.wholePackets.add()
            stats.segments.add(UInt64(count))
            if count > 0 { stats.sealed.add() }
            if let reason, failed > 0 { stats.drop(reason, count: UInt64(failed)) }
            verdict(msg, accept: false, mark: nil, rewritten: false)
            return nil
        }
    }

    /// Offers a decrypted packet to the merge. True when it was taken: appended (its own
    /// verdict is DROP: its bytes travel in the first packet's) or made the start of a new
    /// merge (its verdict waits for `closeMerge`).
    func tryMerge(_ msg: sluice_nfq_message, mark: UInt32) -> Bool {
        guard let h = packet.withBytes({ try? IPHeaderInfo.parse($0) }), h.proto == IPProto.tcp,
              !mustInject(msg, sourceIsLocal: false), locals.contains(h.dst) else {
            closeMerge()
            return false
        }
        if merge.count > 0 && mergeFirst.queue == msg.queue && packet.withBytes({ merge.append($0, header: h) }) {
            stats.coalesced.add()
            verdict(msg, accept: false, mark: nil, rewritten: false)
            return true
        }
        closeMerge()
        guard packet.withBytes({ merge.start($0, header: h) }) else { return false }
        mergeFirst = msg
        mergeMark = mark
        return true
    }

    /// Sends the verdict for the merge in progress: its first packet, now carrying all of it.
    func closeMerge() {
        guard merge.count > 0 else { return }
        merge.finish()
        verdict(mergeFirst, accept: true, mark: mergeMark, rewritten: true, from: merge.buffer)
        merge.reset()
    }

    /// Adds an IP packet to its family's raw batch, sending the batch first when full.
    /// Accepts already in the verdict buffer go out first: a raw send must not overtake them.
    @inline(__always)
    func queueRaw(_ p: UnsafeRawBufferPointer) {
        if pendingAccepts > 0 { flushVerdicts() }
        let batch = (p.first ?? 0) >> 4 == 6 ? rawOut.1 : rawOut.0
        if !batch.add(p) {
            flushRaw()
            if !batch.add(p) { stats.injectErrors.add(); stats.drop(.injectFailed) } // larger than a batch slot
        }
    }

    static let hookPrerouting: UInt8 = 0 // NF_INET_PRE_ROUTING

    /// Packets the kernel cannot take back through the verdict, sent on a raw socket
    /// instead (the original then gets DROP, which is not counted as a drop):
    /// - a packet whose address family changed (4-in-6, 6-in-4): the kernel re-injects
    ///   only the family it queued;
    /// - an IPv4 packet that we now originate (ESP or an ICMP error from our address)
    ///   but that was queued in PREROUTING: input routing would drop it as a martian
    ///   (local source address on an incoming packet).
    @inline(__always)
    func mustInject(_ msg: sluice_nfq_message, sourceIsLocal: Bool) -> Bool {
        guard packet.count > 0, let first = try? packet.u8(0) else { return false }
        let v6 = first >> 4 == 6
        if v6 != (msg.hw_protocol == 0x86DD) { return true }
        return !v6 && sourceIsLocal && msg.hook == Worker.hookPrerouting
    }

    /// Hands the rewritten packet on: in the verdict, or on a raw socket when the kernel
    /// could not take it back (see `mustInject`).
    @inline(__always)
    func passRewritten(_ msg: sluice_nfq_message, mark: UInt32, sourceIsLocal: Bool) {
        if mustInject(msg, sourceIsLocal: sourceIsLocal) {
            packet.withBytes { queueRaw($0) }
            verdict(msg, accept: false, mark: nil, rewritten: false)
        } else {
            verdict(msg, accept: true, mark: mark, rewritten: true)
        }
    }

    /// Every packet gets exactly one verdict, on the queue it came from; a full verdict
    /// buffer is flushed first. An accepted packet must not overtake raw sends queued
    /// before it, so those go out first.
    @inline(__always)
    func verdict(_ msg: sluice_nfq_message, accept: Bool, mark: UInt32?, rewritten: Bool, from other: PacketBuffer? = nil) {
        if accept {
            stats.accepted.add()
            if rawOut.0.count > 0 || rawOut.1.count > 0 { flushRaw() }
        }
        for _ in 0..<2 {
            let ok: Bool
            if rewritten {
                let source = other ?? packet
                stats.bytesOut.add(UInt64(source.count))
                ok = source.withBytes { io.addVerdict(queue: msg.queue, id: msg.packet_id, accept: accept, mark: mark, payload: $0) }
            } else {
                ok = io.addVerdict(queue: msg.queue, id: msg.packet_id, accept: accept, mark: mark, payload: nil)
            }
            if ok {
                if accept { pendingAccepts += 1 }
                return
            }
            flushVerdicts()
        }
        stats.ioErrors.add() // cannot happen: an empty buffer holds any packet
    }
}
