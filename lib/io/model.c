/* lib/io/model.c — model files (nflow/model.h): a flow as a safetensors file.

   __metadata__ (string -> string):
     "format"         NF_MODEL_FORMAT
     "format_version" "1"
     "nflow_version"  nf_version() of the writer (information only)
     "architecture"   JSON: {"dim", "ctx_dim", "base", "n_params", "layers": [
                        {"type", "n_params", "ctx_dim", "config": {...},
                         "tensors": [the config tensor keys]}, ...]}
     "preprocessing"  JSON: the fixed layers with constants (n_params 0 and
                      config tensors: standardize, logit), for readers other
                      than nflow: [{"index", "type", "config", "constants":
                      {key: {"tensor", "n"}}}, ...]
     the caller's entries, then "crc32" (added by the container).
   Tensors: "base" (diag_normal: mu then log_sigma), "layers.K" (layer K's
   theta slice, if it has parameters), "layers.K.NAME" (its config tensors).

   The loader trusts nothing: every JSON value is type-checked (jansson parses
   it), every tensor is matched to exactly one use, and theta goes through
   nf_flow_set_params. On failure everything built is freed. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "io/io_internal.h"
#include "io/safetensors.h"
#include "nflow/config.h"
#include "nflow/model.h"
#include "nflow/version.h"

/* Metadata keys the file format owns; a caller's meta may not use them. */
static const char *const reserved_keys[] = {"format", "format_version", "nflow_version",
                                            "architecture", "preprocessing", "crc32"};

static int is_reserved(const char *key)
{
  for (size_t i = 0; i < sizeof reserved_keys / sizeof *reserved_keys; i++)
    if (strcmp(key, reserved_keys[i]) == 0) return 1;
  return 0;
}

/* Tensor names: "layers.K" (key NULL) and "layers.K.NAME", or "base" (k ==
   SIZE_MAX); malloc'ed, NULL on no memory. */
static char *tensor_name(size_t k, const char *key)
{
  size_t len = 32 + (key ? strlen(key) : 0);
  char *s = malloc(len);
  if (s) {
    if (k == SIZE_MAX)
      snprintf(s, len, "base");
    else if (key)
      snprintf(s, len, "layers.%zu.%s", k, key);
    else
      snprintf(s, len, "layers.%zu", k);
  }
  return s;
}

/* ---------------------------------------------------------------- saving */

/* Everything nf_flow_save builds before writing; freed by save_state_free. */
typedef struct save_state {
  size_t n_layers;
  nf_config **cfg;  /* one per layer */
  size_t n_tensors, cap;
  nf_tensor *tensors;
  char **names;     /* owned tensor names, parallel to tensors */
  json_t *arch, *pre;
  nf_meta *meta;
} save_state;

static void save_state_free(save_state *s)
{
  for (size_t k = 0; s->cfg && k < s->n_layers; k++) nf_config_free(s->cfg[k]);
  free(s->cfg);
  for (size_t i = 0; i < s->n_tensors; i++) free(s->names[i]);
  free(s->names);
  free(s->tensors);
  json_decref(s->arch);
  json_decref(s->pre);
  nf_meta_free(s->meta);
}

/* Appends a tensor (takes ownership of name, freeing it on failure). */
static nf_status add_tensor(save_state *s, char *name, size_t n, const double *data)
{
  if (name && s->n_tensors == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 16;
    nf_tensor *t = realloc(s->tensors, cap * sizeof *t);
    if (t) s->tensors = t;
    char **nm = t ? realloc(s->names, cap * sizeof *nm) : NULL;
    if (nm) s->names = nm;
    if (nm) s->cap = cap;
  }
  if (!name || s->n_tensors == s->cap) {
    free(name);
    return nf_fail(NF_ENOMEM, "nf_flow_save: out of memory");
  }
  s->names[s->n_tensors] = name;
  s->tensors[s->n_tensors++] = (nf_tensor){name, n, data};
  return NF_OK;
}

/* Layer k's configuration (through its family's save), its architecture entry
   in s->arch and, if it is a fixed layer with constants, its preprocessing
   entry in s->pre; tensors for its theta slice and constants. */
static nf_status save_layer(save_state *s, const nf_flow *flow, size_t k, const char *path)
{
  const nf_layer *layer = nf_flow_layer(flow, k);
  const char *name = layer->type->name;
  if (!layer->type->save)
    return nf_fail(NF_EINVAL, "nf_flow_save: %s: layer %zu ('%s') cannot be saved: its family "
                   "has no save operation", path, k, name);
  nf_config *cfg = s->cfg[k] = nf_config_new();
  if (!cfg) return NF_ENOMEM;
  nf_status st = layer->type->save(layer, cfg);
  if (st) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "nf_flow_save: layer %zu ('%s')", k, name);
    return nf_fail_prefixed(st, prefix);
  }
  if (layer->n_params > 0)
    st = add_tensor(s, tensor_name(k, NULL), layer->n_params,
                    nf_flow_params(flow) + nf_flow_param_offset(flow, k));
  json_t *keys = json_array(), *constants = json_object();
  int bad = st || !keys || !constants;
  size_t nt = nf_config_tensor_count(cfg);
  for (size_t i = 0; !bad && i < nt; i++) {
    size_t n;
    const double *v;
    const char *key = nf_config_tensor(cfg, i, &n, &v);
    char *tname = tensor_name(k, key);
    bad = !tname || json_array_append_new(keys, json_string(key)) ||
          json_object_set_new(constants, key,
                              json_pack("{s:s, s:I}", "tensor", tname, "n", (json_int_t)n));
    if (!bad) bad = (st = add_tensor(s, tname, n, v)) != NF_OK;
    else free(tname);
  }
  json_t *entry = bad ? NULL
                      : json_pack("{s:s, s:I, s:I, s:O, s:O}", "type", name, "n_params",
                                  (json_int_t)layer->n_params, "ctx_dim",
                                  (json_int_t)layer->ctx_dim, "config", nf_config_json(cfg),
                                  "tensors", keys);
  bad = !entry || json_array_append_new(json_object_get(s->arch, "layers"), entry);
  if (!bad && layer->n_params == 0 && nt > 0) {
    json_t *pre = json_pack("{s:I, s:s, s:O, s:O}", "index", (json_int_t)k, "type", name,
                            "config", nf_config_json(cfg), "constants", constants);
    bad = !pre || json_array_append_new(s->pre, pre);
  }
  json_decref(keys);
  json_decref(constants);
  if (bad && !st) st = nf_fail(NF_ENOMEM, "nf_flow_save: out of memory");
  return st;
}

/* The JSON text of v (compact, reals to 17 digits), set in meta as key. */
static nf_status set_json(nf_meta *meta, const char *key, const json_t *v)
{
  char *text = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(17));
  nf_status st = text ? nf_meta_set(meta, key, text)
                      : nf_fail(NF_ENOMEM, "nf_flow_save: out of memory");
  free(text);
  return st;
}

/* The file's metadata: the format's entries, then the caller's. */
static nf_status build_meta(save_state *s, const nf_meta *user)
{
  nf_meta *m = s->meta = nf_meta_new();
  if (!m) return NF_ENOMEM;
  char version[16];
  snprintf(version, sizeof version, "%d", NF_MODEL_VERSION);
  nf_status st = nf_meta_set(m, "format", NF_MODEL_FORMAT);
  if (!st) st = nf_meta_set(m, "format_version", version);
  if (!st) st = nf_meta_set(m, "nflow_version", nf_version());
  if (!st) st = set_json(m, "architecture", s->arch);
  if (!st) st = set_json(m, "preprocessing", s->pre);
  for (size_t i = 0; !st && i < nf_meta_count(user); i++)
    st = nf_meta_set(m, nf_meta_key(user, i), nf_meta_value(user, i));
  return st;
}

nf_status nf_flow_save(const nf_flow *flow, const char *path, const nf_meta *meta)
{
  if (!flow || !path) return nf_fail(NF_EINVAL, "nf_flow_save: flow or path is NULL");
  for (size_t i = 0; i < nf_meta_count(meta); i++)
    if (is_reserved(nf_meta_key(meta, i)))
      return nf_fail(NF_EINVAL, "nf_flow_save: %s: metadata key '%s' is reserved by the "
                     "model format", path, nf_meta_key(meta, i));
  size_t K = nf_flow_n_layers(flow);
  save_state s = {0};
  s.n_layers = K;
  s.cfg = calloc(K ? K : 1, sizeof *s.cfg);
  s.arch = json_pack("{s:I, s:I, s:s, s:I, s:[]}", "dim", (json_int_t)nf_flow_dim(flow),
                     "ctx_dim", (json_int_t)nf_flow_ctx_dim(flow), "base",
                     nf_base_name(nf_flow_base(flow)), "n_params",
                     (json_int_t)nf_flow_n_params(flow), "layers");
  s.pre = json_array();
  nf_status st = s.cfg && s.arch && s.pre ? NF_OK
                                          : nf_fail(NF_ENOMEM, "nf_flow_save: out of memory");
  if (!st && nf_flow_base_n_params(flow) > 0)
    st = add_tensor(&s, tensor_name(SIZE_MAX, NULL), nf_flow_base_n_params(flow), nf_flow_base_params(flow));
  for (size_t k = 0; !st && k < K; k++) st = save_layer(&s, flow, k, path);
  if (!st) st = build_meta(&s, meta);
  if (!st) st = nf_safetensors_write(path, s.meta, s.n_tensors, s.tensors);
  save_state_free(&s);
  return st;
}

/* ---------------------------------------------------------------- loading */

/* NF_EFORMAT "path: what" (printf-style). */
static nf_status bad_file(const char *path, const char *fmt, ...) NF_PRINTF(2, 3);
static nf_status bad_file(const char *path, const char *fmt, ...)
{
  char detail[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  return nf_fail(NF_EFORMAT, "%s: %s", path, detail);
}

/* A JSON integer in [0, max] in *v, else nonzero. */
static int get_size(const json_t *obj, const char *key, size_t *v)
{
  const json_t *j = json_object_get(obj, key);
  if (!json_is_integer(j) || json_integer_value(j) < 0) return -1;
  json_int_t x = json_integer_value(j);
  if ((unsigned long long)x > SIZE_MAX) return -1;
  *v = (size_t)x;
  return 0;
}

/* Checks "format" and "format_version". */
static nf_status check_format(const char *path, const nf_meta *m)
{
  const char *format = nf_meta_get(m, "format");
  if (!format)
    return bad_file(path, "not an nflow model file (no 'format' in __metadata__)");
  if (strcmp(format, NF_MODEL_FORMAT) != 0)
    return bad_file(path, "not an nflow model file (format '%s', expected '%s')", format,
                    NF_MODEL_FORMAT);
  const char *ver = nf_meta_get(m, "format_version");
  if (!ver) return bad_file(path, "no 'format_version' in __metadata__");
  char *end;
  errno = 0;
  long v = strtol(ver, &end, 10);
  if (errno || end == ver || *end || ver[0] == '+' || ver[0] == '-' || ver[0] == ' ')
    return bad_file(path, "format version '%s' is not a number", ver);
  if (v > NF_MODEL_VERSION)
    return bad_file(path, "format version %ld is newer than this library's %d (update nflow)",
                    v, NF_MODEL_VERSION);
  if (v != NF_MODEL_VERSION)
    return bad_file(path, "format version %ld is not supported (this library reads %d)", v,
                    NF_MODEL_VERSION);
  return NF_OK;
}

/* The parsed "architecture" object in *arch. */
static nf_status parse_architecture(const char *path, const nf_meta *m, json_t **arch)
{
  const char *text = nf_meta_get(m, "architecture");
  if (!text) return bad_file(path, "no 'architecture' in __metadata__");
  json_error_t err;
  json_t *a = json_loads(text, JSON_REJECT_DUPLICATES, &err);
  if (!a) return bad_file(path, "architecture is not valid JSON (%s at column %d)", err.text,
                          err.column);
  if (!json_is_object(a) || !json_is_array(json_object_get(a, "layers"))) {
    json_decref(a);
    return bad_file(path, "architecture is not an object with a 'layers' list");
  }
  *arch = a;
  return NF_OK;
}

/* What nf_flow_load builds; freed by load_state_free unless handed over. */
typedef struct load_state {
  const char *path;
  nf_safetensors *st;
  json_t *arch;
  nf_flow *flow;
  double *theta;
  unsigned char *used; /* one flag per tensor of the file */
  nf_meta *meta;
} load_state;

static void load_state_free(load_state *s)
{
  nf_safetensors_free(s->st);
  json_decref(s->arch);
  nf_flow_free(s->flow);
  free(s->theta);
  free(s->used);
  nf_meta_free(s->meta);
}

/* The tensor called name, marked used, its length in *n; NULL if absent. */
static const double *take_tensor(load_state *s, const char *name, size_t *n)
{
  for (size_t i = 0; i < nf_safetensors_count(s->st); i++)
    if (strcmp(nf_safetensors_name(s->st, i), name) == 0) {
      s->used[i] = 1;
      return nf_safetensors_find(s->st, name, n);
    }
  return NULL;
}

/* Layer k's configuration: its JSON "config" plus its constants' tensors. */
static nf_status layer_config(load_state *s, size_t k, const json_t *entry, const char *type,
                              nf_config **out)
{
  char what[96];
  snprintf(what, sizeof what, "layer %zu ('%s') config", k, type);
  const json_t *keys = json_object_get(entry, "tensors");
  if (keys && !json_is_array(keys))
    return bad_file(s->path, "layer %zu ('%s'): 'tensors' is not a list", k, type);
  nf_config *cfg = NULL;
  nf_status st = nf_config_from_json(json_object_get(entry, "config"), what, &cfg);
  if (st) return nf_fail_prefixed(NF_EFORMAT, s->path);
  for (size_t i = 0; !st && i < json_array_size(keys); i++) {
    const char *key = json_string_value(json_array_get(keys, i));
    char *name = key ? tensor_name(k, key) : NULL;
    size_t n = 0;
    const double *v = name ? take_tensor(s, name, &n) : NULL;
    if (!key)
      st = bad_file(s->path, "layer %zu ('%s'): tensor key %zu is not a string", k, type, i);
    else if (!name)
      st = nf_fail(NF_ENOMEM, "nf_flow_load: out of memory");
    else if (!v || n == 0)
      st = bad_file(s->path, "layer %zu ('%s'): tensor '%s' is missing", k, type, name);
    else if (nf_first_nonfinite(n, v) < n)
      st = nf_fail(NF_ENONFINITE, "%s: layer %zu ('%s'): constant '%s' holds a non-finite "
                   "value", s->path, k, type, name);
    else if ((st = nf_config_set_tensor(cfg, key, n, v)) != NF_OK)
      st = nf_fail_prefixed(st == NF_ENOMEM ? st : NF_EFORMAT, s->path);
    free(name);
  }
  if (st) nf_config_free(cfg);
  else *out = cfg;
  return st;
}

/* Rebuilds layer k from its architecture entry, pushes it, and copies its
   theta slice into s->theta at *off (advanced). */
static nf_status load_layer(load_state *s, size_t k, const json_t *entry,
                            const nf_resolver *res, size_t *off, size_t total)
{
  const char *path = s->path;
  const char *type = json_string_value(json_object_get(entry, "type"));
  size_t np, cd;
  if (!json_is_object(entry) || !type)
    return bad_file(path, "architecture: layer %zu has no 'type'", k);
  if (get_size(entry, "n_params", &np) || get_size(entry, "ctx_dim", &cd))
    return bad_file(path, "architecture: layer %zu ('%s') has no valid 'n_params' or 'ctx_dim'",
                    k, type);
  const nf_layer_type *lt = nf_layer_type_find(type);
  if (!lt)
    return bad_file(path, "layer %zu: unknown family '%s' (a third-party family must be "
                    "registered with nf_layer_register before loading)", k, type);
  nf_config *cfg = NULL;
  nf_status st = layer_config(s, k, entry, type, &cfg);
  if (st) return st;
  nf_take_caller_fault();
  nf_layer *layer = lt->load(nf_flow_dim(s->flow), cd, cfg, res);
  nf_config_free(cfg);
  int callers = nf_take_caller_fault();
  if (!layer) {
    nf_status why = nf_last_status();
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s: layer %zu ('%s')", path, k, type);
    /* A configuration the family refuses is a malformed file; a missing or
       unknowing resolver is the caller's NF_EINVAL. */
    if (callers && why == NF_EINVAL) return nf_fail_prefixed(why, prefix);
    return nf_fail_prefixed(why == NF_ENOMEM || why == NF_ENONFINITE ? why : NF_EFORMAT, prefix);
  }
  if (layer->n_params != np || layer->ctx_dim != cd || layer->dim != nf_flow_dim(s->flow)) {
    size_t lnp = layer->n_params;
    nf_layer_free(layer);
    return bad_file(path, "layer %zu ('%s'): parameter count %zu in the file, but the family "
                    "builds %zu from its configuration (or its dimensions differ)",
                    k, type, np, lnp);
  }
  if ((st = nf_flow_push(s->flow, layer)) != NF_OK) /* a context wider than the flow's */
    return nf_fail_prefixed(st == NF_ENOMEM ? st : NF_EFORMAT, path);
  char *name = tensor_name(k, NULL);
  if (!name) return nf_fail(NF_ENOMEM, "nf_flow_load: out of memory");
  size_t n = 0;
  const double *v = take_tensor(s, name, &n);
  if (np > 0 && !v)
    st = bad_file(path, "layer %zu ('%s'): tensor '%s' (its %zu parameters) is missing", k,
                  type, name, np);
  else if (v && n != np)
    st = bad_file(path, "layer %zu ('%s'): tensor '%s' holds %zu values, the parameter count "
                  "is %zu", k, type, name, n, np);
  else if (np > total - *off)
    st = bad_file(path, "layer %zu ('%s'): the parameter counts exceed the total %zu", k,
                  type, total);
  free(name);
  if (st) return st;
  if (np) memcpy(s->theta + *off, v, np * sizeof *v);
  *off += np;
  return NF_OK;
}

/* Number of values in all the file's tensors together. */
static size_t file_values(const nf_safetensors *st)
{
  size_t total = 0, n = 0;
  for (size_t i = 0; i < nf_safetensors_count(st); i++) {
    nf_safetensors_find(st, nf_safetensors_name(st, i), &n);
    total += n; /* no overflow: they are all in memory */
  }
  return total;
}

/* The flow of the architecture, with theta gathered in s->theta. */
static nf_status build_flow(load_state *s, const nf_resolver *res)
{
  const char *path = s->path;
  const json_t *a = s->arch;
  size_t dim, cd, total;
  nf_base base;
  const char *bname = json_string_value(json_object_get(a, "base"));
  if (get_size(a, "dim", &dim) || dim == 0 || get_size(a, "ctx_dim", &cd) ||
      get_size(a, "n_params", &total))
    return bad_file(path, "architecture: 'dim', 'ctx_dim' or 'n_params' is missing or invalid");
  if (!bname || nf_base_parse(bname, &base))
    return bad_file(path, "architecture: unknown base distribution '%s'",
                    bname ? bname : "(none)");
  if (!(s->flow = nf_flow_new(dim, cd, base))) return nf_fail_prefixed(nf_last_status(), path);
  /* theta is copied from the file's tensors, each used once: it never holds
     more than they do, whatever n_params claims (checked against the layers
     at the end). */
  size_t held = file_values(s->st);
  if (!(s->theta = nf_dalloc(total < held ? total : held)) ||
      !(s->used = calloc(nf_safetensors_count(s->st) + 1, 1)))
    return nf_fail(NF_ENOMEM, "nf_flow_load: out of memory for %zu parameters", total);
  size_t off = nf_flow_base_n_params(s->flow), n = 0;
  const double *bv = take_tensor(s, "base", &n);
  if (off > total)
    return bad_file(path, "architecture: n_params %zu is smaller than the base's %zu", total, off);
  if (off > 0 && (!bv || n != off))
    return bad_file(path, "tensor 'base' (the %s base's %zu parameters) is missing or has %zu "
                    "values", bname, off, bv ? n : 0);
  if (off > 0) memcpy(s->theta, bv, off * sizeof *bv);
  const json_t *layers = json_object_get(a, "layers");
  nf_status st = NF_OK;
  for (size_t k = 0; !st && k < json_array_size(layers); k++)
    st = load_layer(s, k, json_array_get(layers, k), res, &off, total);
  if (st) return st;
  if (off != total)
    return bad_file(path, "parameter count: the layers hold %zu, the architecture says %zu",
                    off, total);
  for (size_t i = 0; i < nf_safetensors_count(s->st); i++)
    if (!s->used[i])
      return bad_file(path, "tensor '%s' belongs to nothing in the architecture",
                      nf_safetensors_name(s->st, i));
  if ((st = nf_flow_set_params(s->flow, s->theta)) != NF_OK) return nf_fail_prefixed(st, path);
  return NF_OK;
}

/* The caller's metadata: the file's entries that the format does not own. */
static nf_status user_meta(load_state *s)
{
  const nf_meta *m = nf_safetensors_meta(s->st);
  if (!(s->meta = nf_meta_new())) return nf_last_status();
  nf_status st = NF_OK;
  for (size_t i = 0; !st && i < nf_meta_count(m); i++)
    if (!is_reserved(nf_meta_key(m, i))) st = nf_meta_set(s->meta, nf_meta_key(m, i), nf_meta_value(m, i));
  return st;
}

nf_status nf_flow_load(const char *path, const nf_resolver *resolver, nf_flow **flow,
                       nf_meta **meta)
{
  if (flow) *flow = NULL;
  if (meta) *meta = NULL;
  if (!path || !flow) return nf_fail(NF_EINVAL, "nf_flow_load: path or flow is NULL");
  load_state s = {.path = path};
  nf_status st = nf_safetensors_read(path, &s.st);
  if (!st) st = check_format(path, nf_safetensors_meta(s.st));
  if (!st) st = parse_architecture(path, nf_safetensors_meta(s.st), &s.arch);
  if (!st) st = build_flow(&s, resolver);
  if (!st && meta) st = user_meta(&s);
  if (!st) {
    *flow = s.flow;
    s.flow = NULL;
    if (meta) {
      *meta = s.meta;
      s.meta = NULL;
    }
  }
  load_state_free(&s);
  return st;
}
