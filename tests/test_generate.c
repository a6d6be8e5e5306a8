/* The generation loop on the tiny checkpoint: a second turn on a kept cache gives what one
 * prefill of the whole conversation gives; EOS ids, stop strings, budgets and the callback end a
 * turn where they should; streamed pieces add up to the text. And the text commands of the CLI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define TINY CLNPU_SOURCE_DIR "/models/tiny-axk1"

typedef struct tiny {
    clnpu_model_config cfg;
    clnpu_checkpoint *ck;
    clnpu_model *m;
    clnpu_tokenizer *tok;
    clnpu_generator *g;
} tiny;

static void tiny_open(tiny *t, size_t seqs, bool with_tok)
{
    ck_assert_ok(clnpu_model_config_load(TINY "/config.json", &t->cfg));
    ck_assert_ok(clnpu_checkpoint_open(TINY, &t->ck));
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = seqs, o.max_context = 128;
    ck_assert_ok(clnpu_model_create(test_device(), &t->cfg, t->ck, &o, &t->m));
    t->tok = NULL;
    if (with_tok) ck_assert_ok(clnpu_tokenizer_load(TINY, &t->tok));
    clnpu_generator_options go = {.model = t->m, .device = test_device(), .tokenizer = t->tok, .vocab_size = t->cfg.vocab_size,
                                  .max_sequences = seqs, .max_context = 128};
    ck_assert_ok(clnpu_generator_create(&go, &t->g));
}

static void tiny_close(tiny *t)
{
    clnpu_generator_destroy(t->g);
    clnpu_model_destroy(t->m);
    clnpu_checkpoint_close(t->ck);
    clnpu_tokenizer_free(t->tok);
}

START_TEST(test_generate_second_turn_reuses_cache)
{
    tiny t;
    tiny_open(&t, 2, false);
    const int a[] = {296, 365, 263, 313, 40, 223, 311, 274, 157, 172}, b[] = {163, 193, 185, 305};
    clnpu_generate_config gc = clnpu_generate_config_default();
    gc.max_tokens = 5;
    ck_assert_ok(clnpu_generator_start(t.g, 0, a, 10, &gc, NULL));
    ck_assert_ok(clnpu_generator_run(t.g, NULL, NULL));
    size_t n1, n2, n3;
    const int *o1 = clnpu_generator_tokens(t.g, 0, &n1);
    ck_assert_uint_eq(n1, 5);
    ck_assert_int_eq(clnpu_generator_finish_reason(t.g, 0), CLNPU_FINISH_LENGTH);
    /* the whole conversation at once on sequence 1: a, the reply, b */
    int all[19];
    memcpy(all, a, sizeof a), memcpy(all + 10, o1, 5 * sizeof *all), memcpy(all + 15, b, sizeof b);
    ck_assert_uint_eq(clnpu_generator_context(t.g, 0), 14); /* the last drawn token is not fed yet */
    ck_assert_ok(clnpu_generator_start(t.g, 0, b, 4, &gc, NULL));
    ck_assert_uint_eq(clnpu_generator_context(t.g, 0), 19);
    ck_assert_ok(clnpu_generator_start(t.g, 1, all, 19, &gc, NULL));
    size_t active = 0;
    ck_assert_ok(clnpu_generator_step(t.g, NULL, NULL, &active)); /* both draw from their prefills together */
    ck_assert_uint_eq(active, 2);
    ck_assert_ok(clnpu_generator_run(t.g, NULL, NULL));
    const int *o2 = clnpu_generator_tokens(t.g, 0, &n2), *o3 = clnpu_generator_tokens(t.g, 1, &n3);
    ck_assert_uint_eq(n2, 5);
    ck_assert_uint_eq(n3, 5);
    for (size_t i = 0; i < 5; i++) ck_assert_int_eq(o2[i], o3[i]);
    /* misuse */
    ck_assert_int_ne(clnpu_generator_start(t.g, 2, a, 1, &gc, NULL), CLNPU_OK);
    ck_assert(strstr(clnpu_error_message(), "max_sequences"));
    const char *stop[] = {"x"};
    gc.stop = stop, gc.n_stop = 1;
    ck_assert_int_ne(clnpu_generator_start(t.g, 0, a, 1, &gc, NULL), CLNPU_OK);
    ck_assert(strstr(clnpu_error_message(), "tokenizer"));
    const int bad[] = {384};
    gc.n_stop = 0;
    ck_assert_int_ne(clnpu_generator_start(t.g, 0, bad, 1, &gc, NULL), CLNPU_OK);
    ck_assert_msg(strstr(clnpu_error_message(), "384"), "%s", clnpu_error_message());
    tiny_close(&t);
}
END_TEST

typedef struct sink {
    char text[4096];
    size_t n, calls, stop_after;
} sink;

static bool collect(void *user, size_t seq, int id, const char *text, size_t len)
{
    sink *s = user;
    (void)seq, (void)id;
    ck_assert_uint_lt(s->n + len, sizeof s->text);
    memcpy(s->text + s->n, text, len);
    s->n += len;
    s->text[s->n] = '\0';
    return ++s->calls != s->stop_after;
}

static void turn(tiny *t, const clnpu_generate_config *gc, sink *s)
{
    clnpu_generator_reset(t->g, 0);
    const int prompt[] = {3, 300, 301, 302, 303, 2, 3, 304};
    ck_assert_ok(clnpu_generator_start(t->g, 0, prompt, 8, gc, NULL));
    ck_assert_ok(clnpu_generator_run(t->g, collect, s));
    size_t tl;
    const char *text = clnpu_generator_text(t->g, 0, &tl);
    ck_assert_uint_eq(tl, s->n);
    ck_assert(!memcmp(text, s->text, tl));
}

START_TEST(test_generate_stops)
{
    tiny t;
    tiny_open(&t, 1, true);
    clnpu_generate_config gc = clnpu_generate_config_default();
    gc.max_tokens = 24;
    sink free_run = {0};
    turn(&t, &gc, &free_run);
    size_t n;
    const int *ids = clnpu_generator_tokens(t.g, 0, &n);
    ck_assert_uint_eq(n, 24);
    int ref[24];
    memcpy(ref, ids, sizeof ref);
    char *dec;
    ck_assert_ok(clnpu_tokenizer_decode(t.tok, ref, 24, &dec, NULL));
    ck_assert_str_eq(dec, free_run.text); /* streamed pieces are the whole decode */
    free(dec);

    /* an end-of-sequence id: the turn ends on it, its text is not streamed */
    int eos = ref[5];
    size_t first = 0;
    while (ref[first] != eos) first++;
    gc.eos_ids = &eos, gc.n_eos = 1;
    sink s1 = {0};
    turn(&t, &gc, &s1);
    ck_assert_int_eq(clnpu_generator_finish_reason(t.g, 0), CLNPU_FINISH_EOS);
    clnpu_generator_tokens(t.g, 0, &n);
    ck_assert_uint_eq(n, first + 1);
    ck_assert_ok(clnpu_tokenizer_decode(t.tok, ref, first, &dec, NULL));
    ck_assert_str_eq(s1.text, dec);
    free(dec);

    /* a stop string from the middle of the free run's text: the text ends right before it */
    gc.n_eos = 0;
    size_t at = free_run.n / 2;
    while (at < free_run.n && ((unsigned char)free_run.text[at] & 0xC0) == 0x80) at++;
    size_t sl = 1;
    while (at + sl < free_run.n && ((unsigned char)free_run.text[at + sl] & 0xC0) == 0x80) sl++;
    if (at + sl + 1 <= free_run.n) sl++;
    char stop[16] = {0};
    memcpy(stop, free_run.text + at, sl < 15 ? sl : 15);
    const char *stops[] = {"\x01never", stop};
    gc.stop = stops, gc.n_stop = 2;
    sink s2 = {0};
    turn(&t, &gc, &s2);
    ck_assert_int_eq(clnpu_generator_finish_reason(t.g, 0), CLNPU_FINISH_STOP);
    const char *hit = strstr(free_run.text, stop);
    ck_assert_ptr_nonnull(hit);
    ck_assert_uint_eq(s2.n, (size_t)(hit - free_run.text));
    ck_assert(!memcmp(s2.text, free_run.text, s2.n));

    /* the budget, and the callback saying stop */
    gc.n_stop = 0, gc.max_tokens = 3;
    sink s3 = {0};
    turn(&t, &gc, &s3);
    ck_assert_int_eq(clnpu_generator_finish_reason(t.g, 0), CLNPU_FINISH_LENGTH);
    gc.max_tokens = 24;
    sink s4 = {.stop_after = 2};
    turn(&t, &gc, &s4);
    ck_assert_int_eq(clnpu_generator_finish_reason(t.g, 0), CLNPU_FINISH_CALLER);
    clnpu_generator_tokens(t.g, 0, &n);
    ck_assert_uint_eq(n, 2);
    tiny_close(&t);
}
END_TEST

START_TEST(test_text_cli)
{
    char cmd[2048], out[16384];
    const char *bpe = CLNPU_SOURCE_DIR "/tests/data/tokenizer-bpe";
    /* the fixture's first case, whole input and --jsonl, and back */
    snprintf(cmd, sizeof cmd, "printf '%%s' '대한민국의 수도는 서울특별시입니다.' | '%s' tokenize '%s'", CLNPU_CLI_PATH, bpe);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 0);
    ck_assert_str_eq(out, "2485,2299,2473,19\n");
    snprintf(cmd, sizeof cmd, "printf '\"<|im_start|>a\"\\n\"\"\\n' | '%s' tokenize '%s' --jsonl", CLNPU_CLI_PATH, bpe);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 0);
    ck_assert_str_eq(out, "[2, 70]\n[]\n");
    snprintf(cmd, sizeof cmd, "echo 2485,2299,2473 | '%s' detokenize '%s'", CLNPU_CLI_PATH, bpe);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 0);
    ck_assert_str_eq(out, "대한민국의 수도는 서울특별시입니다");
    snprintf(cmd, sizeof cmd, "printf '[2, 70]\\n[3]\\n' | '%s' detokenize '%s' --jsonl", CLNPU_CLI_PATH, bpe);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 0);
    ck_assert_str_eq(out, "\"<|im_start|>a\"\n\"<|im_end|>\"\n");
    snprintf(cmd, sizeof cmd, "echo 1,99999 | '%s' detokenize '%s'", CLNPU_CLI_PATH, bpe);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "99999") && strstr(out, "tokenizer.json"), "%s", out);
    snprintf(cmd, sizeof cmd, "echo 'x' | '%s' tokenize '%s' --jsonl", CLNPU_CLI_PATH, bpe);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "line 1"), "%s", out);
    snprintf(cmd, sizeof cmd, "'%s' tokenize /nonexistent </dev/null", CLNPU_CLI_PATH);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "/nonexistent/tokenizer.json"), "%s", out);

    /* text in, text out on the tiny model; the usage rules */
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --prompt 'Hello' --chat --no-think --greedy --max-tokens 6 --stats", CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "prompt tokens, ") && strstr(out, "kernels:"), "%s", out);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2 --chat", CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --prompt a --ids 1", CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --prompt-file /nonexistent", CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "/nonexistent"), "%s", out);

    /* clnpu kernels --model: every source, then the run's variants; afterwards the run builds nothing */
    snprintf(cmd, sizeof cmd, "'%s' kernels --model '%s' --prompt-tokens 24 && '%s' run --model '%s' --ids "
             "296,365,263,313,40,223,311,274,157,172,163,193,185,305,68,221,193,230,243,246,169,257,365,277 -n 4 --stats",
             CLNPU_CLI_PATH, TINY, CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "sources: ") && strstr(out, "more program variants") && strstr(out, "kernels: built 0 programs"), "%s", out);
    ck_assert_msg(!strstr(out, "built ahead"), "the run found programs missing: %s", out); /* its dry pass listed none */
    snprintf(cmd, sizeof cmd, "'%s' kernels --prompt-tokens 3,x", CLNPU_CLI_PATH);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 2);

    /* a chat of two turns: the second prefills only its own tokens */
    snprintf(cmd, sizeof cmd, "printf 'Hi\\nAgain\\n' | '%s' chat --model '%s' --greedy --max-tokens 4 --stats", CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 0);
    const char *t2 = strstr(out, "[turn: ");
    ck_assert_ptr_nonnull(t2);
    t2 = strstr(t2 + 1, "[turn: ");
    ck_assert_msg(t2 && !strstr(t2, "(0 already cached)"), "%s", out);
}
END_TEST

Suite *suite_generate(void)
{
    Suite *s = suite_create("generate");
    TCase *tc = tcase_create("generate");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_generate_second_turn_reuses_cache);
    tcase_add_test(tc, test_generate_stops);
    tcase_add_test(tc, test_text_cli);
    suite_add_tcase(s, tc);
    return s;
}
