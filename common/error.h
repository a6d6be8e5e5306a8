/* Internal helpers to fail with a status and a message (see include/clnpu/status.h). */
#ifndef CLNPU_BACKEND_ERROR_H
#define CLNPU_BACKEND_ERROR_H

#include <CL/cl.h>

#include "clnpu/status.h"

/* Record a message for this thread and return `status`. */
clnpu_status clnpu_fail(clnpu_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the current message with context ("loading X: <old message>"); returns status. */
clnpu_status clnpu_fail_context(clnpu_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Append text (e.g. a build log) to the current message. */
void clnpu_error_append(const char *text);

/* The name of an OpenCL error code ("CL_OUT_OF_RESOURCES"), or "CL_UNKNOWN_ERROR(-N)". */
const char *clnpu_cl_error_name(cl_int code);
/* Fail with CLNPU_ERR_OPENCL (or OUT_OF_MEMORY for allocation codes) naming the call. */
clnpu_status clnpu_fail_cl(cl_int code, const char *call, const char *what);

#endif
