// Private keys and signatures for IKEv2 AUTH (RFC 7427) through OpenSSL 3 EVP: RSA
// (PKCS#1 v1.5 and PSS), ECDSA on P-256/P-384/P-521, Ed25519.
#include "sluice_pki.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

struct sluice_privkey {
    EVP_PKEY *pkey;
};

/// Kind and size of a key Sluice signs or verifies with; 0 for anything else.
static int classify(const EVP_PKEY *pkey, int *kind, int *bits) {
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        *kind = SLUICE_PK_RSA;
        *bits = EVP_PKEY_get_bits(pkey);
        return *bits >= 1024;
    case EVP_PKEY_EC: {
        char curve[64];
        size_t n = 0;
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof(curve), &n) != 1) return 0;
        *kind = SLUICE_PK_EC;
        if (strcmp(curve, "prime256v1") == 0 || strcmp(curve, "P-256") == 0) *bits = 256;
        else if (strcmp(curve, "secp384r1") == 0 || strcmp(curve, "P-384") == 0) *bits = 384;
        else if (strcmp(curve, "secp521r1") == 0 || strcmp(curve, "P-521") == 0) *bits = 521;
        else return 0;
        return 1;
    }
    case EVP_PKEY_ED25519:
        *kind = SLUICE_PK_ED25519;
        *bits = 256;
        return 1;
    default:
        return 0;
    }
}

static const EVP_MD *digest_md(int digest) {
    switch (digest) {
    case SLUICE_DIGEST_SHA256: return EVP_sha256();
    case SLUICE_DIGEST_SHA384: return EVP_sha384();
    case SLUICE_DIGEST_SHA512: return EVP_sha512();
    default: return NULL;
    }
}

/// A passphrase callback that never asks: an encrypted key fails to load instead of
/// prompting on the daemon's terminal.
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf; (void)size; (void)rwflag;
    *(int *)u = 1;
    return -1;
}

sluice_privkey *sluice_privkey_load(const uint8_t *data, size_t len, int *why) {
    *why = 0;
    if (data == NULL || len == 0 || len > INT32_MAX) return NULL;
    EVP_PKEY *pkey = NULL;
    int asked = 0;
    if (data[0] == 0x30) {
        const unsigned char *p = data;
        pkey = d2i_AutoPrivateKey(NULL, &p, (long)len);
        if (pkey != NULL && p != data + len) { EVP_PKEY_free(pkey); pkey = NULL; }
        if (pkey == NULL) {
            // An encrypted PKCS#8 DER key: recognised only to say so.
            p = data;
            X509_SIG *enc = d2i_X509_SIG(NULL, &p, (long)len);
            if (enc != NULL) { asked = 1; X509_SIG_free(enc); }
        }
    } else {
        BIO *bio = BIO_new_mem_buf(data, (int)len);
        if (bio != NULL) pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &asked);
        BIO_free(bio);
    }
    ERR_clear_error();
    if (pkey == NULL) {
        *why = asked ? 1 : 0;
        return NULL;
    }
    int kind = 0, bits = 0;
    if (!classify(pkey, &kind, &bits)) {
        EVP_PKEY_free(pkey);
        *why = 2;
        return NULL;
    }
    sluice_privkey *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    k->pkey = pkey;
    return k;
}

void sluice_privkey_free(sluice_privkey *k) {
    if (k == NULL) return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

void sluice_privkey_info(const sluice_privkey *k, int *kind, int *bits) {
    *kind = 0; *bits = 0;
    if (k != NULL) classify(k->pkey, kind, bits);
}

static EVP_PKEY *read_spki(const uint8_t *spki, size_t len);

int sluice_privkey_matches(const sluice_privkey *k, const uint8_t *spki, size_t spki_len) {
    if (k == NULL) return 0;
    EVP_PKEY *pub = read_spki(spki, spki_len);
    if (pub == NULL) return 0;
    int r = EVP_PKEY_eq(k->pkey, pub) == 1;
    EVP_PKEY_free(pub);
    ERR_clear_error();
    return r;
}

/// Sets up `ctx` for `digest` and `padding` on a key of `kind`; 1 or 0.
static int configure(EVP_PKEY_CTX *pctx, int kind, int digest, int padding, int pss_salt) {
    if (kind != SLUICE_PK_RSA) return 1;
    if (padding == SLUICE_RSA_PSS) {
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
            && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, digest_md(digest)) == 1
            && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, pss_salt) == 1;
    }
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
}

/// Ed25519 signs the message itself; the others need one of the SHA-2 digests.
static int digest_fits(int kind, int digest) {
    return kind == SLUICE_PK_ED25519 ? digest == SLUICE_DIGEST_NONE : digest_md(digest) != NULL;
}

int sluice_sign(const sluice_privkey *k, int digest, int padding, const uint8_t *msg, size_t msg_len,
                uint8_t *out, size_t cap, size_t *out_len) {
    *out_len = 0;
    int kind = 0, bits = 0;
    if (k == NULL || (msg == NULL && msg_len > 0) || !classify(k->pkey, &kind, &bits) || !digest_fits(kind, digest)) return -1;
    size_t max = (size_t)EVP_PKEY_get_size(k->pkey);
    if (out == NULL || cap < max) { *out_len = max; return 0; }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int r = -1;
    size_t n = cap;
    static const uint8_t empty = 0;
    if (ctx != NULL && EVP_DigestSignInit(ctx, &pctx, kind == SLUICE_PK_ED25519 ? NULL : digest_md(digest), NULL, k->pkey) == 1
        && configure(pctx, kind, digest, padding, RSA_PSS_SALTLEN_DIGEST)
        && EVP_DigestSign(ctx, out, &n, msg_len ? msg : &empty, msg_len) == 1) {
        *out_len = n;
        r = 1;
    }
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return r;
}

static EVP_PKEY *read_spki(const uint8_t *spki, size_t len) {
    if (spki == NULL || len == 0 || len > INT32_MAX) return NULL;
    const unsigned char *p = spki;
    EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)len);
    if (pkey != NULL && p != spki + len) { EVP_PKEY_free(pkey); pkey = NULL; }
    ERR_clear_error();
    return pkey;
}

int sluice_pubkey_info(const uint8_t *spki, size_t spki_len, int *kind, int *bits) {
    *kind = 0; *bits = 0;
    EVP_PKEY *pkey = read_spki(spki, spki_len);
    if (pkey == NULL) return -1;
    int ok = classify(pkey, kind, bits);
    EVP_PKEY_free(pkey);
    return ok ? 1 : -1;
}

int sluice_verify(const uint8_t *spki, size_t spki_len, int digest, int padding, int pss_salt,
                  const uint8_t *msg, size_t msg_len, const uint8_t *sig, size_t sig_len) {
    if ((msg == NULL && msg_len > 0) || sig == NULL || sig_len == 0) return -1;
    EVP_PKEY *pkey = read_spki(spki, spki_len);
    if (pkey == NULL) return -1;
    int kind = 0, bits = 0;
    int r = -1;
    EVP_MD_CTX *ctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    static const uint8_t empty = 0;
    if (!classify(pkey, &kind, &bits) || !digest_fits(kind, digest) || (padding == SLUICE_RSA_PSS && pss_salt < 0)) goto done;
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestVerifyInit(ctx, &pctx, kind == SLUICE_PK_ED25519 ? NULL : digest_md(digest), NULL, pkey) != 1
        || !configure(pctx, kind, digest, padding, pss_salt)) goto done;
    // 1: valid; anything else (0, or an error for a signature that does not even parse) is invalid.
    r = EVP_DigestVerify(ctx, sig, sig_len, msg_len ? msg : &empty, msg_len) == 1 ? 1 : 0;
done:
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return r;
}
