import SluiceCore

// IKE fragmentation (RFC 7383). IKE_AUTH with certificates outgrows one datagram, and the IP
// fragments it would otherwise travel in are what firewalls and NATs drop first. So a message
// too large for `fragment_size` goes as SKF fragments, each encrypted and authenticated on its
// own; the receiver checks every fragment before it keeps it, and acts only on the whole.

/// Whether a connection announces fragmentation and sends fragments (swanctl's `fragmentation`).
public enum IKEFragmentation: String, Sendable {
    /// Announce it, and fragment oversized messages when the peer announced it too (the default).
    case yes
    /// Announce it and reassemble the peer's fragments, but send our messages whole.
    case accept
    /// Neither announce nor accept it.
    case no
}

extension IKESession {
    /// Both ends announced fragmentation in IKE_SA_INIT (§2.3): SKF is accepted.
    var takesFragments: Bool { peerFragmentation }
    /// ...and we cut our own oversized messages.
    var sendsFragments: Bool { peerFragmentation && connection.fragmentation == .yes }

    /// The largest IKE message (header included) that fits a `fragmentSize`-byte IP datagram
    /// from our address: less the IP and UDP headers and, on port 4500, the non-ESP marker.
    /// 0 takes the family's minimum MTU (576 for IPv4, 1280 for IPv6), as strongSwan does.
    func messageLimit(fragmentSize: Int) -> Int {
        let v4 = local.address.family == .v4
        let ipSize = fragmentSize > 0 ? fragmentSize : (v4 ? 576 : 1280)
        return ipSize - (v4 ? 20 : 40) - 8 - (local.port == 500 ? 0 : 4)
    }

    /// Seals a message protected by this IKE SA: one datagram, or its fragments (§2.5) when
    /// the peer takes them and the whole would not fit `fragmentSize`.
    func sealMessage(_ header: IKEHeader, _ inner: [Payload], fragmentSize: Int) throws -> [[UInt8]] {
        guard let c = sendCipher else { throw AgentError.internalState("no keys yet") }
        let chain = Payload.encodeChain(inner)
        let limit = messageLimit(fragmentSize: fragmentSize)
        let whole = IKEHeader.size + PayloadChain.genericHeaderSize + c.sealedLength(chain.bytes.count)
        guard sendsFragments, whole > limit else { return [try seal(header, inner)] }
        // Each fragment: header, SKF header with its number and total, then the sealed piece.
        let overhead = IKEHeader.size + PayloadChain.genericHeaderSize + 4
        var room = limit - overhead - (c.sealedLength(0) - 1)
        while room > 0, overhead + c.sealedLength(room) > limit { room -= 1 }
        guard room > 0 else { throw AgentError.internalState("fragment_size leaves no room for an IKE fragment") }
        let count = (chain.bytes.count + room - 1) / room
        guard count <= Int(FragmentReassembly.maxFragments) else {
            throw AgentError.internalState("message of \(chain.bytes.count) bytes needs \(count) fragments")
        }
        var out: [[UInt8]] = []
        for i in 0..<count {
            let piece = Array(chain.bytes[(i * room)..<min(chain.bytes.count, (i + 1) * room)])
            out.append(try IKEMessage.encodeEncryptedFragment(header: header, number: UInt16(i + 1), total: UInt16(count),
                                                              firstInner: chain.first, plaintext: piece,
                                                              sealedLength: { c.sealedLength($0) },
                                                              seal: { try c.seal(prefix: $0, plaintext: $1) }))
        }
        return out
    }
}

/// The authenticated fragments of one message (§2.6), until all of them are in. Bounded: at
/// most `maxFragments` pieces and `maxBytes` of plaintext, or the whole is given up.
struct FragmentReassembly {
    static let maxFragments: UInt16 = 128

    let messageID: UInt32
    private(set) var total: UInt16
    private var pieces: [UInt16: [UInt8]] = [:]
    private(set) var bytes = 0
    /// From fragment 1: the type of the first inner payload, and the datagram itself (a
    /// retransmitted request is known by its first fragment, §2.6.1).
    private(set) var firstInner: UInt8 = PayloadType.none
    private(set) var firstDatagram: [UInt8] = []

    init(messageID: UInt32, total: UInt16) { self.messageID = messageID; self.total = total }

    enum Outcome: Equatable {
        case stored
        /// Dropped, the rest kept: a fragment already in, or of an older, coarser cut.
        case ignored(String)
        /// Dropped with everything stored: the message is larger than allowed.
        case refused(String)
        /// The message's inner payload chain, the fragments joined in order.
        case complete([UInt8])
    }

    /// Adds one authenticated fragment.
    mutating func add(number: UInt16, total: UInt16, firstInner: UInt8, plaintext: [UInt8], datagram: [UInt8],
                      maxBytes: Int) -> Outcome {
        guard total <= Self.maxFragments else { return .refused("\(total) fragments, more than \(Self.maxFragments)") }
        // A larger total is the sender cutting smaller pieces after losses: start over (§2.6).
        if total > self.total { pieces = [:]; bytes = 0; self.total = total; firstDatagram = [] }
        guard total == self.total else { return .ignored("fragment of an earlier cut into \(total), now \(self.total)") }
        guard pieces[number] == nil else { return .ignored("fragment \(number) of \(total) again") }
        guard bytes + plaintext.count <= maxBytes else {
            return .refused("more than \(maxBytes) bytes reassembled (max_packet)")
        }
        pieces[number] = plaintext
        bytes += plaintext.count
        if number == 1 { self.firstInner = firstInner; firstDatagram = datagram }
        guard pieces.count == Int(total) else { return .stored }
        var joined: [UInt8] = []
        joined.reserveCapacity(bytes)
        for n in 1...total { joined += pieces[n] ?? [] }
        return .complete(joined)
    }
}

extension IKEAgent {
    /// An SKF message on an IKE SA: checked against the message IDs we take now, authenticated,
    /// stored; the whole message goes on as a request or a response once its last fragment is in.
    func receiveFragment(_ s: IKESession, _ m: IKEMessage, _ bytes: [UInt8], from: Endpoint, to: Endpoint, now: Double) {
        guard case let .encryptedFragment(number, total, firstInner, body)? = m.payloads.last else { return }
        counters.fragmentsReceived += 1
        let h = m.header
        func drop(_ why: String) {
            counters.fragmentsDropped += 1
            log(AgentLog(.debug, "\(s.label): fragment \(number)/\(total) of message \(h.messageID) from \(from) dropped: \(why)"))
        }
        guard s.takesFragments, s.receiveCipher != nil else { drop("fragmentation was not negotiated"); return }
        if h.isResponse {
            guard let o = s.outstanding, o.id == h.messageID else { counters.unexpected += 1; return }
        } else {
            if let cached = s.cachedResponse, cached.id == h.messageID {
                // §2.6.1: fragment 1 of the request we answered brings the answer again; the others nothing.
                if number == 1 { resendCachedResponse(s, cached, request: bytes, to: from, now: now) }
                return
            }
            guard h.messageID == s.expectedPeerRequestID else { counters.unexpected += 1; return }
        }
        guard let c = s.receiveCipher, let plain = try? c.open(prefix: Array(bytes[0..<(bytes.count - body.count)]), body: body) else {
            counters.integrityFailures += 1
            log(AgentLog(.debug, "\(s.label): fragment \(number)/\(total) of message \(h.messageID) from \(from) does not verify; dropped"))
            return
        }
        let key = h.isResponse
        var r = s.reassembly[key].flatMap { $0.messageID == h.messageID ? $0 : nil } ?? FragmentReassembly(messageID: h.messageID, total: total)
        switch r.add(number: number, total: total, firstInner: firstInner, plaintext: plain, datagram: bytes, maxBytes: maxPacket) {
        case .stored:
            s.reassembly[key] = r
        case let .ignored(why):
            s.reassembly[key] = r
            drop(why)
        case let .refused(why):
            s.reassembly[key] = nil
            drop(why)
            log(AgentLog(.warning, "\(s.label): message \(h.messageID) from \(from) given up: \(why)"))
        case let .complete(chain):
            s.reassembly[key] = nil
            counters.fragmentedMessages += 1
            let opened: IKESession.Opened
            do { opened = .payloads(try Payload.decodeChain(first: r.firstInner, chain, baseOffset: 0)) } catch { opened = .malformed(error) }
            if h.isResponse { handleOpenedResponse(s, h, opened, from: from, now: now) } else {
                counters.received += 1
                handleOpenedRequest(s, h, opened, request: r.firstDatagram, from: from, to: to, now: now)
            }
        }
    }
}
