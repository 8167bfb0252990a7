/*
 * plot: the figures chesslens draws, as SVG text: heatmaps (patching effect by layer x
 * position, direct logit attribution by component x position, attention-pattern diffs by head x
 * source position, neuron lifts by neuron x phase) and an 8x8 chessboard of next-square
 * log-probabilities with the pieces of the position.
 *
 * Data in, SVG out: the library knows nothing of SQLite, models or chess rules (cli/cmd_plot.c
 * reads the store and runs the engine). It writes SVG with its own small writer (plot_svg), which
 * escapes every text and attribute it is given, prints numbers the same way whatever the C
 * locale, and keeps its elements balanced. A figure has no ids, scripts, links or fonts to fetch,
 * so several can be inlined in one HTML page that opens offline (cli/cmd_report.c).
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed); *out is set only on success and is the caller's (free()).
 */
#ifndef CHESSLENS_PLOT_H
#define CHESSLENS_PLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ------------------------------------------------------------------------------------------ */
/* The SVG writer                                                                              */

/* An SVG document being written into memory. Elements are opened and closed in order:
 * plot_svg_begin opens one, plot_svg_attr* add attributes to the element just opened (before
 * any content), plot_svg_text adds escaped character data, plot_svg_end closes the innermost
 * element. An element without content is written as <name .../>.
 *
 * Drawing calls cannot fail one by one: the writer keeps the first error (out of memory, an
 * attribute after content, an end without a begin, nesting deeper than PLOT_SVG_MAX_DEPTH) and
 * ignores every call after it; plot_svg_finish reports it. So a figure is drawn by straight-line
 * code and checked once. */
typedef struct plot_svg plot_svg;

#define PLOT_SVG_MAX_DEPTH 32

/* Starts a document whose root is <svg> of width x height user units (pixels) with the SVG
 * namespace and a viewBox of the same size. standalone adds the XML declaration, for a file of
 * its own; without it the text can be inlined in HTML. */
int plot_svg_new(plot_svg **out, double width, double height, bool standalone, char *err);
void plot_svg_destroy(plot_svg **s);

/* Opens element name (a fixed ASCII name such as "rect"; not escaped). */
void plot_svg_begin(plot_svg *s, const char *name);
/* Adds name="value" with value escaped (& < > " ' and control characters; invalid UTF-8 becomes
 * U+FFFD). */
void plot_svg_attr(plot_svg *s, const char *name, const char *value);
/* Adds name="number" (plot_format_number with 6 significant digits). */
void plot_svg_attr_num(plot_svg *s, const char *name, double value);
/* Adds character data, escaped as plot_svg_attr escapes values. */
void plot_svg_text(plot_svg *s, const char *text);
/* Closes the innermost open element, which must be name. */
void plot_svg_end(plot_svg *s, const char *name);

/* Shorthands, each one complete element. */
void plot_svg_rect(plot_svg *s, double x, double y, double w, double h, const char *fill);
void plot_svg_line(plot_svg *s, double x1, double y1, double x2, double y2, const char *stroke,
                   double stroke_width);
/* <text> at (x, y) with the given font size (px), anchor ("start", "middle", "end"), rotation
 * (degrees, about (x, y); 0 = none) and optional extra style (e.g. "font-weight:bold"; NULL). */
void plot_svg_label(plot_svg *s, double x, double y, double size, const char *anchor, double rotate,
                    const char *style, const char *text);

/* Closes the root and hands over the text: *out (caller frees, NUL-terminated) and *len
 * (bytes). The first error the writer kept, if any, is returned instead (and the document is
 * dropped). *s is destroyed and NULL afterwards in both cases. */
int plot_svg_finish(plot_svg **s, char **out, size_t *len, char *err);

/* v as text, the same in every locale: at most sig significant digits (1..17), shortest form
 * (trailing zeros dropped), plain notation for 1e-5 <= |v| < 1e15 and else exponent notation
 * ("1.5e-07"); "nan", "inf", "-inf"; -0 prints as "0". Writes at most cap bytes (32 is always
 * enough) and returns out. */
char *plot_format_number(double v, int sig, char *out, size_t cap);

/* ------------------------------------------------------------------------------------------ */
/* Colour scales                                                                               */

typedef enum plot_scale {
    PLOT_SCALE_DIVERGING, /* signed values: blue (lo) - neutral grey-white (0) - red (hi) */
    PLOT_SCALE_SEQUENTIAL /* unsigned values: pale (lo) to dark blue (hi) */
} plot_scale;

/* The neutral colour of the diverging scale (its value at 0), and the colour of a cell without
 * a value. */
#define PLOT_COLOR_NEUTRAL "#f7f7f7"
#define PLOT_COLOR_MISSING "#d9d9d9"

/* The colour of v on scale between lo and hi, as "#rrggbb" into out[8]. Values outside
 * [lo, hi] take the end colours; a NaN takes PLOT_COLOR_MISSING. The diverging scale is centred
 * on zero (0 is PLOT_COLOR_NEUTRAL, lo and hi map to the two ends) and needs lo < 0 < hi;
 * the sequential one maps lo to its first colour and hi to its last. */
void plot_scale_color(plot_scale scale, double lo, double hi, double v, char out[8]);

/* The range a scale gives to n values (NaN skipped): diverging [-m, m] with m the largest |v|,
 * sequential [min, max]; a degenerate range is widened (to [-1, 1] when all are 0 or none is
 * finite) so that lo < hi. */
void plot_scale_range(plot_scale scale, const float *v, size_t n, double *lo, double *hi);

/* ------------------------------------------------------------------------------------------ */
/* Heatmaps                                                                                    */

/* One panel: an n_rows x n_cols grid with its labels. */
typedef struct plot_panel {
    const char *title;              /* above the panel ("resid_pre"); NULL: none */
    size_t n_rows, n_cols;          /* both >= 1 */
    const char *const *row_labels;  /* [n_rows] tick labels ("L3H7", "2_mlp_out") */
    const char *const *col_labels;  /* [n_cols] tick labels ("12", "e4") */
    const char *const *col_details; /* [n_cols] or NULL: extra text for a column in the hover
                                       title ("pos 12, e4") instead of its tick label */
    const float *values;            /* [n_rows, n_cols] row-major; NaN: no value */
    const uint32_t *counts;         /* [n_rows, n_cols] or NULL: n shown in the hover title */
} plot_panel;

/* A figure of panels sharing one colour scale and one colour bar. */
typedef struct plot_heatmap {
    const char *title;               /* the figure's title */
    const char *subtitle;            /* a line under it; NULL: none */
    const char *row_axis, *col_axis; /* axis names ("layer", "position"); NULL: none */
    const char *value_label;         /* the colour bar's label ("normalised logit diff") */
    plot_scale scale;                /* how values map to colours */
    bool fixed_range;                /* use lo, hi (else plot_scale_range over all panels) */
    double lo, hi;                   /* with fixed_range */
    const plot_panel *panels;        /* [n_panels] */
    size_t n_panels;                 /* 1..PLOT_MAX_PANELS */
    size_t panels_per_row;           /* panels side by side before wrapping; 0 = all */
    double cell_w, cell_h;           /* cell size in px; 0 = chosen from the grid size */
} plot_heatmap;

#define PLOT_MAX_PANELS 64
#define PLOT_MAX_CELLS (1u << 22) /* cells of one figure */

/* Draws the heatmap: a title, per panel its title, row tick labels on the left and column tick
 * labels below (rotated; thinned to every k-th when cells are narrow), one <rect> per cell whose
 * <title> reads "ROW, COL: VALUE" (", n=COUNT" with counts) so that hovering shows it, a frame,
 * and a vertical colour bar with labelled ticks (0 among them on a diverging scale). INVALID for
 * an empty or oversized figure or a panel without labels. */
int plot_heatmap_svg(const plot_heatmap *h, bool standalone, char **out, size_t *len, char *err);

/* ------------------------------------------------------------------------------------------ */
/* Chessboard                                                                                  */

/* An 8x8 board; squares are 0..63 with a1 = 0, b1 = 1, ..., h8 = 63 (as in chess/). */
typedef struct plot_board {
    const char *title;       /* the figure's title */
    const char *subtitle;    /* a line under it; NULL: none */
    const char *value_label; /* the colour bar's label ("log p(next square)") */
    char pieces[64];         /* FEN letters: "PNBRQK" white, "pnbrqk" black; 0 or ' ': empty */
    float values[64];        /* the value of each square (NaN: none), on a sequential scale */
    bool fixed_range;        /* use lo, hi (else the values' [min, max]) */
    double lo, hi;
    uint64_t marked; /* squares marked with a ring (bit = square): the legal next ones */
    int highlight;   /* a square outlined (the from-square of a move in progress); -1 */
} plot_board;

/* Draws the board (white at the bottom, files a-h below and ranks 1-8 on the left), each square
 * filled by its value with a <title> giving square, value and whether it is marked, the pieces
 * as Unicode chess glyphs (U+2654..U+265F; white pieces filled white with a dark outline, black
 * ones black with a light outline, so that both read on any square), a ring on every marked
 * square, the highlighted square outlined, a legend of the marks and a colour bar. */
int plot_board_svg(const plot_board *b, bool standalone, char **out, size_t *len, char *err);

#endif
