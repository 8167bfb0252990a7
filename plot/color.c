/*
 * color.c: the colour scales of plot.h and the colour bar that shows them. The diverging scale
 * runs blue - near-white - red through five stops, centred on zero (the convention of TL's
 * patching and attribution plots: red where the clean value is restored or raised, blue where it
 * is lowered); the sequential one runs from near-white to dark blue. Colours are interpolated
 * linearly in sRGB between stops, which is smooth enough for cells a few pixels wide.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot/plot_int.h"

typedef struct rgb {
    double r, g, b;
} rgb;

/* Five stops at t = 0, 0.25, 0.5, 0.75, 1. */
static const rgb diverging[5] = {
    {33, 102, 172}, {146, 197, 222}, {247, 247, 247}, {244, 165, 130}, {178, 24, 43}};
static const rgb sequential[5] = {
    {247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};

/* The colour at t in [0, 1] of the stops. */
static void stops_color(const rgb *stops, double t, char out[8]) {
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double f = t * 4;
    int i = (int)f;
    i = i > 3 ? 3 : i;
    double u = f - i;
    const rgb *a = &stops[i], *b = &stops[i + 1];
    int r = (int)lround(a->r + (b->r - a->r) * u);
    int g = (int)lround(a->g + (b->g - a->g) * u);
    int bl = (int)lround(a->b + (b->b - a->b) * u);
    snprintf(out, 8, "#%02x%02x%02x", r, g, bl);
}

void plot_scale_color(plot_scale scale, double lo, double hi, double v, char out[8]) {
    if (isnan(v)) {
        snprintf(out, 8, "%s", PLOT_COLOR_MISSING);
        return;
    }
    if (scale == PLOT_SCALE_SEQUENTIAL) {
        stops_color(sequential, hi > lo ? (v - lo) / (hi - lo) : 0.5, out);
        return;
    }
    if (v == 0) {
        snprintf(out, 8, "%s", PLOT_COLOR_NEUTRAL);
        return;
    }
    /* each side of zero is scaled to its own end, so that 0 stays neutral and lo and hi reach
     * the two ends whatever their magnitudes */
    double t = 0.5;
    if (v < 0 && lo < 0) {
        t = 0.5 - 0.5 * (v / lo);
    } else if (v > 0 && hi > 0) {
        t = 0.5 + 0.5 * (v / hi);
    }
    stops_color(diverging, t, out);
}

void plot_scale_range(plot_scale scale, const float *v, size_t n, double *lo, double *hi) {
    double mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(v[i])) {
            mn = v[i] < mn ? v[i] : mn;
            mx = v[i] > mx ? v[i] : mx;
        }
    }
    if (scale == PLOT_SCALE_DIVERGING) {
        double m = fmax(fabs(mn), fabs(mx));
        m = isfinite(m) && m > 0 ? m : 1.0;
        *lo = -m;
        *hi = m;
        return;
    }
    if (!(mn <= mx)) {
        *lo = 0;
        *hi = 1;
    } else if (mn == mx) {
        double pad = fabs(mn) > 0 ? fabs(mn) * 0.1 : 0.5;
        *lo = mn - pad;
        *hi = mx + pad;
    } else {
        *lo = mn;
        *hi = mx;
    }
}

double plot_text_width(const char *text, double size) {
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        chars += (*p & 0xC0) != 0x80; /* count code points, not bytes */
    }
    return (double)chars * size * 0.62;
}

size_t plot_nice_ticks(double lo, double hi, size_t max, double *ticks) {
    if (!(hi > lo) || max == 0 || !isfinite(lo) || !isfinite(hi)) {
        return 0;
    }
    /* the smallest step of 1, 2 or 5 times a power of ten that gives at most max ticks */
    double step = pow(10, floor(log10((hi - lo) / (double)max)));
    static const double nice[] = {1, 2, 5};
    for (int i = 0;; i = (i + 1) % 3) {
        double s = nice[i] * step;
        if (floor(hi / s + 1e-9) - ceil(lo / s - 1e-9) + 1 <= (double)max) {
            step = s;
            break;
        }
        if (i == 2) {
            step *= 10;
        }
    }
    size_t n = 0;
    /* ticks at integer multiples of step, so that 0 is one of them when it is inside */
    for (double k = ceil(lo / step - 1e-9); k <= floor(hi / step + 1e-9) && n < max; k++) {
        ticks[n++] = k == 0 ? 0.0 : k * step;
    }
    return n;
}

/* Tick labels: 3 significant digits are enough for a colour bar. */
static void tick_text(double v, char out[32]) {
    plot_format_number(fabs(v) < 1e-12 ? 0 : v, 3, out, 32);
}

double plot_colorbar_width(plot_scale scale, double lo, double hi, const char *label) {
    (void)scale;
    double ticks[8];
    size_t n = plot_nice_ticks(lo, hi, 7, ticks);
    double widest = 0;
    for (size_t i = 0; i < n; i++) {
        char num[32];
        tick_text(ticks[i], num);
        widest = fmax(widest, plot_text_width(num, PLOT_FONT_TICK));
    }
    return 14 + 6 + widest + (label != NULL ? 8 + PLOT_FONT_AXIS + 4 : 0);
}

void plot_colorbar(plot_svg *s, plot_scale scale, double lo, double hi, double x, double y,
                   double w, double h, const char *label) {
    enum { BANDS = 64 };
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "shape-rendering", "crispEdges");
    for (int i = 0; i < BANDS; i++) {
        /* band i from the top: the value at its middle */
        double v = hi - (hi - lo) * (i + 0.5) / BANDS;
        char c[8];
        plot_scale_color(scale, lo, hi, v, c);
        /* a sliver of overlap hides seams between bands */
        plot_svg_rect(s, x, y + h * i / BANDS, w, h / BANDS + 0.5, c);
    }
    plot_svg_end(s, "g");
    plot_svg_begin(s, "rect");
    plot_svg_attr_num(s, "x", x);
    plot_svg_attr_num(s, "y", y);
    plot_svg_attr_num(s, "width", w);
    plot_svg_attr_num(s, "height", h);
    plot_svg_attr(s, "fill", "none");
    plot_svg_attr(s, "stroke", PLOT_MUTED_COLOR);
    plot_svg_attr(s, "stroke-width", "0.5");
    plot_svg_end(s, "rect");
    double ticks[8];
    size_t n = plot_nice_ticks(lo, hi, 7, ticks);
    double widest = 0;
    for (size_t i = 0; i < n; i++) {
        double ty = y + h * (hi - ticks[i]) / (hi - lo);
        char num[32];
        tick_text(ticks[i], num);
        plot_svg_line(s, x + w, ty, x + w + 4, ty, PLOT_MUTED_COLOR, 1);
        plot_svg_label(s, x + w + 6, ty + PLOT_FONT_TICK * 0.35, PLOT_FONT_TICK, "start", 0, NULL,
                       num);
        widest = fmax(widest, plot_text_width(num, PLOT_FONT_TICK));
    }
    if (label != NULL) {
        double lx = x + w + 6 + widest + 8 + PLOT_FONT_AXIS * 0.5;
        plot_svg_label(s, lx, y + h / 2, PLOT_FONT_AXIS, "middle", 90, NULL, label);
    }
}
