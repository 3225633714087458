// Public-key authentication for IKEv2 (RFC 7296 §2.15, RFC 7427) through libcrypto:
// private keys and signatures (sluice_sig.c), X.509 certificates and chain verification
// (sluice_x509.c). Swift passes DER (or PEM) bytes with explicit lengths and gets DER or
// plain numbers back; the only OpenSSL object it holds is an opaque private key.
//
// Output buffers follow one convention: the function writes at most `cap` bytes to `out`
// and the full length to `*out_len`, and returns 1 when it fit, 0 when `cap` was too small
// (call again with `*out_len` bytes), -1 on bad input or a libcrypto failure.
#ifndef SLUICE_PKI_H
#define SLUICE_PKI_H

#include <stddef.h>
#include <stdint.h>

#include "sluice_crypto.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SLUICE_PK_RSA = 1,
    SLUICE_PK_EC = 2,       // bits: 256 (P-256), 384 (P-384) or 521 (P-521); other curves are refused
    SLUICE_PK_ED25519 = 3,
} sluice_pk_kind;

/// Message digests for signatures: the sluice_digest values, or this one for Ed25519,
/// which signs the message itself (RFC 8420, "identity").
#define SLUICE_DIGEST_NONE 0

/// RSA signature padding; ECDSA and Ed25519 ignore it.
typedef enum {
    SLUICE_RSA_PKCS1 = 0,
    SLUICE_RSA_PSS = 1,     // MGF1 with the message digest
} sluice_rsa_padding;

// ---- private keys and signatures (sluice_sig.c) ----

typedef struct sluice_privkey sluice_privkey;

/// Reads an unencrypted private key: PEM ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE
/// KEY"; other PEM blocks before it are skipped) or DER (PKCS#8, PKCS#1, SEC1). Never
/// prompts for a passphrase. NULL when the data holds no usable key; then `*why` is 1 for
/// an encrypted key, 2 for an unsupported key type or curve, 0 otherwise.
sluice_privkey *sluice_privkey_load(const uint8_t *data, size_t len, int *why);
/// Frees the key; OpenSSL clears the private key material as it frees it.
void sluice_privkey_free(sluice_privkey *k);
/// The key's kind and size (RSA modulus bits, EC field bits, 256 for Ed25519).
void sluice_privkey_info(const sluice_privkey *k, int *kind, int *bits);
/// Whether the DER SubjectPublicKeyInfo `spki` is this key's public half (a certificate's
/// key must be). Returns 1 or 0.
int sluice_privkey_matches(const sluice_privkey *k, const uint8_t *spki, size_t spki_len);
/// Signs `msg` with `digest` (SLUICE_DIGEST_NONE for Ed25519) and `padding` (RSA). ECDSA
/// signatures come out as DER Ecdsa-Sig-Value. The output convention above.
int sluice_sign(const sluice_privkey *k, int digest, int padding, const uint8_t *msg, size_t msg_len,
                uint8_t *out, size_t cap, size_t *out_len);

/// Kind and size of a DER SubjectPublicKeyInfo. Returns 1, or -1 when it is not a key of
/// the supported kinds.
int sluice_pubkey_info(const uint8_t *spki, size_t spki_len, int *kind, int *bits);
/// Verifies `sig` over `msg` with the DER SubjectPublicKeyInfo `spki`. For RSA-PSS,
/// `pss_salt` is the salt length in bytes. Returns 1 when the signature is valid, 0 when it
/// is not, -1 when the key or the combination (digest for the key kind) is unusable.
int sluice_verify(const uint8_t *spki, size_t spki_len, int digest, int padding, int pss_salt,
                  const uint8_t *msg, size_t msg_len, const uint8_t *sig, size_t sig_len);

// ---- certificates (sluice_x509.c) ----

/// The `index`-th (0-based) certificate in PEM text ("CERTIFICATE" blocks; others are
/// skipped) or, for data that starts with a DER SEQUENCE, the one DER certificate (index 0).
/// Writes it as DER with the output convention; returns 2 when there is no such certificate.
int sluice_cert_from_file(const uint8_t *data, size_t len, size_t index, uint8_t *out, size_t cap, size_t *out_len);

typedef enum {
    SLUICE_CERT_SUBJECT = 1,   // DER Name
    SLUICE_CERT_ISSUER = 2,    // DER Name
    SLUICE_CERT_SPKI = 3,      // DER SubjectPublicKeyInfo
} sluice_cert_field_kind;

/// One DER field of a DER certificate, with the output convention.
int sluice_cert_field(const uint8_t *der, size_t len, sluice_cert_field_kind field, uint8_t *out, size_t cap, size_t *out_len);

typedef enum {
    SLUICE_SAN_OTHER = 0,      // a name type Sluice does not match identities against
    SLUICE_SAN_DNS = 1,        // IA5String
    SLUICE_SAN_EMAIL = 2,      // IA5String
    SLUICE_SAN_IP = 3,         // 4 or 16 bytes
} sluice_san_type;

/// The `index`-th subjectAltName entry: its type and value, with the output convention;
/// returns 2 when there are no more.
int sluice_cert_san(const uint8_t *der, size_t len, size_t index, int *type, uint8_t *out, size_t cap, size_t *out_len);

/// Validity (Unix seconds), whether it is a CA (basicConstraints CA:TRUE), and its
/// keyUsage bits (RFC 5280 §4.2.1.3, bit 0 = digitalSignature as 0x80 in OpenSSL's
/// KU_ flags) or UINT32_MAX when it has no keyUsage. Returns 1 or -1.
int sluice_cert_info(const uint8_t *der, size_t len, int64_t *not_before, int64_t *not_after, int *is_ca,
                     uint32_t *key_usage);

/// Verifies the chain of `leaf` (RFC 5280 path validation by libcrypto: signatures,
/// validity, basic constraints, key usage of the CAs, path length) through `untrusted`
/// intermediates to one of the `anchors`, which are all trusted (also an intermediate CA
/// given as an anchor). `at`: the time to check against (Unix seconds), 0 for now.
/// Signatures below 112 bits of security (SHA-1, RSA under 2048 bits) are refused.
/// Returns 1 when it verifies, 0 when it does not (`*error` is the X509_V_ERR code and
/// `*depth` the position of the certificate at fault, 0 = the leaf), -1 on bad input.
int sluice_cert_verify(const uint8_t *leaf, size_t leaf_len,
                       const uint8_t *const *untrusted, const size_t *untrusted_lens, size_t untrusted_count,
                       const uint8_t *const *anchors, const size_t *anchor_lens, size_t anchor_count,
                       int64_t at, int *error, int *depth);

/// The verification error codes Swift names itself; others are described by the string below.
#define SLUICE_X509_CERT_NOT_YET_VALID 9
#define SLUICE_X509_CERT_HAS_EXPIRED 10
#define SLUICE_X509_UNABLE_TO_GET_ISSUER_CERT 2
#define SLUICE_X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY 20
#define SLUICE_X509_DEPTH_ZERO_SELF_SIGNED_CERT 18
#define SLUICE_X509_SELF_SIGNED_CERT_IN_CHAIN 19
#define SLUICE_X509_CERT_SIGNATURE_FAILURE 7
#define SLUICE_X509_INVALID_CA 79

/// libcrypto's description of a verification error code (a static string).
const char *sluice_cert_error_string(int error);

#ifdef __cplusplus
}
#endif
#endif
