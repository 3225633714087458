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
        let w = Worker(index: 0, queue: nil, queueNumber: 3, holder: DatabaseHolder(db), markShift: 16, passthrough: false)
        w.io.keepLastTrain = true
        let notASocket = open("/dev/null", O_WRONLY)
        #expect(notASocket >= 0)
        defer { close(notASocket) }
        w.rawSockets = (notASocket, -1) // sendmmsg fails: ENOTSOCK
        // Sealed in PREROUTING: an IPv4 packet we now originate must go out on the raw socket.
        let packets = (0..<3).map { _ in udp(100, dst: "203.0.113.9") }
        let n = w.loadFakeBatch(packets, hook: 0)
        w.processBatch(count: n)
        #expect(w.stats.sealed.load == 3)
        #expect(w.stats.injected.load == 0 && w.stats.injectErrors.load == 3)
        #expect(w.stats.drops[DropReason.injectFailed.index].load == 3 && w.stats.dropped.load == 3,
                "every packet the kernel did not take has a drop reason")
    }
}
