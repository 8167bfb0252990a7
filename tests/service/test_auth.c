/*
 * test_auth: CurveZMQ authentication of the sweep service (proto/PROTOCOL.md, "Authentication";
 * RELIABILITY.md §6, row 17), with the real executables on loopback and the library's parts in
 * this process.
 *
 * - `chesslens keygen`: PREFIX.key 0600 (also under umask 000) with its public and secret line,
 *   PREFIX.pub 0644 (also under umask 077) with the public line only, the public key printed;
 *   an existing PREFIX.key or PREFIX.pub is never written over, and no half pair is left.
 * - Key files: every malformed one, and a secret key file group or others may access, is
 *   refused; the loopback rule on a table of endpoints; the ZAP handler's answers to
 *   well-formed and malformed requests, and its refusals to start.
 * - A coordinator with --curve-key and --clients: a listed worker runs a sweep submitted and
 *   awaited with listed client keys (from the environment and from flags); after the
 *   coordinator was stopped (SIGSTOP) long enough for the worker and a client to open fresh
 *   sockets, both get in again and a second sweep runs.
 * - An unlisted key gets nothing: a raw CURVE client sees the handshake refused (400) and no
 *   WELCOME (while a listed key, as control, is welcomed), an unlisted chesslens-worker never
 *   registers, `chesslens status` with it times out saying the key was refused, and the
 *   coordinator logged the refusals with the key. A client without keys, or with the wrong
 *   server key, times out too, saying why.
 * - Refusals to start: a group- or other-readable secret key file (coordinator, worker, client),
 *   --curve-key without --clients (and the reverse), and plain tcp on 0.0.0.0 or * without
 *   --insecure-listen, refused before binding: the port it names is held by this test, so an
 *   attempt to bind would say "Address already in use", which --insecure-listen (and CURVE)
 *   then do, as controls. coordinator_service_run itself refuses the same, before it creates
 *   the database.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <zmq.h>

#include "coordinator/curve.h"
#include "coordinator/service.h"
#include "svc_harness.h"
#include "tests/cli/cli_run.h"

#define WORKER_BIN CHESSLENS_BINARY_DIR "/worker/chesslens-worker"
#define COORDINATOR_BIN CHESSLENS_BINARY_DIR "/cli/chesslens-coordinator"

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int exit_code(int st) {
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

static mode_t file_mode(const char *path) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static bool exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---- processes with an environment of their own ---- */

/* Runs `chesslens args` with env_add ("K=V", NULL-terminated) added, waits up to timeout_ms;
 * *elapsed_ms (may be NULL) is how long it ran. */
static void cli_env(svc_env *e, int timeout_ms, const char *const env_add[], svc_cli_result *r,
                    int64_t *elapsed_ms, const char *const args[]) {
    char name[32], out[SVC_PATH], err[SVC_PATH], file[64];
    snprintf(name, sizeof name, "cli-%d", ++e->n_cli);
    snprintf(file, sizeof file, "%s.out", name);
    svc_path(e, file, out, sizeof out);
    snprintf(file, sizeof file, "%s.err", name);
    svc_path(e, file, err, sizeof err);
    const char *argv[32] = {cli_bin()};
    size_t n = 1;
    for (size_t i = 0; args[i] != NULL; i++) {
        assert_true(n + 1 < sizeof argv / sizeof argv[0]);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    int64_t t0 = now_ms();
    pid_t pid = svc_spawn(e, name, out, err, argv, env_add);
    int st = 0;
    if (!svc_reap(e, pid, timeout_ms, &st)) {
        fail_msg("chesslens %s: still running after %d ms", args[0], timeout_ms);
    }
    if (elapsed_ms != NULL) {
        *elapsed_ms = now_ms() - t0;
    }
    r->status = exit_code(st);
    r->out = svc_read_text(out);
    r->err = svc_read_text(err);
}

/* chesslens-worker --id ID with CURVE keys (NULL, NULL: none), verbose, log dir/worker-ID.log. */
static pid_t start_worker(svc_env *e, const char *id, const char *key, const char *server_pub) {
    char log[SVC_PATH];
    svc_worker_log(e, id, log, sizeof log);
    const char *argv[20] = {WORKER_BIN,  "--connect", e->endpoint, "--backend", "cpu",
                            "--threads", "1",         "--id",      id,          "--verbose"};
    size_t n = 10;
    if (key != NULL) {
        argv[n++] = "--curve-key";
        argv[n++] = key;
        argv[n++] = "--server-key";
        argv[n++] = server_pub;
    }
    argv[n] = NULL;
    return svc_spawn(e, id, log, NULL, argv, NULL);
}

/* Starts argv (a coordinator or worker that must refuse to start) and returns its exit code
 * (it must end within 20 s); its stderr and stdout in *log (free). */
static int run_to_exit(svc_env *e, const char *name, const char *const argv[], char **log) {
    char path[SVC_PATH], file[64];
    snprintf(file, sizeof file, "%s.log", name);
    svc_path(e, file, path, sizeof path);
    pid_t pid = svc_spawn(e, name, path, NULL, argv, NULL);
    int st = 0;
    if (!svc_reap(e, pid, 20000, &st)) {
        char *text = svc_read_text(path);
        fail_msg("%s still runs after 20 s; its log:\n%s", name, text);
    }
    *log = svc_read_text(path);
    return exit_code(st);
}

/* How often needle occurs in the file at path. */
static int count_text(const char *path, const char *needle) {
    char *text = svc_read_text(path);
    int n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle)) {
        n++;
    }
    free(text);
    return n;
}

/* ---- keys ---- */

/* `chesslens keygen --out dir/NAME`: the paths of NAME.key and NAME.pub. */
static void keygen(svc_env *e, const char *name, char *key, char *pub) {
    char prefix[SVC_PATH - 8];
    svc_path(e, name, prefix, sizeof prefix);
    snprintf(key, SVC_PATH, "%s.key", prefix);
    snprintf(pub, SVC_PATH, "%s.pub", prefix);
    const char *args[] = {"keygen", "--out", prefix, NULL};
    svc_cli_result r;
    svc_cli(e, 30000, &r, args);
    if (r.status != 0) {
        fail_msg("chesslens keygen --out %s: exit %d: %s", prefix, r.status, r.err);
    }
    svc_cli_free(&r);
}

static void read_secret(const char *path, coordinator_curve_key *k) {
    char err[COMMON_ERR_LEN] = "";
    if (coordinator_curve_read_secret(path, k, err) != 0) {
        fail_msg("%s", err);
    }
}

static void read_public(const char *path, coordinator_curve_key *k) {
    char err[COMMON_ERR_LEN] = "";
    if (coordinator_curve_read_public(path, k, err) != 0) {
        fail_msg("%s", err);
    }
}

/* The value of the line "NAME = VALUE" in text, "" when absent. */
static void line_value(const char *text, const char *name, char *out, size_t cap) {
    out[0] = '\0';
    size_t n = strlen(name);
    for (const char *l = text; l != NULL && *l != '\0';) {
        const char *end = strchr(l, '\n');
        size_t len = end != NULL ? (size_t)(end - l) : strlen(l);
        if (len > n + 3 && strncmp(l, name, n) == 0 && strncmp(l + n, " = ", 3) == 0) {
            snprintf(out, cap, "%.*s", (int)(len - n - 3), l + n + 3);
        }
        l = end != NULL ? end + 1 : NULL;
    }
}

/* The lines of text that are not comments. */
static int key_lines(const char *text) {
    int n = 0;
    for (const char *l = text; l != NULL && *l != '\0';) {
        const char *end = strchr(l, '\n');
        n += l[0] != '#' && l[0] != '\n';
        l = end != NULL ? end + 1 : NULL;
    }
    return n;
}

/* ---- a raw CURVE client with a monitor ---- */

typedef struct raw_outcome {
    uint16_t event; /* the last handshake event (0: none) */
    uint32_t value;
    int answer; /* the type of the first message received, -1: none */
} raw_outcome;

/* Connects a DEALER (with CURVE keys unless NULL) to endpoint, sends m and watches the socket
 * and its handshake events for wait_ms, or until a message came. */
static raw_outcome raw_try(const char *endpoint, const coordinator_curve_client *keys,
                           const proto_msg *m, int wait_ms) {
    raw_outcome o = {0, 0, -1};
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    int linger = 0;
    char err[COMMON_ERR_LEN] = "";
    assert_non_null(sock);
    assert_non_null(mon);
    assert_int_equal(zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger), 0);
    assert_int_equal(zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger), 0);
    if (keys != NULL && coordinator_curve_client_setup(sock, keys, err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(zmq_socket_monitor(
                         sock, "inproc://test-auth-monitor",
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH),
                     0);
    assert_int_equal(zmq_connect(mon, "inproc://test-auth-monitor"), 0);
    assert_int_equal(zmq_connect(sock, endpoint), 0);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(proto_encode(m, &buf, &len, err), 0);
    assert_true(zmq_send(sock, buf, len, ZMQ_DONTWAIT) == (int)len);
    free(buf);
    int64_t deadline = now_ms() + wait_ms;
    while (o.answer < 0 && now_ms() < deadline) {
        zmq_pollitem_t items[2] = {{.socket = sock, .events = ZMQ_POLLIN},
                                   {.socket = mon, .events = ZMQ_POLLIN}};
        if (zmq_poll(items, 2, (long)(deadline - now_ms())) <= 0) {
            continue;
        }
        if (items[1].revents & ZMQ_POLLIN) {
            zmq_msg_t ev, ep;
            zmq_msg_init(&ev);
            zmq_msg_init(&ep);
            assert_true(zmq_msg_recv(&ev, mon, 0) == 6);
            assert_true(zmq_msg_recv(&ep, mon, 0) >= 0);
            memcpy(&o.event, zmq_msg_data(&ev), 2);
            memcpy(&o.value, (const char *)zmq_msg_data(&ev) + 2, 4);
            zmq_msg_close(&ev);
            zmq_msg_close(&ep);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            zmq_msg_t f;
            zmq_msg_init(&f);
            assert_true(zmq_msg_recv(&f, sock, 0) >= 0);
            proto_msg *a = NULL;
            assert_int_equal(proto_decode(zmq_msg_data(&f), zmq_msg_size(&f), &a, err), 0);
            o.answer = (int)a->type;
            proto_msg_free(&a);
            zmq_msg_close(&f);
        }
    }
    zmq_socket_monitor(sock, NULL, 0);
    zmq_close(mon);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return o;
}

static proto_msg hello(const char *worker) {
    return (proto_msg){
        .type = PROTO_HELLO, .worker = worker, .backend = "cpu", .memory = 1, .threads = 1};
}

static void load_client(coordinator_curve_client *c, const char *key, const char *server_pub) {
    char err[COMMON_ERR_LEN] = "";
    if (coordinator_curve_client_load(c, key, server_pub, err) != 0) {
        fail_msg("%s", err);
    }
}

/* ---- a CURVE deployment ---- */

typedef struct deployment {
    char server_key[SVC_PATH], server_pub[SVC_PATH];
    char worker_key[SVC_PATH], worker_pub[SVC_PATH];
    char client_key[SVC_PATH], client_pub[SVC_PATH];
    char stranger_key[SVC_PATH], stranger_pub[SVC_PATH];
    char clients[SVC_PATH];
    char spec[SVC_PATH];
} deployment;

static void copy_file(const char *from, const char *to) {
    char *text = svc_read_text(from);
    svc_write_text(to, text);
    free(text);
}

/* Keys for the coordinator, a worker, a client and a stranger, a clients directory with the
 * worker's and the client's public keys, a dataset, a small spec (2 legal_stats tasks), and the
 * coordinator started with CURVE (--lease-ms 3000: heartbeats every 500 ms, so a worker
 * notices 1.5 s of silence). */
static void deploy(svc_env *e, deployment *d, const char *scenario) {
    svc_env_init(e, scenario);
    keygen(e, "server", d->server_key, d->server_pub);
    keygen(e, "worker", d->worker_key, d->worker_pub);
    keygen(e, "client", d->client_key, d->client_pub);
    keygen(e, "stranger", d->stranger_key, d->stranger_pub);
    svc_path(e, "clients", d->clients, sizeof d->clients);
    assert_int_equal(mkdir(d->clients, 0755), 0);
    char to[SVC_PATH + 32];
    snprintf(to, sizeof to, "%s/w1.pub", d->clients);
    copy_file(d->worker_pub, to);
    snprintf(to, sizeof to, "%s/c1.pub", d->clients);
    copy_file(d->client_pub, to);
    snprintf(to, sizeof to, "%s/README", d->clients); /* not a .pub: ignored */
    svc_write_text(to, "the keys of the workers and clients admitted\n");
    svc_path(e, "auth.json", d->spec, sizeof d->spec);
    svc_make_dataset(e, e->db);
    const char *extra[] = {"--curve-key", d->server_key, "--clients", d->clients,
                           "--lease-ms",  "3000",        NULL};
    svc_start_coordinator(e, extra);
}

static void write_small_spec(const char *path, const char *name) {
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"%s\", \"model\": \"" CHESSLENS_SOURCE_DIR "/models/chess-tiny\","
             " \"dataset\": \"g\", \"games\": [0, 8],"
             " \"analyses\": [{\"kind\": \"legal_stats\", \"components\": [\"embeds\"]}]}\n",
             name);
    svc_write_text(path, text);
}

/* ---- keygen ---- */

static void test_keygen_files(void **state) {
    svc_env *e = *state;
    svc_env_init(e, "keygen");
    char prefix[SVC_PATH - 8], key[SVC_PATH], pub[SVC_PATH];
    svc_path(e, "k1", prefix, sizeof prefix);
    snprintf(key, sizeof key, "%s.key", prefix);
    snprintf(pub, sizeof pub, "%s.pub", prefix);

    /* umask 000: nothing takes bits off, so 0600 is what the file was created with */
    mode_t old = umask(0);
    const char *args[] = {"keygen", "--out", prefix, NULL};
    svc_cli_result r;
    svc_cli(e, 30000, &r, args);
    umask(old);
    assert_int_equal(r.status, 0);
    assert_int_equal(file_mode(key), 0600);
    assert_int_equal(file_mode(pub), 0644);
    char *key_text = svc_read_text(key), *pub_text = svc_read_text(pub);
    char pub1[128], sec1[128], pub2[128], sec2[128];
    line_value(key_text, "public", pub1, sizeof pub1);
    line_value(key_text, "secret", sec1, sizeof sec1);
    line_value(pub_text, "public", pub2, sizeof pub2);
    line_value(pub_text, "secret", sec2, sizeof sec2);
    assert_int_equal(strlen(pub1), 40);
    assert_int_equal(strlen(sec1), 40);
    assert_string_equal(pub1, pub2);
    assert_string_equal(sec2, ""); /* the public file holds no secret */
    assert_int_equal(key_lines(key_text), 2);
    assert_int_equal(key_lines(pub_text), 1);
    char derived[41];
    assert_int_equal(zmq_curve_public(derived, sec1), 0);
    assert_string_equal(derived, pub1);
    /* the public key is printed, alone */
    char printed[160];
    snprintf(printed, sizeof printed, "%s\n", pub1);
    assert_string_equal(r.out, printed);
    svc_cli_free(&r);
    /* and the library reads what keygen wrote */
    coordinator_curve_key k;
    read_secret(key, &k);
    assert_string_equal(k.public_z85, pub1);
    assert_string_equal(k.secret_z85, sec1);
    read_public(pub, &k);
    assert_string_equal(k.public_z85, pub1);

    /* again with the same prefix: refused, both files as they were */
    svc_cli(e, 30000, &r, args);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "exists already"));
    svc_cli_free(&r);
    char *again = svc_read_text(key);
    assert_string_equal(again, key_text);
    free(again);
    again = svc_read_text(pub);
    assert_string_equal(again, pub_text);
    free(again);
    assert_int_equal(file_mode(key), 0600);

    /* only the .key exists: refused, no .pub made; only the .pub: refused, no .key made */
    char p2[SVC_PATH], k2[SVC_PATH + 8], q2[SVC_PATH + 8];
    svc_path(e, "k2", p2, sizeof p2);
    snprintf(k2, sizeof k2, "%s.key", p2);
    snprintf(q2, sizeof q2, "%s.pub", p2);
    svc_write_text(k2, "not a key\n");
    const char *args2[] = {"keygen", "--out", p2, NULL};
    svc_cli(e, 30000, &r, args2);
    assert_int_equal(r.status, 1);
    assert_false(exists(q2));
    again = svc_read_text(k2);
    assert_string_equal(again, "not a key\n");
    free(again);
    svc_cli_free(&r);
    assert_int_equal(unlink(k2), 0);
    svc_write_text(q2, "not a key\n");
    svc_cli(e, 30000, &r, args2);
    assert_int_equal(r.status, 1);
    assert_false(exists(k2));
    svc_cli_free(&r);

    /* umask 077: the public file is still 0644 (it is meant to be handed out); a second pair
     * differs from the first */
    char p3[SVC_PATH], k3[SVC_PATH + 8], q3[SVC_PATH + 8];
    svc_path(e, "k3", p3, sizeof p3);
    snprintf(k3, sizeof k3, "%s.key", p3);
    snprintf(q3, sizeof q3, "%s.pub", p3);
    old = umask(077);
    const char *args3[] = {"keygen", "--out", p3, NULL};
    svc_cli(e, 30000, &r, args3);
    umask(old);
    assert_int_equal(r.status, 0);
    svc_cli_free(&r);
    assert_int_equal(file_mode(k3), 0600);
    assert_int_equal(file_mode(q3), 0644);
    read_secret(k3, &k);
    assert_string_not_equal(k.public_z85, pub1);
    coordinator_curve_wipe(&k);
    free(key_text);
    free(pub_text);
}

/* ---- key files, endpoints, the ZAP handler (in this process) ---- */

/* Writes text to path with mode, and expects the secret (or public) read to fail with a
 * message containing needle. */
static void expect_refused(const char *path, mode_t mode, const char *text, bool secret,
                           const char *needle) {
    unlink(path);
    svc_write_text(path, text);
    assert_int_equal(chmod(path, mode), 0);
    coordinator_curve_key k;
    char err[COMMON_ERR_LEN] = "";
    int rc = secret ? coordinator_curve_read_secret(path, &k, err)
                    : coordinator_curve_read_public(path, &k, err);
    if (rc == 0) {
        fail_msg("%s (mode %04o) was accepted:\n%s", path, (unsigned)mode, text);
    }
    if (strstr(err, needle) == NULL) {
        fail_msg("refusing %s: '%s' does not say '%s'", path, err, needle);
    }
}

static void test_key_files_checked(void **state) {
    svc_env *e = *state;
    svc_env_init(e, "keyfiles");
    char pub[41], sec[41], pub_b[41], sec_b[41], path[SVC_PATH], text[1024];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    assert_int_equal(zmq_curve_keypair(pub_b, sec_b), 0);
    svc_path(e, "t.key", path, sizeof path);

    /* accepted: comments, blank lines, spaces, CRLF, either order, mode 0600 and 0400 */
    snprintf(text, sizeof text, "# c\n\n  secret=%s\r\n\tpublic   =  %s  \n", sec, pub);
    for (int i = 0; i < 2; i++) {
        unlink(path);
        svc_write_text(path, text);
        assert_int_equal(chmod(path, i == 0 ? 0600 : 0400), 0);
        coordinator_curve_key k;
        read_secret(path, &k);
        assert_string_equal(k.public_z85, pub);
        assert_string_equal(k.secret_z85, sec);
        coordinator_curve_wipe(&k);
        assert_int_equal(k.secret_z85[0], '\0');
    }

    /* the mode of a secret key file: any group or other bit is refused */
    const mode_t open_modes[] = {0640, 0604, 0620, 0602, 0610, 0644, 0660, 0666};
    for (size_t i = 0; i < sizeof open_modes / sizeof open_modes[0]; i++) {
        expect_refused(path, open_modes[i], text, true, "group or others");
    }
    /* malformed secret key files */
    snprintf(text, sizeof text, "public = %s\n", pub);
    expect_refused(path, 0600, text, true, "no 'secret' line");
    snprintf(text, sizeof text, "secret = %s\n", sec);
    expect_refused(path, 0600, text, true, "no 'public' line");
    snprintf(text, sizeof text, "public = %s\nsecret = %s\n", pub_b, sec);
    expect_refused(path, 0600, text, true, "not the one of its secret key");
    snprintf(text, sizeof text, "public = %s\nsecret = %s\nsecret = %s\n", pub, sec, sec);
    expect_refused(path, 0600, text, true, "a second 'secret' line");
    snprintf(text, sizeof text, "public = %s\nsecret = %.39s\n", pub, sec);
    expect_refused(path, 0600, text, true, "not 40 characters of Z85");
    snprintf(text, sizeof text, "public = %s\nsecret = %.39s~\n", pub, sec); /* ~ is no Z85 */
    expect_refused(path, 0600, text, true, "not 40 characters of Z85");
    snprintf(text, sizeof text, "public = %s\nsecret = %s\nowner = me\n", pub, sec);
    expect_refused(path, 0600, text, true, "neither 'public' nor 'secret'");
    /* no '=' (the key is one Z85 may spell, and holds none: a key can hold '=') */
    snprintf(text, sizeof text, "public 0123456789abcdefghij0123456789abcdefghij\nsecret = %s\n",
             sec);
    expect_refused(path, 0600, text, true, "expected 'public = KEY'");
    char big[COORDINATOR_CURVE_MAX_FILE + 64];
    memset(big, '#', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    expect_refused(path, 0600, big, true, "more than a key file holds");
    /* a NUL byte */
    unlink(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fprintf(f, "public = %s\n", pub);
    fputc('\0', f);
    fprintf(f, "secret = %s\n", sec);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
    coordinator_curve_key k;
    char err[COMMON_ERR_LEN];
    assert_int_equal(coordinator_curve_read_secret(path, &k, err), COMMON_ERR_PARSE);
    /* a directory, a missing file */
    char dir[SVC_PATH];
    svc_path(e, "adir", dir, sizeof dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(coordinator_curve_read_secret(dir, &k, err), COMMON_ERR_INVALID);
    assert_int_equal(coordinator_curve_read_secret("/nonexistent/x.key", &k, err),
                     COMMON_ERR_NOT_FOUND);

    /* public key files: the public line only; a secret in one is refused */
    svc_path(e, "t.pub", path, sizeof path);
    snprintf(text, sizeof text, "# a worker\npublic = %s\n", pub);
    unlink(path);
    svc_write_text(path, text);
    read_public(path, &k);
    assert_string_equal(k.public_z85, pub);
    assert_string_equal(k.secret_z85, "");
    snprintf(text, sizeof text, "public = %s\nsecret = %s\n", pub, sec);
    expect_refused(path, 0644, text, false, "holds a secret key");
    expect_refused(path, 0644, "# nothing\n", false, "no 'public = KEY' line");
}

static void test_endpoint_rule(void **state) {
    (void)state;
    const char *local[] = {"tcp://127.0.0.1:5555", "tcp://127.0.0.1:*",
                           "tcp://127.1.2.3:1",    "tcp://localhost:5555",
                           "tcp://LOCALHOST:5555", "tcp://[::1]:5555",
                           "tcp://::1:5555",       "tcp://[::ffff:127.0.0.1]:5555",
                           "inproc://chesslens",   "ipc:///tmp/chesslens.sock"};
    const char *not_local[] = {"tcp://0.0.0.0:5555",
                               "tcp://*:5555",
                               "tcp://10.0.0.1:5555",
                               "tcp://128.0.0.1:5555",
                               "tcp://126.255.255.255:5555",
                               "tcp://[::]:5555",
                               "tcp://[::2]:5555",
                               "tcp://[::ffff:10.0.0.1]:5555",
                               "tcp://eth0:5555",
                               "tcp://lo:5555",
                               "tcp://example.org:5555",
                               "tcp://localhost.example.org:5555",
                               "tcp://127.0.0.1.example.org:5555",
                               "tcp://127.0.0.1",
                               "tcp://:5555",
                               "tcp://[::1:5555",
                               "pgm://127.0.0.1;239.192.1.1:5555",
                               "ws://127.0.0.1:5555",
                               ""};
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
        if (!coordinator_endpoint_is_local(local[i])) {
            fail_msg("%s should count as local", local[i]);
        }
    }
    for (size_t i = 0; i < sizeof not_local / sizeof not_local[0]; i++) {
        if (coordinator_endpoint_is_local(not_local[i])) {
            fail_msg("%s should not count as local", not_local[i]);
        }
    }
}

/* Sends one ZAP request of n frames on req and returns the reply's frames as text (status in
 * out[2], user id in out[4]; request id in out[1]). */
static size_t zap_call(void *req, const char *const *frames, const size_t *lens, size_t n,
                       char out[6][300]) {
    for (size_t i = 0; i < n; i++) {
        assert_true(zmq_send(req, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
    }
    size_t got = 0;
    for (int more = 1; more;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_pollitem_t item = {.socket = req, .events = ZMQ_POLLIN};
        assert_int_equal(zmq_poll(&item, 1, 5000), 1);
        assert_true(zmq_msg_recv(&m, req, 0) >= 0);
        if (got < 6) {
            size_t len = zmq_msg_size(&m) < 299 ? zmq_msg_size(&m) : 299;
            memcpy(out[got], zmq_msg_data(&m), len);
            out[got][len] = '\0';
        }
        got++;
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
    return got;
}

static void test_zap_handler(void **state) {
    svc_env *e = *state;
    svc_env_init(e, "zap");
    char dir[SVC_PATH], path[SVC_PATH + 32], text[256], log_path[SVC_PATH];
    svc_path(e, "clients", dir, sizeof dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    char pub[41], sec[41], other_pub[41], other_sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    assert_int_equal(zmq_curve_keypair(other_pub, other_sec), 0);
    void *ctx = zmq_ctx_new();
    coordinator_zap *z = NULL;
    char err[COMMON_ERR_LEN] = "";

    /* no directory, an empty one, a bad .pub: no handler */
    snprintf(path, sizeof path, "%s/none", dir);
    assert_int_not_equal(coordinator_zap_start(&z, ctx, path, NULL, err), 0);
    assert_null(z);
    assert_int_equal(coordinator_zap_start(&z, ctx, dir, NULL, err), COMMON_ERR_NOT_FOUND);
    snprintf(path, sizeof path, "%s/bad.pub", dir);
    svc_write_text(path, "public = tooshort\n");
    assert_int_equal(coordinator_zap_start(&z, ctx, dir, NULL, err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "bad.pub"));
    unlink(path);

    /* one listed key, laid out as in a Kubernetes ConfigMap volume (alice.pub ->
     * ..data/alice.pub, ..data -> ..2024_01_01), and files the handler must skip */
    snprintf(path, sizeof path, "%s/..2024_01_01", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/..2024_01_01/alice.pub", dir);
    snprintf(text, sizeof text, "public = %s\n", pub);
    svc_write_text(path, text);
    snprintf(path, sizeof path, "%s/..data", dir);
    assert_int_equal(symlink("..2024_01_01", path), 0);
    snprintf(path, sizeof path, "%s/alice.pub", dir);
    assert_int_equal(symlink("..data/alice.pub", path), 0);
    snprintf(path, sizeof path, "%s/.hidden.pub", dir);
    svc_write_text(path, "garbage\n");
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    svc_write_text(path, "garbage\n");
    svc_path(e, "zap.log", log_path, sizeof log_path);
    FILE *log = fopen(log_path, "w");
    assert_non_null(log);
    if (coordinator_zap_start(&z, ctx, dir, log, err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(coordinator_zap_clients(z), 1);
    /* a second handler in the same context cannot bind */
    coordinator_zap *z2 = NULL;
    assert_int_equal(coordinator_zap_start(&z2, ctx, dir, NULL, err), COMMON_ERR_IO);
    assert_non_null(strstr(err, "zeromq.zap.01"));

    void *req = zmq_socket(ctx, ZMQ_REQ);
    int linger = 0;
    assert_int_equal(zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger), 0);
    assert_int_equal(zmq_connect(req, "inproc://zeromq.zap.01"), 0);
    uint8_t key[32], other[32];
    assert_non_null(zmq_z85_decode(key, pub));
    assert_non_null(zmq_z85_decode(other, other_pub));
    char out[6][300];
    const char *fr[9] = {"1.0", "id-1",  COORDINATOR_CURVE_DOMAIN, "127.0.0.1",
                         "",    "CURVE", (const char *)key};
    size_t len[9] = {3, 4, strlen(COORDINATOR_CURVE_DOMAIN), 9, 0, 5, 32};
    /* listed: 200, user id alice, the request id echoed */
    assert_int_equal(zap_call(req, fr, len, 7, out), 6);
    assert_string_equal(out[0], "1.0");
    assert_string_equal(out[1], "id-1");
    assert_string_equal(out[2], "200");
    assert_string_equal(out[4], "alice");
    /* unlisted: 400, no user id */
    fr[6] = (const char *)other;
    assert_int_equal(zap_call(req, fr, len, 7, out), 6);
    assert_string_equal(out[2], "400");
    assert_string_equal(out[4], "");
    fr[6] = (const char *)key;
    /* another mechanism, another domain: 400 */
    fr[5] = "NULL";
    len[5] = 4;
    assert_int_equal(zap_call(req, fr, len, 6, out), 6);
    assert_string_equal(out[2], "400");
    fr[5] = "CURVE";
    len[5] = 5;
    fr[2] = "other";
    len[2] = 5;
    assert_int_equal(zap_call(req, fr, len, 7, out), 6);
    assert_string_equal(out[2], "400");
    fr[2] = COORDINATOR_CURVE_DOMAIN;
    len[2] = strlen(COORDINATOR_CURVE_DOMAIN);
    /* malformed: another version, too few frames, a short key, extra frames: 500 */
    fr[0] = "2.0";
    assert_int_equal(zap_call(req, fr, len, 7, out), 6);
    assert_string_equal(out[2], "500");
    fr[0] = "1.0";
    assert_int_equal(zap_call(req, fr, len, 3, out), 6);
    assert_string_equal(out[2], "500");
    assert_string_equal(out[1], "id-1");
    len[6] = 31;
    assert_int_equal(zap_call(req, fr, len, 7, out), 6);
    assert_string_equal(out[2], "500");
    len[6] = 32;
    for (int i = 7; i < 9; i++) {
        fr[i] = "x";
        len[i] = 1;
    }
    assert_int_equal(zap_call(req, fr, len, 9, out), 6);
    assert_string_equal(out[2], "500");
    /* and still serving */
    assert_int_equal(zap_call(req, fr, len, 7, out), 6);
    assert_string_equal(out[2], "200");
    char fe[COMMON_ERR_LEN];
    assert_false(coordinator_zap_failed(z, fe));
    zmq_close(req);
    coordinator_zap_stop(&z);
    assert_null(z);
    coordinator_zap_stop(&z); /* NULL is fine */
    fclose(log);
    char *logged = svc_read_text(log_path);
    char needle[128];
    snprintf(needle, sizeof needle, "refused client key %s from 127.0.0.1", other_pub);
    assert_non_null(strstr(logged, needle));
    snprintf(needle, sizeof needle, "admitted 'alice' (key %s)", pub);
    assert_non_null(strstr(logged, needle));
    assert_null(strstr(logged, sec)); /* no secret ever logged */
    free(logged);
    /* the endpoint is free again once it stopped */
    assert_int_equal(coordinator_zap_start(&z, ctx, dir, NULL, err), 0);
    coordinator_zap_stop(&z);
    zmq_ctx_term(ctx);
}

/* ---- the service with CURVE ---- */

static void test_listed_worker_runs_sweep(void **state) {
    svc_env *e = *state;
    deployment d;
    deploy(e, &d, "listed");
    write_small_spec(d.spec, "auth-1");
    pid_t w = start_worker(e, "w1", d.worker_key, d.server_pub);
    svc_poll_int(e->db, 1, 60000, "the listed worker registered",
                 "SELECT count(*) FROM worker WHERE id = 'w1'");

    /* submit with keys from the environment, wait with keys from flags */
    char env_key[SVC_PATH + 32], env_server[SVC_PATH + 32];
    snprintf(env_key, sizeof env_key, "CHESSLENS_CURVE_KEY=%s", d.client_key);
    snprintf(env_server, sizeof env_server, "CHESSLENS_SERVER_KEY=%s", d.server_pub);
    const char *const env[] = {env_key, env_server, NULL};
    const char *submit[] = {"submit", d.spec, "--coordinator", e->endpoint, NULL};
    svc_cli_result r;
    cli_env(e, 60000, env, &r, NULL, submit);
    if (r.status != 0) {
        fail_msg("submit with CURVE keys: exit %d: %s", r.status, r.err);
    }
    assert_string_equal(r.out, "auth-1\n");
    svc_cli_free(&r);
    const char *wait[] = {"wait",        "auth-1",     "--coordinator", e->endpoint,
                          "--curve-key", d.client_key, "--server-key",  d.server_pub,
                          "--timeout",   "120",        "--quiet",       NULL};
    cli_env(e, 150000, NULL, &r, NULL, wait);
    if (r.status != 0) {
        fail_msg("wait with CURVE keys: exit %d: %s%s", r.status, r.out, r.err);
    }
    svc_cli_free(&r);
    int64_t planned = svc_query_int(e->db, "SELECT count(*) FROM task");
    assert_true(planned >= 2);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done' AND"
                                          " worker = 'w1'"),
                     planned);

    /* 3 s of a stopped coordinator: the worker gives up its socket after 1.5 s of silence and
     * opens fresh ones, and `status`, sent meanwhile, waits 2 s for its first try and sends again
     * from a fresh socket. Both only get in again if every new socket has the keys. */
    char wlog[SVC_PATH];
    svc_worker_log(e, "w1", wlog, sizeof wlog);
    int silences = count_text(wlog, "coordinator silent");
    svc_signal(e, e->coordinator, SIGSTOP);
    const char *status[] = {
        "status",       "auth-1",     "--coordinator", e->endpoint, "--curve-key", d.client_key,
        "--server-key", d.server_pub, "--timeout",     "30",        NULL};
    char out[SVC_PATH], errp[SVC_PATH];
    svc_path(e, "status-during-stop.out", out, sizeof out);
    svc_path(e, "status-during-stop.err", errp, sizeof errp);
    const char *argv[16] = {cli_bin()};
    for (size_t i = 0; status[i] != NULL; i++) {
        argv[i + 1] = status[i];
    }
    pid_t st_pid = svc_spawn(e, "status", out, errp, argv, NULL);
    /* the worker noticed this stop (a new "coordinator silent" line) and gave up its socket */
    int64_t until = now_ms() + 10000;
    while (count_text(wlog, "coordinator silent") == silences && now_ms() < until) {
        nap_ms(20);
    }
    bool reconnecting = count_text(wlog, "coordinator silent") > silences;
    nap_ms(3000);
    svc_signal(e, e->coordinator, SIGCONT);
    assert_true(reconnecting);
    int st = 0;
    assert_true(svc_reap(e, st_pid, 40000, &st));
    char *st_err = svc_read_text(errp), *st_out = svc_read_text(out);
    if (exit_code(st) != 0) {
        fail_msg("status across the stop: exit %d: %s", exit_code(st), st_err);
    }
    assert_non_null(strstr(st_out, "auth-1"));
    free(st_err);
    free(st_out);

    /* a second sweep, run by the worker over its fresh socket */
    write_small_spec(d.spec, "auth-2");
    cli_env(e, 60000, env, &r, NULL, submit);
    assert_int_equal(r.status, 0);
    svc_cli_free(&r);
    wait[1] = "auth-2";
    cli_env(e, 150000, NULL, &r, NULL, wait);
    if (r.status != 0) {
        fail_msg("wait for the second sweep: exit %d: %s%s", r.status, r.out, r.err);
    }
    svc_cli_free(&r);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state != 'done'"), 0);

    assert_int_equal(svc_stop(e, w, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_check_invariants(e->db, -1);
    char *log = svc_read_text(e->coordinator_log);
    assert_non_null(strstr(log, "CURVE on"));
    assert_non_null(strstr(log, "admitted 'w1'"));
    assert_non_null(strstr(log, "admitted 'c1'"));
    assert_null(strstr(log, "refused"));
    free(log);
}

static void test_unlisted_key_gets_nothing(void **state) {
    svc_env *e = *state;
    deployment d;
    deploy(e, &d, "unlisted");
    write_small_spec(d.spec, "auth-u");
    coordinator_curve_client stranger, listed;
    load_client(&stranger, d.stranger_key, d.server_pub);
    load_client(&listed, d.worker_key, d.server_pub);

    /* a raw client: the unlisted key's handshake is refused and nothing comes back; the listed
     * key, the control, is welcomed */
    proto_msg h = hello("raw-stranger");
    raw_outcome o = raw_try(e->endpoint, &stranger, &h, 3000);
    assert_int_equal(o.event, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    assert_int_equal(o.value, 400);
    assert_int_equal(o.answer, -1);
    h = hello("raw-listed");
    o = raw_try(e->endpoint, &listed, &h, 10000);
    assert_int_equal(o.event, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    assert_int_equal(o.answer, PROTO_WELCOME);

    /* a real worker with the unlisted key never registers and takes no task */
    const char *submit[] = {"submit",       d.spec,        "--coordinator",
                            e->endpoint,    "--curve-key", d.client_key,
                            "--server-key", d.server_pub,  NULL};
    svc_cli_result r;
    cli_env(e, 60000, NULL, &r, NULL, submit);
    assert_int_equal(r.status, 0);
    svc_cli_free(&r);
    pid_t x = start_worker(e, "x1", d.stranger_key, d.server_pub);
    char xlog[SVC_PATH];
    svc_worker_log(e, "x1", xlog, sizeof xlog);
    assert_true(svc_wait_text(xlog, "hello sent", 10000));
    /* it waits 3 s for a WELCOME, then gives the socket up */
    assert_true(svc_wait_text(xlog, "no welcome", 15000));
    assert_true(svc_running(e, x));
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM worker WHERE id = 'x1'"), 0);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state != 'pending'"), 0);
    char *xtext = svc_read_text(xlog);
    assert_null(strstr(xtext, "welcome: heartbeat")); /* what a welcomed worker logs */
    assert_non_null(strstr(xtext, "no welcome"));     /* it gave up its socket at least once */
    free(xtext);

    /* the CLI with the unlisted key: a timeout that says why */
    const char *status[] = {
        "status",       "--coordinator", e->endpoint, "--curve-key", d.stranger_key,
        "--server-key", d.server_pub,    "--timeout", "3",           NULL};
    int64_t ms = 0;
    cli_env(e, 30000, NULL, &r, &ms, status);
    assert_int_equal(r.status, 1);
    assert_true(ms >= 2900 && ms < 15000);
    assert_non_null(strstr(r.err, "no answer from the coordinator"));
    assert_non_null(strstr(r.err, "refused this client's CURVE key"));
    assert_string_equal(r.out, "");
    svc_cli_free(&r);

    /* every refusal logged, with the key; nothing of the stranger admitted */
    svc_signal(e, x, SIGKILL);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    char *log = svc_read_text(e->coordinator_log), needle[128];
    snprintf(needle, sizeof needle, "refused client key %s from 127.0.0.1",
             stranger.own.public_z85);
    const char *at = strstr(log, needle);
    int refusals = 0;
    for (; at != NULL; at = strstr(at + 1, needle)) {
        refusals++;
    }
    assert_true(refusals >= 3); /* the raw client, the worker, the CLI (at least once each) */
    snprintf(needle, sizeof needle, "(key %s)", stranger.own.public_z85);
    assert_null(strstr(log, needle));
    free(log);
    /* no worker of the stranger's is known; the raw listed one is */
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM worker WHERE id IN ('x1',"
                                          " 'raw-stranger')"),
                     0);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM worker WHERE id = 'raw-listed'"),
                     1);
    coordinator_curve_wipe(&stranger.own);
    coordinator_curve_wipe(&listed.own);
}

static void test_client_without_keys_times_out(void **state) {
    svc_env *e = *state;
    deployment d;
    deploy(e, &d, "nokeys");
    /* a raw client without CURVE: the mechanisms differ, the handshake fails, no answer */
    proto_msg list = {.type = PROTO_LIST, .req = 1};
    raw_outcome o = raw_try(e->endpoint, NULL, &list, 3000);
    assert_int_equal(o.event, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
    assert_int_equal(o.value, ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH);
    assert_int_equal(o.answer, -1);

    svc_cli_result r;
    int64_t ms = 0;
    const char *plain[] = {"list", "--coordinator", e->endpoint, "--timeout", "3", NULL};
    cli_env(e, 30000, NULL, &r, &ms, plain);
    assert_int_equal(r.status, 1);
    assert_true(ms >= 2900 && ms < 15000);
    assert_non_null(strstr(r.err, "no answer from the coordinator"));
    /* "requires CURVE keys" (a mismatch seen), or a broken handshake and the same hint */
    assert_non_null(strstr(r.err, "require"));
    assert_non_null(strstr(r.err, "CURVE keys"));
    svc_cli_free(&r);

    /* a listed client key with the wrong server key (the stranger's): no answer either */
    const char *wrong[] = {
        "list",         "--coordinator", e->endpoint, "--curve-key", d.client_key,
        "--server-key", d.stranger_pub,  "--timeout", "3",           NULL};
    cli_env(e, 30000, NULL, &r, &ms, wrong);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "no answer from the coordinator"));
    assert_non_null(strstr(r.err, "CURVE handshake failed"));
    svc_cli_free(&r);

    /* control: the same command with the right keys is answered at once */
    const char *right[] = {
        "list",         "--coordinator", e->endpoint, "--curve-key", d.client_key,
        "--server-key", d.server_pub,    "--timeout", "30",          NULL};
    cli_env(e, 30000, NULL, &r, &ms, right);
    assert_int_equal(r.status, 0);
    assert_true(ms < 10000);
    svc_cli_free(&r);
    /* only one of the two keys: a usage error */
    const char *half[] = {"list", "--coordinator", e->endpoint, "--curve-key", d.client_key, NULL};
    cli_env(e, 30000, NULL, &r, NULL, half);
    assert_int_equal(r.status, 2);
    svc_cli_free(&r);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
}

/* ---- refusals to start ---- */

/* A TCP socket listening on 0.0.0.0 at a free port, held until closed: a coordinator that
 * tried to bind that port would fail with "Address already in use". */
static int hold_port(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_refuses_to_start(void **state) {
    svc_env *e = *state;
    svc_env_init(e, "refusals");
    char server_key[SVC_PATH], server_pub[SVC_PATH], client_key[SVC_PATH], client_pub[SVC_PATH];
    keygen(e, "server", server_key, server_pub);
    keygen(e, "client", client_key, client_pub);
    char clients[SVC_PATH], to[SVC_PATH + 32];
    svc_path(e, "clients", clients, sizeof clients);
    assert_int_equal(mkdir(clients, 0755), 0);
    snprintf(to, sizeof to, "%s/c.pub", clients);
    copy_file(client_pub, to);
    char *log = NULL;

    /* a secret key file group or others may read: the coordinator, a worker and a client refuse
     * it, and the coordinator does so before it creates its database */
    const mode_t open_modes[] = {0640, 0604};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(chmod(server_key, open_modes[i]), 0);
        const char *argv[] = {
            COORDINATOR_BIN, "--db",     e->db,       "--bind", "tcp://127.0.0.1:*",
            "--curve-key",   server_key, "--clients", clients,  NULL};
        assert_int_equal(run_to_exit(e, "coordinator-mode", argv, &log), 1);
        assert_non_null(strstr(log, "group or others may access it"));
        assert_null(strstr(log, "listening on"));
        assert_false(exists(e->db));
        free(log);
    }
    assert_int_equal(chmod(server_key, 0600), 0);
    assert_int_equal(chmod(client_key, 0640), 0);
    const char *wargv[] = {WORKER_BIN, "--connect",    "tcp://127.0.0.1:1", "--curve-key",
                           client_key, "--server-key", server_pub,          NULL};
    assert_int_equal(run_to_exit(e, "worker-mode", wargv, &log), 1);
    assert_non_null(strstr(log, "group or others may access it"));
    free(log);
    svc_cli_result r;
    const char *status[] = {"status",   "--coordinator", "tcp://127.0.0.1:1", "--curve-key",
                            client_key, "--server-key",  server_pub,          NULL};
    cli_env(e, 30000, NULL, &r, NULL, status);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "group or others may access it"));
    svc_cli_free(&r);
    assert_int_equal(chmod(client_key, 0600), 0);

    /* --curve-key without --clients (no ZAP handler: every key would get in), and the reverse */
    const char *no_clients[] = {COORDINATOR_BIN,     "--db",        e->db,      "--bind",
                                "tcp://127.0.0.1:*", "--curve-key", server_key, NULL};
    assert_int_equal(run_to_exit(e, "coordinator-no-clients", no_clients, &log), 2);
    assert_non_null(strstr(log, "--curve-key and --clients go together"));
    assert_null(strstr(log, "listening on"));
    free(log);
    const char *no_key[] = {COORDINATOR_BIN,     "--db",      e->db,   "--bind",
                            "tcp://127.0.0.1:*", "--clients", clients, NULL};
    assert_int_equal(run_to_exit(e, "coordinator-no-key", no_key, &log), 2);
    free(log);
    assert_false(exists(e->db));

    /* plain tcp on 0.0.0.0 and * of a port this test holds: refused before any bind (an attempt
     * would report the port in use) */
    int port = 0;
    int fd = hold_port(&port);
    char any[64], star[64];
    snprintf(any, sizeof any, "tcp://0.0.0.0:%d", port);
    snprintf(star, sizeof star, "tcp://*:%d", port);
    const char *endpoints[] = {any, star};
    for (size_t i = 0; i < 2; i++) {
        const char *argv[] = {COORDINATOR_BIN, "--db", e->db, "--bind", endpoints[i], NULL};
        assert_int_equal(run_to_exit(e, "coordinator-plain", argv, &log), 2);
        assert_non_null(strstr(log, "plain tcp listens on loopback only"));
        assert_null(strstr(log, "Address already in use"));
        free(log);
    }
    assert_false(exists(e->db));
    /* the library keeps the same rules for every caller, before it opens the database */
    coordinator_service_opts so = {.db_path = e->db, .bind = {any}, .n_bind = 1};
    char err[COMMON_ERR_LEN] = "";
    assert_int_equal(coordinator_service_run(&so, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "without CURVE"));
    so.bind[0] = "tcp://127.0.0.1:*";
    so.curve_key = server_key;
    assert_int_equal(coordinator_service_run(&so, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "without a clients directory"));
    so.curve_key = NULL;
    so.clients_dir = clients;
    assert_int_equal(coordinator_service_run(&so, err), COMMON_ERR_INVALID);
    assert_false(exists(e->db));
    /* controls: with --insecure-listen, and with CURVE, it gets past the rule to the bind */
    const char *insecure[] = {COORDINATOR_BIN,     "--db", e->db, "--bind", any,
                              "--insecure-listen", NULL};
    assert_int_equal(run_to_exit(e, "coordinator-insecure", insecure, &log), 1);
    assert_non_null(strstr(log, "Address already in use"));
    free(log);
    const char *curve[] = {COORDINATOR_BIN, "--db",     e->db,       "--bind", any,
                           "--curve-key",   server_key, "--clients", clients,  NULL};
    assert_int_equal(run_to_exit(e, "coordinator-curve-any", curve, &log), 1);
    assert_non_null(strstr(log, "Address already in use"));
    free(log);
    close(fd);
}

int main(void) {
    /* the clients under test get their keys from the tests alone */
    unsetenv("CHESSLENS_CURVE_KEY");
    unsetenv("CHESSLENS_SERVER_KEY");
    unsetenv("CHESSLENS_COORDINATOR");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keygen_files, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_key_files_checked, svc_setup, svc_teardown),
        cmocka_unit_test(test_endpoint_rule),
        cmocka_unit_test_setup_teardown(test_zap_handler, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_refuses_to_start, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_client_without_keys_times_out, svc_setup,
                                        svc_teardown),
        cmocka_unit_test_setup_teardown(test_unlisted_key_gets_nothing, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_listed_worker_runs_sweep, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
