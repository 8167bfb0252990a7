/*
 * powerloss_vfs: the power-loss simulation of powerloss_vfs.h. A file opened by name gets a
 * track: its bytes at the last xSync ("image") and the operations since ("pending"). Files
 * SQLite opens without a name (temporary ones) are passed through untracked: they do not
 * outlive a connection.
 */
#include "powerloss_vfs.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

typedef struct pl_op {
    bool truncate; /* else a write of data[len] at off */
    sqlite3_int64 off;
    size_t len;
    unsigned char *data;
} pl_op;

typedef struct pl_track {
    char *path;
    unsigned char *image; /* [image_len]: what a sync made durable */
    size_t image_len;
    pl_op *pending;
    size_t n_pending, cap_pending;
} pl_track;

/* The file object SQLite allocates (szOsFile bytes): ours, then the default VFS's. */
typedef struct pl_file {
    sqlite3_file base;
    pl_track *track; /* NULL: untracked */
    sqlite3_file *real;
} pl_file;

static sqlite3_vfs *os_vfs;
static sqlite3_vfs pl_vfs;
static pl_track **tracks;
static size_t n_tracks, cap_tracks;
static bool power_out;
static uint64_t n_syncs;

static void *must(void *p) {
    if (p == NULL) {
        fprintf(stderr, "powerloss_vfs: out of memory\n");
        abort();
    }
    return p;
}

/* ---- tracks ---- */

/* Bytes [off, off+len) of buf (of *n bytes, cap *cap) set to data, growing it with zeros. */
static void put(unsigned char **buf, size_t *n, sqlite3_int64 off, const unsigned char *data,
                size_t len) {
    size_t end = (size_t)off + len;
    if (end > *n) {
        *buf = must(realloc(*buf, end > 0 ? end : 1));
        memset(*buf + *n, 0, end - *n);
        *n = end;
    }
    if (len > 0) {
        memcpy(*buf + off, data, len);
    }
}

static void apply(unsigned char **buf, size_t *n, const pl_op *op) {
    if (op->truncate) {
        if ((size_t)op->off < *n) {
            *n = (size_t)op->off;
        } else {
            put(buf, n, op->off, NULL, 0);
        }
        return;
    }
    put(buf, n, op->off, op->data, op->len);
}

static void forget_pending(pl_track *t) {
    for (size_t i = 0; i < t->n_pending; i++) {
        free(t->pending[i].data);
    }
    t->n_pending = 0;
}

static void track_free(pl_track *t) {
    forget_pending(t);
    free(t->pending);
    free(t->image);
    free(t->path);
    free(t);
}

/* The track of path, made on first sight with the file's bytes as they are (what an earlier
 * connection left is on the disk: a test opens its files fresh or after a restore). */
static pl_track *track_of(const char *path) {
    for (size_t i = 0; i < n_tracks; i++) {
        if (strcmp(tracks[i]->path, path) == 0) {
            return tracks[i];
        }
    }
    pl_track *t = must(calloc(1, sizeof *t));
    t->path = must(strdup(path));
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        unsigned char chunk[65536];
        ssize_t got;
        while ((got = read(fd, chunk, sizeof chunk)) > 0) {
            put(&t->image, &t->image_len, (sqlite3_int64)t->image_len, chunk, (size_t)got);
        }
        close(fd);
    }
    if (n_tracks == cap_tracks) {
        cap_tracks = cap_tracks > 0 ? 2 * cap_tracks : 8;
        tracks = must(realloc(tracks, cap_tracks * sizeof *tracks));
    }
    tracks[n_tracks++] = t;
    return t;
}

static void add_pending(pl_track *t, pl_op op) {
    if (t->n_pending == t->cap_pending) {
        t->cap_pending = t->cap_pending > 0 ? 2 * t->cap_pending : 64;
        t->pending = must(realloc(t->pending, t->cap_pending * sizeof *t->pending));
    }
    t->pending[t->n_pending++] = op;
}

/* ---- the file methods: the default VFS's, with writes recorded ---- */

static int pl_close(sqlite3_file *f) {
    pl_file *p = (pl_file *)f;
    int rc = p->real->pMethods->xClose(p->real);
    free(p->real);
    return rc;
}

static int pl_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xRead(p->real, buf, n, off);
}

static int pl_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
    pl_file *p = (pl_file *)f;
    if (power_out) {
        return SQLITE_OK;
    }
    int rc = p->real->pMethods->xWrite(p->real, buf, n, off);
    if (rc == SQLITE_OK && p->track != NULL) {
        unsigned char *copy = must(malloc(n > 0 ? (size_t)n : 1));
        memcpy(copy, buf, (size_t)n);
        add_pending(p->track, (pl_op){.off = off, .len = (size_t)n, .data = copy});
    }
    return rc;
}

static int pl_truncate(sqlite3_file *f, sqlite3_int64 size) {
    pl_file *p = (pl_file *)f;
    if (power_out) {
        return SQLITE_OK;
    }
    int rc = p->real->pMethods->xTruncate(p->real, size);
    if (rc == SQLITE_OK && p->track != NULL) {
        add_pending(p->track, (pl_op){.truncate = true, .off = size});
    }
    return rc;
}

static int pl_sync(sqlite3_file *f, int flags) {
    pl_file *p = (pl_file *)f;
    if (power_out) {
        return SQLITE_OK;
    }
    int rc = p->real->pMethods->xSync(p->real, flags);
    if (rc == SQLITE_OK && p->track != NULL) {
        pl_track *t = p->track;
        for (size_t i = 0; i < t->n_pending; i++) {
            apply(&t->image, &t->image_len, &t->pending[i]);
        }
        forget_pending(t);
        n_syncs++;
    }
    return rc;
}

static int pl_file_size(sqlite3_file *f, sqlite3_int64 *size) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xFileSize(p->real, size);
}

static int pl_lock(sqlite3_file *f, int level) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xLock(p->real, level);
}

static int pl_unlock(sqlite3_file *f, int level) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xUnlock(p->real, level);
}

static int pl_check_reserved(sqlite3_file *f, int *out) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xCheckReservedLock(p->real, out);
}

static int pl_file_control(sqlite3_file *f, int op, void *arg) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xFileControl(p->real, op, arg);
}

static int pl_sector_size(sqlite3_file *f) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xSectorSize(p->real);
}

static int pl_device_characteristics(sqlite3_file *f) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xDeviceCharacteristics(p->real);
}

static int pl_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xShmMap(p->real, region, size, extend, out);
}

static int pl_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xShmLock(p->real, offset, n, flags);
}

static void pl_shm_barrier(sqlite3_file *f) {
    pl_file *p = (pl_file *)f;
    p->real->pMethods->xShmBarrier(p->real);
}

static int pl_shm_unmap(sqlite3_file *f, int delete_flag) {
    pl_file *p = (pl_file *)f;
    return p->real->pMethods->xShmUnmap(p->real, delete_flag);
}

/* Version 2: shared memory (WAL needs it), no memory-mapped reads (every read goes through
 * xRead, so nothing bypasses the simulation). */
static const sqlite3_io_methods pl_methods = {
    .iVersion = 2,
    .xClose = pl_close,
    .xRead = pl_read,
    .xWrite = pl_write,
    .xTruncate = pl_truncate,
    .xSync = pl_sync,
    .xFileSize = pl_file_size,
    .xLock = pl_lock,
    .xUnlock = pl_unlock,
    .xCheckReservedLock = pl_check_reserved,
    .xFileControl = pl_file_control,
    .xSectorSize = pl_sector_size,
    .xDeviceCharacteristics = pl_device_characteristics,
    .xShmMap = pl_shm_map,
    .xShmLock = pl_shm_lock,
    .xShmBarrier = pl_shm_barrier,
    .xShmUnmap = pl_shm_unmap,
};

/* ---- the VFS ---- */

static int pl_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
    (void)vfs;
    pl_file *p = (pl_file *)f;
    p->base.pMethods = NULL;
    p->real = must(calloc(1, (size_t)os_vfs->szOsFile));
    int rc = os_vfs->xOpen(os_vfs, name, p->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        if (p->real->pMethods != NULL) {
            p->real->pMethods->xClose(p->real);
        }
        free(p->real);
        p->real = NULL;
        return rc;
    }
    p->track = name != NULL ? track_of(name) : NULL;
    p->base.pMethods = &pl_methods;
    return SQLITE_OK;
}

static int pl_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
    (void)vfs;
    if (power_out) {
        return SQLITE_OK;
    }
    int rc = os_vfs->xDelete(os_vfs, name, sync_dir);
    for (size_t i = 0; rc == SQLITE_OK && i < n_tracks; i++) {
        if (strcmp(tracks[i]->path, name) == 0) {
            track_free(tracks[i]);
            tracks[i] = tracks[--n_tracks];
            break;
        }
    }
    return rc;
}

static int pl_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
    (void)vfs;
    return os_vfs->xAccess(os_vfs, name, flags, out);
}

static int pl_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
    (void)vfs;
    return os_vfs->xFullPathname(os_vfs, name, n, out);
}

static int pl_randomness(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    return os_vfs->xRandomness(os_vfs, n, out);
}

static int pl_sleep(sqlite3_vfs *vfs, int us) {
    (void)vfs;
    return os_vfs->xSleep(os_vfs, us);
}

static int pl_current_time(sqlite3_vfs *vfs, double *out) {
    (void)vfs;
    return os_vfs->xCurrentTime(os_vfs, out);
}

static int pl_last_error(sqlite3_vfs *vfs, int n, char *out) {
    (void)vfs;
    return os_vfs->xGetLastError(os_vfs, n, out);
}

void powerloss_install(void) {
    if (os_vfs != NULL) {
        return;
    }
    os_vfs = sqlite3_vfs_find(NULL);
    if (os_vfs == NULL) {
        fprintf(stderr, "powerloss_vfs: no default VFS\n");
        abort();
    }
    pl_vfs = (sqlite3_vfs){
        .iVersion = 1,
        .szOsFile = (int)sizeof(pl_file),
        .mxPathname = os_vfs->mxPathname,
        .zName = "powerloss",
        .xOpen = pl_open,
        .xDelete = pl_delete,
        .xAccess = pl_access,
        .xFullPathname = pl_full_pathname,
        .xRandomness = pl_randomness,
        .xSleep = pl_sleep,
        .xCurrentTime = pl_current_time,
        .xGetLastError = pl_last_error,
    };
    /* the OS VFS's dlopen entries are left out (iVersion 1 has them; NULL disables
     * extension loading through this VFS, which no test needs) */
    if (sqlite3_vfs_register(&pl_vfs, 1) != SQLITE_OK) {
        fprintf(stderr, "powerloss_vfs: cannot register\n");
        abort();
    }
}

void powerloss_cut(void) {
    power_out = true;
}

/* xorshift64*: which unsynced operations a restore keeps */
static double next_unit(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

void powerloss_restore(uint64_t seed, double keep) {
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n_tracks; i++) {
        pl_track *t = tracks[i];
        for (size_t k = 0; k < t->n_pending; k++) {
            if (next_unit(&rng) < keep) {
                apply(&t->image, &t->image_len, &t->pending[k]);
            }
        }
        int fd = open(t->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, t->image, t->image_len) != (ssize_t)t->image_len) {
            fprintf(stderr, "powerloss_vfs: cannot rewrite %s\n", t->path);
            abort();
        }
        close(fd);
        char shm[4096];
        snprintf(shm, sizeof shm, "%s-shm", t->path);
        unlink(shm);
        track_free(t);
    }
    n_tracks = 0;
    power_out = false;
}

uint64_t powerloss_syncs(void) {
    return n_syncs;
}
