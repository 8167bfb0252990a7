/*
 * test_guard: the chesslens command refuses what would give a wrong or partial result, as a
 * careless or hostile user would try it: flags (unknown, repeated, empty, " -1" counts), every
 * command's --help, corruptions that corrupt nothing, outputs that would overwrite an input,
 * writes that fail half-way (a file-size limit, and a 64 KiB tmpfs where the test may mount
 * one), output printed before the input is known to be good, neuron means of empty groups and
 * NUL bytes in a games file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_run.h"
#include "model/model.h"

#define TINY CHESSLENS_SOURCE_DIR "/tests/fixtures/random-tiny"
#define GAME "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6"

/* Runs args; asserts the exit code and that the output contains want; returns nothing. */
static void expect(const char *args, int want_status, const char *want) {
    int status;
    char *out = cli_run(args, &status);
    assert_non_null(out);
    if (status != want_status || strstr(out, want) == NULL) {
        print_error("chesslens %s\n  exit %d (want %d), output:\n%s\n  want: %s\n", args, status,
                    want_status, out, want);
        fail();
    }
    free(out);
}

static void scratch(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", cli_tmpdir(), name);
}

/* A copy of the random-tiny model in the scratch directory, to point outputs into. */
static void copy_model(char *dir, size_t cap) {
    scratch(dir, cap, "model-copy");
    char script[2048];
    snprintf(script, sizeof script, "rm -rf '%s' && cp -r '%s' '%s'", dir, TINY, dir);
    assert_int_equal(system(script), 0);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Number of entries of dir whose name contains part. */
static int count_entries(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e = d != NULL ? readdir(d) : NULL; e != NULL; e = readdir(d)) {
        n += strstr(e->d_name, part) != NULL;
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static void test_flags(void **state) {
    (void)state;
    expect("forward --model " TINY " --uci e2e4 --frob 1 --out x", 2, "unknown option '--frob'");
    expect("forward --model " TINY " --model " TINY " --uci e2e4 --out x", 2,
           "--model given twice");
    expect("patch --normalize --normalize --model " TINY, 2, "--normalize given twice");
    expect("chess random --n ' -1' --seed 1", 2, "--n must be a non-negative integer, not ' -1'");
    expect("chess random --n -1 --seed 1", 2, "--n must be a non-negative integer");
    expect("chess random --n 0x10 --seed 1", 2, "--n must be a non-negative integer");
    expect("chess perft --depth ' -1'", 2, "--depth must be an integer in [0, 20], not ' -1'");
    expect("chess perft --depth 21", 2, "--depth must be an integer in [0, 20]");
    expect("forward --model " TINY " --uci e2e4 --threads +2 --out x", 2,
           "--threads must be an integer");
    expect("forward --model " TINY " --uci e2e4 --hooks '' --out x", 2,
           "--hooks needs a non-empty value");
    expect("forward --model " TINY " --uci e2e4 --hooks ',,,' --out x", 1,
           "hooks ',,,' name no hook");
    expect("forward --model " TINY " --uci e2e4 --out", 2, "--out needs a value");
    expect("forward --uci e2e4 --out x", 2, "--model DIR is required");
    expect("decompose --model " TINY " --mode heads --uci e2e4 --out x", 2,
           "--mode must be one of all, attn, mlp, not 'heads'");
    expect("show", 2, "expected FILE.safetensors");
    expect("chess frob", 2, "unknown subcommand 'frob'");
}

static void test_every_help(void **state) {
    (void)state;
    static const char *const commands[] = {"--help",
                                           "chess --help",
                                           "chess perft --help",
                                           "chess legal --help",
                                           "chess pgn2uci -h",
                                           "chess random --help",
                                           "model --help",
                                           "model info --help",
                                           "model random --help",
                                           "forward --help",
                                           "patch --help",
                                           "decompose --help",
                                           "show --help"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        expect(commands[i], 0, "usage: chesslens");
    }
    /* a flag's line in the generated help names its value and what it does */
    expect("patch --help", 0, "--corrupt POS=TOKEN");
    expect("show --help", 0, "metadata");
}

static void test_corruptions(void **state) {
    (void)state;
    char out[512], args[2048];
    scratch(out, sizeof out, "corrupt.safetensors");
    unlink(out);
    const char *bad[][2] = {
        {"=d4", "want POSITION=TOKEN"},   {"x=d4", "want POSITION=TOKEN"},
        {" 3=d4", "want POSITION=TOKEN"}, {"3=", "want POSITION=TOKEN"},
        {"0=d4", "position 0 is <s>"},    {"4=e5", "'e5' is the clean token there"},
        {"99=d4", "outside the game"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args,
                 "patch --model " TINY " --uci '" GAME "' --corrupt '%s' --metric logit:e4 "
                 "--out %s",
                 bad[i][0], out);
        expect(args, 1, bad[i][1]);
        assert_int_equal(file_size(out), -1);
    }
    /* which of the two games is wrong is named */
    snprintf(args, sizeof args,
             "patch --model " TINY " --uci 'e2e4 e7e9' --corrupt-uci 'e2e4 e7e5' --metric "
             "logit:e4 --out %s",
             out);
    expect(args, 1, "--uci: ");
    snprintf(args, sizeof args,
             "patch --model " TINY " --uci 'e2e4 e7e5' --corrupt-uci 'e2e4 e7e9' --metric "
             "logit:e4 --out %s",
             out);
    expect(args, 1, "--corrupt-uci: ");
    /* the clean game must be legal; forward runs any game unless asked to check */
    snprintf(args, sizeof args,
             "patch --model " TINY " --uci 'e2e5 a1a8' --corrupt 1=d2 --metric logit:e4 --out %s",
             out);
    expect(args, 1, "--uci: move 1 'e2e5': illegal");
    snprintf(args, sizeof args, "forward --model " TINY " --uci 'e2e5 a1a8' --out %s", out);
    expect(args, 0, "wrote");
    snprintf(args, sizeof args,
             "forward --model " TINY " --uci 'e2e5 a1a8' --check-legal --out %s.2", out);
    expect(args, 1, "illegal");
    expect("forward --help", 0, "legality is not");
}

static void test_output_is_not_an_input(void **state) {
    (void)state;
    char dir[512], path[1024], args[4096];
    copy_model(dir, sizeof dir);
    static const char *const files[] = {"model.safetensors", "config.json", "tokenizer.json"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        long before = file_size(path);
        snprintf(args, sizeof args, "forward --model %s --uci e2e4 --out %s", dir, path);
        expect(args, 1, "it is the input");
        assert_int_equal(file_size(path), before);
    }
    /* a hard link to the model file is the same file */
    char link_path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    scratch(link_path, sizeof link_path, "alias.safetensors");
    unlink(link_path);
    assert_int_equal(link(path, link_path), 0);
    long before = file_size(path);
    snprintf(args, sizeof args,
             "patch --model %s --uci '" GAME "' --corrupt 3=d2 --metric logit:e4 --out %s", dir,
             link_path);
    expect(args, 1, "it is the input");
    assert_int_equal(file_size(path), before);
    /* the games file of decompose */
    char games[512];
    scratch(games, sizeof games, "games.txt");
    FILE *f = fopen(games, "w");
    assert_non_null(f);
    fputs(GAME "\n", f);
    fclose(f);
    before = file_size(games);
    snprintf(args, sizeof args, "decompose --model %s --games %s --out %s", dir, games, games);
    expect(args, 1, "it is the input");
    assert_int_equal(file_size(games), before);
    /* and the model still loads */
    snprintf(args, sizeof args, "model info %s", dir);
    expect(args, 0, "shape:");
}

/* Each command that writes a file, run under a file-size limit far below its output: the
 * write fails with EFBIG (SIGXFSZ ignored, so the process sees the error as on a full disk). */
static void test_failed_writes_leave_nothing(void **state) {
    (void)state;
    char dir[512], script[4096];
    scratch(dir, sizeof dir, "small");
    snprintf(script, sizeof script, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    assert_int_equal(system(script), 0);
    const char *commands[] = {
        "forward --model " TINY " --uci '" GAME "' --hooks all --out $D/forward.safetensors",
        "patch --model " TINY " --uci '" GAME "' --corrupt 3=d2 --metric logit:e4 --out "
        "$D/patch.safetensors",
        "decompose --model " TINY " --uci '" GAME "' --heads --out $D/decompose.safetensors",
        "model random --layers 2 --d-model 32 --heads 2 --ctx 16 --vocab 77 --seed 1 --out "
        "$D/random-model",
    };
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const char *cmd = commands[i];
        /* ulimit -f counts 512-byte blocks in POSIX sh: one block */
        snprintf(script, sizeof script, "D='%s'; trap '' XFSZ; ulimit -f 1; @ %s", dir, cmd);
        int status;
        char *out = cli_sh(script, &status);
        assert_non_null(out);
        if (status != 1 || strstr(out, "File too large") == NULL) {
            print_error("%s\n  exit %d, output:\n%s\n", cmd, status, out);
            fail();
        }
        free(out);
        assert_int_equal(count_entries(dir, ""), 2); /* "." and "..": nothing left behind */
    }
}

/* model random replaces an older model at its --out, but never a directory holding other
 * files. */
static void test_model_random_replaces_only_models(void **state) {
    (void)state;
    char dir[512], args[2048], path[1024];
    scratch(dir, sizeof dir, "replaced-model");
    snprintf(args, sizeof args, "rm -rf '%s'", dir);
    assert_int_equal(system(args), 0);
    snprintf(args, sizeof args,
             "model random --layers 1 --d-model 16 --heads 2 --ctx 8 --vocab 77 --seed 1 --out %s",
             dir);
    expect(args, 0, "wrote");
    snprintf(args, sizeof args,
             "model random --layers 2 --d-model 16 --heads 2 --ctx 8 --vocab 77 --seed 1 --out %s",
             dir);
    expect(args, 0, "wrote");
    snprintf(args, sizeof args, "model info %s", dir);
    expect(args, 0, "n_layers=2");
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(args, sizeof args,
             "model random --layers 1 --d-model 16 --heads 2 --ctx 8 --vocab 77 --seed 1 --out %s",
             dir);
    expect(args, 1, "holds notes.txt, which is not a model file");
    snprintf(args, sizeof args, "model info %s", dir);
    expect(args, 0, "n_layers=2");
    assert_int_equal(count_entries(cli_tmpdir(), "replaced-model.tmp-"), 0);
}

/* The same on a real full file system, where the test can mount one (root, a mount
 * namespace): a 64 KiB tmpfs. */
static void test_full_disk(void **state) {
    (void)state;
    if (geteuid() != 0 || system("unshare -m true >/dev/null 2>&1") != 0) {
        skip();
    }
    char dir[512], script[4096];
    scratch(dir, sizeof dir, "tmpfs");
    snprintf(script, sizeof script, "mkdir -p '%s'", dir);
    assert_int_equal(system(script), 0);
    snprintf(script, sizeof script,
             "unshare -m sh -c \"mount -t tmpfs -o size=64k tmpfs '%s' && "
             "@ forward --model " TINY " --uci '" GAME "' --hooks all --out '%s/f.safetensors'; "
             "echo exit=\\$?; ls -A '%s' | wc -l\"",
             dir, dir, dir);
    int status;
    char *out = cli_sh(script, &status);
    assert_non_null(out);
    if (strstr(out, "No space left on device") == NULL || strstr(out, "exit=1\n0\n") == NULL) {
        print_error("output:\n%s\n", out);
        fail();
    }
    free(out);
}

static void test_short_games_have_no_nan(void **state) {
    (void)state;
    char games[512], out_path[512], args[2048];
    scratch(games, sizeof games, "short-games.txt");
    scratch(out_path, sizeof out_path, "short.safetensors");
    FILE *f = fopen(games, "w");
    assert_non_null(f);
    fputs(GAME "\n# a comment\ne2e4 e7e5\n", f);
    fclose(f);
    snprintf(args, sizeof args, "decompose --model " TINY " --games %s --out %s", games, out_path);
    expect(args, 0, "neuron_means.slice left out");
    char err[COMMON_ERR_LEN];
    model_st_file *st = NULL;
    assert_int_equal(model_st_open(&st, out_path, err), 0);
    assert_true(model_st_find(st, "neuron_means.slice") < 0);
    assert_true(model_st_find(st, "neuron_means.all") >= 0);
    const char *counts = model_st_metadata(st, "neuron_means.positions");
    assert_non_null(counts);
    assert_non_null(strstr(counts, "\"slice\":0"));
    for (size_t i = 0; i < model_st_count(st); i++) {
        model_dtype dtype;
        model_shape shape;
        model_st_info(st, i, &dtype, &shape);
        size_t n = model_shape_numel(&shape);
        float *v = malloc(n * sizeof *v);
        assert_non_null(v);
        assert_int_equal(model_st_read_f32(st, model_st_name(st, i), v, n, NULL, err), 0);
        for (size_t k = 0; k < n; k++) {
            assert_true(isfinite(v[k]));
        }
        free(v);
    }
    model_st_close(&st);
}

/* A NUL byte inside a line of a games file is an error naming the line, not the end of the
 * file ("1 games", exit 0, before). */
static void test_games_file_nul(void **state) {
    (void)state;
    char games[512], out_path[512], args[2048];
    scratch(games, sizeof games, "nul-games.txt");
    scratch(out_path, sizeof out_path, "nul.safetensors");
    unlink(out_path);
    FILE *f = fopen(games, "wb");
    assert_non_null(f);
    static const char text[] = GAME "\n# comment\ne2e4 e7e5\0 g1f3\n" GAME "\n";
    fwrite(text, 1, sizeof text - 1, f);
    fclose(f);
    snprintf(args, sizeof args, "decompose --model " TINY " --games %s --out %s", games, out_path);
    expect(args, 1, "line 3: NUL byte");
    assert_int_equal(file_size(out_path), -1);
    /* a file of comments only holds no games */
    f = fopen(games, "w");
    assert_non_null(f);
    fputs("# nothing\n\n", f);
    fclose(f);
    expect(args, 1, "holds no games");
}

/* --tokens N keeps a prefix that may end inside a move: the logits of `forward --tokens 4` are
 * the first 4 rows of the full run's (causality), and a prefix longer than the game is refused. */
static void test_tokens_prefix(void **state) {
    (void)state;
    char full[512], part[512], args[2048], err[COMMON_ERR_LEN];
    scratch(full, sizeof full, "prefix-full.safetensors");
    scratch(part, sizeof part, "prefix-4.safetensors");
    snprintf(args, sizeof args, "forward --model " TINY " --uci '" GAME "' --out %s", full);
    expect(args, 0, "13 tokens");
    snprintf(args, sizeof args, "forward --model " TINY " --uci '" GAME "' --tokens 4 --out %s",
             part);
    expect(args, 0, "4 tokens");
    model_st_file *a = NULL, *b = NULL;
    assert_int_equal(model_st_open(&a, full, err), 0);
    assert_int_equal(model_st_open(&b, part, err), 0);
    float la[13 * 83], lb[4 * 83];
    assert_int_equal(model_st_read_f32(a, "logits", la, 13 * 83, NULL, err), 0);
    assert_int_equal(model_st_read_f32(b, "logits", lb, 4 * 83, NULL, err), 0);
    for (size_t i = 0; i < 4 * 83; i++) {
        assert_true(fabsf(la[i] - lb[i]) <= 1e-5f);
    }
    model_st_close(&a);
    model_st_close(&b);
    snprintf(args, sizeof args,
             "patch --model " TINY " --uci '" GAME "' --tokens 8 --corrupt 7=d2 --metric logit:e4 "
             "--out %s",
             part);
    expect(args, 0, "[3, 3, 8]");
    snprintf(args, sizeof args,
             "patch --model " TINY " --uci '" GAME "' --tokens 8 --corrupt 8=d2 --metric logit:e4 "
             "--out %s",
             part);
    expect(args, 1, "outside the game");
    snprintf(args, sizeof args, "forward --model " TINY " --uci e2e4 --tokens 4 --out %s", part);
    expect(args, 1, "--tokens 4: the game has only 3 tokens");
}

int main(void) {
    if (access(cli_bin(), X_OK) != 0) {
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_every_help),
        cmocka_unit_test(test_corruptions),
        cmocka_unit_test(test_output_is_not_an_input),
        cmocka_unit_test(test_failed_writes_leave_nothing),
        cmocka_unit_test(test_model_random_replaces_only_models),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_short_games_have_no_nan),
        cmocka_unit_test(test_games_file_nul),
        cmocka_unit_test(test_tokens_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
