import Synchronization

/// TCP segmentation offload done here instead of in the kernel.
///
/// A queue bound with NFQA_CFG_F_GSO hands over a TCP packet whole: one IP and TCP
/// header for up to 64 KB of payload, as the sender's stack (or GRO on a gateway) built
/// it. Crossing into user space once per 64 KB instead of once per 1.4 KB is what makes
/// the redirect cheap; the price is that we must cut the segments ourselves, finish their
/// checksums (the kernel leaves CHECKSUM_PARTIAL packets unfinished on such queues), and
/// choose a segment size the receiver accepts. The kernel does not tell us the sender's
/// gso_size, so `MSSHints` remembers what each receiver advertised.

/// A TCP packet taken whole from a GSO queue, cut into segments on demand.
public struct TCPSegmenter {
    public let header: IPHeaderInfo
    public let tcpHeaderLength: Int
    public let payloadLength: Int

    static let fin: UInt8 = 0x01, psh: UInt8 = 0x08, cwr: UInt8 = 0x80

    /// Checks that `p` holds an unfragmented TCP packet with a sane header.
    public init(packet p: UnsafeRawBufferPointer, header h: IPHeaderInfo) throws(DropReason) {
        guard h.proto == IPProto.tcp, !h.isFragment else { throw .unsupported }
        let t = h.headerLength
        guard t + 20 <= h.totalLength, h.totalLength <= p.count else { throw .truncated }
        let thl = Int(p[t + 12] >> 4) * 4
        guard thl >= 20, t + thl <= h.totalLength else { throw .malformedIP }
        header = h
        tcpHeaderLength = thl
        payloadLength = h.totalLength - t - thl
    }

    /// Bytes of the IP and TCP headers that every segment repeats.
    public var headersLength: Int { header.headerLength + tcpHeaderLength }

    public func segmentCount(payloadPerSegment size: Int) -> Int {
        payloadLength == 0 ? 1 : (payloadLength + size - 1) / size
    }

    /// Writes segment `index` (payload bytes [index*size, (index+1)*size)) into `out` as a
    /// complete IP packet: lengths, IPv4 ID and header checksum, TCP sequence number,
    /// flags (FIN and PSH only on the last segment, CWR only on the first, as the kernel's
    /// tcp_gso_segment does) and a finished TCP checksum. Returns its header.
    public func write(segment index: Int, payloadPerSegment size: Int, from p: UnsafeRawBufferPointer,
                      into out: inout PacketBuffer) throws(DropReason) -> IPHeaderInfo {
        let count = segmentCount(payloadPerSegment: size)
        guard size > 0, index >= 0, index < count else { throw .unsupported }
        let offset = index * size
        let length = min(size, payloadLength - offset)
        let hl = headersLength
        let t = header.headerLength
        try out.load(UnsafeRawBufferPointer(rebasing: p[0..<hl]))
        try out.append(length)
        let total = hl + length
        let seg = try out.withMutableBytes { (q) throws(DropReason) -> IPHeaderInfo in
            let src = UnsafeRawBufferPointer(rebasing: p[(hl + offset)..<(hl + offset + length)])
            UnsafeMutableRawBufferPointer(rebasing: q[hl..<total]).copyMemory(from: src)
            if header.family == .v4 {
                writeU16(q, 2, UInt16(total))
                writeU16(q, 4, readU16(UnsafeRawBufferPointer(q), 4) &+ UInt16(truncatingIfNeeded: index))
                IPv4Header.fixChecksum(q, headerLength: t)
            } else {
                writeU16(q, 4, UInt16(total - 40))
            }
            writeU32(q, t + 4, readU32(UnsafeRawBufferPointer(q), t + 4) &+ UInt32(truncatingIfNeeded: offset))
            var flags = q[t + 13]
            if index != count - 1 { flags &= ~(TCPSegmenter.fin | TCPSegmenter.psh) }
            if index != 0 { flags &= ~TCPSegmenter.cwr }
            q[t + 13] = flags
            let h = try IPHeaderInfo.parse(UnsafeRawBufferPointer(q))
            try Checksum.finishTransport(q, header: h)
            return h
        }
        return seg
    }
}

/// What each TCP receiver told its peer it accepts (the MSS option of its SYN or
/// SYN-ACK), lowered by any ICMP "fragmentation needed" / "packet too big" for the flow.
///
/// Outbound GSO packets are cut at min(this, what fits the SA): never larger than the
/// sender's own segments would have been. Learned from decrypted inbound packets, so the
/// worker that opens a SYN-ACK and the one that seals the flow may differ: one lock,
/// taken once per SYN, ICMP error or 64 KB packet.
public final class MSSHints: Sendable {
    public struct Flow: Hashable, Sendable {
        public var src: IPAddress, dst: IPAddress, srcPort: UInt16, dstPort: UInt16
        public init(src: IPAddress, dst: IPAddress, srcPort: UInt16, dstPort: UInt16) {
            self.src = src; self.dst = dst; self.srcPort = srcPort; self.dstPort = dstPort
        }
        public var reversed: Flow { Flow(src: dst, dst: src, srcPort: dstPort, dstPort: srcPort) }
    }

    /// Bounded: when full it starts over (flows then fall back to the safe default until
    /// their next SYN or ICMP error), so a flood of SYNs cannot grow it.
    public static let capacity = 65536
    private let table = Mutex<[Flow: UInt16]>([:])

    public init() {}

    /// The least MSS taken from a peer: IPv4's default MSS (RFC 9293 §3.7.1) and what
    /// IPv6's 1280-byte minimum MTU carries. A SYN or ICMP error claiming less (a host
    /// behind the peer may claim 1 byte) would turn every 64 KB packet into thousands of
    /// tiny ESP packets; like the kernel's min_pmtu, a smaller claim is raised to this.
    public static func floor(_ family: IPAddress.Family) -> Int { family == .v4 ? 536 : 1220 }

    public func mss(for flow: Flow) -> UInt16? { table.withLock { $0[flow] } }

    public var count: Int { table.withLock { $0.count } }

    /// `flow` is the direction that will carry data sized by `mss` (at least the floor).
    public func record(_ flow: Flow, mss: UInt16) {
        let mss = max(mss, UInt16(MSSHints.floor(flow.dst.family)))
        table.withLock {
            if $0.count >= MSSHints.capacity && $0[flow] == nil { $0.removeAll(keepingCapacity: true) }
            $0[flow] = mss
        }
    }

    /// A path MTU drop: only ever lowers (never under the floor).
    public func lower(_ flow: Flow, mss: UInt16) {
        let mss = max(mss, UInt16(MSSHints.floor(flow.dst.family)))
        table.withLock {
            if let old = $0[flow], old <= mss { return }
            if $0.count >= MSSHints.capacity && $0[flow] == nil { $0.removeAll(keepingCapacity: true) }
            $0[flow] = mss
        }
    }

    /// Learns from a packet that arrived from the peer (decrypted): a SYN's MSS option
    /// limits what we may send back on the reverse flow; an ICMP error that quotes one
    /// of our TCP packets lowers that flow's size.
    public func learn(fromInbound p: UnsafeRawBufferPointer, header h: IPHeaderInfo) {
        guard !h.isFragment else { return }
        let t = h.headerLength
        switch h.proto {
        case IPProto.tcp:
            guard t + 20 <= h.totalLength, h.totalLength <= p.count, p[t + 13] & 0x02 != 0 else { return }
            let thl = Int(p[t + 12] >> 4) * 4
            guard thl > 20, t + thl <= h.totalLength,
                  let mss = TCPOptions.mss(UnsafeRawBufferPointer(rebasing: p[(t + 20)..<(t + thl)])) else { return }
            let flow = Flow(src: h.src, dst: h.dst, srcPort: readU16(p, t), dstPort: readU16(p, t + 2))
            record(flow.reversed, mss: mss)
        case IPProto.icmp, IPProto.icmpv6:
            guard t + 8 <= h.totalLength, h.totalLength <= p.count else { return }
            let mtu: Int
            if h.proto == IPProto.icmp, p[t] == 3, p[t + 1] == 4 { mtu = Int(readU16(p, t + 6)) }
            else if h.proto == IPProto.icmpv6, p[t] == 2 { mtu = Int(readU32(p, t + 4)) }
            else { return }
            let quoted = UnsafeRawBufferPointer(rebasing: p[(t + 8)..<h.totalLength])
            guard let q = try? IPHeaderInfo.parseQuoted(quoted), q.proto == IPProto.tcp,
                  q.headerLength + 4 <= quoted.count else { return }
            let flow = Flow(src: q.src, dst: q.dst, srcPort: readU16(quoted, q.headerLength),
                            dstPort: readU16(quoted, q.headerLength + 2))
            lower(flow, mss: UInt16(clamping: mtu - q.headerLength - 20)) // raised to the floor
        default:
            return
        }
    }
}

enum TCPOptions {
    /// The MSS option (kind 2, length 4) in a TCP options area, if present and well formed.
    static func mss(_ o: UnsafeRawBufferPointer) -> UInt16? {
        var i = 0
        while i < o.count {
            switch o[i] {
            case 0: return nil                 // end of options
            case 1: i += 1                     // no-op
            default:
                guard i + 1 < o.count else { return nil }
                let len = Int(o[i + 1])
                guard len >= 2, i + len <= o.count else { return nil }
                if o[i] == 2 && len == 4 { return readU16(o, i + 2) }
                i += len
            }
        }
        return nil
    }
}

/// The receive side of the same idea (GRO in user space): consecutive decrypted TCP
/// segments of one flow are merged into one packet, so the kernel's stack runs once per
/// up to 64 KB instead of once per segment, and the receiver acknowledges once per merge.
///
/// Only for packets this host delivers to itself: a merged packet is not a GSO packet,
/// so it could not be forwarded over a normal MTU. The rules follow the kernel's
/// tcp_gro_receive: same flow, next sequence number, same ACK number, window, header
/// lengths, options, TTL and TOS; ACK set; only PSH may end a merge; no SYN, FIN, RST,
/// URG, ECE or CWR; segments no larger than the first. Every segment's checksum is
/// verified before it joins (the merged checksum is computed from the verified parts),
/// so a bad segment is still refused by the kernel instead of being laundered here.
public struct TCPCoalescer {
    public private(set) var buffer = PacketBuffer()
    /// Segments merged in `buffer` (0 = empty).
    public private(set) var count = 0
    var family = IPAddress.Family.v4
    var ipHeaderLength = 0, tcpHeaderLength = 0
    var segmentSize = 0, payloadLength = 0
    var nextSeq: UInt32 = 0
    /// One's-complement sum of the merged payload so far (big-endian words).
    var payloadSum: UInt64 = 0
    var closed = false

    public init() {}

    static let ack: UInt8 = 0x10, psh: UInt8 = 0x08
    /// Room left for the IP total length field (IPv4) or payload length (IPv6).
    static let maxTotal = 65535

    /// The payload's start and length, if `p` is a segment this can merge at all.
    static func eligible(_ p: UnsafeRawBufferPointer, _ h: IPHeaderInfo) -> (start: Int, length: Int)? {
        guard h.proto == IPProto.tcp, !h.isFragment, h.headerLength == (h.family == .v4 ? 20 : 40),
              h.totalLength <= p.count, h.totalLength >= h.headerLength + 20 else { return nil }
        let t = h.headerLength
        let thl = Int(p[t + 12] >> 4) * 4
        let flags = p[t + 13]
        guard thl >= 20, t + thl < h.totalLength, flags & ~(ack | psh) == 0, flags & ack != 0 else { return nil }
        return (t + thl, h.totalLength - t - thl)
    }

    /// Verifies the segment's checksum; returns its payload's sum when it is good.
    static func verifiedPayloadSum(_ p: UnsafeRawBufferPointer, _ h: IPHeaderInfo, payloadStart: Int) -> UInt64? {
        let t = h.headerLength
        let header = UInt64(Checksum.sum(UnsafeRawBufferPointer(rebasing: p[t..<payloadStart])))
        let payload = UInt64(Checksum.sum(UnsafeRawBufferPointer(rebasing: p[payloadStart..<h.totalLength])))
        let pseudo = Checksum.pseudoHeader(p, family: h.family, proto: IPProto.tcp, length: h.totalLength - t)
        return Checksum.fold(header + payload + pseudo) == 0xFFFF ? payload : nil
    }

    /// Starts a merge with `p` (a decrypted packet). False if it cannot be merged.
    public mutating func start(_ p: UnsafeRawBufferPointer, header h: IPHeaderInfo) -> Bool {
        count = 0
        guard let (start, length) = TCPCoalescer.eligible(p, h),
              let sum = TCPCoalescer.verifiedPayloadSum(p, h, payloadStart: start) else { return false }
        guard (try? buffer.load(UnsafeRawBufferPointer(rebasing: p[0..<h.totalLength]))) != nil else { return false }
        family = h.family
        ipHeaderLength = h.headerLength
        tcpHeaderLength = start - h.headerLength
        segmentSize = length
        payloadLength = length
        payloadSum = sum
        nextSeq = readU32(p, h.headerLength + 4) &+ UInt32(length)
        closed = p[h.headerLength + 13] & TCPCoalescer.psh != 0
        count = 1
        return true
    }

    /// Appends `p` if it continues the merge; false (nothing changed) if it does not.
    public mutating func append(_ p: UnsafeRawBufferPointer, header h: IPHeaderInfo) -> Bool {
        guard count > 0, !closed, h.family == family, let (start, length) = TCPCoalescer.eligible(p, h),
              h.headerLength == ipHeaderLength, start - h.headerLength == tcpHeaderLength,
              length <= segmentSize, ipHeaderLength + tcpHeaderLength + payloadLength + length <= TCPCoalescer.maxTotal
        else { return false }
        let t = ipHeaderLength
        let matches = buffer.withBytes { b -> Bool in
            // Addresses (IPv4: TOS/TTL too; IPv6: traffic class and hop limit), ports.
            if family == .v4 {
                guard b[1] == p[1], b[8] == p[8], b[9] == p[9], b[12..<20].elementsEqual(p[12..<20]) else { return false }
            } else {
                guard b[0..<4].elementsEqual(p[0..<4]), b[6..<40].elementsEqual(p[6..<40]) else { return false }
            }
            guard b[t..<(t + 4)].elementsEqual(p[t..<(t + 4)]), readU32(p, t + 4) == nextSeq,
                  b[(t + 8)..<(t + 12)].elementsEqual(p[(t + 8)..<(t + 12)]),          // ACK number
                  b[t + 12] == p[t + 12], b[(t + 14)..<(t + 16)].elementsEqual(p[(t + 14)..<(t + 16)]), // offset, window
                  b[(t + 20)..<(t + tcpHeaderLength)].elementsEqual(p[(t + 20)..<(t + tcpHeaderLength)]) // options
            else { return false }
            return true
        }
        guard matches, let sum = TCPCoalescer.verifiedPayloadSum(p, h, payloadStart: start) else { return false }
        let at = buffer.count
        guard (try? buffer.append(length)) != nil else { return false }
        _ = try? buffer.withMutableBytes { (b) throws(DropReason) in
            UnsafeMutableRawBufferPointer(rebasing: b[at..<(at + length)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: p[start..<(start + length)]))
            if p[t + 13] & TCPCoalescer.psh != 0 { b[t + 13] |= TCPCoalescer.psh }
        }
        // A payload that starts at an odd offset contributes its sum byte-swapped (RFC 1071 §2(B)).
        let (s, o) = payloadSum.addingReportingOverflow(UInt64(payloadLength & 1 == 0 ? UInt16(sum) : UInt16(sum).byteSwapped))
        payloadSum = s &+ (o ? 1 : 0)
        payloadLength += length
        nextSeq &+= UInt32(length)
        if length < segmentSize || p[t + 13] & TCPCoalescer.psh != 0 { closed = true }
        count += 1
        return true
    }

    /// Writes the merged packet's lengths and checksums; `buffer` is then ready to send.
    public mutating func finish() {
        guard count > 1 else { return }
        let t = ipHeaderLength
        let total = t + tcpHeaderLength + payloadLength
        _ = try? buffer.withMutableBytes { (b) throws(DropReason) in
            if family == .v4 {
                writeU16(b, 2, UInt16(total))
                IPv4Header.fixChecksum(b, headerLength: 20)
            } else {
                writeU16(b, 4, UInt16(total - 40))
            }
            writeU16(b, t + 16, 0)
            let ro = UnsafeRawBufferPointer(b)
            let h = UInt64(Checksum.sum(UnsafeRawBufferPointer(rebasing: ro[t..<(t + tcpHeaderLength)])))
            let pseudo = Checksum.pseudoHeader(ro, family: family, proto: IPProto.tcp, length: total - t)
            writeU16(b, t + 16, ~Checksum.fold(h + UInt64(Checksum.fold(payloadSum)) + pseudo))
        }
    }

    public mutating func reset() { count = 0; closed = false }
}
