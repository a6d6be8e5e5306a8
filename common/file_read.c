/* Reading a whole file: text inputs (profiles, clusters, tuning databases) have no size cap, so
 * nothing is silently cut at a buffer's end. */
#include "file_read.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

clnpu_status clnpu_file_read_all(const char *path, char **out, size_t *len)
{
    *out = NULL, *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 16384;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "%s: out of host memory", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (!got) break;
    }
    const int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return clnpu_fail(CLNPU_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf, *len = n;
    return CLNPU_OK;
}
