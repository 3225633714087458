/// Every reason Sluice refuses a packet. Each case is one counter; the raw value is the
/// counter's label in stats and metrics, so renaming one is a user-visible change.
public enum DropReason: String, CaseIterable, Sendable, Error, CustomStringConvertible {
    case truncated = "truncated"                 // shorter than its headers say
    case malformedIP = "malformed_ip"            // bad version, header length or total length
    case fragment = "fragment"                   // ESP still fragmented (the kernel reassembles first)
    case unknownSPI = "unknown_spi"              // no inbound SA for this SPI and destination
    case replay = "replay"                       // seen already, or left of the anti-replay window
    case replayAfterRestart = "replay_restart"   // at or below the durable replay mark after a restart, above the last
                                                 // number known accepted: maybe new, refused (the price of the mark)
    case icvMismatch = "icv_mismatch"            // authentication failed
    case badLength = "bad_length"                // ciphertext not a multiple of the block size
    case badPadding = "bad_padding"              // pad length too long or pad bytes not 1, 2, 3...
    case badInner = "bad_inner"                  // decrypted payload is not what the SA carries
    case dummyPacket = "dummy_packet"            // Next Header 59: TFC dummy, dropped by design
    case policyMismatch = "policy_mismatch"      // inner packet outside the SA's inbound policy
    case seqExhausted = "seq_exhausted"          // sequence space used up: the SA must be rekeyed
    case saExpired = "sa_expired"                // hard lifetime reached
    case tooBig = "too_big"                      // DF packet over the path MTU after ESP (an ICMP error is sent where one can be)
    case policyDiscard = "policy_discard"        // a DISCARD policy matched
    case noPolicy = "no_policy"                  // nothing matched and the default is discard
    case noSA = "no_sa"                          // a PROTECT policy matched but has no live SA (never sent in clear)
    case holdFull = "hold_full"                  // waiting for an SA being negotiated, but its hold queue was full
    case cryptoError = "crypto_error"            // the crypto library failed (not an ICV mismatch)
    case stateError = "state_error"              // sequence reservation could not be made durable
    case sequenceFault = "sequence_fault"        // the shared sequence counter went back (memory corrupted): the SA stops sealing
    case natKeepalive = "nat_keepalive"          // RFC 3948 keepalive: consumed here
    case kernelTruncated = "kernel_truncated"    // the queue handed us a partial copy
    case injectFailed = "inject_failed"          // the kernel refused a packet sent on a raw socket
    case unsupported = "unsupported"             // a family or mode this SA cannot carry
    // Decided by Sluice's nftables rules in the kernel, read back from their counters:
    case clearProtected = "clear_protected"      // arrived in clear although an inbound PROTECT policy covers it
    case unprocessed = "unprocessed"             // carried a queue mark but no worker took it (guard chain)

    public var description: String { rawValue }

    /// Stable dense index for counter arrays.
    public var index: Int { DropReason.indexTable[self]! }
    private static let indexTable: [DropReason: Int] = {
        var t: [DropReason: Int] = [:]
        for (i, r) in DropReason.allCases.enumerated() { t[r] = i }
        return t
    }()
}
