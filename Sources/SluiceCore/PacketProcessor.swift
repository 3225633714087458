/// What a worker passes along with each packet.
public struct ProcessingContext: Sendable {
    /// The worker's index: selects the SA crypto lane this thread owns.
    public var lane: Int
    /// Seconds on a monotonic clock, for time lifetimes.
    public var now: UInt64
    public init(lane: Int = 0, now: UInt64 = 0) { self.lane = lane; self.now = now }
}

/// What to do with a packet after processing.
public enum Outcome: Equatable, Sendable {
    /// Let it pass unchanged (BYPASS, or not ours).
    case unchanged
    /// The buffer now holds the ESP packet: accept it with the new bytes.
    case sealed
    /// The buffer now holds the decrypted packet: accept it with the new bytes.
    case opened
    /// The packet was refused and the buffer now holds an ICMP error for its sender:
    /// accept the new bytes, and count the refusal under `reason`.
    case icmpError(DropReason)
    case drop(DropReason)
}

/// The whole per-packet decision: inbound ESP is opened, everything else goes through
/// the outbound SPD. Pure: no syscalls, so it is tested in-process.
public enum PacketProcessor {
    public static func process(_ buf: inout PacketBuffer, database db: SecurityDatabase,
                               context: ProcessingContext) -> Outcome {
        do {
            let h = try buf.withBytes { (p) throws(DropReason) in try IPHeaderInfo.parse(p) }
            if isInboundESP(h, buf: buf, database: db) {
                switch try ESP.open(&buf, header: h, database: db, context: context) {
                case .opened: return .opened
                case .notESP: return .unchanged
                }
            }
            let key = buf.withBytes { FlowKey(header: h, packet: $0) }
            guard let policy = db.lookupOutbound(key) else {
                return db.defaultOutbound == .bypass ? .unchanged : .drop(.noPolicy)
            }
            switch policy.policy.action {
            case .bypass: return .unchanged
            case .discard: return .drop(.policyDiscard)
            case .protect:
                guard let sa = policy.sa else { return .drop(.noPolicy) }
                switch try ESP.seal(&buf, header: h, sa: sa, context: context) {
                case .sealed: return .sealed
                case let .tooBig(innerMTU):
                    if try ICMPError.makePacketTooBig(&buf, header: h, mtu: innerMTU, source: sa.config.local) {
                        return .icmpError(.tooBig)
                    }
                    return .drop(.tooBig)
                }
            }
        } catch {
            return .drop(error)
        }
    }

    /// ESP (or ESP-in-UDP on 4500) addressed to one of our inbound SAs' local addresses.
    static func isInboundESP(_ h: IPHeaderInfo, buf: PacketBuffer, database db: SecurityDatabase) -> Bool {
        guard db.localAddresses.contains(h.dst) else { return false }
        if h.proto == IPProto.esp { return true }
        if h.proto == IPProto.udp, let port = try? buf.u16(h.headerLength + 2) { return port == ESP.natTPort }
        return false
    }
}
