import CSluiceNetfilter
import SluiceCore

/// Getting packets out: verdicts (one train per batch) and raw sends, in an order that
/// never lets an accepted packet overtake a raw send queued before it, or the reverse.
extension Worker {
    func flushVerdicts() {
        pendingAccepts = 0
        if io.flush(to: packetIO) < 0 { stats.ioErrors.add() }
    }

    func flushRaw() {
        flushRaw(rawOut.0, family: .v4)
        flushRaw(rawOut.1, family: .v6)
    }

    private func flushRaw(_ batch: RawBatch, family: IPAddress.Family) {
        guard batch.count > 0 else { return }
        let sent = packetIO.sendRaw(batch, family: family)
        stats.injected.add(UInt64(sent))
        if sent < batch.count {
            // What the kernel did not take is lost: a drop with its reason, as every drop.
            let refused = UInt64(batch.count - sent)
            stats.injectErrors.add(refused)
            stats.drop(.injectFailed, count: refused)
        }
        batch.clear()
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
