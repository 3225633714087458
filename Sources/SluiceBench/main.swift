// sluice-bench: figures, not tests. Run through bench/*.sh, which also runs the
// baselines (openssl speed, other builds) in the same script, for ratios.
//   sluice-bench crypto [seconds]                      seal and open per algorithm and size
//   sluice-bench worker THREADS [seconds] [proposal] [size]   the worker loop, in process
//   sluice-bench open THREADS [seconds] [proposal] [size] [mark]  the worker loop on inbound ESP,
//                                                      durable replay mark on (1) or off (0)
//   sluice-bench ike [seconds] [rounds]                IKEv2 establishments/s and CHILD_SA rekeys/s,
//                                                      two agents in memory (IKEBench.swift)
import Foundation
import SluiceCore
import SluiceDataPlane

func now() -> Double { Double(monotonicNanos()) / 1e9 }

func key(_ p: Proposal) -> SecretBytes { SecretBytes((0..<p.keyMaterialLength).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }) }

func ipv4UDP(size: Int, src: String = "198.51.100.7", dst: String = "203.0.113.9") -> [UInt8] {
    let payload = 8 + size
    let total = 20 + payload
    var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0x40, 0, 64, 17, 0, 0]
    p += IPAddress(src)!.bytes + IPAddress(dst)!.bytes
    p += [0x13, 0x88, 0x00, 0x35, UInt8(payload >> 8), UInt8(payload & 0xFF), 0, 0]
    p += (0..<size).map { UInt8(truncatingIfNeeded: $0) }
    var sum: UInt32 = 0
    for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(p[i]) << 8 | UInt32(p[i + 1]) }
    while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
    let c = ~UInt16(sum)
    p[10] = UInt8(c >> 8); p[11] = UInt8(c & 0xFF)
    return p
}

func pair(_ p: Proposal, lanes: Int = 1) throws -> (SecurityDatabase, SecurityDatabase, SecurityAssociation) {
    let out = SAConfig(name: "o", direction: .outbound, spi: 0x1001, mode: .tunnel, local: IPAddress("192.0.2.1")!,
                       remote: IPAddress("192.0.2.2")!, proposal: p, keyMaterial: key(p), esn: true, mtu: 65535)
    var inn = out
    inn.name = "i"; inn.direction = .inbound; inn.local = out.remote; inn.remote = out.local
    inn.replayWindow = 0 // the benchmark re-opens packets; replay checking is measured in the tests
    let so = try SecurityAssociation(config: out, lanes: lanes)
    let si = try SecurityAssociation(config: inn, lanes: lanes)
    let sender = try SecurityDatabase(policies: [Policy(direction: .outbound, selector: TrafficSelector(), action: .protect(sa: "o"))], associations: [so])
    let receiver = try SecurityDatabase(policies: [Policy(direction: .inbound, selector: TrafficSelector(), action: .protect(sa: "i"))], associations: [si])
    return (sender, receiver, so)
}

/// The transform alone: crypto on a ready ESP buffer, no packet handling. Separates the
/// crypto library's per-packet cost from Sluice's own.
func transformOnly(_ p: Proposal, size: Int, seconds: Double) throws -> Double {
    let t = try OpenSSLTransform(proposal: p, keyMaterial: key(p))
    let hdr = 8 + p.ivLength
    let size = (size + p.alignment - 1) / p.alignment * p.alignment // CBC needs whole blocks
    var esp = [UInt8](repeating: 1, count: hdr + size + 16)
    var n = 0
    let t0 = now()
    var t1 = t0
    while t1 - t0 < seconds {
        for i in 0..<256 {
            esp[7] = UInt8(truncatingIfNeeded: i)
            let ok = esp.withUnsafeMutableBytes { e in (try? t.seal(esp: e, payloadOffset: hdr, payloadLength: size, seqHigh: nil)) != nil }
            guard ok else { fatalError("transform seal failed") }
        }
        n += 256
        t1 = now()
    }
    return Double(n) * Double(size) / (t1 - t0) / 1e6
}

/// Seal and open throughput per algorithm and inner packet size (payload bytes/s, like openssl speed).
func cryptoBench(seconds: Double, sizes: [Int]) throws {
    print("proposal,size,seal_pps,seal_MBps,open_pps,open_MBps,transform_only_MBps")
    for p in Proposal.allCases {
        for size in sizes {
            let (sender, receiver, _) = try pair(p)
            let inner = ipv4UDP(size: size - 28)
            var buf = PacketBuffer()
            let ctx = ProcessingContext()
            // Packets per second for `input` through `db`, which must give `expected` every time.
            func rate(_ input: [UInt8], _ db: SecurityDatabase, _ expected: Outcome) throws -> Double {
                var n = 0
                let t0 = now()
                var t1 = t0
                while t1 - t0 < seconds {
                    for _ in 0..<256 {
                        try buf.load(input)
                        guard PacketProcessor.process(&buf, database: db, context: ctx) == expected else { fatalError("\(expected) failed") }
                    }
                    n += 256
                    t1 = now()
                }
                return Double(n) / (t1 - t0)
            }
            let sealPPS = try rate(inner, sender, .sealed)
            let wire = buf.bytes
            let openPPS = try rate(wire, receiver, .opened)
            let bare = try transformOnly(p, size: size, seconds: seconds)
            print(String(format: "%@,%d,%.0f,%.1f,%.0f,%.1f,%.1f", p.rawValue, size, sealPPS, sealPPS * Double(size) / 1e6, openPPS, openPPS * Double(size) / 1e6, bare))
        }
    }
}

/// Workers of the daemon over in-memory queues (`MemoryIO`) that deliver `batches` round
/// and round, one thread each, for `seconds`: the worker loop exactly as in the daemon,
/// without the syscalls. Returns packets per second over all threads, and the workers.
func driveWorkers(threads: Int, holder: any DatabaseSource, batches: [[[UInt8]]], hook: UInt8 = 3,
                  seconds: Double) -> (pps: Double, workers: [Worker]) {
    let batch = batches.map(\.count).max() ?? 32
    let workers = (0..<threads).map { i -> Worker in
        let io = MemoryIO()
        io.record = false
        io.cycle = true
        for b in batches { io.enqueue(b, queue: UInt16(i), hook: hook) }
        return Worker(index: i, io: io, queueNumber: UInt16(i), holder: holder, markShift: 16, passthrough: false, batch: batch)
    }
    let counts = (0..<threads).map { _ in Counter() }
    let group = DispatchGroup()
    let start = now()
    for (i, w) in workers.enumerated() {
        group.enter()
        let counter = counts[i]
        Thread {
            var done = 0
            while now() - start < seconds {
                for _ in 0..<64 { done += w.runOnce() }
            }
            counter.store(UInt64(done))
            group.leave()
        }.start()
    }
    group.wait()
    let total = counts.reduce(0) { $0 + Int($1.value) }
    return (Double(total) / (now() - start), workers)
}

/// One worker, a fixed number of packets, no clock: for instruction counts (callgrind), which
/// are the same whatever else the machine does.
func driveCount(holder: any DatabaseSource, batches: [[[UInt8]]], hook: UInt8 = 3, packets: Int) -> [Worker] {
    let io = MemoryIO()
    io.record = false
    io.cycle = true
    for b in batches { io.enqueue(b, queue: 0, hook: hook) }
    let w = Worker(index: 0, io: io, queueNumber: 0, holder: holder, markShift: 16, passthrough: false,
                   batch: batches.map(\.count).max() ?? 32)
    var done = 0
    while done < packets { done += w.runOnce() }
    return [w]
}

/// The worker loop sealing UDP packets of `size` bytes.
func workerBench(threads: Int, seconds: Double, proposal: Proposal, size: Int) throws {
    let (sender, _, _) = try pair(proposal, lanes: threads)
    let packets = (0..<32).map { _ in ipv4UDP(size: size - 28) }
    let (pps, workers) = driveWorkers(threads: threads, holder: DatabaseHolder(sender), batches: [packets], seconds: seconds)
    let sealed = workers.reduce(UInt64(0)) { $0 + $1.stats.sealed.load }
    print(String(format: "threads=%d proposal=%@ size=%d pps=%.0f Gbit/s=%.2f sealed_counted=%llu", threads, proposal.rawValue, size,
                 pps, pps * Double(size) * 8 / 1e9, sealed))
}

/// The worker loop opening inbound ESP: a pool of distinct sealed packets (the window
/// advances through the first lap; replay checking is off so later laps are opened too,
/// paying the same lock and mark checks). `mark`: the durable replay mark on a real file
/// store with its background writer, against a store that keeps nothing.
func openBench(threads: Int, seconds: Double, proposal: Proposal, size: Int, mark: Bool, packets: Int? = nil) throws {
    // No ESN: with replay checking off, seq-high inference would misplace the older laps.
    let out = SAConfig(name: "o", direction: .outbound, spi: 0x1001, mode: .tunnel, local: IPAddress("192.0.2.1")!,
                       remote: IPAddress("192.0.2.2")!, proposal: proposal, keyMaterial: key(proposal), mtu: 65535)
    let sender = try SecurityDatabase(policies: [Policy(direction: .outbound, selector: TrafficSelector(), action: .protect(sa: "o"))],
                                      associations: [SecurityAssociation(config: out)])
    var inn = out
    inn.name = "i"; inn.direction = .inbound; inn.local = out.remote; inn.remote = out.local
    inn.replayWindow = 0
    let dir = NSTemporaryDirectory() + "sluice-bench-\(getpid())"
    let writer = BackgroundWriter()
    let store: SAStateStore = mark ? try FileStateStore(directory: dir) : EphemeralStateStore()
    if mark { writer.start() }
    let manager = SAManager(settings: .init(lanes: threads, replayMarkInterval: mark ? 4096 : UInt64(1) << 62),
                            store: store, writer: mark ? writer : nil)
    manager.commit(try manager.prepare(associations: [inn], policies: [Policy(direction: .inbound, selector: TrafficSelector(), action: .protect(sa: "i"))]))
    var buf = PacketBuffer()
    let pool: [[[UInt8]]] = try (0..<128).map { _ in
        try (0..<32).map { _ in
            try buf.load(ipv4UDP(size: size - 28))
            guard PacketProcessor.process(&buf, database: sender, context: .init()) == .sealed else { fatalError("seal") }
            return buf.bytes
        }
    }
    let pps: Double, workers: [Worker]
    if let packets {
        workers = driveCount(holder: manager, batches: pool, hook: 0, packets: packets)
        pps = 0
    } else {
        (pps, workers) = driveWorkers(threads: threads, holder: manager, batches: pool, hook: 0, seconds: seconds)
    }
    if mark { writer.stop() }
    let opened = workers.reduce(UInt64(0)) { $0 + $1.stats.opened.load }
    let received = workers.reduce(UInt64(0)) { $0 + $1.stats.received.load }
    guard opened == received else { fatalError("only \(opened) of \(received) packets opened: the benchmark measures refusals") }
    print(String(format: "threads=%d proposal=%@ size=%d mark=%d pps=%.0f opened=%llu", threads, proposal.rawValue, size, mark ? 1 : 0,
                 pps, opened))
    try? FileManager.default.removeItem(atPath: dir)
}

let args = CommandLine.arguments
switch args.count > 1 ? args[1] : "" {
case "crypto":
    try cryptoBench(seconds: args.count > 2 ? Double(args[2]) ?? 0.5 : 0.5,
                    sizes: args.count > 3 ? args[3].split(separator: ",").compactMap { Int($0) } : [64, 512, 1400, 8000])
case "worker":
    let threads = args.count > 2 ? Int(args[2]) ?? 1 : 1
    let secs = args.count > 3 ? Double(args[3]) ?? 3 : 3
    let p = args.count > 4 ? Proposal(rawValue: args[4]) ?? .aes128gcm16 : .aes128gcm16
    let size = args.count > 5 ? Int(args[5]) ?? 1400 : 1400
    try workerBench(threads: threads, seconds: secs, proposal: p, size: size)
case "open":
    let threads = args.count > 2 ? Int(args[2]) ?? 1 : 1
    let secs = args.count > 3 ? Double(args[3]) ?? 3 : 3
    let p = args.count > 4 ? Proposal(rawValue: args[4]) ?? .aes128gcm16 : .aes128gcm16
    let size = args.count > 5 ? Int(args[5]) ?? 1400 : 1400
    try openBench(threads: threads, seconds: secs, proposal: p, size: size, mark: args.count > 6 ? args[6] == "1" : true)
case "open-count":
    // open-count PACKETS [proposal] [size] [0|1]: the open path for a fixed number of packets (callgrind).
    let n = args.count > 2 ? Int(args[2]) ?? 10000 : 10000
    let p = args.count > 3 ? Proposal(rawValue: args[3]) ?? .aes128gcm16 : .aes128gcm16
    let size = args.count > 4 ? Int(args[4]) ?? 1400 : 1400
    try openBench(threads: 1, seconds: 0, proposal: p, size: size, mark: args.count > 5 ? args[5] == "1" : true, packets: n)
case "ike":
    try ikeBench(seconds: args.count > 2 ? Double(args[2]) ?? 1 : 1, rounds: args.count > 3 ? Int(args[3]) ?? 3 : 3)
default:
    print("usage: sluice-bench crypto [seconds] | worker THREADS [seconds] [proposal] [size] | open THREADS [seconds] [proposal] [size] [0|1] | open-count PACKETS [proposal] [size] [0|1] | ike [seconds] [rounds]")
    exit(2)
}
