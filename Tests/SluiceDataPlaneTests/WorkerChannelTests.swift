import Foundation
import Testing
@testable import SluiceCore
@testable import SluiceDataPlane

/// The supervisor-worker channel (doc/compartments.md): every message round-trips, and
/// whatever else arrives is an error that names the field and the byte, never a crash.
@Suite("Worker channel")
struct WorkerChannelTests {
    static func sa(_ i: Int, v6: Bool = false, out: Bool = true) -> SAConfig {
        var l = Lifetime()
        l.softBytes = 1 << 30; l.hardSeconds = 3600
        var c = SAConfig(name: "sa-\(i)", direction: out ? .outbound : .inbound, spi: UInt32(0x1000 + i), mode: i % 2 == 0 ? .tunnel : .transport,
                         local: IPAddress(v6 ? "2001:db8::1" : "192.0.2.1")!, remote: IPAddress(v6 ? "2001:db8::2" : "192.0.2.2")!,
                         proposal: i % 3 == 0 ? .aes128gcm16 : .aes256sha256,
                         keyMaterial: SecretBytes((0..<(i % 3 == 0 ? 20 : 64)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }),
                         esn: i % 2 == 1, replayWindow: 64 * (i % 5), lifetime: l, tfcPadTo: i % 4 == 0 ? 16 : 0, mtu: 1400,
                         dfPolicy: .set, udpEncapsulation: i % 2 == 0)
        c.durable = i % 2 == 0
        return c
    }

    static let policies: [Policy] = [
        Policy(direction: .outbound, selector: TrafficSelector(src: IPPrefix("198.51.100.0/24"), dst: IPPrefix("203.0.113.0/24"), proto: 6,
                                                             dstPorts: 443...443), action: .protect(sas: ["sa-0", "sa-2"]), origin: "sluice.toml:12"),
        Policy(direction: .inbound, selector: TrafficSelector(dst: IPPrefix("2001:db8:1::/48"), proto: 58, icmpType: 128, icmpCode: 0),
               action: .bypass, origin: "child net"),
        Policy(direction: .outbound, selector: TrafficSelector(), action: .discard),
    ]

    static let database = DatabaseUpdate(generation: 42, associations: [sa(0), sa(1, v6: true, out: false), sa(2), sa(3, v6: true)],
                                         policies: policies, defaultOutbound: .discard, defaultInbound: .bypass)

    static let all: [WorkerMessage] = [
        .hello(WorkerHello(queue: 3, gsoQueue: 5, markShift: 8, batch: 64, passthrough: true, busyPollMicros: 50)),
        .hello(WorkerHello(queue: 0)),
        .database(database),
        .database(DatabaseUpdate(generation: 0, associations: [], policies: [])),
        .ack(generation: UInt64.max),
        .event(.softLifetime(sa: "sa-1", generation: 7, what: "bytes")),
        .event(.hardLifetime(sa: "sa-1", generation: 8, what: "time")),
        .event(.sequenceExhausted(sa: "sa-2", generation: 9)),
        .event(.noSA(policy: "child net")),
        .event(.stateWriteFailed(sa: "sa-3", reason: "No space left on device")),
        .reserve(sa: "sa-0", through: 1 << 40),
        .stop,
    ]

    @Test("every message decodes to itself", arguments: all.indices)
    func roundTrip(_ i: Int) throws {
        let m = Self.all[i]
        #expect(try WorkerProtocol.decodeAll(WorkerProtocol.encode(m)) == [m])
    }

    @Test("a database keeps every SA and policy field, keys included")
    func databaseFields() throws {
        guard case let .database(d)? = try WorkerProtocol.decodeAll(WorkerProtocol.encode(.database(Self.database))).first else {
            Issue.record("not a database"); return
        }
        for (a, b) in zip(d.associations, Self.database.associations) {
            #expect(a.isUnchanged(comparedTo: b) && a.durable == b.durable && a.keyMaterial == b.keyMaterial, "\(a.name)")
        }
        #expect(d.policies == Self.policies && d.defaultOutbound == .discard)
    }

    @Test("over a socketpair: whole messages, a timeout, and the peer's close")
    func channel() throws {
        let (supervisor, worker) = try WorkerChannel.pair()
        defer { supervisor.close() }
        #expect(try worker.receive(timeout: 0.01) == .timedOut)
        let big = DatabaseUpdate(generation: 1, associations: (0..<2000).map { Self.sa($0) },
                                 policies: (0..<500).map { _ in Self.policies[0] })
        let frames = WorkerProtocol.encode(.database(big))
        #expect(frames.count > 4 && frames.allSatisfy { $0.count <= WorkerProtocol.maxFrame }, "\(frames.map(\.count))")
        // More than a socket buffer holds: the supervisor's sends wait for the worker's reads.
        let sender = Thread {
            try? supervisor.send(.database(big))
            try? supervisor.send(.stop)
        }
        sender.start()
        #expect(try worker.receive(timeout: 5) == .message(.database(big)))
        #expect(try worker.receive(timeout: 1) == .message(.stop))
        try worker.send(.ack(generation: 1))
        #expect(try supervisor.receive(timeout: 1) == .message(.ack(generation: 1)))
        worker.close()
        #expect(try supervisor.receive(timeout: 1) == .closed)
    }

    @Test("garbage from a worker is a protocol error, and the channel goes on")
    func garbageThenValid() throws {
        let (supervisor, worker) = try WorkerChannel.pair()
        defer { supervisor.close(); worker.close() }
        try worker.sendRaw(Array("hello, supervisor".utf8))
        try worker.sendRaw([])
        try worker.send(.ack(generation: 3))
        #expect(throws: WorkerChannel.ChannelError.self) { try supervisor.receive(timeout: 1) }
        #expect(throws: WorkerChannel.ChannelError.self) { try supervisor.receive(timeout: 1) }
        #expect(try supervisor.receive(timeout: 1) == .message(.ack(generation: 3)))
        #expect(throws: WorkerChannel.ChannelError.oversized(WorkerProtocol.maxFrame + 1)) {
            try worker.sendRaw([UInt8](repeating: 0, count: WorkerProtocol.maxFrame + 1))
        }
    }

    @Test("a database's parts must come in order, all of them, with nothing in between")
    func partsInOrder() throws {
        let big = DatabaseUpdate(generation: 5, associations: (0..<1500).map { Self.sa($0) }, policies: Self.policies)
        let frames = WorkerProtocol.encode(.database(big))
        #expect(frames.count >= 3)
        let stop = WorkerProtocol.encode(.stop)[0]
        let other = WorkerProtocol.encode(.database(DatabaseUpdate(generation: 6, associations: (0..<1500).map { Self.sa($0) }, policies: [])))
        for (what, sequence) in [("a part missing", [frames[0], frames[2]]), ("a message midway", [frames[0], stop]),
                                 ("another generation midway", [frames[0], other[1]]), ("a part 1 first", [frames[1]]),
                                 ("part 0 twice", [frames[0], frames[0]])] {
            #expect(throws: WorkerProtocolError.self, "\(what)") { _ = try WorkerProtocol.decodeAll(sequence) }
        }
        // After an error the next database starts clean.
        var a = DatabaseAssembler()
        _ = try a.take(WorkerProtocol.decode(frames[0]))
        #expect(throws: WorkerProtocolError.self) { _ = try a.take(WorkerProtocol.decode(stop)) }
        var last: WorkerMessage?
        for f in frames { last = try a.take(WorkerProtocol.decode(f)) }
        #expect(last == .database(big))
    }

    /// (what, the message's bytes changed, the field named, words of the problem).
    static func broken() -> [(String, [UInt8], String, String)] {
        let db = WorkerProtocol.encode(.database(Self.database))[0]
        let ack = WorkerProtocol.encode(.ack(generation: 1))[0]
        func set(_ b: [UInt8], _ at: Int, _ v: [UInt8]) -> [UInt8] { var c = b; c.replaceSubrange(at..<(at + v.count), with: v); return c }
        let h = WorkerProtocol.headerSize
        // The database body: generation (8), part and parts (4 + 4), two actions (1 + 1), the SA count (4), then SA 0's name.
        let sa0 = h + 16 + 2 + 4
        return [
            ("short", Array(ack.prefix(10)), "header", "shorter than the 16-byte header"),
            ("bad magic", set(ack, 0, Array("HTTP".utf8)), "header", "bad magic"),
            ("version 2", set(ack, 4, [0, 2]), "version", "protocol version 2"),
            ("unknown type", set(ack, 6, [0, 99]), "type", "unknown message type 99"),
            ("length lies", set(ack, 8, [0, 0, 0, 9]), "length", "says 9 bytes of body, the message has 8"),
            ("truncated ack", Array(set(ack, 8, [0, 0, 0, 7]).dropLast()), "generation", "needs 8 bytes, 7 left"),
            ("trailing bytes", set(ack, 8, [0, 0, 0, 9]) + [0], "end", "1 bytes after the last field"),
            ("a count beyond the message", set(db, h + 18, [0xff, 0xff, 0xff, 0xff]), "SA count", "items in"),
            ("part 3 of 2", set(db, h + 8, [0, 0, 0, 3, 0, 0, 0, 2]), "part", "part 3 of 2"),
            ("an SA name past the end", set(db, sa0, [0xff, 0xff]), "SA 0 name", "more than 1024"),
            ("an unknown action", set(db, h + 16, [7]), "default outbound", "unknown action 7"),
            ("no direction", set(db, sa0 + 2 + 4 + 2, [0x78]), "SA 0 direction", "unknown value \"xut\""),
        ]
    }

    @Test("broken messages: an error naming the field and the byte", arguments: broken().indices)
    func brokenMessage(_ i: Int) {
        let (what, bytes, field, problem) = Self.broken()[i]
        do {
            let m = try WorkerProtocol.decode(bytes)
            Issue.record("\(what): decoded as \(m)")
        } catch {
            #expect(error.field == field && error.description.contains(problem), "\(what): \(error)")
            #expect(error.offset >= 0 && error.offset <= bytes.count)
        }
    }

    @Test("random damage to a valid database never crashes and never leaks a key into an error")
    func randomDamage() {
        let good = WorkerProtocol.encode(.database(Self.database))[0]
        let keyHex = Self.database.associations.map { $0.keyMaterial.bytes.map { String($0, radix: 16) }.joined() }
        var rng = SystemRandomNumberGenerator()
        var errors = 0
        for round in 0..<3000 {
            var b = good
            switch round % 3 {
            case 0:
                for _ in 0..<(1 + round % 4) {
                    let at = Int.random(in: 0..<b.count, using: &rng), flip = UInt8.random(in: 1...255, using: &rng)
                    b[at] ^= flip
                }
            case 1: b = Array(b.prefix(Int.random(in: 0..<b.count, using: &rng)))
            default:
                let v = UInt8.random(in: 0...255, using: &rng), at = Int.random(in: 0..<b.count, using: &rng)
                b.insert(v, at: at)
            }
            do { _ = try WorkerProtocol.decode(b) } catch {
                errors += 1
                #expect(!keyHex.contains { error.description.contains($0) })
            }
        }
        #expect(errors > 1500, "most damage is caught by the frame or a field check")
    }
}
