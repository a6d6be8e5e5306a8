/* Files in and out: inputs are regular files read whole under a size cap (so a FIFO, /dev/zero or
 * a directory is an error, not a hang or an allocation of LLONG_MAX bytes); outputs go through a
 * temp file and rename, onto a symlink's target rather than over the link. */
#include "file_read.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

static const char *kind_of(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device" :
           S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

clnpu_status clnpu_file_open_regular(const char *path, int *out_fd, size_t *out_size)
{
    *out_fd = -1;
    if (out_size) *out_size = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        const int e = errno;
        clnpu_status st = clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", path, strerror(e));
        errno = e;
        return st;
    }
    struct stat sb;
    if (fstat(fd, &sb)) {
        const int e = errno;
        close(fd);
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        errno = EINVAL;
        return clnpu_fail(CLNPU_ERR_IO, "%s: not a regular file (%s)", path, kind_of(sb.st_mode));
    }
    /* reads of a regular file never block; clear the flag so nothing downstream is surprised */
    const int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *out_fd = fd;
    if (out_size) *out_size = (size_t)sb.st_size;
    return CLNPU_OK;
}

clnpu_status clnpu_file_read_capped(const char *path, size_t max, char **out, size_t *len)
{
    *out = NULL, *len = 0;
    int fd;
    size_t size;
    clnpu_status st = clnpu_file_open_regular(path, &fd, &size);
    if (st) return st;
    if (size > max) {
        close(fd);
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: %zu bytes is larger than the %zu allowed for this kind of file", path,
                          size, max);
    }
    /* read to the end, not to st_size: the file may grow or shrink meanwhile (never past max) */
    size_t cap = size + 1, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "%s: out of host memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap > max) break;
            size_t nc = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "%s: out of host memory", path);
            }
            buf = nb, cap = nc;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            const int e = errno;
            free(buf);
            close(fd);
            return clnpu_fail(CLNPU_ERR_IO, "%s: read error: %s", path, strerror(e));
        }
        if (!got) break;
        n += (size_t)got;
    }
    close(fd);
    if (n > max) {
        free(buf);
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: larger than the %zu bytes allowed for this kind of file", path, max);
    }
    buf[n] = '\0';
    *out = buf, *len = n;
    return CLNPU_OK;
}

clnpu_status clnpu_file_read_all(const char *path, char **out, size_t *len)
{
    return clnpu_file_read_capped(path, CLNPU_FILE_TEXT_MAX, out, len);
}

clnpu_status clnpu_file_out_open(const char *path, clnpu_file_out *o)
{
    memset(o, 0, sizeof *o);
    struct stat sb;
    mode_t mode = 0644; /* a new output is an ordinary file; a replaced one keeps its mode */
    if (strlen(path) >= sizeof o->target) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%.64s...: path too long", path);
    if (!stat(path, &sb)) { /* follows symlinks: what a write would reach */
        if (!S_ISREG(sb.st_mode))
            return clnpu_fail(CLNPU_ERR_IO, "%s: not a regular file (%s): refusing to write over it", path,
                              kind_of(sb.st_mode));
        mode = sb.st_mode & 07777;
        char *real = realpath(path, NULL); /* a symlink: the rename must land on its target */
        if (!real) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot resolve: %s", path, strerror(errno));
        const bool fits = strlen(real) < sizeof o->target;
        if (fits) snprintf(o->target, sizeof o->target, "%s", real);
        free(real);
        if (!fits) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: resolved path too long", path);
    } else if (errno == ENOENT && !lstat(path, &sb)) {
        return clnpu_fail(CLNPU_ERR_IO, "%s: a symlink to nothing: refusing to replace it", path);
    } else {
        snprintf(o->target, sizeof o->target, "%s", path); /* a new file (or the error comes below) */
    }
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp.XXXXXX", o->target);
    int fd = mkstemp(o->tmp);
    if (fd < 0) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot create: %s", o->target, strerror(errno));
    fchmod(fd, mode); /* mkstemp makes 0600 */
    if (!(o->f = fdopen(fd, "wb"))) {
        const int e = errno;
        close(fd);
        unlink(o->tmp);
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", o->tmp, strerror(e));
    }
    return CLNPU_OK;
}

clnpu_status clnpu_file_out_commit(clnpu_file_out *o)
{
    bool ok = !ferror(o->f);
    ok = fclose(o->f) == 0 && ok;
    o->f = NULL;
    if (!ok || rename(o->tmp, o->target)) {
        const int e = errno;
        unlink(o->tmp);
        return clnpu_fail(CLNPU_ERR_IO, "%s: write failed: %s", o->target, strerror(e));
    }
    return CLNPU_OK;
}

void clnpu_file_out_abort(clnpu_file_out *o)
{
    if (!o->f) return;
    fclose(o->f);
    o->f = NULL;
    unlink(o->tmp);
}
