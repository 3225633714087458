// Plain digests for protocol fields that are not secrets (IKEv2 NAT detection, RFC 7296
// §2.23, is SHA-1 by definition). Not for signatures or MACs.
#ifndef SLUICE_DIGEST_H
#define SLUICE_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// SHA-1 of `len` bytes into `out` (20 bytes). Returns 1 or 0.
int sluice_sha1(const uint8_t *data, size_t len, uint8_t out[20]);

#ifdef __cplusplus
}
#endif
#endif
