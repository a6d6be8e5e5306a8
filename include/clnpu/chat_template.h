/* A checkpoint's chat template (the Jinja subset Hugging Face chat templates use) rendered into
 * the prompt text, as transformers' apply_chat_template does (trim_blocks, lstrip_blocks). From
 * examples/chat.c (messages: a JSON array of {"role", "content"}):
 *
 *     CHECK(clnpu_chat_template_load(dir, &tmpl));         // chat_template.jinja or tokenizer_config.json
 *     clnpu_chat_options co = clnpu_chat_options_default();
 *     co.enable_thinking = 0;                             // as --no-think
 *     CHECK(clnpu_chat_template_render(tmpl, messages, &co, &prompt));
 *     clnpu_chat_template_free(tmpl);
 *
 * Supported: text, {{ }}, {% if / elif / else %}, {% for x in y %} (and `for k, v in`), {% set x = ... %}
 * and {% set ns.attr = ... %}, whitespace control (-), comments; expressions with literals, lists,
 * dicts, member and index access, slices, + - * / // % ~, comparisons, in / not in, and / or / not,
 * a if c else b; loop.index0 / index / first / last / length; filters trim, length, count, tojson,
 * upper, lower, default, first, last, join, string, int, list, items, reverse, replace, safe;
 * tests defined, undefined, none, string, number, integer, boolean, mapping, sequence, iterable,
 * true, false; namespace(), raise_exception(), range(); string methods strip / lstrip / rstrip /
 * startswith / endswith / split / upper / lower / replace, dict methods get / items / keys / values.
 * Anything else is an error naming the construct and its line.
 *
 * Thread safety: a parsed template is read-only; renders may run on several threads.
 */
#ifndef CLNPU_CHAT_TEMPLATE_H
#define CLNPU_CHAT_TEMPLATE_H

#include <stdbool.h>

#include "clnpu/export.h"
#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnpu_chat_template clnpu_chat_template;

/* Parse template source; origin names it in messages ("tokenizer_config.json"). */
CLNPU_API clnpu_status clnpu_chat_template_parse(const char *source, const char *origin, clnpu_chat_template **out_tmpl);
/* A model directory's template: chat_template.jinja, else tokenizer_config.json's "chat_template"
 * (a string, or a list of {name, template}: "default" is taken). Its bos_token / eos_token strings
 * become the template's variables of the same names. */
CLNPU_API clnpu_status clnpu_chat_template_load(const char *model_dir, clnpu_chat_template **out_tmpl);
CLNPU_API void clnpu_chat_template_free(clnpu_chat_template *tmpl);

typedef struct clnpu_chat_options {
    bool add_generation_prompt;
    int enable_thinking;    /* -1: undefined (the template's default), 0 false, 1 true */
    const char *tools_json; /* a JSON array for `tools`, or NULL (undefined) */
    const char *bos_token, *eos_token; /* override the loaded ones (NULL: keep) */
} clnpu_chat_options;

CLNPU_API clnpu_chat_options clnpu_chat_options_default(void); /* generation prompt on, thinking undefined */

/* messages_json: a JSON array of {"role", "content", ...} objects. *out_text is malloc'd. */
CLNPU_API clnpu_status clnpu_chat_template_render(const clnpu_chat_template *tmpl, const char *messages_json,
                                        const clnpu_chat_options *opt, char **out_text);

#ifdef __cplusplus
}
#endif
#endif
