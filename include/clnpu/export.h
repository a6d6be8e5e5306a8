/* CLNPU_API marks the functions libclnpu exports. The library is built with -fvisibility=hidden, so
 * everything not declared with it in include/clnpu/ stays internal to the shared object. */
#ifndef CLNPU_EXPORT_H
#define CLNPU_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define CLNPU_API __attribute__((visibility("default")))
#else
#define CLNPU_API
#endif

#endif
