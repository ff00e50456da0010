/* lib/io/meta.c — nf_meta, a string-to-string map in insertion order (linear
   search: a model file carries a handful of entries). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/meta.h"

struct nf_meta {
  size_t n, cap;
  char **keys, **values;
};

nf_meta *nf_meta_new(void)
{
  nf_meta *m = calloc(1, sizeof *m);
  if (!m) nf_fail(NF_ENOMEM, "nf_meta_new: out of memory");
  return m;
}

void nf_meta_free(nf_meta *m)
{
  if (!m) return;
  for (size_t i = 0; i < m->n; i++) {
    free(m->keys[i]);
    free(m->values[i]);
  }
  free(m->keys);
  free(m->values);
  free(m);
}

/* Index of key in m, or m->n if absent. */
static size_t find_key(const nf_meta *m, const char *key)
{
  size_t i = 0;
  while (i < m->n && strcmp(m->keys[i], key) != 0) i++;
  return i;
}

/* A malloc'd copy of s, NULL on no memory. */
static char *copy_string(const char *s)
{
  size_t len = strlen(s) + 1;
  char *c = malloc(len);
  return c ? memcpy(c, s, len) : NULL;
}

/* Makes room for one more entry; 0 on success, -1 on no memory. */
static int reserve_one(nf_meta *m)
{
  if (m->n < m->cap) return 0;
  size_t cap = m->cap ? 2 * m->cap : 8;
  char **k = realloc(m->keys, cap * sizeof *k);
  if (k) m->keys = k;
  char **v = k ? realloc(m->values, cap * sizeof *v) : NULL;
  if (v) m->values = v;
  if (!v) return -1;
  m->cap = cap;
  return 0;
}

nf_status nf_meta_set(nf_meta *m, const char *key, const char *value)
{
  if (!m || !key || !value) return nf_fail(NF_EINVAL, "nf_meta_set: NULL argument");
  size_t i = find_key(m, key);
  char *v = copy_string(value);
  char *k = i == m->n && v ? copy_string(key) : NULL;
  if (!v || (i == m->n && (!k || reserve_one(m) != 0))) {
    free(v);
    free(k);
    return nf_fail(NF_ENOMEM, "nf_meta_set: out of memory for key '%s'", key);
  }
  if (i < m->n) {
    free(m->values[i]);
  } else {
    m->keys[i] = k;
    m->n++;
  }
  m->values[i] = v;
  return NF_OK;
}

const char *nf_meta_get(const nf_meta *m, const char *key)
{
  if (!m || !key) return NULL;
  size_t i = find_key(m, key);
  return i < m->n ? m->values[i] : NULL;
}

size_t nf_meta_count(const nf_meta *m) { return m ? m->n : 0; }

const char *nf_meta_key(const nf_meta *m, size_t i) { return m && i < m->n ? m->keys[i] : NULL; }

const char *nf_meta_value(const nf_meta *m, size_t i)
{
  return m && i < m->n ? m->values[i] : NULL;
}
