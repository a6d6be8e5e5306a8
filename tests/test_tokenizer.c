/* The tokenizer against Hugging Face tokenizers: every case of each fixture in tests/data
 * (made by HF; tools/make_tokenizer_fixture.py) must give the same ids and the same decoded
 * text, whole and streamed; bad tokenizer files and inputs get errors naming the problem. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define DATA CLNPU_SOURCE_DIR "/tests/data"

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    ck_assert(buf && fread(buf, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    buf[len] = '\0';
    if (n) *n = (size_t)len;
    return buf;
}

/* Every line of DIR/cases.jsonl: encode, decode, and decode one id at a time. */
static void check_cases(const char *dir, size_t expect_cases)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    clnpu_tokenizer *tok;
    ck_assert_ok(clnpu_tokenizer_load(path, &tok));
    clnpu_detokenizer *dt;
    ck_assert_ok(clnpu_detokenizer_create(tok, &dt));
    snprintf(path, sizeof path, "%s/cases.jsonl", dir);
    char *all = slurp(path, NULL);
    size_t ncase = 0, lineno = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        lineno++;
        cJSON *c = cJSON_Parse(line);
        const cJSON *text = cJSON_GetObjectItem(c, "text"), *ids = cJSON_GetObjectItem(c, "ids"),
                    *dec = cJSON_GetObjectItem(c, "decoded");
        ck_assert_msg(cJSON_IsString(text) && cJSON_IsArray(ids) && cJSON_IsString(dec), "%s:%zu malformed", path, lineno);
        int *got;
        size_t n;
        ck_assert_ok(clnpu_tokenizer_encode(tok, text->valuestring, strlen(text->valuestring), &got, &n));
        size_t want_n = (size_t)cJSON_GetArraySize(ids), i = 0;
        ck_assert_msg(n == want_n, "%s:%zu: %zu ids, HF gives %zu", path, lineno, n, want_n);
        const cJSON *e;
        cJSON_ArrayForEach(e, ids) {
            ck_assert_msg(got[i] == e->valueint, "%s:%zu: id %zu is %d, HF gives %d", path, lineno, i, got[i], e->valueint);
            i++;
        }
        char *s;
        size_t sl;
        ck_assert_ok(clnpu_tokenizer_decode(tok, got, n, &s, &sl));
        ck_assert_msg(sl == strlen(dec->valuestring) && !memcmp(s, dec->valuestring, sl), "%s:%zu: decoded '%s', HF '%s'", path,
                      lineno, s, dec->valuestring);
        /* streaming gives the same text, and never a piece that ends inside a character */
        char *streamed = calloc(sl + 16, 1);
        size_t at = 0;
        clnpu_detokenizer_reset(dt);
        for (size_t k = 0; k <= n; k++) {
            const char *piece;
            size_t pl;
            if (k < n) ck_assert_ok(clnpu_detokenizer_push(dt, got[k], &piece, &pl));
            else ck_assert_ok(clnpu_detokenizer_flush(dt, &piece, &pl));
            ck_assert_msg(at + pl <= sl, "%s:%zu: streamed text runs past the decode", path, lineno);
            if (pl && k < n) {
                unsigned char last = (unsigned char)piece[pl - 1];
                ck_assert_msg(last < 0x80 || (last & 0xC0) == 0x80, "%s:%zu: piece ends with a lead byte", path, lineno);
            }
            memcpy(streamed + at, piece, pl);
            at += pl;
        }
        ck_assert_msg(at == sl && !memcmp(streamed, s, sl), "%s:%zu: streamed '%s', decoded '%s'", path, lineno, streamed, s);
        free(streamed), free(s), free(got);
        cJSON_Delete(c);
        ncase++;
    }
    ck_assert_uint_eq(ncase, expect_cases);
    free(all);
    clnpu_detokenizer_free(dt);
    clnpu_tokenizer_free(tok);
}

/* the fixture: DeepSeek-V3's pre-tokenizer, 566 cases from HF */
START_TEST(test_tokenizer_fixture_bpe) { check_cases(DATA "/tokenizer-bpe", 566); }
END_TEST

/* NFC, another split regex with a case-insensitive group, Digits, Metaspace, byte_fallback,
 * added tokens with lstrip / rstrip / single_word / normalized */
START_TEST(test_tokenizer_fixture_nfc_bytefallback) { check_cases(DATA "/tokenizer-nfc", 355); }
END_TEST

/* NFKC, Split with every behaviour and invert, ByteLevel with its regex and prefix space, ignore_merges */
START_TEST(test_tokenizer_fixture_behaviours) { check_cases(DATA "/tokenizer-behaviours", 334); }
END_TEST

START_TEST(test_tokenizer_tiny_model)
{
    clnpu_tokenizer *tok;
    ck_assert_ok(clnpu_tokenizer_load(CLNPU_SOURCE_DIR "/models/tiny-axk1", &tok));
    ck_assert_uint_eq(clnpu_tokenizer_vocab_size(tok), 384);
    ck_assert_int_eq(clnpu_tokenizer_token_id(tok, "<|im_end|>"), 2);
    ck_assert(clnpu_tokenizer_is_special(tok, 2));
    const char *text = "안녕, A.X K1! <|im_start|>user\n12345 naïve 👩‍👩‍👧";
    int *ids;
    size_t n;
    ck_assert_ok(clnpu_tokenizer_encode(tok, text, strlen(text), &ids, &n));
    ck_assert_uint_gt(n, 10);
    bool has_special = false;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_lt(ids[i], 384);
        has_special |= ids[i] == 3;
    }
    ck_assert(has_special);
    char *s;
    ck_assert_ok(clnpu_tokenizer_decode(tok, ids, n, &s, NULL));
    ck_assert_str_eq(s, text);
    free(s), free(ids);
    clnpu_tokenizer_free(tok);
}
END_TEST

static void expect_parse_error(const char *json, const char *needle)
{
    clnpu_tokenizer *tok = (clnpu_tokenizer *)1;
    clnpu_status st = clnpu_tokenizer_parse(json, strlen(json), "bad.json", &tok);
    ck_assert_msg(st != CLNPU_OK, "accepted: %s", json);
    ck_assert_ptr_null(tok);
    ck_assert_msg(strstr(clnpu_error_message(), needle) && strstr(clnpu_error_message(), "bad.json"), "message '%s' lacks '%s'",
                  clnpu_error_message(), needle);
}

#define MODEL "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"

START_TEST(test_tokenizer_errors)
{
    expect_parse_error("{", "malformed JSON");
    expect_parse_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "WordPiece");
    expect_parse_error("{\"normalizer\":{\"type\":\"Lowercase\"}," MODEL "}", "Lowercase");
    expect_parse_error("{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Punctuation\"}]}," MODEL "}",
                       "Punctuation");
    expect_parse_error("{\"decoder\":{\"type\":\"WordPiece\"}," MODEL "}", "decoder type 'WordPiece'");
    expect_parse_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}," MODEL "}",
                       "regex '('");
    expect_parse_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"}," MODEL "}",
                       "Sideways");
    expect_parse_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}", "\"ab\" is not in the vocabulary");
    expect_parse_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", "id 0");
    expect_parse_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}", "not a valid id");
    expect_parse_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a\"]}}", "merge 0");
    expect_parse_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[],\"unk_token\":\"<unk>\"}}", "unk_token");

    clnpu_tokenizer *tok;
    const char *ok = "{" MODEL "}";
    ck_assert_ok(clnpu_tokenizer_parse(ok, strlen(ok), "ok.json", &tok));
    int *ids;
    size_t n;
    ck_assert_ok(clnpu_tokenizer_encode(tok, "aab", 3, &ids, &n));
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], 0);
    ck_assert_int_eq(ids[1], 2);
    free(ids);
    ck_assert_int_ne(clnpu_tokenizer_encode(tok, "a\xff", 2, &ids, &n), CLNPU_OK);
    ck_assert(strstr(clnpu_error_message(), "UTF-8"));
    char *s;
    const int bad[] = {0, 7};
    ck_assert_int_ne(clnpu_tokenizer_decode(tok, bad, 2, &s, NULL), CLNPU_OK);
    ck_assert(strstr(clnpu_error_message(), "id 7"));
    clnpu_tokenizer_free(tok);
    ck_assert_int_ne(clnpu_tokenizer_load("/nonexistent/dir", &tok), CLNPU_OK);
    ck_assert(strstr(clnpu_error_message(), "/nonexistent/dir/tokenizer.json"));
}
END_TEST

Suite *suite_tokenizer(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_tokenizer_fixture_bpe);
    tcase_add_test(tc, test_tokenizer_fixture_nfc_bytefallback);
    tcase_add_test(tc, test_tokenizer_fixture_behaviours);
    tcase_add_test(tc, test_tokenizer_tiny_model);
    tcase_add_test(tc, test_tokenizer_errors);
    suite_add_tcase(s, tc);
    return s;
}
