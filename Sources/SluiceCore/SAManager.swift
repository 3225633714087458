import Synchronization

/// The one place that changes SAs and policies at run time (in the spirit of strongSwan's
/// sa_mgr and policy_mgr, and the kernel's XFRM add/update/delete/getspi). Config reload is
/// one user; an IKE agent will be another; workers only read the published snapshot.
///
/// Every change builds a new immutable `SecurityDatabase` and publishes it with one swap:
/// workers pick it up between batches, so traffic never pauses and no packet sees half a
/// change. State that must outlive an SA object (sequence counter, replay window) is
/// shared by key: an SA installed again with the same SPI, addresses and key continues the
/// running state, whatever else changed (see `SAState.swift`).
///
/// Concurrency: all changes are serialised by `lock`; `database` is one locked load of a
/// reference (taken once per batch by each worker).
public final class SAManager: Sendable {
    public struct Settings: Sendable {
        public var lanes: Int
        public var reserveBlock: UInt64
        public var replayMarkInterval: UInt64
        public var defaultOutbound: PolicyAction
        public var defaultInbound: PolicyAction
        public init(lanes: Int = 1, reserveBlock: UInt64 = 1 << 16, replayMarkInterval: UInt64 = 4096,
                    defaultOutbound: PolicyAction = .bypass, defaultInbound: PolicyAction = .bypass) {
            self.lanes = lanes; self.reserveBlock = reserveBlock; self.replayMarkInterval = replayMarkInterval
            self.defaultOutbound = defaultOutbound; self.defaultInbound = defaultInbound
        }
    }

    /// Who put an entry there: a reload replaces what the config owns and nothing else.
    public enum Owner: Hashable, Sendable {
        case config
        case runtime(String)
    }

    public struct PolicyID: Hashable, Sendable { public let value: UInt64 }

    public enum ManagerError: Error, CustomStringConvertible, Equatable {
        case duplicateName(String)
        case spiInUse(UInt32, String)
        case keyExpired(String)
        case noSuchSA(String)
        case database(String)
        public var description: String {
            switch self {
            case let .duplicateName(n): return "an SA named \"\(n)\" is already installed by another owner"
            case let .spiInUse(spi, n): return "inbound SPI 0x\(String(spi, radix: 16)) is already used by SA \"\(n)\""
            case let .keyExpired(n): return "SA \"\(n)\": its key reached the hard lifetime; give it a new key (or SPI)"
            case let .noSuchSA(n): return "no SA named \"\(n)\""
            case let .database(d): return d
            }
        }
    }

    struct SAEntry { var sa: SecurityAssociation; var owner: Owner }
    struct PolicyEntry { var id: PolicyID; var policy: Policy; var owner: Owner }
    /// Weak, so that state lives exactly as long as some SA object (in a snapshot a worker
    /// may still hold) uses it: a re-install finds it then, and reloads it from disk after.
    final class WeakState { weak var sequence: OutboundSequence?; weak var replay: InboundReplay? }

    struct State {
        var settings: Settings
        var sas: [SAEntry] = []
        var policies: [PolicyEntry] = []
        var nextPolicyID: UInt64 = 1
        var live: [SAStateKey: WeakState] = [:]
        /// Keys whose hard lifetime passed: never installed again in this process.
        var expiredKeys: Set<SAStateKey> = []
        /// Inbound SPIs handed out by `allocateSPI` and not yet installed.
        var allocated: Set<UInt32> = []
    }

    let lock: Mutex<State>
    let published: Mutex<SecurityDatabase>
    let store: SAStateStore
    let writer: DeferredWriter?
    let events: EventQueue?
    let clock: @Sendable () -> UInt64
    let random: @Sendable () -> UInt32
    /// Where the SAs' sequence counters, marks and counters live (shared with worker processes).
    public let arena: SharedArena

    /// `clock`: monotonic seconds (for time lifetimes). `random`: SPI candidates.
    public init(settings: Settings, store: SAStateStore = EphemeralStateStore(), writer: DeferredWriter? = nil,
                events: EventQueue? = nil, arena: SharedArena = .process, clock: @escaping @Sendable () -> UInt64 = { 0 },
                random: @escaping @Sendable () -> UInt32 = { UInt32.random(in: 256...UInt32.max) }) {
        lock = Mutex(State(settings: settings))
        // An empty database cannot fail to build.
        published = Mutex(try! SecurityDatabase(policies: [], associations: [], defaultOutbound: settings.defaultOutbound,
                                                defaultInbound: settings.defaultInbound))
        self.store = store
        self.writer = writer
        self.events = events
        self.arena = arena
        self.clock = clock
        self.random = random
    }

    /// The current snapshot, for workers (once per batch) and readers.
    public var database: SecurityDatabase { published.withLock { $0 } }

    // MARK: single changes

    /// Installs an SA, or replaces the SA of that name (same owner), continuing its state
    /// when the key is the same. Outbound traffic of policies naming it moves to it at once.
    @discardableResult
    public func install(_ config: SAConfig, owner: Owner = .runtime("api")) throws -> SecurityAssociation {
        try lock.withLock { st in
            if let other = st.sas.first(where: { $0.sa.name == config.name }), other.owner != owner {
                throw ManagerError.duplicateName(config.name)
            }
            let sa = try makeSA(config, state: &st)
            pruneLive(&st)
            st.sas.removeAll { $0.sa.name == config.name }
            st.sas.append(SAEntry(sa: sa, owner: owner))
            if config.direction == .inbound { st.allocated.remove(config.spi) }
            try publish(st)
            return sa
        }
    }

    /// Removes an SA (only that object, when `generation` is given: an expiry event must
    /// not remove the SA a reload put in its place). Its key is wiped once no packet uses it.
    @discardableResult
    public func remove(sa name: String, generation: UInt64? = nil) -> Bool {
        lock.withLock { st in
            let before = st.sas.count
            st.sas.removeAll { $0.sa.name == name && (generation == nil || $0.sa.generation == generation) }
            guard st.sas.count != before else { return false }
            try? publish(st)
            return true
        }
    }

    /// Adds a policy (at the end of the runtime owner's policies, or before `index`).
    @discardableResult
    public func addPolicy(_ p: Policy, owner: Owner = .runtime("api"), at index: Int? = nil) throws -> PolicyID {
        try lock.withLock { st in
            let id = PolicyID(value: st.nextPolicyID)
            st.nextPolicyID += 1
            let entry = PolicyEntry(id: id, policy: p, owner: owner)
            if let index, index >= 0, index <= st.policies.count { st.policies.insert(entry, at: index) } else { st.policies.append(entry) }
            do { try publish(st) } catch {
                st.policies.removeAll { $0.id == id }
                throw error
            }
            return id
        }
    }

    @discardableResult
    public func removePolicy(_ id: PolicyID) -> Bool {
        lock.withLock { st in
            let before = st.policies.count
            st.policies.removeAll { $0.id == id }
            guard st.policies.count != before else { return false }
            try? publish(st)
            return true
        }
    }

    /// A fresh inbound SPI (RFC 4303 §2.1: >= 256), used by no inbound SA and handed out
    /// to no one else until installed or released (XFRM's getspi).
    public func allocateSPI() -> UInt32 {
        lock.withLock { st in
            while true {
                let spi = random()
                guard spi >= 256, !st.allocated.contains(spi),
                      !st.sas.contains(where: { $0.sa.config.direction == .inbound && $0.sa.config.spi == spi }) else { continue }
                st.allocated.insert(spi)
                return spi
            }
        }
    }

    public func releaseSPI(_ spi: UInt32) { _ = lock.withLock { $0.allocated.remove(spi) } }

    // MARK: whole sets (config reload)

    /// A replacement of everything one owner has, built and checked but not yet in force.
    /// Commit it, or drop it (nothing changed then).
    public struct Plan: @unchecked Sendable {
        let owner: Owner
        let settings: Settings
        let sas: [SecurityAssociation]
        let policies: [Policy]
        /// Names of SAs the plan leaves out because their key expired.
        public let skippedExpired: [String]
        public let added: [String], changed: [String], kept: [String], removed: [String]
        /// Every policy and SA once committed, every owner's: what the nftables rules must carry.
        public internal(set) var policiesAfter: [Policy] = []
        public internal(set) var associationsAfter: [SAConfig] = []
    }

    /// Builds the owner's new SAs (continuing state where keys are unchanged; SAs whose
    /// every setting is unchanged are kept as the same objects) and checks the database
    /// they make with everyone else's entries. Changes nothing.
    public func prepare(associations: [SAConfig], policies: [Policy], owner: Owner = .config,
                        settings: Settings? = nil) throws -> Plan {
        try lock.withLock { st in
            var sas: [SecurityAssociation] = []
            var added: [String] = [], changed: [String] = [], kept: [String] = [], skipped: [String] = []
            for c in associations {
                if let other = st.sas.first(where: { $0.sa.name == c.name }), other.owner != owner {
                    throw ManagerError.duplicateName(c.name)
                }
                let old = st.sas.first { $0.sa.name == c.name && $0.owner == owner }?.sa
                if let old, old.config.isUnchanged(comparedTo: c), !old.isExpired {
                    sas.append(old)
                    kept.append(c.name)
                    continue
                }
                if st.expiredKeys.contains(SAStateKey(c)) { skipped.append(c.name); continue }
                sas.append(try makeSA(c, state: &st))
                (old == nil ? { added.append(c.name) } : { changed.append(c.name) })()
            }
            pruneLive(&st)
            let names = Set(associations.map(\.name))
            let removed = st.sas.filter { $0.owner == owner && !names.contains($0.sa.name) }.map(\.sa.name)
            var plan = Plan(owner: owner, settings: settings ?? st.settings, sas: sas, policies: policies,
                            skippedExpired: skipped, added: added, changed: changed, kept: kept, removed: removed)
            let after = applying(plan, to: st)
            _ = try buildDatabase(after)
            plan.policiesAfter = after.policies.map(\.policy)
            plan.associationsAfter = after.sas.map(\.sa.config)
            return plan
        }
    }

    /// Puts a prepared plan in force with one swap. Entries of other owners stay.
    public func commit(_ plan: Plan) {
        lock.withLock { st in
            st = applying(plan, to: st)
            // Checked in prepare; entries of other owners cannot have changed the outcome
            // except by an SA name clash, which would have made prepare throw.
            try? publish(st)
        }
    }

    func applying(_ plan: Plan, to st: State) -> State {
        var next = st
        next.settings = plan.settings
        next.sas = st.sas.filter { $0.owner != plan.owner } + plan.sas.map { SAEntry(sa: $0, owner: plan.owner) }
        var id = st.nextPolicyID
        let mine = plan.policies.map { p -> PolicyEntry in
            defer { id += 1 }
            return PolicyEntry(id: PolicyID(value: id), policy: p, owner: plan.owner)
        }
        next.nextPolicyID = id
        // The config's policies come first (their order is the admin's); others follow.
        let others = st.policies.filter { $0.owner != plan.owner }
        next.policies = plan.owner == .config ? mine + others : others + mine
        return next
    }

    // MARK: events and shutdown

    /// Hard expiry: the SA object goes (its traffic is then dropped as `no_sa`, never sent
    /// in clear) and its key is not installed again in this process.
    public func expire(sa name: String, generation: UInt64) -> Bool {
        lock.withLock { st in
            guard let e = st.sas.first(where: { $0.sa.name == name && $0.sa.generation == generation }) else { return false }
            st.expiredKeys.insert(SAStateKey(e.sa.config))
            st.sas.removeAll { $0.sa === e.sa }
            try? publish(st)
            return true
        }
    }

    /// Once a second from the control plane: time lifetimes of idle SAs.
    public func tick() {
        let now = clock()
        for sa in database.associations where sa.config.lifetime.softSeconds != nil || sa.config.lifetime.hardSeconds != nil {
            sa.checkTimeLifetime(now: now)
        }
    }

    /// At a clean stop, after the workers stopped: exact replay marks, so a restart loses
    /// no packet. Returns the SAs whose mark could not be written.
    public func persistOnStop() -> [String] {
        database.associations.compactMap { sa in
            guard let r = sa.replay else { return nil }
            do { try r.persistExact(); return nil } catch { return "\(sa.name): \(error)" }
        }
    }

    // MARK: internals

    /// A new SA object, continuing the running state of its key if there is one; state
    /// loaded from disk is made durable ahead before the SA may carry traffic.
    func makeSA(_ c: SAConfig, state st: inout State) throws -> SecurityAssociation {
        let key = SAStateKey(c)
        if st.expiredKeys.contains(key) { throw ManagerError.keyExpired(c.name) }
        let slot = st.live[key] ?? WeakState()
        let fresh = c.direction == .outbound ? slot.sequence == nil : slot.replay == nil
        var onEvent: (@Sendable (SAEvent) -> Void)? = nil
        if let q = events { onEvent = { e in q.post(e) } }
        let sa = try SecurityAssociation(
            config: c, lanes: st.settings.lanes, store: c.durable ? store : EphemeralStateStore(),
            writer: c.durable ? writer : nil, reserveBlock: st.settings.reserveBlock,
            replayMarkInterval: st.settings.replayMarkInterval, sequence: slot.sequence, replay: slot.replay,
            arena: arena, now: clock(), onEvent: onEvent)
        if fresh {
            try sa.sequence?.prime()
            try sa.replay?.prime()
        }
        slot.sequence = sa.sequence ?? slot.sequence
        slot.replay = sa.replay ?? slot.replay
        st.live[key] = slot
        return sa
    }

    /// Forgets keys whose state no SA object uses any more (once per change, not per SA).
    func pruneLive(_ st: inout State) {
        st.live = st.live.filter { $0.value.sequence != nil || $0.value.replay != nil }
    }

    func buildDatabase(_ st: State) throws -> SecurityDatabase {
        do {
            return try SecurityDatabase(policies: st.policies.map(\.policy), associations: st.sas.map(\.sa),
                                        defaultOutbound: st.settings.defaultOutbound,
                                        defaultInbound: st.settings.defaultInbound, allowMissingSAs: true, events: events)
        } catch let e as SecurityDatabase.BuildError {
            throw ManagerError.database(e.description)
        }
    }

    func publish(_ st: State) throws {
        let db = try buildDatabase(st)
        published.withLock { $0 = db }
    }

    /// Where a policy goes to come before every existing policy of `origin` in its direction
    /// (a child's trap, or the SA a rekey replaces); nil when there is none (append).
    public func firstPolicyIndex(origin: String, direction: Direction) -> Int? {
        lock.withLock { st in st.policies.firstIndex { $0.policy.origin == origin && $0.policy.direction == direction } }
    }

    /// Every policy and SA of every owner, in order: what the nftables rules must carry.
    public var entries: (policies: [Policy], associations: [SAConfig]) {
        lock.withLock { st in (st.policies.map(\.policy), st.sas.map(\.sa.config)) }
    }

    /// The installed SAs with who owns them (for listings).
    public var associations: [(sa: SecurityAssociation, owner: Owner)] {
        lock.withLock { st in st.sas.map { ($0.sa, $0.owner) } }
    }
}

/// A bounded, non-blocking queue of SA events from the workers to the control plane.
/// A worker never waits: when the queue is full the event is counted and dropped (events
/// are edge-triggered once per SA, so the queue holds few). Identical pending events are
/// merged, so a flood of `noSA` for one policy costs one slot.
public final class EventQueue: Sendable {
    struct Q { var items: [SAEvent] = []; var pending: Set<SAEvent> = [] }
    let q = Mutex<Q>(Q())
    let capacity: Int
    public let dropped = Atomic<UInt64>(0)
    let wake: (@Sendable () -> Void)?

    public init(capacity: Int = 1024, wake: (@Sendable () -> Void)? = nil) {
        self.capacity = max(1, capacity)
        self.wake = wake
    }

    @discardableResult
    public func post(_ e: SAEvent) -> Bool {
        let (taken, fresh): (Bool, Bool) = q.withLock { q in
            if q.pending.contains(e) { return (true, false) }
            guard q.items.count < capacity else { return (false, false) }
            q.items.append(e)
            q.pending.insert(e)
            return (true, true)
        }
        if !taken { dropped.wrappingAdd(1, ordering: .relaxed) }
        if fresh { wake?() }
        return taken
    }

    /// Everything posted so far, oldest first.
    public func drain() -> [SAEvent] {
        q.withLock { q in
            defer { q = Q() }
            return q.items
        }
    }
}
