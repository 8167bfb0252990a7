/*
 * The progress line of a sweep (cli_int.h), shared by `chesslens run` and `chesslens wait`.
 */
#include <inttypes.h>

#include "cli/cli_int.h"

void cli_progress_draw(const cli_progress *p, double tasks_per_s, bool final) {
    uint64_t all = p->pending + p->running + p->done + p->dead;
    uint64_t left = p->pending + p->running;
    char eta[32] = "-";
    if (tasks_per_s > 0 && left > 0) {
        long e = (long)((double)left / tasks_per_s + 0.5);
        snprintf(eta, sizeof eta, "%ld:%02ld", e / 60, e % 60);
    }
    char bar[25];
    size_t fill = all > 0 ? (size_t)(24 * (p->done + p->dead) / all) : 0;
    for (size_t i = 0; i < 24; i++) {
        bar[i] = i < fill ? '#' : '.';
    }
    bar[24] = '\0';
    fprintf(stderr,
            "\r[%s] %" PRIu64 "/%" PRIu64 " tasks, %" PRIu64 " running, %" PRIu64
            " failed, %" PRIu64 " rows, %.1f tasks/s, ETA %s   %s",
            bar, p->done, all, p->running, p->dead, p->rows, tasks_per_s, eta, final ? "\n" : "");
    fflush(stderr);
}
