/// The first payload of each kind in a message's chain, as the exchanges read them.
extension Array where Element == Payload {
    var sa: [WireProposal]? { lazy.compactMap { if case let .sa(p) = $0 { return p } else { return nil } }.first }
    var ke: (group: UInt16, data: [UInt8])? { lazy.compactMap { if case let .ke(g, d) = $0 { return (g, d) } else { return nil } }.first }
    var nonce: [UInt8]? { lazy.compactMap { if case let .nonce(n) = $0 { return n } else { return nil } }.first }
    var idi: IDPayload? { lazy.compactMap { if case let .idi(i) = $0 { return i } else { return nil } }.first }
    var idr: IDPayload? { lazy.compactMap { if case let .idr(i) = $0 { return i } else { return nil } }.first }
    var auth: (method: UInt8, data: [UInt8])? { lazy.compactMap { if case let .auth(m, d) = $0 { return (m, d) } else { return nil } }.first }
    var tsi: [WireTrafficSelector]? { lazy.compactMap { if case let .tsi(t) = $0 { return t } else { return nil } }.first }
    var tsr: [WireTrafficSelector]? { lazy.compactMap { if case let .tsr(t) = $0 { return t } else { return nil } }.first }
    var notifies: [NotifyPayload] { compactMap { if case let .notify(n) = $0 { return n } else { return nil } } }
}
