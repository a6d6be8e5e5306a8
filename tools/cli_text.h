/* Text around a checkpoint for the CLI: tokenizer, chat template, end-of-sequence ids and
 * sampling defaults read from the checkpoint directory. */
#ifndef CLNPU_CLI_TEXT_H
#define CLNPU_CLI_TEXT_H

#include "cli.h"

#define CLI_MAX_EOS 16

typedef struct cli_text {
    clnpu_tokenizer *tok;
    clnpu_chat_template *tmpl; /* when asked for */
    int eos[CLI_MAX_EOS];      /* config.json, generation_config.json, tokenizer_config.json */
    size_t neos;
    clnpu_sampling samp;       /* generation_config.json (greedy without it) */
    size_t max_new_tokens;     /* generation_config.json max_new_tokens, 0 if absent */
    bool has_generation_config;
} cli_text;

typedef struct cli_message {
    const char *role, *content;
} cli_message;

clnpu_status cli_text_load(const char *dir, bool need_template, cli_text *out);
/* The end-of-sequence ids of DIR's config.json and generation_config.json (for a model without a
 * tokenizer; cli_text_load adds tokenizer_config.json's eos_token): how many went into out. */
size_t cli_eos_ids(const char *dir, int *out, size_t cap);
void cli_text_free(cli_text *t);
char *cli_messages_json(const cli_message *m, size_t n);
/* The template applied to messages; enable_thinking -1 leaves it undefined. */
clnpu_status cli_text_chat_prompt(const cli_text *t, const cli_message *m, size_t n, int enable_thinking, bool generation_prompt,
                                  char **out);
/* A clnpu_token_callback writing each piece to the FILE * in user (stdout when NULL) at once. */
bool cli_stream_token(void *user, size_t seq, int id, const char *text, size_t len);

#endif
