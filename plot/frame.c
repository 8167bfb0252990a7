/*
 * frame: what every figure begins with (plot_int.h): its size, widened to fit the title, a
 * white background and the title and subtitle at the top left.
 */
#include <math.h>

#include "plot/plot_int.h"

int plot_figure_open(plot_svg **out, double w, double h, bool standalone, const char *cls,
                     const char *title, const char *subtitle, char *err) {
    w = fmax(w, 2 * PLOT_MARGIN + plot_text_width(title, PLOT_FONT_TITLE));
    if (subtitle != NULL) {
        w = fmax(w, 2 * PLOT_MARGIN + plot_text_width(subtitle, PLOT_FONT_SUBTITLE));
    }
    plot_svg *s = NULL;
    int rc = plot_svg_new(&s, ceil(w), ceil(h), standalone, err);
    if (rc != 0) {
        return rc;
    }
    plot_svg_attr(s, "class", cls);
    plot_svg_rect(s, 0, 0, ceil(w), ceil(h), "#ffffff");
    plot_svg_begin(s, "g");
    plot_svg_attr(s, "fill", PLOT_TEXT_COLOR);
    plot_svg_label(s, PLOT_MARGIN, PLOT_MARGIN + PLOT_FONT_TITLE - 2, PLOT_FONT_TITLE, "start", 0,
                   "font-weight:bold", title);
    if (subtitle != NULL) {
        plot_svg_label(s, PLOT_MARGIN, PLOT_MARGIN + PLOT_FONT_TITLE + PLOT_FONT_SUBTITLE + 4,
                       PLOT_FONT_SUBTITLE, "start", 0, NULL, subtitle);
    }
    plot_svg_end(s, "g");
    *out = s;
    return 0;
}
