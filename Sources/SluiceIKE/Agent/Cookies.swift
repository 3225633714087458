import CSluiceCrypto
import SluiceCore

/// Stateless cookies (RFC 7296 §2.6): Cookie = VersionIDofSecret | HMAC-SHA-256(secret, Ni | IPi | SPIi).
/// The secret changes every two minutes; the previous one stays valid, so a cookie handed out just
/// before a change still works.
struct CookieJar {
    private var secrets: [(version: UInt8, key: [UInt8])]
    private var changedAt: Double = 0
    static let lifetime: Double = 120

    init() { secrets = [(1, IKEAgent.randomBytes(32))] }

    mutating func rotate(now: Double) {
        if changedAt == 0 { changedAt = now }
        guard now - changedAt >= Self.lifetime else { return }
        changedAt = now
        let next = secrets[0].version &+ 1
        secrets = [(next, IKEAgent.randomBytes(32)), secrets[0]]
    }

    func make(nonce: [UInt8], address: IPAddress, spiI: UInt64, version: UInt8? = nil) -> [UInt8]? {
        guard let s = secrets.first(where: { version == nil || $0.version == version }),
              let mac = KeyedHMAC(SLUICE_DIGEST_SHA256, key: s.key[...])?.mac([nonce[...], address.bytes[...], IKEAgent.spiBytes(spiI)[...]]) else { return nil }
        return [s.version] + mac
    }

    func verify(_ cookie: [UInt8], nonce: [UInt8], address: IPAddress, spiI: UInt64) -> Bool {
        guard cookie.count == 33, let expected = make(nonce: nonce, address: address, spiI: spiI, version: cookie[0]) else { return false }
        return IKEAgent.constantTimeEqual(expected, cookie)
    }
}
