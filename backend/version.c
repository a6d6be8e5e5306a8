/* Library version string, from meson's project version. */
#include "clnpu/clnpu.h"

#ifndef CLNPU_VERSION
#define CLNPU_VERSION "0.0.0"
#endif

const char *clnpu_version(void)
{
    return CLNPU_VERSION;
}
