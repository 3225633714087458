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
    /// Keep the sequence reservation and replay mark on disk. A static key lives across
    /// restarts and needs them; a negotiated (IKE) key dies with the process, and a restart
    /// negotiates new keys, so there is nothing to continue and nothing to replay into.
    public var durable = true

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

/// What the data plane tells the control plane, posted from the worker threads to an
/// `EventQueue` and handled elsewhere (log, remove the SA, rekey). `generation` names the
/// exact SA object, since a reload may already have put a new one under the same name.
public enum SAEvent: Sendable, Hashable {
    case softLifetime(sa: String, generation: UInt64, what: String)
    case hardLifetime(sa: String, generation: UInt64, what: String)
    case sequenceExhausted(sa: String, generation: UInt64)
    /// A PROTECT policy matched outbound traffic but has no live SA (for an IKE agent: acquire).
    case noSA(policy: String)
    /// A durable state write failed (disk full, permissions): the SA will refuse traffic.
    case stateWriteFailed(sa: String, reason: String)
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

/// One SA at run time: configuration, crypto lanes, the sequence counter or replay window
/// (shared with any other SA object of the same key, see `SAState.swift`), lifetime
/// accounting and counters.
///
/// Concurrency: the sequence counter and counters are atomics; the replay window sits
/// behind a mutex held only for the check and the update, never during crypto. Crypto
/// contexts are not thread-safe, so there is one `lane` per worker thread and each
/// worker only ever uses `lanes[itsIndex]`.
public final class SecurityAssociation: @unchecked Sendable {
    public let config: SAConfig
    let lanes: [ESPTransform]
    public let counters: SACounters
    /// Outbound SAs only.
    public let sequence: OutboundSequence?
    /// Inbound SAs only.
    public let replay: InboundReplay?
    public let installedAt: UInt64
    /// Increases with every SA object made: the newest of a policy's SA set carries its traffic.
    public let generation: UInt64
    static let generations = Atomic<UInt64>(0)
    let softFired = Atomic<Bool>(false)
    let hardFired = Atomic<Bool>(false)
    let exhaustedFired = Atomic<Bool>(false)
    let onEvent: (@Sendable (SAEvent) -> Void)?

    /// `sequence` / `replay`: the running state to continue (a reload that kept the key);
    /// nil makes a fresh one from `store`.
    public init(config: SAConfig, lanes laneCount: Int = 1, store: SAStateStore = EphemeralStateStore(),
                writer: DeferredWriter? = nil, reserveBlock: UInt64 = 1 << 16, replayMarkInterval: UInt64 = 4096,
                sequence: OutboundSequence? = nil, replay: InboundReplay? = nil, now: UInt64 = 0,
                onEvent: (@Sendable (SAEvent) -> Void)? = nil) throws {
        self.config = config
        var ls: [ESPTransform] = []
        for _ in 0..<max(1, laneCount) { ls.append(try OpenSSLTransform(proposal: config.proposal, keyMaterial: config.keyMaterial)) }
        lanes = ls
        counters = SACounters(lanes: ls.count)
        let name = config.name
        let failed: @Sendable (String) -> Void = { why in onEvent?(.stateWriteFailed(sa: name, reason: why)) }
        switch config.direction {
        case .outbound:
            self.sequence = try sequence ?? OutboundSequence(config, store: store, writer: writer, block: reserveBlock, onFailure: failed)
            self.replay = nil
        case .inbound:
            self.sequence = nil
            let r = try replay ?? InboundReplay(config, store: store, writer: writer, interval: replayMarkInterval, onFailure: failed)
            r.resize(config.replayWindow)
            self.replay = r
        }
        installedAt = now
        generation = SecurityAssociation.generations.wrappingAdd(1, ordering: .relaxed).newValue
        self.onEvent = onEvent
    }

    public var name: String { config.name }
    /// The last sequence number sent (outbound) or the top of the replay window (inbound).
    public var currentSequence: UInt64 { sequence?.current ?? replay?.top ?? 0 }
    public var replayTop: UInt64 { replay?.top ?? 0 }

    func transform(lane: Int) -> ESPTransform { lanes[lane % lanes.count] }

    /// Takes the next outbound sequence number, covered by a durable reservation first.
    /// Numbers are never handed out twice, even when reservation fails.
    @inline(__always)
    func takeSequence() throws(DropReason) -> UInt64 {
        guard let sequence else { throw .unsupported }
        return try sequence.take {
            if !exhaustedFired.exchange(true, ordering: .relaxed) { onEvent?(.sequenceExhausted(sa: name, generation: generation)) }
        }
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
                onEvent?(.hardLifetime(sa: name, generation: generation,
                                       what: over(lt.hardSeconds, age) ? "time" : over(lt.hardPackets, p) ? "packets" : "bytes"))
            }
            throw .saExpired
        }
        if over(lt.softPackets, p) || over(lt.softBytes, b) || over(lt.softSeconds, age) {
            if !softFired.exchange(true, ordering: .relaxed) {
                onEvent?(.softLifetime(sa: name, generation: generation,
                                       what: over(lt.softSeconds, age) ? "time" : over(lt.softPackets, p) ? "packets" : "bytes"))
            }
        }
    }

    var hasLifetime: Bool { config.lifetime != Lifetime() }

    /// True once the hard lifetime has passed (checked without counting a packet).
    public var isExpired: Bool { hardFired.load(ordering: .relaxed) }

    /// Time lifetimes pass without traffic too: the control plane checks idle SAs with this
    /// (once a second), so a hard-expired SA goes away even when nothing uses it.
    public func checkTimeLifetime(now: UInt64) {
        let lt = config.lifetime
        let age = now >= installedAt ? now - installedAt : 0
        if let h = lt.hardSeconds, age >= h, !hardFired.exchange(true, ordering: .relaxed) {
            onEvent?(.hardLifetime(sa: name, generation: generation, what: "time"))
        } else if let s = lt.softSeconds, age >= s, !softFired.exchange(true, ordering: .relaxed) {
            onEvent?(.softLifetime(sa: name, generation: generation, what: "time"))
        }
    }

    /// The cheap pre-authentication step (see `InboundReplay.precheck`).
    @inline(__always)
    func replayPrecheck(low: UInt32) -> (seqHigh: UInt32?, seq: UInt64, refusal: DropReason?) {
        guard let replay else { return (nil, 0, .unsupported) }
        return replay.precheck(low: low, esn: config.esn)
    }

    /// After authentication: nil when accepted, else the refusal.
    @inline(__always)
    func replayUpdate(_ seq: UInt64) -> DropReason? {
        guard let replay else { return .unsupported }
        return replay.update(seq)
    }
}
