/* Kernel tracing: OpenCL profiling events recorded per launch, written as a Chrome / Perfetto
 * trace (one complete event per kernel, timestamps from the device clock). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_internal.h"
#include "../common/error.h"

typedef struct trace_entry {
    char name[48];
    cl_event ev;
} trace_entry;

struct clnpu_trace {
    trace_entry *items;
    size_t count, cap;
};

bool clnpu_device_tracing(const clnpu_device *dev)
{
    return dev->trace != NULL;
}

clnpu_status clnpu_device_trace_start(clnpu_device *dev)
{
    if (!dev->profiling)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "tracing needs a device opened with profiling");
    if (!dev->trace && !(dev->trace = calloc(1, sizeof *dev->trace)))
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    return CLNPU_OK;
}

void clnpu_device_trace_record(clnpu_device *dev, const char *name, void *event)
{
    struct clnpu_trace *t = dev->trace;
    if (!t || !event) return;
    if (t->count == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        trace_entry *n = realloc(t->items, cap * sizeof *n);
        if (!n) {
            clReleaseEvent(event); /* tracing is best effort; the kernel itself ran */
            return;
        }
        t->items = n, t->cap = cap;
    }
    snprintf(t->items[t->count].name, sizeof t->items[t->count].name, "%s", name);
    t->items[t->count++].ev = event;
}

void clnpu_trace_free(struct clnpu_trace *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->count; i++) clReleaseEvent(t->items[i].ev);
    free(t->items);
    free(t);
}

clnpu_status clnpu_device_trace_write(clnpu_device *dev, const char *path, size_t *out_events)
{
    struct clnpu_trace *t = dev->trace;
    if (!t) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "tracing was not started");
    clnpu_status st = clnpu_device_finish(dev);
    if (st) return st;
    FILE *f = fopen(path, "w");
    if (!f) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot create", path);
    fprintf(f, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[");
    cl_ulong t0 = 0;
    size_t written = 0;
    for (size_t i = 0; i < t->count; i++) {
        cl_ulong s = 0, e = 0;
        if (clGetEventProfilingInfo(t->items[i].ev, CL_PROFILING_COMMAND_START, sizeof s, &s, NULL) ||
            clGetEventProfilingInfo(t->items[i].ev, CL_PROFILING_COMMAND_END, sizeof e, &e, NULL))
            continue;
        if (!t0 || s < t0) t0 = s;
    }
    for (size_t i = 0; i < t->count; i++) {
        cl_ulong s = 0, e = 0;
        if (clGetEventProfilingInfo(t->items[i].ev, CL_PROFILING_COMMAND_START, sizeof s, &s, NULL) ||
            clGetEventProfilingInfo(t->items[i].ev, CL_PROFILING_COMMAND_END, sizeof e, &e, NULL))
            continue;
        /* Kernel names are identifiers from our own sources: no JSON escaping needed. */
        fprintf(f, "%s\n{\"name\":\"%s\",\"ph\":\"X\",\"pid\":%zu,\"tid\":0,\"ts\":%.3f,\"dur\":%.3f}",
                written ? "," : "", t->items[i].name, dev->info.index, (s - t0) / 1e3, (e - s) / 1e3);
        written++;
    }
    fprintf(f, "\n]}\n");
    bool ok = !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (out_events) *out_events = written;
    return ok ? CLNPU_OK : clnpu_fail(CLNPU_ERR_IO, "%s: write failed", path);
}
