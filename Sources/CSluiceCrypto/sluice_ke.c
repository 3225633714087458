// Ephemeral key exchange for IKEv2 (KE payload): X25519, ECDH on P-256/P-384 and the
// RFC 3526 MODP groups, through OpenSSL 3 EVP. Every peer value is validated before
// it is used; private keys stay inside EVP_PKEY objects, which clear them when freed.
#include "sluice_crypto.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/dh.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <stdlib.h>
#include <string.h>

struct sluice_ke {
    sluice_ke_group group;
    EVP_PKEY *pkey;
};

typedef enum { KIND_MODP, KIND_ECP, KIND_X25519 } ke_kind;

typedef struct {
    ke_kind kind;
    const char *group_name; // OpenSSL's name for the group or curve
    size_t field;           // prime (MODP) or field element (ECP, X25519) length in bytes
    int nid;                // curve NID (ECP only)
} ke_info;

static int lookup(sluice_ke_group group, ke_info *out) {
    switch (group) {
    case SLUICE_KE_MODP2048: *out = (ke_info){KIND_MODP, "modp_2048", 256, 0}; return 1;
    case SLUICE_KE_MODP3072: *out = (ke_info){KIND_MODP, "modp_3072", 384, 0}; return 1;
    case SLUICE_KE_ECP256: *out = (ke_info){KIND_ECP, "P-256", 32, NID_X9_62_prime256v1}; return 1;
    case SLUICE_KE_ECP384: *out = (ke_info){KIND_ECP, "P-384", 48, NID_secp384r1}; return 1;
    case SLUICE_KE_X25519: *out = (ke_info){KIND_X25519, NULL, 32, 0}; return 1;
    }
    return 0;
}

static const char *algorithm_name(ke_kind kind) {
    switch (kind) {
    case KIND_MODP: return "DH";
    case KIND_ECP: return "EC";
    case KIND_X25519: return "X25519";
    }
    return NULL;
}

size_t sluice_ke_public_len(sluice_ke_group group) {
    ke_info info;
    if (!lookup(group, &info)) return 0;
    return info.kind == KIND_ECP ? 2 * info.field : info.field;
}

size_t sluice_ke_secret_len(sluice_ke_group group) {
    ke_info info;
    return lookup(group, &info) ? info.field : 0;
}

static sluice_ke *wrap(sluice_ke_group group, EVP_PKEY *pkey) {
    if (pkey == NULL) return NULL;
    sluice_ke *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    k->group = group;
    k->pkey = pkey;
    return k;
}

sluice_ke *sluice_ke_generate(sluice_ke_group group) {
    ke_info info;
    if (!lookup(group, &info)) return NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, algorithm_name(info.kind), NULL);
    EVP_PKEY *pkey = NULL;
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1) goto done;
    if (info.group_name != NULL) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)info.group_name, 0),
            OSSL_PARAM_construct_end(),
        };
        if (EVP_PKEY_CTX_set_params(ctx, params) != 1) goto done;
    }
    if (EVP_PKEY_generate(ctx, &pkey) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
done:
    EVP_PKEY_CTX_free(ctx);
    return wrap(group, pkey);
}

/// Builds an EC key from the group name and an uncompressed point (04|x|y), plus the
/// private scalar when `priv` is given. OpenSSL checks the point is on the curve.
static EVP_PKEY *ec_from_data(const ke_info *info, const uint8_t *point, size_t point_len, const BIGNUM *priv) {
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    if (bld == NULL) return NULL;
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, info->group_name, 0) != 1) goto done;
    if (OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, point_len) != 1) goto done;
    if (priv != NULL && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv) != 1) goto done;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1) goto done;
    if (EVP_PKEY_fromdata(ctx, &pkey, priv != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
done:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params); // the private BIGNUM copy lives in secure memory, cleared on free
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

/// OpenSSL 3.0 does not compute the public point when importing a bare scalar, so the
/// test-vector path computes d*G itself before importing the pair.
static EVP_PKEY *ec_import_private(const ke_info *info, const uint8_t *priv, size_t len) {
    if (len != info->field) return NULL;
    EC_GROUP *group = EC_GROUP_new_by_curve_name(info->nid);
    BIGNUM *d = BN_secure_new();
    EC_POINT *q = NULL;
    EVP_PKEY *pkey = NULL;
    uint8_t point[1 + 2 * 48];
    size_t point_len = 1 + 2 * info->field;
    if (group == NULL || d == NULL || BN_bin2bn(priv, (int)len, d) == NULL) goto done;
    if (BN_is_zero(d) || BN_cmp(d, EC_GROUP_get0_order(group)) >= 0) goto done;
    q = EC_POINT_new(group);
    if (q == NULL || EC_POINT_mul(group, q, d, NULL, NULL, NULL) != 1) goto done;
    if (EC_POINT_point2oct(group, q, POINT_CONVERSION_UNCOMPRESSED, point, point_len, NULL) != point_len) goto done;
    pkey = ec_from_data(info, point, point_len, d);
done:
    EC_POINT_free(q);
    BN_clear_free(d);
    EC_GROUP_free(group);
    return pkey;
}

sluice_ke *sluice_ke_import_private(sluice_ke_group group, const uint8_t *priv, size_t len) {
    ke_info info;
    if (!lookup(group, &info) || priv == NULL || len > INT32_MAX) return NULL;
    switch (info.kind) {
    case KIND_X25519:
        if (len != 32) return NULL;
        return wrap(group, EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, priv, len));
    case KIND_ECP:
        return wrap(group, ec_import_private(&info, priv, len));
    case KIND_MODP:
        return NULL;
    }
    return NULL;
}

void sluice_ke_free(sluice_ke *k) {
    if (k == NULL) return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

int sluice_ke_public(const sluice_ke *k, uint8_t *out, size_t out_len) {
    ke_info info;
    if (k == NULL || out == NULL || !lookup(k->group, &info) || out_len != sluice_ke_public_len(k->group)) return 0;
    switch (info.kind) {
    case KIND_X25519: {
        size_t len = out_len;
        return EVP_PKEY_get_raw_public_key(k->pkey, out, &len) == 1 && len == out_len;
    }
    case KIND_ECP: {
        // OpenSSL gives 04|x|y; the KE payload carries x|y (RFC 5903 §7).
        uint8_t point[1 + 2 * 48];
        size_t len = 0;
        if (EVP_PKEY_get_octet_string_param(k->pkey, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &len) != 1) return 0;
        if (len != 1 + out_len || point[0] != 0x04) return 0;
        memcpy(out, point + 1, out_len);
        return 1;
    }
    case KIND_MODP: {
        // g^x padded on the left to the prime's length (RFC 7296 §3.4).
        BIGNUM *y = NULL;
        if (EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_PUB_KEY, &y) != 1) return 0;
        int ok = BN_bn2binpad(y, out, (int)out_len) == (int)out_len;
        BN_free(y);
        return ok;
    }
    }
    return 0;
}

/// The peer's MODP value as a key, after the range check 1 < y < p-1 (RFC 6989 §2.1).
static EVP_PKEY *modp_peer(const sluice_ke *k, const ke_info *info, const uint8_t *peer, size_t len) {
    BIGNUM *p = NULL, *y = BN_bin2bn(peer, (int)len, NULL), *p_minus_1 = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    if (y == NULL || EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_FFC_P, &p) != 1) goto done;
    p_minus_1 = BN_dup(p);
    if (p_minus_1 == NULL || BN_sub_word(p_minus_1, 1) != 1) goto done;
    if (BN_cmp(y, BN_value_one()) <= 0 || BN_cmp(y, p_minus_1) >= 0) goto done;
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL) goto done;
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, info->group_name, 0) != 1) goto done;
    if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PUB_KEY, y) != 1) goto done;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1) goto done;
    if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
done:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(p_minus_1);
    BN_free(p);
    BN_free(y);
    return pkey;
}

/// The peer's value as an EVP_PKEY, or NULL when it is invalid for the group.
static EVP_PKEY *peer_key(const sluice_ke *k, const ke_info *info, const uint8_t *peer, size_t len) {
    switch (info->kind) {
    case KIND_X25519:
        return EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, peer, len);
    case KIND_ECP: {
        uint8_t point[1 + 2 * 48];
        point[0] = 0x04;
        memcpy(point + 1, peer, len);
        return ec_from_data(info, point, 1 + len, NULL);
    }
    case KIND_MODP:
        return modp_peer(k, info, peer, len);
    }
    return NULL;
}

int sluice_ke_derive(const sluice_ke *k, const uint8_t *peer, size_t peer_len, uint8_t *out, size_t out_len) {
    ke_info info;
    if (k == NULL || out == NULL || !lookup(k->group, &info) || out_len != info.field) return -1;
    memset(out, 0, out_len);
    if (peer == NULL || peer_len != sluice_ke_public_len(k->group)) return 0;
    int result = 0;
    EVP_PKEY_CTX *check = NULL, *ctx = NULL;
    EVP_PKEY *theirs = peer_key(k, &info, peer, peer_len);
    if (theirs == NULL) goto done; // not a value of this group
    // Full public-key validation: on the curve and not infinity (ECP); for MODP also in
    // the prime-order subgroup, which every honest g^x is.
    if (info.kind != KIND_X25519) {
        check = EVP_PKEY_CTX_new_from_pkey(NULL, theirs, NULL);
        if (check == NULL) { result = -1; goto done; }
        if (EVP_PKEY_public_check(check) != 1) goto done;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
    if (ctx == NULL || EVP_PKEY_derive_init(ctx) != 1) { result = -1; goto done; }
    if (info.kind == KIND_MODP && EVP_PKEY_CTX_set_dh_pad(ctx, 1) != 1) { result = -1; goto done; }
    if (EVP_PKEY_derive_set_peer_ex(ctx, theirs, 0) != 1) goto done;
    size_t len = out_len;
    // X25519: OpenSSL refuses an all-zero result here (small-order peer point, RFC 8031 §2).
    if (EVP_PKEY_derive(ctx, out, &len) != 1 || len != out_len) goto done;
    uint8_t any = 0;
    for (size_t i = 0; i < out_len; i++) any |= out[i];
    result = any != 0 ? 1 : 0;
done:
    if (result != 1) OPENSSL_cleanse(out, out_len);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_free(theirs);
    return result;
}
