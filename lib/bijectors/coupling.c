/* lib/bijectors/coupling.c — coupling layers: a mask conditioner times an
   elementwise transformer (NICE, Dinh et al. 2014; RealNVP, Dinh et al. 2016).

   The mask splits a row into z_a (mask 1: passes unchanged) and z_b (mask 0).
   The conditioner MLP maps the row [z_a, ctx] to the transformer's raw
   parameters h (db x n_raw per row, coordinate-major: transformer.h), and the
   transformer maps z_b elementwise:
     forward  x_b = τ(z_b; h),     logdet += sum_j log|τ'(z_bj)|
     inverse  z_b = τ^-1(x_b; h),  logdet -= the same
   (additive: τ = z + t; affine: τ = z exp(s) + t, s = B tanh(s_raw / B);
   spline: rational-quadratic bins, Durkan et al. 2019; circular-spline:
   Rezende et al. 2020). Since x_a = z_a, the conditioner's input is the same
   in both directions.

   No check_params op: the transformers' parameters are conditioner outputs,
   and with the soft clamp |s| < B, or the splines' minimum bin sizes and
   derivatives, no finite parameter makes the map singular (additive has no
   scale at all).

   Workspace of n rows, in this order: the conditioner's input [z_a, ctx]
   (n x (da + c)), its output h (n x db nr), the gathered transformer input and
   output (n x db each), the transformer's record (n x db nrec); then vjp's
   scratch: the cotangents of h (n x db nr), of the conditioner input
   (n x (da + c)), of the transformer output and input (n x db each); then the
   MLP's own workspace. apply leaves the first five and the MLP's record
   there; vjp reads them and does not rerun the conditioner. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/config.h"
#include "nflow/coupling.h"
#include "transformer.h"

typedef struct coupling {
  const nf_transformer *tf;
  nf_transformer_opts tf_opts;
  nf_mlp *net;
  size_t da, db, c;   /* passing, transformed and context widths */
  size_t nr, nrec;    /* the transformer's raw parameters and record per coordinate */
  size_t *idx;        /* da passing coordinates, then db transformed ones, ascending */
  unsigned char *mask; /* dim entries, as given (kept for saving) */
  size_t n_hidden, *hidden; /* the conditioner's hidden widths (kept for saving) */
  nf_activation act;
} coupling;

/* Views of a coupling workspace of n rows (see the top of this file). */
typedef struct coupling_ws {
  double *cond_in, *h, *xb, *yb, *rec, *g_h, *g_cond_in, *g_yb, *g_xb, *mlp;
} coupling_ws;

static coupling_ws ws_layout(const coupling *cp, size_t n, double *work)
{
  coupling_ws ws;
  const size_t w = cp->da + cp->c;
  ws.cond_in = work;
  ws.h = ws.cond_in + n * w;
  ws.xb = ws.h + n * cp->db * cp->nr;
  ws.yb = ws.xb + n * cp->db;
  ws.rec = ws.yb + n * cp->db;
  ws.g_h = ws.rec + n * cp->db * cp->nrec;
  ws.g_cond_in = ws.g_h + n * cp->db * cp->nr;
  ws.g_yb = ws.g_cond_in + n * w;
  ws.g_xb = ws.g_yb + n * cp->db;
  ws.mlp = ws.g_xb + n * cp->db;
  return ws;
}

/* Doubles of the layout above: 2 n (da + c) + n db (2 nr + nrec + 4) + the MLP's. */
static size_t coupling_work_size(const nf_layer *layer, size_t n)
{
  const coupling *cp = layer->data;
  size_t per_row, own, total, net = nf_mlp_work_size(cp->net, n);
  if (nf_size_add(cp->da, cp->c, &per_row) || nf_size_mul(2, per_row, &per_row) ||
      nf_size_add(per_row, cp->db * (2 * cp->nr + cp->nrec + 4), &per_row) || /* db: checked dim */
      nf_size_mul(n, per_row, &own) || nf_size_add(own, net, &total))
    return 0;
  return total;
}

/* cond_in[i] = [in[i, idx_a], ctx[i]]; xb[i] = in[i, idx_b]. */
static void gather_rows(const coupling *cp, size_t n, size_t d, const double *in,
                        const double *ctx, double *cond_in, double *xb)
{
  const size_t w = cp->da + cp->c, *ia = cp->idx, *ib = cp->idx + cp->da;
  for (size_t i = 0; i < n; i++) {
    const double *r = in + i * d;
    double *ci = cond_in + i * w, *b = xb + i * cp->db;
    for (size_t j = 0; j < cp->da; j++) ci[j] = r[ia[j]];
    if (cp->c) memcpy(ci + cp->da, ctx + i * cp->c, cp->c * sizeof *ci);
    for (size_t j = 0; j < cp->db; j++) b[j] = r[ib[j]];
  }
}

/* out = T(in) (dir = forward) or T^-1(in); logdet[i] += +-sum_j log|τ'|. */
static nf_status coupling_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                                const double *in, const double *ctx,
                                double *out, double *logdet, const nf_apply_opts *opts, double *work)
{
  const coupling *cp = layer->data;
  const size_t d = layer->dim, *ia = cp->idx, *ib = cp->idx + cp->da;
  (void)opts;
  coupling_ws ws = ws_layout(cp, n, work);
  gather_rows(cp, n, d, in, ctx, ws.cond_in, ws.xb);
  nf_mlp_forward(cp->net, theta, n, ws.cond_in, ws.h, ws.mlp);
  nf_status st = dir == NF_FORWARD
                     ? cp->tf->forward(&cp->tf_opts, n, cp->db, ws.h, ws.xb, ws.yb, logdet, ws.rec)
                     : cp->tf->inverse(&cp->tf_opts, n, cp->db, ws.h, ws.xb, ws.yb, logdet, ws.rec);
  if (st) return nf_fail_prefixed(st, "coupling");
  for (size_t i = 0; i < n; i++) {
    const double *r = in + i * d, *b = ws.yb + i * cp->db;
    double *o = out + i * d;
    for (size_t j = 0; j < cp->da; j++) o[ia[j]] = r[ia[j]];
    for (size_t j = 0; j < cp->db; j++) o[ib[j]] = b[j];
  }
  return NF_OK;
}

/* Vector-Jacobian product of apply(dir): the transformer's pullback to h and
   z_b, then backpropagation through the conditioner recorded in work. */
static nf_status coupling_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                              const double *in, const double *ctx, const double *out,
                              const double *g_out, const double *g_logdet,
                              double *g_in, double *g_ctx, double *g_theta, double *work)
{
  (void)in;
  (void)ctx;
  (void)out;
  const coupling *cp = layer->data;
  const size_t d = layer->dim, w = cp->da + cp->c, *ia = cp->idx, *ib = cp->idx + cp->da;
  coupling_ws ws = ws_layout(cp, n, work);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < cp->db; j++) ws.g_yb[i * cp->db + j] = g_out[i * d + ib[j]];
  cp->tf->backward(&cp->tf_opts, dir, n, cp->db, ws.h, ws.xb, ws.yb, ws.rec, ws.g_yb, g_logdet,
                   g_in ? ws.g_xb : NULL, ws.g_h);
  int want_input = g_in || (g_ctx && cp->c);
  nf_mlp_backward(cp->net, theta, n, ws.cond_in, ws.g_h, want_input ? ws.g_cond_in : NULL,
                  g_theta, ws.mlp);
  if (!want_input) return NF_OK;
  for (size_t i = 0; i < n; i++) {
    const double *gc = ws.g_cond_in + i * w;
    if (g_in) {
      double *gi = g_in + i * d;
      const double *go = g_out + i * d, *gb = ws.g_xb + i * cp->db;
      for (size_t j = 0; j < cp->da; j++) gi[ia[j]] = go[ia[j]] + gc[j];
      for (size_t j = 0; j < cp->db; j++) gi[ib[j]] = gb[j];
    }
    if (g_ctx)
      for (size_t j = 0; j < cp->c; j++) g_ctx[i * cp->c + j] += gc[cp->da + j];
  }
  return NF_OK;
}

static void coupling_destroy(void *data)
{
  coupling *cp = data;
  if (!cp) return;
  nf_mlp_free(cp->net);
  free(cp->idx);
  free(cp->mask);
  free(cp->hidden);
  free(cp);
}

/* Configuration keys: "transformer" (nf_transformer_kind_name), "mask" (dim
   sizes, 0 or 1), "hidden" (the conditioner's hidden widths), "activation"
   (nf_activation_name), then the transformer's own options (affine:
   "scale_bound"; spline: "bins", "tail_bound", "min_bin_width", ...), and
   "precision" (nf_precision_save: only when single). Files of
   earlier versions also hold "kind" (additive or affine), which must then
   name the same transformer. */
static nf_status coupling_save(const nf_layer *layer, nf_config *cfg)
{
  const coupling *cp = layer->data;
  size_t *mask = nf_alloc_n(layer->dim, sizeof *mask);
  if (!mask) return nf_fail(NF_ENOMEM, "coupling: out of memory");
  for (size_t j = 0; j < layer->dim; j++) mask[j] = cp->mask[j];
  nf_status st = nf_config_set_string(cfg, "transformer", cp->tf->name);
  if (!st) st = nf_config_set_sizes(cfg, "mask", layer->dim, mask);
  if (!st) st = nf_config_set_sizes(cfg, "hidden", cp->n_hidden, cp->hidden);
  if (!st) st = nf_config_set_string(cfg, "activation", nf_activation_name(cp->act));
  if (!st && cp->tf->save_opts) st = cp->tf->save_opts(&cp->tf_opts, cfg);
  if (!st) st = nf_precision_save(cfg, nf_mlp_precision(cp->net));
  free(mask);
  return st ? nf_fail_prefixed(st, "coupling") : NF_OK;
}

/* Reads a list of sizes under key into a fresh array (*v; *n entries; at
   least one allocated); NF_EFORMAT if more than max entries. */
static nf_status get_sizes(const nf_config *cfg, const char *key, size_t max, size_t *n,
                           size_t **v)
{
  nf_status st = nf_config_get_len(cfg, key, n);
  if (st) return st;
  if (*n > max) return nf_fail(NF_EFORMAT, "config key '%s': %zu entries, at most %zu", key, *n, max);
  if (!(*v = nf_alloc_n(*n, sizeof **v))) return nf_fail(NF_ENOMEM, "out of memory");
  st = nf_config_get_sizes(cfg, key, *n, *v);
  if (st) {
    free(*v);
    *v = NULL;
  }
  return st;
}

/* Reads the configuration coupling_save wrote into opts (mask and hidden
   allocated here); NF_EFORMAT, with a message naming the key, for anything
   missing or out of range. */
static nf_status load_opts(size_t dim, const nf_config *cfg, nf_coupling_opts *opts,
                           unsigned char *mask, size_t **hidden)
{
  const char *kind = NULL, *tf = NULL, *act = NULL;
  size_t n_mask = 0, *m = NULL;
  nf_transformer_kind tk = NF_TRANSFORMER_AFFINE;
  nf_status st = nf_config_get_string(cfg, "transformer", &tf);
  if (!st) st = nf_config_get_string(cfg, "activation", &act);
  if (st) return st;
  if (nf_transformer_kind_parse(tf, &tk))
    return nf_fail_prefixed(NF_EFORMAT, "config key 'transformer'");
  /* earlier files: "kind" (additive or affine) beside "transformer" */
  if (nf_config_has(cfg, "kind") &&
      (nf_config_get_string(cfg, "kind", &kind) || strcmp(kind, tf) != 0 ||
       tk > NF_TRANSFORMER_AFFINE))
    return nf_fail(NF_EFORMAT, "config key 'kind': '%s' does not match transformer '%s' "
                   "(files with 'kind' hold an additive or affine coupling)", kind ? kind : "?",
                   tf);
  if (nf_activation_parse(act, &opts->act))
    return nf_fail_prefixed(NF_EFORMAT, "config key 'activation'");
  if ((st = nf_precision_load(cfg, &opts->precision))) return st;
  if ((st = get_sizes(cfg, "mask", dim, &n_mask, &m))) return st;
  for (size_t j = 0; j < n_mask && !st; j++)
    if (m[j] > 1) st = nf_fail(NF_EFORMAT, "config key 'mask': entry %zu is %zu, not 0 or 1", j, m[j]);
    else mask[j] = (unsigned char)m[j];
  free(m);
  if (!st && n_mask != dim)
    st = nf_fail(NF_EFORMAT, "config key 'mask': %zu entries for dimension %zu", n_mask, dim);
  if (!st) st = get_sizes(cfg, "hidden", SIZE_MAX / sizeof(size_t), &opts->n_hidden, hidden);
  if (st) return st;
  opts->hidden = *hidden;
  opts->mask = mask;
  opts->transformer = nf_transformer_spec_default(tk);
  const nf_transformer *t = nf_transformer_of_kind(tk);
  if (!t) return nf_fail(NF_EFORMAT, "config key 'transformer': '%s' is not available", tf);
  if (t->load_opts && (st = t->load_opts(cfg, &opts->transformer))) return st;
  return NF_OK;
}

/* Rebuilds a coupling from its saved configuration, with zero parameters. */
static nf_layer *coupling_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                               const nf_resolver *res)
{
  (void)res;
  nf_coupling_opts opts = {0};
  size_t *hidden = NULL;
  unsigned char *mask = malloc(dim ? dim : 1);
  nf_layer *layer = NULL;
  if (!mask) nf_fail(NF_ENOMEM, "coupling: out of memory");
  else if (load_opts(dim, cfg, &opts, mask, &hidden)) nf_fail_prefixed(nf_last_status(), "coupling");
  else if (!(layer = nf_coupling_new(dim, ctx_dim, &opts, NULL))) /* a bad saved value */
    nf_fail_prefixed(nf_last_status() == NF_ENOMEM ? NF_ENOMEM : NF_EFORMAT, "coupling");
  free(hidden);
  free(mask);
  return layer;
}

const nf_layer_type nf_coupling_type = {
  .name = "coupling",
  .work_size = coupling_work_size,
  .apply = coupling_apply,
  .vjp = coupling_vjp,
  .destroy = coupling_destroy,
  /* check_params stays NULL: no finite parameter makes the map singular (top of file). */
  .save = coupling_save,
  .load = coupling_load,
};

void nf_coupling_mask_half(size_t dim, int parity, unsigned char *mask)
{
  for (size_t j = 0; mask && j < dim; j++) mask[j] = (j < dim / 2) == (parity == 0);
}

void nf_coupling_mask_alternate(size_t dim, int parity, unsigned char *mask)
{
  for (size_t j = 0; mask && j < dim; j++) mask[j] = (j % 2 == 0) == (parity == 0);
}

void nf_coupling_mask_checkerboard(size_t side, int parity, unsigned char *mask)
{
  for (size_t j = 0; mask && j < side * side; j++)
    mask[j] = ((j / side + j % side) % 2 == 0) == (parity == 0);
}

/* NF_OK if the options describe a coupling on R^dim; counts the passing
   coordinates and finds the transformer. */
static nf_status check_opts(size_t dim, const nf_coupling_opts *opts, size_t *da,
                            const nf_transformer **tf)
{
  const char *fn = "nf_coupling_new";
  if (nf_check_dim(fn, dim)) return NF_EINVAL;
  if (!opts) return nf_fail(NF_EINVAL, "%s: options are NULL", fn);
  if (!(*tf = nf_transformer_of_kind(opts->transformer.kind)))
    return nf_fail(NF_EINVAL, "%s: unknown transformer kind %d", fn, (int)opts->transformer.kind);
  if (!opts->mask) return nf_fail(NF_EINVAL, "%s: mask is NULL", fn);
  *da = 0;
  for (size_t j = 0; j < dim; j++) {
    if (opts->mask[j] > 1)
      return nf_fail(NF_EINVAL, "%s: mask[%zu] = %u is neither 0 nor 1", fn, j,
                     (unsigned)opts->mask[j]);
    *da += opts->mask[j];
  }
  if (*da == 0 || *da == dim)
    return nf_fail(NF_EINVAL, "%s: the mask must have at least one 1 (passing) and one 0 "
                   "(transformed) entry; it has %zu of %zu set", fn, *da, dim);
  return (*tf)->check_opts(&opts->transformer, fn);
}

/* Sets the conditioner's output bias so that the layer starts as the identity
   (the transformer's identity raw values for every coordinate). */
static void set_identity_bias(const coupling *cp, double *params, size_t n_params)
{
  double *bias = params + n_params - cp->db * cp->nr;
  for (size_t j = 0; j < cp->db; j++) cp->tf->identity_init(&cp->tf_opts, bias + j * cp->nr);
}

nf_layer *nf_coupling_new(size_t dim, size_t ctx_dim, const nf_coupling_opts *opts,
                          nf_rng *rng)
{
  size_t da = 0;
  const nf_transformer *tf = NULL;
  if (check_opts(dim, opts, &da, &tf)) return NULL;
  if (nf_check_dim("nf_coupling_new: conditioner input (passed coordinates + context)",
                   da + ctx_dim) || da + ctx_dim < da) {
    if (da + ctx_dim < da)
      nf_fail(NF_EINVAL, "nf_coupling_new: context width %zu overflows", ctx_dim);
    return NULL;
  }
  coupling *cp = calloc(1, sizeof *cp);
  size_t nh = opts->hidden ? opts->n_hidden : 0;
  if (!cp || !(cp->idx = nf_alloc_n(dim, sizeof *cp->idx)) || !(cp->mask = malloc(dim)) ||
      !(cp->hidden = nf_alloc_n(nh, sizeof *cp->hidden))) {
    coupling_destroy(cp);
    nf_fail(NF_ENOMEM, "nf_coupling_new: out of memory");
    return NULL;
  }
  cp->tf = tf;
  cp->tf_opts = opts->transformer;
  cp->da = da;
  cp->db = dim - da;
  cp->c = ctx_dim;
  cp->nr = cp->tf->n_raw(&cp->tf_opts);
  cp->nrec = cp->tf->n_record(&cp->tf_opts);
  memcpy(cp->mask, opts->mask, dim);
  if (nh) memcpy(cp->hidden, opts->hidden, nh * sizeof *cp->hidden);
  cp->n_hidden = nh;
  cp->act = opts->act;
  for (size_t j = 0, a = 0, b = da; j < dim; j++) cp->idx[opts->mask[j] ? a++ : b++] = j;
  cp->net = nf_mlp_new(da + ctx_dim, opts->n_hidden, opts->hidden, cp->db * cp->nr, opts->act);
  if (!cp->net || nf_mlp_set_precision(cp->net, opts->precision)) {
    nf_fail_prefixed(NF_EINVAL, "nf_coupling_new: conditioner");
    coupling_destroy(cp);
    return NULL;
  }
  size_t np = nf_mlp_n_params(cp->net);
  nf_layer *layer = nf_layer_create(&nf_coupling_type, dim, ctx_dim, np, cp);
  if (!layer) return NULL;
  if (rng) nf_mlp_init(cp->net, rng, 0.0, layer->init);
  set_identity_bias(cp, layer->init, np);
  return layer;
}
