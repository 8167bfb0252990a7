/*
 * cmd_query: `chesslens query` and `chesslens export`, reading a chesslens database
 * (docs/STORE.md) without any way to change it. query runs one SQL statement given by the user;
 * export writes one public view of one sweep. Both open the store read-only (SQLITE_OPEN_READONLY
 * and PRAGMA query_only), and query adds guards of its own: the statement must be read-only by
 * SQLite's account, ATTACH is impossible (the attached-database limit is 0), a PRAGMA that sets
 * a value is refused, the connection is in SQLite's defensive mode without extensions, SQLite's
 * memory has a ceiling, and a time limit interrupts it through the progress handler. Rows are
 * written as SQLite steps them, so memory does not grow with the result; only the table format
 * holds back its first rows (TABLE_SAMPLE_ROWS) to measure its columns.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "cli/cli_int.h"
#include "common/common.h"
#include "coordinator/coordinator.h"

/* The table format measures its columns on at most this many leading rows (or
 * TABLE_SAMPLE_BYTES of their text) and then streams the rest; a later, wider cell widens only
 * its own line. */
#define TABLE_SAMPLE_ROWS 1000
#define TABLE_SAMPLE_BYTES (16u << 20)
/* A table cell shows at most this many bytes of its value, then "..." (csv and json give
 * values whole): one long value would otherwise widen its column for every row. */
#define TABLE_CELL_MAX 256
/* The longest string or blob a query may make (SQLITE_LIMIT_LENGTH): nothing the store holds
 * comes near it, and it bounds what a value costs outside SQLite's heap limit (its hex form,
 * a held table row), which zeroblob(1e9) would otherwise make gigabytes of. Far above any
 * value wanted, as SQLite grows a string by doubling only while the double stays under it. */
#define QUERY_MAX_VALUE (256 << 20)
/* How often (SQLite virtual machine instructions) the time limit is checked. */
#define PROGRESS_STEPS 1000
#define DEFAULT_DB "chesslens.db"

typedef enum out_format { FORMAT_TABLE, FORMAT_CSV, FORMAT_JSON } out_format;

/* A growable byte buffer. */
typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static int buf_put(buf *b, const void *data, size_t len) {
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap > 0 ? b->cap : 256;
        while (cap < b->n + len + 1) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            return COMMON_ERR_NOMEM;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = '\0';
    return 0;
}

static int buf_str(buf *b, const char *s) {
    return buf_put(b, s, strlen(s));
}

/* ---- rendering values ---- */

/* A REAL as text that still reads as a real number (2.0, not 2). csv and json get the shortest
 * %.Ng (N in 15..17) that reads back as the same double, so that they lose nothing; the table
 * shows %.9g, enough for the float32 values the analyses compute. */
static void format_real(double v, bool exact, char *out, size_t cap) {
    if (!exact) {
        snprintf(out, cap, "%.9g", v);
    }
    for (int digits = 15; exact && digits <= 17; digits++) {
        snprintf(out, cap, "%.*g", digits, v);
        if (strtod(out, NULL) == v) {
            break;
        }
    }
    if (isfinite(v) && strpbrk(out, ".e") == NULL) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, ".0");
    }
}

/* A BLOB as the SQL literal X'0A1B'. */
static int put_blob_hex(buf *b, const unsigned char *p, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    int rc = buf_str(b, "X'");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char two[2] = {hex[p[i] >> 4], hex[p[i] & 15]};
        rc = buf_put(b, two, 2);
    }
    return rc != 0 ? rc : buf_str(b, "'");
}

static int render_value(buf *b, sqlite3_stmt *st, int c, out_format f);

/* Column c of the current row appended to b as text for the table (control characters
 * escaped, so that a cell stays on its line; cut after TABLE_CELL_MAX bytes, at a character
 * boundary) or for csv (bytes as stored). NULL is "NULL" in the table and an empty field in
 * csv. */
static int render_cell(buf *b, sqlite3_stmt *st, int c, out_format f) {
    size_t start = b->n;
    int rc = render_value(b, st, c, f);
    if (rc != 0 || f != FORMAT_TABLE || b->n - start <= TABLE_CELL_MAX) {
        return rc;
    }
    size_t cut = start + TABLE_CELL_MAX;
    while (cut > start && ((unsigned char)b->p[cut] & 0xC0) == 0x80) {
        cut--; /* not inside a UTF-8 sequence */
    }
    b->n = cut;
    return buf_str(b, "...");
}

static int render_value(buf *b, sqlite3_stmt *st, int c, out_format f) {
    char num[64];
    switch (sqlite3_column_type(st, c)) {
    case SQLITE_NULL:
        return f == FORMAT_TABLE ? buf_str(b, "NULL") : 0;
    case SQLITE_INTEGER:
        snprintf(num, sizeof num, "%" PRId64, (int64_t)sqlite3_column_int64(st, c));
        return buf_str(b, num);
    case SQLITE_FLOAT:
        format_real(sqlite3_column_double(st, c), f != FORMAT_TABLE, num, sizeof num);
        return buf_str(b, num);
    case SQLITE_BLOB: {
        const unsigned char *p = sqlite3_column_blob(st, c);
        return put_blob_hex(b, p, (size_t)sqlite3_column_bytes(st, c));
    }
    default: {
        const unsigned char *p = sqlite3_column_text(st, c);
        size_t n = (size_t)sqlite3_column_bytes(st, c);
        if (p == NULL) {
            return n == 0 ? 0 : COMMON_ERR_NOMEM;
        }
        if (f != FORMAT_TABLE) {
            return buf_put(b, p, n);
        }
        int rc = 0;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            char esc[8];
            if (p[i] == '\n' || p[i] == '\t' || p[i] == '\r') {
                snprintf(esc, sizeof esc, "\\%c", p[i] == '\n' ? 'n' : p[i] == '\t' ? 't' : 'r');
                rc = buf_str(b, esc);
            } else if (p[i] < 0x20 || p[i] == 0x7f) {
                snprintf(esc, sizeof esc, "\\x%02x", p[i]);
                rc = buf_str(b, esc);
            } else {
                rc = buf_put(b, &p[i], 1);
            }
        }
        return rc;
    }
    }
}

/* Characters (UTF-8 code points) that text takes on screen, counting each byte of an invalid
 * sequence as one. */
static size_t display_width(const char *s, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        w += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return w;
}

/* A JSON string: quotes, backslashes and control characters escaped, valid UTF-8 kept as it
 * is, and each byte of an invalid sequence replaced by U+FFFD (JSON text must be Unicode). */
static void json_put_string(FILE *out, const unsigned char *p, size_t n) {
    fputc('"', out);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if (c == '"' || c == '\\') {
                fputc('\\', out);
                fputc(c, out);
            } else if (c == '\n') {
                fputs("\\n", out);
            } else if (c == '\t') {
                fputs("\\t", out);
            } else if (c == '\r') {
                fputs("\\r", out);
            } else if (c < 0x20) {
                fprintf(out, "\\u%04x", c);
            } else {
                fputc(c, out);
            }
            i++;
            continue;
        }
        size_t len = common_utf8_sequence(p + i, n - i, NULL);
        if (len == 0) {
            fputs("\\ufffd", out);
            i++;
        } else {
            fwrite(p + i, 1, len, out);
            i += len;
        }
    }
    fputc('"', out);
}

/* ---- writing a result ---- */

/* A result being written: the statement's columns and, for the table, the rows held back to
 * measure the columns (cells in `held`, NUL-separated, cell k of held row r at
 * offsets[r * n_cols + k]). */
typedef struct writer {
    out_format format;
    FILE *out;
    int n_cols;
    uint64_t n_rows;
    buf cell;           /* scratch for one cell */
    buf held;           /* table: the held rows' cells */
    size_t *offsets;    /* table: [TABLE_SAMPLE_ROWS * n_cols] */
    size_t n_held;      /* table: rows in held */
    size_t *widths;     /* table: [n_cols] display widths */
    bool table_started; /* table: header printed, rows now stream */
} writer;

static void csv_put_field(FILE *out, const char *s, size_t n, bool is_null) {
    bool quote = !is_null && n == 0;
    for (size_t i = 0; i < n && !quote; i++) {
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    }
    if (!quote) {
        fwrite(s, 1, n, out);
        return;
    }
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') {
            fputc('"', out);
        }
        fputc(s[i], out);
    }
    fputc('"', out);
}

static void table_put_cell(writer *w, int c, const char *s, size_t n) {
    fputs(c > 0 ? "  " : "", w->out);
    fwrite(s, 1, n, w->out);
    if (c + 1 < w->n_cols) {
        for (size_t k = display_width(s, n); k < w->widths[c]; k++) {
            fputc(' ', w->out);
        }
    }
}

/* Prints the header, the rule under it and the held rows, with widths measured on them. */
static void table_start(writer *w, sqlite3_stmt *st) {
    for (int c = 0; c < w->n_cols; c++) {
        const char *name = sqlite3_column_name(st, c);
        w->widths[c] = display_width(name, strlen(name));
        for (size_t r = 0; r < w->n_held; r++) {
            const char *s = w->held.p + w->offsets[r * (size_t)w->n_cols + (size_t)c];
            size_t width = display_width(s, strlen(s));
            w->widths[c] = width > w->widths[c] ? width : w->widths[c];
        }
    }
    for (int c = 0; c < w->n_cols; c++) {
        const char *name = sqlite3_column_name(st, c);
        table_put_cell(w, c, name, strlen(name));
    }
    fputc('\n', w->out);
    for (int c = 0; c < w->n_cols; c++) {
        fputs(c > 0 ? "  " : "", w->out);
        for (size_t k = 0; k < w->widths[c]; k++) {
            fputc('-', w->out);
        }
    }
    fputc('\n', w->out);
    for (size_t r = 0; r < w->n_held; r++) {
        for (int c = 0; c < w->n_cols; c++) {
            const char *s = w->held.p + w->offsets[r * (size_t)w->n_cols + (size_t)c];
            table_put_cell(w, c, s, strlen(s));
        }
        fputc('\n', w->out);
    }
    w->n_held = 0;
    w->held.n = 0;
    w->table_started = true;
}

static int writer_begin(writer *w, sqlite3_stmt *st) {
    w->n_cols = sqlite3_column_count(st);
    if (w->format == FORMAT_TABLE) {
        w->offsets = malloc(TABLE_SAMPLE_ROWS * ((size_t)w->n_cols + 1) * sizeof *w->offsets);
        w->widths = calloc((size_t)w->n_cols + 1, sizeof *w->widths);
        return w->offsets != NULL && w->widths != NULL ? 0 : COMMON_ERR_NOMEM;
    }
    if (w->format == FORMAT_CSV) {
        for (int c = 0; c < w->n_cols; c++) {
            const char *name = sqlite3_column_name(st, c);
            fputs(c > 0 ? "," : "", w->out);
            csv_put_field(w->out, name, strlen(name), false);
        }
        fputs("\r\n", w->out);
        return 0;
    }
    fputc('[', w->out);
    return 0;
}

static int writer_row(writer *w, sqlite3_stmt *st) {
    int rc = 0;
    if (w->format == FORMAT_JSON) {
        fputs(w->n_rows > 0 ? ",\n{" : "\n{", w->out);
        for (int c = 0; c < w->n_cols; c++) {
            const char *name = sqlite3_column_name(st, c);
            fputs(c > 0 ? ", " : "", w->out);
            json_put_string(w->out, (const unsigned char *)name, strlen(name));
            fputs(": ", w->out);
            int type = sqlite3_column_type(st, c);
            double v = type == SQLITE_FLOAT ? sqlite3_column_double(st, c) : 0.0;
            if (type == SQLITE_NULL || (type == SQLITE_FLOAT && !isfinite(v))) {
                /* JSON has no infinities; SQLite stores NaN as NULL already */
                fputs("null", w->out);
            } else if (type == SQLITE_INTEGER) {
                fprintf(w->out, "%" PRId64, (int64_t)sqlite3_column_int64(st, c));
            } else if (type == SQLITE_FLOAT) {
                char num[64];
                format_real(v, true, num, sizeof num);
                fputs(num, w->out);
            } else {
                w->cell.n = 0;
                if (type == SQLITE_BLOB) {
                    rc = render_cell(&w->cell, st, c, FORMAT_CSV);
                } else {
                    const unsigned char *p = sqlite3_column_text(st, c);
                    size_t n = (size_t)sqlite3_column_bytes(st, c);
                    rc = p == NULL && n > 0 ? COMMON_ERR_NOMEM : buf_put(&w->cell, p, n);
                }
                if (rc != 0) {
                    return rc;
                }
                json_put_string(w->out, (const unsigned char *)w->cell.p, w->cell.n);
            }
        }
        fputc('}', w->out);
        w->n_rows++;
        return 0;
    }
    if (w->format == FORMAT_CSV) {
        for (int c = 0; c < w->n_cols; c++) {
            w->cell.n = 0;
            if ((rc = render_cell(&w->cell, st, c, FORMAT_CSV)) != 0) {
                return rc;
            }
            fputs(c > 0 ? "," : "", w->out);
            csv_put_field(w->out, w->cell.p != NULL ? w->cell.p : "", w->cell.n,
                          sqlite3_column_type(st, c) == SQLITE_NULL);
        }
        fputs("\r\n", w->out);
        w->n_rows++;
        return 0;
    }
    if (w->table_started) {
        for (int c = 0; c < w->n_cols; c++) {
            w->cell.n = 0;
            if ((rc = render_cell(&w->cell, st, c, FORMAT_TABLE)) != 0) {
                return rc;
            }
            table_put_cell(w, c, w->cell.p != NULL ? w->cell.p : "", w->cell.n);
        }
        fputc('\n', w->out);
        w->n_rows++;
        return 0;
    }
    for (int c = 0; c < w->n_cols; c++) {
        w->offsets[w->n_held * (size_t)w->n_cols + (size_t)c] = w->held.n;
        if ((rc = render_cell(&w->held, st, c, FORMAT_TABLE)) != 0 ||
            (rc = buf_put(&w->held, "", 1)) != 0) {
            return rc;
        }
    }
    w->n_held++;
    w->n_rows++;
    if (w->n_held == TABLE_SAMPLE_ROWS || w->held.n >= TABLE_SAMPLE_BYTES) {
        table_start(w, st);
    }
    return 0;
}

static void writer_end(writer *w, sqlite3_stmt *st) {
    if (w->format == FORMAT_TABLE && !w->table_started) {
        table_start(w, st);
    } else if (w->format == FORMAT_JSON) {
        fputs(w->n_rows > 0 ? "\n]\n" : "]\n", w->out);
    }
}

static void writer_free(writer *w) {
    free(w->cell.p);
    free(w->held.p);
    free(w->offsets);
    free(w->widths);
}

/* Steps st to the end, writing each row to out as it comes. Returns 0, or the SQLite result code
 * that stopped it (SQLITE_INTERRUPT after the time limit; the message is sqlite3_errmsg's), or
 * SQLITE_NOMEM when a cell could not be held. *n_rows counts the rows written. */
static int write_result(sqlite3_stmt *st, out_format format, FILE *out, uint64_t *n_rows) {
    writer w = {.format = format, .out = out};
    int rc = writer_begin(&w, st) == 0 ? SQLITE_OK : SQLITE_NOMEM;
    while (rc == SQLITE_OK) {
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE) {
            writer_end(&w, st);
            break;
        }
        if (step != SQLITE_ROW) {
            rc = step;
        } else if (writer_row(&w, st) != 0) {
            rc = SQLITE_NOMEM;
        }
    }
    *n_rows = w.n_rows;
    writer_free(&w);
    return rc;
}

/* ---- opening the store ---- */

/* Opens the database read-only, refusing (with a message) a path that is not an existing file:
 * these commands never create a database. Returns the store or NULL. */
static coordinator_store *open_readonly(const char *cmd, const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "chesslens %s: %s: no such database file%s\n", cmd, path,
                strcmp(path, DEFAULT_DB) == 0 ? " (the default; --db names another)" : "");
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        fprintf(stderr, "chesslens %s: %s: not a database file\n", cmd, path);
        return NULL;
    }
    char err[COMMON_ERR_LEN];
    coordinator_store *s = NULL;
    if (coordinator_store_open_readonly(&s, path, 0, err) != 0) {
        fprintf(stderr, "chesslens %s: %s\n", cmd, err);
        return NULL;
    }
    return s;
}

#define DB_OPT(ptr)                                                                                \
    {                                                                                              \
        .name = "--db", .kind = CLI_STRING, .value = (ptr), .meta = "DB",                          \
        .help = "the chesslens database, opened read-only (default ./" DEFAULT_DB ")"              \
    }

/* ---- query ---- */

/* What the authorizer refused, for a message better than SQLite's "not authorized". */
typedef struct guard {
    char reason[COMMON_ERR_LEN];
} guard;

/* Pragmas that take an argument only to say what to read. */
static bool pragma_reads_argument(const char *name) {
    static const char *const names[] = {
        "table_info",  "table_xinfo",     "table_list",       "index_info",
        "index_xinfo", "index_list",      "foreign_key_list", "foreign_key_check",
        "quick_check", "integrity_check", "function_list",    "pragma_list",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(name, names[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* The authorizer: refuses what would change the connection rather than the file (the read-only
 * open already stops writes to the file): attaching a database, and a PRAGMA that sets a value
 * (query_only = OFF, journal_mode = ...). */
/* What a statement that the authorizer refuses would have done, for the message. */
static const char *write_action_name(int action) {
    switch (action) {
    case SQLITE_INSERT:
        return "INSERT";
    case SQLITE_UPDATE:
        return "UPDATE";
    case SQLITE_DELETE:
        return "DELETE";
    case SQLITE_ALTER_TABLE:
        return "ALTER TABLE";
    case SQLITE_REINDEX:
        return "REINDEX";
    case SQLITE_ANALYZE:
        return "ANALYZE";
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
        return "a transaction";
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:
        return "CREATE";
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_DROP_TEMP_VIEW:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
        return "DROP";
    default:
        return "this statement";
    }
}

/* Reads only: SELECT, reading tables and views, recursive CTEs, functions but
 * load_extension, and pragmas that only report (or name what to report). Everything else is
 * refused while the statement is prepared, naming what it is. */
static int authorize(void *ctx, int action, const char *a1, const char *a2, const char *db,
                     const char *trigger) {
    (void)db;
    (void)trigger;
    guard *g = ctx;
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_FUNCTION:
        if (a2 != NULL && strcmp(a2, "load_extension") == 0) {
            snprintf(g->reason, sizeof g->reason,
                     "load_extension is refused: query loads no extensions");
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        if (a2 != NULL && !pragma_reads_argument(a1)) {
            snprintf(g->reason, sizeof g->reason,
                     "PRAGMA %.64s = %.64s is refused: query cannot change settings", a1, a2);
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
        snprintf(g->reason, sizeof g->reason, "%s is refused: query reads the one database",
                 action == SQLITE_ATTACH ? "ATTACH" : "DETACH");
        return SQLITE_DENY;
    default:
        snprintf(g->reason, sizeof g->reason,
                 "%s is refused: query only reads (the database is opened read-only)",
                 write_action_name(action));
        return SQLITE_DENY;
    }
}

/* The time limit, checked by the progress handler. */
typedef struct deadline {
    double at_s; /* common_now_s() past which the statement is interrupted; 0: none */
    bool passed;
} deadline;

static int on_progress(void *ctx) {
    deadline *d = ctx;
    if (d->at_s > 0.0 && common_now_s() > d->at_s) {
        d->passed = true;
        return 1;
    }
    return 0;
}

/* True when text holds only white space, comments and empty statements (";"). */
static bool only_empty_statements(sqlite3 *db, const char *text) {
    while (*text != '\0') {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        int rc = sqlite3_prepare_v2(db, text, -1, &st, &tail);
        sqlite3_finalize(st);
        if (rc != SQLITE_OK || st != NULL || tail == NULL || tail == text) {
            return false;
        }
        text = tail;
    }
    return true;
}

int cli_query(int argc, char **argv) {
    const char *db_path = DEFAULT_DB;
    int format = FORMAT_TABLE;
    long timeout_s = 30, memory_mb = 1024;
    static const char *const formats[] = {"table", "csv", "json", NULL};
    const cli_opt opts[] = {
        DB_OPT(&db_path),
        {.name = "--format",
         .kind = CLI_CHOICE,
         .value = &format,
         .meta = "F",
         .choices = formats,
         .help = "table: aligned columns, cells cut after 256 bytes; csv: RFC 4180 with a\n"
                 "header row; json: an array of objects (default table)"},
        {.name = "--timeout",
         .kind = CLI_LONG,
         .value = &timeout_s,
         .meta = "SECONDS",
         .lo = 0,
         .hi = 86400,
         .help = "interrupt the query after this long (default 30; 0 = no limit)"},
        {.name = "--memory-mb",
         .kind = CLI_LONG,
         .value = &memory_mb,
         .meta = "MB",
         .lo = 1,
         .hi = 1 << 20,
         .help = "refuse to let SQLite use more memory than this (default 1024)"},
    };
    const cli_spec spec = {.command = "query",
                           .synopsis = "SQL [--db DB] [--format table|csv|json] "
                                       "[--timeout SECONDS] [--memory-mb MB]",
                           .about = "Runs one read-only SQL statement on the database and prints "
                                    "its rows on stdout as\nSQLite steps them (the table format "
                                    "measures its columns on the first 1000\nrows). The public "
                                    "views (docs/STORE.md): patch_effects, legal_stats,\n"
                                    "neuron_stats, predictions, games, game_positions.",
                           .min_args = 1,
                           .max_args = 1,
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    const char *sql = args[0];
    coordinator_store *s = open_readonly(spec.command, db_path);
    if (s == NULL) {
        return 1;
    }
    sqlite3 *db = coordinator_store_db(s);
    guard g = {""};
    deadline d = {timeout_s > 0 ? common_now_s() + (double)timeout_s : 0.0, false};
    /* defensive mode (no writable_schema, no writes to shadow tables), no extensions, and a
     * ceiling on SQLite's memory: a statement from the command line can only read */
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL);
    sqlite3_hard_heap_limit64((sqlite3_int64)memory_mb << 20);
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, QUERY_MAX_VALUE);
    sqlite3_set_authorizer(db, authorize, &g);

    int code = 1;
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK) {
        fprintf(stderr, "chesslens query: %s\n",
                g.reason[0] != '\0' ? g.reason : sqlite3_errmsg(db));
        goto done;
    }
    if (st == NULL) {
        code = cli_usage_error(&spec, "the SQL holds no statement");
        goto done;
    }
    if (!only_empty_statements(db, tail)) {
        fprintf(stderr,
                "chesslens query: refused: give exactly one statement; more SQL follows the "
                "first: '%.60s'\n",
                tail + strspn(tail, " \t\r\n"));
        goto done;
    }
    if (!sqlite3_stmt_readonly(st)) {
        fprintf(stderr, "chesslens query: refused: the statement would write; the database is "
                        "opened read-only for queries\n");
        goto done;
    }
    sqlite3_progress_handler(db, PROGRESS_STEPS, on_progress, &d);
    uint64_t n_rows = 0;
    int rc = write_result(st, (out_format)format, stdout, &n_rows);
    if (rc == SQLITE_INTERRUPT && d.passed) {
        fprintf(stderr,
                "chesslens query: interrupted: the query ran past its time limit of %ld s "
                "(--timeout)\n",
                timeout_s);
        goto done;
    }
    if (rc != SQLITE_OK) {
        if (rc == SQLITE_NOMEM) {
            fprintf(stderr,
                    "chesslens query: out of memory: the query needs more than its memory "
                    "limit of %ld MB (--memory-mb)\n",
                    memory_mb);
        } else if (rc == SQLITE_TOOBIG) {
            fprintf(stderr,
                    "chesslens query: refused: the query makes a string or blob longer than "
                    "%d MiB, the most a value may hold\n",
                    QUERY_MAX_VALUE >> 20);
        } else {
            fprintf(stderr, "chesslens query: %s\n", sqlite3_errmsg(db));
        }
        goto done;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "chesslens query: writing stdout failed\n");
        goto done;
    }
    code = 0;

done:
    sqlite3_finalize(st);
    coordinator_store_close(&s);
    return code;
}

/* ---- export ---- */

/* The public views with a sweep column (docs/STORE.md); the first is the default. */
static const char *const sweep_views[] = {"patch_effects", "legal_stats", "neuron_stats",
                                          "predictions", NULL};

static int sweep_exists(sqlite3 *db, const char *name, bool *found, char *err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sweep WHERE name = ?1", -1, &st, NULL) != SQLITE_OK) {
        return common_fail(err, COMMON_ERR_IO, "sqlite3_prepare(find sweep): %s",
                           sqlite3_errmsg(db));
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return common_fail(err, COMMON_ERR_IO, "sqlite3_step(find sweep): %s", sqlite3_errmsg(db));
    }
    return 0;
}

int cli_export(int argc, char **argv) {
    const char *db_path = DEFAULT_DB, *out_path = NULL;
    int format = 0, view = 0;
    static const char *const formats[] = {"csv", "json", NULL};
    static const out_format format_values[] = {FORMAT_CSV, FORMAT_JSON};
    const cli_opt opts[] = {
        {.name = "--format",
         .kind = CLI_CHOICE,
         .value = &format,
         .meta = "F",
         .required = true,
         .choices = formats,
         .help = "csv: RFC 4180 with a header row; json: an array of objects"},
        {.name = "--view",
         .kind = CLI_CHOICE,
         .value = &view,
         .meta = "V",
         .choices = sweep_views,
         .help = "the view to export (default patch_effects)"},
        DB_OPT(&db_path),
        {.name = "--out",
         .kind = CLI_STRING,
         .value = &out_path,
         .meta = "FILE",
         .help = "write here, whole or not at all (default stdout)"},
    };
    const cli_spec spec = {.command = "export",
                           .synopsis = "SWEEP --format csv|json [--view V] [--db DB] [--out FILE]",
                           .about = "Writes every row of one view for the sweep named SWEEP, all "
                                    "of the view's columns\n(docs/STORE.md), streamed as SQLite "
                                    "steps them.",
                           .min_args = 1,
                           .max_args = 1,
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    const char *sweep = args[0];
    if (out_path != NULL &&
        !cli_output_is_new(spec.command, out_path, (const char *const[]){db_path}, 1)) {
        return 1;
    }
    coordinator_store *s = open_readonly(spec.command, db_path);
    if (s == NULL) {
        return 1;
    }
    sqlite3 *db = coordinator_store_db(s);
    char err[COMMON_ERR_LEN], sql[128];
    int code = 1;
    sqlite3_stmt *st = NULL;
    common_outfile *of = NULL;
    bool found = false;
    if (sweep_exists(db, sweep, &found, err) != 0) {
        fprintf(stderr, "chesslens export: %s\n", err);
        goto done;
    }
    if (!found) {
        fprintf(stderr, "chesslens export: no sweep '%s' in %s\n", sweep, db_path);
        goto done;
    }
    /* the view's name comes from the fixed list above, never from the user's text */
    snprintf(sql, sizeof sql, "SELECT * FROM %s WHERE sweep = ?1", sweep_views[view]);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "chesslens export: %s: %s\n", sweep_views[view], sqlite3_errmsg(db));
        goto done;
    }
    sqlite3_bind_text(st, 1, sweep, -1, SQLITE_STATIC);
    if (out_path != NULL && common_outfile_new(&of, out_path, err) != 0) {
        fprintf(stderr, "chesslens export: %s\n", err);
        goto done;
    }
    FILE *out = of != NULL ? common_outfile_stream(of) : stdout;
    uint64_t n_rows = 0;
    int rc = write_result(st, format_values[format], out, &n_rows);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "chesslens export: %s: %s\n", sweep_views[view],
                rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(db));
        goto done;
    }
    if (of != NULL) {
        if (common_outfile_commit(&of, err) != 0) {
            fprintf(stderr, "chesslens export: %s\n", err);
            goto done;
        }
        fprintf(stderr, "chesslens export: wrote %" PRIu64 " rows of %s for sweep '%s' to %s\n",
                n_rows, sweep_views[view], sweep, out_path);
    } else if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "chesslens export: writing stdout failed\n");
        goto done;
    }
    code = 0;

done:
    common_outfile_destroy(&of);
    sqlite3_finalize(st);
    coordinator_store_close(&s);
    return code;
}
