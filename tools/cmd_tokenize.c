/* `clnpu tokenize DIR` / `clnpu detokenize DIR`: a checkpoint's tokenizer.json on stdin text or
 * ids, whole input or one JSON value per line (--jsonl). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char tok_usage[] = "clnpu tokenize DIR [--jsonl]   (DIR holds tokenizer.json; text on stdin)";
static const char detok_usage[] = "clnpu detokenize DIR [--jsonl]   (ids on stdin)";

static char *read_stdin(size_t *out_n)
{
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap);
    while (buf && (r = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    if (buf) buf[n] = '\0';
    *out_n = n;
    return buf;
}

static int parse_args(int argc, char **argv, const char *cmd, const char *usage, const char **dir, bool *jsonl)
{
    static const struct option longopts[] = {{"jsonl", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            printf("usage: %s\n\n%s\n", usage,
                   !strcmp(cmd, "tokenize")
                       ? "Encodes UTF-8 text from stdin (exactly as given, a final newline included) with DIR/tokenizer.json\n"
                         "as Hugging Face tokenizers does without added special tokens; prints the ids comma-separated.\n"
                         "--jsonl: each input line is a JSON string; each output line the JSON array of its ids."
                       : "Decodes comma-separated ids from stdin with DIR/tokenizer.json (special tokens kept) and prints\n"
                         "the text. --jsonl: each input line is a JSON array of ids; each output line a JSON string.");
            return CLI_EXIT_OK;
        }
        if (opt == 'j') *jsonl = true;
        else return cli_usage_error(cmd, usage, "unknown option '%s'", argv[optind - 1]);
    }
    if (optind + 1 != argc) return cli_usage_error(cmd, usage, "give one tokenizer directory (or tokenizer.json)");
    *dir = argv[optind];
    return -1;
}

/* Ids separated by commas or whitespace; false (with *bad) on anything else. */
static bool parse_ids(char *s, int **ids, size_t *n, const char **bad)
{
    size_t cap = 64;
    *n = 0;
    if (!(*ids = malloc(cap * sizeof **ids))) return false;
    for (char *p = s; *p;) {
        if (strchr(", \t\r\n", *p)) {
            p++;
            continue;
        }
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 0x7fffffff || (*end && !strchr(", \t\r\n", *end))) {
            *bad = p;
            return false;
        }
        if (*n == cap) {
            int *ni = realloc(*ids, (cap *= 2) * sizeof *ni);
            if (!ni) return false;
            *ids = ni;
        }
        (*ids)[(*n)++] = (int)v;
        p = end;
    }
    return true;
}

static int run(int argc, char **argv, bool decode)
{
    const char *cmd = decode ? "detokenize" : "tokenize", *usage = decode ? detok_usage : tok_usage, *dir = NULL;
    bool jsonl = false;
    int rc = parse_args(argc, argv, cmd, usage, &dir, &jsonl);
    if (rc >= 0) return rc;
    clnpu_tokenizer *tok;
    clnpu_status st = clnpu_tokenizer_load(dir, &tok);
    if (st) return cli_fail(cmd, st);
    size_t len;
    char *in = read_stdin(&len);
    if (!in) {
        clnpu_tokenizer_free(tok);
        fprintf(stderr, "clnpu %s: error: cannot read stdin\n", cmd);
        return CLI_EXIT_FAIL;
    }
    rc = CLI_EXIT_OK;
    size_t lineno = 0;
    for (char *line = in, *next; line && rc == CLI_EXIT_OK; line = next) {
        /* whole input at once, or one line at a time */
        size_t ll = len - (size_t)(line - in);
        next = NULL;
        if (jsonl) {
            char *nl = memchr(line, '\n', ll);
            if (nl) *nl = '\0', ll = (size_t)(nl - line), next = nl + 1;
            lineno++;
            if (!ll && !next) break;
        }
        int *ids = NULL;
        size_t n = 0;
        if (!decode) {
            const char *text = line;
            size_t tl = ll;
            cJSON *j = NULL;
            if (jsonl) {
                j = cJSON_ParseWithLength(line, ll);
                if (!cJSON_IsString(j)) {
                    fprintf(stderr, "clnpu tokenize: error: stdin line %zu is not a JSON string\n", lineno);
                    cJSON_Delete(j);
                    rc = CLI_EXIT_FAIL;
                    break;
                }
                text = j->valuestring, tl = strlen(text);
            }
            st = clnpu_tokenizer_encode(tok, text, tl, &ids, &n);
            cJSON_Delete(j);
            if (st) {
                if (jsonl) fprintf(stderr, "clnpu tokenize: stdin line %zu:\n", lineno);
                rc = cli_fail(cmd, st);
                break;
            }
            if (jsonl) putchar('[');
            for (size_t i = 0; i < n; i++) printf(i ? (jsonl ? ", %d" : ",%d") : "%d", ids[i]);
            puts(jsonl ? "]" : "");
        } else {
            const char *bad = NULL;
            bool ok;
            if (jsonl) {
                cJSON *j = cJSON_ParseWithLength(line, ll), *e;
                ok = cJSON_IsArray(j) && (ids = malloc(((size_t)cJSON_GetArraySize(j) + 1) * sizeof *ids)) != NULL;
                cJSON *arr = ok ? j : NULL;
                cJSON_ArrayForEach(e, arr) {
                    if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 0x7fffffff || e->valuedouble != (double)e->valueint) ok = false;
                    else ids[n++] = e->valueint;
                }
                cJSON_Delete(j);
                if (!ok) fprintf(stderr, "clnpu detokenize: error: stdin line %zu is not a JSON array of ids\n", lineno);
            } else {
                ok = parse_ids(line, &ids, &n, &bad);
                if (!ok) fprintf(stderr, "clnpu detokenize: error: stdin: '%.20s' is not a token id\n", bad ? bad : "");
            }
            if (!ok) {
                free(ids);
                rc = CLI_EXIT_FAIL;
                break;
            }
            char *text;
            size_t tl;
            st = clnpu_tokenizer_decode(tok, ids, n, &text, &tl);
            if (st) {
                free(ids);
                if (jsonl) fprintf(stderr, "clnpu detokenize: stdin line %zu:\n", lineno);
                rc = cli_fail(cmd, st);
                break;
            }
            if (jsonl) {
                cJSON *s = cJSON_CreateString(text);
                char *p = s ? cJSON_PrintUnformatted(s) : NULL;
                if (p) puts(p);
                else rc = CLI_EXIT_FAIL;
                free(p);
                cJSON_Delete(s);
            } else
                fwrite(text, 1, tl, stdout);
            free(text);
        }
        free(ids);
    }
    fflush(stdout);
    free(in);
    clnpu_tokenizer_free(tok);
    return rc;
}

int cmd_tokenize(int argc, char **argv) { return run(argc, argv, false); }
int cmd_detokenize(int argc, char **argv) { return run(argc, argv, true); }
