#include "sluice_digest.h"
#include <openssl/evp.h>

int sluice_sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha1(), NULL) == 1 && n == 20;
}
