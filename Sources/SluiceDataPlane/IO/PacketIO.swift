import CSluiceNetfilter
import SluiceCore
#if canImport(Glibc)
import Glibc
#endif

/// A worker's only way in and out (wireguard-go's conn.Bind): datagrams from its queue
/// socket, verdict trains back to it, and complete IP packets on the raw sockets for what
/// a verdict cannot carry. `KernelIO` is the real thing; `MemoryIO` is a fake kernel for
/// tests and benchmarks, so the worker loop runs without root.
///
/// Concurrency: owned by one worker thread, like the buffers it fills.
public protocol PacketIO: AnyObject {
    /// Fills receive slots with datagrams; returns their count or -errno (-EAGAIN: none).
    func receive(into b: QueueBuffers, wait: Bool) -> Int
    /// Sends one train of verdict messages; returns 0 or -errno.
    func sendVerdicts(_ train: UnsafeRawBufferPointer) -> Int
    /// Sends complete IP packets of one family; returns how many the kernel took.
    func sendRaw(_ batch: RawBatch, family: IPAddress.Family) -> Int
}

/// The kernel: one NFQUEUE netlink socket (a queue and its GSO twin) and the raw sockets
/// (IPv4, IPv6; -1 when they could not be opened: sends then fail and are counted).
public final class KernelIO: PacketIO {
    let fd: Int32
    let raw4: Int32, raw6: Int32

    public init(queueSocket fd: Int32, raw4: Int32 = -1, raw6: Int32 = -1) {
        self.fd = fd; self.raw4 = raw4; self.raw6 = raw6
    }

    public func receive(into b: QueueBuffers, wait: Bool) -> Int {
        let n = b.receive.withUnsafeMutableBytes { buf in
            b.lengths.withUnsafeMutableBufferPointer { l in
                b.truncated.withUnsafeMutableBufferPointer { t in
                    sluice_recv_batch(fd, buf.baseAddress, QueueBuffers.slotSize, Int32(b.slots), l.baseAddress, t.baseAddress, wait ? 0 : 1)
                }
            }
        }
        return Int(n)
    }

    public func sendVerdicts(_ train: UnsafeRawBufferPointer) -> Int {
        while true {
            let sent = sluice_send(fd, train.baseAddress, train.count)
            if sent < 0 && Int32(-sent) == EINTR { continue }
            return sent < 0 ? Int(sent) : 0
        }
    }

    public func sendRaw(_ batch: RawBatch, family: IPAddress.Family) -> Int {
        let fd = family == .v4 ? raw4 : raw6
        return fd >= 0 ? batch.send(fd: fd) : 0
    }
}

/// A fake kernel in memory: packets go in as the NFQUEUE messages the kernel would send,
/// verdict trains and raw packets are kept for the test to read.
public final class MemoryIO: PacketIO {
    private var pending: [[[UInt8]]] = []
    private var cursor = 0
    private weak var lastFilled: QueueBuffers?
    /// Deliver the queued batches round and round (benchmarks: no allocation per batch).
    public var cycle = false
    /// Keep what is sent (tests); benchmarks turn it off so memory stays flat.
    public var record = true
    /// The kernel refuses every raw send (as sendmmsg failing).
    public var refuseRaw = false
    public private(set) var verdictTrains: [[UInt8]] = []
    public private(set) var raw: [[UInt8]] = []
    private var nextID: UInt32 = 1

    public init() {}

    /// The last verdict train sent.
    public var lastTrain: [UInt8] { verdictTrains.last ?? [] }

    /// Queues one receive batch: `packets` (IPv4 or IPv6) as queued on `queue` in `hook`.
    public func enqueue(_ packets: [[UInt8]], queue: UInt16, hook: UInt8 = 3, skbInfo: UInt32 = 0) {
        var batch: [[UInt8]] = []
        var slot = [UInt8](repeating: 0, count: QueueBuffers.slotSize)
        for p in packets {
            let proto: UInt16 = p.first.map { $0 >> 4 == 6 ? 0x86DD : 0x0800 } ?? 0x0800
            let id = nextID
            nextID &+= 1
            let len = slot.withUnsafeMutableBytes { buf in
                p.withUnsafeBytes { src in
                    sluice_nfq_build_packet(buf.baseAddress!, QueueBuffers.slotSize, queue, id, proto, hook, skbInfo,
                                            src.baseAddress, src.count)
                }
            }
            batch.append(Array(slot[0..<max(0, Int(len))]))
        }
        pending.append(batch)
    }

    public func receive(into b: QueueBuffers, wait: Bool) -> Int {
        guard !pending.isEmpty else { return -Int(EAGAIN) }
        let batch: [[UInt8]]
        if cycle {
            // One batch round and round: the slots still hold it (workers copy packets out,
            // never write to the slots), so deliver it again without copying, like a
            // preloaded queue.
            if pending.count == 1 && cursor > 0 && b === lastFilled { return min(pending[0].count, b.slots) }
            batch = pending[cursor % pending.count]
            cursor += 1
            lastFilled = b
        } else {
            batch = pending.removeFirst()
        }
        let n = min(batch.count, b.slots)
        b.receive.withUnsafeMutableBytes { buf in
            for i in 0..<n {
                batch[i].withUnsafeBytes { src in
                    UnsafeMutableRawBufferPointer(rebasing: buf[(i * QueueBuffers.slotSize)...]).copyMemory(from: src)
                }
                b.lengths[i] = UInt32(batch[i].count)
                b.truncated[i] = 0
            }
        }
        return n
    }

    public func sendVerdicts(_ train: UnsafeRawBufferPointer) -> Int {
        if record { verdictTrains.append(Array(train)) }
        return 0
    }

    public func sendRaw(_ batch: RawBatch, family: IPAddress.Family) -> Int {
        if refuseRaw { return 0 }
        if record { raw += batch.packets() }
        return batch.count
    }
}

/// Receive slots and a verdict buffer for batched I/O: up to `slots` datagrams per
/// receive, and every verdict of a batch in one send.
public final class QueueBuffers {
    static let slotSize = 65536 + 4096
    let slots: Int
    var receive: [UInt8]
    var lengths: [UInt32]
    var truncated: [UInt8]
    var verdicts: [UInt8]
    var verdictLength = 0
    var messages = [sluice_nfq_message](repeating: sluice_nfq_message(), count: 8)

    init(slots: Int) {
        self.slots = slots
        receive = [UInt8](repeating: 0, count: slots * QueueBuffers.slotSize)
        lengths = [UInt32](repeating: 0, count: slots)
        truncated = [UInt8](repeating: 0, count: slots)
        verdicts = [UInt8](repeating: 0, count: 1 << 20)
    }

    /// Parses the messages in slot `i`; returns how many are in `messages`.
    func parse(slot i: Int) -> Int {
        let len = Int(lengths[i])
        let base = i * QueueBuffers.slotSize
        let n = receive.withUnsafeBytes { p in
            messages.withUnsafeMutableBufferPointer {
                sluice_nfq_parse(p.baseAddress! + base, len, $0.baseAddress, Int32($0.count))
            }
        }
        return Int(n)
    }

    func payload(slot i: Int, _ m: sluice_nfq_message) -> UnsafeRawBufferPointer {
        let base = i * QueueBuffers.slotSize + Int(m.payload_offset)
        return receive.withUnsafeBytes { p in
            let end = min(base + Int(m.payload_len), i * QueueBuffers.slotSize + Int(lengths[i]))
            return UnsafeRawBufferPointer(rebasing: p[base..<max(base, end)])
        }
    }

    /// Appends a verdict; returns false if the buffer must be flushed first.
    func addVerdict(queue: UInt16, id: UInt32, accept: Bool, mark: UInt32?, payload: UnsafeRawBufferPointer?) -> Bool {
        let off = verdictLength
        let n = verdicts.withUnsafeMutableBytes { v in
            sluice_nfq_put_verdict(v.baseAddress! + off, v.count - off, queue, id,
                                   UInt32(accept ? SLUICE_NF_ACCEPT : SLUICE_NF_DROP),
                                   mark == nil ? 0 : 1, mark ?? 0, payload?.baseAddress, payload?.count ?? 0)
        }
        guard n > 0 else { return false }
        verdictLength += Int(n)
        return true
    }

    /// Sends every queued verdict in one train. Returns 0 or -errno.
    func flush(to io: PacketIO) -> Int {
        guard verdictLength > 0 else { return 0 }
        let r = verdicts.withUnsafeBytes { io.sendVerdicts(UnsafeRawBufferPointer(rebasing: $0[0..<verdictLength])) }
        verdictLength = 0
        return r
    }
}

/// Complete IP packets waiting for one sendmmsg on a raw socket (one family).
public final class RawBatch {
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

    func packets() -> [[UInt8]] {
        (0..<count).map { i in Array(storage[Int(offsets[i])..<Int(offsets[i] + lengths[i])]) }
    }
}
