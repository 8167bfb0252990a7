/*
 * board.c: plot_board_svg, an 8x8 chessboard whose squares are coloured by a value (the model's
 * log-probability of each square as the next token), with the pieces of the position on top,
 * the legal next squares ringed and the square of a move in progress outlined.
 *
 * Pieces are the filled Unicode chess glyphs (U+265A..U+265F) for both colours, filled white or
 * black and outlined in the other, because the outline glyphs (U+2654..U+2659) are hollow: on a
 * coloured square their inside would take the square's colour. Glyphs and marks ignore the
 * pointer, so hovering anywhere on a square shows its <title>. Each square also prints its value
 * in a corner, in a colour chosen for contrast with its fill.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot/plot_int.h"

#define MARGIN PLOT_MARGIN
#define SQUARE 56.0
#define MARK_COLOR "#e6550d"

/* UTF-8 of the filled glyph for a FEN letter (either case), or NULL. */
static const char *glyph(char piece) {
    switch (piece) {
    case 'K':
    case 'k':
        return "\xE2\x99\x9A";
    case 'Q':
    case 'q':
        return "\xE2\x99\x9B";
    case 'R':
    case 'r':
        return "\xE2\x99\x9C";
    case 'B':
    case 'b':
        return "\xE2\x99\x9D";
    case 'N':
    case 'n':
        return "\xE2\x99\x9E";
    case 'P':
    case 'p':
        return "\xE2\x99\x9F";
    default:
        return NULL;
    }
}

static const char *piece_name(char piece) {
    switch (piece) {
    case 'K':
    case 'k':
        return "king";
    case 'Q':
    case 'q':
        return "queen";
    case 'R':
    case 'r':
        return "rook";
    case 'B':
    case 'b':
        return "bishop";
    case 'N':
    case 'n':
        return "knight";
    default:
        return "pawn";
    }
}

/* Relative luminance of "#rrggbb" (0 dark .. 1 light), to pick a readable text colour. */
static double luminance(const char *hex) {
    unsigned r = 0, g = 0, b = 0;
    if (sscanf(hex, "#%02x%02x%02x", &r, &g, &b) != 3) {
        return 1;
    }
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255.0;
}

static void square_title(const plot_board *b, int sq, double lo, char *out, size_t cap) {
    char name[3] = {(char)('a' + sq % 8), (char)('1' + sq / 8), '\0'};
    float v = b->values[sq];
    char num[32], prob[32];
    size_t n;
    if (isnan(v)) {
        n = (size_t)snprintf(out, cap, "%s: no value", name);
    } else {
        n = (size_t)snprintf(
            out, cap, "%s: %s %s%s", name, b->value_label != NULL ? b->value_label : "value",
            plot_format_number(v, 4, num, sizeof num), v < lo ? " (below the colour scale)" : "");
        /* the values are log-probabilities in the board's use; say the probability too */
        if (v <= 0 && n < cap) {
            n += (size_t)snprintf(out + n, cap - n, ", p = %s",
                                  plot_format_number(exp(v), 3, prob, sizeof prob));
        }
    }
    char piece = b->pieces[sq];
    if (glyph(piece) != NULL && n < cap) {
        n += (size_t)snprintf(out + n, cap - n, "; %s %s", piece >= 'a' ? "black" : "white",
                              piece_name(piece));
    }
    if ((b->marked >> sq & 1) && n < cap) {
        n += (size_t)snprintf(out + n, cap - n, "; legal next square");
    }
    if (sq == b->highlight && n < cap) {
        snprintf(out + n, cap - n, "; the piece being moved");
    }
}

int plot_board_svg(const plot_board *b, bool standalone, char **out, size_t *len, char *err) {
    if (b->highlight < -1 || b->highlight > 63) {
        return common_fail(err, COMMON_ERR_INVALID, "board: highlighted square %d", b->highlight);
    }
    double lo, hi;
    if (b->fixed_range) {
        if (!(b->lo < b->hi)) {
            return common_fail(err, COMMON_ERR_INVALID, "board: range [%g, %g] is empty", b->lo,
                               b->hi);
        }
        lo = b->lo;
        hi = b->hi;
    } else {
        plot_scale_range(PLOT_SCALE_SEQUENTIAL, b->values, 64, &lo, &hi);
    }
    double top = MARGIN + PLOT_FONT_TITLE + (b->subtitle != NULL ? PLOT_FONT_SUBTITLE + 8 : 0) + 14;
    double bx = MARGIN + 18, by = top, side = 8 * SQUARE;
    double legend_y = by + side + 36;
    double bar_x = bx + side + 28;
    double fig_w =
        bar_x + plot_colorbar_width(PLOT_SCALE_SEQUENTIAL, lo, hi, b->value_label) + MARGIN;
    double fig_h = legend_y + 16 + MARGIN;

    plot_svg *s = NULL;
    int rc = plot_figure_open(&s, fig_w, fig_h, standalone, "chesslens-board", b->title,
                              b->subtitle, err);
    if (rc != 0) {
        return rc;
    }

    /* squares, rank 8 at the top */
    char color[8], title[256], num[32];
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "class", "squares");
    plot_svg_attr(s, "shape-rendering", "crispEdges");
    for (int sq = 0; sq < 64; sq++) {
        double x = bx + SQUARE * (sq % 8), y = by + SQUARE * (7 - sq / 8);
        plot_scale_color(PLOT_SCALE_SEQUENTIAL, lo, hi, b->values[sq], color);
        plot_svg_begin(s, "rect");
        plot_svg_attr(s, "class", "square");
        plot_svg_attr_num(s, "x", x);
        plot_svg_attr_num(s, "y", y);
        plot_svg_attr_num(s, "width", SQUARE);
        plot_svg_attr_num(s, "height", SQUARE);
        plot_svg_attr(s, "fill", color);
        plot_svg_begin(s, "title");
        square_title(b, sq, lo, title, sizeof title);
        plot_svg_text(s, title);
        plot_svg_end(s, "title");
        plot_svg_end(s, "rect");
    }
    plot_svg_end(s, "g");

    /* everything on top of the squares leaves the hover to them */
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "pointer-events", "none");
    for (int sq = 0; sq < 64; sq++) {
        double x = bx + SQUARE * (sq % 8), y = by + SQUARE * (7 - sq / 8);
        if (!isnan(b->values[sq])) {
            /* the value in the top-left corner, dark on light squares and light on dark ones */
            plot_scale_color(PLOT_SCALE_SEQUENTIAL, lo, hi, b->values[sq], color);
            plot_svg_begin(s, "text");
            plot_svg_attr_num(s, "x", x + 3);
            plot_svg_attr_num(s, "y", y + 11);
            plot_svg_attr_num(s, "font-size", 9);
            plot_svg_attr(s, "fill", luminance(color) > 0.55 ? "#333333" : "#f0f0f0");
            plot_svg_text(s, plot_format_number(b->values[sq], 2, num, sizeof num));
            plot_svg_end(s, "text");
        }
        if (b->marked >> sq & 1) {
            plot_svg_begin(s, "circle");
            plot_svg_attr(s, "class", "legal");
            plot_svg_attr_num(s, "cx", x + SQUARE / 2);
            plot_svg_attr_num(s, "cy", y + SQUARE / 2);
            plot_svg_attr_num(s, "r", SQUARE * 0.36);
            plot_svg_attr(s, "fill", "none");
            plot_svg_attr(s, "stroke", MARK_COLOR);
            plot_svg_attr(s, "stroke-width", "3");
            plot_svg_end(s, "circle");
        }
        if (sq == b->highlight) {
            plot_svg_begin(s, "rect");
            plot_svg_attr(s, "class", "highlight");
            plot_svg_attr_num(s, "x", x + 2);
            plot_svg_attr_num(s, "y", y + 2);
            plot_svg_attr_num(s, "width", SQUARE - 4);
            plot_svg_attr_num(s, "height", SQUARE - 4);
            plot_svg_attr(s, "fill", "none");
            plot_svg_attr(s, "stroke", "#111111");
            plot_svg_attr(s, "stroke-width", "3");
            plot_svg_attr(s, "stroke-dasharray", "6 3");
            plot_svg_end(s, "rect");
        }
        const char *g = glyph(b->pieces[sq]);
        if (g != NULL) {
            bool white = b->pieces[sq] < 'a';
            plot_svg_begin(s, "text");
            plot_svg_attr(s, "class", white ? "piece white" : "piece black");
            plot_svg_attr_num(s, "x", x + SQUARE / 2);
            plot_svg_attr_num(s, "y", y + SQUARE * 0.8);
            plot_svg_attr_num(s, "font-size", SQUARE * 0.78);
            plot_svg_attr(s, "text-anchor", "middle");
            plot_svg_attr(s, "fill", white ? "#ffffff" : "#111111");
            plot_svg_attr(s, "stroke", white ? "#111111" : "#eeeeee");
            plot_svg_attr(s, "stroke-width", white ? "1.4" : "0.9");
            plot_svg_attr(s, "paint-order", "stroke");
            plot_svg_text(s, g);
            plot_svg_end(s, "text");
        }
    }
    plot_svg_end(s, "g");
    plot_svg_begin(s, "rect");
    plot_svg_attr_num(s, "x", bx);
    plot_svg_attr_num(s, "y", by);
    plot_svg_attr_num(s, "width", side);
    plot_svg_attr_num(s, "height", side);
    plot_svg_attr(s, "fill", "none");
    plot_svg_attr(s, "stroke", "#333333");
    plot_svg_attr(s, "stroke-width", "1");
    plot_svg_end(s, "rect");

    /* file and rank labels */
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "fill", PLOT_TEXT_COLOR);
    for (int i = 0; i < 8; i++) {
        char f[2] = {(char)('a' + i), '\0'}, r[2] = {(char)('8' - i), '\0'};
        plot_svg_label(s, bx + SQUARE * (i + 0.5), by + side + 16, 12, "middle", 0, NULL, f);
        plot_svg_label(s, bx - 8, by + SQUARE * (i + 0.5) + 4, 12, "end", 0, NULL, r);
    }
    plot_svg_end(s, "g");

    /* legend of the marks */
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "fill", PLOT_TEXT_COLOR);
    plot_svg_begin(s, "circle");
    plot_svg_attr_num(s, "cx", bx + 8);
    plot_svg_attr_num(s, "cy", legend_y - 4);
    plot_svg_attr_num(s, "r", 7);
    plot_svg_attr(s, "fill", "none");
    plot_svg_attr(s, "stroke", MARK_COLOR);
    plot_svg_attr(s, "stroke-width", "2.5");
    plot_svg_end(s, "circle");
    plot_svg_label(s, bx + 22, legend_y, 12, "start", 0, NULL, "legal next square");
    if (b->highlight >= 0) {
        double lx = bx + 22 + plot_text_width("legal next square", 12) + 24;
        plot_svg_begin(s, "rect");
        plot_svg_attr_num(s, "x", lx);
        plot_svg_attr_num(s, "y", legend_y - 11);
        plot_svg_attr_num(s, "width", 14);
        plot_svg_attr_num(s, "height", 14);
        plot_svg_attr(s, "fill", "none");
        plot_svg_attr(s, "stroke", "#111111");
        plot_svg_attr(s, "stroke-width", "2");
        plot_svg_attr(s, "stroke-dasharray", "4 2");
        plot_svg_end(s, "rect");
        plot_svg_label(s, lx + 20, legend_y, 12, "start", 0, NULL, "piece being moved");
    }
    plot_svg_end(s, "g");

    plot_colorbar(s, PLOT_SCALE_SEQUENTIAL, lo, hi, bar_x, by, 14, side, b->value_label);
    return plot_svg_finish(&s, out, len, err);
}
