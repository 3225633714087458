// A narrow C seam over OpenSSL libcrypto (EVP). Swift never touches OpenSSL types:
// it holds opaque contexts and passes explicit pointer + length pairs.
// A context is not thread-safe; Sluice gives each worker lane its own.
#ifndef SLUICE_CRYPTO_H
#define SLUICE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SLUICE_CIPHER_AES_GCM = 1,          // key 16 or 32 bytes, 12-byte nonce, 16-byte tag
    SLUICE_CIPHER_CHACHA20_POLY1305 = 2, // key 32 bytes, 12-byte nonce, 16-byte tag
    SLUICE_CIPHER_AES_CBC = 3,          // key 16 or 32 bytes, 16-byte IV, no padding
} sluice_cipher_kind;

typedef struct sluice_cipher sluice_cipher;
typedef struct sluice_hmac sluice_hmac;

/// Returns NULL on a bad key length or an OpenSSL failure.
sluice_cipher *sluice_cipher_new(sluice_cipher_kind kind, const uint8_t *key, size_t key_len);
void sluice_cipher_free(sluice_cipher *c);

/// AEAD seal in place: `data` (len bytes) is replaced by ciphertext, `tag` gets 16 bytes.
/// Returns 1 on success, 0 on failure.
int sluice_aead_seal(sluice_cipher *c, const uint8_t nonce[12],
                     const uint8_t *aad, size_t aad_len,
                     uint8_t *data, size_t len, uint8_t tag[16]);

/// AEAD open in place. Returns 1 when the tag verifies, 0 when it does not,
/// -1 on an internal failure. On 0/-1 the contents of `data` are unspecified.
int sluice_aead_open(sluice_cipher *c, const uint8_t nonce[12],
                     const uint8_t *aad, size_t aad_len,
                     uint8_t *data, size_t len, const uint8_t tag[16]);

/// AES-CBC in place without padding; len must be a multiple of 16. Returns 1 or 0.
int sluice_cbc_crypt(sluice_cipher *c, int encrypt, const uint8_t iv[16], uint8_t *data, size_t len);

/// HMAC-SHA-256 keyed once; each call computes a fresh MAC over the concatenation
/// of up to two segments (the ESP body and, for ESN, the high sequence bits).
sluice_hmac *sluice_hmac_sha256_new(const uint8_t *key, size_t key_len);
void sluice_hmac_free(sluice_hmac *h);
int sluice_hmac_sha256(sluice_hmac *h, const uint8_t *a, size_t a_len,
                       const uint8_t *b, size_t b_len, uint8_t out[32]);

/// Constant-time comparison; returns 1 when equal.
int sluice_ct_equal(const uint8_t *a, const uint8_t *b, size_t len);

/// Fills `out` from OpenSSL's CSPRNG. Returns 1 or 0.
int sluice_random_bytes(uint8_t *out, size_t len);

/// The OpenSSL the process runs with (not the headers it was built against), e.g.
/// "OpenSSL 3.0.17 1 Jul 2025". A static string.
const char *sluice_openssl_version(void);

/// Zeroes memory in a way the compiler may not elide.
void sluice_wipe(void *p, size_t len);


// ---- IKEv2 (SluiceIKE) ----

typedef enum {
    SLUICE_DIGEST_SHA256 = 1,
    SLUICE_DIGEST_SHA384 = 2,
    SLUICE_DIGEST_SHA512 = 3,
} sluice_digest;

/// HMAC keyed once with any of the SHA-2 digests (the IKE PRFs and SK integrity).
/// `key_len` may be 0 (`key` may then be NULL). Free with sluice_hmac_free.
sluice_hmac *sluice_hmac_new(sluice_digest digest, const uint8_t *key, size_t key_len);
/// Full output length of the HMAC (32, 48 or 64); 0 for NULL.
size_t sluice_hmac_size(const sluice_hmac *h);
/// Streaming MAC: begin, any number of updates, finish. `finish` writes the first
/// `out_len` bytes (at most sluice_hmac_size) of the MAC. Each returns 1 or 0.
int sluice_hmac_begin(sluice_hmac *h);
int sluice_hmac_update(sluice_hmac *h, const uint8_t *data, size_t len);
int sluice_hmac_finish(sluice_hmac *h, uint8_t *out, size_t out_len);

/// Ephemeral key exchange for the IKE KE payload (IANA group numbers).
typedef enum {
    SLUICE_KE_MODP2048 = 14,  // RFC 3526 group 14
    SLUICE_KE_MODP3072 = 15,  // RFC 3526 group 15
    SLUICE_KE_ECP256 = 19,    // RFC 5903, NIST P-256
    SLUICE_KE_ECP384 = 20,    // RFC 5903, NIST P-384
    SLUICE_KE_X25519 = 31,    // RFC 8031
} sluice_ke_group;

typedef struct sluice_ke sluice_ke;

/// KE payload length of the group (MODP: the prime's length; ECP: x|y; X25519: 32);
/// 0 for an unknown group.
size_t sluice_ke_public_len(sluice_ke_group group);
/// Shared secret length (MODP: the prime's length; ECP: x only; X25519: 32).
size_t sluice_ke_secret_len(sluice_ke_group group);
/// A fresh private key from OpenSSL's CSPRNG. NULL on failure.
sluice_ke *sluice_ke_generate(sluice_ke_group group);
/// A given private key, for known-answer tests: X25519 32 bytes, ECP the scalar
/// (32 or 48 bytes, 0 < d < n). MODP is refused. NULL on a bad key or a failure.
sluice_ke *sluice_ke_import_private(sluice_ke_group group, const uint8_t *priv, size_t len);
/// Frees the key; OpenSSL clears the private key as it frees it.
void sluice_ke_free(sluice_ke *k);
/// Writes the public value (exactly sluice_ke_public_len bytes). Returns 1 or 0.
int sluice_ke_public(const sluice_ke *k, uint8_t *out, size_t out_len);
/// Validates the peer's public value and writes the shared secret (exactly
/// sluice_ke_secret_len bytes). Returns 1 on success, 0 when the peer value is
/// invalid (wrong length, not on the curve, out of range, all-zero X25519 result),
/// -1 on an internal failure. On 0/-1 `out` is zeroed.
int sluice_ke_derive(const sluice_ke *k, const uint8_t *peer, size_t peer_len, uint8_t *out, size_t out_len);

#ifdef __cplusplus
}
#endif
// Digests for protocol fields, and certificates and signatures, in headers of their own.
#include "sluice_digest.h"
#include "sluice_pki.h"

#endif
