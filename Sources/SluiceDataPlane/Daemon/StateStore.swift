import Foundation
import SluiceCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// SA state records on disk, one small file per SA key in `state_dir` (see `SAStateKey`):
/// `out-<spi>-<peer>-<key id>.state` holds the outbound sequence reservation,
/// `in-<spi>-<local>-<key id>.state` the inbound replay mark. Files hold numbers only.
///
/// A save takes the key's lock file (`flock`, so two processes never interleave), reads
/// the record on disk and refuses one that would go backwards, writes a uniquely named
/// temporary file, fsyncs it, renames it over the record and fsyncs the directory: after
/// `save` returns, a crash cannot lose it, and a crash during it leaves the old record.
public struct FileStateStore: SAStateStore {
    public let directory: String
    static let tempCounter = Atomic<UInt64>(0)

    public init(directory: String) throws {
        self.directory = directory
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw StoreError("cannot create state_dir \(directory): \(Errno(errno))")
        }
        guard access(directory, W_OK) == 0 else { throw StoreError("state_dir \(directory) is not writable: \(Errno(errno))") }
    }

    func path(_ key: SAStateKey) -> String { "\(directory)/\(key.stem).state" }

    /// Where Sluice before 0.3 kept an outbound SA's reservation: by name and SPI.
    func legacyPath(_ key: SAStateKey, name: String) -> String {
        let safe = name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" }
        return "\(directory)/seq-\(String(safe))-\(String(key.spi, radix: 16)).state"
    }

    public func load(_ key: SAStateKey, legacyName: String) throws -> SAStateRecord? {
        let current = try read(path(key))
        guard key.direction == .outbound else { return current }
        // An upgrade must not restart a running key's counter: take the older file's number too.
        let legacy = try read(legacyPath(key, name: legacyName))
        switch (current, legacy) {
        case let (c?, l?): return SAStateRecord(mark: max(c.mark, l.mark))
        case let (c, l): return c ?? l
        }
    }

    public func save(_ key: SAStateKey, _ record: SAStateRecord) throws {
        let p = path(key)
        let lockFD = open(p + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else { throw StoreError("cannot open \(p).lock: \(Errno(errno))") }
        defer { close(lockFD) }
        while flock(lockFD, LOCK_EX) != 0 {
            guard errno == EINTR else { throw StoreError("cannot lock \(p).lock: \(Errno(errno))") }
        }
        if let old = try read(p) {
            // Outbound: the reservation only grows. Inbound: the certain part only grows,
            // and the mark may come down only to an exact top written at a clean stop.
            let backwards = record.confirmed < old.confirmed || (!record.clean && record.mark < old.mark)
                || (key.direction == .outbound && record.mark < old.mark)
            if backwards {
                throw StoreError("refusing to move \(p) backwards (\(old.mark) on disk, \(record.mark) offered): another writer, or a bug")
            }
        }
        let n = FileStateStore.tempCounter.wrappingAdd(1, ordering: .relaxed).newValue
        let tmp = "\(p).\(getpid()).\(n).tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError("cannot write \(tmp): \(Errno(errno))") }
        let line = Array("\(record.mark) \(record.confirmed)\(record.clean ? " clean" : "")\n".utf8)
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        let code = errno
        close(fd)
        guard written == line.count, synced else {
            unlink(tmp)
            throw StoreError("cannot write \(tmp): \(Errno(code))")
        }
        guard rename(tmp, p) == 0 else {
            let code = errno
            unlink(tmp)
            throw StoreError("cannot rename \(tmp): \(Errno(code))")
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// `MARK [CONFIRMED] [clean]`; nil when there is no file. A file that cannot be read or
    /// parsed is an error: guessing a number could reuse a nonce.
    func read(_ p: String) throws -> SAStateRecord? {
        guard let f = fopen(p, "r") else {
            if errno == ENOENT { return nil }
            throw StoreError("cannot read \(p): \(Errno(errno))")
        }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 128)
        guard fgets(&buf, 128, f) != nil else { throw StoreError("\(p) is empty: refusing to guess a sequence number") }
        let text = String(decoding: buf.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let words = text.split(separator: " ")
        guard (1...3).contains(words.count), let mark = UInt64(words[0]) else {
            throw StoreError("\(p) does not hold a number: refusing to guess a sequence number")
        }
        let confirmed = words.count > 1 ? UInt64(words[1]) : mark
        guard let confirmed, words.count < 3 || words[2] == "clean" else {
            throw StoreError("\(p) is not a state record: refusing to guess a sequence number")
        }
        return SAStateRecord(mark: mark, confirmed: confirmed, clean: words.count == 3)
    }
}

public struct StoreError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// One thread that makes SA state durable ahead of need, so workers never wait on fsync.
/// Jobs for the same key are merged (the newest wins: each writes a higher number), so a
/// slow disk costs writes, not memory.
public final class BackgroundWriter: DeferredWriter, @unchecked Sendable {
    struct Pending { var order: [SAStateKey] = []; var jobs: [SAStateKey: @Sendable () -> Void] = [:]; var running = true }
    let pending = Mutex<Pending>(Pending())
    let ready = DispatchSemaphore(value: 0)
    let finished = DispatchSemaphore(value: 0)
    var started = false

    public init() {}

    public func start() {
        let t = Thread { [self] in loop(); finished.signal() }
        t.name = "sluice-state"
        t.start()
        started = true
    }

    public func submit(_ key: SAStateKey, _ job: @escaping @Sendable () -> Void) -> Bool {
        let taken: Bool = pending.withLock { p in
            guard p.running else { return false }
            if p.jobs.updateValue(job, forKey: key) == nil { p.order.append(key) }
            return true
        }
        if taken { ready.signal() }
        return taken
    }

    /// Stops taking jobs (callers then write themselves) and returns once what was queued ran.
    public func stop() {
        pending.withLock { $0.running = false }
        ready.signal()
        if started { finished.wait() }
    }

    func loop() {
        while true {
            ready.wait()
            while let job = next() { job() }
            if pending.withLock({ !$0.running && $0.order.isEmpty }) { return }
        }
    }

    func next() -> (@Sendable () -> Void)? {
        pending.withLock { p in
            guard !p.order.isEmpty else { return nil }
            let key = p.order.removeFirst()
            return p.jobs.removeValue(forKey: key)
        }
    }
}
