// libFuzzer target for everything a hostile peer can reach: the inbound path of the
// ESP core (parse, SPI lookup, replay check, authenticate, decrypt, trailer, inner
// packet, policy check) and the outbound parser. Built by fuzz/run.sh with
// `swiftc -sanitize=fuzzer,address`, compiled together with SluiceCore's sources.
//
// The first input byte picks how the rest is used:
//   0: a whole IP packet, straight into the processor (inbound and outbound databases)
//   1: an ESP payload (SPI, seq, ...) behind a valid IPv4 header to our SA address
//   2: an inner payload sealed validly, then corrupted at input-chosen places, then opened
//   3: arbitrary plaintext (trailer and inner packet included) under a VALID ICV: the
//      only way to reach padding and inner-packet checks with attacker-chosen bytes
//   4: the TCP offload paths: a whole (GSO) packet cut and sealed, MSS learning from a
//      "decrypted" packet, and the receive merge of two packets split from the input
// Every mode runs with MSS learning on, so decrypted SYNs and ICMP errors reach it.
// Mode 2 checks the round trip: the clean packet must open into exactly the packet
// sealed, and a corrupted one may open only into that same packet (tunnel mode; in
// transport mode the IP header is not authenticated, so only the payload is compared).
// Modes 2 and 3 take sequence numbers from the same per-SA counter, so neither can
// push the receiver's replay window past the other's next packet.

let proposals = Proposal.allCases
let fuzzKey: (Proposal) -> SecretBytes = { p in SecretBytes((0..<p.keyMaterialLength).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }) }

struct FuzzWorld {
    let inbound: SecurityDatabase
    let outbound: SecurityDatabase
    let senders: [SecurityAssociation]
    let transforms: [OpenSSLTransform]

    init() {
        var ins: [SecurityAssociation] = [], outs: [SecurityAssociation] = [], inPolicies: [Policy] = [], outPolicies: [Policy] = []
        var ts: [OpenSSLTransform] = []
        for (i, p) in proposals.enumerated() {
            let mode: ESPMode = i % 2 == 0 ? .tunnel : .transport
            let inCfg = SAConfig(name: "in\(i)", direction: .inbound, spi: 0x100 + UInt32(i), mode: mode,
                                 local: IPAddress("192.0.2.2")!, remote: IPAddress("192.0.2.1")!, proposal: p,
                                 keyMaterial: fuzzKey(p), esn: i % 3 == 0, replayWindow: 64)
            var outCfg = inCfg
            outCfg.name = "out\(i)"; outCfg.direction = .outbound; outCfg.local = inCfg.remote; outCfg.remote = inCfg.local
            ins.append(try! SecurityAssociation(config: inCfg))
            outs.append(try! SecurityAssociation(config: outCfg))
            ts.append(try! OpenSSLTransform(proposal: p, keyMaterial: fuzzKey(p)))
            inPolicies.append(Policy(direction: .inbound, selector: TrafficSelector(), action: .protect(sa: "in\(i)")))
        }
        outPolicies.append(Policy(direction: .outbound, selector: TrafficSelector(proto: 17), action: .protect(sa: "out0")))
        outPolicies.append(Policy(direction: .outbound, selector: TrafficSelector(dst: IPPrefix("203.0.113.0/24"), proto: 6), action: .protect(sa: "out0")))
        outPolicies.append(Policy(direction: .outbound, selector: TrafficSelector(proto: 6), action: .discard))
        inbound = try! SecurityDatabase(policies: inPolicies, associations: ins)
        outbound = try! SecurityDatabase(policies: outPolicies, associations: outs)
        senders = outs
        transforms = ts
    }
}

nonisolated(unsafe) let world = FuzzWorld()
nonisolated(unsafe) var buffer = PacketBuffer()
nonisolated(unsafe) var scratch = PacketBuffer()
nonisolated(unsafe) var coalescer = TCPCoalescer()
let hints = MSSHints()

func ipv4(_ payload: [UInt8], proto: UInt8) -> [UInt8] {
    var h: [UInt8] = [0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]
    h.withUnsafeMutableBytes { p in
        writeU16(p, 2, UInt16(truncatingIfNeeded: 20 + payload.count))
        IPv4Header.fixChecksum(p, headerLength: 20)
    }
    return h + payload
}

/// Opens `wire` with the inbound database; the opened packet, or nil.
func openInbound(_ wire: [UInt8], _ ctx: ProcessingContext) -> [UInt8]? {
    guard (try? buffer.load(wire)) != nil else { return nil }
    return PacketProcessor.process(&buffer, database: world.inbound, context: ctx) == .opened ? buffer.bytes : nil
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2, size < 65000 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let ctx = ProcessingContext(mssHints: hints)
    let pick = Int(input[1]) % proposals.count
    let rest = Array(input[2...])
    switch input[0] % 5 {
    case 0:
        guard (try? buffer.load(rest)) != nil else { return 0 }
        _ = PacketProcessor.process(&buffer, database: world.inbound, context: ctx)
        guard (try? buffer.load(rest)) != nil else { return 0 }
        _ = PacketProcessor.process(&buffer, database: world.outbound, context: ctx)
    case 1:
        guard (try? buffer.load(ipv4(rest, proto: 50))) != nil else { return 0 }
        _ = PacketProcessor.process(&buffer, database: world.inbound, context: ctx)
    case 2:
        // A valid packet first: seal an inner UDP packet made of the input.
        var udp: [UInt8] = [0x13, 0x88, 0x00, 0x35, 0, 0, 0, 0] + rest
        udp.withUnsafeMutableBytes { writeU16($0, 4, UInt16(truncatingIfNeeded: $0.count)) }
        let inner = ipv4(udp, proto: 17)
        guard (try? buffer.load(inner)) != nil,
              let h = try? buffer.withBytes({ (p) throws(DropReason) in try IPHeaderInfo.parse(p) }) else { return 0 }
        let sa = world.senders[pick]
        guard let r = try? ESP.seal(&buffer, header: h, sa: sa, context: ctx), r == .sealed else { return 0 }
        let clean = buffer.bytes
        let tunnel = sa.config.mode == .tunnel
        var wire = clean
        if rest.count >= 4 {
            let at = (Int(rest[0]) << 8 | Int(rest[1])) % wire.count
            wire[at] ^= rest[2] | 1
            let cut = Int(rest[3]) % 4 == 0 ? (Int(rest[2]) % wire.count) : wire.count
            wire = Array(wire[0..<cut])
            // The corrupted copy first: a failed ICV never moves the window, so the clean
            // copy can still open after it.
            if let opened = openInbound(wire, ctx) {
                if tunnel { precondition(opened == inner, "a corrupted ESP packet opened into something else") }
                else { precondition(opened[20...] == inner[20...], "a corrupted ESP packet opened into another payload") }
                return 0 // its sequence number is taken now
            }
        }
        guard let opened = openInbound(clean, ctx) else { preconditionFailure("a packet sealed validly did not open") }
        precondition(opened == inner, "the round trip changed the packet")
    case 4:
        guard (try? buffer.load(rest)) != nil else { return 0 }
        var emitted = 0
        _ = PacketProcessor.processWhole(&buffer, scratch: &scratch, database: world.outbound, context: ctx) { esp in
            emitted += 1
            precondition(esp.count <= 1500, "an ESP segment over the SA's MTU")
        }
        rest.withUnsafeBytes { p in
            if let h = try? IPHeaderInfo.parse(p) { hints.learn(fromInbound: p, header: h) }
        }
        let split = rest.isEmpty ? 0 : Int(rest[0]) % rest.count
        let first = Array(rest[..<split]), second = Array(rest[split...])
        coalescer.reset()
        first.withUnsafeBytes { p in
            guard let h = try? IPHeaderInfo.parse(p), coalescer.start(p, header: h) else { return }
            second.withUnsafeBytes { q in
                if let h2 = try? IPHeaderInfo.parse(q) { _ = coalescer.append(q, header: h2) }
            }
            coalescer.finish()
            // Whatever it merged must still parse as the packet it claims to be.
            let merged = coalescer.buffer.bytes
            precondition((try? merged.withUnsafeBytes { (m) throws(DropReason) in try IPHeaderInfo.parse(m) }) != nil)
        }
    default:
        // Attacker-chosen plaintext under a valid ICV, with a fresh sequence number.
        let p = proposals[pick]
        let ivLen = p.ivLength
        var plain = rest
        while (plain.count) % p.alignment != 0 { plain.append(0) }
        if plain.isEmpty { return 0 }
        guard let seq = try? world.senders[pick].takeSequence() else { return 0 }
        var esp: [UInt8] = [UInt8](repeating: 0, count: 8) + [UInt8](repeating: 7, count: ivLen) + plain + [UInt8](repeating: 0, count: 16)
        esp.withUnsafeMutableBytes { e in
            writeU32(e, 0, 0x100 + UInt32(pick))
            writeU32(e, 4, UInt32(truncatingIfNeeded: seq))
        }
        let esn = pick % 3 == 0
        let ok: Bool = esp.withUnsafeMutableBytes { e in
            (try? world.transforms[pick].seal(esp: e, payloadOffset: 8 + ivLen, payloadLength: plain.count,
                                              seqHigh: esn ? UInt32(truncatingIfNeeded: seq >> 32) : nil)) != nil
        }
        guard ok, (try? buffer.load(ipv4(esp, proto: 50))) != nil else { return 0 }
        _ = PacketProcessor.process(&buffer, database: world.inbound, context: ctx)
    }
    return 0
}
