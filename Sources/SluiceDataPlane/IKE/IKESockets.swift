import CSluiceNetfilter
import SluiceCore
import SluiceIKE
#if canImport(Glibc)
import Glibc
#endif

/// The agent's UDP sockets: ports 500 and 4500 on each of the connections' local addresses.
/// On 4500 every IKE message carries the 4-byte non-ESP marker (RFC 3948 §2.2); ESP-in-UDP
/// to 4500 never gets here: the nftables rules queue it to the workers first.
final class IKESockets: IKETransport {
    struct Bound { let fd: Int32; let endpoint: Endpoint }
    private(set) var sockets: [Bound] = []
    private(set) var sendErrors: UInt64 = 0
    var onSendError: ((Endpoint, Errno) -> Void)?

    init(addresses: [IPAddress]) throws {
        for a in Set(addresses) {
            for port: UInt16 in [500, 4500] {
                let bytes = a.bytes
                let fd = bytes.withUnsafeBufferPointer { sluice_udp_open($0.baseAddress, $0.count, port) }
                guard fd >= 0 else {
                    close()
                    throw DaemonError("cannot bind the IKE socket \(Endpoint(a, port)): \(Errno(-fd))")
                }
                sockets.append(Bound(fd: fd, endpoint: Endpoint(a, port)))
            }
        }
    }

    func close() {
        for s in sockets { Glibc.close(s.fd) }
        sockets = []
    }

    func send(_ datagram: [UInt8], from: Endpoint, to: Endpoint) {
        guard let s = sockets.first(where: { $0.endpoint == from }) ?? sockets.first(where: { $0.endpoint.address == from.address && $0.endpoint.port == 500 }) else {
            sendErrors += 1
            return
        }
        sendPayload(s.endpoint.port == 4500 ? [0, 0, 0, 0] + datagram : datagram, on: s, to: to)
    }

    func sendKeepalive(from: Endpoint, to: Endpoint) {
        guard let s = sockets.first(where: { $0.endpoint == from && from.port == 4500 }) else {
            sendErrors += 1
            return
        }
        sendPayload([Self.keepalive], on: s, to: to)
    }

    /// RFC 3948 §2.3: a NAT keepalive is this one byte.
    static let keepalive: UInt8 = 0xFF

    private func sendPayload(_ payload: [UInt8], on s: Bound, to: Endpoint) {
        let addr = to.address.bytes
        let n = addr.withUnsafeBufferPointer { a in
            payload.withUnsafeBufferPointer { p in sluice_udp_send(s.fd, a.baseAddress, a.count, to.port, p.baseAddress, p.count) }
        }
        if n < 0 {
            sendErrors += 1
            onSendError?(to, Errno(Int32(-n)))
        }
    }

    struct Received {
        var bytes: [UInt8]; var from: Endpoint; var to: Endpoint
        /// A NAT keepalive on 4500 (`bytes` empty): counted, never parsed as IKE.
        var isKeepalive = false
    }

    /// Waits up to `timeoutMs` (also for `wake`), then reads what every socket has.
    func receive(timeoutMs: Int32, wake: Int32) -> [Received] {
        var fds = sockets.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        fds.append(pollfd(fd: wake, events: Int16(POLLIN), revents: 0))
        let r = poll(&fds, nfds_t(fds.count), timeoutMs)
        guard r > 0 else { return [] }
        if fds.last!.revents != 0 {
            var sink = [UInt8](repeating: 0, count: 64)
            while read(wake, &sink, 64) > 0 {}
        }
        var out: [Received] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        for (i, s) in sockets.enumerated() where fds[i].revents != 0 {
            // At most a handful per socket and round, so one busy peer cannot starve the timers.
            for _ in 0..<64 {
                var addr = [UInt8](repeating: 0, count: 16)
                var alen = 0
                var port: UInt16 = 0
                let n = buf.withUnsafeMutableBufferPointer { b in
                    addr.withUnsafeMutableBufferPointer { a in sluice_udp_recv(s.fd, b.baseAddress, b.count, a.baseAddress, &alen, &port) }
                }
                if n == -Int(EAGAIN) || n == -Int(EWOULDBLOCK) { break }
                guard n >= 0, let from = IPAddress(bytes: addr[0..<alen]) else { continue }
                guard let r = Self.unwrap(Array(buf[0..<n]), from: Endpoint(from, port), to: s.endpoint) else { continue }
                out.append(r)
            }
        }
        return out
    }

    /// A datagram as the agent takes it: on 4500, IKE without its zero marker (RFC 3948 §2.2)
    /// or a keepalive; nil for anything else there (stray ESP). On 500, as it came.
    static func unwrap(_ bytes: [UInt8], from: Endpoint, to: Endpoint) -> Received? {
        guard to.port == 4500 else { return Received(bytes: bytes, from: from, to: to) }
        if bytes == [keepalive] { return Received(bytes: [], from: from, to: to, isKeepalive: true) }
        guard bytes.count >= 4, bytes[0..<4] == [0, 0, 0, 0] else { return nil }
        return Received(bytes: Array(bytes[4...]), from: from, to: to)
    }
}
