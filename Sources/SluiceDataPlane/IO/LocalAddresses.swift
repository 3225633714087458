import Foundation
import SluiceCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// This host's addresses (in Sluice's network namespace), re-read every second.
/// Workers merge decrypted TCP segments only for these destinations: a merged packet
/// is delivered here, never forwarded (it would not fit any link's MTU).
public final class LocalAddresses: Sendable {
    private let addresses = Mutex<Set<IPAddress>>([])
    private let running = Atomic<Bool>(true)

    public init() { refresh() }

    public var current: Set<IPAddress> { addresses.withLock { $0 } }

    public func refresh() {
        let now = LocalAddresses.read()
        addresses.withLock { $0 = now }
    }

    /// Refreshes in the background until `stop`.
    public func start() {
        let t = Thread { [self] in
            while running.load(ordering: .relaxed) {
                usleep(1_000_000)
                refresh()
            }
        }
        t.name = "sluice-addrs"
        t.start()
    }

    public func stop() { running.store(false, ordering: .relaxed) }

    static func read() -> Set<IPAddress> {
        var out: Set<IPAddress> = []
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { return out }
        defer { freeifaddrs(list) }
        var p = list
        while let ifa = p {
            defer { p = ifa.pointee.ifa_next }
            guard let sa = ifa.pointee.ifa_addr else { continue }
            switch Int32(sa.pointee.sa_family) {
            case AF_INET:
                let addr = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    withUnsafeBytes(of: sin.pointee.sin_addr) { IPAddress(reading: $0, at: 0, family: .v4) }
                }
                out.insert(addr)
            case AF_INET6:
                let addr = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    withUnsafeBytes(of: sin6.pointee.sin6_addr) { IPAddress(reading: $0, at: 0, family: .v6) }
                }
                out.insert(addr)
            default:
                continue
            }
        }
        return out
    }
}
