/* libFuzzer target for the text parsers: tokenizer.json (then an encode and a decode with what
 * loaded), chat templates (then a render), and arbitrary text through a fixed tokenizer. The first
 * byte picks; the rest is the input. Every input must end in CLNPU_OK or a clean error. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clnpu/chat_template.h"
#include "clnpu/tokenizer.h"

static const char fixed[] =
    "{\"added_tokens\":[{\"id\":5,\"content\":\"<s>\",\"special\":true,\"lstrip\":true,\"rstrip\":true}],"
    "\"normalizer\":{\"type\":\"NFKC\"},\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+(?!\\\\S)|\\\\p{L}+|\\\\p{N}{1,3}\"},\"behavior\":\"Isolated\"},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":false}]},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120a\":4},\"merges\":[\"a b\",[\"\\u0120\",\"a\"]]},"
    "\"decoder\":{\"type\":\"ByteLevel\"}}";

static void roundtrip(const clnpu_tokenizer *tok, const char *text, size_t len)
{
    int *ids = NULL;
    size_t n = 0;
    if (clnpu_tokenizer_encode(tok, text, len, &ids, &n) == CLNPU_OK) {
        char *s = NULL;
        if (clnpu_tokenizer_decode(tok, ids, n, &s, NULL) == CLNPU_OK) free(s);
        clnpu_detokenizer *dt;
        if (clnpu_detokenizer_create(tok, &dt) == CLNPU_OK) {
            const char *p;
            size_t pl;
            for (size_t i = 0; i < n; i++) (void)clnpu_detokenizer_push(dt, ids[i], &p, &pl);
            (void)clnpu_detokenizer_flush(dt, &p, &pl);
            clnpu_detokenizer_free(dt);
        }
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *in = (const char *)data + 1;
    const size_t len = size - 1;
    char *text = malloc(len + 1); /* templates and messages are C strings */
    if (!text) return 0;
    memcpy(text, in, len);
    text[len] = '\0';
    switch (data[0] % 3) {
    case 0: {
        clnpu_tokenizer *tok;
        if (clnpu_tokenizer_parse(in, len, "fuzz.json", &tok) == CLNPU_OK) {
            roundtrip(tok, "Hello, 세계! 123 <s> x", strlen("Hello, 세계! 123 <s> x"));
            const int ids[] = {0, 1, 2, 3, 4, 5};
            char *s = NULL;
            if (clnpu_tokenizer_decode(tok, ids, clnpu_tokenizer_vocab_size(tok) > 5 ? 6 : 0, &s, NULL) == CLNPU_OK) free(s);
            clnpu_tokenizer_free(tok);
        }
        break;
    }
    case 1: {
        clnpu_chat_template *t;
        if (clnpu_chat_template_parse(text, "fuzz.jinja", &t) == CLNPU_OK) {
            char *out = NULL;
            clnpu_chat_options o = clnpu_chat_options_default();
            o.tools_json = "[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]";
            if (clnpu_chat_template_render(t, "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"},"
                                              "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"type\":\"function\"}]}]",
                                           &o, &out) == CLNPU_OK)
                free(out);
            clnpu_chat_template_free(t);
        }
        break;
    }
    default: {
        static clnpu_tokenizer *tok;
        if (!tok && clnpu_tokenizer_parse(fixed, strlen(fixed), "fixed.json", &tok) != CLNPU_OK) __builtin_trap();
        roundtrip(tok, in, len);
        break;
    }
    }
    free(text);
    return 0;
}
