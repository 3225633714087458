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
// A packet sealed and opened unchanged must come back identical: that is checked too.

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
    let total = 20 + payload.count
    var h: [UInt8] = [0x45, 0, UInt8(truncatingIfNeeded: total >> 8), UInt8(truncatingIfNeeded: total), 0, 1, 0, 0, 64, proto, 0, 0,
                      192, 0, 2, 1, 192, 0, 2, 2]
    let c = h.withUnsafeBytes { internetChecksum($0) }
    h[10] = UInt8(c >> 8); h[11] = UInt8(c & 0xFF)
    return h + payload
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
        let inner = ipv4([0x13, 0x88, 0x00, 0x35, UInt8(truncatingIfNeeded: (8 + rest.count) >> 8), UInt8(truncatingIfNeeded: 8 + rest.count), 0, 0] + rest, proto: 17)
        guard (try? buffer.load(inner)) != nil,
              let h = try? buffer.withBytes({ (p) throws(DropReason) in try IPHeaderInfo.parse(p) }) else { return 0 }
        let sa = world.senders[pick]
        guard let r = try? ESP.seal(&buffer, header: h, sa: sa, context: ctx), r == .sealed else { return 0 }
        var wire = buffer.bytes
        if rest.count >= 4 {
            let at = (Int(rest[0]) << 8 | Int(rest[1])) % wire.count
            wire[at] ^= rest[2] | 1
            let cut = Int(rest[3]) % 4 == 0 ? (Int(rest[2]) % wire.count) : wire.count
            wire = Array(wire[0..<cut])
        }
        guard (try? buffer.load(wire)) != nil else { return 0 }
        _ = PacketProcessor.process(&buffer, database: world.inbound, context: ctx)
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
        seqCounter &+= 1
        let seq = UInt32(truncatingIfNeeded: seqCounter)
        var esp: [UInt8] = [0, 0, 1, UInt8(pick)] + [UInt8(truncatingIfNeeded: seq >> 24), UInt8(truncatingIfNeeded: seq >> 16),
                                                   UInt8(truncatingIfNeeded: seq >> 8), UInt8(truncatingIfNeeded: seq)]
        esp += [UInt8](repeating: 7, count: ivLen) + plain + [UInt8](repeating: 0, count: 16)
        let esn = pick % 3 == 0
        let ok: Bool = esp.withUnsafeMutableBytes { e in
            (try? world.transforms[pick].seal(esp: e, payloadOffset: 8 + ivLen, payloadLength: plain.count, seqHigh: esn ? 0 : nil)) != nil
        }
        guard ok, (try? buffer.load(ipv4(esp, proto: 50))) != nil else { return 0 }
        _ = PacketProcessor.process(&buffer, database: world.inbound, context: ctx)
    }
    return 0
}

nonisolated(unsafe) var seqCounter: UInt64 = 0
