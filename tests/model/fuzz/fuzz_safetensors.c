/*
 * fuzz_safetensors: libFuzzer target for the safetensors header parser. The input is a whole
 * file, opened from memory. Whatever the parser accepts must be readable: every tensor it lists
 * is found by its name, its bytes lie inside the input and match shape x dtype, every product
 * of its dimensions (with zeros counted as one, as a reader forms them) fits in size_t, and the
 * typed readers convert it all. Reading every byte lets AddressSanitizer prove the bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks the shape's products and returns its element count; aborts on an overflow. */
static size_t checked_numel(const model_shape *s, size_t elem) {
    size_t numel = 1, extent = elem;
    for (int i = 0; i < s->ndim; i++) {
        size_t d = s->dims[i], nz = d ? d : 1;
        if ((numel != 0 && d > SIZE_MAX / numel) || nz > SIZE_MAX / extent) {
            abort(); /* the parser accepted a shape whose products overflow */
        }
        numel *= d;
        extent *= nz;
    }
    if (numel != model_shape_numel(s)) {
        abort();
    }
    return numel;
}

static void check_tensor(const model_st_file *f, size_t i, const uint8_t *data, size_t size) {
    char err[COMMON_ERR_LEN];
    const char *name = model_st_name(f, i);
    if (!name || model_st_find(f, name) != (long)i) {
        abort(); /* names are unique and found again */
    }
    model_dtype dtype;
    model_shape shape;
    model_st_info(f, i, &dtype, &shape);
    if (shape.ndim < 0 || shape.ndim > MODEL_MAX_DIMS) {
        abort();
    }
    size_t elem = model_dtype_size(dtype);
    size_t numel = checked_numel(&shape, elem);
    size_t bytes = 0;
    const uint8_t *p = model_st_data(f, i, &bytes);
    if (bytes != numel * elem || p < data || (size_t)(p - data) > size ||
        bytes > size - (size_t)(p - data)) {
        abort(); /* the tensor's bytes must lie inside the file and match its shape */
    }
    unsigned sum = 0;
    for (size_t k = 0; k < bytes; k++) {
        sum += p[k];
    }
    (void)sum;
    /* numel <= bytes <= size: what is accepted cannot ask for more memory than the input */
    float *fl = malloc((numel ? numel : 1) * sizeof *fl);
    int32_t *in = malloc((numel ? numel : 1) * sizeof *in);
    if (!fl || !in) {
        abort();
    }
    int rf = model_st_read_f32(f, name, fl, numel, NULL, err);
    int ri = model_st_read_i32(f, name, in, numel, NULL, err);
    bool is_float =
        dtype == MODEL_DTYPE_F32 || dtype == MODEL_DTYPE_F16 || dtype == MODEL_DTYPE_BF16;
    if (is_float ? (rf != 0 || ri != COMMON_ERR_UNSUPPORTED)
                 : (rf != COMMON_ERR_UNSUPPORTED || (ri != 0 && ri != COMMON_ERR_INVALID))) {
        abort();
    }
    if (numel > 0 && model_st_read_f32(f, name, fl, numel - 1, NULL, err) != COMMON_ERR_INVALID) {
        abort(); /* too little room is refused, not overrun */
    }
    free(fl);
    free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[COMMON_ERR_LEN];
    model_st_file *f = NULL;
    if (model_st_open_buffer(&f, "fuzz.safetensors", data, size, err) != 0) {
        if (f || !memchr(err, '\0', sizeof err)) {
            abort();
        }
        return 0;
    }
    for (size_t i = 0; i < model_st_count(f); i++) {
        check_tensor(f, i, data, size);
    }
    if (model_st_name(f, model_st_count(f)) != NULL || model_st_find(f, "__metadata__") >= 0) {
        abort();
    }
    (void)model_st_metadata(f, "format");
    (void)model_st_metadata(f, "inputs");
    model_st_close(&f);
    if (f) {
        abort();
    }
    return 0;
}
