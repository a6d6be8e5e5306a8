/* Machine-readable YAML output through libyaml's emitter (no hand-written quoting); used by the
 * CLI and the planner. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "yaml_out.h"

struct clnpu_yaml {
    yaml_emitter_t em;
    bool ok;
};

static void emit(clnpu_yaml *y, yaml_event_t *ev)
{
    if (y->ok && !yaml_emitter_emit(&y->em, ev)) y->ok = false;
}

clnpu_yaml *clnpu_yaml_begin(FILE *out)
{
    clnpu_yaml *y = calloc(1, sizeof *y);
    if (!y) return NULL;
    y->ok = yaml_emitter_initialize(&y->em);
    yaml_emitter_set_output_file(&y->em, out);
    yaml_emitter_set_unicode(&y->em, 1);
    yaml_event_t ev;
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    emit(y, &ev);
    yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
    emit(y, &ev);
    return y;
}

void clnpu_yaml_map_begin(clnpu_yaml *y)
{
    yaml_event_t ev;
    yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
    emit(y, &ev);
}

void clnpu_yaml_map_end(clnpu_yaml *y)
{
    yaml_event_t ev;
    yaml_mapping_end_event_initialize(&ev);
    emit(y, &ev);
}

void clnpu_yaml_seq_begin(clnpu_yaml *y)
{
    yaml_event_t ev;
    yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
    emit(y, &ev);
}

void clnpu_yaml_seq_end(clnpu_yaml *y)
{
    yaml_event_t ev;
    yaml_sequence_end_event_initialize(&ev);
    emit(y, &ev);
}

static void scalar(clnpu_yaml *y, const char *s, bool plain)
{
    yaml_event_t ev;
    /* Strings may need quotes (the emitter decides); keys and numbers are plain. */
    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 1,
                                 plain ? YAML_PLAIN_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE);
    emit(y, &ev);
}

void clnpu_yaml_str(clnpu_yaml *y, const char *s) { scalar(y, s, false); }

void clnpu_yaml_kv_str(clnpu_yaml *y, const char *k, const char *v)
{
    scalar(y, k, true);
    scalar(y, v, false);
}

void clnpu_yaml_kv_int(clnpu_yaml *y, const char *k, long long v)
{
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    scalar(y, k, true);
    scalar(y, b, true);
}

void clnpu_yaml_kv_num(clnpu_yaml *y, const char *k, double v)
{
    char b[40];
    snprintf(b, sizeof b, "%.6g", v);
    scalar(y, k, true);
    scalar(y, b, true);
}

void clnpu_yaml_kv_bool(clnpu_yaml *y, const char *k, bool v)
{
    scalar(y, k, true);
    scalar(y, v ? "true" : "false", true);
}

bool clnpu_yaml_end(clnpu_yaml *y)
{
    yaml_event_t ev;
    yaml_document_end_event_initialize(&ev, 1);
    emit(y, &ev);
    yaml_stream_end_event_initialize(&ev);
    emit(y, &ev);
    bool ok = y->ok;
    yaml_emitter_delete(&y->em);
    free(y);
    return ok;
}

void clnpu_yaml_flow_seq_begin(clnpu_yaml *y)
{
    yaml_event_t ev;
    yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_FLOW_SEQUENCE_STYLE);
    emit(y, &ev);
}

void clnpu_yaml_key(clnpu_yaml *y, const char *k) { scalar(y, k, true); }

void clnpu_yaml_int(clnpu_yaml *y, long long v)
{
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    scalar(y, b, true);
}

void clnpu_yaml_num(clnpu_yaml *y, double v)
{
    char b[40];
    snprintf(b, sizeof b, "%.6g", v);
    scalar(y, b, true);
}
