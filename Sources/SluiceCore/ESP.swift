/// ESP encapsulation and decapsulation (RFC 4303) on a `PacketBuffer`, in place.
///
/// Outbound layout after `seal`:
///   outer IP | [UDP 4500] | SPI | seq | IV | payload | TFC | pad 1,2,3.. | pad len | NH | ICV
/// Tunnel mode: the payload is the whole inner packet and the outer header is new.
/// Transport mode: the payload is the upper-layer data and the IP header is kept.
public enum ESP {
    public enum SealResult: Equatable, Sendable {
        case sealed
        /// Would exceed the path MTU with DF: the largest inner packet that fits. Tunnel
        /// mode only, or beyond 64 KB: transport mode leaves the MTU to the kernel's route.
        case tooBig(innerMTU: Int)
    }

    static let natTPort: UInt16 = 4500

    /// Bytes an SA's MTU leaves for payload and trailer once the outer IP header, UDP
    /// (NAT-T), ESP header with IV, and ICV are counted.
    static func payloadBudget(_ c: SAConfig, header h: IPHeaderInfo) -> Int {
        let outerLen = c.mode == .tunnel ? (c.local.family == .v4 ? 20 : 40) : h.headerLength
        return c.mtu - outerLen - (c.udpEncapsulation ? 8 : 0) - 8 - c.proposal.ivLength - c.proposal.icvLength
    }

    /// The longest inner packet (header `h`) that `sa` can seal without exceeding its MTU.
    public static func maxInnerLength(sa: SecurityAssociation, header h: IPHeaderInfo) -> Int {
        let c = sa.config
        let align = c.proposal.alignment
        let maxPlain = (payloadBudget(c, header: h) / align) * align - 2 // pad length and next header
        return (c.mode == .tunnel ? 0 : h.headerLength) + maxPlain
    }

    /// Encapsulates the IP packet in `buf` (already parsed into `h`) with `sa`.
    public static func seal(_ buf: inout PacketBuffer, header h: IPHeaderInfo, sa: SecurityAssociation,
                            context: ProcessingContext) throws(DropReason) -> SealResult {
        let c = sa.config
        let prop = c.proposal
        if buf.count > h.totalLength { try buf.truncate(to: h.totalLength) } // link padding
        let tunnel = c.mode == .tunnel
        if !tunnel {
            guard h.family == c.local.family else { throw .unsupported }
            guard !h.isFragment else { throw .fragment }
        }
        let payloadStart = tunnel ? 0 : h.headerLength
        let nextHeader: UInt8 = tunnel ? (h.family == .v4 ? IPProto.ipv4 : IPProto.ipv6) : h.proto
        let plainLen = buf.count - payloadStart
        var tfc = 0
        if tunnel && c.tfcPadTo > 0 { tfc = (c.tfcPadTo - plainLen % c.tfcPadTo) % c.tfcPadTo }
        let align = prop.alignment
        let udpLen = c.udpEncapsulation ? 8 : 0
        let outerLen = tunnel ? (c.local.family == .v4 ? 20 : 40) : h.headerLength
        let espHeader = 8 + prop.ivLength
        let icv = prop.icvLength
        let available = payloadBudget(c, header: h)
        if tfc > 0, plainLen + tfc + 2 > available { tfc = 0 } // TFC never costs a fragment
        let padLen = (align - (plainLen + tfc + 2) % align) % align
        let trailer = tfc + padLen + 2
        let total = outerLen + udpLen + espHeader + plainLen + trailer + icv

        if total > c.mtu || total > PacketBuffer.maxPacket {
            // Tunnel mode: a DF inner packet that no longer fits gets "too big" (it concerns
            // the inner destination, another host). Transport mode never does: the inner
            // destination IS the outer one, so that ICMP would lower the kernel's path MTU
            // towards the peer below what the ESP itself needs: a black hole. There the
            // kernel's route decides: IPv4 leaves without DF (see below) and is fragmented to
            // the route's MTU; IPv6 is sent whole when it fits the route (the kernel refuses
            // what does not, as it would any oversize packet of the connection).
            let innerDF = tunnel && (h.family == .v6 || c.dfPolicy == .set || (c.dfPolicy == .copy && h.dontFragment))
            if innerDF || total > PacketBuffer.maxPacket {
                return .tooBig(innerMTU: max(0, maxInnerLength(sa: sa, header: h)))
            }
        }

        try sa.account(bytes: plainLen, now: context.now, lane: context.lane)
        let seq = try sa.takeSequence(lane: context.lane)

        if tunnel {
            try buf.prepend(outerLen + udpLen + espHeader)
        } else {
            try buf.prepend(udpLen + espHeader)
            try buf.move(from: udpLen + espHeader, to: 0, length: outerLen)
        }
        try buf.append(trailer + icv)

        let espStart = outerLen + udpLen
        let ptStart = espStart + espHeader
        // The outer IPv4 ID only has to be unique among packets that could be fragments of
        // one another: the sequence number's low bits are, over 65536 packets, with no
        // shared counter for workers to contend on.
        let ipID = UInt16(truncatingIfNeeded: seq)
        try buf.withMutableBytes { (p) throws(DropReason) in
            writeU32(p, espStart, c.spi)
            writeU32(p, espStart + 4, UInt32(truncatingIfNeeded: seq))
            if prop.isAEAD {
                writeU64(p, espStart + 8, seq) // RFC 4106 §3: a counter never repeats under one key
            } else if prop.ivLength > 0 {
                try sa.transform(lane: context.lane).fillIV(UnsafeMutableRawBufferPointer(rebasing: p[(espStart + 8)..<ptStart]))
            }
            var t = ptStart + plainLen
            for _ in 0..<tfc { p[t] = 0; t += 1 }
            if padLen > 0 { for i in 1...padLen { p[t] = UInt8(i); t += 1 } }
            p[t] = UInt8(padLen)
            p[t + 1] = nextHeader

            if tunnel {
                writeOuterHeader(p, sa: sa, inner: h, totalLength: total, ipID: ipID, udp: udpLen > 0)
            } else if h.family == .v4 {
                // Transport mode: ESP makes the packet larger than the path MTU the sender
                // sized it for, so with DF the kernel could refuse it. Without DF it may fragment,
                // which needs an ID unique among our fragmentable packets (RFC 6864): a DF
                // packet's ID need not be, so it gets one, as in tunnel mode.
                let frag = readU16(UnsafeRawBufferPointer(p), 6)
                if frag & 0x4000 != 0 {
                    writeU16(p, 6, frag & ~0x4000)
                    writeU16(p, 4, ipID)
                }
                p[h.protoFieldOffset] = udpLen > 0 ? IPProto.udp : IPProto.esp
                writeU16(p, 2, UInt16(total))
                IPv4Header.fixChecksum(p, headerLength: outerLen)
            } else {
                writeU16(p, 4, UInt16(total - 40))
                p[h.protoFieldOffset] = udpLen > 0 ? IPProto.udp : IPProto.esp
            }
            let espRegion = UnsafeMutableRawBufferPointer(rebasing: p[espStart..<total])
            try sa.transform(lane: context.lane).seal(
                esp: espRegion, payloadOffset: espHeader, payloadLength: plainLen + trailer,
                seqHigh: c.esn ? UInt32(truncatingIfNeeded: seq >> 32) : nil)
            if udpLen > 0 {
                let u = outerLen
                writeU16(p, u, natTPort)
                writeU16(p, u + 2, natTPort)
                writeU16(p, u + 4, UInt16(total - outerLen))
                writeU16(p, u + 6, 0) // IPv4: no checksum (RFC 3948 §2.1)
                if c.local.family == .v6 { // the outer header holds the addresses by now
                    writeU16(p, u + 6, Checksum.upperLayer(UnsafeRawBufferPointer(p), family: .v6, proto: IPProto.udp,
                                                           start: u, end: total))
                }
            }
        }
        return .sealed
    }

    static func writeOuterHeader(_ p: UnsafeMutableRawBufferPointer, sa: SecurityAssociation, inner: IPHeaderInfo,
                                 totalLength: Int, ipID: UInt16, udp: Bool) {
        let c = sa.config
        let proto = udp ? IPProto.udp : IPProto.esp
        // DSCP and ECN are copied from the inner header (RFC 6040 normal mode).
        let tc = inner.trafficClass
        switch c.local.family {
        case .v4:
            p[0] = 0x45
            p[1] = tc
            writeU16(p, 2, UInt16(totalLength))
            writeU16(p, 4, ipID)
            let df: Bool
            switch c.dfPolicy {
            case .set: df = true
            case .clear: df = false
            case .copy: df = inner.dontFragment // IPv6 inner: always DF
            }
            writeU16(p, 6, df ? 0x4000 : 0)
            p[8] = 64
            p[9] = proto
            c.local.write(to: p, at: 12)
            c.remote.write(to: p, at: 16)
            IPv4Header.fixChecksum(p, headerLength: 20)
        case .v6:
            writeU32(p, 0, 0x6000_0000 | UInt32(tc) << 20)
            writeU16(p, 4, UInt16(totalLength - 40))
            p[6] = proto
            p[7] = 64
            c.local.write(to: p, at: 8)
            c.remote.write(to: p, at: 24)
        }
    }

    public enum OpenResult: Sendable {
        case opened(SecurityAssociation)
        /// IKE on UDP 4500 (non-ESP marker): not ours to touch.
        case notESP
    }

    /// Verifies and decapsulates the ESP packet in `buf`. Order as RFC 4303 §3.4 and
    /// strongSwan: parse, cheap replay check, authenticate, then mark the window.
    public static func open(_ buf: inout PacketBuffer, header h: IPHeaderInfo, database db: SecurityDatabase,
                            context: ProcessingContext) throws(DropReason) -> OpenResult {
        if buf.count > h.totalLength { try buf.truncate(to: h.totalLength) }
        guard !h.isFragment else { throw .fragment }
        var espStart = h.headerLength
        var udpLen = 0
        if h.proto == IPProto.udp {
            guard buf.count >= espStart + 8 else { throw .truncated }
            let udpLength = Int(try buf.u16(espStart + 4))
            guard udpLength >= 8, espStart + udpLength <= buf.count else { throw .truncated }
            udpLen = 8
            espStart += 8
            let rest = buf.count - espStart
            if rest == 1, try buf.u8(espStart) == 0xFF { throw .natKeepalive }
            if rest >= 4, try buf.u32(espStart) == 0 { return .notESP } // RFC 3948 §2.2
        } else {
            guard h.proto == IPProto.esp else { throw .unsupported }
        }
        let espLen = buf.count - espStart
        guard espLen >= 8 else { throw .truncated }
        let spi = try buf.u32(espStart)
        let seqLow = try buf.u32(espStart + 4)
        guard let sa = db.lookupInbound(spi: spi, destination: h.dst) else { throw .unknownSPI }
        let c = sa.config
        let prop = c.proposal
        let espHeader = 8 + prop.ivLength
        let icv = prop.icvLength
        let ctLen = espLen - espHeader - icv
        guard ctLen >= 2 else { sa.counters.add(.otherDrops, lane: context.lane); throw .truncated }
        guard ctLen % prop.alignment == 0 else { sa.counters.add(.otherDrops, lane: context.lane); throw .badLength }
        guard !sa.isExpired else { throw .saExpired }

        let (seqHigh, seq, refusal) = sa.replayPrecheck(low: seqLow)
        if let refusal { sa.counters.add(.replayDrops, lane: context.lane); throw refusal }

        let start = espStart
        do {
            try buf.withMutableBytes { (p) throws(DropReason) in
                try sa.transform(lane: context.lane).open(
                    esp: UnsafeMutableRawBufferPointer(rebasing: p[start..<p.count]),
                    payloadOffset: espHeader, payloadLength: ctLen, seqHigh: seqHigh)
            }
        } catch {
            if error == .icvMismatch { sa.counters.add(.icvFailures, lane: context.lane) }
            throw error
        }
        // Only an authenticated packet may move the window.
        if let refusal = sa.replayUpdate(seq) {
            if refusal != .stateError { sa.counters.add(.replayDrops, lane: context.lane) }
            throw refusal
        }
        try sa.account(bytes: ctLen, now: context.now, lane: context.lane)

        let ptStart = espStart + espHeader
        let padLen = Int(try buf.u8(ptStart + ctLen - 2))
        let nextHeader = try buf.u8(ptStart + ctLen - 1)
        guard padLen + 2 <= ctLen else { sa.counters.add(.otherDrops, lane: context.lane); throw .badPadding }
        let payloadLen = ctLen - 2 - padLen
        for i in 0..<padLen where try buf.u8(ptStart + payloadLen + i) != UInt8(i + 1) {
            sa.counters.add(.otherDrops, lane: context.lane)
            throw .badPadding
        }
        if nextHeader == IPProto.noNext { throw .dummyPacket }

        switch c.mode {
        case .tunnel:
            guard nextHeader == IPProto.ipv4 || nextHeader == IPProto.ipv6 else { throw .badInner }
            try buf.removeFirst(ptStart)
            try buf.truncate(to: payloadLen)
            let inner: IPHeaderInfo
            do { inner = try buf.withBytes { (p) throws(DropReason) in try IPHeaderInfo.parse(p) } } catch { throw .badInner }
            guard (inner.family == .v4) == (nextHeader == IPProto.ipv4) else { throw .badInner }
            if inner.family == .v4 {
                let ok = buf.withBytes { IPv4Header.checksumIsValid($0, headerLength: inner.headerLength) }
                guard ok else { throw .badInner }
            }
            try buf.truncate(to: inner.totalLength) // drops TFC padding
        case .transport:
            let hlen = h.headerLength
            let shift = udpLen + espHeader
            try buf.truncate(to: ptStart + payloadLen)
            try buf.move(from: 0, to: shift, length: hlen)
            try buf.removeFirst(shift)
            let total = buf.count
            try buf.withMutableBytes { (p) throws(DropReason) in
                p[h.protoFieldOffset] = nextHeader
                if h.family == .v4 {
                    writeU16(p, 2, UInt16(total))
                    IPv4Header.fixChecksum(p, headerLength: hlen)
                } else {
                    writeU16(p, 4, UInt16(total - 40))
                }
            }
        }

        let allowed = buf.withBytes { p -> Bool in
            guard let inner = try? IPHeaderInfo.parse(p) else { return false }
            return db.inboundPolicyAllows(FlowKey(header: inner, packet: p), sa: sa)
        }
        guard allowed else { sa.counters.add(.otherDrops, lane: context.lane); throw .policyMismatch }
        return .opened(sa)
    }
}
