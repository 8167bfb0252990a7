/*
 * wire_work: the work body of a TASK message (wire.h; proto/PROTOCOL.md, "Task and result
 * bodies"). The body carries every text the executor reads, so a worker needs neither the
 * store nor the dataset: each game a work names once (its index, moves and token texts, and
 * for an aggregate task its phases), and the pairs referring to games by index. A patch task's
 * games are cut to its cut-off: a pair reads only the first N tokens of its game and of its
 * corrupting game, and the clean and corrupted prompts are rebuilt from them on decoding.
 *
 * Decoding is a pull parse with proto_reader in two passes: the first reads the map (keys in
 * any order) into the work's own storage, checking every field's type, length and cap; the
 * second checks what only the whole body and the spec can tell (the kind's keys, ranges, the
 * cut-off, the pairs' games and positions) and links the pairs to their games. Errors are
 * built from the inside out: a reader writes a message relative to its container (".index:
 * ..."), and each level above prefixes its own step, so the caller sees the whole path
 * ("work.games[3].tokens[5]: 5 bytes, at most 3").
 */
#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "coordinator/wire.h"
#include "coordinator/work_int.h"
#include "proto/proto.h"

#define MAX_KEY 32                                       /* longer than every key */
#define MAX_UCI ((size_t)1 << 20)                        /* bytes of one game's moves */
#define MAX_GAME_TOKENS ((size_t)COORDINATOR_MAX_CUTOFF) /* no model runs longer games */
#define MAX_TOKEN 3                                      /* "<s>", "e4", "q" */

/* Keys of the work map; the last two belong to patch tasks only. */
enum { W_ANALYSIS, W_KIND, W_FROM, W_TO, W_GAMES, W_CUTOFF, W_PAIRS, W_N };
static const char *const work_keys[W_N] = {"analysis", "kind",   "from", "to",
                                           "games",    "cutoff", "pairs"};
/* Keys of a game; phases (last) belongs to aggregate tasks only. */
enum { G_INDEX, G_UCI, G_TOKENS, G_PHASES, G_N };
static const char *const game_keys[G_N] = {"index", "uci", "tokens", "phases"};
/* Keys of a pair, all required. */
enum { P_GAME, P_CORRUPT_POS, P_CORRUPT_GAME, P_CLEAN_TOKEN, P_CORRUPT_TOKEN, P_N };
static const char *const pair_keys[P_N] = {"game", "corrupt_pos", "corrupt_game", "clean_token",
                                           "corrupt_token"};

static const coordinator_analysis_kind kinds[4] = {
    COORDINATOR_ANALYSIS_PATCH, COORDINATOR_ANALYSIS_LEGAL_STATS, COORDINATOR_ANALYSIS_NEURON_STATS,
    COORDINATOR_ANALYSIS_PREDICTIONS};

/* ------------------------------------------------------------------------------------------ */
/* Reading helpers                                                                             */

static size_t bytes_left(const proto_reader *r) {
    return r->len - r->off;
}

/* PARSE when bytes follow the body's map (proto_r_end's own message names a message). */
static int check_end(const proto_reader *r, char *msg) {
    size_t n = bytes_left(r);
    return n == 0 ? 0 : common_fail(msg, COMMON_ERR_PARSE, ": %zu bytes after the map", n);
}

/* The fewest bytes a map with the first n_required of keys can take: a one-byte header, each
 * key as a fixstr and each value at least one byte. An array of such maps must leave that much
 * per element, which bounds what is allocated for it by the input's own size. */
static size_t min_map_bytes(const char *const *keys, size_t n_required) {
    size_t n = 1;
    for (size_t i = 0; i < n_required; i++) {
        n += 1 + strlen(keys[i]) + 1;
    }
    return n;
}

static int check_fits(const proto_reader *r, uint32_t n, size_t each, const char *what, char *msg) {
    if ((size_t)n > bytes_left(r) / each) {
        return common_fail(msg, COMMON_ERR_PARSE,
                           "%s: %" PRIu32 " elements of at least %zu bytes, %zu bytes left", what,
                           n, each, bytes_left(r));
    }
    return 0;
}

/* The next key of a map, found in keys[n]: an unknown key or one given twice is INVALID. */
static int read_key(proto_reader *r, const char *const *keys, size_t n, uint32_t *seen,
                    size_t *which, char *msg) {
    const char *s = NULL;
    size_t len = 0;
    int rc = proto_r_str(r, MAX_KEY, &s, &len, " key", msg);
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (strlen(keys[i]) == len && memcmp(keys[i], s, len) == 0) {
            if (*seen & (1u << i)) {
                return common_fail(msg, COMMON_ERR_INVALID, ".%s: given twice", keys[i]);
            }
            *seen |= 1u << i;
            *which = i;
            return 0;
        }
    }
    return common_fail(msg, COMMON_ERR_INVALID, ".%.*s: not a key", (int)len, s);
}

/* The first of the required keys (bits) that seen lacks, or -1. */
static int missing_key(uint32_t seen, uint32_t required) {
    for (int i = 0; i < 32; i++) {
        if ((required & (1u << i)) && !(seen & (1u << i))) {
            return i;
        }
    }
    return -1;
}

/* A str of lo..hi bytes without NUL, as a view. */
static int read_text(proto_reader *r, size_t lo, size_t hi, const char **s, size_t *n,
                     const char *what, char *msg) {
    int rc = proto_r_str(r, hi, s, n, what, msg);
    if (rc != 0) {
        return rc;
    }
    if (*n < lo) {
        return common_fail(msg, COMMON_ERR_INVALID, "%s: %zu bytes, at least %zu", what, *n, lo);
    }
    if (memchr(*s, '\0', *n) != NULL) {
        return common_fail(msg, COMMON_ERR_INVALID, "%s: a NUL byte in the text", what);
    }
    return 0;
}

/* A token text of 0..3 bytes into out[4]. */
static int read_token(proto_reader *r, size_t lo, char out[4], const char *what, char *msg) {
    const char *s = NULL;
    size_t n = 0;
    int rc = read_text(r, lo, MAX_TOKEN, &s, &n, what, msg);
    if (rc == 0) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */

/* A game as the body gives it; its arrays live in the work's storage. */
typedef struct wire_game {
    uint64_t index;
    const char *uci;  /* NULL when the body gives nil (a game read only as a corrupting game) */
    size_t n_tokens;  /* positions carried, `<s>` included */
    const char **ptr; /* [n_tokens] token texts */
    uint8_t *phases;  /* [n_tokens] chess_phase, NULL when the body gives none */
    bool used;        /* a pair reads it */
} wire_game;

static int read_tokens(proto_reader *r, struct coordinator_work_mem *m, wire_game *g, char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0;
    int rc = proto_r_array(r, (uint32_t)MAX_GAME_TOKENS, &n, ".tokens", msg);
    if (rc != 0 || (rc = check_fits(r, n, 2, ".tokens", msg)) != 0) {
        return rc;
    }
    char(*text)[4] = work_mem_alloc(m, n, sizeof *text);
    const char **ptr = work_mem_alloc(m, n, sizeof *ptr);
    if (text == NULL || ptr == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, ".tokens: out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        if ((rc = read_token(r, 1, text[i], "", inner)) != 0) {
            return common_fail(msg, rc, ".tokens[%" PRIu32 "]%s", i, inner);
        }
        ptr[i] = text[i];
    }
    g->n_tokens = n;
    g->ptr = ptr;
    return 0;
}

static int read_game(proto_reader *r, struct coordinator_work_mem *m, wire_game *g, char *msg) {
    uint32_t n = 0, seen = 0;
    const void *phases = NULL;
    size_t n_phases = 0;
    int rc = proto_r_map(r, G_N, &n, "", msg);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0;
        if ((rc = read_key(r, game_keys, G_N, &seen, &which, msg)) != 0) {
            break;
        }
        switch (which) {
        case G_INDEX:
            rc = proto_r_uint(r, INT64_MAX, &g->index, ".index", msg);
            break;
        case G_UCI: {
            const char *s = NULL;
            size_t len = 0;
            if (proto_r_nil(r)) {
                g->uci = NULL;
            } else if ((rc = read_text(r, 0, MAX_UCI, &s, &len, ".uci", msg)) == 0 &&
                       (g->uci = work_mem_strndup(m, s, len)) == NULL) {
                rc = common_fail(msg, COMMON_ERR_NOMEM, ".uci: out of memory");
            }
            break;
        }
        case G_TOKENS:
            rc = read_tokens(r, m, g, msg);
            break;
        case G_PHASES:
            rc = proto_r_bin(r, MAX_GAME_TOKENS, &phases, &n_phases, ".phases", msg);
            break;
        default:
            assert(!"a key of the table");
        }
    }
    int miss = missing_key(seen, (1u << G_INDEX) | (1u << G_UCI) | (1u << G_TOKENS));
    if (rc == 0 && miss >= 0) {
        rc = common_fail(msg, COMMON_ERR_INVALID, ".%s: missing", game_keys[miss]);
    }
    if (rc != 0 || phases == NULL) {
        return rc;
    }
    if (n_phases != g->n_tokens) {
        return common_fail(msg, COMMON_ERR_INVALID, ".phases: %zu bytes for %zu tokens", n_phases,
                           g->n_tokens);
    }
    const uint8_t *ph = phases;
    for (size_t i = 0; i < n_phases; i++) {
        if (ph[i] > CHESS_PHASE_PROMOTION) {
            return common_fail(msg, COMMON_ERR_INVALID, ".phases[%zu]: %u is not a chess_phase", i,
                               (unsigned)ph[i]);
        }
    }
    if ((g->phases = work_mem_alloc(m, n_phases, 1)) == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, ".phases: out of memory");
    }
    memcpy(g->phases, ph, n_phases);
    return 0;
}

static int read_pair(proto_reader *r, coordinator_pair *p, char *msg) {
    uint32_t n = 0, seen = 0;
    int rc = proto_r_map(r, P_N, &n, "", msg);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0;
        int64_t v = 0;
        if ((rc = read_key(r, pair_keys, P_N, &seen, &which, msg)) != 0) {
            break;
        }
        switch (which) {
        case P_GAME:
            rc = proto_r_uint(r, INT64_MAX, &p->game, ".game", msg);
            break;
        case P_CORRUPT_POS:
            if ((rc = proto_r_int(r, -1, INT32_MAX, &v, ".corrupt_pos", msg)) == 0) {
                p->corrupt_pos = (int32_t)v;
            }
            break;
        case P_CORRUPT_GAME:
            rc = proto_r_int(r, -1, INT64_MAX, &p->corrupt_game, ".corrupt_game", msg);
            break;
        case P_CLEAN_TOKEN:
            rc = read_token(r, 0, p->clean_token, ".clean_token", msg);
            break;
        case P_CORRUPT_TOKEN:
            rc = read_token(r, 0, p->corrupt_token, ".corrupt_token", msg);
            break;
        default:
            assert(!"a key of the table");
        }
    }
    int miss = missing_key(seen, (1u << P_N) - 1);
    if (rc == 0 && miss >= 0) {
        rc = common_fail(msg, COMMON_ERR_INVALID, ".%s: missing", pair_keys[miss]);
    }
    return rc;
}

/* What the first pass read. */
typedef struct work_raw {
    uint32_t seen; /* W_* bits */
    uint64_t analysis, from, to, cutoff;
    coordinator_analysis_kind kind;
    size_t n_games;
    wire_game *games; /* [n_games] (malloc: the decoder frees it) */
    size_t n_pairs;
    coordinator_pair *pairs; /* [n_pairs] in the work's storage */
} work_raw;

static int read_kind(proto_reader *r, coordinator_analysis_kind *kind, char *msg) {
    const char *s = NULL;
    size_t n = 0;
    int rc = proto_r_str(r, MAX_KEY, &s, &n, ".kind", msg);
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < 4; i++) {
        const char *name = coordinator_analysis_kind_name(kinds[i]);
        if (strlen(name) == n && memcmp(name, s, n) == 0) {
            *kind = kinds[i];
            return 0;
        }
    }
    return common_fail(msg, COMMON_ERR_INVALID, ".kind: '%.*s' is not an analysis kind", (int)n, s);
}

static int read_games(proto_reader *r, struct coordinator_work_mem *m, work_raw *raw, char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0;
    int rc = proto_r_array(r, COORDINATOR_WIRE_MAX_GAMES, &n, ".games", msg);
    if (rc != 0 ||
        (rc = check_fits(r, n, min_map_bytes(game_keys, G_PHASES), ".games", msg)) != 0) {
        return rc;
    }
    raw->games = calloc(n > 0 ? n : 1, sizeof *raw->games);
    if (raw->games == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, ".games: out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        if ((rc = read_game(r, m, &raw->games[i], inner)) != 0) {
            return common_fail(msg, rc, ".games[%" PRIu32 "]%s", i, inner);
        }
    }
    raw->n_games = n;
    return 0;
}

static int read_pairs(proto_reader *r, struct coordinator_work_mem *m, work_raw *raw, char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0;
    int rc = proto_r_array(r, COORDINATOR_WIRE_MAX_PAIRS, &n, ".pairs", msg);
    if (rc != 0 || (rc = check_fits(r, n, min_map_bytes(pair_keys, P_N), ".pairs", msg)) != 0) {
        return rc;
    }
    raw->pairs = work_mem_alloc(m, n, sizeof *raw->pairs);
    if (raw->pairs == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, ".pairs: out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        if ((rc = read_pair(r, &raw->pairs[i], inner)) != 0) {
            return common_fail(msg, rc, ".pairs[%" PRIu32 "]%s", i, inner);
        }
    }
    raw->n_pairs = n;
    return 0;
}

/* The first pass: the map into raw, every field checked on its own. */
static int read_work(proto_reader *r, const coordinator_spec *spec, struct coordinator_work_mem *m,
                     work_raw *raw, char *msg) {
    uint32_t n = 0;
    int rc = proto_r_map(r, W_N, &n, "", msg);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0;
        if ((rc = read_key(r, work_keys, W_N, &raw->seen, &which, msg)) != 0) {
            break;
        }
        switch (which) {
        case W_ANALYSIS:
            rc = proto_r_uint(r, spec->n_analyses - 1, &raw->analysis, ".analysis", msg);
            break;
        case W_KIND:
            rc = read_kind(r, &raw->kind, msg);
            break;
        case W_FROM:
            rc = proto_r_uint(r, INT64_MAX, &raw->from, ".from", msg);
            break;
        case W_TO:
            rc = proto_r_uint(r, INT64_MAX, &raw->to, ".to", msg);
            break;
        case W_GAMES:
            rc = read_games(r, m, raw, msg);
            break;
        case W_CUTOFF:
            rc = proto_r_uint(r, COORDINATOR_MAX_CUTOFF, &raw->cutoff, ".cutoff", msg);
            break;
        case W_PAIRS:
            rc = read_pairs(r, m, raw, msg);
            break;
        default:
            assert(!"a key of the table");
        }
    }
    if (rc == 0) {
        rc = check_end(r, msg);
    }
    return rc;
}

/* The corrupted position of a cut-off-N prompt under the spec (as the planner computes it), or
 * -1 when it falls outside 1..N-1. */
static long spec_position(const coordinator_corrupt_spec *c, size_t N) {
    long p = c->position < 0 ? (long)N + c->position : c->position;
    return p >= 1 && (size_t)p < N ? p : -1;
}

/* The carried game of index idx (games ascending), or NULL. */
static wire_game *find_game(const work_raw *raw, uint64_t idx) {
    size_t lo = 0, hi = raw->n_games;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (raw->games[mid].index < idx) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < raw->n_games && raw->games[lo].index == idx ? &raw->games[lo] : NULL;
}

/* Checks one pair against its games and the spec, and links its prompts. */
static int link_pair(struct coordinator_work_mem *m, const coordinator_corrupt_spec *c,
                     const work_raw *raw, coordinator_pair *p, char *msg) {
    size_t N = (size_t)raw->cutoff;
    if (p->game < raw->from || p->game >= raw->to) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           ".game: %" PRIu64 " is outside the task's games [%" PRIu64 ", %" PRIu64
                           ")",
                           p->game, raw->from, raw->to);
    }
    wire_game *g = find_game(raw, p->game);
    if (g == NULL) {
        return common_fail(msg, COMMON_ERR_INVALID, ".game: %" PRIu64 " is not among the games",
                           p->game);
    }
    if (g->uci == NULL) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           ".game: game %" PRIu64 " has no moves (uci nil)", p->game);
    }
    g->used = true;
    p->uci = g->uci;
    p->clean = g->ptr;
    if (c->with == COORDINATOR_CORRUPT_GAME) {
        if (p->corrupt_pos != -1 || p->clean_token[0] != '\0' || p->corrupt_token[0] != '\0') {
            return common_fail(msg, COMMON_ERR_INVALID,
                               ": a pair corrupted by a game has corrupt_pos -1 and empty tokens");
        }
        if (p->corrupt_game < 0 || (uint64_t)p->corrupt_game != c->game ||
            (uint64_t)p->corrupt_game == p->game) {
            return common_fail(msg, COMMON_ERR_INVALID,
                               ".corrupt_game: %" PRId64 ", the spec corrupts with game %" PRIu64
                               " (not the game itself)",
                               p->corrupt_game, c->game);
        }
        wire_game *o = find_game(raw, (uint64_t)p->corrupt_game);
        if (o == NULL) {
            return common_fail(msg, COMMON_ERR_INVALID,
                               ".corrupt_game: %" PRId64 " is not among the games",
                               p->corrupt_game);
        }
        o->used = true;
        p->corrupted = o->ptr;
        return 0;
    }
    long pos = spec_position(c, N);
    if (pos < 0 || p->corrupt_pos != pos) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           ".corrupt_pos: %" PRId32 ", the spec corrupts position %ld of %zu",
                           p->corrupt_pos, pos, N);
    }
    if (p->corrupt_game != -1) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           ".corrupt_game: %" PRId64 ", a token corruption has -1",
                           p->corrupt_game);
    }
    if (strcmp(p->clean_token, g->ptr[pos]) != 0) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           ".clean_token: '%s', game %" PRIu64 " has '%s' at %ld", p->clean_token,
                           p->game, g->ptr[pos], pos);
    }
    if (p->corrupt_token[0] == '\0' || strcmp(p->corrupt_token, p->clean_token) == 0 ||
        (c->with == COORDINATOR_CORRUPT_TOKEN && strcmp(p->corrupt_token, c->token) != 0)) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           ".corrupt_token: '%s' is not a replacement of '%s' the spec allows",
                           p->corrupt_token, p->clean_token);
    }
    const char **corrupted = work_mem_alloc(m, N, sizeof *corrupted);
    if (corrupted == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, ": out of memory");
    }
    memcpy(corrupted, g->ptr, N * sizeof *corrupted);
    corrupted[pos] = p->corrupt_token; /* the pair's own text: it lives as long as the work */
    p->corrupted = corrupted;
    return 0;
}

/* The second pass: what only the whole body and the spec tell, then the work's fields. */
static int build_work(const coordinator_spec *spec, work_raw *raw, coordinator_work *w, char *msg) {
    char inner[COMMON_ERR_LEN];
    const uint32_t base =
        (1u << W_ANALYSIS) | (1u << W_KIND) | (1u << W_FROM) | (1u << W_TO) | (1u << W_GAMES);
    const uint32_t patch_only = (1u << W_CUTOFF) | (1u << W_PAIRS);
    int miss = missing_key(raw->seen, base);
    if (miss >= 0) {
        return common_fail(msg, COMMON_ERR_INVALID, ".%s: missing", work_keys[miss]);
    }
    const coordinator_analysis *a = &spec->analyses[raw->analysis];
    if (raw->kind != a->kind) {
        return common_fail(msg, COMMON_ERR_INVALID, ".kind: %s, analysis %" PRIu64 " is %s",
                           coordinator_analysis_kind_name(raw->kind), raw->analysis,
                           coordinator_analysis_kind_name(a->kind));
    }
    bool patch = a->kind == COORDINATOR_ANALYSIS_PATCH;
    if (patch && (miss = missing_key(raw->seen, patch_only)) >= 0) {
        return common_fail(msg, COMMON_ERR_INVALID, ".%s: missing", work_keys[miss]);
    }
    if (!patch && (raw->seen & patch_only) != 0) {
        return common_fail(msg, COMMON_ERR_INVALID, ".%s: not a key of a %s work",
                           work_keys[(raw->seen & (1u << W_CUTOFF)) ? W_CUTOFF : W_PAIRS],
                           coordinator_analysis_kind_name(a->kind));
    }
    if (raw->from >= raw->to || raw->from < spec->game_from || raw->to > spec->game_to) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           ".from: games [%" PRIu64 ", %" PRIu64 ") are not a range of the "
                           "sweep's [%" PRIu64 ", %" PRIu64 ")",
                           raw->from, raw->to, spec->game_from, spec->game_to);
    }
    for (size_t i = 1; i < raw->n_games; i++) {
        if (raw->games[i].index <= raw->games[i - 1].index) {
            return common_fail(msg, COMMON_ERR_INVALID,
                               ".games[%zu].index: %" PRIu64 " after %" PRIu64
                               ": games come once each, in ascending order",
                               i, raw->games[i].index, raw->games[i - 1].index);
        }
    }
    w->kind = a->kind;
    w->analysis = (size_t)raw->analysis;
    w->params = a;
    w->game_from = raw->from;
    w->game_to = raw->to;
    if (!patch) {
        if (raw->n_games != raw->to - raw->from) {
            return common_fail(msg, COMMON_ERR_INVALID, ".games: %zu games, the task has %" PRIu64,
                               raw->n_games, raw->to - raw->from);
        }
        coordinator_work_game *games = work_mem_alloc(w->mem, raw->n_games, sizeof *games);
        if (games == NULL) {
            return common_fail(msg, COMMON_ERR_NOMEM, ": out of memory");
        }
        for (size_t i = 0; i < raw->n_games; i++) {
            const wire_game *g = &raw->games[i];
            if (g->index != raw->from + i || g->uci == NULL || g->phases == NULL ||
                g->n_tokens == 0) {
                return common_fail(msg, COMMON_ERR_INVALID,
                                   ".games[%zu]: game %" PRIu64 " of an aggregate task must be "
                                   "game %" PRIu64 " with its moves, tokens and phases",
                                   i, g->index, raw->from + i);
            }
            games[i] = (coordinator_work_game){g->index, g->uci, g->n_tokens, g->ptr, g->phases};
        }
        w->n_games = raw->n_games;
        w->games = games;
        return 0;
    }
    size_t k = 0;
    while (k < a->patch.n_cutoffs && a->patch.cutoffs[k] != raw->cutoff) {
        k++;
    }
    if (k == a->patch.n_cutoffs) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           ".cutoff: %" PRIu64 " is not a cut-off of analysis %" PRIu64,
                           raw->cutoff, raw->analysis);
    }
    for (size_t i = 0; i < raw->n_games; i++) {
        const wire_game *g = &raw->games[i];
        if (g->n_tokens != raw->cutoff || g->phases != NULL) {
            return common_fail(msg, COMMON_ERR_INVALID,
                               ".games[%zu]: %zu tokens%s; a patch task's games hold the cut-off's "
                               "%" PRIu64 " and no phases",
                               i, g->n_tokens, g->phases != NULL ? " and phases" : "", raw->cutoff);
        }
    }
    for (size_t i = 0; i < raw->n_pairs; i++) {
        int rc = link_pair(w->mem, &a->patch.corrupt, raw, &raw->pairs[i], inner);
        if (rc == 0 && i > 0 && raw->pairs[i].game < raw->pairs[i - 1].game) {
            rc = common_fail(inner, COMMON_ERR_INVALID, ".game: pairs come by game index");
        }
        if (rc != 0) {
            return common_fail(msg, rc, ".pairs[%zu]%s", i, inner);
        }
    }
    for (size_t i = 0; i < raw->n_games; i++) {
        if (!raw->games[i].used) {
            return common_fail(msg, COMMON_ERR_INVALID, ".games[%zu]: no pair reads game %" PRIu64,
                               i, raw->games[i].index);
        }
    }
    w->cutoff = (size_t)raw->cutoff;
    w->n_pairs = raw->n_pairs;
    w->pairs = raw->pairs;
    return 0;
}

int coordinator_work_decode(const coordinator_spec *spec, const void *buf, size_t len,
                            coordinator_work **out, char *err) {
    char msg[COMMON_ERR_LEN];
    assert(spec != NULL && spec->n_analyses > 0 && out != NULL);
    if (len > PROTO_MAX_MESSAGE) {
        return common_fail(err, COMMON_ERR_INVALID, "work: %zu bytes, at most %zu", len,
                           PROTO_MAX_MESSAGE);
    }
    coordinator_work *w = work_new();
    if (w == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "work: out of memory");
    }
    work_raw raw = {0};
    proto_reader r;
    proto_reader_init(&r, buf, len);
    int rc = read_work(&r, spec, w->mem, &raw, msg);
    if (rc == 0) {
        rc = build_work(spec, &raw, w, msg);
    }
    free(raw.games);
    if (rc != 0) {
        coordinator_work_destroy(&w);
        return common_fail(err, rc, "work%s", msg);
    }
    *out = w;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding                                                                                    */

/* A game as the pairs of a patch work see it. */
typedef struct game_ref {
    uint64_t index;
    const char *uci;           /* NULL when only a corrupting game */
    const char *const *tokens; /* [cutoff] */
    size_t order;              /* place of first sight, for a stable sort */
} game_ref;

static int cmp_ref(const void *pa, const void *pb) {
    const game_ref *a = pa, *b = pb;
    if (a->index != b->index) {
        return a->index < b->index ? -1 : 1;
    }
    if ((a->uci == NULL) != (b->uci == NULL)) {
        return a->uci != NULL ? -1 : 1; /* the sighting with moves first */
    }
    return a->order < b->order ? -1 : a->order > b->order;
}

/* Token texts a decoder takes: 1..3 bytes each. */
static int check_tokens(const char *const *t, size_t n, uint64_t game, char *err) {
    for (size_t i = 0; i < n; i++) {
        size_t len = t[i] != NULL ? strlen(t[i]) : 0;
        if (len == 0 || len > MAX_TOKEN) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "work encode: game %" PRIu64 " token %zu is not 1..3 bytes", game,
                               i);
        }
    }
    return 0;
}

static bool same_tokens(const char *const *a, const char *const *b, size_t n) {
    if (a == b) {
        return true; /* both builders share one array per game */
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(a[i], b[i]) != 0) {
            return false;
        }
    }
    return true;
}

static void write_game(proto_writer *pw, uint64_t index, const char *uci, const char *const *tokens,
                       size_t n, const uint8_t *phases) {
    proto_w_map(pw, phases != NULL ? 4 : 3);
    proto_w_str(pw, "index");
    proto_w_uint(pw, index);
    proto_w_str(pw, "uci");
    proto_w_str(pw, uci); /* nil when NULL */
    proto_w_str(pw, "tokens");
    proto_w_array(pw, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        proto_w_str(pw, tokens[i]);
    }
    if (phases != NULL) {
        proto_w_str(pw, "phases");
        proto_w_bin(pw, phases, n);
    }
}

/* The distinct games of a patch work's pairs, by index, checked to agree with each other. */
static int patch_games(const coordinator_work *w, game_ref **out, size_t *n_out, char *err) {
    size_t n = 0, N = w->cutoff;
    game_ref *refs = malloc((2 * w->n_pairs > 0 ? 2 * w->n_pairs : 1) * sizeof *refs);
    if (refs == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "work encode: out of memory");
    }
    for (size_t i = 0; i < w->n_pairs; i++) {
        const coordinator_pair *p = &w->pairs[i];
        refs[n] = (game_ref){p->game, p->uci, p->clean, n};
        n++;
        if (p->corrupt_game >= 0) {
            refs[n] = (game_ref){(uint64_t)p->corrupt_game, NULL, p->corrupted, n};
            n++;
        }
    }
    qsort(refs, n, sizeof *refs, cmp_ref);
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (k > 0 && refs[k - 1].index == refs[i].index) {
            const game_ref *a = &refs[k - 1], *b = &refs[i];
            if ((b->uci != NULL && strcmp(a->uci, b->uci) != 0) ||
                !same_tokens(a->tokens, b->tokens, N)) {
                rc = common_fail(err, COMMON_ERR_INVALID,
                                 "work encode: the pairs disagree on game %" PRIu64, a->index);
            }
            continue;
        }
        if ((rc = check_tokens(refs[i].tokens, N, refs[i].index, err)) == 0) {
            refs[k++] = refs[i];
        }
    }
    if (rc == 0 && k > COORDINATOR_WIRE_MAX_GAMES) {
        rc = common_fail(err, COMMON_ERR_INVALID, "work encode: %zu games, at most %d", k,
                         COORDINATOR_WIRE_MAX_GAMES);
    }
    if (rc != 0) {
        free(refs);
        return rc;
    }
    *out = refs;
    *n_out = k;
    return 0;
}

static void write_pair(proto_writer *pw, const coordinator_pair *p) {
    proto_w_map(pw, P_N);
    proto_w_str(pw, "game");
    proto_w_uint(pw, p->game);
    proto_w_str(pw, "corrupt_pos");
    proto_w_int(pw, p->corrupt_pos);
    proto_w_str(pw, "corrupt_game");
    proto_w_int(pw, p->corrupt_game);
    proto_w_str(pw, "clean_token");
    proto_w_str(pw, p->clean_token);
    proto_w_str(pw, "corrupt_token");
    proto_w_str(pw, p->corrupt_token);
}

int coordinator_work_encode(const coordinator_work *w, uint8_t **out, size_t *len, char *err) {
    assert(w != NULL && out != NULL && len != NULL);
    bool patch = w->kind == COORDINATOR_ANALYSIS_PATCH;
    game_ref *refs = NULL;
    size_t n_refs = 0;
    int rc = 0;
    if (patch) {
        if (w->cutoff < 2 || w->cutoff > COORDINATOR_MAX_CUTOFF ||
            w->n_pairs > COORDINATOR_WIRE_MAX_PAIRS) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "work encode: cut-off %zu or %zu pairs out of range", w->cutoff,
                               w->n_pairs);
        }
        for (size_t i = 0; i < w->n_pairs; i++) {
            const coordinator_pair *p = &w->pairs[i];
            if (strlen(p->clean_token) > MAX_TOKEN || strlen(p->corrupt_token) > MAX_TOKEN ||
                p->uci == NULL || p->clean == NULL || p->corrupted == NULL) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "work encode: pair %zu lacks its moves or prompts, or has a "
                                   "token over 3 bytes",
                                   i);
            }
        }
        if ((rc = patch_games(w, &refs, &n_refs, err)) != 0) {
            return rc;
        }
    } else {
        if (w->n_games > COORDINATOR_WIRE_MAX_GAMES) {
            return common_fail(err, COMMON_ERR_INVALID, "work encode: %zu games, at most %d",
                               w->n_games, COORDINATOR_WIRE_MAX_GAMES);
        }
        for (size_t i = 0; i < w->n_games && rc == 0; i++) {
            const coordinator_work_game *g = &w->games[i];
            if (g->uci == NULL || g->phases == NULL || g->n_tokens == 0 ||
                g->n_tokens > MAX_GAME_TOKENS || strlen(g->uci) > MAX_UCI) {
                rc = common_fail(err, COMMON_ERR_INVALID,
                                 "work encode: game %" PRIu64 " lacks moves, tokens or phases, "
                                 "or is longer than a body carries",
                                 g->index);
            } else {
                rc = check_tokens(g->tokens, g->n_tokens, g->index, err);
            }
        }
        if (rc != 0) {
            return rc;
        }
    }
    proto_writer pw;
    proto_writer_init(&pw);
    proto_w_map(&pw, patch ? 7 : 5);
    proto_w_str(&pw, "analysis");
    proto_w_uint(&pw, w->analysis);
    proto_w_str(&pw, "kind");
    proto_w_str(&pw, coordinator_analysis_kind_name(w->kind));
    proto_w_str(&pw, "from");
    proto_w_uint(&pw, w->game_from);
    proto_w_str(&pw, "to");
    proto_w_uint(&pw, w->game_to);
    proto_w_str(&pw, "games");
    if (patch) {
        proto_w_array(&pw, (uint32_t)n_refs);
        for (size_t i = 0; i < n_refs; i++) {
            write_game(&pw, refs[i].index, refs[i].uci, refs[i].tokens, w->cutoff, NULL);
        }
        proto_w_str(&pw, "cutoff");
        proto_w_uint(&pw, w->cutoff);
        proto_w_str(&pw, "pairs");
        proto_w_array(&pw, (uint32_t)w->n_pairs);
        for (size_t i = 0; i < w->n_pairs; i++) {
            write_pair(&pw, &w->pairs[i]);
        }
    } else {
        proto_w_array(&pw, (uint32_t)w->n_games);
        for (size_t i = 0; i < w->n_games; i++) {
            const coordinator_work_game *g = &w->games[i];
            write_game(&pw, g->index, g->uci, g->tokens, g->n_tokens, g->phases);
        }
    }
    free(refs);
    uint8_t *bytes = NULL;
    size_t n_bytes = 0;
    if ((rc = proto_writer_finish(&pw, &bytes, &n_bytes, err)) != 0) {
        return rc;
    }
    if (n_bytes > PROTO_MAX_MESSAGE) {
        free(bytes);
        return common_fail(err, COMMON_ERR_INVALID, "work encode: %zu bytes, at most %zu", n_bytes,
                           PROTO_MAX_MESSAGE);
    }
    *out = bytes;
    *len = n_bytes;
    return 0;
}
