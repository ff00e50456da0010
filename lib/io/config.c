/* lib/io/config.c — nf_config: a jansson object of the JSON-typed entries plus a
   list of named float64 tensors. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"
#include "io/io_internal.h"

/* A tensor entry: key, n values (owned). */
typedef struct cfg_tensor {
  char *key;
  size_t n;
  double *data;
} cfg_tensor;

struct nf_config {
  json_t *obj;
  size_t n_tensors, cap;
  cfg_tensor *tensors;
};

nf_config *nf_config_new(void)
{
  nf_config *cfg = calloc(1, sizeof *cfg);
  json_t *obj = cfg ? json_object() : NULL;
  if (!obj) {
    free(cfg);
    nf_fail(NF_ENOMEM, "nf_config_new: out of memory");
    return NULL;
  }
  cfg->obj = obj;
  return cfg;
}

void nf_config_free(nf_config *cfg)
{
  if (!cfg) return;
  for (size_t i = 0; i < cfg->n_tensors; i++) {
    free(cfg->tensors[i].key);
    free(cfg->tensors[i].data);
  }
  free(cfg->tensors);
  json_decref(cfg->obj);
  free(cfg);
}

const json_t *nf_config_json(const nf_config *cfg) { return cfg ? cfg->obj : NULL; }

nf_status nf_config_from_json(const json_t *obj, const char *what, nf_config **out)
{
  if (!obj || !what || !out) return nf_fail(NF_EINVAL, "nf_config_from_json: NULL argument");
  if (!json_is_object(obj))
    return nf_fail(NF_EFORMAT, "%s: the configuration is not a JSON object", what);
  nf_config *cfg = calloc(1, sizeof *cfg);
  json_t *copy = cfg ? json_deep_copy(obj) : NULL;
  if (!copy) {
    free(cfg);
    return nf_fail(NF_ENOMEM, "%s: out of memory for the configuration", what);
  }
  cfg->obj = copy;
  *out = cfg;
  return NF_OK;
}

size_t nf_config_tensor_count(const nf_config *cfg) { return cfg ? cfg->n_tensors : 0; }

const char *nf_config_tensor(const nf_config *cfg, size_t i, size_t *n, const double **data)
{
  if (!cfg || i >= cfg->n_tensors) return NULL;
  if (n) *n = cfg->tensors[i].n;
  if (data) *data = cfg->tensors[i].data;
  return cfg->tensors[i].key;
}

/* The tensor entry of key, or NULL. */
static const cfg_tensor *find_tensor(const nf_config *cfg, const char *key)
{
  for (size_t i = 0; i < cfg->n_tensors; i++)
    if (strcmp(cfg->tensors[i].key, key) == 0) return &cfg->tensors[i];
  return NULL;
}

int nf_config_has(const nf_config *cfg, const char *key)
{
  return cfg && key && (json_object_get(cfg->obj, key) || find_tensor(cfg, key));
}

/* NF_OK if a writer may add key to cfg, else NF_EINVAL naming fn and why. */
static nf_status check_new_key(const char *fn, const nf_config *cfg, const char *key)
{
  if (!cfg || !key) return nf_fail(NF_EINVAL, "%s: NULL argument", fn);
  if (nf_config_has(cfg, key))
    return nf_fail(NF_EINVAL, "%s: config key '%s' is already set", fn, key);
  return NF_OK;
}

/* Adds key -> value (a new reference, stolen even on failure) to cfg's object. */
static nf_status put_json(const char *fn, nf_config *cfg, const char *key, json_t *value)
{
  nf_status st = check_new_key(fn, cfg, key);
  if (st != NF_OK) {
    json_decref(value);
    return st;
  }
  if (!value || json_object_set_new(cfg->obj, key, value) != 0)
    return nf_fail(NF_ENOMEM, "%s: out of memory for config key '%s'", fn, key);
  return NF_OK;
}

nf_status nf_config_set_int(nf_config *cfg, const char *key, long long v)
{
  return put_json("nf_config_set_int", cfg, key, json_integer((json_int_t)v));
}

nf_status nf_config_set_real(nf_config *cfg, const char *key, double v)
{
  if (!isfinite(v))
    return nf_fail(NF_EINVAL, "nf_config_set_real: config key '%s': value %g is not finite",
                   key ? key : "(null)", v);
  return put_json("nf_config_set_real", cfg, key, json_real(v));
}

nf_status nf_config_set_string(nf_config *cfg, const char *key, const char *v)
{
  if (!v) return nf_fail(NF_EINVAL, "nf_config_set_string: NULL argument");
  json_t *s = json_string(v);
  if (!s && cfg && key) /* allocation, or a value that is not valid UTF-8 */
    return nf_fail(NF_EINVAL,
                   "nf_config_set_string: config key '%s': value is not valid UTF-8 "
                   "(or out of memory)",
                   key);
  return put_json("nf_config_set_string", cfg, key, s);
}

nf_status nf_config_set_sizes(nf_config *cfg, const char *key, size_t n, const size_t *v)
{
  if (n > 0 && !v) return nf_fail(NF_EINVAL, "nf_config_set_sizes: NULL argument");
  for (size_t i = 0; i < n; i++)
    if (v[i] > (unsigned long long)LLONG_MAX)
      return nf_fail(NF_EINVAL,
                     "nf_config_set_sizes: config key '%s': entry %zu = %zu exceeds "
                     "the JSON integer range",
                     key ? key : "(null)", i, v[i]);
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++)
    if (json_array_append_new(a, json_integer((json_int_t)v[i])) != 0) {
      json_decref(a);
      a = NULL;
    }
  return put_json("nf_config_set_sizes", cfg, key, a);
}

/* Makes room for one more tensor; 0 on success, -1 on no memory. */
static int reserve_tensor(nf_config *cfg)
{
  if (cfg->n_tensors < cfg->cap) return 0;
  size_t cap = cfg->cap ? 2 * cfg->cap : 4;
  cfg_tensor *t = realloc(cfg->tensors, cap * sizeof *t);
  if (!t) return -1;
  cfg->tensors = t;
  cfg->cap = cap;
  return 0;
}

nf_status nf_config_set_tensor(nf_config *cfg, const char *key, size_t n, const double *v)
{
  const char *fn = "nf_config_set_tensor";
  nf_status st = check_new_key(fn, cfg, key);
  if (st != NF_OK) return st;
  if (n == 0 || !v) return nf_fail(NF_EINVAL, "%s: config key '%s': no values", fn, key);
  size_t bad = nf_first_nonfinite(n, v);
  if (bad < n)
    return nf_fail(NF_EINVAL, "%s: config key '%s': value %zu (%g) is not finite", fn, key, bad,
                   v[bad]);
  size_t len = strlen(key) + 1;
  char *k = malloc(len);
  double *data = n <= SIZE_MAX / sizeof *data ? malloc(n * sizeof *data) : NULL;
  if (!k || !data || reserve_tensor(cfg) != 0) {
    free(k);
    free(data);
    return nf_fail(NF_ENOMEM, "%s: out of memory for config key '%s'", fn, key);
  }
  memcpy(k, key, len);
  memcpy(data, v, n * sizeof *data);
  cfg->tensors[cfg->n_tensors++] = (cfg_tensor){.key = k, .n = n, .data = data};
  return NF_OK;
}

/* The JSON value of key in cfg, or NULL with NF_EFORMAT "config key 'key' is
   missing" (NF_EINVAL naming fn for a NULL argument) in *st. */
static const json_t *lookup(const char *fn, const nf_config *cfg, const char *key, const void *out,
                            nf_status *st)
{
  if (!cfg || !key || !out) {
    *st = nf_fail(NF_EINVAL, "%s: NULL argument", fn);
    return NULL;
  }
  const json_t *v = json_object_get(cfg->obj, key);
  *st = v ? NF_OK : nf_fail(NF_EFORMAT, "config key '%s' is missing", key);
  return v;
}

/* NF_EFORMAT "config key 'key': expected what". */
static nf_status wrong_type(const char *key, const char *what)
{
  return nf_fail(NF_EFORMAT, "config key '%s': expected %s", key, what);
}

/* 1 if j is an integer in [0, SIZE_MAX], its value in *v. */
static int as_size(const json_t *j, size_t *v)
{
  if (!json_is_integer(j) || json_integer_value(j) < 0) return 0;
  if ((uintmax_t)json_integer_value(j) > SIZE_MAX) return 0;
  *v = (size_t)json_integer_value(j);
  return 1;
}

nf_status nf_config_get_int(const nf_config *cfg, const char *key, long long *v)
{
  nf_status st;
  const json_t *j = lookup("nf_config_get_int", cfg, key, v, &st);
  if (!j) return st;
  if (!json_is_integer(j)) return wrong_type(key, "an integer");
  *v = (long long)json_integer_value(j);
  return NF_OK;
}

nf_status nf_config_get_real(const nf_config *cfg, const char *key, double *v)
{
  nf_status st;
  const json_t *j = lookup("nf_config_get_real", cfg, key, v, &st);
  if (!j) return st;
  if (!json_is_number(j)) return wrong_type(key, "a number");
  *v = json_number_value(j);
  return NF_OK;
}

nf_status nf_config_get_string(const nf_config *cfg, const char *key, const char **v)
{
  nf_status st;
  const json_t *j = lookup("nf_config_get_string", cfg, key, v, &st);
  if (!j) return st;
  if (!json_is_string(j)) return wrong_type(key, "a string");
  *v = json_string_value(j);
  return NF_OK;
}

nf_status nf_config_get_size(const nf_config *cfg, const char *key, size_t *v)
{
  nf_status st;
  const json_t *j = lookup("nf_config_get_size", cfg, key, v, &st);
  if (!j) return st;
  size_t s;
  if (!as_size(j, &s)) return wrong_type(key, "a non-negative integer");
  *v = s;
  return NF_OK;
}

nf_status nf_config_get_len(const nf_config *cfg, const char *key, size_t *n)
{
  if (!cfg || !key || !n) return nf_fail(NF_EINVAL, "nf_config_get_len: NULL argument");
  const cfg_tensor *t = find_tensor(cfg, key);
  if (t) {
    *n = t->n;
    return NF_OK;
  }
  nf_status st;
  const json_t *j = lookup("nf_config_get_len", cfg, key, n, &st);
  if (!j) return st;
  if (!json_is_array(j)) return wrong_type(key, "a list or a tensor");
  *n = json_array_size(j);
  return NF_OK;
}

nf_status nf_config_get_sizes(const nf_config *cfg, const char *key, size_t n, size_t *v)
{
  nf_status st;
  const json_t *j = lookup("nf_config_get_sizes", cfg, key, n == 0 || v ? key : NULL,
                           &st); /* v may be NULL for n = 0 */
  if (!j) return st;
  if (!json_is_array(j)) return wrong_type(key, "a list of non-negative integers");
  if (json_array_size(j) != n)
    return nf_fail(NF_EFORMAT, "config key '%s': expected a list of %zu entries, got %zu", key, n,
                   json_array_size(j));
  size_t s;
  for (size_t i = 0; i < n; i++)
    if (!as_size(json_array_get(j, i), &s))
      return nf_fail(NF_EFORMAT, "config key '%s': entry %zu: expected a non-negative integer", key,
                     i);
  for (size_t i = 0; i < n; i++) as_size(json_array_get(j, i), &v[i]);
  return NF_OK;
}

nf_status nf_config_get_tensor(const nf_config *cfg, const char *key, size_t n, double *v)
{
  if (!cfg || !key || !v) return nf_fail(NF_EINVAL, "nf_config_get_tensor: NULL argument");
  const cfg_tensor *t = find_tensor(cfg, key);
  if (!t)
    return json_object_get(cfg->obj, key) ? wrong_type(key, "a tensor")
                                          : nf_fail(NF_EFORMAT, "config key '%s' is missing", key);
  if (t->n != n)
    return nf_fail(NF_EFORMAT, "config key '%s': expected a tensor of %zu values, got %zu", key, n,
                   t->n);
  memcpy(v, t->data, n * sizeof *v);
  return NF_OK;
}

/* "key.name" in a new string, or NULL on no memory. */
static char *nested_name(const char *key, const char *name)
{
  size_t a = strlen(key), b = strlen(name);
  char *s = malloc(a + b + 2);
  if (s) {
    memcpy(s, key, a);
    s[a] = '.';
    memcpy(s + a + 1, name, b + 1);
  }
  return s;
}

nf_status nf_config_set_config(nf_config *cfg, const char *key, const nf_config *sub)
{
  const char *fn = "nf_config_set_config";
  if (!sub) return nf_fail(NF_EINVAL, "%s: NULL argument", fn);
  nf_status st = put_json(fn, cfg, key, json_deep_copy(sub->obj));
  for (size_t i = 0; !st && i < sub->n_tensors; i++) {
    char *name = nested_name(key, sub->tensors[i].key);
    st = name ? nf_config_set_tensor(cfg, name, sub->tensors[i].n, sub->tensors[i].data)
              : nf_fail(NF_ENOMEM, "%s: out of memory", fn);
    free(name);
  }
  return st;
}

nf_status nf_config_get_config(const nf_config *cfg, const char *key, nf_config **sub)
{
  const char *fn = "nf_config_get_config";
  nf_status st = NF_OK;
  const json_t *v = lookup(fn, cfg, key, sub, &st);
  if (!v) return st;
  char what[96];
  snprintf(what, sizeof what, "config key '%s'", key);
  nf_config *out = NULL;
  if ((st = nf_config_from_json(v, what, &out))) return st;
  size_t len = strlen(key);
  for (size_t i = 0; !st && i < cfg->n_tensors; i++) {
    const cfg_tensor *t = &cfg->tensors[i];
    if (strncmp(t->key, key, len) == 0 && t->key[len] == '.')
      st = nf_config_set_tensor(out, t->key + len + 1, t->n, t->data);
  }
  if (st) nf_config_free(out);
  else *sub = out;
  return st;
}
