import Foundation
import Testing
import SluiceCore
@testable import SluiceDataPlane

@Suite("Durable SA state on disk")
struct StateStoreTests {
    static let key = SAStateKey(SAConfig(name: "a-to-b", direction: .outbound, spi: 0x1001, mode: .tunnel,
                                         local: IPAddress("192.0.2.1")!, remote: IPAddress("192.0.2.2")!,
                                         proposal: .aes128gcm16, keyMaterial: SecretBytes(Array(repeating: 7, count: 20))))

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "sluice-state-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test("records only grow: a save that would go backwards is refused and the record stays")
    func monotonic() throws {
        let s = try FileStateStore(directory: tempDir())
        try s.save(Self.key, SAStateRecord(mark: 1000))
        #expect(throws: StoreError.self) { try s.save(Self.key, SAStateRecord(mark: 999)) }
        #expect(try s.load(Self.key, legacyName: "a-to-b") == SAStateRecord(mark: 1000))
        try s.save(Self.key, SAStateRecord(mark: 2000))
        #expect(try s.load(Self.key, legacyName: "x")?.mark == 2000)
    }

    @Test("two writers (threads with their own store objects) never lose the highest record")
    func twoWriters() throws {
        let dir = tempDir()
        let a = try FileStateStore(directory: dir), b = try FileStateStore(directory: dir)
        DispatchQueue.concurrentPerform(iterations: 2) { w in
            let store = w == 0 ? a : b
            for i in 1...200 { try? store.save(Self.key, SAStateRecord(mark: UInt64(i * 2 + w))) }
        }
        #expect(try a.load(Self.key, legacyName: "")!.mark >= 400)
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".tmp") }
        #expect(left.isEmpty, "no temporary file left behind: \(left)")
    }

    @Test("a crash between writing the temporary file and the rename leaves the old record")
    func crashBeforeRename() throws {
        let dir = tempDir()
        let s = try FileStateStore(directory: dir)
        try s.save(Self.key, SAStateRecord(mark: 65536))
        // What a crash leaves: a complete temporary file that was never renamed.
        try "131072 131072\n".write(toFile: s.path(Self.key) + ".4242.1.tmp", atomically: false, encoding: .utf8)
        #expect(try s.load(Self.key, legacyName: "")?.mark == 65536)
        try s.save(Self.key, SAStateRecord(mark: 131072))
        #expect(try s.load(Self.key, legacyName: "")?.mark == 131072)
    }

    @Test("an older Sluice's record (by name and SPI) is honoured on upgrade; unreadable records are errors")
    func legacyAndGarbage() throws {
        let dir = tempDir()
        let s = try FileStateStore(directory: dir)
        try "70000\n".write(toFile: "\(dir)/seq-a-to-b-1001.state", atomically: true, encoding: .utf8)
        #expect(try s.load(Self.key, legacyName: "a-to-b")?.mark == 70000)
        try s.save(Self.key, SAStateRecord(mark: 80000))
        #expect(try s.load(Self.key, legacyName: "a-to-b")?.mark == 80000)
        try "not a number\n".write(toFile: s.path(Self.key), atomically: true, encoding: .utf8)
        #expect(throws: StoreError.self) { try s.load(Self.key, legacyName: "a-to-b") }
        #expect(!s.path(Self.key).contains("a-to-b"), "the record is named by SPI, peer and key id, not the SA name")
    }

    @Test("inbound: a clean stop may write the exact top below the running mark; the certain part never goes back")
    func inboundClean() throws {
        let s = try FileStateStore(directory: tempDir())
        let k = SAStateKey(SAConfig(name: "in", direction: .inbound, spi: 0x2001, mode: .tunnel, local: IPAddress("192.0.2.1")!,
                                    remote: IPAddress("192.0.2.2")!, proposal: .aes128gcm16, keyMaterial: SecretBytes(Array(repeating: 1, count: 20))))
        try s.save(k, SAStateRecord(mark: 5000, confirmed: 1000))
        try s.save(k, SAStateRecord(mark: 1200, confirmed: 1200, clean: true))
        #expect(try s.load(k, legacyName: "in") == SAStateRecord(mark: 1200, confirmed: 1200, clean: true))
        #expect(throws: StoreError.self) { try s.save(k, SAStateRecord(mark: 1100, confirmed: 1100, clean: true)) }
    }

    @Test("the background writer runs every job, merges jobs per key, and drains on stop")
    func backgroundWriter() throws {
        let w = BackgroundWriter()
        final class Count: @unchecked Sendable { let lock = NSLock(); var n = 0; func add() { lock.withLock { n += 1 } } }
        let c = Count()
        w.start()
        for _ in 0..<50 { _ = w.submit(Self.key) { c.add() } }
        w.stop()
        #expect(c.n >= 1 && c.n <= 50)
        #expect(!w.submit(Self.key) { c.add() }, "a stopped writer takes no jobs: callers write themselves")
    }
}
