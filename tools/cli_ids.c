/* Token-id lists for `clnpu run --ids / --ids-file`: decimal ids separated by commas or white
 * space. Parsed by length (a file may hold NUL bytes), strictly: anything else is an error, never
 * a silently shorter prompt. Kept apart from cmd_run.c so the fuzzer links it alone. */
#include <stdlib.h>

#include "cli_ids.h"

int cli_parse_ids(const char *s, size_t len, size_t max, int **out, size_t *n)
{
    *out = NULL, *n = 0;
    size_t cap = 0;
    int *ids = NULL;
    for (size_t i = 0; i < len;) {
        const char c = s[i];
        if (c == ',' || c == ' ' || c == '\n' || c == '\t' || c == '\r') {
            i++;
            continue;
        }
        if (c < '0' || c > '9') {
            free(ids);
            return CLI_IDS_MALFORMED;
        }
        long long v = 0;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            v = v * 10 + (s[i] - '0');
            if (v > 0x7fffffff) { /* checked per digit: no overflow on a long run of digits */
                free(ids);
                return CLI_IDS_MALFORMED;
            }
        }
        if (*n == max) {
            free(ids);
            return CLI_IDS_TOO_MANY;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int *nb = realloc(ids, cap * sizeof *nb);
            if (!nb) {
                free(ids);
                return CLI_IDS_NO_MEMORY;
            }
            ids = nb;
        }
        ids[(*n)++] = (int)v;
    }
    if (!*n) {
        free(ids);
        return CLI_IDS_MALFORMED;
    }
    *out = ids;
    return CLI_IDS_OK;
}
