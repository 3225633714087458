import CSluiceNetfilter
import Foundation
import Logging
import Prometheus
import SluiceCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Prometheus text exposition of the stats snapshot, through swift-prometheus.
/// Counting on the hot path stays in the workers' relaxed atomics; this only reads a
/// snapshot per scrape and moves the registry's counters by the difference.
public final class MetricsExporter: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private var last: [String: UInt64] = [:]
    private let lock = Mutex<Void>(())

    public init() {}

    private func counter(_ name: String, _ labels: [(String, String)], _ value: UInt64, help: String) {
        let key = name + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let previous = last[key] ?? 0
        let c = registry.makeCounter(name: name, labels: labels, help: help)
        // A counter that went backwards belongs to a replaced SA: count it afresh.
        let delta = value >= previous ? value - previous : value
        if delta > 0 { c.increment(by: Int64(clamping: delta)) }
        last[key] = value
    }

    private func gauge(_ name: String, _ labels: [(String, String)], _ value: Double, help: String) {
        registry.makeGauge(name: name, labels: labels, help: help).set(value)
    }

    public func render(_ s: StatsSnapshot) -> [UInt8] {
        lock.withLock { _ in
            for q in s.queues {
                let l = [("queue", String(q.queue))]
                counter("sluice_queue_packets_total", l, q.received, help: "Packets received from the NFQUEUE queue")
                counter("sluice_queue_verdicts_total", l + [("verdict", "accept")], q.accepted, help: "Verdicts sent, by kind")
                counter("sluice_queue_verdicts_total", l + [("verdict", "drop")], q.dropped, help: "Verdicts sent, by kind")
                counter("sluice_queue_sealed_total", l, q.sealed, help: "Packets sealed into ESP")
                counter("sluice_queue_opened_total", l, q.opened, help: "ESP packets verified and opened")
                counter("sluice_queue_bytes_total", l + [("direction", "in")], q.bytesIn, help: "Bytes through the queue")
                counter("sluice_queue_bytes_total", l + [("direction", "out")], q.bytesOut, help: "Bytes through the queue")
                counter("sluice_queue_batches_total", l, q.batches, help: "Receive batches (recvmmsg calls that returned packets)")
                counter("sluice_queue_receive_overruns_total", l, q.receiveOverruns, help: "ENOBUFS: the kernel dropped for a full socket")
                counter("sluice_queue_verdict_errors_total", l, q.verdictErrors, help: "Verdicts the kernel refused")
                counter("sluice_queue_gso_whole_total", l, q.wholePackets ?? 0, help: "TCP packets taken whole from the GSO twin queue and cut here")
                counter("sluice_queue_gso_segments_total", l, q.segments ?? 0, help: "ESP packets cut from whole TCP packets")
                counter("sluice_queue_merged_total", l, q.coalesced ?? 0, help: "Decrypted TCP segments merged into the one before (local delivery)")
                counter("sluice_queue_raw_sent_total", l, q.injected, help: "Packets sent on a raw socket instead of in a verdict")
                if let age = q.heartbeatAgeSeconds {
                    gauge("sluice_queue_worker_up", l, age < Self.workerStale ? 1 : 0,
                          help: "1 while the queue's worker goes round its loop (at least once a second)")
                }
            }
            for r in DropReason.allCases {
                counter("sluice_drops_total", [("reason", r.rawValue)], s.drops[r.rawValue] ?? 0, help: "Packets dropped, by reason")
            }
            for a in s.associations {
                let l = [("sa", a.name), ("direction", a.direction), ("spi", a.spi)]
                counter("sluice_sa_packets_total", l, a.packets, help: "Packets through the SA")
                counter("sluice_sa_bytes_total", l, a.bytes, help: "Payload bytes through the SA")
                counter("sluice_sa_replay_drops_total", l, a.replayDrops, help: "Packets refused by the anti-replay window")
                counter("sluice_sa_icv_failures_total", l, a.icvFailures, help: "Packets that failed authentication")
                gauge("sluice_sa_sequence", l, Double(a.sequence), help: "Last sequence number sent (out) or highest accepted (in)")
                gauge("sluice_sa_expired", l, a.expired ? 1 : 0, help: "1 once the hard lifetime is reached")
                if let hard = a.hardSeconds {
                    gauge("sluice_sa_lifetime_remaining_seconds", l, Double(hard) - Double(a.ageSeconds),
                          help: "Seconds until the hard time lifetime (SAs with one)")
                }
                if let used = Self.lifetimeUsed(a) {
                    gauge("sluice_sa_lifetime_used_ratio", l, used,
                          help: "The largest share of a hard lifetime used: time, bytes or packets (SAs with one)")
                }
            }
            for k in s.kernel {
                let l = [("queue", String(k.queue))]
                gauge("sluice_kernel_queue_waiting", l, Double(k.waiting), help: "Packets waiting in the kernel queue for a verdict")
                counter("sluice_kernel_queue_dropped_total", l + [("cause", "queue_full")], k.queueDropped, help: "Kernel drops on the queue")
                counter("sluice_kernel_queue_dropped_total", l + [("cause", "socket_full")], k.userDropped, help: "Kernel drops on the queue")
            }
            gauge("sluice_up", [], 1, help: "1 while the daemon answers")
            gauge("sluice_build_info", [("version", s.daemon.version ?? ""), ("openssl", s.daemon.openssl ?? "")], 1,
                  help: "Always 1: the Sluice version and the OpenSSL it runs with, as labels")
            gauge("sluice_uptime_seconds", [], s.daemon.uptimeSeconds, help: "Seconds since start")
            var out: [UInt8] = []
            registry.emit(into: &out)
            out += Array(Self.latencyHistograms(s).utf8)
            return out
        }
    }

    /// A worker that has not come round its loop for this long is down (it does every second).
    static let workerStale = 5.0

    static func lifetimeUsed(_ a: StatsSnapshot.SAStats) -> Double? {
        let shares = [(a.ageSeconds, a.hardSeconds), (a.bytes, a.hardBytes), (a.packets, a.hardPackets)]
            .compactMap { used, limit in limit.map { $0 > 0 ? Double(used) / Double($0) : 1 } }
        return shares.max()
    }

    /// `sluice_queue_latency_seconds` as a Prometheus histogram, written from the workers'
    /// own buckets (the registry's histogram takes one observation at a time; these are
    /// counted already): cumulative buckets per queue and direction, with _sum and _count.
    static func latencyHistograms(_ s: StatsSnapshot) -> String {
        let name = "sluice_queue_latency_seconds"
        var out = "# HELP \(name) Per-packet processing time in the worker, by queue and direction (out: sealed, in: opened, other: passed or dropped)\n"
        out += "# TYPE \(name) histogram\n"
        let bounds = WorkerStats.latencyBounds.map { String(format: "%g", Double($0) / 1e9) } + ["+Inf"]
        for q in s.queues {
            for c in WorkerStats.LatencyClass.allCases {
                guard let h = q.latency?[c.label], h.buckets.count == bounds.count else { continue }
                let labels = "queue=\"\(q.queue)\",direction=\"\(c.label)\""
                var cumulative: UInt64 = 0
                for (le, n) in zip(bounds, h.buckets) {
                    cumulative += n
                    out += "\(name)_bucket{\(labels),le=\"\(le)\"} \(cumulative)\n"
                }
                out += "\(name)_sum{\(labels)} \(String(format: "%.9f", Double(h.sumNanos) / 1e9))\n"
                out += "\(name)_count{\(labels)} \(cumulative)\n"
            }
        }
        return out
    }
}

/// A minimal HTTP/1.0 listener for GET /metrics, on its own thread.
public final class MetricsServer: @unchecked Sendable {
    let fd: Int32
    let running = Atomic<Bool>(true)
    let produce: @Sendable () -> [UInt8]

    public init(host: String, port: Int, produce: @escaping @Sendable () -> [UInt8]) throws {
        self.produce = produce
        let v6 = host.contains(":")
        fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno(errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var r: Int32
        if v6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET6, host, &a.sin6_addr)
            r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, host, &a.sin_addr)
            r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard r == 0, listen(fd, 16) == 0 else {
            let e = Errno(errno)
            close(fd)
            throw ControlError("cannot listen for metrics on \(host):\(port): \(e)")
        }
    }

    public func stop() { running.store(false, ordering: .relaxed) }

    public func run() {
        defer { close(fd) }
        StreamSocket.acceptLoop(fd, running: running) { c in
            serve(c)
            close(c)
        }
    }

    func serve(_ c: Int32) {
        StreamSocket.setTimeouts(c, seconds: 2)
        let request = String(decoding: StreamSocket.readRequest(c, limit: 2048, until: Array("\r\n\r\n".utf8)), as: UTF8.self)
        let line = request.split(separator: "\r\n").first.map(String.init) ?? ""
        let parts = line.split(separator: " ")
        let body: [UInt8]
        let status: String
        var type = "text/plain; charset=utf-8"
        if parts.count >= 2, parts[0] == "GET", parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") {
            body = produce()
            status = "200 OK"
            type = "text/plain; version=0.0.4; charset=utf-8"
        } else if parts.count >= 2, parts[0] != "GET" {
            body = Array("only GET /metrics\n".utf8)
            status = "405 Method Not Allowed"
        } else {
            body = Array("not found: try /metrics\n".utf8)
            status = "404 Not Found"
        }
        let head = Array("HTTP/1.0 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
        if StreamSocket.sendAll(c, head) { StreamSocket.sendAll(c, body) }
    }
}
