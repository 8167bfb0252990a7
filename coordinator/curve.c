/*
 * curve: CurveZMQ key files, socket options, the loopback rule and the ZAP handler
 * (coordinator/curve.h). Written from the zmq_curve, zmq_curve_keypair, zmq_setsockopt and
 * zmq_socket_monitor manual pages and from rfc.zeromq.org 27/ZAP.
 *
 * Why a ZAP handler at all: a CURVE server without one encrypts, but libzmq then admits every
 * client key (the "Stonehouse" behaviour of libzmq 4.3). The handler is the only place where a
 * client key is checked, so it fails closed: it is bound before the server socket, answers
 * every request it cannot read with 500, and on a socket error it stops answering but keeps its
 * socket bound, so that handshakes stall instead of passing unchecked, until the coordinator
 * notices (coordinator_zap_failed) and closes its server socket.
 */
#include "coordinator/curve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <zmq.h>

#define KEY_BYTES 32
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
/* a ZAP request has 7 frames for CURVE; more are read and dropped */
#define ZAP_MAX_FRAMES 8
/* ZAP strings (status text, user id) are at most 255 bytes (RFC 27) */
#define ZAP_MAX_TEXT 255
#define ZAP_POLL_MS 100
/* at most LOG_BURST lines of each kind per LOG_WINDOW_NS, then a count of what was left out */
#define LOG_BURST 10
#define LOG_WINDOW_NS 10000000000LL

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* memset that the compiler may not drop because the buffer is dead afterwards */
static void wipe(void *p, size_t n) {
    volatile unsigned char *v = p;
    while (n-- > 0) {
        *v++ = 0;
    }
}

bool coordinator_curve_available(void) {
    return zmq_has("curve") != 0;
}

void coordinator_curve_wipe(coordinator_curve_key *k) {
    if (k != NULL) {
        wipe(k->secret_z85, sizeof k->secret_z85);
    }
}

/* ---- key files ---- */

/* The file at path into buf (NUL-terminated, at most COORDINATOR_CURVE_MAX_FILE bytes). With
 * secret, a file that group or others may read or write is refused: the check is made on the
 * descriptor that is read, so the file cannot be swapped between the check and the read. */
static int read_key_file(const char *path, bool secret, char *buf, size_t cap, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return common_fail(err, errno == ENOENT ? COMMON_ERR_NOT_FOUND : COMMON_ERR_IO,
                           "key file %s: %s", path, strerror(errno));
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "key file %s: fstat: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = common_fail(err, COMMON_ERR_INVALID, "key file %s: not a regular file", path);
    } else if (secret && (st.st_mode & 077) != 0) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "secret key file %s has mode %04o: group or others may access it, so it "
                         "is refused (chmod 600 %s)",
                         path, (unsigned)(st.st_mode & 07777), path);
    } else if (st.st_size < 0 || (uint64_t)st.st_size >= cap) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "key file %s: %lld bytes, more than a key file holds (%zu)", path,
                         (long long)st.st_size, cap - 1);
    }
    size_t n = 0;
    while (rc == 0 && n < cap - 1) {
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            rc = common_fail(err, COMMON_ERR_IO, "key file %s: read: %s", path, strerror(errno));
        } else if (got == 0) {
            break;
        } else {
            n += (size_t)got;
        }
    }
    close(fd);
    if (rc == 0 && n == cap - 1) { /* it grew after fstat */
        rc =
            common_fail(err, COMMON_ERR_INVALID, "key file %s: more than %zu bytes", path, cap - 1);
    }
    if (rc == 0 && memchr(buf, '\0', n) != NULL) {
        rc = common_fail(err, COMMON_ERR_PARSE, "key file %s: a NUL byte: not a text file", path);
    }
    buf[rc == 0 ? n : 0] = '\0';
    return rc;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
    return s;
}

/* Parses the lines of a key file (text is modified). *has_public / *has_secret say which lines
 * it held; the keys are checked to be 40 characters of Z85 that decode. */
static int parse_key_text(const char *path, char *text, coordinator_curve_key *out,
                          bool *has_public, bool *has_secret, char *err) {
    *has_public = *has_secret = false;
    memset(out, 0, sizeof *out);
    size_t line_no = 0;
    for (char *line = text; line != NULL;) {
        char *next = strchr(line, '\n');
        if (next != NULL) {
            *next++ = '\0';
        }
        line_no++;
        char *l = trim(line);
        line = next;
        if (l[0] == '\0' || l[0] == '#') {
            continue;
        }
        /* NAME = KEY, NAME a word: a key may hold '=' itself, so "public KEY" is refused as a
         * line without '=', not split inside the key */
        size_t word = strspn(l, "abcdefghijklmnopqrstuvwxyz");
        char *eq = l + word + strspn(l + word, " \t");
        if (word == 0 || *eq != '=') {
            return common_fail(err, COMMON_ERR_PARSE,
                               "key file %s:%zu: expected 'public = KEY' or 'secret = KEY'", path,
                               line_no);
        }
        l[word] = '\0';
        const char *name = l, *value = trim(eq + 1);
        bool is_public = strcmp(name, "public") == 0;
        if (!is_public && strcmp(name, "secret") != 0) {
            return common_fail(err, COMMON_ERR_PARSE,
                               "key file %s:%zu: '%.32s' is neither 'public' nor 'secret'", path,
                               line_no, name);
        }
        bool *seen = is_public ? has_public : has_secret;
        if (*seen) {
            return common_fail(err, COMMON_ERR_PARSE, "key file %s:%zu: a second '%s' line", path,
                               line_no, name);
        }
        size_t len = strlen(value);
        uint8_t bin[KEY_BYTES];
        if (len != COORDINATOR_CURVE_Z85_LEN || zmq_z85_decode(bin, value) == NULL) {
            return common_fail(err, COMMON_ERR_PARSE,
                               "key file %s:%zu: the %s key is not 40 characters of Z85 (%zu "
                               "characters)",
                               path, line_no, name, len);
        }
        wipe(bin, sizeof bin);
        memcpy(is_public ? out->public_z85 : out->secret_z85, value, len + 1);
        *seen = true;
    }
    return 0;
}

int coordinator_curve_read_secret(const char *path, coordinator_curve_key *out, char *err) {
    char text[COORDINATOR_CURVE_MAX_FILE + 1];
    coordinator_curve_key k;
    bool has_public = false, has_secret = false;
    int rc = read_key_file(path, true, text, sizeof text, err);
    if (rc == 0) {
        rc = parse_key_text(path, text, &k, &has_public, &has_secret, err);
    }
    char derived[COORDINATOR_CURVE_Z85_LEN + 1];
    if (rc == 0 && (!has_public || !has_secret)) {
        rc = common_fail(err, COMMON_ERR_PARSE,
                         "key file %s: no '%s' line: a secret key file holds 'public = KEY' and "
                         "'secret = KEY' (chesslens keygen writes one)",
                         path, has_public ? "secret" : "public");
    } else if (rc == 0 && zmq_curve_public(derived, k.secret_z85) != 0) {
        rc = common_fail(err, COMMON_ERR_INVALID, "key file %s: zmq_curve_public: %s", path,
                         zmq_strerror(zmq_errno()));
    } else if (rc == 0 && strcmp(derived, k.public_z85) != 0) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "key file %s: its public key is not the one of its secret key", path);
    }
    if (rc == 0) {
        *out = k;
    }
    wipe(text, sizeof text);
    coordinator_curve_wipe(&k);
    return rc;
}

int coordinator_curve_read_public(const char *path, coordinator_curve_key *out, char *err) {
    char text[COORDINATOR_CURVE_MAX_FILE + 1];
    coordinator_curve_key k;
    bool has_public = false, has_secret = false;
    int rc = read_key_file(path, false, text, sizeof text, err);
    if (rc == 0) {
        rc = parse_key_text(path, text, &k, &has_public, &has_secret, err);
    }
    if (rc == 0 && has_secret) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "key file %s holds a secret key: only public keys (the .pub files "
                         "chesslens keygen writes) belong there",
                         path);
    } else if (rc == 0 && !has_public) {
        rc = common_fail(err, COMMON_ERR_PARSE, "key file %s: no 'public = KEY' line", path);
    }
    if (rc == 0) {
        *out = k;
        out->secret_z85[0] = '\0';
    }
    wipe(text, sizeof text);
    coordinator_curve_wipe(&k);
    return rc;
}

int coordinator_curve_client_load(coordinator_curve_client *out, const char *key_path,
                                  const char *server_key_path, char *err) {
    coordinator_curve_key own, server;
    int rc = coordinator_curve_read_secret(key_path, &own, err);
    if (rc != 0) {
        return rc;
    }
    if ((rc = coordinator_curve_read_public(server_key_path, &server, err)) != 0) {
        coordinator_curve_wipe(&own);
        return rc;
    }
    out->own = own;
    memcpy(out->server_z85, server.public_z85, sizeof out->server_z85);
    coordinator_curve_wipe(&own);
    return 0;
}

/* Creates path (which must not exist) with exactly mode and writes text to it, fsync'd. On
 * failure the file, which this call created, is removed. */
static int write_new_file(const char *path, mode_t mode, const char *text, char *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        if (errno == EEXIST) {
            return common_fail(err, COMMON_ERR_IO,
                               "%s exists already: keygen never writes over a key (remove it, or "
                               "choose another --out)",
                               path);
        }
        return common_fail(err, COMMON_ERR_IO, "create %s: %s", path, strerror(errno));
    }
    int rc = 0;
    /* the umask may have taken bits off mode (0644 under umask 077); the mode is set exactly,
     * and only ever loosened for the public file */
    if (fchmod(fd, mode) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "chmod %s: %s", path, strerror(errno));
    }
    size_t len = strlen(text), done = 0;
    while (rc == 0 && done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = common_fail(err, COMMON_ERR_IO, "write %s: %s", path, strerror(errno));
        } else {
            done += (size_t)n;
        }
    }
    if (rc == 0 && fsync(fd) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "fsync %s: %s", path, strerror(errno));
    }
    if (close(fd) != 0 && rc == 0) {
        rc = common_fail(err, COMMON_ERR_IO, "close %s: %s", path, strerror(errno));
    }
    if (rc != 0) {
        unlink(path);
    }
    return rc;
}

int coordinator_curve_keygen(const char *prefix, coordinator_curve_key *out, char *err) {
    if (!coordinator_curve_available()) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "keygen: this libzmq was built without CURVE (zmq_has(\"curve\") is 0)");
    }
    char key_path[4096], pub_path[4096];
    if (prefix[0] == '\0' ||
        snprintf(key_path, sizeof key_path, "%s.key", prefix) >= (int)sizeof key_path ||
        snprintf(pub_path, sizeof pub_path, "%s.pub", prefix) >= (int)sizeof pub_path) {
        return common_fail(err, COMMON_ERR_INVALID, "keygen: '%.64s...' is no usable file prefix",
                           prefix);
    }
    /* checked before the pair is made, for the message; O_EXCL below is what guarantees it */
    struct stat st;
    if (lstat(pub_path, &st) == 0) {
        return common_fail(err, COMMON_ERR_IO,
                           "%s exists already: keygen never writes over a key (remove it, or "
                           "choose another --out)",
                           pub_path);
    }
    coordinator_curve_key k;
    if (zmq_curve_keypair(k.public_z85, k.secret_z85) != 0) {
        return common_fail(err, COMMON_ERR_IO, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    }
    char text[1024];
    snprintf(text, sizeof text,
             "# chesslens CurveZMQ secret key (chesslens keygen). Keep it private, mode 0600:\n"
             "# whoever reads it can act as its owner. Hand out the .pub file beside it.\n"
             "public = %s\n"
             "secret = %s\n",
             k.public_z85, k.secret_z85);
    int rc = write_new_file(key_path, 0600, text, err);
    wipe(text, sizeof text);
    if (rc == 0) {
        snprintf(text, sizeof text,
                 "# chesslens CurveZMQ public key (chesslens keygen): a worker's or client's goes\n"
                 "# into the coordinator's --clients directory, the coordinator's is their\n"
                 "# --server-key.\n"
                 "public = %s\n",
                 k.public_z85);
        rc = write_new_file(pub_path, 0644, text, err);
        if (rc != 0) {
            unlink(key_path); /* created above: no half of a pair is left behind */
        }
    }
    if (rc == 0) {
        rc = common_fsync_parent(key_path, err);
    }
    if (rc == 0 && out != NULL) {
        *out = k;
    }
    coordinator_curve_wipe(&k);
    return rc;
}

/* ---- socket options ---- */

int coordinator_curve_client_setup(void *sock, const void *arg, char *err) {
    const coordinator_curve_client *c = arg;
    /* Z85 keys are passed with their NUL: 41 bytes (zmq_setsockopt) */
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, c->server_z85, sizeof c->server_z85) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, c->own.public_z85, sizeof c->own.public_z85) !=
            0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, c->own.secret_z85, sizeof c->own.secret_z85) !=
            0) {
        return common_fail(err, COMMON_ERR_IO, "zmq_setsockopt(CURVE client keys): %s",
                           zmq_strerror(zmq_errno()));
    }
    return 0;
}

int coordinator_curve_server_setup(void *sock, const coordinator_curve_key *key, char *err) {
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, key->secret_z85, sizeof key->secret_z85) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, COORDINATOR_CURVE_DOMAIN,
                       strlen(COORDINATOR_CURVE_DOMAIN)) != 0) {
        return common_fail(err, COMMON_ERR_IO, "zmq_setsockopt(CURVE server): %s",
                           zmq_strerror(zmq_errno()));
    }
    return 0;
}

/* ---- the loopback rule ---- */

bool coordinator_endpoint_is_local(const char *endpoint) {
    if (strncmp(endpoint, "inproc://", 9) == 0 || strncmp(endpoint, "ipc://", 6) == 0) {
        return true;
    }
    if (strncmp(endpoint, "tcp://", 6) != 0) {
        return false; /* another transport: not known to stay on this machine */
    }
    const char *host = endpoint + 6, *end = NULL;
    if (host[0] == '[') { /* [IPv6]:port */
        host++;
        end = strchr(host, ']');
        if (end == NULL || end[1] != ':') {
            return false;
        }
    } else {
        end = strrchr(host, ':');
        if (end == NULL) {
            return false;
        }
    }
    char h[64];
    size_t len = (size_t)(end - host);
    if (len == 0 || len >= sizeof h) {
        return false;
    }
    memcpy(h, host, len);
    h[len] = '\0';
    if (strcasecmp(h, "localhost") == 0) {
        return true;
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    if (inet_pton(AF_INET6, h, &a6) == 1) {
        static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        static const uint8_t loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        return memcmp(a6.s6_addr, loopback, 16) == 0 ||
               (memcmp(a6.s6_addr, v4_mapped, 12) == 0 && a6.s6_addr[12] == 127);
    }
    return false; /* "*", an interface name or a host name: possibly every network */
}

/* ---- the ZAP handler ---- */

typedef struct zap_client {
    uint8_t key[KEY_BYTES];
    char name[ZAP_MAX_TEXT + 1]; /* the file's name without .pub: the ZAP user id */
} zap_client;

/* A log budget: at most LOG_BURST lines per window, then a count of the lines left out. */
typedef struct log_budget {
    int64_t window_start_ns;
    unsigned lines;
    uint64_t left_out;
} log_budget;

struct coordinator_zap {
    void *rep; /* used by the thread alone while it runs */
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_bool failed;
    char fail_err[COMMON_ERR_LEN]; /* written by the thread before it sets failed */
    zap_client *clients;           /* sorted by key */
    size_t n_clients;
    char *dir;
    FILE *log;
    log_budget admitted, refused; /* separate, so that a flood of refusals hides no admission */
};

static int client_cmp(const void *a, const void *b) {
    return memcmp(((const zap_client *)a)->key, ((const zap_client *)b)->key, KEY_BYTES);
}

/* A user id for ZAP: printable ASCII (RFC 27 strings), at most 255 bytes. */
static void user_id_of(const char *file_name, size_t len, char *out) {
    len = len > ZAP_MAX_TEXT ? ZAP_MAX_TEXT : len;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)file_name[i];
        out[i] = c >= 0x21 && c < 0x7f ? (char)c : '_';
    }
    out[len] = '\0';
}

static int load_clients(coordinator_zap *z, const char *dir, char *err) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        return common_fail(err, COMMON_ERR_IO, "clients directory %s: %s", dir, strerror(errno));
    }
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *ent = readdir(d);
        if (ent == NULL) {
            if (errno != 0) {
                rc = common_fail(err, COMMON_ERR_IO, "clients directory %s: readdir: %s", dir,
                                 strerror(errno));
            }
            break;
        }
        size_t len = strlen(ent->d_name);
        /* dot files are skipped: a Kubernetes ConfigMap volume keeps its ..data links there */
        if (ent->d_name[0] == '.' || len <= 4 || strcmp(ent->d_name + len - 4, ".pub") != 0) {
            continue;
        }
        if (z->n_clients == COORDINATOR_CURVE_MAX_CLIENTS) {
            rc = common_fail(err, COMMON_ERR_INVALID, "clients directory %s: more than %d keys",
                             dir, COORDINATOR_CURVE_MAX_CLIENTS);
            break;
        }
        if (z->n_clients == cap) {
            cap = cap == 0 ? 16 : 2 * cap;
            zap_client *grown = realloc(z->clients, cap * sizeof *grown);
            if (grown == NULL) {
                rc = common_fail(err, COMMON_ERR_NOMEM, "clients directory %s: out of memory", dir);
                break;
            }
            z->clients = grown;
        }
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, ent->d_name) >= (int)sizeof path) {
            rc = common_fail(err, COMMON_ERR_INVALID, "clients directory %s: a path too long", dir);
            break;
        }
        coordinator_curve_key k;
        if ((rc = coordinator_curve_read_public(path, &k, err)) != 0) {
            break;
        }
        zap_client *c = &z->clients[z->n_clients++];
        zmq_z85_decode(c->key, k.public_z85); /* checked by the read */
        user_id_of(ent->d_name, len - 4, c->name);
    }
    closedir(d);
    if (rc == 0 && z->n_clients == 0) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND,
                         "clients directory %s holds no *.pub file: no worker or client could "
                         "connect",
                         dir);
    }
    if (rc == 0) {
        qsort(z->clients, z->n_clients, sizeof *z->clients, client_cmp);
    }
    return rc;
}

/* Writes one line through budget b (the thread's own log lines; stdio locks the stream). */
static void zap_log(coordinator_zap *z, log_budget *b, const char *what, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void zap_log(coordinator_zap *z, log_budget *b, const char *what, const char *fmt, ...) {
    if (z->log == NULL) {
        return;
    }
    int64_t now = now_ns();
    if (now - b->window_start_ns >= LOG_WINDOW_NS) {
        if (b->left_out > 0) {
            fprintf(z->log, "coordinator: CURVE: %" PRIu64 " more %s not logged\n", b->left_out,
                    what);
        }
        b->window_start_ns = now;
        b->lines = 0;
        b->left_out = 0;
    }
    if (b->lines >= LOG_BURST) {
        b->left_out++;
        return;
    }
    b->lines++;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(z->log, fmt, ap);
    va_end(ap);
    fflush(z->log);
}

/* A frame's bytes as printable text for the log (at most cap - 1 bytes). */
static void printable(zmq_msg_t *m, char *out, size_t cap) {
    size_t n = zmq_msg_size(m);
    const unsigned char *p = zmq_msg_data(m);
    n = n < cap - 1 ? n : cap - 1;
    for (size_t i = 0; i < n; i++) {
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
    }
    out[n] = '\0';
}

static bool frame_is(zmq_msg_t *m, const char *s) {
    size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

/* The answer to one request of n_total frames (the first ZAP_MAX_FRAMES in f): *status "200", "400"
 * or "500", its text and, for 200, the user id. Logs every refusal and admission. */
static void decide(coordinator_zap *z, zmq_msg_t *f, size_t n_total, const char **status,
                   const char **text, const char **user) {
    *user = "";
    /* version, request id, domain, address, identity, mechanism, credentials... */
    if (n_total < 6 || !frame_is(&f[0], "1.0")) {
        *status = "500";
        *text = "malformed ZAP request";
        zap_log(z, &z->refused, "refusals",
                "coordinator: CURVE: a malformed ZAP request (%zu "
                "frames) refused\n",
                n_total);
        return;
    }
    char address[64], mechanism[16], domain[64];
    printable(&f[3], address, sizeof address);
    printable(&f[5], mechanism, sizeof mechanism);
    printable(&f[2], domain, sizeof domain);
    if (!frame_is(&f[5], "CURVE")) {
        *status = "400";
        *text = "only CURVE is admitted";
        zap_log(z, &z->refused, "refusals",
                "coordinator: CURVE: refused a %s handshake from %s: only CURVE is admitted\n",
                mechanism, address);
        return;
    }
    if (!frame_is(&f[2], COORDINATOR_CURVE_DOMAIN)) {
        *status = "400";
        *text = "unknown domain";
        zap_log(z, &z->refused, "refusals",
                "coordinator: CURVE: refused a handshake from %s in ZAP domain '%s'\n", address,
                domain);
        return;
    }
    if (n_total != 7 || zmq_msg_size(&f[6]) != KEY_BYTES) {
        *status = "500";
        *text = "malformed CURVE credentials";
        zap_log(z, &z->refused, "refusals",
                "coordinator: CURVE: refused a handshake from %s: malformed credentials\n",
                address);
        return;
    }
    zap_client probe;
    memcpy(probe.key, zmq_msg_data(&f[6]), KEY_BYTES);
    const zap_client *c = bsearch(&probe, z->clients, z->n_clients, sizeof *z->clients, client_cmp);
    char key[COORDINATOR_CURVE_Z85_LEN + 1];
    zmq_z85_encode(key, probe.key, KEY_BYTES);
    if (c == NULL) {
        *status = "400";
        *text = "client key not admitted";
        zap_log(z, &z->refused, "refusals",
                "coordinator: CURVE: refused client key %s from %s: not among the keys in %s\n",
                key, address, z->dir);
        return;
    }
    *status = "200";
    *text = "OK";
    *user = c->name;
    zap_log(z, &z->admitted, "admissions", "coordinator: CURVE: admitted '%s' (key %s) from %s\n",
            c->name, key, address);
}

/* Sends the frames of a reply; false on a socket error (EINTR is retried). */
static bool send_reply(void *rep, zmq_msg_t *request_id, const char *status, const char *text,
                       const char *user) {
    const void *data[6] = {"1.0", NULL, status, text, user, ""};
    size_t len[6] = {3, 0, strlen(status), strlen(text), strlen(user), 0};
    if (request_id != NULL) {
        data[1] = zmq_msg_data(request_id);
        len[1] = zmq_msg_size(request_id);
    }
    for (int i = 0; i < 6; i++) {
        while (zmq_send(rep, data[i], len[i], i < 5 ? ZMQ_SNDMORE : 0) < 0) {
            if (zmq_errno() != EINTR) {
                return false;
            }
        }
    }
    return true;
}

static void thread_fail(coordinator_zap *z, const char *what) {
    common_fail(z->fail_err, COMMON_ERR_IO, "ZAP handler: %s: %s", what, zmq_strerror(zmq_errno()));
    atomic_store(&z->failed, true);
}

static void *zap_thread(void *arg) {
    coordinator_zap *z = arg;
    zmq_msg_t f[ZAP_MAX_FRAMES];
    for (size_t i = 0; i < ZAP_MAX_FRAMES; i++) {
        zmq_msg_init(&f[i]);
    }
    while (!atomic_load(&z->stop) && !atomic_load(&z->failed)) {
        zmq_pollitem_t item = {.socket = z->rep, .events = ZMQ_POLLIN};
        int ready = zmq_poll(&item, 1, ZAP_POLL_MS);
        if (ready < 0 && zmq_errno() == EINTR) {
            continue;
        }
        if (ready < 0) {
            thread_fail(z, "zmq_poll");
            break;
        }
        if (ready == 0) {
            continue;
        }
        /* every frame of the request, the first ZAP_MAX_FRAMES kept */
        size_t n = 0, n_total = 0;
        bool more = true, ok = true;
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        while (more) {
            zmq_msg_t *into = n < ZAP_MAX_FRAMES ? &f[n] : &extra;
            if (zmq_msg_recv(into, z->rep, 0) < 0) {
                if (zmq_errno() == EINTR) {
                    continue;
                }
                ok = false;
                break;
            }
            more = zmq_msg_more(into);
            n += n < ZAP_MAX_FRAMES;
            n_total++;
        }
        zmq_msg_close(&extra);
        if (!ok) {
            thread_fail(z, "zmq_msg_recv");
            break;
        }
        const char *status = NULL, *text = NULL, *user = NULL;
        decide(z, f, n_total, &status, &text, &user);
        if (!send_reply(z->rep, n >= 2 ? &f[1] : NULL, status, text, user)) {
            thread_fail(z, "zmq_send");
            break;
        }
    }
    for (size_t i = 0; i < ZAP_MAX_FRAMES; i++) {
        zmq_msg_close(&f[i]);
    }
    /* after a failure the socket stays bound (closed by coordinator_zap_stop): while it is,
     * libzmq waits for answers that never come instead of admitting every key */
    return NULL;
}

int coordinator_zap_start(coordinator_zap **out, void *zmq_ctx, const char *clients_dir, FILE *log,
                          char *err) {
    *out = NULL;
    coordinator_zap *z = calloc(1, sizeof *z);
    if (z == NULL || (z->dir = strdup(clients_dir)) == NULL) {
        free(z);
        return common_fail(err, COMMON_ERR_NOMEM, "ZAP handler: out of memory");
    }
    z->log = log;
    atomic_init(&z->stop, false);
    atomic_init(&z->failed, false);
    z->admitted.window_start_ns = z->refused.window_start_ns = now_ns();
    int rc = load_clients(z, clients_dir, err);
    if (rc == 0 && (z->rep = zmq_socket(zmq_ctx, ZMQ_REP)) == NULL) {
        rc = common_fail(err, COMMON_ERR_IO, "ZAP handler: zmq_socket(REP): %s",
                         zmq_strerror(zmq_errno()));
    }
    int linger = 0;
    if (rc == 0 && (zmq_setsockopt(z->rep, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
                    zmq_bind(z->rep, ZAP_ENDPOINT) != 0)) {
        rc = common_fail(err, COMMON_ERR_IO, "ZAP handler: bind %s: %s", ZAP_ENDPOINT,
                         zmq_strerror(zmq_errno()));
    }
    if (rc == 0) {
        /* the thread takes no signals: they stay with the threads that wait for them */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int e = pthread_create(&z->thread, NULL, zap_thread, z);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e != 0) {
            rc = common_fail(err, COMMON_ERR_IO, "ZAP handler: pthread_create: %s", strerror(e));
        } else {
            z->started = true;
        }
    }
    if (rc != 0) {
        coordinator_zap_stop(&z);
        return rc;
    }
    *out = z;
    return 0;
}

size_t coordinator_zap_clients(const coordinator_zap *z) {
    return z->n_clients;
}

bool coordinator_zap_failed(coordinator_zap *z, char *err) {
    if (!atomic_load(&z->failed)) {
        return false;
    }
    if (err != NULL) {
        snprintf(err, COMMON_ERR_LEN, "%s", z->fail_err);
    }
    return true;
}

void coordinator_zap_stop(coordinator_zap **zp) {
    if (zp == NULL || *zp == NULL) {
        return;
    }
    coordinator_zap *z = *zp;
    if (z->started) {
        atomic_store(&z->stop, true);
        pthread_join(z->thread, NULL); /* also the barrier that hands the socket back */
    }
    if (z->rep != NULL) {
        /* an inproc unbind takes effect at once, a close only later (libzmq's reaper): so a
         * handler may bind again as soon as this returns */
        zmq_unbind(z->rep, ZAP_ENDPOINT);
        zmq_close(z->rep);
    }
    free(z->clients);
    free(z->dir);
    free(z);
    *zp = NULL;
}
