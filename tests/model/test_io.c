/*
 * Files in and out of the model library: the safetensors reader and writer (round trips,
 * half-precision rounding, truncated and inconsistent headers), the tokenizer (pieces, offsets,
 * added tokens, unknown pieces, decoding), model loading errors (each names the file, key,
 * tensor or token at fault) and the weight-processing identities TL relies on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "model/model.h"
#include "tests/model/model_test_util.h"

static void path_in_tmp(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", test_tmpdir(), name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* A file with the given header JSON and `data` bytes of zeros. */
static void write_raw_st(const char *path, const char *header, size_t data) {
    size_t h = strlen(header);
    unsigned char *buf = calloc(8 + h + data, 1);
    for (int i = 0; i < 8; i++) {
        buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    }
    memcpy(buf + 8, header, h);
    write_bytes(path, buf, 8 + h + data);
    free(buf);
}

static void test_safetensors_round_trip(void **state) {
    (void)state;
    char path[1024], err[COMMON_ERR_LEN];
    path_in_tmp(path, sizeof path, "rt.safetensors");
    float x[6] = {1.0f, -2.5f, 3.14159f, 65504.0f, 1e-8f, 0.1f};
    int32_t ids[3] = {1, -7, 1 << 30};
    model_shape s23 = {2, {2, 3}}, s3 = {1, {3}}, s0 = {0, {0}};
    model_st_writer *w = NULL;
    assert_int_equal(model_st_writer_new(&w, err), 0);
    assert_int_equal(model_st_writer_add_f32(w, "a", MODEL_DTYPE_F32, &s23, x, err), 0);
    assert_int_equal(model_st_writer_add_f32(w, "h", MODEL_DTYPE_F16, &s23, x, err), 0);
    assert_int_equal(model_st_writer_add_f32(w, "b", MODEL_DTYPE_BF16, &s23, x, err), 0);
    assert_int_equal(model_st_writer_add(w, "i", MODEL_DTYPE_I32, &s3, ids, err), 0);
    assert_int_equal(model_st_writer_add_f32(w, "scalar", MODEL_DTYPE_F32, &s0, x, err), 0);
    assert_int_equal(model_st_writer_add_f32(w, "a", MODEL_DTYPE_F32, &s3, x, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(model_st_writer_set_metadata(w, "inputs", "[\"e2e4\"]", err), 0);
    assert_int_equal(model_st_writer_write(w, path, err), 0);
    model_st_writer_destroy(&w);
    assert_null(w);

    model_st_file *f = NULL;
    assert_int_equal(model_st_open(&f, path, err), 0);
    assert_int_equal(model_st_count(f), 5);
    assert_string_equal(model_st_metadata(f, "inputs"), "[\"e2e4\"]");
    assert_null(model_st_metadata(f, "nope"));
    float y[6];
    model_shape s;
    assert_int_equal(model_st_read_f32(f, "a", y, 6, &s, err), 0);
    assert_true(model_shape_equal(&s, &s23));
    assert_memory_equal(x, y, sizeof x);
    assert_int_equal(model_st_read_f32(f, "h", y, 6, NULL, err), 0);
    for (int i = 0; i < 6; i++) {
        assert_true(y[i] == model_f16_to_f32(model_f32_to_f16(x[i])));
        assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 1e-3f + 6e-8f);
    }
    assert_true(y[3] == 65504.0f);
    assert_int_equal(model_st_read_f32(f, "b", y, 6, NULL, err), 0);
    for (int i = 0; i < 6; i++) {
        assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 4e-3f);
    }
    int32_t j[3];
    assert_int_equal(model_st_read_i32(f, "i", j, 3, NULL, err), 0);
    assert_memory_equal(ids, j, sizeof ids);
    assert_int_equal(model_st_read_f32(f, "i", y, 6, NULL, err), COMMON_ERR_UNSUPPORTED);
    assert_int_equal(model_st_read_f32(f, "a", y, 5, NULL, err), COMMON_ERR_INVALID);
    assert_int_equal(model_st_read_f32(f, "zz", y, 6, NULL, err), COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "'zz'"));
    model_st_close(&f);
    assert_null(f);

    /* rounding: half-way cases go to even, overflow to inf, bf16 keeps NaN */
    assert_int_equal(model_f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3c00);
    assert_int_equal(model_f32_to_f16(1.0f + 3.0f / 2048.0f), 0x3c02);
    assert_int_equal(model_f32_to_f16(1e6f), 0x7c00);
    assert_int_equal(model_f32_to_f16(5.9604645e-8f), 0x0001);
    assert_true(isnan(model_bf16_to_f32(model_f32_to_bf16(NAN))));
    assert_int_equal(model_f32_to_bf16(1.0f), 0x3f80);
}

static void test_safetensors_bad_files(void **state) {
    (void)state;
    char path[1024], err[COMMON_ERR_LEN];
    model_st_file *f = NULL;
    path_in_tmp(path, sizeof path, "bad.safetensors");
    /* data section shorter than the header says */
    write_raw_st(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "'w'"));
    assert_non_null(strstr(err, "truncated"));
    assert_non_null(strstr(err, path));
    /* sizes inconsistent with the shape */
    write_raw_st(path, "{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "'w'"));
    /* overlapping tensors */
    write_raw_st(path,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                 12);
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "overlap"));
    /* unknown dtype, broken JSON, header longer than the file, empty file */
    write_raw_st(path, "{\"w\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_UNSUPPORTED);
    write_raw_st(path, "{\"w\":", 0);
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_PARSE);
    unsigned char longhdr[12] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    write_bytes(path, longhdr, sizeof longhdr);
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "truncated"));
    write_bytes(path, longhdr, 3);
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_PARSE);
    path_in_tmp(path, sizeof path, "missing.safetensors");
    assert_int_equal(model_st_open(&f, path, err), COMMON_ERR_NOT_FOUND);
    assert_null(f);
}

static const model_tokenizer *chess_tokenizer(model_tokenizer **keep) {
    char path[1100], err[COMMON_ERR_LEN];
    char dir[1024];
    assert_int_equal(test_random_model(dir, sizeof dir, "tok", 1, 8, 2, 16, 80, 1, MODEL_DTYPE_F32),
                     0);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(model_tokenizer_load(keep, path, err), 0);
    return *keep;
}

static void test_tokenizer(void **state) {
    (void)state;
    model_tokenizer *keep = NULL;
    const model_tokenizer *t = chess_tokenizer(&keep);
    char err[COMMON_ERR_LEN];
    assert_int_equal(model_tokenizer_vocab_size(t), 80);
    assert_int_equal(model_tokenizer_bos(t), 1);
    assert_int_equal(model_tokenizer_pad(t), 0);
    assert_int_equal(model_tokenizer_id(t, "c2"), 9);
    assert_int_equal(model_tokenizer_id(t, "a6"), 72);
    assert_int_equal(model_tokenizer_id(t, "n"), 76);
    assert_int_equal(model_tokenizer_id(t, "<extra_2>"), 79);
    assert_string_equal(model_tokenizer_token(t, 28), "e4");
    assert_null(model_tokenizer_token(t, 80));

    int32_t ids[16];
    model_token_span sp[16];
    size_t n;
    assert_int_equal(model_tokenizer_encode(t, "e2e4 e7e8q", true, ids, sp, 16, &n, err), 0);
    assert_int_equal(n, 6);
    const char *want[6] = {"<s>", "e2", "e4", "e7", "e8", "q"};
    size_t spans[6][2] = {{0, 0}, {0, 2}, {2, 4}, {5, 7}, {7, 9}, {9, 10}};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(model_tokenizer_token(t, ids[i]), want[i]);
        assert_int_equal(sp[i].start, spans[i][0]);
        assert_int_equal(sp[i].end, spans[i][1]);
    }
    /* special tokens are split out first; offsets count characters, not bytes */
    assert_int_equal(model_tokenizer_encode(t, "<s>d2d4  </s>", false, ids, sp, 16, &n, err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[3], 2);
    assert_int_equal(sp[3].start, 9);
    assert_int_equal(model_tokenizer_encode(t, "\xc3\xa9 e2", false, ids, sp, 16, &n, err),
                     COMMON_ERR_NOT_FOUND);
    assert_int_equal(model_tokenizer_encode(t, "e4 \xc3\xa9x e2", false, ids, sp, 16, &n, err),
                     COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "at character 3"));
    /* unknown piece: named, with its character offset */
    assert_int_equal(model_tokenizer_encode(t, "e2e4 Pe2e4", true, ids, sp, 16, &n, err),
                     COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "'Pe2'"));
    assert_non_null(strstr(err, "character 5"));
    assert_int_equal(model_tokenizer_encode(t, "e2e4 e9", true, ids, sp, 16, &n, err),
                     COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "'e9'"));
    /* capacity */
    assert_int_equal(model_tokenizer_encode(t, "e2e4 e7e5 g1f3", true, ids, sp, 3, &n, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(n, 7);
    /* decode */
    char text[64];
    int32_t d[4] = {1, 28, 12, 73};
    assert_int_equal(model_tokenizer_decode(t, d, 4, text, sizeof text, err), 0);
    assert_string_equal(text, "<s> e4 e5 q");
    d[2] = 99;
    assert_int_equal(model_tokenizer_decode(t, d, 4, text, sizeof text, err), COMMON_ERR_INVALID);
    model_tokenizer_destroy(&keep);
    assert_null(keep);
}

/* Replaces the first occurrence of `from` (same length as `to` for binary files) in a file. */
static void replace_in_file(const char *path, const char *from, const char *to) {
    char *text = NULL;
    size_t len, fl = strlen(from);
    char err[COMMON_ERR_LEN];
    assert_int_equal(common_read_file(path, &text, &len, err), 0);
    size_t at = 0;
    while (at + fl <= len && memcmp(text + at, from, fl) != 0) {
        at++;
    }
    assert_true(at + fl <= len);
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, at, f);
    fwrite(to, 1, strlen(to), f);
    fwrite(text + at + fl, 1, len - at - fl, f);
    fclose(f);
    free(text);
}

static void test_load_errors(void **state) {
    (void)state;
    char dir[1024], path[1100], err[COMMON_ERR_LEN];
    model *m = NULL;
    path_in_tmp(dir, sizeof dir, "no-such-model");
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "config.json"));

    /* unsupported activation */
    assert_int_equal(
        test_random_model(dir, sizeof dir, "bad-act", 1, 8, 2, 16, 77, 1, MODEL_DTYPE_F32), 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    replace_in_file(path, "\"gelu_new\"", "\"relu\"");
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "relu"));
    /* n_embd not a multiple of n_head */
    replace_in_file(path, "\"relu\"", "\"gelu_new\"");
    replace_in_file(path, "\"n_head\": 2", "\"n_head\": 3");
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "n_head"));
    replace_in_file(path, "\"n_head\": 3", "\"n_head\": 2");
    /* shapes in the config disagree with the weights: error names the tensor and both shapes */
    replace_in_file(path, "\"n_embd\": 8", "\"n_embd\": 12");
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "transformer.wte.weight"));
    assert_non_null(strstr(err, "[77, 8]"));
    replace_in_file(path, "\"n_embd\": 12", "\"n_embd\": 8");
    assert_int_equal(model_load(&m, dir, NULL, err), 0);
    model_destroy(&m);
    assert_null(m);
    /* missing tensor */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    replace_in_file(path, "transformer.h.0.ln_2.bias", "transformer.h.0.ln_2.bia_");
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "transformer.h.0.ln_2.bias"));
    /* truncated weights file */
    assert_int_equal(
        test_random_model(dir, sizeof dir, "trunc", 1, 8, 2, 16, 77, 1, MODEL_DTYPE_F16), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, size - 10), 0);
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "model.safetensors"));
    assert_non_null(strstr(err, "truncated"));
    /* missing tokenizer */
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(model_load(&m, dir, NULL, err), COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "tokenizer.json"));
    assert_null(m);
}

/* Rows of a [rows, n] array whose means are all ~0. */
static bool rows_centred(const float *x, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; r++) {
        double s = 0, a = 0;
        for (size_t i = 0; i < n; i++) {
            s += x[r * n + i];
            a += fabs(x[r * n + i]);
        }
        if (fabs(s) > 1e-5 * (a + 1e-6) * 10) {
            return false;
        }
    }
    return true;
}

static void test_processing_identities(void **state) {
    (void)state;
    char dir[1024], err[COMMON_ERR_LEN];
    assert_int_equal(
        test_random_model(dir, sizeof dir, "proc", 2, 16, 2, 16, 77, 5, MODEL_DTYPE_BF16), 0);
    model *mp = NULL, *mn = NULL;
    model_processing none = model_processing_none();
    assert_int_equal(model_load(&mp, dir, NULL, err), 0);
    assert_int_equal(model_load(&mn, dir, &none, err), 0);
    model_shape s;
    /* unprocessed: TL conversion of the raw weights; LN parameters present */
    assert_non_null(model_param(mn, "blocks.1.ln2.w", &s));
    assert_null(model_param(mp, "blocks.1.ln2.w", NULL));
    assert_null(model_param(mp, "ln_final.b", NULL));
    assert_int_equal(model_param_count(mn), model_param_count(mp) + 4 * 2 + 2);
    const float *bu = model_param(mn, "unembed.b_U", &s);
    for (size_t i = 0; i < s.dims[0]; i++) {
        assert_true(bu[i] == 0.0f);
    }
    const float *wu = model_param(mn, "unembed.W_U", NULL),
                *we = model_param(mn, "embed.W_E", NULL);
    assert_true(wu[3 * 77 + 5] == we[5 * 16 + 3]); /* W_U = W_E^T */
    /* processed: writing weights centred over d_model, unembed over vocab, b_V folded away */
    assert_true(rows_centred(model_param(mp, "embed.W_E", NULL), 77, 16));
    assert_true(rows_centred(model_param(mp, "pos_embed.W_pos", NULL), 16, 16));
    assert_true(rows_centred(model_param(mp, "blocks.0.attn.W_O", NULL), 16, 16));
    assert_true(rows_centred(model_param(mp, "blocks.1.mlp.W_out", NULL), 64, 16));
    assert_true(rows_centred(model_param(mp, "unembed.W_U", NULL), 16, 77));
    const float *bv = model_param(mp, "blocks.1.attn.b_V", &s);
    for (size_t i = 0; i < model_shape_numel(&s); i++) {
        assert_true(bv[i] == 0.0f);
    }
    /* same function: log-softmax of logits agree, and processed residuals have zero mean */
    model_backend *be = NULL;
    model_session *sp = NULL, *sn = NULL;
    assert_int_equal(model_backend_cpu_new(&be, 1, err), 0);
    assert_int_equal(model_session_new(&sp, mp, be, err), 0);
    assert_int_equal(model_session_new(&sn, mn, be, err), 0);
    int32_t tok[9] = {1, 26, 28, 11, 12, 44, 65, 15, 16};
    model_hook rp = {MODEL_HOOK_RESID_POST, 1};
    model_request r;
    model_cache *cp = NULL, *cn = NULL;
    model_request_init(&r, sp, tok, 1, 9);
    r.hooks = &rp;
    r.n_hooks = 1;
    assert_int_equal(model_run(sp, &r, &cp, err), 0);
    r.hooks = NULL;
    r.n_hooks = 0;
    assert_int_equal(model_run(sn, &r, &cn, err), 0);
    float lp[9 * 77], ln[9 * 77], res[9 * 16];
    model_hook lg = {MODEL_HOOK_LOGITS, -1};
    assert_int_equal(model_cache_download(cp, lg, lp, 9 * 77, err), 0);
    assert_int_equal(model_cache_download(cn, lg, ln, 9 * 77, err), 0);
    for (size_t t = 0; t < 9; t++) {
        double zp = 0, zn = 0;
        for (size_t v = 0; v < 77; v++) {
            zp += exp(lp[t * 77 + v]);
            zn += exp(ln[t * 77 + v]);
        }
        for (size_t v = 0; v < 77; v++) {
            double a = lp[t * 77 + v] - log(zp), b = ln[t * 77 + v] - log(zn);
            assert_true(fabs(a - b) < 1e-4);
        }
    }
    assert_int_equal(model_cache_download(cp, rp, res, 9 * 16, err), 0);
    assert_true(rows_centred(res, 9, 16));
    model_cache_destroy(&cp);
    model_cache_destroy(&cn);
    model_session_destroy(&sp);
    model_session_destroy(&sn);
    model_backend_destroy(&be);
    model_destroy(&mp);
    model_destroy(&mn);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors_round_trip),
        cmocka_unit_test(test_safetensors_bad_files),
        cmocka_unit_test(test_tokenizer),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_processing_identities),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
