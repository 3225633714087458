/// NAT keepalives (RFC 3948 §2.3): behind a NAT, the mapping that lets the peer reach our
/// port 4500 expires when nothing goes out for a while. strongSwan sends one 0xFF byte
/// after `keep_alive` seconds (20 by default) of silence towards the peer; so do we.
extension IKEAgent {
    func keepNATMappingOpen(_ s: IKESession, now: Double) {
        guard keepAlive > 0, s.state == .established, s.localBehindNAT, s.local.port == 4500 else { return }
        // ESP sent on a child's outbound SA refreshes the mapping as well as IKE does.
        var seen: [String: UInt64] = [:]
        for c in s.children {
            let name = c.install.outbound.name
            guard let packets = backend.counters(sa: name)?.packets else { continue }
            if let before = s.outboundPacketsSeen[name], packets != before { s.lastSent = now }
            seen[name] = packets
        }
        s.outboundPacketsSeen = seen
        guard now - s.lastSent >= keepAlive else { return }
        transport.sendKeepalive(from: s.local, to: s.remote)
        counters.keepalivesSent += 1
        s.lastSent = now
    }

    /// A keepalive reached the IKE socket (no ESP-in-UDP SA took it first): counted, nothing else.
    public func keepaliveReceived() { counters.keepalivesReceived += 1 }
}
