/*
 * plot_int.h: what the heatmap and the board share inside plot/ (private to it): the frame of
 * a figure, the width a label takes, the ticks of a colour scale and the colour bar drawn from
 * them.
 */
#ifndef CHESSLENS_PLOT_INT_H
#define CHESSLENS_PLOT_INT_H

#include "plot/plot.h"

/* Font sizes (px) of every figure. */
#define PLOT_FONT_TITLE 16.0
#define PLOT_FONT_SUBTITLE 12.0
#define PLOT_FONT_PANEL 13.0
#define PLOT_FONT_TICK 10.0
#define PLOT_FONT_AXIS 11.0
#define PLOT_TEXT_COLOR "#222222"
#define PLOT_MUTED_COLOR "#555555"

/* The margin (px) around every figure. */
#define PLOT_MARGIN 16.0

/* Opens a figure of at least w x h px (widened to fit its title and subtitle), class cls,
 * on a white background with its title (bold) and subtitle (NULL: none) at the top left:
 * what the heatmap and the board begin with. *out is set on success. */
int plot_figure_open(plot_svg **out, double w, double h, bool standalone, const char *cls,
                     const char *title, const char *subtitle, char *err);

/* The width (px) text of the given font size takes, estimated per character (no font metrics
 * are at hand; DejaVu Sans averages about 0.62 em, which errs on the wide side). */
double plot_text_width(const char *text, double size);

/* At most max ticks at round values (1, 2 or 5 times a power of ten apart) inside [lo, hi],
 * into ticks[max]; returns the count. 0 is among them when lo <= 0 <= hi. */
size_t plot_nice_ticks(double lo, double hi, size_t max, double *ticks);

/* The width (px) plot_colorbar takes, its tick labels and its label included. */
double plot_colorbar_width(plot_scale scale, double lo, double hi, const char *label);

/* Draws a vertical colour bar of w x h px at (x, y): hi at the top, lo at the bottom, drawn as
 * bands of colour (no gradient, so that a page with several figures needs no ids), ticks with
 * labels on its right and label (rotated) beside them. */
void plot_colorbar(plot_svg *s, plot_scale scale, double lo, double hi, double x, double y,
                   double w, double h, const char *label);

#endif
