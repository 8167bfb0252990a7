/*
 * gen_tables: a build-time program that writes chess_tables.c, the constant lookup tables the
 * move generator reads (leaper attacks, lines between squares, magic-bitboard slider attacks,
 * Zobrist keys).
 *
 * Computing the tables at build time keeps the library free of mutable globals and of any
 * initialisation call, while the generated arrays are plain `const` data. Slider attacks are
 * computed here by walking rays (slow, obviously right) and magic multipliers are found by a
 * seeded random search, so the output is the same on every build.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

/* splitmix64: a small, well-mixed deterministic generator. */
static uint64_t next_random(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t sparse_random(void) {
    return next_random() & next_random() & next_random();
}

static int on_board(int file, int rank) {
    return file >= 0 && file < 8 && rank >= 0 && rank < 8;
}

static uint64_t bit(int file, int rank) {
    return 1ULL << (rank * 8 + file);
}

/* Squares a slider on sq attacks along the given directions, stopping at the first occupied
 * square (which is included). */
static uint64_t ray_attacks(int sq, uint64_t occ, const int (*dirs)[2]) {
    uint64_t att = 0;
    for (int d = 0; d < 4; d++) {
        int f = sq % 8 + dirs[d][0], r = sq / 8 + dirs[d][1];
        while (on_board(f, r)) {
            att |= bit(f, r);
            if (occ & bit(f, r)) {
                break;
            }
            f += dirs[d][0];
            r += dirs[d][1];
        }
    }
    return att;
}

/* The relevant-occupancy mask: ray squares excluding the last square on each ray. */
static uint64_t ray_mask(int sq, const int (*dirs)[2]) {
    uint64_t m = 0;
    for (int d = 0; d < 4; d++) {
        int f = sq % 8 + dirs[d][0], r = sq / 8 + dirs[d][1];
        while (on_board(f + dirs[d][0], r + dirs[d][1])) {
            m |= bit(f, r);
            f += dirs[d][0];
            r += dirs[d][1];
        }
    }
    return m;
}

static int popcount(uint64_t b) {
    int n = 0;
    while (b) {
        b &= b - 1;
        n++;
    }
    return n;
}

static const int rook_dirs[4][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}};
static const int bishop_dirs[4][2] = {{1, 1}, {1, -1}, {-1, 1}, {-1, -1}};

typedef struct magic_out {
    uint64_t mask[64];
    uint64_t magic[64];
    unsigned shift[64];
    unsigned offset[64];
    uint64_t *table;
    unsigned size;
} magic_out;

static int find_magics(const int (*dirs)[2], magic_out *out) {
    static uint64_t occs[4096], atts[4096], used[4096];
    unsigned offset = 0;
    out->table = NULL;
    for (int sq = 0; sq < 64; sq++) {
        uint64_t mask = ray_mask(sq, dirs);
        int bits = popcount(mask);
        int n = 1 << bits;
        /* enumerate every subset of mask (Carry-Rippler) */
        uint64_t sub = 0;
        for (int i = 0; i < n; i++) {
            occs[i] = sub;
            atts[i] = ray_attacks(sq, sub, dirs);
            sub = (sub - mask) & mask;
        }
        uint64_t magic = 0;
        for (long tries = 0; tries < 100000000L; tries++) {
            magic = sparse_random();
            if (popcount((mask * magic) & 0xFF00000000000000ULL) < 6) {
                continue;
            }
            memset(used, 0, sizeof(uint64_t) * (size_t)n);
            int ok = 1;
            for (int i = 0; i < n && ok; i++) {
                unsigned idx = (unsigned)((occs[i] * magic) >> (64 - bits));
                if (used[idx] == 0) {
                    used[idx] = atts[i];
                } else if (used[idx] != atts[i]) {
                    ok = 0;
                }
            }
            if (ok) {
                break;
            }
            magic = 0;
        }
        if (!magic) {
            return -1;
        }
        uint64_t *grown = realloc(out->table, sizeof(uint64_t) * (offset + (unsigned)n));
        if (!grown) {
            return -1;
        }
        out->table = grown;
        for (int i = 0; i < n; i++) {
            unsigned idx = (unsigned)((occs[i] * magic) >> (64 - bits));
            out->table[offset + idx] = atts[i];
        }
        out->mask[sq] = mask;
        out->magic[sq] = magic;
        out->shift[sq] = (unsigned)(64 - bits);
        out->offset[sq] = offset;
        offset += (unsigned)n;
    }
    out->size = offset;
    return 0;
}

/* Writes `decl = {...};` for rows x cols values (rows 1 is a flat array). */
static void write_u64_array_2d(FILE *f, const char *decl, const uint64_t *v, size_t rows,
                               size_t cols) {
    fprintf(f, "%s = {\n", decl);
    for (size_t r = 0; r < rows; r++) {
        if (rows > 1) {
            fprintf(f, "{\n");
        }
        for (size_t i = 0; i < cols; i++) {
            fprintf(f, "0x%016llxULL,%s", (unsigned long long)v[r * cols + i],
                    (i % 4 == 3) ? "\n" : " ");
        }
        if (rows > 1) {
            fprintf(f, "},\n");
        }
    }
    fprintf(f, "};\n\n");
}

static void write_u64_array(FILE *f, const char *decl, const uint64_t *v, size_t n) {
    write_u64_array_2d(f, decl, v, 1, n);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_tables OUT.c\n");
        return 2;
    }
    static uint64_t knight[64], king[64], pawn[2 * 64], between[64 * 64], line[64 * 64];
    static const int knight_d[8][2] = {{1, 2},   {2, 1},   {2, -1}, {1, -2},
                                       {-1, -2}, {-2, -1}, {-2, 1}, {-1, 2}};
    for (int sq = 0; sq < 64; sq++) {
        int f = sq % 8, r = sq / 8;
        for (int i = 0; i < 8; i++) {
            if (on_board(f + knight_d[i][0], r + knight_d[i][1])) {
                knight[sq] |= bit(f + knight_d[i][0], r + knight_d[i][1]);
            }
        }
        for (int df = -1; df <= 1; df++) {
            for (int dr = -1; dr <= 1; dr++) {
                if ((df || dr) && on_board(f + df, r + dr)) {
                    king[sq] |= bit(f + df, r + dr);
                }
            }
        }
        for (int df = -1; df <= 1; df += 2) {
            if (on_board(f + df, r + 1)) {
                pawn[sq] |= bit(f + df, r + 1); /* white pawn on sq attacks */
            }
            if (on_board(f + df, r - 1)) {
                pawn[64 + sq] |= bit(f + df, r - 1); /* black pawn on sq attacks */
            }
        }
    }
    /* between[a][b]: squares strictly between a and b on a shared line (0 if none);
     * line[a][b]: the whole line through a and b, edge to edge (0 if none). */
    static const int all_dirs[8][2] = {{1, 0}, {-1, 0}, {0, 1},  {0, -1},
                                       {1, 1}, {1, -1}, {-1, 1}, {-1, -1}};
    for (int a = 0; a < 64; a++) {
        for (int d = 0; d < 8; d++) {
            uint64_t path = 0;
            int f = a % 8 + all_dirs[d][0], r = a / 8 + all_dirs[d][1];
            while (on_board(f, r)) {
                int b = r * 8 + f;
                between[a * 64 + b] = path;
                /* full line: walk both directions from a */
                uint64_t full = 1ULL << a;
                for (int s = -1; s <= 1; s += 2) {
                    int lf = a % 8 + s * all_dirs[d][0], lr = a / 8 + s * all_dirs[d][1];
                    while (on_board(lf, lr)) {
                        full |= bit(lf, lr);
                        lf += s * all_dirs[d][0];
                        lr += s * all_dirs[d][1];
                    }
                }
                line[a * 64 + b] = full;
                path |= bit(f, r);
                f += all_dirs[d][0];
                r += all_dirs[d][1];
            }
        }
    }
    static magic_out rook, bishop;
    if (find_magics(rook_dirs, &rook) != 0 || find_magics(bishop_dirs, &bishop) != 0) {
        fprintf(stderr, "gen_tables: magic search failed\n");
        return 1;
    }
    /* Zobrist keys: 12 piece kinds x 64 squares, side to move, 16 castling sets, 8 ep files. */
    static uint64_t zobrist[12 * 64 + 1 + 16 + 8];
    for (size_t i = 0; i < sizeof zobrist / sizeof zobrist[0]; i++) {
        zobrist[i] = next_random();
    }

    FILE *f = fopen(argv[1], "w");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    fprintf(f, "/* Generated by chess/gen_tables.c; do not edit. */\n");
    fprintf(f, "#include \"chess/tables_int.h\"\n\n");
    write_u64_array(f, "const uint64_t chess_knight_attacks[64]", knight, 64);
    write_u64_array(f, "const uint64_t chess_king_attacks[64]", king, 64);
    write_u64_array_2d(f, "const uint64_t chess_pawn_attacks[2][64]", pawn, 2, 64);
    write_u64_array_2d(f, "const uint64_t chess_between[64][64]", between, 64, 64);
    write_u64_array_2d(f, "const uint64_t chess_line[64][64]", line, 64, 64);
    fprintf(f, "const chess_magic chess_rook_magics[64] = {\n");
    for (int sq = 0; sq < 64; sq++) {
        fprintf(f, "{0x%016llxULL, 0x%016llxULL, %u, %u},\n", (unsigned long long)rook.mask[sq],
                (unsigned long long)rook.magic[sq], rook.shift[sq], rook.offset[sq]);
    }
    fprintf(f, "};\n\n");
    fprintf(f, "const chess_magic chess_bishop_magics[64] = {\n");
    for (int sq = 0; sq < 64; sq++) {
        fprintf(f, "{0x%016llxULL, 0x%016llxULL, %u, %u},\n", (unsigned long long)bishop.mask[sq],
                (unsigned long long)bishop.magic[sq], bishop.shift[sq], bishop.offset[sq]);
    }
    fprintf(f, "};\n\n");
    char decl[128];
    snprintf(decl, sizeof decl, "const uint64_t chess_rook_table[%u]", rook.size);
    write_u64_array(f, decl, rook.table, rook.size);
    snprintf(decl, sizeof decl, "const uint64_t chess_bishop_table[%u]", bishop.size);
    write_u64_array(f, decl, bishop.table, bishop.size);
    write_u64_array(f, "const uint64_t chess_zobrist[12 * 64 + 1 + 16 + 8]", zobrist,
                    sizeof zobrist / sizeof zobrist[0]);
    free(rook.table);
    free(bishop.table);
    if (fclose(f) != 0) {
        perror(argv[1]);
        return 1;
    }
    return 0;
}
