/* clnpu: A.X K1 inference over OpenCL. Umbrella header.
 *
 * Conventions of every header here (each header's usage example is taken from a whole program in
 * examples/, which the tests build against the shared library and run; tools/check_examples.py
 * keeps the header excerpts and the programs the same):
 * - Errors: every call that can fail returns a clnpu_status and leaves a message for this thread
 *   (status.h). The library never exits, aborts or raises a signal, and does not own MPI: the
 *   caller initialises it and ends the job (pipeline.h). It writes to stderr only when asked
 *   (clnpu_model_options.progress, clnpu_device_set_tuning_verbose, CLNPU_PLAN_DEBUG).
 * - Ownership: an object from a *_create / *_open / *_load / *_list call is the caller's until the
 *   matching *_destroy / *_close / *_free (every *_destroy and *_close accepts NULL); results come back through
 *   out_* parameters. Pointers passed in are read during the call only (configs, options and
 *   specs are copied) unless a header says the object keeps them: everything created on a
 *   clnpu_device borrows that device, a device borrows the tuning database set on it, a tensor
 *   points into its checkpoint, a profile found in a set points into the set.
 * - Threads: the library keeps no process-wide mutable state (the error message is per thread),
 *   so separate objects may be used from separate threads at once. One device, with everything
 *   created on it, and one model or pipeline are driven by one host thread at a time; the
 *   library's own threads (tensor-parallel ranks, attention replicas, micro-batches) run inside a
 *   call and end before it returns. Read-only objects (profile sets, checkpoints, clusters, plans,
 *   tuning databases) may be read from several threads once built.
 * - Device work is queued: calls that launch kernels return before the device is done; a blocking
 *   clnpu_buffer_read or clnpu_device_finish waits.
 */
#ifndef CLNPU_H
#define CLNPU_H

#include "clnpu/export.h"

#include "clnpu/status.h"
#include "clnpu/profile.h"
#include "clnpu/device.h"
#include "clnpu/capability.h"
#include "clnpu/program.h"
#include "clnpu/dtype.h"
#include "clnpu/gemm.h"
#include "clnpu/ops.h"
#include "clnpu/dsa.h"
#include "clnpu/moe.h"
#include "clnpu/checkpoint.h"
#include "clnpu/model.h"
#include "clnpu/model_memory.h"
#include "clnpu/plan.h"
#include "clnpu/tuning.h"
#include "clnpu/pipeline.h"
#include "clnpu/tokenizer.h"
#include "clnpu/chat_template.h"
#include "clnpu/generate.h"
#include "clnpu/serve.h"

#ifdef __cplusplus
extern "C" {
#endif
/* Library version, "MAJOR.MINOR.PATCH". */
CLNPU_API const char *clnpu_version(void);
#ifdef __cplusplus
}
#endif
#endif
