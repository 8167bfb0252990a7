/*
 * fuzz_sweep_spec: libFuzzer target for the sweep specification parser (coordinator_spec_parse),
 * which reads what `chesslens submit` sends and the coordinator stores. The input is the spec's
 * JSON text. A refusal must leave *out NULL and a NUL-terminated message (ASan's leak check
 * sees anything left allocated); an accepted spec's canonical text must be accepted again and
 * give the same canonical text, since the store and the workers know a sweep by it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "coordinator/coordinator.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[COMMON_ERR_LEN];
    memset(err, 'x', sizeof err);
    coordinator_spec *spec = NULL;
    if (coordinator_spec_parse(&spec, (const char *)data, size, err) != 0) {
        if (spec != NULL || memchr(err, '\0', sizeof err) == NULL) {
            abort();
        }
        return 0;
    }
    coordinator_spec *again = NULL;
    if (coordinator_spec_parse(&again, spec->canonical, strlen(spec->canonical), err) != 0 ||
        strcmp(again->canonical, spec->canonical) != 0) {
        abort();
    }
    coordinator_spec_destroy(&again);
    coordinator_spec_destroy(&spec);
    return 0;
}
