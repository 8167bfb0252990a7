/*
 * Hostile model files: safetensors headers whose shapes overflow or whose tensors overlap around
 * an empty one, paths that are not regular files, config.json values that would allocate
 * gigabytes or that make no sense (a LayerNorm epsilon that rounds to inf or 0), and a
 * tokenizer.json large enough that a quadratic loader shows. A hostile file is refused with a
 * message naming the file and the tensor or key, before anything is allocated from it; the large
 * vocabulary loads in linear time. The buffer-based openers are checked against the files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/model.h"
#include "tests/model/model_test_util.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HOSTILE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define HOSTILE_ASAN 1
#endif

#ifdef HOSTILE_ASAN
/* AddressSanitizer's allocation hooks (sanitizer/allocator_interface.h, which gcc does not
 * install): they let a test see the largest single allocation a call makes. */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
static volatile size_t largest_alloc;
static volatile int hooks_installed;

static void on_malloc(const volatile void *p, size_t size) {
    (void)p;
    if (size > largest_alloc) {
        largest_alloc = size;
    }
}

static void on_free(const volatile void *p) {
    (void)p;
}
#endif

static void path_in_tmp(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", test_tmpdir(), name);
}

/* A safetensors file with the given header JSON and `data` bytes of zeros. */
static void write_raw_st(const char *path, const char *header, size_t data) {
    size_t h = strlen(header);
    unsigned char *buf = calloc(8 + h + data, 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) {
        buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    }
    memcpy(buf + 8, header, h);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, 8 + h + data, f), 8 + h + data);
    fclose(f);
    free(buf);
}

/* Opens a file with the given header and expects it refused with a message naming the file and
 * `name` (when not NULL); returns the code. */
static int refused(const char *header, size_t data, const char *name) {
    char path[1024], err[COMMON_ERR_LEN] = "";
    path_in_tmp(path, sizeof path, "hostile.safetensors");
    write_raw_st(path, header, data);
    model_st_file *f = NULL;
    int rc = model_st_open(&f, path, err);
    if (rc == 0) {
        fail_msg("accepted: %s", header);
    }
    assert_null(f);
    assert_non_null(strstr(err, path));
    if (name) {
        assert_non_null(strstr(err, name));
    }
    return rc;
}

static void test_shape_overflow_refused(void **state) {
    (void)state;
    /* 2^32 * 2^32 * 1 elements wrap to 0, which matched data_offsets [0, 0] */
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,1],"
            "\"data_offsets\":[0,0]}}",
            0, "'x'");
    refused("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
            0, "'x'");
    /* the element count fits (2^62) but the byte count (2^65) wraps to 0 */
    refused("{\"x\":{\"dtype\":\"I64\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,0]}}",
            0, "'x'");
    /* 2^33 * 2^31 F16 elements: 2^64 bytes wrap to 0 */
    refused("{\"y\":{\"dtype\":\"F16\",\"shape\":[8589934592,2147483648],\"data_offsets\":[0,0]}}",
            0, "'y'");
    /* empty, but the other dimensions multiply past 2^64: no consumer could index it */
    refused("{\"z\":{\"dtype\":\"F32\",\"shape\":[4294967296,0,4294967296],"
            "\"data_offsets\":[0,0]}}",
            0, "'z'");
    /* a second tensor after a good one is still checked */
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"b\":{\"dtype\":\"BF16\",\"shape\":[65536,65536,65536,65536],"
            "\"data_offsets\":[4,4]}}",
            4, "'b'");

    /* empty tensors with sane dimensions are fine, and everything accepted reads in bounds */
    char path[1024], err[COMMON_ERR_LEN];
    path_in_tmp(path, sizeof path, "empty.safetensors");
    write_raw_st(path,
                 "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,77],\"data_offsets\":[0,0]},"
                 "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                 "\"big\":{\"dtype\":\"F16\",\"shape\":[3,0,1048576],\"data_offsets\":[4,4]}}",
                 4);
    model_st_file *f = NULL;
    assert_int_equal(model_st_open(&f, path, err), 0);
    assert_int_equal(model_st_count(f), 3);
    float v[1] = {1.0f};
    model_shape s;
    assert_int_equal(model_st_read_f32(f, "e", v, 0, &s, err), 0);
    assert_int_equal(s.ndim, 2);
    assert_int_equal(model_shape_numel(&s), 0);
    assert_int_equal(model_st_read_f32(f, "s", v, 1, NULL, err), 0);
    assert_true(v[0] == 0.0f);
    assert_int_equal(model_st_read_f32(f, "big", v, 0, NULL, err), 0);
    model_st_close(&f);
}

static void test_overlap_around_empty_tensor(void **state) {
    (void)state;
    /* a [0, 8) and b [4, 12) overlap; the empty z at 4 sorts between them */
    int rc = refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                     12, "overlap");
    assert_int_equal(rc, COMMON_ERR_PARSE);
    char path[1024], err[COMMON_ERR_LEN];
    path_in_tmp(path, sizeof path, "hostile.safetensors");
    model_st_file *f = NULL;
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "'a'"));
    assert_non_null(strstr(err, "'b'"));
    /* several empties in a row, and one tensor inside a longer one further back */
    refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
            "\"z1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
            "\"z2\":{\"dtype\":\"I64\",\"shape\":[0,3],\"data_offsets\":[9,9]},"
            "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
            16, "overlap");
    /* empty tensors anywhere (inside another tensor, at its ends) overlap nothing */
    path_in_tmp(path, sizeof path, "touching.safetensors");
    write_raw_st(path,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                 "\"y\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                 16);
    assert_int_equal(model_st_open(&f, path, err), 0);
    model_st_close(&f);
}

static void test_open_not_a_regular_file(void **state) {
    (void)state;
    char path[1024], err[COMMON_ERR_LEN] = "";
    model_st_file *f = NULL;
    /* a directory opens and stats fine, and mapping it would fail with "No such device" */
    snprintf(path, sizeof path, "%s", test_tmpdir());
    assert_int_not_equal(model_st_open(&f, path, err), 0);
    assert_null(f);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "is a directory"));
    assert_null(strstr(err, "mmap"));
    /* a FIFO must not block the open waiting for a writer */
    path_in_tmp(path, sizeof path, "fifo.safetensors");
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_not_equal(model_st_open(&f, path, err), 0);
    assert_non_null(strstr(err, "not a regular file"));
    unlink(path);
}

/* A random 1-layer model (D 8, H 2, n_ctx 16, V 80) in the scratch dir under `name`, replacing
 * the one an earlier run left there. */
static void small_model(char *dir, size_t cap, const char *name) {
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json"};
    char path[1100];
    snprintf(dir, cap, "%s/%s", test_tmpdir(), name);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    assert_int_equal(test_random_model(dir, cap, name, 1, 8, 2, 16, 80, 3, MODEL_DTYPE_F32), 0);
}

/* Sets config.json's `key` to the JSON text `value` (e.g. "1e300", "\"x\""). */
static void set_config(const char *dir, const char *key, const char *value) {
    char path[1100];
    json_error_t jerr;
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *root = json_load_file(path, 0, &jerr);
    assert_non_null(root);
    json_t *v = json_loads(value, JSON_DECODE_ANY, &jerr);
    assert_non_null(v);
    assert_int_equal(json_object_set_new(root, key, v), 0);
    assert_int_equal(json_dump_file(root, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
    json_decref(root);
}

/* Loads dir with config key set to value and expects a refusal naming the key. */
static void config_refused(const char *dir, const char *key, const char *value) {
    char err[COMMON_ERR_LEN] = "";
    set_config(dir, key, value);
    model *m = NULL;
    int rc = model_load(&m, dir, NULL, err);
    if (rc == 0) {
        model_destroy(&m);
        fail_msg("config %s = %s accepted", key, value);
    }
    assert_null(m);
    if (!strstr(err, key) || !strstr(err, "config.json")) {
        fail_msg("config %s = %s: error does not name the key: %s", key, value, err);
    }
}

static void test_config_absurd_sizes_refused(void **state) {
    (void)state;
    char dir[1024], err[COMMON_ERR_LEN];
    small_model(dir, sizeof dir, "absurd");
    /* each, if accepted, sizes gigabytes of parameters */
    config_refused(dir, "n_embd", "16777216");
    set_config(dir, "n_embd", "8");
    config_refused(dir, "n_layer", "16777216");
    set_config(dir, "n_layer", "1");
    config_refused(dir, "n_head", "16777216");
    set_config(dir, "n_head", "2");
    config_refused(dir, "vocab_size", "16777216");
    set_config(dir, "vocab_size", "80");
    config_refused(dir, "n_positions", "16777216");
    set_config(dir, "n_positions", "16");
    config_refused(dir, "n_ctx", "16777216");
    set_config(dir, "n_ctx", "16");
    /* the limits admit GPT-2 XL's shape */
    assert_true(MODEL_MAX_LAYERS >= 48 && MODEL_MAX_D_MODEL >= 1600 && MODEL_MAX_HEADS >= 25 &&
                MODEL_MAX_VOCAB >= 50257 && MODEL_MAX_CTX >= 1024);
    model *m = NULL;
    assert_int_equal(model_load(&m, dir, NULL, err), 0);
    model_destroy(&m);
}

static void test_config_checked_against_weights_first(void **state) {
    (void)state;
    char dir[1024], err[COMMON_ERR_LEN] = "";
    small_model(dir, sizeof dir, "first");
    /* inside the limits, but the parameters would take ~10 GB; the file holds D 8, H 2 */
    set_config(dir, "n_embd", "4096");
    set_config(dir, "n_head", "16");
    set_config(dir, "n_layer", "48");
    set_config(dir, "vocab_size", "262144");
#ifdef HOSTILE_ASAN
    if (!hooks_installed) {
        assert_true(__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) > 0);
        hooks_installed = 1;
    }
    largest_alloc = 0;
#endif
    model *m = NULL;
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_INVALID);
    assert_null(m);
    assert_non_null(strstr(err, "transformer.wte.weight"));
    assert_non_null(strstr(err, "[80, 8]"));
    assert_non_null(strstr(err, "[262144, 4096]"));
#ifdef HOSTILE_ASAN
    /* nothing sized by the config was allocated before the file said no */
    if (largest_alloc > ((size_t)16 << 20)) {
        fail_msg("model_load allocated %zu bytes before checking the weights", largest_alloc);
    }
#endif
    /* a layer count above the file's: the missing tensor is named, nothing allocated first */
    set_config(dir, "n_embd", "8");
    set_config(dir, "n_head", "2");
    set_config(dir, "vocab_size", "80");
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "transformer.h.1."));
}

static void test_config_meaningless_values_refused(void **state) {
    (void)state;
    char dir[1024], err[COMMON_ERR_LEN];
    small_model(dir, sizeof dir, "meaningless");
    /* in float32 1e300 is inf (every LayerNorm output 0) and 1e-300 is 0 */
    config_refused(dir, "layer_norm_epsilon", "1e300");
    config_refused(dir, "layer_norm_epsilon", "1e-300");
    config_refused(dir, "layer_norm_epsilon", "1e-50");
    config_refused(dir, "layer_norm_epsilon", "5.0");
    config_refused(dir, "layer_norm_epsilon", "-1e-5");
    config_refused(dir, "layer_norm_epsilon", "\"1e-5\"");
    set_config(dir, "layer_norm_epsilon", "1e-6");
    /* integers: zero, negative, fractional, strings */
    config_refused(dir, "n_layer", "0");
    config_refused(dir, "n_layer", "-1");
    config_refused(dir, "n_layer", "1.5");
    config_refused(dir, "n_layer", "\"1\"");
    set_config(dir, "n_layer", "1");
    config_refused(dir, "n_positions", "8"); /* fewer than n_ctx */
    set_config(dir, "n_positions", "16");
    /* switches that are not booleans must not read as false */
    config_refused(dir, "scale_attn_by_inverse_layer_idx", "\"true\"");
    set_config(dir, "scale_attn_by_inverse_layer_idx", "false");
    config_refused(dir, "tie_word_embeddings", "0");
    set_config(dir, "tie_word_embeddings", "true");
    config_refused(dir, "activation_function", "7");
    set_config(dir, "activation_function", "\"gelu_new\"");
    model *m = NULL;
    assert_int_equal(model_load(&m, dir, NULL, err), 0);
    assert_true(model_get_config(m)->eps == 1e-6f);
    model_destroy(&m);
}

static void test_tokenizer_large_vocab_linear(void **state) {
    (void)state;
    enum { N = 200000 };
    char path[1024], err[COMMON_ERR_LEN];
    path_in_tmp(path, sizeof path, "large-tokenizer.json");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<s>\"}],"
               "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"},"
               "\"post_processor\":null,\"decoder\":null,"
               "\"model\":{\"type\":\"WordLevel\",\"unk_token\":\"<s>\",\"vocab\":{\"<s>\":0");
    for (int i = 1; i < N; i++) {
        fprintf(f, ",\"t%d\":%d", i, i);
    }
    fprintf(f, "}}}");
    assert_int_equal(fclose(f), 0);

    model_tokenizer *t = NULL;
    double t0 = common_now_s();
    assert_int_equal(model_tokenizer_load(&t, path, err), 0);
    double took = common_now_s() - t0;
    /* linear is well under a second even under the sanitizers; growing the table by one id
     * per token takes 25 s */
    if (took > 2.0) {
        fail_msg("loading %d tokens took %.2f s", N, took);
    }
    assert_int_equal(model_tokenizer_vocab_size(t), N);
    assert_int_equal(model_tokenizer_id(t, "t123456"), 123456);
    assert_int_equal(model_tokenizer_id(t, "t199999"), 199999);
    assert_int_equal(model_tokenizer_id(t, "t200000"), -1);
    assert_string_equal(model_tokenizer_token(t, 77777), "t77777");
    assert_int_equal(model_tokenizer_bos(t), 0);
    int32_t ids[4];
    size_t n = 0;
    assert_int_equal(model_tokenizer_encode(t, "t5 t199999", true, ids, NULL, 4, &n, err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 0);
    assert_int_equal(ids[1], 5);
    assert_int_equal(ids[2], 199999);
    model_tokenizer_destroy(&t);
}

/* Loads tokenizer text from memory and returns the code (the tokenizer is destroyed). */
static int parse_tokenizer(const char *json, char *err) {
    model_tokenizer *t = NULL;
    int rc = model_tokenizer_parse(&t, "inline/tokenizer.json", json, strlen(json), err);
    assert_true(rc == 0 ? t != NULL : t == NULL);
    model_tokenizer_destroy(&t);
    return rc;
}

/* A tokenizer.json with vocabulary {"<s>": 0, VOCAB} whose template's BOS has the given ids. */
#define BOS_TEMPLATE(vocab, ids)                                                                   \
    "{\"model\":{\"type\":\"WordLevel\",\"vocab\":{\"<s>\":0," vocab "}},"                         \
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["                             \
    "{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],"                          \
    "\"special_tokens\":{\"<s>\":{\"ids\":[" ids "]}}}}"

static void test_tokenizer_ids_checked(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    /* one id of 2^24 would size a 128 MB table for a 60-byte file */
    assert_int_equal(parse_tokenizer("{\"model\":{\"type\":\"WordLevel\",\"vocab\":"
                                     "{\"a\":0,\"big\":16777216}}}",
                                     err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "'big'"));
    assert_non_null(strstr(err, "inline/tokenizer.json"));
    /* a template id of 2^32 + 1 must not be cut to int32 (id 1) */
    assert_int_equal(parse_tokenizer(BOS_TEMPLATE("\"a\":1", "4294967297"), err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "'<s>'"));
    assert_int_equal(parse_tokenizer(BOS_TEMPLATE("\"a\":1", "1"), err), 0);
    /* an id inside the table that no token has */
    assert_int_equal(parse_tokenizer(BOS_TEMPLATE("\"a\":2", "1"), err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "'<s>'"));
}

/* Reads a fixture of tests/fixtures/random-tiny into an exactly sized buffer (no terminator,
 * so that reading past it is a sanitizer report). */
static unsigned char *fixture_bytes(const char *name, size_t *len) {
    char path[1024], err[COMMON_ERR_LEN];
    char *text = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/random-tiny/%s", CHESSLENS_SOURCE_DIR, name);
    assert_int_equal(common_read_file(path, &text, len, err), 0);
    unsigned char *exact = malloc(*len ? *len : 1);
    assert_non_null(exact);
    memcpy(exact, text, *len);
    free(text);
    return exact;
}

static void test_buffer_apis_match_files(void **state) {
    (void)state;
    char dir[1024], path[1100], err[COMMON_ERR_LEN];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/random-tiny", CHESSLENS_SOURCE_DIR);
    model *m = NULL;
    assert_int_equal(model_load(&m, dir, NULL, err), 0);
    const model_config *want = model_get_config(m);

    size_t len;
    unsigned char *bytes = fixture_bytes("config.json", &len);
    model_config cfg;
    assert_int_equal(model_config_parse(&cfg, "cfg", (const char *)bytes, len, err), 0);
    assert_memory_equal(&cfg, want, sizeof cfg);
    model_config untouched = cfg;
    assert_int_equal(model_config_parse(&cfg, "half", (const char *)bytes, len / 2, err),
                     COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "half"));
    assert_memory_equal(&cfg, &untouched, sizeof cfg);
    free(bytes);

    bytes = fixture_bytes("tokenizer.json", &len);
    model_tokenizer *t = NULL;
    assert_int_equal(model_tokenizer_parse(&t, "tok", (const char *)bytes, len, err), 0);
    const model_tokenizer *ref = model_get_tokenizer(m);
    assert_int_equal(model_tokenizer_vocab_size(t), model_tokenizer_vocab_size(ref));
    for (int32_t id = 0; id < (int32_t)model_tokenizer_vocab_size(ref); id++) {
        assert_string_equal(model_tokenizer_token(t, id), model_tokenizer_token(ref, id));
    }
    assert_int_equal(model_tokenizer_bos(t), model_tokenizer_bos(ref));
    model_tokenizer_destroy(&t);
    free(bytes);

    bytes = fixture_bytes("model.safetensors", &len);
    model_st_file *a = NULL, *b = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(model_st_open(&a, path, err), 0);
    assert_int_equal(model_st_open_buffer(&b, "mem", bytes, len, err), 0);
    assert_int_equal(model_st_count(a), model_st_count(b));
    for (size_t i = 0; i < model_st_count(a); i++) {
        size_t na, nb;
        const void *da = model_st_data(a, i, &na), *db = model_st_data(b, i, &nb);
        assert_string_equal(model_st_name(a, i), model_st_name(b, i));
        assert_int_equal(na, nb);
        assert_memory_equal(da, db, na);
        assert_true((const unsigned char *)db >= bytes &&
                    (const unsigned char *)db + nb <= bytes + len);
    }
    model_st_close(&a);
    model_st_close(&b);
    /* a truncated buffer is refused, naming the buffer */
    assert_int_equal(model_st_open_buffer(&b, "mem", bytes, len - 1, err), COMMON_ERR_PARSE);
    assert_null(b);
    assert_non_null(strstr(err, "mem"));
    free(bytes);
    model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_overflow_refused),
        cmocka_unit_test(test_overlap_around_empty_tensor),
        cmocka_unit_test(test_open_not_a_regular_file),
        cmocka_unit_test(test_config_absurd_sizes_refused),
        cmocka_unit_test(test_config_checked_against_weights_first),
        cmocka_unit_test(test_config_meaningless_values_refused),
        cmocka_unit_test(test_tokenizer_large_vocab_linear),
        cmocka_unit_test(test_tokenizer_ids_checked),
        cmocka_unit_test(test_buffer_apis_match_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
