/*
 * `chesslens patch` and `chesslens decompose` end to end on the random-tiny fixture: outputs
 * carry TL's names, shapes and labels, fast and --plain agree, and bad inputs (a corruption
 * position outside the game, a token not in the vocabulary, games of different lengths, a
 * metric token missing, an illegal game for legal statistics) fail with a clear message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "interp_test_util.h"

#define MODEL_DIR CHESSLENS_SOURCE_DIR "/tests/fixtures/random-tiny"
#define BIN CHESSLENS_BINARY_DIR "/cli/chesslens"
#define GAME "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6 b5a4 g8f6"

/* Runs the command line with stderr captured; returns the exit status, *msg gets stderr. */
static int run(const char *args, char *msg, size_t cap) {
    char errfile[512], cmd[8192];
    snprintf(errfile, sizeof errfile, "%s/stderr.txt", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>%s", BIN, args, errfile);
    int st = system(cmd);
    msg[0] = '\0';
    FILE *f = fopen(errfile, "r");
    if (f != NULL) {
        size_t n = fread(msg, 1, cap - 1, f);
        msg[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void out_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", test_tmpdir(), name);
}

static void test_patch_command(void **state) {
    (void)state;
    if (access(BIN, X_OK) != 0) {
        skip();
    }
    char msg[2048], args[4096], p1[512], p2[512], err[COMMON_ERR_LEN];
    out_path(p1, sizeof p1, "fast.safetensors");
    out_path(p2, sizeof p2, "plain.safetensors");
    snprintf(args, sizeof args,
             "patch --model %s --uci '" GAME "' --corrupt 16=d6 --metric logit:e4 --normalize "
             "--out %s",
             MODEL_DIR, p1);
    assert_int_equal(run(args, msg, sizeof msg), 0);
    snprintf(args, sizeof args,
             "patch --model %s --uci '" GAME "' --corrupt 16=d6 --metric logit:e4 --normalize "
             "--plain --out %s",
             MODEL_DIR, p2);
    assert_int_equal(run(args, msg, sizeof msg), 0);
    model_st_file *a = NULL, *b = NULL;
    assert_int_equal(model_st_open(&a, p1, err), 0);
    assert_int_equal(model_st_open(&b, p2, err), 0);
    long i = model_st_find(a, "block_every");
    assert_true(i >= 0);
    model_dtype dt;
    model_shape s;
    model_st_info(a, (size_t)i, &dt, &s);
    assert_int_equal(s.ndim, 3);
    assert_int_equal(s.dims[0], 3);
    assert_int_equal(s.dims[1], 3);  /* layers */
    assert_int_equal(s.dims[2], 17); /* tokens */
    assert_string_equal(model_st_metadata(a, "labels"), "resid_pre,attn_out,mlp_out");
    assert_string_equal(model_st_metadata(a, "axes"), "component,layer,pos");
    assert_string_equal(model_st_metadata(b, "algorithm"), "plain");
    i = model_st_find(a, "pattern_diff");
    assert_true(i >= 0);
    model_st_info(a, (size_t)i, &dt, &s);
    assert_int_equal(s.ndim, 3); /* [L, H, T] */
    assert_int_equal(s.dims[1], 3);
    assert_int_equal(s.dims[2], 17);
    assert_true(model_st_find(a, "neuron_diff_dla") >= 0);
    float va[3 * 3 * 17], vb[3 * 3 * 17];
    assert_int_equal(model_st_read_f32(a, "block_every", va, 153, NULL, err), 0);
    assert_int_equal(model_st_read_f32(b, "block_every", vb, 153, NULL, err), 0);
    assert_true(max_abs_diff(va, vb, 153, NULL) <= 1e-4);
    /* resid_pre at layer 0 of the corrupted position restores the clean run */
    assert_float_equal(va[16], 1.0, 1e-4);
    model_st_close(&a);
    model_st_close(&b);

    /* bad inputs */
    snprintf(args, sizeof args,
             "patch --model %s --uci '" GAME "' --corrupt 17=d6 --metric logit:e4 --out %s",
             MODEL_DIR, p1);
    assert_int_equal(run(args, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "outside the game"));
    snprintf(args, sizeof args,
             "patch --model %s --uci '" GAME "' --corrupt 16=k9 --metric logit:e4 --out %s",
             MODEL_DIR, p1);
    assert_int_equal(run(args, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "'k9' is not in the model's vocabulary"));
    snprintf(args, sizeof args,
             "patch --model %s --uci '" GAME "' --corrupt-uci 'e2e4 e7e5' --metric logit:e4 "
             "--out %s",
             MODEL_DIR, p1);
    assert_int_equal(run(args, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "different lengths"));
    snprintf(args, sizeof args,
             "patch --model %s --uci '" GAME "' --corrupt 16=d6 --metric logit:i9 --out %s",
             MODEL_DIR, p1);
    assert_int_equal(run(args, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "metric token 'i9'"));
    snprintf(args, sizeof args,
             "patch --model %s --uci '" GAME "' --corrupt 16=d6 --metric logit:e4 --kind nope "
             "--out %s",
             MODEL_DIR, p1);
    assert_int_equal(run(args, msg, sizeof msg), 2);
    assert_non_null(strstr(msg, "unknown --kind 'nope'"));
    snprintf(args, sizeof args, "patch --model %s --uci '" GAME "' --metric logit:e4 --out %s",
             MODEL_DIR, p1);
    assert_int_equal(run(args, msg, sizeof msg), 2);
}

static void test_decompose_command(void **state) {
    (void)state;
    if (access(BIN, X_OK) != 0) {
        skip();
    }
    char msg[2048], args[4096], p[512], games[512], err[COMMON_ERR_LEN];
    out_path(p, sizeof p, "decomp.safetensors");
    snprintf(args, sizeof args,
             "decompose --model %s --uci '" GAME "' --mode attn --heads --legal-stats --out %s",
             MODEL_DIR, p);
    assert_int_equal(run(args, msg, sizeof msg), 0);
    model_st_file *f = NULL;
    assert_int_equal(model_st_open(&f, p, err), 0);
    model_dtype dt;
    model_shape s;
    long i = model_st_find(f, "decompose_resid");
    assert_true(i >= 0);
    model_st_info(f, (size_t)i, &dt, &s);
    /* embed, pos_embed, 3 attn_out rows, 9 heads; [n, 1, T, D] */
    assert_int_equal(s.ndim, 4);
    assert_int_equal(s.dims[0], 14);
    assert_int_equal(s.dims[1], 1);
    assert_int_equal(s.dims[2], 17);
    assert_int_equal(s.dims[3], 48);
    assert_non_null(strstr(model_st_metadata(f, "labels"), "\"2_attn_out\",\"L0H0\""));
    assert_true(model_st_find(f, "legal_stats.min_minus_max") >= 0);
    float mass[17];
    assert_int_equal(model_st_read_f32(f, "predictions.legal_mass", mass, 17, &s, err), 0);
    for (int t = 0; t < 17; t++) {
        assert_true(mass[t] > 0.0f && mass[t] < 1.0f);
    }
    model_st_close(&f);

    /* a file of games: neuron means and legal statistics */
    out_path(games, sizeof games, "games.txt");
    FILE *g = fopen(games, "w");
    assert_non_null(g);
    fprintf(g, "%s\n\nd2d4 d7d5 c2c4\n# a comment\ng1f3\n", GAME);
    fclose(g);
    snprintf(args, sizeof args, "decompose --model %s --games %s --legal-stats --batch 2 --out %s",
             MODEL_DIR, games, p);
    assert_int_equal(run(args, msg, sizeof msg), 0);
    assert_int_equal(model_st_open(&f, p, err), 0);
    assert_string_equal(model_st_metadata(f, "n_games"), "3");
    float means[3 * 192];
    assert_int_equal(model_st_read_f32(f, "neuron_means.white_from", means, 576, &s, err), 0);
    assert_int_equal(s.dims[0], 3);
    assert_int_equal(s.dims[1], 192);
    model_st_close(&f);

    /* an illegal game cannot give legal statistics; a malformed game names itself */
    snprintf(args, sizeof args,
             "decompose --model %s --uci 'e2e4 e7e5 e1e3' --legal-stats --out %s", MODEL_DIR, p);
    assert_int_equal(run(args, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "e1e3"));
    g = fopen(games, "w");
    fprintf(g, "e2e4 e7e5\ne2e4 zz\n");
    fclose(g);
    snprintf(args, sizeof args, "decompose --model %s --games %s --out %s", MODEL_DIR, games, p);
    assert_int_equal(run(args, msg, sizeof msg), 1);
    assert_non_null(strstr(msg, "line 2"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patch_command),
        cmocka_unit_test(test_decompose_command),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
