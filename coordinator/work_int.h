/*
 * work_int.h: the storage of a coordinator_work, shared by the two places that build one: the
 * planner's loader (coordinator_work_load, from the store) and the work body's decoder
 * (coordinator_work_decode, from a TASK message). Every block a work points to is owned by its
 * coordinator_work_mem and freed together by coordinator_work_destroy, so a work frees the same
 * way whichever built it. Private to coordinator/.
 */
#ifndef CHESSLENS_COORDINATOR_WORK_INT_H
#define CHESSLENS_COORDINATOR_WORK_INT_H

#include <stddef.h>

#include "coordinator/coordinator.h"

/* Every block of a work (or of another value built the same way), freed together. */
struct coordinator_work_mem {
    void **blocks; /* [cap], the first n in use */
    size_t n, cap;
};

/* Frees every block; m stays usable (its block list is kept for reuse). */
void work_mem_free_all(struct coordinator_work_mem *m);
/* work_mem_free_all and the block list too; m is empty afterwards. */
void work_mem_release(struct coordinator_work_mem *m);
/* A zeroed block of n * size bytes (at least one byte) owned by m, or NULL when out of memory
 * or when n * size overflows. */
void *work_mem_alloc(struct coordinator_work_mem *m, size_t n, size_t size);
/* A copy of s owned by m, or NULL when out of memory. */
char *work_mem_strdup(struct coordinator_work_mem *m, const char *s);
/* A NUL-terminated copy of s[0..n) owned by m, or NULL when out of memory. */
char *work_mem_strndup(struct coordinator_work_mem *m, const char *s, size_t n);

/* A new, empty work with its storage (NULL when out of memory); coordinator_work_destroy. */
coordinator_work *work_new(void);

#endif
