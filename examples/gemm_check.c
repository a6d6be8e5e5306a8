/* A vendor's first program: open a device, run one bf16 GEMM, check it against a float64 host
 * reference, free everything. Only the public API (include/clnpu/). Usage: gemm_check [DEVICE]
 * (default 0); exit 0 when the relative error is within the bound, 1 otherwise. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "clnpu/clnpu.h"

/* every call that can fail returns a status and leaves a message (status.h) */
#define CHECK(call)                                                                                \
    do {                                                                                           \
        clnpu_status st_ = (call);                                                                 \
        if (st_ != CLNPU_OK) {                                                                     \
            fprintf(stderr, "gemm_check: %s: %s (%s)\n", #call, clnpu_error_message(), clnpu_status_name(st_)); \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    const size_t index = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    const size_t M = 5, N = 37, K = 70; /* ragged: no tile size divides them */
    int rc = 1;
    clnpu_device *dev = NULL;
    clnpu_weight *w = NULL;
    clnpu_buffer *xbuf = NULL, *ybuf = NULL;
    float *x = malloc(M * K * sizeof *x), *y = malloc(M * N * sizeof *y);
    uint16_t *w_bf16 = malloc(N * K * sizeof *w_bf16);
    if (!x || !y || !w_bf16) {
        fprintf(stderr, "gemm_check: out of host memory\n");
        goto done;
    }
    srand(7);
    for (size_t i = 0; i < M * K; i++) x[i] = 2.0f * rand() / RAND_MAX - 1.0f;
    for (size_t i = 0; i < N * K; i++) w_bf16[i] = clnpu_f32_to_bf16(2.0f * rand() / RAND_MAX - 1.0f);

    CHECK(clnpu_device_open(index, NULL, &dev)); /* NULL options: the profile that matches best */
    /* W in checkpoint layout [N][K]; the library repacks it for its kernels */
    clnpu_weight_desc d = {.dtype = CLNPU_DTYPE_BF16, .n = N, .k = K, .data = w_bf16};
    CHECK(clnpu_weight_upload(dev, &d, 1, &w));
    CHECK(clnpu_buffer_create(dev, M * K * sizeof(float), &xbuf));
    CHECK(clnpu_buffer_create(dev, M * N * sizeof(float), &ybuf));
    CHECK(clnpu_buffer_write(xbuf, 0, x, M * K * sizeof(float)));
    const float poison = NAN; /* a kernel that skips an output cannot pass */
    CHECK(clnpu_buffer_fill(ybuf, &poison, sizeof poison));
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = xbuf, a.y = ybuf, a.m = M;
    CHECK(clnpu_gemm(dev, w, 0, &a));                            /* Y = X . W^T, queued */
    CHECK(clnpu_buffer_read(ybuf, 0, y, M * N * sizeof(float))); /* blocking, after the GEMM */

    double err = 0, ref2 = 0;
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double ref = 0;
            for (size_t k = 0; k < K; k++) ref += (double)x[i * K + k] * clnpu_bf16_to_f32(w_bf16[j * K + k]);
            err += (y[i * N + j] - ref) * (y[i * N + j] - ref), ref2 += ref * ref;
        }
    const double rel = sqrt(err / ref2);
    /* f32 products and sums over K = 70 terms: a few ulps of the inputs' scale */
    const double bound = 1e-5;
    printf("gemm_check: %s (profile %s): Y[%zu,%zu] = X[%zu,%zu] . W_bf16^T, relative error %.2e (bound %.0e): %s\n",
           clnpu_device_get_info(dev)->name, clnpu_device_get_profile(dev)->name, M, N, M, K, rel, bound,
           rel <= bound ? "ok" : "FAILED"); /* NaN fails the comparison too */
    rc = rel <= bound ? 0 : 1;
done:
    clnpu_buffer_destroy(xbuf), clnpu_buffer_destroy(ybuf);
    clnpu_weight_destroy(w);
    clnpu_device_close(dev); /* after everything created on it */
    free(x), free(y), free(w_bf16);
    return rc;
}
