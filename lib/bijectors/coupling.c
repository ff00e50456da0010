/* lib/coupling.c — coupling layers (NICE, Dinh et al. 2014; RealNVP, Dinh et al. 2016).

   The mask splits a row into z_a (mask 1: passes unchanged) and z_b (mask 0).
   The conditioner MLP maps the row [z_a, ctx] to t (additive) or to (s_raw, t)
   (affine), s = B tanh(s_raw / B):
     forward  x_b = z_b exp(s) + t,     logdet += sum_j s_j
     inverse  z_b = (x_b - t) exp(-s),  logdet -= sum_j s_j
   (s = 0 for additive). Since x_a = z_a, the conditioner's input is the same
   in both directions.

   Workspace of n rows, in this order: the conditioner's input [z_a, ctx]
   (n x (da + c)), its output with s_raw replaced by s (n x m, m = db or 2 db),
   the cotangent of that output (n x m), the cotangent of its input
   (n x (da + c)), then the MLP's own workspace. apply leaves the first two and
   the MLP's record there; vjp reads them and does not rerun the conditioner. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/coupling.h"

typedef struct coupling {
  nf_coupling_kind kind;
  nf_mlp *net;
  size_t da, db, c; /* passing, transformed and context widths */
  size_t m;         /* conditioner outputs: db (additive) or 2 db (affine: s then t) */
  size_t *idx;      /* da passing coordinates, then db transformed ones, ascending */
  double bound;     /* B of the soft clamp (affine) */
} coupling;

/* Views of a coupling workspace of n rows (see the top of this file). */
typedef struct coupling_ws {
  double *cond_in, *cond_out, *g_cond_out, *g_cond_in, *mlp;
} coupling_ws;

static coupling_ws ws_layout(const coupling *cp, size_t n, double *work)
{
  coupling_ws ws;
  ws.cond_in = work;
  ws.cond_out = ws.cond_in + n * (cp->da + cp->c);
  ws.g_cond_out = ws.cond_out + n * cp->m;
  ws.g_cond_in = ws.g_cond_out + n * cp->m;
  ws.mlp = ws.g_cond_in + n * (cp->da + cp->c);
  return ws;
}

static size_t coupling_work_size(const nf_layer *layer, size_t n)
{
  const coupling *cp = layer->data;
  return n * (2 * (cp->da + cp->c) + 2 * cp->m) + nf_mlp_work_size(cp->net, n);
}

/* cond_in[i] = [in[i, idx_a], ctx[i]]. */
static void gather_conditioner_input(const coupling *cp, size_t n, size_t d, const double *in,
                                     const double *ctx, double *cond_in)
{
  size_t w = cp->da + cp->c;
  for (size_t i = 0; i < n; i++) {
    double *r = cond_in + i * w;
    for (size_t j = 0; j < cp->da; j++) r[j] = in[i * d + cp->idx[j]];
    if (cp->c) memcpy(r + cp->da, ctx + i * cp->c, cp->c * sizeof *r);
  }
}

/* s = B tanh(s_raw / B) in place on the first db columns of the conditioner output. */
static void soft_clamp(const coupling *cp, size_t n, double *cond_out)
{
  double B = cp->bound;
  for (size_t i = 0; i < n; i++) {
    double *s = cond_out + i * cp->m;
    for (size_t j = 0; j < cp->db; j++) s[j] = B * tanh(s[j] / B);
  }
}

/* out = T(in) (dir = forward) or T^-1(in); logdet[i] += +-sum_j s_ij. */
static nf_status coupling_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                                const double *in, const double *ctx,
                                double *out, double *logdet, const nf_apply_opts *opts, double *work)
{
  const coupling *cp = layer->data;
  const size_t d = layer->dim, *ia = cp->idx, *ib = cp->idx + cp->da;
  const int affine = cp->kind == NF_COUPLING_AFFINE, fwd = dir == NF_FORWARD;
  const size_t t_off = affine ? cp->db : 0;
  (void)opts;
  coupling_ws ws = ws_layout(cp, n, work);
  gather_conditioner_input(cp, n, d, in, ctx, ws.cond_in);
  nf_mlp_forward(cp->net, theta, n, ws.cond_in, ws.cond_out, ws.mlp);
  if (affine) soft_clamp(cp, n, ws.cond_out);
  for (size_t i = 0; i < n; i++) {
    const double *r = in + i * d, *s = ws.cond_out + i * cp->m, *t = s + t_off;
    double *o = out + i * d, sum_s = 0;
    for (size_t j = 0; j < cp->da; j++) o[ia[j]] = r[ia[j]];
    for (size_t j = 0; j < cp->db; j++) {
      double sj = affine ? s[j] : 0.0;
      o[ib[j]] = fwd ? r[ib[j]] * exp(sj) + t[j] : (r[ib[j]] - t[j]) * exp(-sj);
      sum_s += sj;
    }
    if (logdet) logdet[i] += fwd ? sum_s : -sum_s;
  }
  return NF_OK;
}

/* Cotangents of the conditioner output and of z_b. With e = exp(+-s) and
   w = d out_b / d s (forward: z_b e; inverse: -(x_b - t) e):
   g_in_b = g_out_b e; g_t = g_out_b (forward) or -g_out_b e (inverse);
   g_s = g_out_b w +- g_logdet; g_s_raw = g_s (1 - (s/B)^2). */
static void transform_backward(const coupling *cp, nf_dir dir, size_t n, size_t d,
                               const double *in, const double *cond_out, const double *g_out,
                               const double *g_logdet, double *g_cond_out, double *g_in)
{
  const size_t *ib = cp->idx + cp->da;
  const int affine = cp->kind == NF_COUPLING_AFFINE, fwd = dir == NF_FORWARD;
  const size_t t_off = affine ? cp->db : 0;
  const double sign = nf_dir_sign(dir), inv_b = affine ? 1.0 / cp->bound : 0.0;
  for (size_t i = 0; i < n; i++) {
    const double *s = cond_out + i * cp->m, *t = s + t_off;
    double *g_s = g_cond_out + i * cp->m, *g_t = g_s + t_off;
    double gl = g_logdet ? g_logdet[i] : 0.0;
    for (size_t j = 0; j < cp->db; j++) {
      size_t k = i * d + ib[j];
      double sj = affine ? s[j] : 0.0, e = exp(sign * sj), go = g_out[k];
      double g_zb = go * e;
      g_t[j] = fwd ? go : -g_zb;
      if (affine) {
        double w = fwd ? in[k] * e : -(in[k] - t[j]) * e;
        double q = sj * inv_b;
        g_s[j] = (go * w + sign * gl) * (1.0 - q * q);
      }
      if (g_in) g_in[k] = g_zb;
    }
  }
}

/* Vector-Jacobian product of apply(dir): backpropagation through the
   transform and the conditioner recorded in work. */
static nf_status coupling_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                              const double *in, const double *ctx, const double *out,
                              const double *g_out, const double *g_logdet,
                              double *g_in, double *g_ctx, double *g_theta, double *work)
{
  (void)ctx;
  (void)out;
  const coupling *cp = layer->data;
  const size_t d = layer->dim, w = cp->da + cp->c, *ia = cp->idx;
  coupling_ws ws = ws_layout(cp, n, work);
  transform_backward(cp, dir, n, d, in, ws.cond_out, g_out, g_logdet, ws.g_cond_out, g_in);
  int want_input = g_in || (g_ctx && cp->c);
  nf_mlp_backward(cp->net, theta, n, ws.cond_in, ws.g_cond_out,
                  want_input ? ws.g_cond_in : NULL, g_theta, ws.mlp);
  if (!want_input) return NF_OK;
  for (size_t i = 0; i < n; i++) {
    const double *gc = ws.g_cond_in + i * w;
    if (g_in)
      for (size_t j = 0; j < cp->da; j++) g_in[i * d + ia[j]] = g_out[i * d + ia[j]] + gc[j];
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
  free(cp);
}

const nf_layer_type nf_coupling_type = {
  .name = "coupling",
  .work_size = coupling_work_size,
  .apply = coupling_apply,
  .vjp = coupling_vjp,
  .destroy = coupling_destroy,
};

void nf_mask_half(size_t dim, int parity, unsigned char *mask)
{
  for (size_t j = 0; mask && j < dim; j++) mask[j] = (j < dim / 2) == (parity == 0);
}

void nf_mask_alternate(size_t dim, int parity, unsigned char *mask)
{
  for (size_t j = 0; mask && j < dim; j++) mask[j] = (j % 2 == 0) == (parity == 0);
}

/* NF_OK if the options describe a coupling on R^dim; counts the passing coordinates. */
static nf_status check_opts(size_t dim, const nf_coupling_opts *opts, size_t *da)
{
  const char *fn = "nf_coupling_new";
  if (nf_check_dim(fn, dim)) return NF_EINVAL;
  if (!opts) return nf_fail(NF_EINVAL, "%s: options are NULL", fn);
  if (opts->kind != NF_COUPLING_ADDITIVE && opts->kind != NF_COUPLING_AFFINE)
    return nf_fail(NF_EINVAL, "%s: unknown coupling kind %d", fn, (int)opts->kind);
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
  if (opts->kind == NF_COUPLING_AFFINE)
    return nf_check_positive(fn, "scale_bound", opts->scale_bound);
  return NF_OK;
}

nf_layer *nf_coupling_new(size_t dim, size_t ctx_dim, const nf_coupling_opts *opts,
                          nf_rng *rng)
{
  size_t da = 0;
  if (check_opts(dim, opts, &da)) return NULL;
  coupling *cp = calloc(1, sizeof *cp);
  if (!cp || !(cp->idx = malloc(dim * sizeof *cp->idx))) {
    coupling_destroy(cp);
    nf_fail(NF_ENOMEM, "nf_coupling_new: out of memory");
    return NULL;
  }
  cp->kind = opts->kind;
  cp->da = da;
  cp->db = dim - da;
  cp->c = ctx_dim;
  cp->m = opts->kind == NF_COUPLING_AFFINE ? 2 * cp->db : cp->db;
  cp->bound = opts->scale_bound;
  for (size_t j = 0, a = 0, b = da; j < dim; j++) cp->idx[opts->mask[j] ? a++ : b++] = j;
  cp->net = nf_mlp_new(da + ctx_dim, opts->n_hidden, opts->hidden, cp->m, opts->act);
  if (!cp->net) {
    nf_fail_prefixed(NF_EINVAL, "nf_coupling_new: conditioner");
    coupling_destroy(cp);
    return NULL;
  }
  nf_layer *layer = nf_layer_create(&nf_coupling_type, dim, ctx_dim, nf_mlp_n_params(cp->net), cp);
  if (layer && rng) nf_mlp_init(cp->net, rng, 0.0, layer->init);
  return layer;
}
