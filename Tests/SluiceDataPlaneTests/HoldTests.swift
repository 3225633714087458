import Testing
import SluiceConfig
@testable import SluiceCore
@testable import SluiceDataPlane

extension WorkerTests {
    /// A trap policy (PROTECT, no SA yet) and, once "negotiated", the same policy with its SA.
    func trap(withSA: Bool) throws -> SecurityDatabase {
        let (sa, _) = try outboundTunnel()
        let p = Policy(direction: .outbound, selector: TrafficSelector(dst: IPPrefix("203.0.113.0/24")),
                       action: .protect(sas: withSA ? ["o"] : []), origin: "child net")
        return try SecurityDatabase(policies: [p], associations: withSA ? [sa] : [], allowMissingSAs: true)
    }

    @Test("packets waiting for an acquired SA are held, then leave sealed and in order; never in clear")
    func heldUntilTheSAIsThere() throws {
        let holder = DatabaseHolder(try trap(withSA: false))
        let io = MemoryIO()
        let w = Worker(index: 0, io: io, queueNumber: 3, holder: holder, markShift: 16, passthrough: false)
        w.holds = { $0 == "child net" }
        let packets = (0..<3).map { udp(100 + $0, dst: "203.0.113.9") }
        io.enqueue(packets, queue: 3)
        w.runOnce()
        #expect(w.stats.held.load == 3)
        #expect(w.stats.accepted.load == 0, "nothing passes before the SA exists")
        #expect(w.stats.dropped.load == 0, "held, not (yet) dropped")
        #expect(io.raw.isEmpty)
        w.releaseHeld()
        #expect(io.raw.isEmpty, "still no SA: still held")
        holder.replace(try trap(withSA: true))
        w.releaseHeld()
        #expect(w.stats.heldSent.load == 3)
        #expect(io.raw.count == 3)
        // ESP (protocol 50) to the peer, in the order the packets came, growing by one byte.
        #expect(io.raw.allSatisfy { $0[9] == 50 && Array($0[16..<20]) == IPAddress("192.0.2.2")!.bytes })
        let lengths = io.raw.map { Int($0[2]) << 8 | Int($0[3]) }
        #expect(lengths == lengths.sorted())
        #expect(w.holdQueue.isEmpty)
    }

    @Test("the hold queue is bounded: what does not fit is dropped as hold_full; policies that do not hold drop as no_sa")
    func holdBounded() throws {
        let holder = DatabaseHolder(try trap(withSA: false))
        let io = MemoryIO()
        let w = Worker(index: 0, io: io, queueNumber: 3, holder: holder, markShift: 16, passthrough: false, batch: 64)
        w.holds = { $0 == "child net" }
        w.holdQueue.limits.packets = 4
        io.enqueue((0..<10).map { _ in udp(10, dst: "203.0.113.9") }, queue: 3)
        w.runOnce()
        #expect(w.stats.held.load == 4)
        #expect(w.stats.drops[DropReason.holdFull.index].load == 6)
        w.holds = { _ in false }
        io.enqueue([udp(10, dst: "203.0.113.9")], queue: 3)
        w.runOnce()
        #expect(w.stats.drops[DropReason.noSA.index].load == 1)
    }

    @Test("the hold limits come from the [ike] hold_* keys")
    func holdLimitsFromConfig() throws {
        var s = IKESettings()
        s.holdPackets = 2; s.holdBytes = 100; s.holdPacketsTotal = 3; s.holdTimeout = 0.5
        var q = HoldQueue()
        q.limits = HoldQueue.Limits(s)
        #expect(q.limits.timeoutNanos == 500_000_000)
        let forty = [UInt8](repeating: 0, count: 40)
        let firstTwo = q.add(forty, policy: "a", now: 0) && q.add(forty, policy: "a", now: 0)
        #expect(firstTwo)
        let third = q.add([0], policy: "a", now: 0)
        #expect(!third, "hold_packets = 2 a child")
        let big = q.add([UInt8](repeating: 0, count: 101), policy: "b", now: 0)
        #expect(!big, "hold_bytes = 100 a child")
        let small = q.add([0], policy: "b", now: 0)
        #expect(small)
        let overTotal = q.add([0], policy: "c", now: 0)
        #expect(!overTotal, "hold_packets_total = 3 in all")
    }

    @Test("a held packet that waits past the timeout is dropped and counted as no_sa")
    func heldTimesOut() throws {
        let holder = DatabaseHolder(try trap(withSA: false))
        let io = MemoryIO()
        let w = Worker(index: 0, io: io, queueNumber: 3, holder: holder, markShift: 16, passthrough: false)
        w.holds = { _ in true }
        w.holdQueue.limits.timeoutNanos = 0
        io.enqueue([udp(10, dst: "203.0.113.9")], queue: 3)
        w.runOnce()
        w.holdQueue.triedAgainst = nil
        w.releaseHeld()
        #expect(w.holdQueue.isEmpty)
        #expect(w.stats.drops[DropReason.noSA.index].load == 1)
        #expect(io.raw.isEmpty)
    }
}
