/// What a worker passes along with each packet.
public struct ProcessingContext: Sendable {
    /// The worker's index: selects the SA crypto lane this thread owns.
    public var lane: Int
    /// Seconds on a monotonic clock, for time lifetimes.
    public var now: UInt64
    /// Receivers' MSS, learned from inbound SYNs and ICMP errors; sizes GSO segments.
    public var mssHints: MSSHints?
    public init(lane: Int = 0, now: UInt64 = 0, mssHints: MSSHints? = nil) {
        self.lane = lane; self.now = now; self.mssHints = mssHints
    }
}

/// What became of a packet taken whole from a GSO queue.
public enum WholeOutcome: Equatable, Sendable {
    /// Let the original pass unchanged (BYPASS): the kernel segments it as usual.
    case unchanged
    /// `segments` ESP packets were emitted; the original must be dropped (not a drop:
    /// it left as ESP). `failed` segments could not be sealed and are counted under `reason`.
    case segmented(segments: Int, failed: Int, reason: DropReason?)
    case drop(DropReason)
}

/// What to do with a packet after processing.
public enum Outcome: Equatable, Sendable {
    /// Let it pass unchanged (BYPASS, or not ours).
    case unchanged
    /// The buffer now holds the ESP packet: accept it with the new bytes.
    case sealed
    /// The buffer now holds the decrypted packet: accept it with the new bytes.
    case opened
    /// The packet was refused and the buffer now holds an ICMP error for its sender:
    /// accept the new bytes, and count the refusal under `reason`.
    case icmpError(DropReason)
    case drop(DropReason)
}

/// The whole per-packet decision: inbound ESP is opened, everything else goes through
/// the outbound SPD. Pure: no syscalls, so it is tested in-process.
public enum PacketProcessor {
    public static func process(_ buf: inout PacketBuffer, database db: SecurityDatabase,
                               context: ProcessingContext) -> Outcome {
        do {
            let h = try buf.withBytes { (p) throws(DropReason) in try IPHeaderInfo.parse(p) }
            if isInboundESP(h, buf: buf, database: db) {
                switch try ESP.open(&buf, header: h, database: db, context: context) {
                case .opened:
                    if let hints = context.mssHints { learn(hints, from: buf) }
                    return .opened
                case .notESP: return .unchanged
                }
            }
            let key = buf.withBytes { FlowKey(header: h, packet: $0) }
            switch outboundDecision(key, database: db) {
            case .bypass: return .unchanged
            case let .drop(reason): return .drop(reason)
            case let .protect(sa):
                switch try ESP.seal(&buf, header: h, sa: sa, context: context) {
                case .sealed: return .sealed
                case let .tooBig(innerMTU):
                    // Transport mode: the inner destination is the outer one, so an ICMP "too
                    // big" to our own stack would shrink the very path the ESP takes.
                    if sa.config.mode == .transport { return .drop(.tooBig) }
                    if try ICMPError.makePacketTooBig(&buf, header: h, mtu: innerMTU, source: sa.config.local) {
                        return .icmpError(.tooBig)
                    }
                    return .drop(.tooBig)
                }
            }
        } catch {
            return .drop(error)
        }
    }

    /// For a packet just refused as `no_sa`: the origin of the PROTECT policy that has no SA
    /// yet, so the worker can hold the packet until one is negotiated (nil otherwise).
    public static func pendingPolicy(_ buf: PacketBuffer, database db: SecurityDatabase) -> String? {
        guard let h = try? buf.withBytes({ (p) throws(DropReason) in try IPHeaderInfo.parse(p) }) else { return nil }
        let key = buf.withBytes { FlowKey(header: h, packet: $0) }
        guard let policy = db.lookupOutbound(key), case .protect = policy.policy.action, policy.sas.isEmpty else { return nil }
        return policy.policy.origin
    }

    /// The outbound path for a TCP packet a GSO queue handed over whole: the SPD decides
    /// once for all of it; under PROTECT it is cut into segments no larger than the SA's
    /// MTU or the receiver's MSS allows, and each is sealed and passed to `emit` (the ESP
    /// packet, valid only during the call). `scratch` is the worker's reused segment buffer.
    public static func processWhole(_ buf: inout PacketBuffer, scratch: inout PacketBuffer, database db: SecurityDatabase,
                                    context: ProcessingContext, emit: (UnsafeRawBufferPointer) -> Void) -> WholeOutcome {
        do {
            let h = try buf.withBytes { (p) throws(DropReason) in try IPHeaderInfo.parse(p) }
            let key = buf.withBytes { FlowKey(header: h, packet: $0) }
            let sa: SecurityAssociation
            switch outboundDecision(key, database: db) {
            case .bypass: return .unchanged
            case let .drop(reason): return .drop(reason)
            case let .protect(s): sa = s
            }
            if buf.count > h.totalLength { try buf.truncate(to: h.totalLength) }
            let segmenter = try buf.withBytes { (p) throws(DropReason) in try TCPSegmenter(packet: p, header: h) }
            let size = segmentPayload(segmenter, key: key, sa: sa, context: context)
            guard size > 0 else { return .drop(.tooBig) }
            let count = segmenter.segmentCount(payloadPerSegment: size)
            var failed = 0
            var reason: DropReason?
            for i in 0..<count {
                do {
                    let sh = try buf.withBytes { (p) throws(DropReason) in
                        try segmenter.write(segment: i, payloadPerSegment: size, from: p, into: &scratch)
                    }
                    switch try ESP.seal(&scratch, header: sh, sa: sa, context: context) {
                    case .sealed: scratch.withBytes { emit($0) }
                    case .tooBig: failed += 1; reason = .tooBig
                    }
                } catch {
                    failed += 1
                    reason = error
                }
            }
            return .segmented(segments: count - failed, failed: failed, reason: reason)
        } catch {
            return .drop(error)
        }
    }

    enum OutboundDecision {
        case bypass
        case drop(DropReason)
        case protect(SecurityAssociation)
    }

    /// The SPD's answer for an outbound flow (RFC 4301 §5.1): first match, else the default.
    static func outboundDecision(_ key: FlowKey, database db: SecurityDatabase) -> OutboundDecision {
        guard let policy = db.lookupOutbound(key) else {
            return db.defaultOutbound == .bypass ? .bypass : .drop(.noPolicy)
        }
        switch policy.policy.action {
        case .bypass: return .bypass
        case .discard: return .drop(.policyDiscard)
        case .protect:
            // No live SA (not yet negotiated, removed, expired): dropped, never in clear.
            guard let sa = policy.outboundSA else {
                if policy.sas.isEmpty {
                    db.events?.post(.noSA(policy: policy.policy.origin))
                    return .drop(.noSA)
                }
                return .drop(.saExpired)
            }
            return .protect(sa)
        }
    }

    /// Segment payload: what fits the SA, and never more than the receiver's MSS (less
    /// our TCP options). Without a hint (a flow older than this daemon), the protocol
    /// minimum: slower, never too large for the receiver or the path beyond the peer.
    /// A hint never takes it below that minimum (`MSSHints.floor`).
    static func segmentPayload(_ s: TCPSegmenter, key: FlowKey, sa: SecurityAssociation, context: ProcessingContext) -> Int {
        let fit = ESP.maxInnerLength(sa: sa, header: s.header) - s.headersLength
        let options = s.tcpHeaderLength - 20
        var mss = MSSHints.floor(s.header.family)
        if let hints = context.mssHints, let sp = key.srcPort, let dp = key.dstPort,
           let m = hints.mss(for: MSSHints.Flow(src: key.src, dst: key.dst, srcPort: sp, dstPort: dp)) {
            mss = max(mss, Int(m))
        }
        return min(fit, mss - options)
    }

    /// Decrypted SYNs and ICMP errors tell what the other side accepts (cheap to skip:
    /// one byte compare for everything else).
    static func learn(_ hints: MSSHints, from buf: PacketBuffer) {
        buf.withBytes { p in
            // Cheap filter first: most packets are TCP without SYN.
            guard let h = try? IPHeaderInfo.parse(p) else { return }
            switch h.proto {
            case IPProto.tcp:
                let flags = h.headerLength + 13
                if flags < p.count && p[flags] & 0x02 != 0 { hints.learn(fromInbound: p, header: h) }
            case IPProto.icmp, IPProto.icmpv6:
                hints.learn(fromInbound: p, header: h)
            default:
                return
            }
        }
    }

    /// ESP (or ESP-in-UDP on 4500) addressed to one of our inbound SAs' local addresses.
    static func isInboundESP(_ h: IPHeaderInfo, buf: PacketBuffer, database db: SecurityDatabase) -> Bool {
        guard db.localAddresses.contains(h.dst) else { return false }
        if h.proto == IPProto.esp { return true }
        if h.proto == IPProto.udp, let port = try? buf.u16(h.headerLength + 2) { return port == ESP.natTPort }
        return false
    }
}
