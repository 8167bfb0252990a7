/*
 * svg.c: the SVG writer of plot.h. A document is a growable buffer plus a stack of the open
 * elements, so that every end names the element it closes and the output is balanced by
 * construction. All text passes through one escaping routine that writes only characters XML
 * 1.0 allows (invalid UTF-8, the control characters XML forbids and U+FFFE/U+FFFF become
 * U+FFFD), so a label taken from a database cannot break the document or inject markup.
 * Numbers are formatted from the digits of "%.*e", never from a locale's decimal point.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "plot/plot.h"

struct plot_svg {
    char *p; /* the document so far, NUL-terminated */
    size_t n, cap;
    int error; /* the first error, 0 while none */
    char error_msg[COMMON_ERR_LEN];
    const char *stack[PLOT_SVG_MAX_DEPTH]; /* names of the open elements, root first */
    size_t depth;
    bool tag_open; /* the innermost element's start tag still takes attributes */
};

static void set_error(plot_svg *s, int code, const char *msg, const char *name) {
    if (s->error == 0) {
        s->error = code;
        common_fail(s->error_msg, code, "svg: %s%s%s", msg, name != NULL ? " " : "",
                    name != NULL ? name : "");
    }
}

static void put(plot_svg *s, const char *data, size_t len) {
    if (s->error != 0) {
        return;
    }
    if (s->n + len + 1 > s->cap) {
        size_t cap = s->cap > 0 ? s->cap : 4096;
        while (cap < s->n + len + 1) {
            cap *= 2;
        }
        char *p = realloc(s->p, cap);
        if (p == NULL) {
            set_error(s, COMMON_ERR_NOMEM, "out of memory", NULL);
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->n, data, len);
    s->n += len;
    s->p[s->n] = '\0';
}

static void puts_(plot_svg *s, const char *text) {
    put(s, text, strlen(text));
}

/* Length of the valid UTF-8 sequence at p[0..n) (2..4) holding a character XML allows, or 0. */
static size_t utf8_xml_char(const unsigned char *p, size_t n) {
    uint32_t cp = 0;
    size_t len = common_utf8_sequence(p, n, &cp);
    return cp == 0xFFFE || cp == 0xFFFF ? 0 : len;
}

/* Writes text escaped for character data or (in_attr) a double-quoted attribute value. */
static void put_escaped(plot_svg *s, const char *text, bool in_attr) {
    const unsigned char *p = (const unsigned char *)text;
    size_t n = strlen(text);
    size_t run = 0; /* bytes of p copied as they are, not yet written */
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        const char *rep = NULL;
        size_t len = 1;
        if (c == '&') {
            rep = "&amp;";
        } else if (c == '<') {
            rep = "&lt;";
        } else if (c == '>') {
            rep = "&gt;";
        } else if (c == '"') {
            rep = "&quot;";
        } else if (c == '\'') {
            rep = "&#39;";
        } else if (c == '\t' || c == '\n' || c == '\r') {
            /* an attribute value's white space would be normalised to spaces by the parser */
            rep = !in_attr ? NULL : c == '\t' ? "&#9;" : c == '\n' ? "&#10;" : "&#13;";
            if (!in_attr && c == '\r') {
                rep = "&#13;";
            }
        } else if (c < 0x20) {
            rep = "\xEF\xBF\xBD"; /* not an XML character */
        } else if (c >= 0x80) {
            len = utf8_xml_char(p + i, n - i);
            if (len == 0) {
                rep = "\xEF\xBF\xBD";
                len = 1;
            }
        }
        if (rep != NULL) {
            put(s, text + i - run, run);
            run = 0;
            puts_(s, rep);
        } else {
            run += len;
        }
        i += len;
    }
    put(s, text + n - run, run);
}

/* Ends the innermost start tag, before content. */
static void close_start_tag(plot_svg *s) {
    if (s->tag_open) {
        puts_(s, ">");
        s->tag_open = false;
    }
}

void plot_svg_begin(plot_svg *s, const char *name) {
    if (s->error != 0) {
        return;
    }
    if (s->depth == PLOT_SVG_MAX_DEPTH) {
        set_error(s, COMMON_ERR_INVALID, "elements nested too deep at", name);
        return;
    }
    close_start_tag(s);
    puts_(s, "<");
    puts_(s, name);
    s->stack[s->depth++] = name;
    s->tag_open = true;
}

void plot_svg_attr(plot_svg *s, const char *name, const char *value) {
    if (s->error != 0) {
        return;
    }
    if (!s->tag_open) {
        set_error(s, COMMON_ERR_INVALID, "attribute after content:", name);
        return;
    }
    puts_(s, " ");
    puts_(s, name);
    puts_(s, "=\"");
    put_escaped(s, value, true);
    puts_(s, "\"");
}

void plot_svg_attr_num(plot_svg *s, const char *name, double value) {
    char num[32];
    plot_svg_attr(s, name, plot_format_number(value, 6, num, sizeof num));
}

void plot_svg_text(plot_svg *s, const char *text) {
    if (s->error != 0) {
        return;
    }
    if (s->depth == 0) {
        set_error(s, COMMON_ERR_INVALID, "text outside the root", NULL);
        return;
    }
    close_start_tag(s);
    put_escaped(s, text, false);
}

void plot_svg_end(plot_svg *s, const char *name) {
    if (s->error != 0) {
        return;
    }
    if (s->depth == 0 || strcmp(s->stack[s->depth - 1], name) != 0) {
        set_error(s, COMMON_ERR_INVALID, "end of an element that is not open:", name);
        return;
    }
    if (s->tag_open) {
        puts_(s, "/>");
        s->tag_open = false;
    } else {
        puts_(s, "</");
        puts_(s, name);
        puts_(s, ">");
    }
    s->depth--;
}

int plot_svg_new(plot_svg **out, double width, double height, bool standalone, char *err) {
    if (!(width > 0 && height > 0 && width < 1e7 && height < 1e7)) {
        return common_fail(err, COMMON_ERR_INVALID, "svg: bad size %g x %g", width, height);
    }
    plot_svg *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "svg: out of memory");
    }
    if (standalone) {
        puts_(s, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    }
    char num[2][32], box[80];
    plot_format_number(width, 6, num[0], sizeof num[0]);
    plot_format_number(height, 6, num[1], sizeof num[1]);
    snprintf(box, sizeof box, "0 0 %s %s", num[0], num[1]);
    plot_svg_begin(s, "svg");
    plot_svg_attr(s, "xmlns", "http://www.w3.org/2000/svg");
    plot_svg_attr(s, "width", num[0]);
    plot_svg_attr(s, "height", num[1]);
    plot_svg_attr(s, "viewBox", box);
    plot_svg_attr(s, "font-family", "DejaVu Sans, Verdana, Arial, sans-serif");
    if (s->error != 0) {
        int rc = common_fail(err, s->error, "%s", s->error_msg);
        plot_svg_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void plot_svg_destroy(plot_svg **s) {
    if (s == NULL || *s == NULL) {
        return;
    }
    free((*s)->p);
    free(*s);
    *s = NULL;
}

int plot_svg_finish(plot_svg **s, char **out, size_t *len, char *err) {
    plot_svg *w = *s;
    if (w->error == 0 && w->depth == 0) {
        set_error(w, COMMON_ERR_INVALID, "the root was closed before plot_svg_finish", NULL);
    } else if (w->error == 0 && w->depth != 1) {
        set_error(w, COMMON_ERR_INVALID, "element left open:", w->stack[w->depth - 1]);
    }
    plot_svg_end(w, "svg");
    puts_(w, "\n");
    if (w->error != 0) {
        int rc = common_fail(err, w->error, "%s", w->error_msg);
        plot_svg_destroy(s);
        return rc;
    }
    *out = w->p;
    *len = w->n;
    w->p = NULL;
    plot_svg_destroy(s);
    return 0;
}

/* ---- shorthands ---- */

void plot_svg_rect(plot_svg *s, double x, double y, double w, double h, const char *fill) {
    plot_svg_begin(s, "rect");
    plot_svg_attr_num(s, "x", x);
    plot_svg_attr_num(s, "y", y);
    plot_svg_attr_num(s, "width", w);
    plot_svg_attr_num(s, "height", h);
    plot_svg_attr(s, "fill", fill);
    plot_svg_end(s, "rect");
}

void plot_svg_line(plot_svg *s, double x1, double y1, double x2, double y2, const char *stroke,
                   double stroke_width) {
    plot_svg_begin(s, "line");
    plot_svg_attr_num(s, "x1", x1);
    plot_svg_attr_num(s, "y1", y1);
    plot_svg_attr_num(s, "x2", x2);
    plot_svg_attr_num(s, "y2", y2);
    plot_svg_attr(s, "stroke", stroke);
    plot_svg_attr_num(s, "stroke-width", stroke_width);
    plot_svg_end(s, "line");
}

void plot_svg_label(plot_svg *s, double x, double y, double size, const char *anchor, double rotate,
                    const char *style, const char *text) {
    plot_svg_begin(s, "text");
    plot_svg_attr_num(s, "x", x);
    plot_svg_attr_num(s, "y", y);
    plot_svg_attr_num(s, "font-size", size);
    if (anchor != NULL && strcmp(anchor, "start") != 0) {
        plot_svg_attr(s, "text-anchor", anchor);
    }
    if (rotate != 0) {
        char num[3][32], tr[128];
        snprintf(tr, sizeof tr, "rotate(%s %s %s)", plot_format_number(rotate, 6, num[0], 32),
                 plot_format_number(x, 6, num[1], 32), plot_format_number(y, 6, num[2], 32));
        plot_svg_attr(s, "transform", tr);
    }
    if (style != NULL) {
        plot_svg_attr(s, "style", style);
    }
    plot_svg_text(s, text);
    plot_svg_end(s, "text");
}

/* ---- numbers ---- */

char *plot_format_number(double v, int sig, char *out, size_t cap) {
    if (cap == 0) {
        return out;
    }
    if (isnan(v)) {
        snprintf(out, cap, "nan");
        return out;
    }
    if (isinf(v)) {
        snprintf(out, cap, v < 0 ? "-inf" : "inf");
        return out;
    }
    if (v == 0) {
        snprintf(out, cap, "0");
        return out;
    }
    sig = sig < 1 ? 1 : sig > 17 ? 17 : sig;
    /* "-d.ddde+XX": the digits and exponent are ASCII in every locale; only the decimal point
     * may differ, and it is skipped */
    char e[64];
    snprintf(e, sizeof e, "%.*e", sig - 1, v);
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    bool negative = *p == '-';
    p += negative;
    for (; *p != '\0' && *p != 'e' && *p != 'E'; p++) {
        if (*p >= '0' && *p <= '9' && nd < sizeof digits - 1) {
            digits[nd++] = *p;
        }
    }
    int exp10 = 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        bool eneg = *p == '-';
        p += *p == '-' || *p == '+';
        for (; *p >= '0' && *p <= '9'; p++) {
            exp10 = exp10 * 10 + (*p - '0');
        }
        exp10 = eneg ? -exp10 : exp10;
    }
    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
    }
    char buf[64];
    size_t k = 0;
    if (negative) {
        buf[k++] = '-';
    }
    if (exp10 >= -5 && exp10 < 15) {
        if (exp10 < 0) {
            buf[k++] = '0';
            buf[k++] = '.';
            for (int z = 0; z < -exp10 - 1; z++) {
                buf[k++] = '0';
            }
            for (size_t i = 0; i < nd; i++) {
                buf[k++] = digits[i];
            }
        } else {
            for (int i = 0; i <= exp10; i++) {
                buf[k++] = (size_t)i < nd ? digits[i] : '0';
            }
            if ((size_t)exp10 + 1 < nd) {
                buf[k++] = '.';
                for (size_t i = (size_t)exp10 + 1; i < nd; i++) {
                    buf[k++] = digits[i];
                }
            }
        }
        buf[k] = '\0';
    } else {
        buf[k++] = digits[0];
        if (nd > 1) {
            buf[k++] = '.';
            for (size_t i = 1; i < nd; i++) {
                buf[k++] = digits[i];
            }
        }
        snprintf(buf + k, sizeof buf - k, "e%c%02d", exp10 < 0 ? '-' : '+',
                 exp10 < 0 ? -exp10 : exp10);
    }
    snprintf(out, cap, "%s", buf);
    return out;
}
