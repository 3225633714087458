#include "sluice_crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

struct sluice_cipher {
    sluice_cipher_kind kind;
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
};

struct sluice_hmac {
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
    size_t size;
};

static const EVP_CIPHER *pick_cipher(sluice_cipher_kind kind, size_t key_len) {
    switch (kind) {
    case SLUICE_CIPHER_AES_GCM:
        if (key_len == 16) return EVP_aes_128_gcm();
        if (key_len == 24) return EVP_aes_192_gcm();
        if (key_len == 32) return EVP_aes_256_gcm();
        return NULL;
    case SLUICE_CIPHER_CHACHA20_POLY1305:
        return key_len == 32 ? EVP_chacha20_poly1305() : NULL;
    case SLUICE_CIPHER_AES_CBC:
        if (key_len == 16) return EVP_aes_128_cbc();
        if (key_len == 24) return EVP_aes_192_cbc();
        if (key_len == 32) return EVP_aes_256_cbc();
        return NULL;
    }
    return NULL;
}

sluice_cipher *sluice_cipher_new(sluice_cipher_kind kind, const uint8_t *key, size_t key_len) {
    const EVP_CIPHER *cipher = pick_cipher(kind, key_len);
    if (cipher == NULL || key == NULL) return NULL;
    sluice_cipher *c = calloc(1, sizeof(*c));
    if (c == NULL) return NULL;
    c->kind = kind;
    c->enc = EVP_CIPHER_CTX_new();
    c->dec = EVP_CIPHER_CTX_new();
    if (c->enc == NULL || c->dec == NULL) goto fail;
    // Key schedule once; each packet only sets its IV.
    if (EVP_EncryptInit_ex(c->enc, cipher, NULL, key, NULL) != 1) goto fail;
    if (EVP_DecryptInit_ex(c->dec, cipher, NULL, key, NULL) != 1) goto fail;
    if (kind == SLUICE_CIPHER_AES_CBC) {
        EVP_CIPHER_CTX_set_padding(c->enc, 0);
        EVP_CIPHER_CTX_set_padding(c->dec, 0);
    }
    return c;
fail:
    sluice_cipher_free(c);
    return NULL;
}

void sluice_cipher_free(sluice_cipher *c) {
    if (c == NULL) return;
    EVP_CIPHER_CTX_free(c->enc); // also cleanses the key schedule
    EVP_CIPHER_CTX_free(c->dec);
    free(c);
}

int sluice_aead_seal(sluice_cipher *c, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
                     uint8_t *data, size_t len, uint8_t tag[16]) {
    if (c == NULL || c->kind == SLUICE_CIPHER_AES_CBC || len > INT32_MAX || aad_len > INT32_MAX) return 0;
    int out_len = 0;
    if (EVP_EncryptInit_ex(c->enc, NULL, NULL, NULL, nonce) != 1) return 0;
    if (aad_len > 0 && EVP_EncryptUpdate(c->enc, NULL, &out_len, aad, (int)aad_len) != 1) return 0;
    if (len > 0 && EVP_EncryptUpdate(c->enc, data, &out_len, data, (int)len) != 1) return 0;
    if (EVP_EncryptFinal_ex(c->enc, data + len, &out_len) != 1) return 0;
    return EVP_CIPHER_CTX_ctrl(c->enc, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1;
}

int sluice_aead_open(sluice_cipher *c, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
                     uint8_t *data, size_t len, const uint8_t tag[16]) {
    if (c == NULL || c->kind == SLUICE_CIPHER_AES_CBC || len > INT32_MAX || aad_len > INT32_MAX) return -1;
    int out_len = 0;
    uint8_t tag_copy[16];
    memcpy(tag_copy, tag, 16);
    if (EVP_DecryptInit_ex(c->dec, NULL, NULL, NULL, nonce) != 1) return -1;
    if (EVP_CIPHER_CTX_ctrl(c->dec, EVP_CTRL_AEAD_SET_TAG, 16, tag_copy) != 1) return -1;
    if (aad_len > 0 && EVP_DecryptUpdate(c->dec, NULL, &out_len, aad, (int)aad_len) != 1) return -1;
    if (len > 0 && EVP_DecryptUpdate(c->dec, data, &out_len, data, (int)len) != 1) return -1;
    return EVP_DecryptFinal_ex(c->dec, data + len, &out_len) == 1 ? 1 : 0;
}

int sluice_cbc_crypt(sluice_cipher *c, int encrypt, const uint8_t iv[16], uint8_t *data, size_t len) {
    if (c == NULL || c->kind != SLUICE_CIPHER_AES_CBC || len % 16 != 0 || len > INT32_MAX) return 0;
    EVP_CIPHER_CTX *ctx = encrypt ? c->enc : c->dec;
    int out_len = 0;
    if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, encrypt ? 1 : 0) != 1) return 0;
    if (len > 0 && EVP_CipherUpdate(ctx, data, &out_len, data, (int)len) != 1) return 0;
    return EVP_CipherFinal_ex(ctx, data + out_len, &out_len) == 1;
}

static char *digest_name(sluice_digest digest) {
    switch (digest) {
    case SLUICE_DIGEST_SHA256: return "SHA256";
    case SLUICE_DIGEST_SHA384: return "SHA384";
    case SLUICE_DIGEST_SHA512: return "SHA512";
    }
    return NULL;
}

sluice_hmac *sluice_hmac_new(sluice_digest digest, const uint8_t *key, size_t key_len) {
    char *name = digest_name(digest);
    if (name == NULL || (key == NULL && key_len > 0)) return NULL;
    // OpenSSL treats a NULL key as "keep the previous one"; an empty key needs a pointer.
    static const uint8_t no_key = 0;
    if (key == NULL) key = &no_key;
    sluice_hmac *h = calloc(1, sizeof(*h));
    if (h == NULL) return NULL;
    h->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (h->mac == NULL) goto fail;
    h->ctx = EVP_MAC_CTX_new(h->mac);
    if (h->ctx == NULL) goto fail;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, name, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(h->ctx, key, key_len, params) != 1) goto fail;
    h->size = EVP_MAC_CTX_get_mac_size(h->ctx);
    if (h->size == 0 || h->size > 64) goto fail;
    return h;
fail:
    sluice_hmac_free(h);
    return NULL;
}

sluice_hmac *sluice_hmac_sha256_new(const uint8_t *key, size_t key_len) {
    if (key == NULL || key_len == 0) return NULL;
    return sluice_hmac_new(SLUICE_DIGEST_SHA256, key, key_len);
}

size_t sluice_hmac_size(const sluice_hmac *h) {
    return h == NULL ? 0 : h->size;
}

int sluice_hmac_begin(sluice_hmac *h) {
    // A NULL key re-initialises with the key given at creation (OpenSSL 3).
    return h != NULL && EVP_MAC_init(h->ctx, NULL, 0, NULL) == 1;
}

int sluice_hmac_update(sluice_hmac *h, const uint8_t *data, size_t len) {
    if (h == NULL || (data == NULL && len > 0)) return 0;
    return len == 0 || EVP_MAC_update(h->ctx, data, len) == 1;
}

int sluice_hmac_finish(sluice_hmac *h, uint8_t *out, size_t out_len) {
    if (h == NULL || out == NULL || out_len == 0 || out_len > h->size) return 0;
    uint8_t full[64];
    size_t full_len = 0;
    int ok = EVP_MAC_final(h->ctx, full, &full_len, sizeof(full)) == 1 && full_len == h->size;
    if (ok) memcpy(out, full, out_len);
    OPENSSL_cleanse(full, sizeof(full));
    return ok;
}

void sluice_hmac_free(sluice_hmac *h) {
    if (h == NULL) return;
    EVP_MAC_CTX_free(h->ctx);
    EVP_MAC_free(h->mac);
    free(h);
}

int sluice_hmac_sha256(sluice_hmac *h, const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len,
                       uint8_t out[32]) {
    if (h == NULL || h->size != 32) return 0;
    size_t out_len = 0;
    // A NULL key re-initialises with the key given at creation (OpenSSL 3).
    if (EVP_MAC_init(h->ctx, NULL, 0, NULL) != 1) return 0;
    if (a_len > 0 && EVP_MAC_update(h->ctx, a, a_len) != 1) return 0;
    if (b_len > 0 && EVP_MAC_update(h->ctx, b, b_len) != 1) return 0;
    return EVP_MAC_final(h->ctx, out, &out_len, 32) == 1 && out_len == 32;
}

int sluice_ct_equal(const uint8_t *a, const uint8_t *b, size_t len) {
    return CRYPTO_memcmp(a, b, len) == 0;
}

int sluice_random_bytes(uint8_t *out, size_t len) {
    if (len > INT32_MAX) return 0;
    return RAND_bytes(out, (int)len) == 1;
}

const char *sluice_openssl_version(void) {
    return OpenSSL_version(OPENSSL_VERSION);
}

void sluice_wipe(void *p, size_t len) {
    OPENSSL_cleanse(p, len);
}
