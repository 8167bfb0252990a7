/*
 * `chesslens show FILE.safetensors [--tensor NAME]`: a look inside any safetensors file that
 * chesslens writes (forward, patch, decompose outputs) without leaving the shell. Without
 * --tensor it lists the metadata and, per tensor, dtype, shape and min / max / mean; with it,
 * the tensor's values as a table (rank 1 and 2; rank 3 as one table per leading index).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "common/common.h"
#include "model/model.h"

/* Reads tensor i as float32 into a new buffer (*n elements); NULL on failure (err set). */
static float *read_all(const model_st_file *f, size_t i, size_t *n, char *err) {
    model_dtype dtype;
    model_shape shape;
    model_st_info(f, i, &dtype, &shape);
    *n = model_shape_numel(&shape);
    float *data = malloc((*n ? *n : 1) * sizeof(float));
    if (!data) {
        common_fail(err, COMMON_ERR_NOMEM, "show: out of memory");
        return NULL;
    }
    int rc;
    if (dtype == MODEL_DTYPE_I32 || dtype == MODEL_DTYPE_I64) {
        int32_t *ints = malloc((*n ? *n : 1) * sizeof(int32_t));
        if (!ints) {
            free(data);
            common_fail(err, COMMON_ERR_NOMEM, "show: out of memory");
            return NULL;
        }
        rc = model_st_read_i32(f, model_st_name(f, i), ints, *n, NULL, err);
        for (size_t k = 0; rc == COMMON_OK && k < *n; k++) {
            data[k] = (float)ints[k];
        }
        free(ints);
    } else {
        rc = model_st_read_f32(f, model_st_name(f, i), data, *n, NULL, err);
    }
    if (rc != COMMON_OK) {
        free(data);
        return NULL;
    }
    return data;
}

/* The metadata as "key: value" lines, long values cut to a line's worth. */
static int print_metadata(const model_st_file *f) {
    char err[COMMON_ERR_LEN];
    const char **keys = NULL;
    size_t n = 0;
    if (model_st_metadata_keys(f, &keys, &n, err) != 0) {
        fprintf(stderr, "chesslens show: %s\n", err);
        return 1;
    }
    if (n > 0) {
        printf("metadata:\n");
    }
    for (size_t i = 0; i < n; i++) {
        const char *v = model_st_metadata(f, keys[i]);
        size_t len = strlen(v);
        printf("  %s: %.*s%s\n", keys[i], len > 96 ? 96 : (int)len, v, len > 96 ? " ..." : "");
    }
    free(keys);
    return 0;
}

static void print_summary(const model_st_file *f) {
    printf("%-44s %-5s %-18s %12s %12s %12s\n", "tensor", "dtype", "shape", "min", "max", "mean");
    for (size_t i = 0; i < model_st_count(f); i++) {
        model_dtype dtype;
        model_shape shape;
        char shape_text[64], err[COMMON_ERR_LEN];
        model_st_info(f, i, &dtype, &shape);
        model_shape_format(&shape, shape_text, sizeof shape_text);
        size_t n = 0;
        float *data = read_all(f, i, &n, err);
        double lo = INFINITY, hi = -INFINITY, sum = 0.0;
        size_t finite = 0;
        for (size_t k = 0; data && k < n; k++) {
            if (isfinite(data[k])) {
                lo = data[k] < lo ? data[k] : lo;
                hi = data[k] > hi ? data[k] : hi;
                sum += data[k];
                finite++;
            }
        }
        if (!data || finite == 0) {
            printf("%-44s %-5s %-18s %12s %12s %12s\n", model_st_name(f, i),
                   model_dtype_name(dtype), shape_text, "-", "-", "-");
        } else {
            printf("%-44s %-5s %-18s %12.5g %12.5g %12.5g\n", model_st_name(f, i),
                   model_dtype_name(dtype), shape_text, lo, hi, sum / (double)finite);
        }
        free(data);
    }
}

/* Prints rows x cols values starting at data, with row and column indices. */
static void print_table(const float *data, size_t rows, size_t cols) {
    printf("%6s", "");
    for (size_t c = 0; c < cols; c++) {
        printf(" %9zu", c);
    }
    printf("\n");
    for (size_t r = 0; r < rows; r++) {
        printf("%6zu", r);
        for (size_t c = 0; c < cols; c++) {
            printf(" %9.4g", (double)data[r * cols + c] + 0.0); /* + 0.0 prints -0 as 0 */
        }
        printf("\n");
    }
}

static int print_tensor(const model_st_file *f, const char *name) {
    char err[COMMON_ERR_LEN];
    long i = model_st_find(f, name);
    if (i < 0) {
        fprintf(stderr, "chesslens show: no tensor '%s' in the file\n", name);
        return 1;
    }
    model_dtype dtype;
    model_shape shape;
    model_st_info(f, (size_t)i, &dtype, &shape);
    if (shape.ndim > 3) {
        fprintf(stderr, "chesslens show: '%s' has rank %d; tables are printed for rank 1-3\n", name,
                shape.ndim);
        return 1;
    }
    size_t n = 0;
    float *data = read_all(f, (size_t)i, &n, err);
    if (!data) {
        fprintf(stderr, "chesslens show: %s\n", err);
        return 1;
    }
    char shape_text[64];
    printf("%s %s %s\n", name, model_dtype_name(dtype),
           model_shape_format(&shape, shape_text, sizeof shape_text));
    if (n == 0) {
        printf("(no elements)\n"); /* a [4294967296, 0] tensor has no table to print */
    } else if (shape.ndim == 0) {
        printf("%.6g\n", data[0]);
    } else if (shape.ndim == 1) {
        print_table(data, 1, shape.dims[0]);
    } else if (shape.ndim == 2) {
        print_table(data, shape.dims[0], shape.dims[1]);
    } else {
        size_t block = shape.dims[1] * shape.dims[2];
        for (size_t b = 0; b < shape.dims[0]; b++) {
            printf("[%zu]\n", b);
            print_table(data + b * block, shape.dims[1], shape.dims[2]);
        }
    }
    free(data);
    return 0;
}

int cli_show(int argc, char **argv) {
    const char *tensor = NULL;
    const cli_opt opts[] = {
        {.name = "--tensor",
         .kind = CLI_STRING,
         .value = &tensor,
         .meta = "NAME",
         .help = "print this tensor's values as a table (rank 1-3)"},
    };
    const cli_spec spec = {.command = "show",
                           .synopsis = "FILE.safetensors [--tensor NAME]",
                           .about = "Lists the metadata and the tensors of a safetensors file "
                                    "(dtype, shape, min, max,\nmean), or prints one tensor.",
                           .min_args = 1,
                           .max_args = 1,
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    const char *path = args[0];
    char err[COMMON_ERR_LEN];
    model_st_file *f = NULL;
    if (model_st_open(&f, path, err) != COMMON_OK) {
        fprintf(stderr, "chesslens show: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (tensor) {
        rc = print_tensor(f, tensor);
    } else {
        printf("%s: %zu tensors\n", path, model_st_count(f));
        rc = print_metadata(f);
        print_summary(f);
    }
    model_st_close(&f);
    return rc;
}
