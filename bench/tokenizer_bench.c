/* Load a tokenizer.json and encode a text file, timed: one JSON line with the load and encode
 * times, the id count and a checksum of the ids (bench/tokenizer_compare.py compares it with
 * HF tokenizers on the same text in the same run). Single thread. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clnpu/tokenizer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: tokenizer_bench TOKENIZER.json TEXT_FILE REPEATS [lines]\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) return perror(argv[2]), 1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) return fprintf(stderr, "cannot read %s\n", argv[2]), 1;
    fclose(f);
    double t0 = now_s();
    clnpu_tokenizer *tok;
    if (clnpu_tokenizer_load(argv[1], &tok)) return fprintf(stderr, "%s\n", clnpu_error_message()), 1;
    double load = now_s() - t0, best = 1e30;
    int *ids = NULL;
    size_t nids = 0;
    for (int r = 0; r < atoi(argv[3]); r++) {
        free(ids);
        ids = NULL;
        t0 = now_s();
        if (argc == 5) { /* each line on its own (the newlines not encoded), ids concatenated */
            size_t cap = 0;
            nids = 0;
            for (char *p = text, *end = text + n; p < end;) {
                char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
                int *li;
                size_t ln;
                if (clnpu_tokenizer_encode(tok, p, len, &li, &ln)) return fprintf(stderr, "%s\n", clnpu_error_message()), 1;
                if (nids + ln > cap) ids = realloc(ids, (cap = 2 * (nids + ln) + 1024) * sizeof *ids);
                if (ln) memcpy(ids + nids, li, ln * sizeof *ids);
                nids += ln;
                free(li);
                p += len + 1;
            }
        } else if (clnpu_tokenizer_encode(tok, text, (size_t)n, &ids, &nids))
            return fprintf(stderr, "%s\n", clnpu_error_message()), 1;
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    uint64_t sum = 1469598103934665603ULL;
    for (size_t i = 0; i < nids; i++) sum = (sum ^ (uint64_t)ids[i]) * 1099511628211ULL;
    printf("{\"load_s\": %.4f, \"encode_s\": %.4f, \"bytes\": %ld, \"ids\": %zu, \"vocab\": %zu, \"checksum\": \"%016llx\"}\n", load,
           best, n, nids, clnpu_tokenizer_vocab_size(tok), (unsigned long long)sum);
    free(ids), free(text);
    clnpu_tokenizer_free(tok);
    return 0;
}
