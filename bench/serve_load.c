/* A light load generator for `clnpu serve` (bench/serve_bench.py drives it): N streaming greedy
 * requests at once to 127.0.0.1:PORT, each a prompt of PLEN random ids and TOKENS new tokens,
 * timing every token as its SSE chunk arrives. Written in C so that on a small machine the
 * clients do not take the cores the server is measured on. Prints one JSON line:
 * {"rate": decode tokens/s while all N streams decode, "ttft": [...], "itl_p50", "itl_p99"}.
 * Usage: serve_load PORT N PLEN TOKENS VOCAB [SEED] */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef struct client {
    unsigned port;
    int plen, tokens, vocab;
    unsigned seed;
    double t0, *stamps;
    int n;
    int ok;
} client;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Counts the ids inside each "token_ids":[...] of the bytes seen so far (a chunk may be split
 * between reads, so scanning resumes at the last complete chunk). */
static int count_ids(const char *s, const char *end)
{
    int n = 0;
    for (const char *p = s; p < end && (p = strstr(p, "\"token_ids\":[")); p++) {
        p += 13;
        if (*p == ']') continue;
        n++;
        for (; p < end && *p != ']'; p++) n += *p == ',';
    }
    return n;
}

static void *run(void *arg)
{
    client *c = arg;
    c->stamps = calloc((size_t)c->tokens + 1, sizeof *c->stamps);
    char body[16384];
    int k = snprintf(body, sizeof body, "{\"prompt\":[");
    for (int i = 0; i < c->plen; i++) k += snprintf(body + k, sizeof body - k, i ? ",%d" : "%d", 3 + (int)(rand_r(&c->seed) % (unsigned)(c->vocab - 3)));
    k += snprintf(body + k, sizeof body - k, "],\"max_tokens\":%d,\"temperature\":0,\"stream\":true}", c->tokens);
    char req[17000];
    int rn = snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", k, body);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {300, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    c->t0 = now_s();
    if (connect(fd, (struct sockaddr *)&a, sizeof a) || send(fd, req, (size_t)rn, MSG_NOSIGNAL) != rn) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0, scanned = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = recv(fd, buf + len, cap - len - 1, 0)) > 0) {
        len += (size_t)r;
        buf[len] = '\0';
        const double t = now_s();
        char *last = NULL; /* the end of the last complete SSE event */
        for (char *p = buf + scanned; (p = strstr(p, "\n\n")); p += 2) last = p + 2;
        if (last) {
            const int got = count_ids(buf + scanned, last);
            for (int i = 0; i < got && c->n < c->tokens; i++) c->stamps[c->n++] = t;
            scanned = (size_t)(last - buf);
        }
        if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
    }
    c->ok = strstr(buf, "data: [DONE]") != NULL;
    free(buf);
    close(fd);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: serve_load PORT N PLEN TOKENS VOCAB [SEED]\n");
        return 2;
    }
    const int N = atoi(argv[2]);
    client *c = calloc((size_t)N, sizeof *c);
    pthread_t *th = calloc((size_t)N, sizeof *th);
    for (int i = 0; i < N; i++) {
        c[i] = (client){(unsigned)atoi(argv[1]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]),
                        (unsigned)(argc > 6 ? atoi(argv[6]) : 1) * 7919u + (unsigned)i, 0, NULL, 0, 0};
        pthread_create(&th[i], NULL, run, &c[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    double start = 0, end = 1e300;
    size_t nitl = 0;
    double *itl = malloc(sizeof *itl * (size_t)N * (size_t)(c[0].tokens + 1));
    int ok = 1;
    for (int i = 0; i < N; i++) {
        ok &= c[i].ok && c[i].n > 0;
        if (!c[i].n) continue;
        if (c[i].stamps[0] > start) start = c[i].stamps[0];
        if (c[i].stamps[c[i].n - 1] < end) end = c[i].stamps[c[i].n - 1];
        for (int k = 1; k < c[i].n; k++) itl[nitl++] = c[i].stamps[k] - c[i].stamps[k - 1];
    }
    long inside = 0;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < c[i].n; k++) inside += c[i].stamps[k] > start && c[i].stamps[k] <= end;
    qsort(itl, nitl, sizeof *itl, cmp);
    printf("{\"ok\": %s, \"rate\": %.3f, \"itl_p50\": %.6f, \"itl_p99\": %.6f, \"ttft\": [", ok ? "true" : "false",
           end > start ? inside / (end - start) : 0.0, nitl ? itl[nitl / 2] : 0.0, nitl ? itl[nitl * 99 / 100] : 0.0);
    for (int i = 0; i < N; i++) printf(i ? ", %.6f" : "%.6f", c[i].n ? c[i].stamps[0] - c[i].t0 : -1.0);
    printf("]}\n");
    return ok ? 0 : 1;
}
