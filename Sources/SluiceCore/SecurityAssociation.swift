import Synchronization

public enum Direction: String, Sendable { case outbound = "out", inbound = "in" }
public enum ESPMode: String, Sendable { case tunnel, transport }

/// What the outer IPv4 header's DF bit becomes (tunnel mode).
public enum DFPolicy: String, Sendable { case copy, set, clear }

public struct Lifetime: Sendable, Equatable {
    public var softBytes: UInt64? = nil
    public var hardBytes: UInt64? = nil
    public var softPackets: UInt64? = nil
    public var hardPackets: UInt64? = nil
    public var softSeconds: UInt64? = nil
    public var hardSeconds: UInt64? = nil
    public init() {}
}

/// Everything configured about one SA. Keys live in `keyMaterial` and never print.
public struct SAConfig: Sendable {
    public var name: String
    public var direction: Direction
    public var spi: UInt32
    public var mode: ESPMode
    public var local: IPAddress
    public var remote: IPAddress
    public var proposal: Proposal
    public var keyMaterial: SecretBytes
    public var esn: Bool
    public var replayWindow: Int
    public var lifetime: Lifetime
    /// Tunnel mode only: pad inner packets up to a multiple of this (TFC, RFC 4303 §2.4). 0 = off.
    public var tfcPadTo: Int
    /// Outer path MTU: a DF packet that no longer fits is refused with ICMP.
    public var mtu: Int
    public var dfPolicy: DFPolicy
    /// UDP encapsulation (RFC 3948) on port 4500.
    public var udpEncapsulation: Bool

    public init(name: String, direction: Direction, spi: UInt32, mode: ESPMode, local: IPAddress, remote: IPAddress,
                proposal: Proposal, keyMaterial: SecretBytes, esn: Bool = false, replayWindow: Int = 1024,
                lifetime: Lifetime = Lifetime(), tfcPadTo: Int = 0, mtu: Int = 1500, dfPolicy: DFPolicy = .copy,
                udpEncapsulation: Bool = false) {
        self.name = name; self.direction = direction; self.spi = spi; self.mode = mode
        self.local = local; self.remote = remote; self.proposal = proposal; self.keyMaterial = keyMaterial
        self.esn = esn; self.replayWindow = replayWindow; self.lifetime = lifetime; self.tfcPadTo = tfcPadTo
        self.mtu = mtu; self.dfPolicy = dfPolicy; self.udpEncapsulation = udpEncapsulation
    }

    /// Same SA in every setting: a reload then keeps the running SA (its sequence counter,
    /// replay window and counters) instead of starting a new one.
    public func isUnchanged(comparedTo o: SAConfig) -> Bool {
        name == o.name && direction == o.direction && spi == o.spi && mode == o.mode && local == o.local
            && remote == o.remote && proposal == o.proposal && keyMaterial == o.keyMaterial && esn == o.esn
            && replayWindow == o.replayWindow && udpEncapsulation == o.udpEncapsulation
            && lifetime == o.lifetime && mtu == o.mtu && tfcPadTo == o.tfcPadTo && dfPolicy == o.dfPolicy
    }

    /// Largest sequence number this SA may send.
    public var maxSequence: UInt64 { esn ? UInt64.max - 1 : UInt64(UInt32.max) }
}

/// Durable record of how far outbound sequence numbers have been handed out, so a
/// restart never reuses one under the same key (see `FileSequenceStore`).
public protocol SequenceStore: Sendable {
    /// The highest number that may have been used before (0 for a new SA).
    func load(sa: SAConfig) throws -> UInt64
    /// Records durably that numbers up to `limit` may be used. Must not return before that is on disk.
    func reserve(sa: SAConfig, through limit: UInt64) throws
}

/// Keeps nothing: for tests and for SAs whose key is new on every start.
public struct EphemeralSequenceStore: SequenceStore {
    public init() {}
    public func load(sa: SAConfig) throws -> UInt64 { 0 }
    public func reserve(sa: SAConfig, through limit: UInt64) throws {}
}

public enum SAEvent: Sendable, Equatable {
    case softLifetime(sa: String, what: String)
    case hardLifetime(sa: String, what: String)
    case sequenceExhausted(sa: String)
}

/// One lane's share of an SA's traffic counters: each worker adds to its own, on its
/// own cache line, so two workers on one SA do not fight over the counters.
final class LaneTally: Sendable {
    let packets = Atomic<UInt64>(0)
    let bytes = Atomic<UInt64>(0)
}

/// Per-SA counters. Traffic is tallied per lane and summed on read; refusals are rare
/// and share one set of relaxed atomics.
public final class SACounters: Sendable {
    let lanes: [LaneTally]
    public let replayDrops = Atomic<UInt64>(0)
    public let icvFailures = Atomic<UInt64>(0)
    public let otherDrops = Atomic<UInt64>(0)
    init(lanes: Int) { self.lanes = (0..<max(1, lanes)).map { _ in LaneTally() } }

    public var packets: UInt64 { lanes.reduce(0) { $0 &+ $1.packets.load(ordering: .relaxed) } }
    public var bytes: UInt64 { lanes.reduce(0) { $0 &+ $1.bytes.load(ordering: .relaxed) } }
}

/// One SA at run time: configuration, crypto lanes, sequence counter, replay window,
/// lifetime accounting and counters.
///
/// Concurrency: the sequence counter and counters are atomics; the replay window sits
/// behind a mutex held only for the check and the update, never during crypto. Crypto
/// contexts are not thread-safe, so there is one `lane` per worker thread and each
/// worker only ever uses `lanes[itsIndex]`.
public final class SecurityAssociation: @unchecked Sendable {
    public let config: SAConfig
    let lanes: [ESPTransform]
    public let counters: SACounters
    let nextSeq: Atomic<UInt64>
    let reservedThrough: Atomic<UInt64>
    let reserveLock = Mutex<Void>(())
    let replay: Mutex<ReplayWindow>
    let store: SequenceStore
    let reserveBlock: UInt64
    public let installedAt: UInt64
    /// Increases with every SA object made: the newest of a policy's SA set carries its traffic.
    public let generation: UInt64
    static let generations = Atomic<UInt64>(0)
    let softFired = Atomic<Bool>(false)
    let hardFired = Atomic<Bool>(false)
    let exhaustedFired = Atomic<Bool>(false)
    let onEvent: (@Sendable (SAEvent) -> Void)?

    public init(config: SAConfig, lanes laneCount: Int = 1, store: SequenceStore = EphemeralSequenceStore(),
                reserveBlock: UInt64 = 1 << 16, now: UInt64 = 0,
                onEvent: (@Sendable (SAEvent) -> Void)? = nil) throws {
        self.config = config
        var ls: [ESPTransform] = []
        for _ in 0..<max(1, laneCount) { ls.append(try OpenSSLTransform(proposal: config.proposal, keyMaterial: config.keyMaterial)) }
        lanes = ls
        counters = SACounters(lanes: ls.count)
        self.store = store
        self.reserveBlock = max(1, reserveBlock)
        let used = config.direction == .outbound ? try store.load(sa: config) : 0
        // Continue above anything that may have been sent before a crash or restart.
        nextSeq = Atomic(used &+ 1)
        reservedThrough = Atomic(used)
        replay = Mutex(ReplayWindow(size: config.replayWindow))
        installedAt = now
        generation = SecurityAssociation.generations.wrappingAdd(1, ordering: .relaxed).newValue
        self.onEvent = onEvent
    }

    public var name: String { config.name }
    /// The next sequence number that would be sent (for stats).
    public var currentSequence: UInt64 { nextSeq.load(ordering: .relaxed) &- 1 }
    public var replayTop: UInt64 { replay.withLock { $0.top } }

    func transform(lane: Int) -> ESPTransform { lanes[lane % lanes.count] }

    /// Takes the next outbound sequence number, making sure it is covered by a durable
    /// reservation first. Numbers are never handed out twice, even when reservation fails.
    func takeSequence() throws(DropReason) -> UInt64 {
        let seq = nextSeq.wrappingAdd(1, ordering: .relaxed).oldValue
        guard seq <= config.maxSequence else {
            if !exhaustedFired.exchange(true, ordering: .relaxed) { onEvent?(.sequenceExhausted(sa: name)) }
            throw .seqExhausted
        }
        if seq > reservedThrough.load(ordering: .acquiring) {
            let ok: Bool = reserveLock.withLock { _ in
                while seq > reservedThrough.load(ordering: .acquiring) {
                    let limit = min(reservedThrough.load(ordering: .relaxed) &+ reserveBlock, config.maxSequence)
                    do { try store.reserve(sa: config, through: limit) } catch { return false }
                    reservedThrough.store(limit, ordering: .releasing)
                }
                return true
            }
            guard ok else { throw .stateError }
        }
        return seq
    }

    /// Counts a packet against the lifetimes; throws when the hard limit is reached.
    func account(bytes: Int, now: UInt64, lane: Int) throws(DropReason) {
        let lt = config.lifetime
        let tally = counters.lanes[lane % counters.lanes.count]
        tally.packets.wrappingAdd(1, ordering: .relaxed)
        tally.bytes.wrappingAdd(UInt64(bytes), ordering: .relaxed)
        guard hasLifetime else { return }
        // Only SAs with a lifetime pay for summing the lanes.
        let p = counters.packets
        let b = counters.bytes
        let age = now >= installedAt ? now - installedAt : 0
        func over(_ limit: UInt64?, _ value: UInt64) -> Bool { limit.map { value >= $0 } ?? false }
        if over(lt.hardPackets, p) || over(lt.hardBytes, b) || over(lt.hardSeconds, age) {
            if !hardFired.exchange(true, ordering: .relaxed) {
                onEvent?(.hardLifetime(sa: name, what: over(lt.hardSeconds, age) ? "time" : over(lt.hardPackets, p) ? "packets" : "bytes"))
            }
            throw .saExpired
        }
        if over(lt.softPackets, p) || over(lt.softBytes, b) || over(lt.softSeconds, age) {
            if !softFired.exchange(true, ordering: .relaxed) {
                onEvent?(.softLifetime(sa: name, what: over(lt.softSeconds, age) ? "time" : over(lt.softPackets, p) ? "packets" : "bytes"))
            }
        }
    }

    var hasLifetime: Bool { config.lifetime != Lifetime() }

    /// True once the hard lifetime has passed (checked without counting a packet).
    public var isExpired: Bool { hardFired.load(ordering: .relaxed) }

    /// The cheap pre-authentication step, under one lock: infer seq-high (ESN) from the
    /// window and check the full number against it.
    func replayPrecheck(low: UInt32) -> (seqHigh: UInt32?, seq: UInt64, fresh: Bool) {
        let esn = config.esn
        return replay.withLock { w in
            let high: UInt32? = esn ? w.inferHigh(low: low) : nil
            let seq = UInt64(high ?? 0) << 32 | UInt64(low)
            return (high, seq, w.check(seq))
        }
    }
    func replayUpdate(_ seq: UInt64) -> Bool { replay.withLock { $0.update(seq) } }
}
