/*
 * heatmap.c: plot_heatmap_svg, the figure of every grid-shaped analysis (patching effects,
 * direct logit attribution, attention-pattern diffs, neuron lifts, legal-move statistics).
 *
 * The layout is computed before anything is drawn: panels are placed in rows of panels_per_row,
 * each with its row tick labels on the left, its column tick labels below (rotated when they do
 * not fit under a cell, and thinned to every k-th when cells are narrower than a label's line),
 * its title above; one colour bar on the right serves every panel, since they share a scale (as
 * TL's facet plots do), so that panels can be compared cell by cell. Cells are whole pixels and
 * drawn with crisp edges, and each carries a <title> with its row, column and value: browsers
 * show it on hover, and tests read it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plot/plot_int.h"

#define MARGIN PLOT_MARGIN
#define PANEL_GAP 28.0     /* between panels side by side */
#define PANEL_ROW_GAP 18.0 /* between rows of panels */
#define GRID_W 880.0       /* the width a row of panels' cells aims at */
#define GRID_H 560.0       /* the height a panel's cells aim at */

/* Where one panel goes and how its labels are drawn. */
typedef struct panel_layout {
    double x, y;        /* top-left corner of the cells */
    double row_label_w; /* width of the row tick labels (and the row axis name) */
    size_t row_step;    /* label every row_step-th row */
    size_t col_step;    /* label every col_step-th column */
    bool rotate_cols;   /* column labels vertical */
    double col_label_h; /* height of the column tick labels */
} panel_layout;

static double clampd(double v, double lo, double hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

static int check(const plot_heatmap *h, char *err) {
    if (h->n_panels == 0 || h->n_panels > PLOT_MAX_PANELS || h->panels == NULL) {
        return common_fail(err, COMMON_ERR_INVALID, "heatmap: %zu panels (1..%d)", h->n_panels,
                           PLOT_MAX_PANELS);
    }
    size_t cells = 0;
    for (size_t i = 0; i < h->n_panels; i++) {
        const plot_panel *p = &h->panels[i];
        if (p->n_rows == 0 || p->n_cols == 0 || p->values == NULL || p->row_labels == NULL ||
            p->col_labels == NULL) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "heatmap: panel %zu has no cells or no labels", i);
        }
        if (p->n_rows > PLOT_MAX_CELLS || p->n_cols > PLOT_MAX_CELLS / p->n_rows ||
            cells + p->n_rows * p->n_cols > PLOT_MAX_CELLS) {
            return common_fail(err, COMMON_ERR_INVALID, "heatmap: more than %u cells",
                               PLOT_MAX_CELLS);
        }
        cells += p->n_rows * p->n_cols;
        for (size_t r = 0; r < p->n_rows; r++) {
            if (p->row_labels[r] == NULL) {
                return common_fail(err, COMMON_ERR_INVALID, "heatmap: panel %zu row %zu: no label",
                                   i, r);
            }
        }
        for (size_t c = 0; c < p->n_cols; c++) {
            if (p->col_labels[c] == NULL) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "heatmap: panel %zu column %zu: no label", i, c);
            }
        }
    }
    if (h->fixed_range && !(h->lo < h->hi)) {
        return common_fail(err, COMMON_ERR_INVALID, "heatmap: range [%g, %g] is empty", h->lo,
                           h->hi);
    }
    if (h->fixed_range && h->scale == PLOT_SCALE_DIVERGING && !(h->lo < 0 && h->hi > 0)) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "heatmap: a diverging range must hold 0 inside (got [%g, %g])", h->lo,
                           h->hi);
    }
    return 0;
}

/* The colour range over every panel's values. */
static void figure_range(const plot_heatmap *h, double *lo, double *hi) {
    if (h->fixed_range) {
        *lo = h->lo;
        *hi = h->hi;
        return;
    }
    float ext[2] = {NAN, NAN}; /* min, max over all panels */
    for (size_t i = 0; i < h->n_panels; i++) {
        const plot_panel *p = &h->panels[i];
        for (size_t k = 0; k < p->n_rows * p->n_cols; k++) {
            float v = p->values[k];
            if (isfinite(v)) {
                ext[0] = isnan(ext[0]) || v < ext[0] ? v : ext[0];
                ext[1] = isnan(ext[1]) || v > ext[1] ? v : ext[1];
            }
        }
    }
    plot_scale_range(h->scale, ext, 2, lo, hi);
}

static void layout_panel(const plot_heatmap *h, const plot_panel *p, double cw, double ch,
                         panel_layout *l) {
    double widest = 0;
    for (size_t r = 0; r < p->n_rows; r++) {
        widest = fmax(widest, plot_text_width(p->row_labels[r], PLOT_FONT_TICK));
    }
    l->row_label_w = widest + 8 + (h->row_axis != NULL ? PLOT_FONT_AXIS + 8 : 0);
    l->row_step = (size_t)ceil(11.0 / ch);
    double col_widest = 0;
    for (size_t c = 0; c < p->n_cols; c++) {
        col_widest = fmax(col_widest, plot_text_width(p->col_labels[c], PLOT_FONT_TICK));
    }
    /* numbers (positions) are thinned to round steps and stay upright; other labels (tokens)
     * are all shown, turned on their side when they do not fit under a cell */
    bool numeric = true;
    for (size_t c = 0; c < p->n_cols && numeric; c++) {
        const char *t = p->col_labels[c];
        numeric = *t != '\0' && strspn(t, "0123456789") == strlen(t);
    }
    l->rotate_cols = !numeric && col_widest > cw - 2;
    double need = l->rotate_cols ? PLOT_FONT_TICK + 2 : col_widest + 4;
    l->col_step = 1;
    static const size_t steps[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        l->col_step = steps[i];
        if ((double)steps[i] * cw >= need) {
            break;
        }
    }
    l->col_label_h = (l->rotate_cols ? col_widest + 8 : PLOT_FONT_TICK + 8) +
                     (h->col_axis != NULL ? PLOT_FONT_AXIS + 8 : 0);
}

static void cell_title(const plot_panel *p, size_t r, size_t c, char *out, size_t cap) {
    float v = p->values[r * p->n_cols + c];
    char num[32];
    const char *col =
        p->col_details != NULL && p->col_details[c] != NULL ? p->col_details[c] : p->col_labels[c];
    size_t n = (size_t)snprintf(out, cap, "%s%s%s, %s: %s", p->title != NULL ? p->title : "",
                                p->title != NULL ? " " : "", p->row_labels[r], col,
                                isnan(v) ? "no value" : plot_format_number(v, 4, num, 32));
    if (p->counts != NULL && n < cap) {
        snprintf(out + n, cap - n, " (n=%u)", (unsigned)p->counts[r * p->n_cols + c]);
    }
}

static void draw_panel(plot_svg *s, const plot_heatmap *h, const plot_panel *p,
                       const panel_layout *l, double cw, double ch, double lo, double hi) {
    double gw = cw * (double)p->n_cols, gh = ch * (double)p->n_rows;
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "class", "panel");
    if (p->title != NULL) {
        plot_svg_label(s, l->x, l->y - 8, PLOT_FONT_PANEL, "start", 0, "font-weight:bold",
                       p->title);
    }
    /* cells */
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "shape-rendering", "crispEdges");
    char title[512], color[8];
    for (size_t r = 0; r < p->n_rows; r++) {
        for (size_t c = 0; c < p->n_cols; c++) {
            plot_scale_color(h->scale, lo, hi, p->values[r * p->n_cols + c], color);
            plot_svg_begin(s, "rect");
            plot_svg_attr_num(s, "x", l->x + cw * (double)c);
            plot_svg_attr_num(s, "y", l->y + ch * (double)r);
            plot_svg_attr_num(s, "width", cw);
            plot_svg_attr_num(s, "height", ch);
            plot_svg_attr(s, "fill", color);
            plot_svg_begin(s, "title");
            cell_title(p, r, c, title, sizeof title);
            plot_svg_text(s, title);
            plot_svg_end(s, "title");
            plot_svg_end(s, "rect");
        }
    }
    plot_svg_end(s, "g");
    plot_svg_begin(s, "rect");
    plot_svg_attr_num(s, "x", l->x);
    plot_svg_attr_num(s, "y", l->y);
    plot_svg_attr_num(s, "width", gw);
    plot_svg_attr_num(s, "height", gh);
    plot_svg_attr(s, "fill", "none");
    plot_svg_attr(s, "stroke", PLOT_MUTED_COLOR);
    plot_svg_attr(s, "stroke-width", "0.75");
    plot_svg_end(s, "rect");
    /* row tick labels, right-aligned against the cells */
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "fill", PLOT_TEXT_COLOR);
    for (size_t r = 0; r < p->n_rows; r += l->row_step) {
        double y = l->y + ch * ((double)r + 0.5) + PLOT_FONT_TICK * 0.35;
        plot_svg_label(s, l->x - 4, y, PLOT_FONT_TICK, "end", 0, NULL, p->row_labels[r]);
    }
    /* column tick labels */
    for (size_t c = 0; c < p->n_cols; c += l->col_step) {
        double x = l->x + cw * ((double)c + 0.5);
        if (l->rotate_cols) {
            plot_svg_label(s, x + PLOT_FONT_TICK * 0.35, l->y + gh + 4, PLOT_FONT_TICK, "end", -90,
                           NULL, p->col_labels[c]);
        } else {
            plot_svg_label(s, x, l->y + gh + PLOT_FONT_TICK + 3, PLOT_FONT_TICK, "middle", 0, NULL,
                           p->col_labels[c]);
        }
    }
    plot_svg_end(s, "g");
    /* axis names */
    if (h->col_axis != NULL) {
        plot_svg_label(s, l->x + gw / 2, l->y + gh + l->col_label_h - 4, PLOT_FONT_AXIS, "middle",
                       0, NULL, h->col_axis);
    }
    if (h->row_axis != NULL) {
        plot_svg_label(s, l->x - l->row_label_w + PLOT_FONT_AXIS, l->y + gh / 2, PLOT_FONT_AXIS,
                       "middle", -90, NULL, h->row_axis);
    }
    plot_svg_end(s, "g");
}

int plot_heatmap_svg(const plot_heatmap *h, bool standalone, char **out, size_t *len, char *err) {
    int rc = check(h, err);
    if (rc != 0) {
        return rc;
    }
    double lo, hi;
    figure_range(h, &lo, &hi);
    size_t per_row = h->panels_per_row > 0 ? h->panels_per_row : h->n_panels;
    /* cell size: the widest row of panels fits GRID_W, the tallest panel GRID_H, within limits
     * that keep a cell visible and a label readable */
    size_t most_cols = 0, most_rows = 0;
    for (size_t first = 0; first < h->n_panels; first += per_row) {
        size_t cols = 0;
        for (size_t i = first; i < h->n_panels && i < first + per_row; i++) {
            cols += h->panels[i].n_cols;
            most_rows = h->panels[i].n_rows > most_rows ? h->panels[i].n_rows : most_rows;
        }
        most_cols = cols > most_cols ? cols : most_cols;
    }
    double cw = h->cell_w > 0 ? h->cell_w : floor(clampd(GRID_W / (double)most_cols, 6, 28));
    double ch = h->cell_h > 0 ? h->cell_h : floor(clampd(GRID_H / (double)most_rows, 10, 22));

    panel_layout *ls = calloc(h->n_panels, sizeof *ls);
    if (ls == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "heatmap: out of memory");
    }
    double top = MARGIN + PLOT_FONT_TITLE + (h->subtitle != NULL ? PLOT_FONT_SUBTITLE + 8 : 0) + 12;
    /* panels in the same slot of their row share the row labels' width and their x, so that
     * stacked panels line up cell for cell */
    double slot_label_w[PLOT_MAX_PANELS] = {0}, slot_w[PLOT_MAX_PANELS] = {0};
    for (size_t i = 0; i < h->n_panels; i++) {
        layout_panel(h, &h->panels[i], cw, ch, &ls[i]);
        size_t j = i % per_row;
        slot_label_w[j] = fmax(slot_label_w[j], ls[i].row_label_w);
    }
    for (size_t i = 0; i < h->n_panels; i++) {
        size_t j = i % per_row;
        ls[i].row_label_w = slot_label_w[j];
        slot_w[j] = fmax(slot_w[j], slot_label_w[j] + cw * (double)h->panels[i].n_cols);
    }
    double y = top, width = 0, first_row_h = 0;
    for (size_t first = 0; first < h->n_panels; first += per_row) {
        size_t end = first + per_row < h->n_panels ? first + per_row : h->n_panels;
        bool titled = false;
        double label_h = 0, rows_h = 0;
        for (size_t i = first; i < end; i++) {
            titled = titled || h->panels[i].title != NULL;
            label_h = fmax(label_h, ls[i].col_label_h);
            rows_h = fmax(rows_h, ch * (double)h->panels[i].n_rows);
        }
        double x = MARGIN;
        y += titled ? PLOT_FONT_PANEL + 10 : 0;
        for (size_t i = first; i < end; i++) {
            ls[i].x = x + ls[i].row_label_w;
            ls[i].y = y;
            x += slot_w[i - first] + PANEL_GAP;
        }
        width = fmax(width, x - PANEL_GAP);
        if (first == 0) {
            first_row_h = rows_h;
        }
        y += rows_h + label_h + PANEL_ROW_GAP;
    }
    double bar_h = clampd(first_row_h, 160, 320);
    double bar_x = width + 24,
           bar_y = top + (h->panels[0].title != NULL ? PLOT_FONT_PANEL + 10 : 0);
    double fig_w = bar_x + plot_colorbar_width(h->scale, lo, hi, h->value_label) + MARGIN;
    double fig_h = fmax(y - PANEL_ROW_GAP + MARGIN, bar_y + bar_h + 2 * MARGIN);

    plot_svg *s = NULL;
    if ((rc = plot_figure_open(&s, fig_w, fig_h, standalone, "chesslens-heatmap", h->title,
                               h->subtitle, err)) != 0) {
        free(ls);
        return rc;
    }
    for (size_t i = 0; i < h->n_panels; i++) {
        draw_panel(s, h, &h->panels[i], &ls[i], cw, ch, lo, hi);
    }
    plot_colorbar(s, h->scale, lo, hi, bar_x, bar_y, 14, bar_h, h->value_label);
    free(ls);
    return plot_svg_finish(&s, out, len, err);
}
