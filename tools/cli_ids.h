/* Token-id lists of `clnpu run` (cli_ids.c). */
#ifndef CLNPU_CLI_IDS_H
#define CLNPU_CLI_IDS_H
#include <stddef.h>

enum { CLI_IDS_OK = 0, CLI_IDS_MALFORMED = -1, CLI_IDS_TOO_MANY = -2, CLI_IDS_NO_MEMORY = -3 };

/* Ids (each 0..2^31-1) from len bytes of s, separated by commas, spaces, tabs or newlines; at
 * most max of them. On success *out (free it) holds *n >= 1 ids; otherwise *out is NULL. */
int cli_parse_ids(const char *s, size_t len, size_t max, int **out, size_t *n);

#endif
