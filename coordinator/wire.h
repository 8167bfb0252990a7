/*
 * coordinator/wire.h: the bodies of the TASK and RESULT messages (proto/PROTOCOL.md, "Task and
 * result bodies"): a task's work as the coordinator loaded it from the store, and the results
 * a worker computed, each as one MessagePack map. A worker needs neither the store nor the
 * dataset: the work body carries every game text it reads, and the results body carries the
 * columns coordinator_task_complete stores.
 *
 * Decoders follow proto.h's rules for hostile input (they read with proto_reader): every
 * declared length and count is checked against the bytes left and against its cap before
 * anything is allocated; unknown, duplicate or missing keys, wrong types, values out of range
 * and trailing bytes are refused (COMMON_ERR_PARSE for malformed bytes, COMMON_ERR_INVALID for
 * well-formed but not allowed) with a message naming the field ("work.pairs[3].game: ..."),
 * and nothing is left allocated after a refusal.
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed); *out is set only on success.
 */
#ifndef CHESSLENS_COORDINATOR_WIRE_H
#define CHESSLENS_COORDINATOR_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/coordinator.h"

/* Caps of a decoded body, beyond PROTO_MAX_MESSAGE. */
#define COORDINATOR_WIRE_MAX_GAMES 65536   /* games a work body carries */
#define COORDINATOR_WIRE_MAX_PAIRS 1048576 /* pairs of a patch work body or results body */
#define COORDINATOR_WIRE_MAX_ROWS 16777216 /* prediction rows, values of one pair */

/* ---- work (TASK.body) ---- */

/* Encodes w: its analysis index, kind, games range, cut-off, the games it reads once each, by
 * index (index, UCI text, token texts; for a patch task each game of a pair and the corrupting
 * game, cut to the cut-off, the corrupting game's UCI text nil since no pair reads it; for an
 * aggregate task every game whole, with its phases) and the pairs (game, corrupted position,
 * corrupting game, clean and replacement tokens). INVALID for a work the decoder would refuse
 * (a token text of 0 or more than 3 bytes, pairs that disagree on a game's texts, a count over
 * its cap). *out: free. */
int coordinator_work_encode(const coordinator_work *w, uint8_t **out, size_t *len, char *err);

/* Decodes a work body written by coordinator_work_encode for a task of spec's sweep. The work
 * equals the encoded one field by field (every pair's clean and corrupted token arrays are
 * rebuilt from its games); params points to spec->analyses[analysis], so spec must outlive it.
 * Beyond the rules above, INVALID when the body does not fit spec: an analysis index out of
 * range or of another kind, a cut-off < 2 or longer than a game it names, a pair whose game is
 * not among the games, a corrupted position outside 1..cutoff-1, a token text longer than 3
 * bytes. *out: coordinator_work_destroy. */
int coordinator_work_decode(const coordinator_spec *spec, const void *buf, size_t len,
                            coordinator_work **out, char *err);

/* ---- results (RESULT.body) ---- */

/* Encodes everything r holds (NULL members are absent from the map): patch batches as columns
 * with each pair's interp_patch_result (shape, axes, labels, metrics, forwards, positions,
 * values as little-endian float32 bytes), legal-statistics and neuron partials with their
 * arrays as little-endian bytes, predictions as columns. Every float goes as its IEEE-754 bits
 * (the two metrics of a pair as 8-byte bins, since they are NaN for an unnormalisable pair),
 * so the decoded numbers are bit for bit the encoded ones. A batch's NULL column goes as what
 * the store reads for it (nil tokens, corrupting game -1, not normalised); a prediction's
 * legal flag goes as 0 or 1. INVALID for a value outside the decoder's caps. *out: free. */
int coordinator_results_encode(const coordinator_results *r, uint8_t **out, size_t *len, char *err);

/* Decoded results: they own every array coordinator_results points to, the patch results
 * (interp_patch_result_destroy's layout) and the partials (interp_*_stats_new) included. */
typedef struct coordinator_results_msg coordinator_results_msg;

/* Decodes a results body. Beyond the rules above, INVALID for a patch kind outside
 * interp_patch_kind, a shape whose element count differs from its values' or exceeds
 * COORDINATOR_WIRE_MAX_ROWS, a byte array whose length is not its element count times the
 * element size, a count of legal-statistics cells or neuron sums that differs from its
 * dimensions. *out: coordinator_results_msg_free. */
int coordinator_results_decode(const void *buf, size_t len, coordinator_results_msg **out,
                               char *err);
/* The results, ready for coordinator_task_complete (owned by m). */
const coordinator_results *coordinator_results_msg_get(const coordinator_results_msg *m);
/* NULL is fine; *m is NULL afterwards. */
void coordinator_results_msg_free(coordinator_results_msg **m);

/* ---- digests ---- */

/* SHA-256 of p[n] as 64 lower-case hex digits and a terminator (RESULT.digest). Returns 0. */
int coordinator_digest_hex(const void *p, size_t n, char out[65]);
/* SHA-256 of a whole file, streamed (a model's model.safetensors, TASK.model_sha256). IO when
 * the file cannot be read. */
int coordinator_digest_file_hex(const char *path, char out[65], char *err);

#endif
