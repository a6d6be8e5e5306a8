/* Shared helpers for the Check test suite: one device opened per process (programs built once
 * and shared across tests), seeded random inputs, temporary directories. */
#ifndef CLNPU_TEST_UTIL_H
#define CLNPU_TEST_UTIL_H

#include <check.h>
#include <stdint.h>

#include "clnpu/clnpu.h"

/* The default test device (index 0, auto-matched profile), opened on first use. */
clnpu_device *test_device(void);
void test_device_release(void);

/* Fail the current test with the library's message unless st == CLNPU_OK. */
#define ck_assert_ok(st)                                                                           \
    do {                                                                                           \
        clnpu_status st_ = (st);                                                                   \
        ck_assert_msg(st_ == CLNPU_OK, "%s: %s", clnpu_status_name(st_), clnpu_error_message());  \
    } while (0)

/* Random numbers: xorshift64*, seeded from the clock unless CLNPU_TEST_SEED is set; the seed is
 * printed once so a failure can be replayed. */
uint64_t test_rand_u64(void);
float test_rand_uniform(float lo, float hi);
float test_rand_normal(void);
uint64_t test_seed(void);

/* A fresh directory under /tmp, removed (with its files) by test_rmdir. */
void test_mkdtemp(char *out, size_t cap);
void test_rmdir(const char *dir);
/* Write a file; returns 0 on success. */
int test_write_file(const char *path, const char *text);

/* Run a command line through /bin/sh, capturing stdout+stderr into out (truncated); returns the
 * exit status (or -1). */
int test_run(const char *cmdline, char *out, size_t cap);

/* A latent cache of `rows` rows [c (R) | k_pe (DR)] laid out for dtype (f32, bf16, fp8: see
 * clnpu_latent_cache_row_bytes), encoded by the tests' own reading of the layout; vals (rows x
 * (R + DR)) become the values the cache holds, what a float64 reference reads. Returns malloc'ed
 * bytes (*out_bytes of them). */
void *test_latent_cache_encode(clnpu_dtype dt, size_t R, size_t DR, size_t rows, float *vals, size_t *out_bytes);

/* clnpu_rmsnorm_add_tag on the current device (either kernel family) against float64, over ragged
 * sizes, strides and offsets, every combination of its parts, outputs poisoned, and its flag. */
void test_check_rmsnorm_add_tag(clnpu_device *dev);

/* clnpu_rmsnorm2 (two row sets normalised in place, one launch) against float64, ragged sizes. */
void test_check_rmsnorm2(clnpu_device *dev);

/* clnpu_rope_apply2 (q's heads and k_pe in one launch) against float64 for both layouts, ragged
 * head strides and offsets; a position past the table poisons both tensors' rows. */
void test_check_rope2(clnpu_device *dev, const clnpu_rope_config *c);

/* MLA decode rotating q_pe as it reads it (a.q_pe_rope) against the same decode on q_pe rotated
 * first by clnpu_rope_apply, both layouts: a (q_pe dense [B][H][DR], its output poisoned here) as
 * the caller's test set it up without a table; lens: the B sequence lengths. */
void test_check_mla_rope_on_load(clnpu_device *dev, clnpu_mla_decode_args a, const int *lens);

/* n uniform random floats in [lo, hi) (malloc'ed, at least one element). */
float *test_rand_array(size_t n, float lo, float hi);
/* ||a - ref|| / ||ref|| of two float arrays (a NaN in `a` fails the test). */
double test_rel(const float *a, const float *ref, size_t n);
/* The same against a float64 reference (||ref|| = 0 counts as 1). */
double test_rel64(const float *out, const double *ref, size_t n);

/* A checkpoint folder with its transformers reference (config.json, the shards,
 * reference.safetensors holding input_ids and logits): opened by test_fixture_open (failing the
 * test on any error), closed by test_fixture_close. */
typedef struct test_fixture {
    clnpu_model_config cfg;
    clnpu_checkpoint *ck;
    clnpu_safetensors *ref;
    const int *ids; /* the reference's input_ids (inside ref) */
    size_t T;       /* their count */
} test_fixture;
void test_fixture_open(test_fixture *f, const char *dir);
void test_fixture_close(test_fixture *f);
/* The fixture's model on the test device (max_tokens per step): logits within tol of the
 * reference's through one prefill of all ids, then through prefill of 1 + decode of the rest;
 * both errors printed under `label`. */
void test_fixture_logits(const test_fixture *f, const char *label, size_t max_tokens, double tol);

Suite *suite_device(void);
Suite *suite_profile(void);
Suite *suite_program(void);
Suite *suite_cli(void);
Suite *suite_gemm(void);
Suite *suite_ops(void);
Suite *suite_model(void);
Suite *suite_checkpoint(void);
Suite *suite_plan(void);
Suite *suite_tuning(void);
Suite *suite_serve(void);
Suite *suite_examples(void);
Suite *suite_tokenizer(void);
Suite *suite_chat_template(void);
Suite *suite_generate(void);
Suite *suite_harden(void);
Suite *suite_family(void);
Suite *suite_dsa(void);
Suite *suite_wg(void);
Suite *suite_wg_dsa(void);

#endif
