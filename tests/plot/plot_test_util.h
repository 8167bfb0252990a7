/*
 * What the plot tests share: writing a document to the scratch directory and asking Debian's
 * Python (xml.etree, stdlib only) whether it is well-formed XML and what it holds, so that
 * well-formedness is judged by an independent parser rather than by the writer's own checks.
 */
#ifndef CHESSLENS_TESTS_PLOT_UTIL_H
#define CHESSLENS_TESTS_PLOT_UTIL_H

#include <stddef.h>

/* Writes len bytes of data to the scratch directory (cli_tmpdir) as name; returns the path (static
 * buffer, overwritten by the next call). */
const char *plot_test_write(const char *name, const char *data, size_t len);
/* Runs tests/plot/svg_check.py on path (plus extra arguments, may be ""), returning its output
 * (caller frees) and its exit status in *status (0: well-formed, the JSON summary printed). */
char *plot_test_check(const char *path, const char *extra, int *status);
/* Counts the occurrences of needle in haystack. */
size_t plot_test_count(const char *haystack, const char *needle);

#endif
