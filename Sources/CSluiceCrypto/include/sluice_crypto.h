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

/// Zeroes memory in a way the compiler may not elide.
void sluice_wipe(void *p, size_t len);

#ifdef __cplusplus
}
#endif
#endif
