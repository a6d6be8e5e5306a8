/* Internal: files the library reads (regular files only, size-capped, never blocking on a FIFO)
 * and files it writes (through a temp file renamed over the target; a symlink is written through
 * to its target, never replaced; devices and FIFOs are refused). */
#ifndef CLNPU_FILE_READ_H
#define CLNPU_FILE_READ_H
#include <stddef.h>
#include <stdio.h>

#include "clnpu/status.h"

/* Text inputs (profiles, clusters, plans, tuning databases, indexes): larger is not such a file. */
#define CLNPU_FILE_TEXT_MAX ((size_t)64 << 20)

/* Open path read-only. O_NONBLOCK makes open() return at once on a FIFO, which fstat then
 * refuses with anything else that is not a regular file ("%s: not a regular file (a FIFO)").
 * Failures are CLNPU_ERR_IO, with errno kept (ENOENT: a missing file). *out_size:
 * the file's size. */
clnpu_status clnpu_file_open_regular(const char *path, int *out_fd, size_t *out_size);

/* *out: the bytes plus a terminating NUL (free it); *len: the byte count without the NUL.
 * Files over max bytes are refused ("larger than ..."), never cut. read_all: max is
 * CLNPU_FILE_TEXT_MAX. */
clnpu_status clnpu_file_read_capped(const char *path, size_t max, char **out, size_t *len);
clnpu_status clnpu_file_read_all(const char *path, char **out, size_t *len);

/* An output file written atomically: open gives f (a temp file beside the final target), commit
 * flushes, closes and renames it over the target; abort removes it. The target is path, or for a
 * symlink the file it points to (the link stays); a path that is a device, FIFO, socket or
 * directory is refused before anything is written. */
typedef struct clnpu_file_out {
    FILE *f;
    char target[4096];
    char tmp[4128];
} clnpu_file_out;
clnpu_status clnpu_file_out_open(const char *path, clnpu_file_out *o);
clnpu_status clnpu_file_out_commit(clnpu_file_out *o);
void clnpu_file_out_abort(clnpu_file_out *o);

#endif
