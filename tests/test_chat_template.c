/* Chat templates against jinja2: tests/data/chat/cases.json holds what jinja2, set up as
 * transformers sets it, renders for the fixture's ChatML template, DeepSeek-V3's template and a
 * template of other constructs (tools/make_chat_fixture.py); every case must match exactly.
 * Unsupported constructs are errors naming them and their line. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define CHAT CLNPU_SOURCE_DIR "/tests/data/chat"

static char *slurp(const char *path)
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
    return buf;
}

START_TEST(test_chat_template_cases)
{
    char *all = slurp(CHAT "/cases.json");
    cJSON *cases = cJSON_Parse(all), *c;
    ck_assert(cJSON_IsArray(cases));
    size_t n = 0, errors = 0;
    cJSON_ArrayForEach(c, cases) {
        const char *tname = cJSON_GetObjectItem(c, "template")->valuestring;
        char path[512];
        snprintf(path, sizeof path, CHAT "/%s", tname);
        char *src = slurp(path);
        clnpu_chat_template *t;
        ck_assert_ok(clnpu_chat_template_parse(src, tname, &t));
        free(src);
        clnpu_chat_options o = clnpu_chat_options_default();
        o.add_generation_prompt = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
        const cJSON *th = cJSON_GetObjectItem(c, "enable_thinking");
        o.enable_thinking = th ? cJSON_IsTrue(th) : -1;
        o.bos_token = cJSON_GetObjectItem(c, "bos_token")->valuestring;
        o.eos_token = cJSON_GetObjectItem(c, "eos_token")->valuestring;
        char *tools = cJSON_GetObjectItem(c, "tools") ? cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "tools")) : NULL;
        o.tools_json = tools;
        char *msgs = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "messages"));
        char *out = NULL;
        clnpu_status st = clnpu_chat_template_render(t, msgs, &o, &out);
        const cJSON *exp = cJSON_GetObjectItem(c, "expected"), *err = cJSON_GetObjectItem(c, "error");
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        if (exp) {
            ck_assert_msg(st == CLNPU_OK, "%s / %s: %s", tname, name, clnpu_error_message());
            ck_assert_msg(!strcmp(out, exp->valuestring), "%s / %s:\n--- got\n%s\n--- jinja2\n%s", tname, name, out, exp->valuestring);
        } else {
            ck_assert_msg(st != CLNPU_OK, "%s / %s: rendered, jinja2 raised '%s'", tname, name, err->valuestring);
            ck_assert_msg(strstr(clnpu_error_message(), err->valuestring) && strstr(clnpu_error_message(), "line "), "%s", clnpu_error_message());
            errors++;
        }
        free(out), free(msgs), free(tools);
        clnpu_chat_template_free(t);
        n++;
    }
    ck_assert_uint_eq(n, 76);
    ck_assert_uint_eq(errors, 8);
    cJSON_Delete(cases);
    free(all);
}
END_TEST

/* the fixture's tokenizer_config.json: its template, and bos/eos strings become variables */
START_TEST(test_chat_template_load)
{
    clnpu_chat_template *t;
    ck_assert_ok(clnpu_chat_template_load(CLNPU_SOURCE_DIR "/tests/data/tokenizer-bpe", &t));
    clnpu_chat_options o = clnpu_chat_options_default();
    o.enable_thinking = 0;
    char *out;
    ck_assert_ok(clnpu_chat_template_render(t, "[{\"role\":\"user\",\"content\":\"hi\"}]", &o, &out));
    ck_assert_str_eq(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    free(out);
    clnpu_chat_template_free(t);
    ck_assert_int_ne(clnpu_chat_template_load("/nonexistent", &t), CLNPU_OK);
    ck_assert(strstr(clnpu_error_message(), "/nonexistent"));
}
END_TEST

static void expect_error(const char *src, const char *needle, int line)
{
    clnpu_chat_template *t = NULL;
    char *out = NULL;
    clnpu_status st = clnpu_chat_template_parse(src, "t.jinja", &t);
    if (!st) {
        st = clnpu_chat_template_render(t, "[{\"role\":\"user\",\"content\":\"x\"}]", NULL, &out);
        clnpu_chat_template_free(t);
    }
    ck_assert_msg(st != CLNPU_OK, "accepted: %s", src);
    ck_assert_ptr_null(out);
    char want[64];
    snprintf(want, sizeof want, "t.jinja: chat template line %d:", line);
    ck_assert_msg(strstr(clnpu_error_message(), needle) && strstr(clnpu_error_message(), want), "'%s' lacks '%s' / '%s'",
                  clnpu_error_message(), needle, want);
}

START_TEST(test_chat_template_errors)
{
    expect_error("a\n{% macro m() %}{% endmacro %}", "unsupported construct 'macro'", 2);
    expect_error("\n\n{% for m in messages if m.role %}{% endfor %}", "for ... if", 3);
    expect_error("{% raw %}x{% endraw %}", "unsupported construct 'raw'", 1);
    expect_error("x\n{{ messages | map(attribute='role') }}", "unsupported filter 'map'", 2);
    expect_error("{{ x is divisibleby 3 }}", "unsupported test 'divisibleby'", 1);
    expect_error("{% if true %}\nno end", "'if' is never closed", 1);
    expect_error("{% for x in messages %}", "'for' is never closed", 1);
    expect_error("\n{% endif %}", "'endif' without a matching opening tag", 2);
    /* fuzz_text's find: adjacent string literals after an error in the same expression (a NULL node) */
    expect_error("{% for message in messages %{ '<|im_st\x97""rt|>' + messege[' l\xff""\xff""\xff""\xff""\xff""\xff""\xff""]\x0a""' + messagei'content''\xff""\xff"" <]|im_end|>' + '\x0a""' }}{% endfoo %}{% if add_generation_prompt %}{{king is defined and\xd7""\x91""ot enable_thinking %}{{ '<'<|im_start|>assistaz\xff""1ink>\x0a""\x0a""</think>\x0a""\x0a""' }}{% endif %}{% endif %}", "expected ']' but found 'content'", 1);
    expect_error("{{ 'abc }}", "unterminated string", 1);
    expect_error("{{ 1 +  }}", "unexpected 'end of tag'", 1);
    expect_error("{{ x", "never closed", 1);
    expect_error("{{ undefined_thing.attr }}", "undefined", 1);
    expect_error("\n\n{{ raise_exception('no ' ~ 'way') }}", "raise_exception: no way", 3);
    expect_error("{{ 2 ** 3 }}", "'**'", 1);
    expect_error("{% set a, b = 1, 2 %}", "several targets", 1);
    expect_error("{% set x %}y{% endset %}", "'set' block", 1);
    expect_error("{{ messages[0].content.title() }}", "unsupported string method 'title'", 1);
    expect_error("{{ 1 / 0 }}", "division by zero", 1);
}
END_TEST

Suite *suite_chat_template(void)
{
    Suite *s = suite_create("chat_template");
    TCase *tc = tcase_create("chat_template");
    tcase_add_test(tc, test_chat_template_cases);
    tcase_add_test(tc, test_chat_template_load);
    tcase_add_test(tc, test_chat_template_errors);
    suite_add_tcase(s, tc);
    return s;
}
