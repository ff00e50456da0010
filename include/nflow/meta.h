/* nflow/meta.h — a small string-to-string map in insertion order: the
   provenance of a model file ("data", "iterations", "test_nll", ...). */
#ifndef NFLOW_META_H
#define NFLOW_META_H

#include <stddef.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_meta nf_meta;

/* An empty map; NULL (with nf_errmsg) on no memory. */
nf_meta *nf_meta_new(void);

/* Frees the map and its strings (NULL is a no-op). */
void nf_meta_free(nf_meta *m);

/* Sets key to a copy of value, replacing the value of an existing key (which
   keeps its place). NF_EINVAL on a NULL argument, NF_ENOMEM; m unchanged on failure. */
nf_status nf_meta_set(nf_meta *m, const char *key, const char *value);

/* The value of key (valid until it is replaced or m freed); NULL if absent or
   an argument is NULL. */
const char *nf_meta_get(const nf_meta *m, const char *key);

/* Number of entries (0 for NULL). */
size_t nf_meta_count(const nf_meta *m);

/* Key of the i-th entry in insertion order; NULL for i >= nf_meta_count(m). */
const char *nf_meta_key(const nf_meta *m, size_t i);
/* Value of the i-th entry in insertion order; NULL for i >= nf_meta_count(m). */
const char *nf_meta_value(const nf_meta *m, size_t i);

#ifdef __cplusplus
}
#endif
#endif
