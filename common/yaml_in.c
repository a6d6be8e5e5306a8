/* Loading one YAML document with the position of a syntax error in the message. */
#include "yaml_in.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

static clnpu_status load(yaml_parser_t *parser, const char *origin, yaml_document_t *doc)
{
    clnpu_status st = CLNPU_OK;
    if (!yaml_parser_load(parser, doc))
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu:%zu: bad YAML: %s", origin, parser->problem_mark.line + 1,
                        parser->problem_mark.column + 1, parser->problem ? parser->problem : "parse error");
    yaml_parser_delete(parser); /* a loaded document does not need its parser */
    return st;
}

clnpu_status clnpu_yaml_load_text(const char *text, size_t len, const char *origin, yaml_document_t *doc)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "%s: cannot start a YAML parser", origin);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    return load(&parser, origin, doc);
}

clnpu_status clnpu_yaml_load_file(const char *path, yaml_document_t *doc)
{
    FILE *f = fopen(path, "rb");
    if (!f) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    yaml_parser_t parser;
    clnpu_status st = CLNPU_OK;
    if (!yaml_parser_initialize(&parser)) {
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "%s: cannot start a YAML parser", path);
    } else {
        yaml_parser_set_input_file(&parser, f);
        st = load(&parser, path, doc);
    }
    fclose(f);
    return st;
}

yaml_node_t *clnpu_yaml_get(yaml_document_t *doc, const yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

const char *clnpu_yaml_scalar(const yaml_node_t *node)
{
    return node && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value : NULL;
}

const char *clnpu_yaml_value(yaml_document_t *doc, const yaml_node_t *map, const char *key)
{
    return clnpu_yaml_scalar(clnpu_yaml_get(doc, map, key));
}

clnpu_status clnpu_yaml_fail_at(const char *origin, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu:%zu: %s", origin, n->start_mark.line + 1, n->start_mark.column + 1, msg);
}
