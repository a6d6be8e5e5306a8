/* Internal: loading one YAML document (libyaml's document API) with errors that say where. */
#ifndef CLNPU_YAML_IN_H
#define CLNPU_YAML_IN_H
#include <stddef.h>
#include <yaml.h>

#include "clnpu/status.h"

/* Parse the first document of text (origin names it in messages) or of the file at path into
 * doc; on failure CLNPU_ERR_PARSE "origin:line:column: bad YAML: ..." (or CLNPU_ERR_IO for a file
 * that cannot be read) and nothing to free. On success free doc with yaml_document_delete. */
clnpu_status clnpu_yaml_load_text(const char *text, size_t len, const char *origin, yaml_document_t *doc);
clnpu_status clnpu_yaml_load_file(const char *path, yaml_document_t *doc);

/* CLNPU_ERR_PARSE with "origin:line:column: " of node n before the formatted message. */
clnpu_status clnpu_yaml_fail_at(const char *origin, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The value under key in a mapping node (NULL when absent or map is not a mapping), and a
 * scalar's text (NULL for anything else). */
yaml_node_t *clnpu_yaml_get(yaml_document_t *doc, const yaml_node_t *map, const char *key);
const char *clnpu_yaml_scalar(const yaml_node_t *node);
/* clnpu_yaml_scalar(clnpu_yaml_get(doc, map, key)) */
const char *clnpu_yaml_value(yaml_document_t *doc, const yaml_node_t *map, const char *key);

#endif
