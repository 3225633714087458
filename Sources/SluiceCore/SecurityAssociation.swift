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

/// Per-SA counters, one arena cell per lane: each worker adds to its own cache line, so
/// two workers on one SA do not fight over them, and the cells outlive a worker process
/// (a worker's copy of the SA views the supervisor's cells). Sums are taken on read.
public final class SACounters: Sendable {
    public enum Word: Int {
        case packets, bytes, replayDrops, icvFailures, otherDrops
        /// The highest sequence number this lane took (outbound): a lower one next means
        /// the shared counter went back.
        case lastSequence
    }
    let cells: [SharedCell]

    init(lanes: Int, arena: SharedArena) throws {
        cells = try (0..<max(1, lanes)).map { _ in try SharedCell(in: arena) }
    }

    /// A worker process's view of the supervisor's cells; nil when one is outside the arena.
    public init?(viewing indices: [Int], of arena: SharedArena) {
        var cs: [SharedCell] = []
        for i in indices {
            guard let c = SharedCell(viewing: i, of: arena) else { return nil }
            cs.append(c)
        }
        guard !cs.isEmpty else { return nil }
        cells = cs
    }

    /// The cells, lane by lane (named in the database sent to workers).
    public var cellIndices: [Int] { cells.map(\.index) }

    @inline(__always) func lane(_ l: Int) -> ArenaCell { cells[l % cells.count].cell }
    @inline(__always) func add(_ w: Word, lane l: Int, _ n: UInt64 = 1) { lane(l).counter(w.rawValue).add(n) }
    public func sum(_ w: Word) -> UInt64 { cells.reduce(0) { $0 &+ $1.cell.counter(w.rawValue).load } }

    public var packets: UInt64 { sum(.packets) }
    public var bytes: UInt64 { sum(.bytes) }
    public var replayDrops: UInt64 { sum(.replayDrops) }
    public var icvFailures: UInt64 { sum(.icvFailures) }
    public var otherDrops: UInt64 { sum(.otherDrops) }
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
    /// nil makes a fresh one from `store`. `counters`: a worker process's view of the
    /// supervisor's; nil makes fresh ones. New state and counters take cells of `arena`.
    public init(config: SAConfig, lanes laneCount: Int = 1, store: SAStateStore = EphemeralStateStore(),
                writer: DeferredWriter? = nil, reserveBlock: UInt64 = 1 << 16, replayMarkInterval: UInt64 = 4096,
                sequence: OutboundSequence? = nil, replay: InboundReplay? = nil, counters: SACounters? = nil,
                arena: SharedArena = .process, now: UInt64 = 0, onEvent: (@Sendable (SAEvent) -> Void)? = nil) throws {
        self.config = config
        var ls: [ESPTransform] = []
        for _ in 0..<max(1, laneCount) { ls.append(try OpenSSLTransform(proposal: config.proposal, keyMaterial: config.keyMaterial)) }
        lanes = ls
        self.counters = try counters ?? SACounters(lanes: ls.count, arena: arena)
        let name = config.name
        let failed: @Sendable (String) -> Void = { why in onEvent?(.stateWriteFailed(sa: name, reason: why)) }
        switch config.direction {
        case .outbound:
            self.sequence = try sequence ?? OutboundSequence(config, store: store, writer: writer, block: reserveBlock, arena: arena,
                                                             onFailure: failed)
            self.replay = nil
        case .inbound:
            self.sequence = nil
            let r = try replay ?? InboundReplay(config, store: store, writer: writer, interval: replayMarkInterval,
                                                   arena: arena, onFailure: failed)
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
    func takeSequence(lane: Int) throws(DropReason) -> UInt64 {
        guard let sequence else { throw .unsupported }
        return try sequence.take(lastTaken: counters.lane(lane).counter(SACounters.Word.lastSequence.rawValue)) {
            if !exhaustedFired.exchange(true, ordering: .relaxed) { onEvent?(.sequenceExhausted(sa: name, generation: generation)) }
        }
    }

    /// Counts a packet against the lifetimes; throws when the hard limit is reached.
    func account(bytes: Int, now: UInt64, lane: Int) throws(DropReason) {
        let lt = config.lifetime
        let tally = counters.lane(lane)
        tally.counter(SACounters.Word.packets.rawValue).add()
        tally.counter(SACounters.Word.bytes.rawValue).add(UInt64(bytes))
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
