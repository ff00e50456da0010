/* lib/bijectors/autoregressive.c — autoregressive layers: a MADE conditioner
   times an elementwise transformer (MAF, Papamakarios et al. 2017; NSF,
   Durkan et al. 2019):
     forward  x_j = τ(z_j; h_j(x)),    h = MADE(x, ctx), h_j sees x_<j only
     inverse  z = τ^-1(x; MADE(x, ctx)), one pass (the density direction).
   Forward takes dim + 1 MADE passes: pass k fixes the coordinate at position
   k of the order; a last pass gives h(x) and the MADE's record at the final x,
   and one transformer call on the whole block gives x, its log-det and the
   transformer's record.

   The forward vjp. With G = τ(z; h), H(x) = MADE(x, ctx; θ) and the log-det
   ℓ(z, h) = sum_j log τ'(z_j; h_j), x solves x = G(z, H(x)). Differentiating,
   (I - G_h H_x) dx = G_z dz + G_h (H_θ dθ + H_c dc), and for
   L = <g_x, x> + g_l ℓ(z, H(x)) the cotangent λ of x solves
     λ = g_x + H_x^T μ(λ),   μ(λ) = G_h^T λ + g_l ℓ_h,
   after which g_z = G_z^T λ + g_l ℓ_z, and μ(λ) pulled back through the MADE
   gives g_θ and g_ctx. (μ(λ), g_z) is exactly the transformer's forward
   backward with cotangents (λ, g_l); H_x^T μ is one MADE backward pass. As
   H_x G_h is strictly triangular in the order (nilpotent), dim sweeps from
   λ = 0 solve the system exactly.

   No check_params op: the transformers' parameters are conditioner outputs
   and no finite value makes them singular (soft-clamped scales, splines with
   minimum bin sizes and derivatives).

   Workspace of n rows: the MADE's, then h (n d nr), the transformer record
   (n d nrec), g_h (n d nr), λ and a second n x d buffer (the output before
   it is copied out; the MADE's input cotangent in vjp), and the one
   coordinate's scratch of the forward passes (n (nr + nrec + 2)). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/autoregressive.h"
#include "nflow/config.h"
#include "transformer.h"

typedef struct autoregressive {
  nf_made *made;
  const nf_transformer *tf;
  nf_transformer_opts tf_opts;
  size_t nr, nrec;          /* the transformer's raw values and record per coordinate */
  size_t n_hidden, *hidden; /* kept for saving */
  nf_activation act;
  nf_order_kind order;
  uint64_t seed;
} autoregressive;

typedef struct ar_ws {
  double *made, *h, *rec, *g_h, *lam, *buf, *hk, *reck, *zk, *xk;
} ar_ws;

static ar_ws ws_layout(const autoregressive *ar, size_t n, size_t d, double *work)
{
  ar_ws ws;
  ws.made = work;
  ws.h = ws.made + nf_made_work_size(ar->made, n);
  ws.rec = ws.h + n * d * ar->nr;
  ws.g_h = ws.rec + n * d * ar->nrec;
  ws.lam = ws.g_h + n * d * ar->nr;
  ws.buf = ws.lam + n * d;
  ws.hk = ws.buf + n * d;
  ws.reck = ws.hk + n * ar->nr;
  ws.zk = ws.reck + n * ar->nrec;
  ws.xk = ws.zk + n;
  return ws;
}

/* Doubles of the layout above. */
static size_t ar_work_size(const nf_layer *layer, size_t n)
{
  const autoregressive *ar = layer->data;
  size_t per_coord = 2 * ar->nr + ar->nrec + 2, per_row, own, total; /* small: checked in new */
  size_t made = nf_made_work_size(ar->made, n);
  if (!made || nf_size_mul(layer->dim, per_coord, &per_row) ||
      nf_size_add(per_row, ar->nr + ar->nrec + 2, &per_row) || nf_size_mul(n, per_row, &own) ||
      nf_size_add(own, made, &total))
    return 0;
  return total;
}

/* Sampling: x = τ(z; h(x)) by one MADE pass per position of the order (pass
   k fixes x at order[k]), then a last pass for h(x); writes x into buf. */
static nf_status forward_passes(const autoregressive *ar, size_t n, size_t d, const double *z,
                                const double *ctx, ar_ws *ws)
{
  const size_t *order = nf_made_order(ar->made), nr = ar->nr;
  memset(ws->buf, 0, n * d * sizeof *ws->buf);
  for (size_t k = 0; k < d; k++) {
    size_t j = order[k];
    nf_made_forward(ar->made, n, ws->buf, ctx, ws->h, ws->made);
    for (size_t i = 0; i < n; i++) {
      memcpy(ws->hk + i * nr, ws->h + (i * d + j) * nr, nr * sizeof *ws->hk);
      ws->zk[i] = z[i * d + j];
    }
    nf_status st = ar->tf->forward(&ar->tf_opts, n, 1, ws->hk, ws->zk, ws->xk, NULL, ws->reck);
    if (st) return st;
    for (size_t i = 0; i < n; i++) ws->buf[i * d + j] = ws->xk[i];
  }
  nf_made_forward(ar->made, n, ws->buf, ctx, ws->h, ws->made);
  return NF_OK;
}

/* out = T(in) (forward, dim + 1 MADE passes) or T^-1(in) (inverse, one pass);
   logdet += +-sum_j log τ'. */
static nf_status ar_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                          const double *in, const double *ctx, double *out, double *logdet,
                          const nf_apply_opts *opts, double *work)
{
  (void)opts;
  const autoregressive *ar = layer->data;
  const size_t d = layer->dim;
  ar_ws ws = ws_layout(ar, n, d, work);
  nf_made_mask(ar->made, theta, ws.made);
  nf_status st;
  if (dir == NF_FORWARD) {
    st = forward_passes(ar, n, d, in, ctx, &ws);
    if (!st) st = ar->tf->forward(&ar->tf_opts, n, d, ws.h, in, ws.buf, logdet, ws.rec);
  } else {
    nf_made_forward(ar->made, n, in, ctx, ws.h, ws.made);
    st = ar->tf->inverse(&ar->tf_opts, n, d, ws.h, in, ws.buf, logdet, ws.rec);
  }
  if (st) return nf_fail_prefixed(st, "autoregressive");
  memcpy(out, ws.buf, n * d * sizeof *out);
  return NF_OK;
}

/* Forward vjp (top of the file): λ = g_x + H_x^T μ(λ) by dim sweeps from
   λ = 0, then g_z and μ(λ) from the transformer and g_θ, g_ctx from the MADE. */
static void forward_vjp(const autoregressive *ar, size_t n, size_t d, const double *z,
                        const double *x, const double *g_x, const double *g_l, double *g_z,
                        double *g_ctx, double *g_theta, ar_ws *ws)
{
  memset(ws->lam, 0, n * d * sizeof *ws->lam);
  for (size_t s = 0; s < d; s++) {
    ar->tf->backward(&ar->tf_opts, NF_FORWARD, n, d, ws->h, z, x, ws->rec, ws->lam, g_l, NULL,
                     ws->g_h);
    nf_made_backward(ar->made, n, ws->g_h, ws->buf, NULL, NULL, ws->made);
    for (size_t k = 0; k < n * d; k++) ws->lam[k] = g_x[k] + ws->buf[k];
  }
  ar->tf->backward(&ar->tf_opts, NF_FORWARD, n, d, ws->h, z, x, ws->rec, ws->lam, g_l, g_z,
                   ws->g_h);
  nf_made_backward(ar->made, n, ws->g_h, NULL, g_ctx, g_theta, ws->made);
}

/* Vector-Jacobian product of apply(dir), reading the record in work. Inverse:
   the transformer's pullback to x and h, h's through the MADE. Forward:
   forward_vjp. */
static nf_status ar_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                        const double *in, const double *ctx, const double *out,
                        const double *g_out, const double *g_logdet, double *g_in, double *g_ctx,
                        double *g_theta, double *work)
{
  (void)theta;
  (void)ctx;
  const autoregressive *ar = layer->data;
  const size_t d = layer->dim;
  ar_ws ws = ws_layout(ar, n, d, work);
  if (dir == NF_FORWARD) {
    if (g_in || g_ctx || g_theta)
      forward_vjp(ar, n, d, in, out, g_out, g_logdet, g_in, g_ctx, g_theta, &ws);
    return NF_OK;
  }
  ar->tf->backward(&ar->tf_opts, NF_INVERSE, n, d, ws.h, in, out, ws.rec, g_out, g_logdet,
                   g_in ? ws.lam : NULL, ws.g_h);
  nf_made_backward(ar->made, n, ws.g_h, g_in ? ws.buf : NULL, g_ctx, g_theta, ws.made);
  for (size_t k = 0; g_in && k < n * d; k++) g_in[k] = ws.lam[k] + ws.buf[k];
  return NF_OK;
}

static void ar_destroy(void *data)
{
  autoregressive *ar = data;
  if (!ar) return;
  nf_made_free(ar->made);
  free(ar->hidden);
  free(ar);
}

/* Configuration keys: "transformer" (nf_transformer_kind_name) and the
   transformer's own options, "hidden", "activation", "order"
   (nf_order_kind_name), "order_seed" (decimal string: a uint64 exceeds JSON
   integers), "permutation" (the order itself, checked on load) and
   "precision" (nf_precision_save: only when single). */
static nf_status ar_save(const nf_layer *layer, nf_config *cfg)
{
  const autoregressive *ar = layer->data;
  char seed[24];
  snprintf(seed, sizeof seed, "%" PRIu64, ar->seed);
  nf_status st = nf_config_set_string(cfg, "transformer", nf_transformer_kind_name(ar->tf_opts.kind));
  if (!st && ar->tf->save_opts) st = ar->tf->save_opts(&ar->tf_opts, cfg);
  if (!st) st = nf_config_set_sizes(cfg, "hidden", ar->n_hidden, ar->hidden);
  if (!st) st = nf_config_set_string(cfg, "activation", nf_activation_name(ar->act));
  if (!st) st = nf_config_set_string(cfg, "order", nf_order_kind_name(ar->order));
  if (!st) st = nf_config_set_string(cfg, "order_seed", seed);
  if (!st) st = nf_config_set_sizes(cfg, "permutation", layer->dim, nf_made_order(ar->made));
  if (!st) st = nf_precision_save(cfg, nf_made_precision(ar->made));
  return st ? nf_fail_prefixed(st, "autoregressive") : NF_OK;
}

/* Reads a decimal uint64 under key; NF_EFORMAT if it is not one. */
static nf_status get_seed(const nf_config *cfg, const char *key, uint64_t *seed)
{
  const char *s = NULL;
  nf_status st = nf_config_get_string(cfg, key, &s);
  if (st) return st;
  char *end = NULL;
  errno = 0;
  unsigned long long v = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
  if (!end || *end || errno == ERANGE)
    return nf_fail(NF_EFORMAT, "config key '%s': '%s' is not an unsigned 64-bit integer", key, s);
  *seed = (uint64_t)v;
  return NF_OK;
}

/* Reads what ar_save wrote into opts (hidden allocated here, also on failure). */
static nf_status load_opts(const nf_config *cfg, nf_autoregressive_opts *o, size_t **hidden)
{
  const char *tf = NULL, *act = NULL, *order = NULL;
  nf_status st = nf_config_get_string(cfg, "transformer", &tf);
  if (!st) st = nf_config_get_string(cfg, "activation", &act);
  if (!st) st = nf_config_get_string(cfg, "order", &order);
  if (!st) st = get_seed(cfg, "order_seed", &o->order_seed);
  if (st) return st;
  if (nf_transformer_kind_parse(tf, &o->transformer.kind) ||
      !nf_transformer_of_kind(o->transformer.kind))
    return nf_fail(NF_EFORMAT, "config key 'transformer': '%s' is not a known transformer", tf);
  if (nf_activation_parse(act, &o->act)) return nf_fail_prefixed(NF_EFORMAT, "config key 'activation'");
  if (nf_order_kind_parse(order, &o->order)) return nf_fail_prefixed(NF_EFORMAT, "config key 'order'");
  if ((st = nf_precision_load(cfg, &o->precision))) return st;
  const nf_transformer *t = nf_transformer_of_kind(o->transformer.kind);
  o->transformer = nf_transformer_spec_default(o->transformer.kind);
  if (t->load_opts && (st = t->load_opts(cfg, &o->transformer))) return st;
  if ((st = nf_config_get_len(cfg, "hidden", &o->n_hidden))) return st;
  if (!(*hidden = nf_alloc_n(o->n_hidden, sizeof **hidden))) return nf_fail(NF_ENOMEM, "out of memory");
  o->hidden = *hidden;
  return nf_config_get_sizes(cfg, "hidden", o->n_hidden, *hidden);
}

/* NF_EFORMAT unless the saved "permutation" is the layer's order. */
static nf_status check_permutation(const nf_config *cfg, const nf_layer *layer)
{
  const autoregressive *ar = layer->data;
  size_t len = 0, *p = NULL;
  nf_status st = nf_config_get_len(cfg, "permutation", &len);
  if (!st && len != layer->dim)
    st = nf_fail(NF_EFORMAT, "config key 'permutation': %zu entries for dimension %zu", len,
                 layer->dim);
  if (!st && !(p = nf_alloc_n(len, sizeof *p))) st = nf_fail(NF_ENOMEM, "out of memory");
  if (!st) st = nf_config_get_sizes(cfg, "permutation", len, p);
  if (!st && memcmp(p, nf_made_order(ar->made), len * sizeof *p) != 0)
    st = nf_fail(NF_EFORMAT, "config key 'permutation' differs from the order its kind and "
                 "seed give");
  free(p);
  return st;
}

/* Rebuilds an autoregressive layer from its configuration, zero parameters. */
static nf_layer *ar_load(size_t dim, size_t ctx_dim, const nf_config *cfg, const nf_resolver *res)
{
  (void)res;
  nf_autoregressive_opts o = nf_autoregressive_opts_default();
  size_t *hidden = NULL;
  nf_layer *layer = NULL;
  if (load_opts(cfg, &o, &hidden))
    nf_fail_prefixed(nf_last_status() == NF_ENOMEM ? NF_ENOMEM : NF_EFORMAT, "autoregressive");
  else if (!(layer = nf_autoregressive_new(dim, ctx_dim, &o, NULL)))
    nf_fail_prefixed(nf_last_status() == NF_ENOMEM ? NF_ENOMEM : NF_EFORMAT, "autoregressive");
  else if (check_permutation(cfg, layer)) {
    nf_layer_free(layer);
    layer = NULL;
    nf_fail_prefixed(nf_last_status() == NF_ENOMEM ? NF_ENOMEM : NF_EFORMAT, "autoregressive");
  }
  free(hidden);
  return layer;
}

const nf_layer_type nf_autoregressive_type = {
  .name = "autoregressive",
  .work_size = ar_work_size,
  .apply = ar_apply,
  .vjp = ar_vjp,
  .destroy = ar_destroy,
  /* check_params stays NULL: no finite parameter makes the map singular (top of file). */
  .save = ar_save,
  .load = ar_load,
};

nf_autoregressive_opts nf_autoregressive_opts_default(void)
{
  static const size_t hidden[2] = {64, 64};
  nf_autoregressive_opts o = {2, hidden, NF_ACT_RELU, NF_ORDER_NATURAL, 0,
                              nf_transformer_spec_default(NF_TRANSFORMER_AFFINE),
                              NF_PRECISION_DOUBLE};
  return o;
}

/* The output biases (the last dim nr parameters) = the transformer's identity values. */
static void set_identity_bias(const autoregressive *ar, size_t d, double *params, size_t n_params)
{
  double *bias = params + n_params - d * ar->nr;
  for (size_t j = 0; j < d; j++) ar->tf->identity_init(&ar->tf_opts, bias + j * ar->nr);
}

nf_layer *nf_autoregressive_new(size_t dim, size_t ctx_dim, const nf_autoregressive_opts *opts,
                                nf_rng *rng)
{
  const char *fn = "nf_autoregressive_new";
  nf_autoregressive_opts o = opts ? *opts : nf_autoregressive_opts_default();
  const nf_transformer *tf = nf_transformer_of_kind(o.transformer.kind);
  if (nf_check_dim(fn, dim)) return NULL;
  if (!tf) {
    nf_fail(NF_EINVAL, "%s: unknown or unavailable transformer kind %d", fn, (int)o.transformer.kind);
    return NULL;
  }
  if (tf->check_opts(&o.transformer, fn)) return NULL;
  size_t nh = o.hidden ? o.n_hidden : 0;
  autoregressive *ar = calloc(1, sizeof *ar);
  if (!ar || !(ar->hidden = nf_alloc_n(nh, sizeof *ar->hidden))) {
    ar_destroy(ar);
    nf_fail(NF_ENOMEM, "%s: out of memory", fn);
    return NULL;
  }
  ar->tf = tf;
  ar->tf_opts = o.transformer;
  ar->nr = tf->n_raw(&ar->tf_opts);
  ar->nrec = tf->n_record(&ar->tf_opts);
  if (nh) memcpy(ar->hidden, o.hidden, nh * sizeof *ar->hidden);
  ar->n_hidden = nh;
  ar->act = o.act;
  ar->order = o.order;
  ar->seed = o.order_seed;
  ar->made = nf_made_new(dim, ctx_dim, o.n_hidden, o.hidden, ar->nr, o.act, o.order, o.order_seed);
  if (!ar->made || nf_made_set_precision(ar->made, o.precision)) {
    nf_fail_prefixed(nf_last_status(), fn);
    ar_destroy(ar);
    return NULL;
  }
  size_t np = nf_made_n_params(ar->made);
  nf_layer *layer = nf_layer_create(&nf_autoregressive_type, dim, ctx_dim, np, ar);
  if (!layer) return NULL;
  if (rng) nf_made_init(ar->made, rng, 0.0, layer->init);
  set_identity_bias(ar, dim, layer->init, np);
  return layer;
}
