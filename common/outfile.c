/*
 * Whole-or-nothing output files (common_outfile, see common.h) and the same-file check that
 * keeps a command from writing over its own input. A result is written to "<path>.tmp-XXXXXX"
 * in the target's directory, then fsync'd and renamed over the target: rename is atomic within
 * a file system, so a reader sees the old file or the new one, never a prefix, and a failure
 * (ENOSPC, EFBIG, EIO) leaves no half-written file behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"

struct common_outfile {
    FILE *f;
    char *path; /* the target */
    char *tmp;  /* the temporary file beside it */
};

/* The directory part of path ("." when it has none), in a new string. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

int common_outfile_new(common_outfile **out, const char *path, char *err) {
    common_outfile *o = calloc(1, sizeof *o);
    size_t n = strlen(path);
    if (o == NULL || (o->path = strdup(path)) == NULL || (o->tmp = malloc(n + 12)) == NULL) {
        common_outfile_destroy(&o);
        return common_fail(err, COMMON_ERR_NOMEM, "write %s: out of memory", path);
    }
    memcpy(o->tmp, path, n);
    memcpy(o->tmp + n, ".tmp-XXXXXX", 12);
    int fd = mkstemp(o->tmp);
    if (fd < 0) {
        int e = errno;
        free(o->tmp);
        o->tmp = NULL;
        common_outfile_destroy(&o);
        return common_fail(err, COMMON_ERR_IO, "create %s: %s", path, strerror(e));
    }
    /* mkstemp creates 0600; results are ordinary files, readable as the umask allows */
    mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, 0666 & ~mask);
    o->f = fdopen(fd, "wb");
    if (o->f == NULL) {
        int e = errno;
        close(fd);
        common_outfile_destroy(&o);
        return common_fail(err, COMMON_ERR_IO, "create %s: %s", path, strerror(e));
    }
    *out = o;
    return COMMON_OK;
}

FILE *common_outfile_stream(common_outfile *o) {
    return o->f;
}

int common_outfile_write(common_outfile *o, const void *data, size_t len, char *err) {
    if (len > 0 && fwrite(data, 1, len, o->f) != len) {
        return common_fail(err, COMMON_ERR_IO, "write %s: %s", o->path, strerror(errno));
    }
    return COMMON_OK;
}

int common_fsync_parent(const char *path, char *err) {
    char *dir = dir_of(path);
    if (dir == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "fsync %s: out of memory", path);
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    int rc = COMMON_OK;
    if (fd < 0) {
        rc = common_fail(err, COMMON_ERR_IO, "open directory %s: %s", dir, strerror(errno));
    } else if (fsync(fd) != 0 && errno != EINVAL) { /* some file systems refuse a dir fsync */
        rc = common_fail(err, COMMON_ERR_IO, "fsync directory %s: %s", dir, strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    free(dir);
    return rc;
}

int common_outfile_commit(common_outfile **op, char *err) {
    common_outfile *o = *op;
    int rc = COMMON_OK;
    /* every step can report the full disk: buffered bytes, the data blocks, the close */
    if (fflush(o->f) != 0 || ferror(o->f) || fsync(fileno(o->f)) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "write %s: %s", o->path, strerror(errno));
    }
    if (fclose(o->f) != 0 && rc == COMMON_OK) {
        rc = common_fail(err, COMMON_ERR_IO, "write %s: %s", o->path, strerror(errno));
    }
    o->f = NULL;
    if (rc == COMMON_OK && rename(o->tmp, o->path) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "rename to %s: %s", o->path, strerror(errno));
    }
    if (rc == COMMON_OK) {
        free(o->tmp); /* renamed: nothing to remove */
        o->tmp = NULL;
        rc = common_fsync_parent(o->path, err);
    }
    common_outfile_destroy(op);
    return rc;
}

void common_outfile_destroy(common_outfile **op) {
    common_outfile *o = op != NULL ? *op : NULL;
    if (o == NULL) {
        return;
    }
    if (o->f != NULL) {
        fclose(o->f);
    }
    if (o->tmp != NULL) {
        unlink(o->tmp);
    }
    free(o->tmp);
    free(o->path);
    free(o);
    *op = NULL;
}

bool common_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}
