/* clnpu status codes and error messages.
 *
 * Every fallible call returns a clnpu_status. On failure the library also leaves a
 * human-readable message (what failed, on which device, with which input) in a
 * thread-local slot that the caller reads with clnpu_error_message() (from examples/devices.c):
 *
 *     if (clnpu_device_open(0, &opt, &dev)) goto fail;
 *     ...
 * fail:
 *     fprintf(stderr, "devices: %s\n", clnpu_error_message());
 *
 * The library never exits, aborts or raises a signal, and leaves MPI to the caller
 * (tools/check_edges.sh checks the shared library for it).
 */
#ifndef CLNPU_STATUS_H
#define CLNPU_STATUS_H

#include "clnpu/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clnpu_status {
    CLNPU_OK = 0,
    CLNPU_ERR_INVALID_ARGUMENT,
    CLNPU_ERR_OPENCL,        /* an OpenCL call failed; the message names the call and code */
    CLNPU_ERR_BUILD,         /* a kernel failed to build; the message carries the build log */
    CLNPU_ERR_IO,            /* a file could not be read or written */
    CLNPU_ERR_PARSE,         /* malformed YAML / JSON / binary input */
    CLNPU_ERR_NOT_FOUND,     /* no such device, profile, kernel or tensor */
    CLNPU_ERR_OUT_OF_MEMORY, /* host or (emulated) device memory exhausted */
    CLNPU_ERR_UNSUPPORTED,   /* the device or input lacks a required feature */
    CLNPU_ERR_BUSY,          /* a bounded queue is full: try again later */
} clnpu_status;

/* Short constant name of a status, e.g. "CLNPU_ERR_BUILD". */
CLNPU_API const char *clnpu_status_name(clnpu_status status);

/* Message of the last failure on this thread ("" if none). Valid until the next failing call. */
CLNPU_API const char *clnpu_error_message(void);

/* Forget the last message. */
CLNPU_API void clnpu_error_clear(void);

#ifdef __cplusplus
}
#endif
#endif
