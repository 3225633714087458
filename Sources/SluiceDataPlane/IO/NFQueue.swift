import CSluiceNetfilter
#if canImport(Glibc)
import Glibc
#endif

/// One NFQUEUE queue bound to its own netlink socket, and optionally its GSO twin on the
/// same socket (a socket may own several queues; each message names its queue). Owned
/// by exactly one worker thread.
public final class NFQueue {
    public let queue: UInt16
    public let gsoQueue: UInt16?
    public let fd: Int32
    private var seq: UInt32 = 1
    private var scratch = [UInt8](repeating: 0, count: 8192)

    public struct Options: Sendable {
        public var receiveBuffer: Int = 8 << 20
        public var maxLength: UInt32 = 4096
        public var failOpen: Bool = false
        public init() {}
    }

    /// Opens the socket, binds the queue in copy-packet mode with the full range and no
    /// GSO (so the kernel segments and finishes checksums before we see a packet), and
    /// `gsoQueue`, if given, with NFQA_CFG_F_GSO: packets arrive whole, checksums unfinished.
    public init(queue: UInt16, gsoQueue: UInt16? = nil, options: Options) throws {
        self.queue = queue
        self.gsoQueue = gsoQueue
        var portid: UInt32 = 0
        let r = sluice_nfq_socket_open(Int32(options.receiveBuffer), &portid)
        guard r >= 0 else { throw NFQueueError.socket(Errno(-r)) }
        fd = r
        do {
            let flags = options.failOpen ? UInt32(SLUICE_NFQ_FLAG_FAIL_OPEN) : 0
            for q in bound {
                try command(q) { sluice_nfq_build_cmd($0, $1, q, UInt8(SLUICE_NFQ_CMD_BIND), $2) }
                let extra = q == gsoQueue ? UInt32(SLUICE_NFQ_FLAG_GSO) : 0
                try command(q) { sluice_nfq_build_params($0, $1, q, 0xFFFF, options.maxLength, flags | extra, $2) }
            }
            _ = sluice_socket_set_rcvtimeo(fd, 250)
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Every queue this socket owns.
    var bound: [UInt16] { [queue] + (gsoQueue.map { [$0] } ?? []) }

    /// Sends one config message and waits for its ack.
    private func command(_ queue: UInt16, _ build: (UnsafeMutableRawPointer, Int, UInt32) -> Int32) throws {
        seq &+= 1
        let mySeq = seq
        let len = scratch.withUnsafeMutableBytes { build($0.baseAddress!, $0.count, mySeq) }
        guard len > 0 else { throw NFQueueError.config(queue, Errno(EINVAL)) }
        let sent = scratch.withUnsafeBytes { sluice_send(fd, $0.baseAddress, Int(len)) }
        guard sent >= 0 else { throw NFQueueError.config(queue, Errno(Int32(-sent))) }
        // The ack (an NLMSG_ERROR with error 0) or the refusal.
        var reply = [UInt8](repeating: 0, count: 8192)
        for _ in 0..<8 {
            let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw NFQueueError.config(queue, Errno(errno))
            }
            var msgs = [sluice_nfq_message](repeating: sluice_nfq_message(), count: 4)
            let count = reply.withUnsafeBytes { p in msgs.withUnsafeMutableBufferPointer { sluice_nfq_parse(p.baseAddress, n, $0.baseAddress, 4) } }
            for m in msgs.prefix(Int(max(0, count))) where m.kind == 2 {
                if m.error != 0 { throw NFQueueError.config(queue, Errno(m.error)) }
                return
            }
        }
        throw NFQueueError.config(queue, Errno(ETIMEDOUT))
    }

    /// Unbinds the queues; the kernel drops what is still waiting (fail closed).
    public func unbind() {
        for q in bound {
            try? command(q) { sluice_nfq_build_cmd($0, $1, q, UInt8(SLUICE_NFQ_CMD_UNBIND), $2) }
        }
    }
}

public enum NFQueueError: Error, CustomStringConvertible {
    case socket(Errno)
    case config(UInt16, Errno)
    public var description: String {
        switch self {
        case let .socket(e): return "cannot open a netfilter netlink socket: \(e) (root or CAP_NET_ADMIN needed)"
        case let .config(q, e):
            let hint = e.code == EBUSY ? " (another process is bound to this queue)" : e.code == EPERM ? " (needs CAP_NET_ADMIN)" : ""
            return "cannot bind NFQUEUE queue \(q): \(e)\(hint)"
        }
    }
}
