/*
 * cli/client.h: the CLI's side of the client requests of proto/PROTOCOL.md (SUBMIT, STATUS,
 * CANCEL, LIST, WORKERS, RETRY_DEAD) over a ZeroMQ DEALER socket to a coordinator.
 *
 * Every request is safe to send twice: SUBMIT carries the submission id that makes a retried
 * submit the same sweep, the others read or set a state. So a call that gets no answer within
 * its try closes the socket, opens a new one (a coordinator that restarted meets a fresh peer)
 * and sends the same request again, until the call's deadline. A reply is matched to its
 * request by the request id; a late answer to an earlier try is discarded.
 *
 * With CURVE keys (cli_client_open_with and coordinator_curve_client_setup) every socket the
 * client opens, the fresh ones of its retries included, is a CURVE client (proto/PROTOCOL.md,
 * "Authentication"). A coordinator that
 * refuses the handshake (a key it does not list, CURVE on one side only, a wrong server key)
 * never answers, so such a call ends at its deadline like any other unanswered one; its error
 * then says what the handshakes saw, from a monitor on each socket.
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed): COMMON_ERR_IO when no answer came before the deadline (or a socket
 * failed), COMMON_ERR_INVALID with the coordinator's text when it answered ERROR, PARSE for a
 * reply that does not decode.
 */
#ifndef CHESSLENS_CLI_CLIENT_H
#define CHESSLENS_CLI_CLIENT_H

#include "proto/proto.h"
#include "proto/reply.h"

/* The endpoint when none is given: $CHESSLENS_COORDINATOR, else tcp://127.0.0.1:5555. */
const char *cli_client_default_endpoint(void);

typedef struct cli_client cli_client;

/* A client of the coordinator at endpoint (copied). zmq_ctx: the context to use (required for
 * inproc://; NULL: the client's own). try_ms: how long one try waits for its answer. Nothing
 * is sent yet, so this fails only for a malformed endpoint or a resource error. */
int cli_client_open(cli_client **out, const char *endpoint, void *zmq_ctx, int try_ms, char *err);
/* Options set on every socket the client opens, before it connects: CURVE keys, with fn
 * coordinator_curve_client_setup and arg a coordinator_curve_client (coordinator/curve.h).
 * (A hook rather than the keys, so that this file links without the coordinator library.) */
typedef struct cli_client_setup {
    int (*fn)(void *sock, const void *arg, char *err); /* 0, or a negative code and err */
    const void *arg;                                   /* borrowed: it outlives the client */
} cli_client_setup;
/* As cli_client_open, with setup (copied; NULL: none) applied to every socket; a failing setup
 * fails the call that opens the socket. */
int cli_client_open_with(cli_client **out, const char *endpoint, void *zmq_ctx, int try_ms,
                         const cli_client_setup *setup, char *err);
/* NULL is fine; *c is NULL afterwards. */
void cli_client_close(cli_client **c);

/* Sends req (its type and that type's fields; req->req is set here) and returns the decoded
 * body of its REPLY in *out (proto_reply_free), trying again until deadline_ms have passed
 * (at least one try). */
int cli_client_call(cli_client *c, proto_msg *req, int deadline_ms, proto_reply **out, char *err);

#endif
