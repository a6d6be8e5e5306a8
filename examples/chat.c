/* Text in, text out with the public API: a checkpoint's tokenizer and chat template, and the
 * generation loop streaming the reply. Usage: chat MODEL_DIR "question" [NEW_TOKENS] (default 16);
 * prints the prompt's token count, then the reply (greedy; the tiny model's weights are random).
 * The same as `clnpu run --model MODEL_DIR --prompt "question" --chat --greedy --max-tokens N`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnpu/clnpu.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        clnpu_status st_ = (call);                                                                 \
        if (st_ != CLNPU_OK) {                                                                     \
            fprintf(stderr, "chat: %s: %s (%s)\n", #call, clnpu_error_message(), clnpu_status_name(st_)); \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

static bool print_piece(void *user, size_t seq, int id, const char *text, size_t len)
{
    (void)user, (void)seq, (void)id;
    fwrite(text, 1, len, stdout); /* whole UTF-8 characters */
    fflush(stdout);
    return true;                  /* false would end the turn */
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: chat MODEL_DIR \"question\" [NEW_TOKENS]\n");
        return 2;
    }
    const char *dir = argv[1];
    int rc = 1, *ids = NULL;
    size_t n = 0;
    char path[4096], *prompt = NULL, *messages = NULL;
    clnpu_tokenizer *tok = NULL;
    clnpu_chat_template *tmpl = NULL;
    clnpu_device *dev = NULL;
    clnpu_checkpoint *ck = NULL;
    clnpu_model *m = NULL;
    clnpu_generator *g = NULL;
    clnpu_model_config cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(clnpu_tokenizer_load(dir, &tok));              // DIR/tokenizer.json
    CHECK(clnpu_chat_template_load(dir, &tmpl));         // chat_template.jinja or tokenizer_config.json
    messages = malloc(strlen(argv[2]) * 6 + 64);         // the question as a JSON string (escapes: at most \u00XX per byte)
    if (!messages) goto done;
    char *w = messages + sprintf(messages, "[{\"role\":\"user\",\"content\":\"");
    for (const unsigned char *c = (const unsigned char *)argv[2]; *c; c++)
        w += *c == '"' || *c == '\\' ? sprintf(w, "\\%c", *c) : *c < 0x20 ? sprintf(w, "\\u%04x", *c) : sprintf(w, "%c", *c);
    strcpy(w, "\"}]");
    clnpu_chat_options co = clnpu_chat_options_default();
    co.enable_thinking = 0;                             // as --no-think
    CHECK(clnpu_chat_template_render(tmpl, messages, &co, &prompt));
    CHECK(clnpu_tokenizer_encode(tok, prompt, strlen(prompt), &ids, &n));
    printf("prompt: %zu tokens\n", n);
    CHECK(clnpu_model_config_load(path, &cfg));
    CHECK(clnpu_device_open(0, NULL, &dev));
    CHECK(clnpu_checkpoint_open(dir, &ck));
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 1, o.max_context = 256;
    CHECK(clnpu_model_create(dev, &cfg, ck, &o, &m));
    clnpu_generator_options go = {.model = m, .device = dev, .tokenizer = tok, .vocab_size = cfg.vocab_size,
                                  .max_sequences = 1, .max_context = 256};
    CHECK(clnpu_generator_create(&go, &g));
    clnpu_generate_config gc = clnpu_generate_config_default(); // greedy
    gc.max_tokens = argc > 3 ? (size_t)atoi(argv[3]) : 16;
    int eos = clnpu_tokenizer_token_id(tok, "<|im_end|>");
    gc.eos_ids = &eos, gc.n_eos = eos >= 0;
    CHECK(clnpu_generator_start(g, 0, ids, n, &gc, NULL));      // prefill
    CHECK(clnpu_generator_run(g, print_piece, NULL));           // until EOS or max_tokens
    printf("\n[%s]\n", clnpu_finish_reason_name(clnpu_generator_finish_reason(g, 0)));
    rc = 0;
done:
    clnpu_generator_destroy(g);
    clnpu_model_destroy(m);
    clnpu_checkpoint_close(ck);
    clnpu_device_close(dev);
    clnpu_chat_template_free(tmpl);
    clnpu_tokenizer_free(tok);
    free(ids), free(prompt), free(messages);
    return rc;
}
