/* The serving engine without HTTP: one model, the engine's loop on its own thread, one greedy
 * request whose tokens arrive as events on that thread. Usage: engine MODEL_DIR [NEW_TOKENS]
 * (default 4); prints the ids, which equal `generate MODEL_DIR NEW_TOKENS`. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "clnpu/clnpu.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        clnpu_status st_ = (call);                                                                 \
        if (st_ != CLNPU_OK) {                                                                     \
            fprintf(stderr, "engine: %s: %s (%s)\n", #call, clnpu_error_message(), clnpu_status_name(st_)); \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

typedef struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ids[64];
    size_t n;
    clnpu_engine_finish finish; /* NONE until the last event */
} result;

/* On the engine's thread: copy and signal, nothing slow. */
static bool my_fn(void *user, const clnpu_engine_event *ev)
{
    result *me = user;
    pthread_mutex_lock(&me->mu);
    if (ev->token >= 0 && me->n < 64) me->ids[me->n++] = ev->token;
    if (ev->finish != CLNPU_ENGINE_FINISH_NONE) me->finish = ev->finish;
    pthread_cond_signal(&me->cv);
    pthread_mutex_unlock(&me->mu);
    return false; /* do not stop early */
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: engine MODEL_DIR [NEW_TOKENS]\n");
        return 2;
    }
    const size_t n_new = argc > 2 ? strtoul(argv[2], NULL, 10) : 4;
    const int ids[] = {1, 2, 3};
    const size_t n = 3;
    int rc = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", argv[1]);
    clnpu_device *dev = NULL;
    clnpu_checkpoint *ck = NULL;
    clnpu_model *model = NULL;
    clnpu_engine *e = NULL;
    result me = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, CLNPU_ENGINE_FINISH_NONE};

    clnpu_model_config cfg;
    CHECK(clnpu_model_config_load(path, &cfg));
    CHECK(clnpu_checkpoint_open(argv[1], &ck));
    CHECK(clnpu_device_open(0, NULL, &dev));
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 2, o.max_context = 64;
    CHECK(clnpu_model_create(dev, &cfg, ck, &o, &model));
    clnpu_engine_options eo = clnpu_engine_options_default();
    CHECK(clnpu_engine_create(model, &eo, &e));
    CHECK(clnpu_engine_start(e)); /* its loop on a thread of its own */
    clnpu_engine_request rq = {.prompt = ids, .prompt_len = n, .max_tokens = n_new, .on_event = my_fn, .user = &me};
    uint64_t id;
    CHECK(clnpu_engine_submit(e, &rq, &id)); /* my_fn sees each token, then the end */
    pthread_mutex_lock(&me.mu);
    while (me.finish == CLNPU_ENGINE_FINISH_NONE) pthread_cond_wait(&me.cv, &me.mu);
    pthread_mutex_unlock(&me.mu);
    for (size_t i = 0; i < me.n; i++) printf(i ? ",%d" : "%d", me.ids[i]);
    printf("\n");
    rc = me.finish == CLNPU_ENGINE_FINISH_LENGTH && me.n == n_new ? 0 : 1;
done:
    clnpu_engine_destroy(e); /* cancels what is left, stops the thread; the model stays */
    clnpu_model_destroy(model);
    clnpu_checkpoint_close(ck);
    clnpu_device_close(dev);
    return rc;
}
