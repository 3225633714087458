import SluiceCore

// What the supervisor and a worker process say to each other over their channel
// (doc/compartments.md). Values and their encoding only: no I/O here (WorkerChannel.swift
// frames and moves them). Decoding is strict and bounded, since a worker is treated like a
// peer on the network: every error names the message, the field and the byte offset.

/// One message on a supervisor-worker channel.
public enum WorkerMessage: Sendable, Equatable {
    /// Supervisor to worker, first: what the worker serves and how.
    case hello(WorkerHello)
    /// Supervisor to worker: the whole SAD and SPD of one generation (on the wire in as
    /// many frames as it takes, each within `WorkerProtocol.maxFrame`).
    case database(DatabaseUpdate)
    /// Worker to supervisor: that generation is in use.
    case ack(generation: UInt64)
    /// Worker to supervisor: an SA event (lifetimes, exhaustion, a trap's acquire).
    case event(SAEvent)
    /// Worker to supervisor: an outbound SA's sequence numbers are near their durable
    /// reservation; make it reach `through`.
    case reserve(sa: String, through: UInt64)
    /// Supervisor to worker: finish the batch and exit.
    case stop

    var type: WorkerMessageType {
        switch self {
        case .hello: return .hello
        case .database: return .database
        case .ack: return .ack
        case .event: return .event
        case .reserve: return .reserve
        case .stop: return .stop
        }
    }
}

enum WorkerMessageType: UInt16, CaseIterable {
    case hello = 1, database, ack, event, reserve, stop
    var name: String { "\(self)" }
}

public struct WorkerHello: Sendable, Equatable {
    public var queue: UInt16
    /// The queue's GSO twin (gso = true).
    public var gsoQueue: UInt16?
    public var markShift: UInt8
    public var batch: UInt16
    public var passthrough: Bool
    public var busyPollMicros: UInt32

    public init(queue: UInt16, gsoQueue: UInt16? = nil, markShift: UInt8 = 16, batch: UInt16 = 32, passthrough: Bool = false,
                busyPollMicros: UInt32 = 0) {
        self.queue = queue; self.gsoQueue = gsoQueue; self.markShift = markShift; self.batch = batch
        self.passthrough = passthrough; self.busyPollMicros = busyPollMicros
    }
}

/// One generation of the SA manager's database, as a worker rebuilds it.
public struct DatabaseUpdate: Sendable, Equatable {
    public var generation: UInt64
    public var associations: [SAConfig]
    public var policies: [Policy]
    public var defaultOutbound: PolicyAction
    public var defaultInbound: PolicyAction

    public init(generation: UInt64, associations: [SAConfig], policies: [Policy], defaultOutbound: PolicyAction = .bypass,
                defaultInbound: PolicyAction = .bypass) {
        self.generation = generation; self.associations = associations; self.policies = policies
        self.defaultOutbound = defaultOutbound; self.defaultInbound = defaultInbound
    }

    public static func == (a: DatabaseUpdate, b: DatabaseUpdate) -> Bool {
        a.generation == b.generation && a.policies == b.policies && a.defaultOutbound == b.defaultOutbound
            && a.defaultInbound == b.defaultInbound && a.associations.count == b.associations.count
            && zip(a.associations, b.associations).allSatisfy { $0.isUnchanged(comparedTo: $1) && $0.durable == $1.durable }
    }
}

/// Where and why a message from the channel does not decode.
public struct WorkerProtocolError: Error, Equatable, CustomStringConvertible, Sendable {
    public var message: String
    /// The field being read ("header" for the frame).
    public var field: String
    public var offset: Int
    public var problem: String
    public var description: String { "\(message) message: \(field) at byte \(offset): \(problem)" }
}

/// What one frame on the channel carries: a whole message, or one part of a database.
public enum WorkerFrame: Sendable, Equatable {
    case message(WorkerMessage)
    /// Part `part` (from 0) of `parts` of a generation: some of its SAs and policies.
    case databasePart(part: UInt32, parts: UInt32, DatabaseUpdate)
}

/// The frame and the field encoding of protocol version 1.
public enum WorkerProtocol {
    public static let version: UInt16 = 1
    static let magic: [UInt8] = Array("SLWK".utf8)
    public static let headerSize = 16
    /// The largest frame either side sends or takes: well within a Unix socket's default
    /// send buffer, so no privilege is needed to raise it. A database takes several.
    public static let maxFrame = 60 << 10
    /// Bounds on what one frame may carry, checked before anything is allocated.
    static let maxString = 1024
    static let maxKey = 256
    static let maxItems = 1 << 20
    static let maxParts: UInt32 = 1 << 16

    /// The frames of a message: header (magic, version, type, body length, reserved) and
    /// body each. A database is cut between SAs and policies to stay within `maxFrame`.
    public static func encode(_ m: WorkerMessage) -> [[UInt8]] {
        guard case let .database(d) = m else {
            var body = FieldWriter()
            switch m {
            case let .hello(h):
                body.u16(h.queue); body.optionalU16(h.gsoQueue); body.u8(h.markShift); body.u16(h.batch)
                body.bool(h.passthrough); body.u32(h.busyPollMicros)
            case let .ack(g):
                body.u64(g)
            case let .event(e):
                body.event(e)
            case let .reserve(sa, through):
                body.string(sa); body.u64(through)
            case .stop, .database:
                break
            }
            return [frame(m.type, body)]
        }
        // Each item encoded alone, then packed greedily into parts.
        let room = maxFrame - headerSize - 64
        var sas: [[[UInt8]]] = [[]], policies: [[[UInt8]]] = [[]]
        var used = 0
        func place(_ item: [UInt8], policy: Bool) {
            if used + item.count > room, !(sas[sas.count - 1].isEmpty && policies[policies.count - 1].isEmpty) {
                sas.append([]); policies.append([]); used = 0
            }
            if policy { policies[policies.count - 1].append(item) } else { sas[sas.count - 1].append(item) }
            used += item.count
        }
        for sa in d.associations { var w = FieldWriter(); w.sa(sa); place(w.bytes, policy: false) }
        for p in d.policies { var w = FieldWriter(); w.policy(p); place(w.bytes, policy: true) }
        let parts = UInt32(sas.count)
        var frames: [[UInt8]] = []
        for i in 0..<sas.count {
            var body = FieldWriter()
            body.u64(d.generation); body.u32(UInt32(i)); body.u32(parts)
            body.action(d.defaultOutbound); body.action(d.defaultInbound)
            body.u32(UInt32(sas[i].count))
            for s in sas[i] { body.bytes += s; SecretBytes(s).wipe() }
            body.u32(UInt32(policies[i].count))
            for p in policies[i] { body.bytes += p }
            frames.append(frame(.database, body))
        }
        return frames
    }

    private static func frame(_ type: WorkerMessageType, _ body: FieldWriter) -> [UInt8] {
        var out = FieldWriter(bytes: magic)
        out.u16(version)
        out.u16(type.rawValue)
        out.u32(UInt32(body.bytes.count))
        out.u32(0)
        out.bytes += body.bytes
        // The body may hold keys: wiped here; the channel wipes the frame once it is sent.
        SecretBytes(body.bytes).wipe()
        return out.bytes
    }

    /// Decodes frames into the messages they make (tests; the channel assembles as frames come).
    public static func decodeAll(_ frames: [[UInt8]]) throws(WorkerProtocolError) -> [WorkerMessage] {
        var assembler = DatabaseAssembler()
        var out: [WorkerMessage] = []
        for f in frames { if let m = try assembler.take(try decode(f)) { out.append(m) } }
        return out
    }

    /// Decodes one frame (a channel datagram).
    public static func decode(_ bytes: [UInt8]) throws(WorkerProtocolError) -> WorkerFrame {
        var r = FieldReader(bytes, message: "worker")
        guard bytes.count >= headerSize else { throw r.error("header", "\(bytes.count) bytes, shorter than the \(headerSize)-byte header") }
        guard Array(bytes[0..<4]) == magic else { throw r.error("header", "not a Sluice worker message (bad magic)") }
        r.at = 4
        let v = try r.u16("version")
        guard v == version else { throw r.error("version", "protocol version \(v), this Sluice speaks \(version)") }
        let rawType = try r.u16("type")
        guard let type = WorkerMessageType(rawValue: rawType) else { throw r.error("type", "unknown message type \(rawType)") }
        r.message = type.name
        let length = Int(try r.u32("length"))
        _ = try r.u32("reserved")
        guard length == bytes.count - headerSize else {
            throw r.error("length", "says \(length) bytes of body, the message has \(bytes.count - headerSize)")
        }
        let m: WorkerMessage
        switch type {
        case .database:
            let generation = try r.u64("generation")
            let part = try r.u32("part"), parts = try r.u32("parts")
            guard parts >= 1, parts <= maxParts, part < parts else { r.at -= 8; throw r.error("part", "part \(part) of \(parts)") }
            let out = try r.action("default outbound"), inb = try r.action("default inbound")
            var sas: [SAConfig] = []
            for i in 0..<(try r.count("SA count")) { sas.append(try r.sa(i)) }
            var policies: [Policy] = []
            for i in 0..<(try r.count("policy count")) { policies.append(try r.policy(i)) }
            guard r.at == bytes.count else { throw r.error("end", "\(bytes.count - r.at) bytes after the last field") }
            return .databasePart(part: part, parts: parts, DatabaseUpdate(generation: generation, associations: sas, policies: policies,
                                                                          defaultOutbound: out, defaultInbound: inb))
        case .hello:
            m = .hello(WorkerHello(queue: try r.u16("queue"), gsoQueue: try r.optionalU16("gso queue"), markShift: try r.u8("mark shift"),
                                   batch: try r.u16("batch"), passthrough: try r.bool("passthrough"),
                                   busyPollMicros: try r.u32("busy poll")))
        case .ack:
            m = .ack(generation: try r.u64("generation"))
        case .event:
            m = .event(try r.event())
        case .reserve:
            m = .reserve(sa: try r.string("SA name"), through: try r.u64("through"))
        case .stop:
            m = .stop
        }
        guard r.at == bytes.count else { throw r.error("end", "\(bytes.count - r.at) bytes after the last field") }
        return .message(m)
    }
}

/// Puts a database's parts back together. Parts come in order (the channel keeps it);
/// anything else (a part missing, another generation midway, a different count) is a
/// protocol error, and the half-built database is dropped.
public struct DatabaseAssembler: Sendable {
    private var building: DatabaseUpdate?
    private var next: UInt32 = 0
    private var parts: UInt32 = 0

    public init() {}

    /// The message a frame completes, if any.
    public mutating func take(_ f: WorkerFrame) throws(WorkerProtocolError) -> WorkerMessage? {
        switch f {
        case let .message(m):
            guard building == nil else {
                building = nil
                throw WorkerProtocolError(message: m.type.name, field: "type", offset: 6,
                                          problem: "came before the last part of a database (part \(next) of \(parts) expected)")
            }
            return m
        case let .databasePart(part, count, d):
            if part == 0 {
                guard building == nil else {
                    building = nil
                    throw WorkerProtocolError(message: "database", field: "part", offset: 24, problem: "a new database before part \(next) of \(parts)")
                }
                building = d; next = 0; parts = count
            } else {
                guard var b = building, part == next, count == parts, d.generation == b.generation else {
                    let expected = building == nil ? "part 0" : "part \(next) of \(parts)"
                    building = nil
                    throw WorkerProtocolError(message: "database", field: "part", offset: 24, problem: "part \(part) of \(count), expected \(expected)")
                }
                guard b.associations.count + d.associations.count <= WorkerProtocol.maxItems,
                      b.policies.count + d.policies.count <= WorkerProtocol.maxItems else {
                    building = nil
                    throw WorkerProtocolError(message: "database", field: "SA count", offset: 0, problem: "more than \(WorkerProtocol.maxItems) items in all")
                }
                b.associations += d.associations
                b.policies += d.policies
                building = b
            }
            next = part + 1
            guard next == parts, let done = building else { return nil }
            building = nil
            return .database(done)
        }
    }
}

/// Appends fields: integers big-endian, strings and bytes with a u16 length, lists with a u32 count.
struct FieldWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(truncatingIfNeeded: v)] }
    mutating func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(truncatingIfNeeded: v)) }
    mutating func u64(_ v: UInt64) { u32(UInt32(v >> 32)); u32(UInt32(truncatingIfNeeded: v)) }
    mutating func bool(_ v: Bool) { u8(v ? 1 : 0) }
    mutating func optionalU16(_ v: UInt16?) { bool(v != nil); if let v { u16(v) } }
    mutating func optionalU64(_ v: UInt64?) { bool(v != nil); if let v { u64(v) } }
    mutating func raw(_ b: [UInt8]) { u16(UInt16(clamping: b.count)); bytes += b.prefix(Int(UInt16.max)) }
    mutating func string(_ s: String) { raw(Array(s.utf8)) }
    mutating func address(_ a: IPAddress) { raw(a.bytes) }
    mutating func prefix(_ p: IPPrefix?) {
        bool(p != nil)
        if let p { address(p.address); u8(UInt8(p.length)) }
    }
    mutating func ports(_ r: ClosedRange<UInt16>?) {
        bool(r != nil)
        if let r { u16(r.lowerBound); u16(r.upperBound) }
    }
    mutating func action(_ a: PolicyAction) {
        switch a {
        case .bypass: u8(0)
        case .discard: u8(1)
        case let .protect(names): u8(2); u32(UInt32(names.count)); names.forEach { string($0) }
        }
    }
    mutating func sa(_ c: SAConfig) {
        string(c.name); string(c.direction.rawValue); u32(c.spi); string(c.mode.rawValue)
        address(c.local); address(c.remote); string(c.proposal.rawValue)
        raw(c.keyMaterial.bytes)
        bool(c.esn); u32(UInt32(clamping: c.replayWindow))
        let l = c.lifetime
        for v in [l.softBytes, l.hardBytes, l.softPackets, l.hardPackets, l.softSeconds, l.hardSeconds] { optionalU64(v) }
        u32(UInt32(clamping: c.tfcPadTo)); u32(UInt32(clamping: c.mtu)); string(c.dfPolicy.rawValue)
        bool(c.udpEncapsulation); bool(c.durable)
    }
    mutating func policy(_ p: Policy) {
        string(p.direction.rawValue)
        let s = p.selector
        prefix(s.src); prefix(s.dst)
        bool(s.proto != nil); if let v = s.proto { u8(v) }
        ports(s.srcPorts); ports(s.dstPorts)
        bool(s.icmpType != nil); if let v = s.icmpType { u8(v) }
        bool(s.icmpCode != nil); if let v = s.icmpCode { u8(v) }
        action(p.action)
        string(p.origin)
    }
    mutating func event(_ e: SAEvent) {
        switch e {
        case let .softLifetime(sa, g, what): u8(1); string(sa); u64(g); string(what)
        case let .hardLifetime(sa, g, what): u8(2); string(sa); u64(g); string(what)
        case let .sequenceExhausted(sa, g): u8(3); string(sa); u64(g)
        case let .noSA(policy): u8(4); string(policy)
        case let .stateWriteFailed(sa, reason): u8(5); string(sa); string(reason)
        }
    }
}

/// Reads fields with every length and count checked against what is left.
struct FieldReader {
    let bytes: [UInt8]
    var at = 0
    var message: String

    init(_ bytes: [UInt8], message: String) { self.bytes = bytes; self.message = message }

    func error(_ field: String, _ problem: String) -> WorkerProtocolError {
        WorkerProtocolError(message: message, field: field, offset: at, problem: problem)
    }

    mutating func take(_ n: Int, _ field: String) throws(WorkerProtocolError) -> ArraySlice<UInt8> {
        guard n >= 0, bytes.count - at >= n else { throw error(field, "needs \(n) bytes, \(bytes.count - at) left") }
        defer { at += n }
        return bytes[at..<(at + n)]
    }
    mutating func u8(_ f: String) throws(WorkerProtocolError) -> UInt8 { try take(1, f).first! }
    mutating func u16(_ f: String) throws(WorkerProtocolError) -> UInt16 { try take(2, f).reduce(0) { $0 << 8 | UInt16($1) } }
    mutating func u32(_ f: String) throws(WorkerProtocolError) -> UInt32 { try take(4, f).reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64(_ f: String) throws(WorkerProtocolError) -> UInt64 { try take(8, f).reduce(0) { $0 << 8 | UInt64($1) } }
    mutating func bool(_ f: String) throws(WorkerProtocolError) -> Bool {
        let v = try u8(f)
        guard v <= 1 else { at -= 1; throw error(f, "flag \(v), not 0 or 1") }
        return v == 1
    }
    mutating func optionalU16(_ f: String) throws(WorkerProtocolError) -> UInt16? { try bool(f) ? try u16(f) : nil }
    mutating func optionalU64(_ f: String) throws(WorkerProtocolError) -> UInt64? { try bool(f) ? try u64(f) : nil }
    mutating func optionalU8(_ f: String) throws(WorkerProtocolError) -> UInt8? { try bool(f) ? try u8(f) : nil }
    mutating func count(_ f: String) throws(WorkerProtocolError) -> Int {
        let n = Int(try u32(f))
        // Each item takes at least a byte: a count beyond what is left is a lie, caught before any allocation.
        guard n <= WorkerProtocol.maxItems, n <= bytes.count - at else { at -= 4; throw error(f, "\(n) items in \(bytes.count - at - 4) bytes") }
        return n
    }
    mutating func raw(_ f: String, max: Int) throws(WorkerProtocolError) -> ArraySlice<UInt8> {
        let n = Int(try u16(f))
        guard n <= max else { at -= 2; throw error(f, "\(n) bytes, more than \(max)") }
        return try take(n, f)
    }
    mutating func string(_ f: String) throws(WorkerProtocolError) -> String {
        let start = at
        let b = try raw(f, max: WorkerProtocol.maxString)
        guard let s = String(validating: b, as: UTF8.self) else { at = start; throw error(f, "not UTF-8") }
        return s
    }
    mutating func named<T: RawRepresentable>(_ f: String, _: T.Type) throws(WorkerProtocolError) -> T where T.RawValue == String {
        let start = at
        let s = try string(f)
        guard let v = T(rawValue: s) else { at = start; throw error(f, "unknown value \"\(s.prefix(40))\"") }
        return v
    }
    mutating func address(_ f: String) throws(WorkerProtocolError) -> IPAddress {
        let start = at
        let b = try raw(f, max: 16)
        guard let a = IPAddress(bytes: b) else { at = start; throw error(f, "\(b.count) bytes is no IPv4 or IPv6 address") }
        return a
    }
    mutating func prefix(_ f: String) throws(WorkerProtocolError) -> IPPrefix? {
        guard try bool(f) else { return nil }
        let a = try address(f)
        let length = Int(try u8(f + " length"))
        guard length <= (a.family == .v4 ? 32 : 128) else { at -= 1; throw error(f + " length", "/\(length) for \(a)") }
        return IPPrefix(address: a, length: length)
    }
    mutating func ports(_ f: String) throws(WorkerProtocolError) -> ClosedRange<UInt16>? {
        guard try bool(f) else { return nil }
        let lo = try u16(f), hi = try u16(f)
        guard lo <= hi else { at -= 4; throw error(f, "range \(lo)-\(hi) runs backwards") }
        return lo...hi
    }
    mutating func action(_ f: String) throws(WorkerProtocolError) -> PolicyAction {
        switch try u8(f) {
        case 0: return .bypass
        case 1: return .discard
        case 2:
            var names: [String] = []
            for _ in 0..<(try count(f + " SA count")) { names.append(try string(f + " SA name")) }
            return .protect(sas: names)
        case let v: at -= 1; throw error(f, "unknown action \(v)")
        }
    }
    mutating func sa(_ i: Int) throws(WorkerProtocolError) -> SAConfig {
        let p = "SA \(i) "
        let name = try string(p + "name")
        let direction = try named(p + "direction", Direction.self)
        let spi = try u32(p + "spi")
        let mode = try named(p + "mode", ESPMode.self)
        let local = try address(p + "local"), remote = try address(p + "remote")
        let proposal = try named(p + "proposal", Proposal.self)
        let key = SecretBytes(Array(try raw(p + "key", max: WorkerProtocol.maxKey)))
        let esn = try bool(p + "esn")
        let window = Int(try u32(p + "replay window"))
        var limits: [UInt64?] = []
        for f in ["soft bytes", "hard bytes", "soft packets", "hard packets", "soft seconds", "hard seconds"] {
            limits.append(try optionalU64(p + f))
        }
        var l = Lifetime()
        (l.softBytes, l.hardBytes, l.softPackets, l.hardPackets) = (limits[0], limits[1], limits[2], limits[3])
        (l.softSeconds, l.hardSeconds) = (limits[4], limits[5])
        let tfc = Int(try u32(p + "tfc pad")), mtu = Int(try u32(p + "mtu"))
        let df = try named(p + "df", DFPolicy.self)
        var c = SAConfig(name: name, direction: direction, spi: spi, mode: mode, local: local, remote: remote, proposal: proposal,
                         keyMaterial: key, esn: esn, replayWindow: window, lifetime: l, tfcPadTo: tfc, mtu: mtu, dfPolicy: df,
                         udpEncapsulation: try bool(p + "nat_t"))
        c.durable = try bool(p + "durable")
        return c
    }
    mutating func policy(_ i: Int) throws(WorkerProtocolError) -> Policy {
        let p = "policy \(i) "
        let direction = try named(p + "direction", Direction.self)
        var s = TrafficSelector()
        s.src = try prefix(p + "src"); s.dst = try prefix(p + "dst")
        s.proto = try optionalU8(p + "protocol")
        s.srcPorts = try ports(p + "src ports"); s.dstPorts = try ports(p + "dst ports")
        s.icmpType = try optionalU8(p + "icmp type"); s.icmpCode = try optionalU8(p + "icmp code")
        let action = try action(p + "action")
        return Policy(direction: direction, selector: s, action: action, origin: try string(p + "origin"))
    }
    mutating func event() throws(WorkerProtocolError) -> SAEvent {
        switch try u8("event kind") {
        case 1: return .softLifetime(sa: try string("SA name"), generation: try u64("generation"), what: try string("what"))
        case 2: return .hardLifetime(sa: try string("SA name"), generation: try u64("generation"), what: try string("what"))
        case 3: return .sequenceExhausted(sa: try string("SA name"), generation: try u64("generation"))
        case 4: return .noSA(policy: try string("policy"))
        case 5: return .stateWriteFailed(sa: try string("SA name"), reason: try string("reason"))
        case let v: at -= 1; throw error("event kind", "unknown event \(v)")
        }
    }
}
