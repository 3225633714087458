import SluiceCore
#if canImport(Glibc)
import Glibc
#endif

/// Sequence high-water marks on disk, one small file per outbound SA in `state_dir`.
/// A reservation is written to a temporary file, fsynced, renamed over the old one and
/// the directory fsynced: after `reserve` returns, a crash cannot lose it. Files hold a
/// number only; they name the SA and SPI, never anything derived from the key.
public struct FileSequenceStore: SequenceStore {
    public let directory: String

    public init(directory: String) throws {
        self.directory = directory
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw StoreError("cannot create state_dir \(directory): \(Errno(errno))")
        }
        guard access(directory, W_OK) == 0 else { throw StoreError("state_dir \(directory) is not writable: \(Errno(errno))") }
    }

    func path(_ sa: SAConfig) -> String {
        let safe = sa.name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" }
        return "\(directory)/seq-\(String(safe))-\(String(sa.spi, radix: 16)).state"
    }

    public func load(sa: SAConfig) throws -> UInt64 {
        let p = path(sa)
        guard let f = fopen(p, "r") else {
            if errno == ENOENT { return 0 }
            throw StoreError("cannot read \(p): \(Errno(errno))")
        }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 64)
        guard fgets(&buf, 64, f) != nil else { throw StoreError("\(p) is empty: refusing to guess a sequence number") }
        let text = String(decoding: buf.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let v = UInt64(text) else { throw StoreError("\(p) does not hold a number: refusing to guess a sequence number") }
        return v
    }

    public func reserve(sa: SAConfig, through limit: UInt64) throws {
        let p = path(sa)
        let tmp = p + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError("cannot write \(tmp): \(Errno(errno))") }
        let line = Array("\(limit)\n".utf8)
        let w = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard w == line.count, synced else { throw StoreError("cannot write \(tmp): \(Errno(errno))") }
        guard rename(tmp, p) == 0 else { throw StoreError("cannot rename \(tmp): \(Errno(errno))") }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }
}

public struct StoreError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}
