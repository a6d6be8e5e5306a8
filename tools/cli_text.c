/* Text around a checkpoint for `clnpu run` and `clnpu chat`: its tokenizer and chat template, the
 * end-of-sequence ids of config.json / generation_config.json / tokenizer_config.json, sampling
 * defaults from generation_config.json, and streaming to stdout. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli_text.h"

static cJSON *read_json(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* a regular file under a size cap: a FIFO would block fopen, a directory's ftell is LLONG_MAX */
    char err[4200];
    size_t n;
    char *buf = cli_read_file(path, (size_t)64 << 20, &n, err, sizeof err);
    cJSON *j = buf ? cJSON_ParseWithLength(buf, n) : NULL;
    free(buf);
    return j;
}

static void add_eos(int *eos, size_t *n, size_t cap, int id)
{
    if (id < 0) return;
    for (size_t i = 0; i < *n; i++)
        if (eos[i] == id) return;
    if (*n < cap) eos[(*n)++] = id;
}

/* An eos_token_id: an id or a list; ids range-checked before the cast (1e300 as an int is undefined). */
static void add_eos_json(int *eos, size_t *n, size_t cap, const cJSON *v)
{
#define EOS_OK(x) (cJSON_IsNumber(x) && (x)->valuedouble >= 0 && (x)->valuedouble <= 2147483647.0)
    const cJSON *e;
    if (EOS_OK(v)) add_eos(eos, n, cap, (int)v->valuedouble);
    const cJSON *list = cJSON_IsArray(v) ? v : NULL;
    cJSON_ArrayForEach(e, list) if (EOS_OK(e)) add_eos(eos, n, cap, (int)e->valuedouble);
#undef EOS_OK
}

size_t cli_eos_ids(const char *dir, int *out, size_t cap)
{
    size_t n = 0;
    cJSON *cfg = read_json(dir, "config.json"), *gen = read_json(dir, "generation_config.json");
    add_eos_json(out, &n, cap, cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id"));
    add_eos_json(out, &n, cap, cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id"));
    cJSON_Delete(cfg), cJSON_Delete(gen);
    return n;
}

clnpu_status cli_text_load(const char *dir, bool need_template, cli_text *t)
{
    memset(t, 0, sizeof *t);
    t->samp.top_p = 1;
    clnpu_status st = clnpu_tokenizer_load(dir, &t->tok);
    if (st) return st;
    if (need_template && (st = clnpu_chat_template_load(dir, &t->tmpl))) return st;
    cJSON *cfg = read_json(dir, "config.json"), *gen = read_json(dir, "generation_config.json"),
          *tc = read_json(dir, "tokenizer_config.json");
    add_eos_json(t->eos, &t->neos, CLI_MAX_EOS, cJSON_GetObjectItemCaseSensitive(cfg, "eos_token_id"));
    add_eos_json(t->eos, &t->neos, CLI_MAX_EOS, cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id"));
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(tc, "eos_token");
    const char *es = cJSON_IsString(eos) ? eos->valuestring : cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(eos, "content"));
    if (es) add_eos(t->eos, &t->neos, CLI_MAX_EOS, clnpu_tokenizer_token_id(t->tok, es));
    if (gen) {
        /* transformers' defaults where a key is absent: greedy unless do_sample */
        const cJSON *v;
        bool sample = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(gen, "do_sample"));
        if (sample) {
            t->samp.temperature = 1;
            if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(gen, "temperature"))) t->samp.temperature = (float)v->valuedouble;
            t->samp.top_k = 50;
            if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(gen, "top_k"))) t->samp.top_k = v->valuedouble > 0 ? (unsigned)v->valuedouble : 0;
            if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(gen, "top_p"))) t->samp.top_p = (float)v->valuedouble;
        }
        if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(gen, "max_new_tokens")) && v->valuedouble > 0)
            t->max_new_tokens = (size_t)v->valuedouble;
        t->has_generation_config = true;
    }
    cJSON_Delete(cfg), cJSON_Delete(gen), cJSON_Delete(tc);
    return CLNPU_OK;
}

void cli_text_free(cli_text *t)
{
    clnpu_tokenizer_free(t->tok);
    clnpu_chat_template_free(t->tmpl);
    memset(t, 0, sizeof *t);
}

char *cli_messages_json(const cli_message *m, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "role", m[i].role);
        cJSON_AddStringToObject(o, "content", m[i].content);
        cJSON_AddItemToArray(a, o);
    }
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

clnpu_status cli_text_chat_prompt(const cli_text *t, const cli_message *m, size_t n, int enable_thinking, bool generation_prompt,
                                  char **out)
{
    char *msgs = cli_messages_json(m, n);
    if (!msgs) return CLNPU_ERR_OUT_OF_MEMORY;
    clnpu_chat_options o = clnpu_chat_options_default();
    o.enable_thinking = enable_thinking;
    o.add_generation_prompt = generation_prompt;
    clnpu_status st = clnpu_chat_template_render(t->tmpl, msgs, &o, out);
    free(msgs);
    return st;
}

bool cli_stream_token(void *user, size_t seq, int id, const char *text, size_t len)
{
    (void)seq, (void)id;
    FILE *f = user ? (FILE *)user : stdout;
    if (len) {
        fwrite(text, 1, len, f);
        fflush(f);
    }
    return true;
}
