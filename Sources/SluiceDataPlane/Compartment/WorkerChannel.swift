import SluiceCore
#if canImport(Glibc)
import Glibc
#endif

/// One end of a supervisor-worker channel: a `SOCK_SEQPACKET` socketpair, so the kernel
/// keeps each message whole and a dead peer reads as end of file (doc/compartments.md).
///
/// Concurrency: one thread sends and one receives at a time; `close` after both are done.
public final class WorkerChannel: @unchecked Sendable {
    public let fd: Int32
    /// A database whose parts are still coming (receiving side).
    var assembler = DatabaseAssembler()

    public enum Received: Equatable {
        case message(WorkerMessage)
        /// Nothing arrived within the timeout.
        case timedOut
        /// The other end closed (the worker exited or the supervisor went away).
        case closed
    }

    public enum ChannelError: Error, Equatable, CustomStringConvertible {
        case system(String, Errno)
        /// What arrived is no valid message: from a worker, a worker fault.
        case protocolError(WorkerProtocolError)
        case oversized(Int)
        public var description: String {
            switch self {
            case let .system(what, e): return "worker channel: \(what): \(e)"
            case let .protocolError(e): return "worker channel: \(e)"
            case let .oversized(n): return "worker channel: a \(n)-byte frame, more than \(WorkerProtocol.maxFrame)"
            }
        }
    }

    public init(fd: Int32) { self.fd = fd }

    /// A connected pair: the supervisor keeps one end, the worker inherits the other.
    public static func pair() throws(ChannelError) -> (WorkerChannel, WorkerChannel) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw .system("socketpair", Errno(errno))
        }
        return (WorkerChannel(fd: fds[0]), WorkerChannel(fd: fds[1]))
    }

    /// Sends one message, in its frames (the encoded bytes, keys included, are wiped after).
    public func send(_ m: WorkerMessage) throws(ChannelError) {
        for f in WorkerProtocol.encode(m) { try sendRaw(f) }
    }

    /// Sends bytes as one frame as they are (tests send malformed ones this way).
    public func sendRaw(_ bytes: [UInt8]) throws(ChannelError) {
        defer { SecretBytes(bytes).wipe() }
        guard bytes.count <= WorkerProtocol.maxFrame else { throw .oversized(bytes.count) }
        while true {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n == bytes.count { return }
            if n < 0 && errno == EINTR { continue }
            throw .system("send", Errno(n < 0 ? errno : EMSGSIZE))
        }
    }

    /// Waits up to `timeout` seconds (nil: for ever) for one message: one frame, or all the
    /// frames of a database.
    public func receive(timeout: Double?) throws(ChannelError) -> Received {
        let deadline = timeout.map { Double(monotonicNanos()) / 1e9 + $0 }
        while true {
            let left = deadline.map { max(0, $0 - Double(monotonicNanos()) / 1e9) }
            switch try receiveFrame(timeout: left) {
            case .timedOut: return .timedOut
            case .closed: return .closed
            case let .frame(f):
                do { if let m = try assembler.take(f) { return .message(m) } } catch { throw .protocolError(error) }
            }
        }
    }

    enum FrameReceived { case frame(WorkerFrame), timedOut, closed }

    func receiveFrame(timeout: Double?) throws(ChannelError) -> FrameReceived {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ms = timeout.map { Int32(max(0, min($0 * 1000, Double(Int32.max)))) } ?? -1
        while true {
            let r = poll(&p, 1, ms)
            if r > 0 { break }
            if r == 0 { return .timedOut }
            if errno != EINTR { throw .system("poll", Errno(errno)) }
        }
        // The message's true size first (MSG_TRUNC with a datagram socket), so a huge one is
        // refused before anything is allocated for it.
        var size = 0
        while true {
            size = recv(fd, nil, 0, Int32(MSG_PEEK) | Int32(MSG_TRUNC) | Int32(MSG_DONTWAIT))
            if size >= 0 || errno != EINTR { break }
        }
        if size < 0 {
            if errno == EAGAIN { return .timedOut }
            throw .system("recv", Errno(errno))
        }
        if size == 0 {
            // End of file (the peer closed: poll says hang-up), or an empty message, which is no message.
            if p.revents & Int16(POLLHUP) != 0 { return .closed }
            var probe: UInt8 = 0
            _ = recv(fd, &probe, 1, Int32(MSG_DONTWAIT))
            throw .protocolError(WorkerProtocolError(message: "worker", field: "header", offset: 0, problem: "an empty message"))
        }
        guard size <= WorkerProtocol.maxFrame else {
            _ = recv(fd, nil, 0, Int32(MSG_DONTWAIT) | Int32(MSG_TRUNC))   // take it off the socket
            throw .oversized(size)
        }
        var buffer = [UInt8](repeating: 0, count: size)
        defer { SecretBytes(buffer).wipe() }
        var n = 0
        while true {
            n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n >= 0 || errno != EINTR { break }
        }
        guard n == size else { throw .system("recv", Errno(n < 0 ? errno : EIO)) }
        do { return .frame(try WorkerProtocol.decode(buffer)) } catch { throw .protocolError(error) }
    }

    public func close() { _ = Glibc.close(fd) }
}
