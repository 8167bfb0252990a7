/*
 * digest: the SHA-256 digests of the wire (coordinator/wire.h) over the store's SHA-256.
 */
#include "coordinator/store_int.h"
#include "coordinator/wire.h"

int coordinator_digest_hex(const void *p, size_t n, char out[65]) {
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, p, n);
    sha256_final_hex(&c, out);
    return 0;
}

int coordinator_digest_file_hex(const char *path, char out[65], char *err) {
    return sha256_file_hex(path, out, err);
}
