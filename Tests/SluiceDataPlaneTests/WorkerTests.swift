import Testing
@testable import SluiceConfig
@testable import SluiceCore
@testable import SluiceDataPlane
import CSluiceNetfilter

/// The worker against a fake kernel: real NFQUEUE packet messages in, and the verdict
/// messages it would send decoded byte by byte. No root, no sockets.
@Suite("Worker and netlink verdicts")
struct WorkerTests {
    struct Verdict { let id: UInt32; let verdict: UInt32; let mark: UInt32?; let payload: [UInt8]?; let payloadAttrLength: Int?; var queue: Int = 0 }

    /// Decodes a train of NFQNL_MSG_VERDICT messages (nlmsghdr, nfgenmsg, attributes).
    func decode(_ b: [UInt8]) -> [Verdict] {
        func u16le(_ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        func u32le(_ o: Int) -> Int { u16le(o) | u16le(o + 2) << 16 }
        func u32be(_ o: Int) -> UInt32 { UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3]) }
        var out: [Verdict] = []
        var off = 0
        while off + 16 <= b.count {
            let len = u32le(off)
            let queue = Int(b[off + 18]) << 8 | Int(b[off + 19]) // nfgenmsg res_id, big-endian
            var a = off + 16 + 4
            var id: UInt32 = 0, verdict: UInt32 = 0, mark: UInt32? = nil, payload: [UInt8]? = nil, plen: Int? = nil
            while a + 4 <= off + len {
                let alen = u16le(a), type = u16le(a + 2) & 0x7FFF
                switch type {
                case 2: verdict = u32be(a + 4); id = u32be(a + 8)        // NFQA_VERDICT_HDR
                case 3: mark = u32be(a + 4)                               // NFQA_MARK
                case 10: payload = Array(b[(a + 4)..<(a + alen)]); plen = alen  // NFQA_PAYLOAD
                default: break
                }
                a += (alen + 3) & ~3
            }
            out.append(Verdict(id: id, verdict: verdict, mark: mark, payload: payload, payloadAttrLength: plen, queue: queue))
            off += (len + 3) & ~3
        }
        return out
    }

    /// An outbound aes128gcm16 tunnel SA "o" (192.0.2.1 -> 192.0.2.2) protecting
    /// 203.0.113.0/24, after the `before` policies.
    func outboundTunnel(before: [Policy] = []) throws -> (SecurityAssociation, SecurityDatabase) {
        let key = SecretBytes([UInt8](repeating: 7, count: 20))
        let sa = try SecurityAssociation(config: SAConfig(name: "o", direction: .outbound, spi: 0x1001, mode: .tunnel,
                                                           local: IPAddress("192.0.2.1")!, remote: IPAddress("192.0.2.2")!,
                                                           proposal: .aes128gcm16, keyMaterial: key))
        let protect = Policy(direction: .outbound, selector: TrafficSelector(dst: IPPrefix("203.0.113.0/24")), action: .protect(sa: "o"))
        return (sa, try SecurityDatabase(policies: before + [protect], associations: [sa]))
    }

    func udp(_ size: Int, dst: String) -> [UInt8] {
        let total = 28 + size
        var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0, 0, 64, 17, 0, 0]
        p += IPAddress("198.51.100.7")!.bytes + IPAddress(dst)!.bytes
        p += [0, 1, 0, 2, UInt8((8 + size) >> 8), UInt8((8 + size) & 0xFF), 0, 0] + [UInt8](repeating: 0xAB, count: size)
        p.withUnsafeMutableBytes { IPv4Header.fixChecksum($0, headerLength: 20) }
        return p
    }

    @Test("one verdict per packet: ESP with an exact-length payload, drops without, marks set")
    func verdicts() throws {
        let (_, db) = try outboundTunnel(before: [
            Policy(direction: .outbound, selector: TrafficSelector(dst: IPPrefix("203.0.113.66/32")), action: .discard),
        ])
        let io = MemoryIO()
        let w = Worker(index: 0, io: io, queueNumber: 3, holder: DatabaseHolder(db), markShift: 16, passthrough: false)
        let packets = [udp(1, dst: "203.0.113.9"), udp(100, dst: "203.0.113.66"), udp(1373, dst: "203.0.113.10"), [0x45, 0, 0]]
        io.enqueue(packets, queue: 3)
        #expect(w.runOnce() == 4)
        let v = decode(io.lastTrain)
        #expect(v.map(\.id) == [1, 2, 3, 4], "every packet gets exactly one verdict, in order")
        #expect(v.map(\.verdict) == [1, 0, 1, 0])
        #expect(v[0].mark == 0x0080_0000 && v[2].mark == 0x0080_0000, "processed bit set on accept")
        #expect(v[1].payload == nil && v[3].payload == nil)
        for i in [0, 2] {
            let p = try #require(v[i].payload)
            #expect(v[i].payloadAttrLength == 4 + p.count, "nla_len counts the payload exactly, no padding")
            let h = try parse(p)
            #expect(h.proto == IPProto.esp && h.totalLength == p.count)
        }
        #expect(w.stats.sealed.load == 2 && w.stats.dropped.load == 2)
        #expect(w.stats.drops[DropReason.policyDiscard.index].load == 1)
        #expect(w.stats.drops[DropReason.truncated.index].load == 1)
    }

    @Test("passthrough accepts unchanged, without a payload")
    func passthrough() throws {
        let db = try SecurityDatabase(policies: [], associations: [])
        let io = MemoryIO()
        let w = Worker(index: 0, io: io, queueNumber: 0, holder: DatabaseHolder(db), markShift: 8, passthrough: true)
        io.enqueue([udp(10, dst: "203.0.113.1")], queue: 0)
        w.runOnce()
        let v = decode(io.lastTrain)
        #expect(v.count == 1 && v[0].verdict == 1 && v[0].payload == nil && v[0].mark == 0x8000)
    }

    @Test("a whole TCP packet from the GSO twin: ESP segments on the raw socket, DROP on the twin queue")
    func wholePacket() throws {
        let (sa, db) = try outboundTunnel()
        let io = MemoryIO()
        let w = Worker(index: 0, io: io, queueNumber: 3, holder: DatabaseHolder(db), markShift: 16, passthrough: false)
        let hints = MSSHints()
        w.mssHints = hints
        let flow = MSSHints.Flow(src: IPAddress("198.51.100.7")!, dst: IPAddress("203.0.113.9")!, srcPort: 1, dstPort: 2)
        hints.record(flow, mss: 1400)
        // 20 000 bytes of TCP payload, checksum unfinished, handed over whole on queue 5.
        let total = 40 + 20_000
        var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0x40, 0, 64, 6, 0, 0]
        p += IPAddress("198.51.100.7")!.bytes + IPAddress("203.0.113.9")!.bytes
        p += [0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xFF, 0xFF, 0x12, 0x34, 0, 0]
        p += (0..<20_000).map { UInt8(truncatingIfNeeded: $0) }
        p.withUnsafeMutableBytes { IPv4Header.fixChecksum($0, headerLength: 20) }
        let gso = UInt32(SLUICE_NFQ_SKB_GSO | SLUICE_NFQ_SKB_CSUM_NOTREADY)
        io.enqueue([p], queue: 5, skbInfo: gso)
        w.runOnce()
        let v = decode(io.lastTrain)
        #expect(v.count == 1 && v[0].queue == 5 && v[0].verdict == 0 && v[0].payload == nil,
                "the original is dropped on the queue it came from")
        #expect(io.raw.count == 15, "20 000 bytes at 1400 per segment")
        for esp in io.raw {
            let h = try parse(esp)
            #expect(h.proto == IPProto.esp && h.totalLength == esp.count && esp.count <= 1500)
        }
        #expect(w.stats.wholePackets.load == 1 && w.stats.segments.load == 15 && w.stats.injected.load == 15)
        #expect(w.stats.dropped.load == 0, "a packet that left as ESP is not a drop")
        #expect(sa.counters.packets == 15, "one sequence number and one count per ESP packet")
    }

    func parse(_ b: [UInt8]) throws -> IPHeaderInfo {
        var r: Result<IPHeaderInfo, DropReason> = .failure(.truncated)
        b.withUnsafeBytes { p in
            do throws(DropReason) { r = .success(try IPHeaderInfo.parse(p)) } catch { r = .failure(error) }
        }
        return try r.get()
    }
}
