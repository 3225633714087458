import CSluiceNetfilter
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The control socket: a Unix stream socket, mode 0600, answering one JSON request per
/// connection with one JSON document. Requests: {"version":1,"command":"stats"|"ping"}.
/// Only root (or the daemon's own user) is served; anything malformed gets an error
/// object, never a crash. Runs on its own thread, so workers never wait for it.
public final class ControlServer: @unchecked Sendable {
    public static let protocolVersion = 1
    let path: String
    let fd: Int32
    let logger: Logger
    let handler: @Sendable (String, [String: Any]) -> [String: Any]?
    let running = Atomic<Bool>(true)

    public init(path: String, logger: Logger, handler: @escaping @Sendable (String, [String: Any]) -> [String: Any]?) throws {
        self.path = path
        self.logger = logger
        self.handler = handler
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755]) }
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno(errno) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw ControlError("control_socket path is too long (max 107 bytes): \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        let old = umask(0o177) // the socket file is created 0600
        let r = withUnsafePointer(to: &addr) { ap in
            ap.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(old)
        guard r == 0, listen(fd, 16) == 0 else {
            let e = Errno(errno)
            close(fd)
            throw ControlError("cannot listen on \(path): \(e)")
        }
    }

    public func stop() {
        running.store(false, ordering: .relaxed)
    }

    public func run() {
        defer { close(fd); unlink(path) }
        StreamSocket.acceptLoop(fd, running: running) { c in
            serve(c)
            drainAndClose(c)
        }
    }

    /// Half-closes, then discards what the client still sends (bounded in bytes and by
    /// the receive timeout), so a client mid-way through an oversized request reads our
    /// error instead of a connection reset.
    func drainAndClose(_ c: Int32) {
        shutdown(c, Int32(SHUT_WR))
        var sink = [UInt8](repeating: 0, count: 4096)
        var total = 0
        while total < 1 << 20 {
            let n = sink.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            total += n
        }
        close(c)
    }

    func serve(_ c: Int32) {
        StreamSocket.setTimeouts(c, seconds: 2)
        var uid: UInt32 = .max
        guard sluice_peer_uid(c, &uid) == 0, uid == 0 || uid == geteuid() else {
            reply(c, ["error": "permission denied: the control socket serves root only"])
            return
        }
        // One request line, at most 4 KiB.
        let request = StreamSocket.readRequest(c, limit: 4096, until: [10])
        guard !request.isEmpty else { return }
        guard request.count < 4096 || request.contains(10) else { reply(c, ["error": "request too long (max 4096 bytes)"]); return }
        let line = String(decoding: request.prefix { $0 != 10 }, as: UTF8.self)
        reply(c, handle(line))
    }

    func handle(_ line: String) -> [String: Any] {
        guard let data = line.data(using: .utf8),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            return ["error": "malformed request: expected one JSON object like {\"version\":1,\"command\":\"stats\"}"]
        }
        guard let v = obj["version"] as? Int, v == ControlServer.protocolVersion else {
            return ["error": "unsupported protocol version \(obj["version"].map { "\($0)" } ?? "(missing)"); this daemon speaks version \(ControlServer.protocolVersion)"]
        }
        guard let cmd = obj["command"] as? String else { return ["error": "missing \"command\""] }
        if cmd == "ping" { return ["version": ControlServer.protocolVersion, "pong": true] }
        guard let result = handler(cmd, obj) else { return ["error": "unknown command \"\(cmd)\" (try stats, ping, list-sas, initiate, terminate, rekey)"] }
        return result
    }

    func reply(_ c: Int32, _ obj: [String: Any]) {
        guard var data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]) else { return }
        data.append(10)
        StreamSocket.sendAll(c, data)
    }
}

/// The few stream-socket chores the control and metrics servers share.
enum StreamSocket {
    static func setTimeouts(_ fd: Int32, seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends all of `bytes` (never raising SIGPIPE); false when the peer went away.
    @discardableResult
    static func sendAll<C: ContiguousBytes>(_ fd: Int32, _ bytes: C) -> Bool {
        bytes.withUnsafeBytes { p in
            var off = 0
            while off < p.count {
                let n = send(fd, p.baseAddress! + off, p.count - off, Int32(MSG_NOSIGNAL))
                if n <= 0 { return false }
                off += n
            }
            return true
        }
    }

    /// Reads until `terminator` arrives, the peer stops sending, or `limit` bytes.
    static func readRequest(_ fd: Int32, limit: Int, until terminator: [UInt8]) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: limit)
        var used = 0
        while used < limit {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + used, $0.count - used, 0) }
            if n <= 0 { break }
            used += n
            let window = buf[max(0, used - n - terminator.count)..<used]
            if window.firstRange(of: terminator) != nil { break }
        }
        return Array(buf[0..<used])
    }

    /// Accepts connections until `running` goes false, polling so a stop is noticed.
    static func acceptLoop(_ fd: Int32, running: borrowing Atomic<Bool>, serve: (Int32) -> Void) {
        while running.load(ordering: .relaxed) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 250) <= 0 { continue }
            let c = sluice_accept(fd)
            if c >= 0 { serve(c) }
        }
    }
}

public struct ControlError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Client side, used by `sluice stats`.
public enum ControlClient {
    /// `arguments`: extra string fields of the request ({"child": "net"}).
    public static func request(path: String, command: String, arguments: [String: String] = [:], timeoutSeconds: Int = 3) throws -> Data {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno(errno) }
        defer { close(fd) }
        StreamSocket.setTimeouts(fd, seconds: timeoutSeconds)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw ControlError("socket path too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        let r = withUnsafePointer(to: &addr) { ap in
            ap.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else { throw Errno(errno) }
        var request: [String: Any] = arguments
        request["version"] = ControlServer.protocolVersion
        request["command"] = command
        var line = (try? JSONSerialization.data(withJSONObject: request, options: [.sortedKeys])) ?? Data()
        line.append(10)
        StreamSocket.sendAll(fd, line)
        var out = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { throw Errno(errno) }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
            if out.last == 10 { break }
        }
        return out
    }
}
