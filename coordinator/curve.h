/*
 * coordinator/curve.h: CurveZMQ for the sweep service (proto/PROTOCOL.md, "Authentication";
 * docs/SECURITY.md): the key files `chesslens keygen` writes, the socket options that make a
 * ZeroMQ socket a CURVE server or client, a ZAP handler (rfc.zeromq.org 27/ZAP) that admits
 * only the client keys listed in a directory, and the rule that plain tcp listens on loopback
 * only.
 *
 * It lives in coordinator/ because that is the lowest component that links ZeroMQ and that
 * both worker/ and cli/ build on (docs/ARCHITECTURE.md §2): proto/ knows MessagePack only, and
 * common/ no library at all. The coordinator uses the server half, chesslens-worker and the
 * chesslens client commands the client half, and all of them read key files the same way.
 *
 * Key files are text. A secret key file (PREFIX.key) holds two lines, `public = <Z85>` and
 * `secret = <Z85>` (40 characters each: a 32-byte Curve25519 key); a public key file
 * (PREFIX.pub) holds the `public` line only. Blank lines and lines starting with '#' are
 * comments. Anything else (an unknown name, a name given twice, a key that is not 40 Z85
 * characters, a public key that does not belong to the secret one) is refused, naming the file
 * and line. A secret key file that group or others may read or write is refused, as ssh
 * refuses such a private key.
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed).
 */
#ifndef CHESSLENS_COORDINATOR_CURVE_H
#define CHESSLENS_COORDINATOR_CURVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/common.h"

/* Z85 text of a 32-byte key, without its terminating NUL. */
#define COORDINATOR_CURVE_Z85_LEN 40
/* The largest key file read (a key file is about 300 bytes; anything far larger is no key). */
#define COORDINATOR_CURVE_MAX_FILE 4096
/* The most client keys a clients directory may hold. */
#define COORDINATOR_CURVE_MAX_CLIENTS 100000
/* The ZAP domain the coordinator's socket sets and the handler expects. */
#define COORDINATOR_CURVE_DOMAIN "chesslens"

/* One key pair as Z85 text (NUL-terminated); secret is "" for a public key alone. */
typedef struct coordinator_curve_key {
    char public_z85[COORDINATOR_CURVE_Z85_LEN + 1];
    char secret_z85[COORDINATOR_CURVE_Z85_LEN + 1];
} coordinator_curve_key;

/* What a CURVE client needs: its own pair and the server's public key. */
typedef struct coordinator_curve_client {
    coordinator_curve_key own;
    char server_z85[COORDINATOR_CURVE_Z85_LEN + 1];
} coordinator_curve_client;

/* Whether this libzmq can do CURVE (it was built with libsodium or its own tweetnacl). */
bool coordinator_curve_available(void);

/* Makes a new key pair and writes it: PREFIX.key (both keys) is created with mode 0600 from the
 * start (O_CREAT | O_EXCL), PREFIX.pub (the public key) with 0644, both fsync'd. Neither
 * file may exist already (IO error naming it; nothing is written over), and a PREFIX.key made
 * here is removed again when PREFIX.pub cannot be made. On success *out (may be NULL) holds the
 * pair. */
int coordinator_curve_keygen(const char *prefix, coordinator_curve_key *out, char *err);

/* Reads a secret key file (both lines), after checking that it is a regular file that group
 * and others can neither read nor write. On success *out holds the pair (coordinator_curve_wipe
 * it when done). */
int coordinator_curve_read_secret(const char *path, coordinator_curve_key *out, char *err);
/* Reads a public key file (the `public` line; a file that holds a secret key is refused, so
 * that a secret key copied by mistake into a clients directory is noticed). */
int coordinator_curve_read_public(const char *path, coordinator_curve_key *out, char *err);
/* Reads a client's secret key file and the server's public key file into *out. */
int coordinator_curve_client_load(coordinator_curve_client *out, const char *key_path,
                                  const char *server_key_path, char *err);
/* Overwrites the secret key in k with zeros (the public one stays). */
void coordinator_curve_wipe(coordinator_curve_key *k);

/* Makes sock a CURVE client of the server whose key arg (a const coordinator_curve_client *)
 * names, with arg's own pair; call it on every socket before zmq_connect. The signature is that
 * of worker_service_opts.socket_setup. */
int coordinator_curve_client_setup(void *sock, const void *arg, char *err);
/* Makes sock a CURVE server with key's secret, in ZAP domain COORDINATOR_CURVE_DOMAIN; call it
 * before zmq_bind, and only with a ZAP handler running in sock's context (without one, libzmq
 * admits every client key). */
int coordinator_curve_server_setup(void *sock, const coordinator_curve_key *key, char *err);

/* Whether a plain (no CURVE) socket may listen on endpoint: inproc:// and ipc:// endpoints,
 * and tcp:// endpoints whose host is a loopback address (127.0.0.0/8, ::1, an IPv4-mapped
 * 127.x address) or "localhost". Everything else, "*", 0.0.0.0, interface names and other
 * host names and transports included, is not. */
bool coordinator_endpoint_is_local(const char *endpoint);

/* ---- the ZAP handler ---- */

typedef struct coordinator_zap coordinator_zap;

/* Reads every *.pub file of clients_dir (coordinator_curve_read_public; a file that does not
 * read is an error, as is a directory with none), binds a REP socket to
 * inproc://zeromq.zap.01 in zmq_ctx and starts the thread that answers its requests: 200 for
 * a CURVE request of domain COORDINATOR_CURVE_DOMAIN whose public key is listed (its user id
 * the file's name without .pub), 400 for every other well-formed request, 500 for a malformed
 * one. Every answer but 200 is logged to log (NULL: none; at most 10 lines per 10 s, then a
 * count of what was left out), and so is every admission. The socket is bound when this
 * returns, so a CURVE server bound afterwards in the same context never handshakes without the
 * handler; binding fails (IO) when the context has a handler already. On success *out is set
 * (coordinator_zap_stop). */
int coordinator_zap_start(coordinator_zap **out, void *zmq_ctx, const char *clients_dir, FILE *log,
                          char *err);
/* The number of client keys it admits. */
size_t coordinator_zap_clients(const coordinator_zap *z);
/* Whether the handler thread has stopped answering after a socket error (then err says why).
 * Its socket stays bound, so that handshakes wait (and time out) instead of passing
 * unchecked: the caller must then close its CURVE sockets and stop. */
bool coordinator_zap_failed(coordinator_zap *z, char *err);
/* Stops the thread and closes its socket. Close the CURVE sockets first: with the handler
 * gone, libzmq would admit any key. NULL is fine; *z is NULL afterwards. */
void coordinator_zap_stop(coordinator_zap **z);

#endif
