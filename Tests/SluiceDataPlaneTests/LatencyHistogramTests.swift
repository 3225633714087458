import Testing
@testable import SluiceConfig
@testable import SluiceCore
@testable import SluiceDataPlane

/// The per-packet latency histogram: buckets from 1 us to 100 ms per direction, exported
/// as a Prometheus histogram, and the p50/p99 `stats` shows, from the same buckets.
@Suite("Latency histogram")
struct LatencyHistogramTests {
    @Test("values land in the bucket whose upper bound holds them; above 100 ms in the last")
    func buckets() {
        let s = WorkerStats(queue: 0)
        for ns: UInt64 in [0, 1_000, 1_001, 2_500, 99_999_999, 100_000_000, 100_000_001, 5_000_000_000] {
            s.recordLatency(ns, .outbound)
        }
        s.recordLatency(3_000, .inbound)
        let out = s.latency[WorkerStats.LatencyClass.outbound.rawValue].map(\.load)
        #expect(out.count == WorkerStats.latencyBounds.count + 1)
        #expect(out[0] == 2 && out[1] == 2, "1 us holds 0 and 1000 ns; 2.5 us holds 1001 and 2500")
        #expect(out[15] == 2 && out[16] == 2, "100 ms holds up to 100 000 000 ns; above goes to +Inf")
        #expect(s.latency[WorkerStats.LatencyClass.inbound.rawValue][2].load == 1)
        #expect(s.latencySum[WorkerStats.LatencyClass.inbound.rawValue].load == 3_000)
        #expect(s.latencyTotals.reduce(0, +) == 9)
    }

    @Test("quantiles interpolate within the bucket, as Prometheus' histogram_quantile")
    func quantiles() {
        var b = [UInt64](repeating: 0, count: WorkerStats.latencyBounds.count + 1)
        #expect(WorkerStats.quantile(0.5, buckets: b) == 0, "no packets, no latency")
        b[0] = 10
        #expect(WorkerStats.quantile(0.5, buckets: b) == 500)
        b = b.map { _ in 0 }
        b[1] = 4   // (1 us, 2.5 us]
        #expect(WorkerStats.quantile(0.5, buckets: b) == 1_750)
        #expect(WorkerStats.quantile(1.0, buckets: b) == 2_500)
        b[16] = 100   // most above 100 ms: the answer is the last bound, never more
        #expect(WorkerStats.quantile(0.99, buckets: b) == 100_000_000)
    }

    @Test("a worker's packets: one observation each, by direction, and the exported histogram adds up")
    func workerAndExport() throws {
        let key = SecretBytes([UInt8](repeating: 7, count: 20))
        let sa = try SecurityAssociation(config: SAConfig(name: "o", direction: .outbound, spi: 0x1001, mode: .tunnel,
                                                           local: IPAddress("192.0.2.1")!, remote: IPAddress("192.0.2.2")!,
                                                           proposal: .aes128gcm16, keyMaterial: key))
        let protect = Policy(direction: .outbound, selector: TrafficSelector(dst: IPPrefix("203.0.113.0/24")), action: .protect(sa: "o"))
        let db = try SecurityDatabase(policies: [protect], associations: [sa])
        let io = MemoryIO()
        let w = Worker(index: 0, io: io, queueNumber: 2, holder: DatabaseHolder(db), markShift: 16, passthrough: false)
        var p: [UInt8] = [0x45, 0, 0, 29, 0, 1, 0, 0, 64, 17, 0, 0] + IPAddress("198.51.100.7")!.bytes + IPAddress("203.0.113.9")!.bytes
        p += [0, 1, 0, 2, 0, 9, 0, 0, 0xAB]
        p.withUnsafeMutableBytes { IPv4Header.fixChecksum($0, headerLength: 20) }
        io.enqueue([p, p, p, [0x45, 0, 0]], queue: 2)
        #expect(w.runOnce() == 4)
        let snap = StatsSnapshot.make(workers: [w], database: db, info: StatsSnapshot.DaemonInfo(
            pid: 1, uptimeSeconds: 1, backend: "native", config: "t.toml", failMode: "closed", passthrough: false, reloads: 0),
            ruleDrops: [:])
        let q = try #require(snap.queues.first)
        #expect(q.latency?["out"]?.buckets.reduce(0, +) == 3 && q.latency?["other"]?.buckets.reduce(0, +) == 1)
        #expect(q.latencyP50Nanos > 0 && q.latencyP50Nanos <= q.latencyP99Nanos)
        let text = MetricsExporter.latencyHistograms(snap)
        #expect(text.contains("# TYPE sluice_queue_latency_seconds histogram"))
        func value(_ prefix: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect(value("sluice_queue_latency_seconds_count{queue=\"2\",direction=\"out\"}") == 3)
        #expect(value("sluice_queue_latency_seconds_bucket{queue=\"2\",direction=\"out\",le=\"+Inf\"}") == 3)
        #expect(value("sluice_queue_latency_seconds_bucket{queue=\"2\",direction=\"in\",le=\"+Inf\"}") == 0)
        // Cumulative: never decreasing along the bounds.
        let outBuckets = text.split(separator: "\n").filter { $0.hasPrefix("sluice_queue_latency_seconds_bucket{queue=\"2\",direction=\"out\"") }
            .compactMap { Double($0.split(separator: " ").last ?? "") }
        #expect(outBuckets.count == 17 && outBuckets == outBuckets.sorted())
    }
}
