import CSluiceCrypto

/// HMAC with one key (SHA-256/384/512), the primitive under the IKE PRFs and SK integrity.
/// OpenSSL holds the key; it is cleansed when this is freed. Not thread-safe: each user
/// keeps its own.
final class KeyedHMAC {
    private let handle: OpaquePointer
    /// Full MAC length in bytes.
    let size: Int

    /// nil when OpenSSL cannot set it up (never for these digests unless memory runs out).
    init?(_ digest: sluice_digest, key: ArraySlice<UInt8>) {
        guard let h = key.withUnsafeBufferPointer({ sluice_hmac_new(digest, $0.baseAddress, $0.count) }) else { return nil }
        handle = h
        size = sluice_hmac_size(h)
    }

    deinit { sluice_hmac_free(handle) }

    /// MAC over the concatenation of `parts`, cut to `length` bytes (the full MAC when nil).
    func mac(_ parts: [ArraySlice<UInt8>], length: Int? = nil) -> [UInt8]? {
        let n = length ?? size
        guard n > 0, n <= size, sluice_hmac_begin(handle) == 1 else { return nil }
        for part in parts {
            let ok = part.withUnsafeBufferPointer { sluice_hmac_update(handle, $0.baseAddress, $0.count) }
            guard ok == 1 else { return nil }
        }
        var out = [UInt8](repeating: 0, count: n)
        let ok = out.withUnsafeMutableBufferPointer { sluice_hmac_finish(handle, $0.baseAddress, n) }
        return ok == 1 ? out : nil
    }
}

extension PRFAlgorithm {
    var digest: sluice_digest {
        switch self {
        case .hmacSHA256: return SLUICE_DIGEST_SHA256
        case .hmacSHA384: return SLUICE_DIGEST_SHA384
        case .hmacSHA512: return SLUICE_DIGEST_SHA512
        }
    }
}

extension IntegrityAlgorithm {
    var digest: sluice_digest {
        switch self {
        case .hmacSHA256_128: return SLUICE_DIGEST_SHA256
        case .hmacSHA384_192: return SLUICE_DIGEST_SHA384
        case .hmacSHA512_256: return SLUICE_DIGEST_SHA512
        }
    }
}

/// Zeroes an array's storage where it is, shared or not (OPENSSL_cleanse, which the optimizer
/// keeps), for key material about to be dropped. Every holder of that buffer sees zeros.
func wipeBytes(_ a: [UInt8]) {
    a.withUnsafeBufferPointer { p in
        if let base = p.baseAddress, p.count > 0 { sluice_wipe(UnsafeMutableRawPointer(mutating: base), p.count) }
    }
}
