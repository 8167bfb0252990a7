/*
 * work_mem: the storage of a coordinator_work (work_int.h). A work is many small arrays (token
 * texts, pointer tables, pairs) that live exactly as long as the work, so they are kept as a
 * list of blocks and freed together instead of one by one: a builder that fails half-way only
 * destroys the work. The planner's loader and the wire decoder both allocate through here, so
 * coordinator_work_destroy is right for either.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/work_int.h"

void work_mem_free_all(struct coordinator_work_mem *m) {
    for (size_t i = 0; i < m->n; i++) {
        free(m->blocks[i]);
    }
    m->n = 0;
}

void work_mem_release(struct coordinator_work_mem *m) {
    work_mem_free_all(m);
    free(m->blocks);
    *m = (struct coordinator_work_mem){0};
}

void *work_mem_alloc(struct coordinator_work_mem *m, size_t n, size_t size) {
    if (m->n == m->cap) {
        size_t cap = m->cap > 0 ? 2 * m->cap : 64;
        void **b = realloc(m->blocks, cap * sizeof *b);
        if (b == NULL) {
            return NULL;
        }
        m->blocks = b;
        m->cap = cap;
    }
    /* calloc refuses a product that overflows */
    void *p = calloc(n > 0 ? n : 1, size > 0 ? size : 1);
    if (p != NULL) {
        m->blocks[m->n++] = p;
    }
    return p;
}

char *work_mem_strndup(struct coordinator_work_mem *m, const char *s, size_t n) {
    if (n == SIZE_MAX) {
        return NULL;
    }
    char *p = work_mem_alloc(m, n + 1, 1);
    if (p != NULL && n > 0) {
        memcpy(p, s, n);
    }
    return p;
}

char *work_mem_strdup(struct coordinator_work_mem *m, const char *s) {
    return work_mem_strndup(m, s, strlen(s));
}

coordinator_work *work_new(void) {
    coordinator_work *w = calloc(1, sizeof *w);
    if (w != NULL && (w->mem = calloc(1, sizeof *w->mem)) == NULL) {
        free(w);
        w = NULL;
    }
    return w;
}

void coordinator_work_destroy(coordinator_work **w) {
    if (w == NULL || *w == NULL) {
        return;
    }
    if ((*w)->mem != NULL) {
        work_mem_release((*w)->mem);
        free((*w)->mem);
    }
    free(*w);
    *w = NULL;
}
