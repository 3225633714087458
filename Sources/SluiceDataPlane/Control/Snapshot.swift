import Foundation
import SluiceCore
import SluiceIKE

/// The document `sluice stats --json` prints and the control socket returns (version 1).
public struct StatsSnapshot: Codable, Sendable {
    public var version = 1
    public var daemon: DaemonInfo
    public var queues: [QueueStats]
    public var associations: [SAStats]
    /// Every drop by reason: the workers' and the kernel rules' together.
    public var drops: [String: UInt64]
    /// The part of `drops` decided by Sluice's nftables rules (read from their counters).
    public var ruleDrops: [String: UInt64]
    public var kernel: [KernelQueue]
    /// Monotonic seconds when taken, for rates between two snapshots.
    public var taken: Double
    /// The IKE agent's SAs, when the daemon has connections (`sluice list-sas` shows the same).
    public var ikeSAs: [IKESAStatus]? = nil
    /// The IKE agent's message counters (malformed, unknown SPI, integrity failures, retransmissions, ...).
    public var ikeCounters: AgentCounters? = nil

    public struct DaemonInfo: Codable, Sendable {
        public var pid: Int32
        public var uptimeSeconds: Double
        public var backend: String
        public var config: String
        public var failMode: String
        public var passthrough: Bool
        public var reloads: UInt64
        /// `SluiceVersion.number` and the OpenSSL the daemon runs with (nil from older daemons).
        public var version: String? = nil
        public var openssl: String? = nil
    }

    public struct QueueStats: Codable, Sendable {
        public var queue: Int
        public var received, accepted, dropped, sealed, opened, unchanged, icmpSent: UInt64
        public var bytesIn, bytesOut, batches, maxBatch, receiveOverruns, verdictErrors, ioErrors, injected, injectErrors: UInt64
        /// GSO packets taken whole, and the ESP packets cut from them (0 in older daemons).
        public var wholePackets: UInt64? = nil, segments: UInt64? = nil
        /// Decrypted TCP segments merged into the previous one (receive-side GRO).
        public var coalesced: UInt64? = nil
        /// Packets held for an SA being negotiated, and those of them sent once it was up.
        public var held: UInt64? = nil, heldSent: UInt64? = nil
        /// Interpolated from `latency`'s buckets, all directions together.
        public var latencyP50Nanos, latencyP99Nanos: UInt64
        public var drops: [String: UInt64]
        /// Per direction ("out", "in", "other"): count per bucket of `latencyBoundsNanos`
        /// (not cumulative; one more for above the last bound) and the sum (nil from older daemons).
        public var latency: [String: LatencyHistogram]? = nil
        /// Seconds since the worker last went round its receive loop (it does at least once a second).
        public var heartbeatAgeSeconds: Double? = nil
    }

    public struct LatencyHistogram: Codable, Sendable {
        public var buckets: [UInt64]
        public var sumNanos: UInt64
    }

    /// The histogram's bucket upper bounds (`WorkerStats.latencyBounds`).
    public var latencyBoundsNanos: [UInt64]? = WorkerStats.latencyBounds

    public struct SAStats: Codable, Sendable {
        public var name, direction, spi, mode, proposal, local, remote: String
        public var esn: Bool
        public var sequence: UInt64
        public var replayWindow: Int
        public var packets, bytes, replayDrops, icvFailures, otherDrops: UInt64
        public var softBytes, hardBytes, softPackets, hardPackets, softSeconds, hardSeconds: UInt64?
        public var ageSeconds: UInt64
        public var expired: Bool
        /// On disk: how far sequence numbers are reserved (out), or the replay mark (in).
        public var durableMark: UInt64? = nil
    }
}

/// One line of /proc/net/netfilter/nfnetlink_queue: the kernel's own view of a queue.
public struct KernelQueue: Codable, Sendable, Equatable {
    public var queue: Int
    public var portID: UInt32
    public var waiting: UInt64
    public var copyMode: Int
    public var copyRange: UInt64
    public var queueDropped: UInt64     // queue full
    public var userDropped: UInt64      // netlink socket buffer full
    public var idSequence: UInt64

    public static let procPath = "/proc/net/netfilter/nfnetlink_queue"

    public static func parse(_ text: String) -> [KernelQueue] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard f.count >= 8, let q = Int(f[0]), let port = UInt32(f[1]), let waiting = UInt64(f[2]),
                  let mode = Int(f[3]), let range = UInt64(f[4]), let qd = UInt64(f[5]), let ud = UInt64(f[6]),
                  let ids = UInt64(f[7]) else { return nil }
            return KernelQueue(queue: q, portID: port, waiting: waiting, copyMode: mode, copyRange: range,
                               queueDropped: qd, userDropped: ud, idSequence: ids)
        }
    }

    public static func read() -> [KernelQueue] {
        guard let t = try? String(contentsOfFile: procPath, encoding: .utf8) else { return [] }
        return parse(t)
    }
}

extension StatsSnapshot {
    static func make(workers: [Worker], database: SecurityDatabase, info: DaemonInfo, ruleDrops: [String: UInt64]) -> StatsSnapshot {
        var total: [String: UInt64] = ruleDrops.filter { $0.value > 0 }
        let queues = workers.map { w -> QueueStats in
            let s = w.stats
            let latencyTotals = s.latencyTotals
            var drops: [String: UInt64] = [:]
            for r in DropReason.allCases {
                let v = s.drops[r.index].load
                if v > 0 { drops[r.rawValue] = v; total[r.rawValue, default: 0] += v }
            }
            return QueueStats(queue: s.queue, received: s.received.load, accepted: s.accepted.load, dropped: s.dropped.load,
                              sealed: s.sealed.load, opened: s.opened.load, unchanged: s.unchanged.load, icmpSent: s.icmpSent.load,
                              bytesIn: s.bytesIn.load, bytesOut: s.bytesOut.load, batches: s.batches.load, maxBatch: s.maxBatch.load,
                              receiveOverruns: s.receiveOverruns.load, verdictErrors: s.verdictErrors.load, ioErrors: s.ioErrors.load,
                              injected: s.injected.load, injectErrors: s.injectErrors.load,
                              wholePackets: s.wholePackets.load, segments: s.segments.load, coalesced: s.coalesced.load,
                              held: s.held.load, heldSent: s.heldSent.load,
                              latencyP50Nanos: WorkerStats.quantile(0.5, buckets: latencyTotals),
                              latencyP99Nanos: WorkerStats.quantile(0.99, buckets: latencyTotals), drops: drops,
                              latency: Dictionary(uniqueKeysWithValues: WorkerStats.LatencyClass.allCases.map { c in
                                  (c.label, LatencyHistogram(buckets: s.latency[c.rawValue].map(\.load), sumNanos: s.latencySum[c.rawValue].load))
                              }),
                              heartbeatAgeSeconds: Double(monotonicNanos() &- s.heartbeat.load) / 1e9)
        }
        let now = monotonicNanos() / 1_000_000_000
        let sas = database.associations.map { sa -> SAStats in
            let c = sa.config
            let lt = c.lifetime
            return SAStats(name: c.name, direction: c.direction.rawValue, spi: "0x" + String(c.spi, radix: 16),
                           mode: c.mode.rawValue, proposal: c.proposal.rawValue, local: c.local.description,
                           remote: c.remote.description, esn: c.esn,
                           sequence: c.direction == .outbound ? sa.currentSequence : sa.replayTop,
                           replayWindow: c.replayWindow, packets: sa.counters.packets,
                           bytes: sa.counters.bytes,
                           replayDrops: sa.counters.replayDrops,
                           icvFailures: sa.counters.icvFailures,
                           otherDrops: sa.counters.otherDrops,
                           softBytes: lt.softBytes, hardBytes: lt.hardBytes, softPackets: lt.softPackets,
                           hardPackets: lt.hardPackets, softSeconds: lt.softSeconds, hardSeconds: lt.hardSeconds,
                           ageSeconds: now >= sa.installedAt ? now - sa.installedAt : 0, expired: sa.isExpired,
                           durableMark: sa.sequence?.reservedThrough ?? sa.replay?.durableMark)
        }
        return StatsSnapshot(daemon: info, queues: queues, associations: sas, drops: total,
                             ruleDrops: ruleDrops.filter { $0.value > 0 }, kernel: KernelQueue.read(),
                             taken: Double(monotonicNanos()) / 1e9)
    }
}
