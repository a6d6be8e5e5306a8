/* Internal: a whole file into memory, however large, or an error naming it. */
#ifndef CLNPU_FILE_READ_H
#define CLNPU_FILE_READ_H
#include <stddef.h>

#include "clnpu/status.h"

/* *out: the bytes plus a terminating NUL (free it); *len: the byte count without the NUL. */
clnpu_status clnpu_file_read_all(const char *path, char **out, size_t *len);

#endif
