import Testing
#if canImport(Glibc)
import Glibc
#endif
@testable import SluiceCore
@testable import SluiceDataPlane

extension WorkerTests {
    @Test("a raw send the kernel refuses is a drop counted as inject_failed (and still an inject error)")
    func refusedRawSend() throws {
        let (_, db) = try outboundTunnel()
        let io = MemoryIO()
        io.refuseRaw = true // as sendmmsg failing
        let w = Worker(index: 0, io: io, queueNumber: 3, holder: DatabaseHolder(db), markShift: 16, passthrough: false)
        // Sealed in PREROUTING: an IPv4 packet we now originate must go out on the raw socket.
        let packets = (0..<3).map { _ in udp(100, dst: "203.0.113.9") }
        io.enqueue(packets, queue: 3, hook: 0)
        w.runOnce()
        #expect(w.stats.sealed.load == 3)
        #expect(w.stats.injected.load == 0 && w.stats.injectErrors.load == 3)
        #expect(w.stats.drops[DropReason.injectFailed.index].load == 3 && w.stats.dropped.load == 3,
                "every packet the kernel did not take has a drop reason")
    }

    @Test("KernelIO: a raw socket the kernel refuses (ENOTSOCK) takes nothing, so the worker counts the drop")
    func kernelRefusesRaw() throws {
        let notASocket = open("/dev/null", O_WRONLY)
        #expect(notASocket >= 0)
        defer { close(notASocket) }
        let k = KernelIO(queueSocket: -1, raw4: notASocket)
        let batch = RawBatch()
        let p = udp(10, dst: "203.0.113.9")
        #expect(p.withUnsafeBytes { batch.add($0) })
        #expect(k.sendRaw(batch, family: .v4) == 0)
        #expect(k.sendRaw(batch, family: .v6) == 0, "no IPv6 raw socket: nothing sent")
    }
}
