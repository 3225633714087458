import SluiceCore

/// Packets that a PROTECT policy covers but whose SA is still being negotiated (an IKE
/// acquire). RFC 4301 §5.1 lets the implementation queue them: they wait here, bounded per
/// policy and in all, and leave sealed, in order, on the raw socket once the SA is in; what
/// waits too long or finds the queue full is dropped and counted. Never sent in clear.
///
/// Concurrency: one per worker, touched only by its thread.
struct HoldQueue {
    struct Limits {
        /// Per policy (one pending SA), as the contract: 32 packets, 64 KiB.
        var packets = 32
        var bytes = 64 * 1024
        /// All policies of one worker together.
        var totalPackets = 512
        /// How long a packet may wait (a negotiation that takes longer has failed for it).
        var timeoutNanos: UInt64 = 10_000_000_000
    }
    struct Entry { var bytes: [UInt8]; var since: UInt64 }

    var limits = Limits()
    private(set) var queues: [String: [Entry]] = [:]
    private var bytesByPolicy: [String: Int] = [:]
    private(set) var total = 0
    /// The database the queues were last tried against: a retry needs a new one (or time).
    /// Held strongly: an identifier of a freed snapshot can come back for the next one.
    var triedAgainst: SecurityDatabase?
    var lastTry: UInt64 = 0

    var isEmpty: Bool { total == 0 }

    mutating func add(_ bytes: [UInt8], policy: String, now: UInt64) -> Bool {
        guard total < limits.totalPackets, queues[policy, default: []].count < limits.packets,
              bytesByPolicy[policy, default: 0] + bytes.count <= limits.bytes else { return false }
        queues[policy, default: []].append(Entry(bytes: bytes, since: now))
        bytesByPolicy[policy, default: 0] += bytes.count
        total += 1
        return true
    }

    mutating func take(_ policy: String) -> [Entry] {
        let q = queues.removeValue(forKey: policy) ?? []
        bytesByPolicy[policy] = nil
        total -= q.count
        return q
    }

    mutating func putBack(_ entries: [Entry], policy: String) {
        guard !entries.isEmpty else { return }
        queues[policy] = entries + (queues[policy] ?? [])
        bytesByPolicy[policy, default: 0] += entries.reduce(0) { $0 + $1.bytes.count }
        total += entries.count
    }
}

extension Worker {
    enum HoldResult { case held, full, notHeld }

    /// Holds a copy of the packet in `packet` (just refused as no_sa) if its policy holds.
    func hold() -> HoldResult {
        guard let policy = PacketProcessor.pendingPolicy(packet, database: holder.database), holds?(policy) == true else { return .notHeld }
        let bytes = packet.withBytes { Array($0) }
        guard holdQueue.add(bytes, policy: policy, now: monotonicNanos()) else { return .full }
        stats.held.add()
        return .held
    }

    /// Sends what now has an SA (sealed, in order), drops what waited too long. Cheap when
    /// nothing changed: it runs again only for a new database or after a quarter second.
    func releaseHeld() {
        let db = holder.database
        let now = monotonicNanos()
        guard db !== holdQueue.triedAgainst || now &- holdQueue.lastTry > 250_000_000 else { return }
        holdQueue.triedAgainst = db
        holdQueue.lastTry = now
        let ctx = ProcessingContext(lane: index, now: now / 1_000_000_000, mssHints: mssHints)
        for policy in Array(holdQueue.queues.keys) {
            var entries = holdQueue.take(policy)
            var kept: [HoldQueue.Entry] = []
            while !entries.isEmpty {
                let e = entries.removeFirst()
                guard (try? packet.load(e.bytes)) != nil else { stats.drop(.truncated); continue }
                let outcome = PacketProcessor.process(&packet, database: db, context: ctx)
                switch outcome {
                case .sealed, .unchanged, .opened:
                    // Counted as what became of it: sealed as a rule, unchanged if the policy turned BYPASS meanwhile.
                    stats.heldSent.add()
                    switch outcome { case .sealed: stats.sealed.add(); case .opened: stats.opened.add(); default: stats.unchanged.add() }
                    packet.withBytes { queueRaw($0) }
                case let .icmpError(reason):
                    stats.drop(reason)
                    packet.withBytes { queueRaw($0) }
                case .drop(.noSA):
                    // Still no SA: this one and those behind it wait (order kept), unless too old.
                    if now &- e.since > holdQueue.limits.timeoutNanos {
                        stats.drop(.noSA)
                        continue
                    }
                    kept = [e] + entries
                    entries = []
                case let .drop(reason):
                    stats.drop(reason)
                }
            }
            holdQueue.putBack(kept, policy: policy)
        }
        if holdQueue.isEmpty { holdQueue.triedAgainst = nil }
        flushRaw()
    }
}


