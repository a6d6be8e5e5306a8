/* Status names and the thread-local error message slot. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

/* Large enough for a typical compiler build log; longer logs are cut with a note. */
#define CLNPU_ERROR_CAP 32768
static _Thread_local char error_buf[CLNPU_ERROR_CAP];

const char *clnpu_status_name(clnpu_status status)
{
    switch (status) {
    case CLNPU_OK: return "CLNPU_OK";
    case CLNPU_ERR_INVALID_ARGUMENT: return "CLNPU_ERR_INVALID_ARGUMENT";
    case CLNPU_ERR_OPENCL: return "CLNPU_ERR_OPENCL";
    case CLNPU_ERR_BUILD: return "CLNPU_ERR_BUILD";
    case CLNPU_ERR_IO: return "CLNPU_ERR_IO";
    case CLNPU_ERR_PARSE: return "CLNPU_ERR_PARSE";
    case CLNPU_ERR_NOT_FOUND: return "CLNPU_ERR_NOT_FOUND";
    case CLNPU_ERR_OUT_OF_MEMORY: return "CLNPU_ERR_OUT_OF_MEMORY";
    case CLNPU_ERR_UNSUPPORTED: return "CLNPU_ERR_UNSUPPORTED";
    case CLNPU_ERR_BUSY: return "CLNPU_ERR_BUSY";
    }
    return "CLNPU_ERR_UNKNOWN";
}

const char *clnpu_error_message(void)
{
    return error_buf;
}

void clnpu_error_clear(void)
{
    error_buf[0] = '\0';
}

static void mark_truncated(void)
{
    static const char note[] = " ... (message truncated)";
    memcpy(error_buf + CLNPU_ERROR_CAP - sizeof note, note, sizeof note);
}

clnpu_status clnpu_fail(clnpu_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(error_buf, CLNPU_ERROR_CAP, fmt, ap);
    va_end(ap);
    if (n >= CLNPU_ERROR_CAP) mark_truncated();
    return status;
}

clnpu_status clnpu_fail_context(clnpu_status status, const char *fmt, ...)
{
    char prefix[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t plen = strlen(prefix) + 2, olen = strlen(error_buf);
    if (plen + olen >= CLNPU_ERROR_CAP) olen = CLNPU_ERROR_CAP - plen - 1;
    memmove(error_buf + plen, error_buf, olen);
    error_buf[plen + olen] = '\0';
    memcpy(error_buf, prefix, plen - 2);
    error_buf[plen - 2] = ':';
    error_buf[plen - 1] = ' ';
    return status;
}

void clnpu_error_append(const char *text)
{
    size_t len = strlen(error_buf);
    size_t n = strlen(text);
    if (len + n >= CLNPU_ERROR_CAP) {
        memcpy(error_buf + len, text, CLNPU_ERROR_CAP - len - 1);
        error_buf[CLNPU_ERROR_CAP - 1] = '\0';
        mark_truncated();
        return;
    }
    memcpy(error_buf + len, text, n + 1);
}
