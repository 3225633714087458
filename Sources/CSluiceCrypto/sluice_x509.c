// X.509 certificates for IKEv2 (RFC 7296 §3.6): reading PEM/DER, the fields identity
// checks need, and RFC 5280 path validation, all by libcrypto.
#include "sluice_pki.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(SLUICE_X509_CERT_NOT_YET_VALID == X509_V_ERR_CERT_NOT_YET_VALID, "X509_V_ERR codes");
_Static_assert(SLUICE_X509_CERT_HAS_EXPIRED == X509_V_ERR_CERT_HAS_EXPIRED, "X509_V_ERR codes");
_Static_assert(SLUICE_X509_UNABLE_TO_GET_ISSUER_CERT == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, "X509_V_ERR codes");
_Static_assert(SLUICE_X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "X509_V_ERR codes");
_Static_assert(SLUICE_X509_DEPTH_ZERO_SELF_SIGNED_CERT == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "X509_V_ERR codes");
_Static_assert(SLUICE_X509_SELF_SIGNED_CERT_IN_CHAIN == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, "X509_V_ERR codes");
_Static_assert(SLUICE_X509_CERT_SIGNATURE_FAILURE == X509_V_ERR_CERT_SIGNATURE_FAILURE, "X509_V_ERR codes");
_Static_assert(SLUICE_X509_INVALID_CA == X509_V_ERR_INVALID_CA, "X509_V_ERR codes");

/// One whole DER certificate, nothing after it; NULL otherwise.
static X509 *read_der(const uint8_t *der, size_t len) {
    if (der == NULL || len == 0 || len > INT32_MAX) return NULL;
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x != NULL && p != der + len) { X509_free(x); x = NULL; }
    ERR_clear_error();
    return x;
}

static int emit(const uint8_t *data, size_t n, uint8_t *out, size_t cap, size_t *out_len) {
    *out_len = n;
    if (out == NULL || cap < n) return 0;
    memcpy(out, data, n);
    return 1;
}

/// i2d output of any kind, with the output convention.
static int emit_i2d(int n, unsigned char *der, uint8_t *out, size_t cap, size_t *out_len) {
    if (n <= 0 || der == NULL) { ERR_clear_error(); return -1; }
    int r = emit(der, (size_t)n, out, cap, out_len);
    OPENSSL_free(der);
    return r;
}

int sluice_cert_from_file(const uint8_t *data, size_t len, size_t index, uint8_t *out, size_t cap, size_t *out_len) {
    *out_len = 0;
    if (data == NULL || len == 0 || len > INT32_MAX) return -1;
    if (data[0] == 0x30) {
        if (index > 0) return 2;
        X509 *x = read_der(data, len);
        if (x == NULL) return -1;
        X509_free(x);
        return emit(data, len, out, cap, out_len);
    }
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL) return -1;
    int r = 2;
    for (size_t i = 0;; i++) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL) {
            // The end of the text, or a CERTIFICATE block that does not parse.
            unsigned long e = ERR_peek_last_error();
            if (!(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) r = -1;
            break;
        }
        if (i == index) {
            unsigned char *der = NULL;
            r = emit_i2d(i2d_X509(x, &der), der, out, cap, out_len);
            X509_free(x);
            break;
        }
        X509_free(x);
    }
    BIO_free(bio);
    ERR_clear_error();
    return r;
}

int sluice_cert_field(const uint8_t *der, size_t len, sluice_cert_field_kind field, uint8_t *out, size_t cap, size_t *out_len) {
    *out_len = 0;
    X509 *x = read_der(der, len);
    if (x == NULL) return -1;
    unsigned char *enc = NULL;
    int n = -1;
    switch (field) {
    case SLUICE_CERT_SUBJECT: n = i2d_X509_NAME(X509_get_subject_name(x), &enc); break;
    case SLUICE_CERT_ISSUER: n = i2d_X509_NAME(X509_get_issuer_name(x), &enc); break;
    case SLUICE_CERT_SPKI: n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &enc); break;
    }
    int r = emit_i2d(n, enc, out, cap, out_len);
    X509_free(x);
    return r;
}

int sluice_cert_san(const uint8_t *der, size_t len, size_t index, int *type, uint8_t *out, size_t cap, size_t *out_len) {
    *out_len = 0;
    *type = SLUICE_SAN_OTHER;
    X509 *x = read_der(der, len);
    if (x == NULL) return -1;
    int crit = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    int r = 2;
    if (names == NULL) {
        // crit == -1: no such extension; otherwise it is there but does not parse.
        if (crit != -1) r = -1;
    } else if (index < (size_t)sk_GENERAL_NAME_num(names)) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, (int)index);
        const ASN1_STRING *s = NULL;
        switch (g->type) {
        case GEN_DNS: *type = SLUICE_SAN_DNS; s = g->d.dNSName; break;
        case GEN_EMAIL: *type = SLUICE_SAN_EMAIL; s = g->d.rfc822Name; break;
        case GEN_IPADD: *type = SLUICE_SAN_IP; s = g->d.iPAddress; break;
        default: break;
        }
        if (s == NULL) r = 1; // another name type: reported with no value
        else r = emit(ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s), out, cap, out_len);
    }
    GENERAL_NAMES_free(names);
    ERR_clear_error();
    return r;
}

/// An ASN1_TIME as Unix seconds.
static int unix_time(const ASN1_TIME *t, int64_t *out) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    *out = (int64_t)timegm(&tm);
    return 1;
}

int sluice_cert_info(const uint8_t *der, size_t len, int64_t *not_before, int64_t *not_after, int *is_ca,
                     uint32_t *key_usage) {
    X509 *x = read_der(der, len);
    if (x == NULL) return -1;
    int ok = unix_time(X509_get0_notBefore(x), not_before) && unix_time(X509_get0_notAfter(x), not_after);
    // X509_check_ca: 1 for basicConstraints CA:TRUE; the other non-zero answers are v1 roots
    // and keyUsage-only certificates, which RFC 5280 does not make CAs.
    *is_ca = X509_check_ca(x) == 1;
    *key_usage = X509_get_key_usage(x);
    X509_free(x);
    ERR_clear_error();
    return ok ? 1 : -1;
}

static STACK_OF(X509) *read_all(const uint8_t *const *ders, const size_t *lens, size_t count) {
    STACK_OF(X509) *sk = sk_X509_new_null();
    if (sk == NULL) return NULL;
    for (size_t i = 0; i < count; i++) {
        X509 *x = read_der(ders[i], lens[i]);
        if (x == NULL || sk_X509_push(sk, x) <= 0) {
            X509_free(x);
            sk_X509_pop_free(sk, X509_free);
            return NULL;
        }
    }
    return sk;
}

int sluice_cert_verify(const uint8_t *leaf_der, size_t leaf_len,
                       const uint8_t *const *untrusted, const size_t *untrusted_lens, size_t untrusted_count,
                       const uint8_t *const *anchors, const size_t *anchor_lens, size_t anchor_count,
                       int64_t at, int *error, int *depth) {
    *error = 0;
    *depth = 0;
    if (anchor_count == 0 || (untrusted_count > 0 && (untrusted == NULL || untrusted_lens == NULL))
        || anchors == NULL || anchor_lens == NULL) return -1;
    X509 *leaf = read_der(leaf_der, leaf_len);
    STACK_OF(X509) *chain = read_all(untrusted, untrusted_lens, untrusted_count);
    STACK_OF(X509) *roots = read_all(anchors, anchor_lens, anchor_count);
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int r = -1;
    if (leaf == NULL || chain == NULL || roots == NULL || store == NULL || ctx == NULL) goto done;
    for (int i = 0; i < sk_X509_num(roots); i++) {
        if (X509_STORE_add_cert(store, sk_X509_value(roots, i)) != 1) goto done;
    }
    if (X509_STORE_CTX_init(ctx, store, leaf, chain) != 1) goto done;
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    // Every configured CA is a trust anchor, as in strongSwan's x509ca directory; 112-bit
    // security (auth level 2) refuses SHA-1 signatures and short keys anywhere in the path.
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    X509_VERIFY_PARAM_set_auth_level(param, 2);
    X509_VERIFY_PARAM_set_depth(param, 8);
    if (at != 0) X509_VERIFY_PARAM_set_time(param, (time_t)at);
    if (X509_verify_cert(ctx) == 1) {
        r = 1;
    } else {
        *error = X509_STORE_CTX_get_error(ctx);
        *depth = X509_STORE_CTX_get_error_depth(ctx);
        r = 0;
    }
done:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_pop_free(roots, X509_free);
    sk_X509_pop_free(chain, X509_free);
    X509_free(leaf);
    ERR_clear_error();
    return r;
}

const char *sluice_cert_error_string(int error) {
    return X509_verify_cert_error_string(error);
}
