/* clnpu: A.X K1 inference over OpenCL. Umbrella header. */
#ifndef CLNPU_H
#define CLNPU_H

#include "clnpu/status.h"
#include "clnpu/profile.h"
#include "clnpu/device.h"
#include "clnpu/capability.h"
#include "clnpu/program.h"
#include "clnpu/dtype.h"
#include "clnpu/gemm.h"
#include "clnpu/ops.h"
#include "clnpu/moe.h"
#include "clnpu/checkpoint.h"
#include "clnpu/model.h"
#include "clnpu/plan.h"
#include "clnpu/tuning.h"
#include "clnpu/pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif
/* Library version, "MAJOR.MINOR.PATCH". */
const char *clnpu_version(void);
#ifdef __cplusplus
}
#endif
#endif
