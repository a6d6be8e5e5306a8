/* Internal: a small wrapper over libyaml's emitter for writing YAML documents. */
#ifndef CLNPU_YAML_OUT_H
#define CLNPU_YAML_OUT_H
#include <stdbool.h>
#include <stdio.h>

typedef struct clnpu_yaml clnpu_yaml;
clnpu_yaml *clnpu_yaml_begin(FILE *out);
void clnpu_yaml_map_begin(clnpu_yaml *y);
void clnpu_yaml_map_end(clnpu_yaml *y);
void clnpu_yaml_seq_begin(clnpu_yaml *y);
/* A flow-style sequence ([a, b, c]) for short lists. */
void clnpu_yaml_flow_seq_begin(clnpu_yaml *y);
void clnpu_yaml_seq_end(clnpu_yaml *y);
void clnpu_yaml_str(clnpu_yaml *y, const char *s);
void clnpu_yaml_int(clnpu_yaml *y, long long v);
void clnpu_yaml_num(clnpu_yaml *y, double v);
void clnpu_yaml_key(clnpu_yaml *y, const char *key);
void clnpu_yaml_kv_str(clnpu_yaml *y, const char *key, const char *value);
void clnpu_yaml_kv_int(clnpu_yaml *y, const char *key, long long value);
void clnpu_yaml_kv_num(clnpu_yaml *y, const char *key, double value);
void clnpu_yaml_kv_bool(clnpu_yaml *y, const char *key, bool value);
/* Finish the document; false if the emitter failed. */
bool clnpu_yaml_end(clnpu_yaml *y);
#endif
