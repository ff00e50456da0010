/* lib/affine.c — elementwise affine bijector x = z * exp(a) + b.

   Parameters (theta view): shift b[d], then log_scale a[d]; zero = identity.
   Written with sigma = +1 forward, -1 inverse and e_j = exp(sigma a_j):
     forward  out = in * e + b,        logdet += sum(a)
     inverse  out = (in - b) * e,      logdet -= sum(a)
   so d out/d in = e, d out/d a = sigma (out - b_out) with b_out = b forward,
   0 inverse, and d out/d b = 1 forward, -e inverse. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "nflow/affine.h"
#include "nflow/config.h"
#include "affine_ops.h"

/* Doubles of workspace: the d scale factors exp(sigma a). */
size_t nf_affine_work_size(const nf_layer *layer, size_t n)
{
  (void)n;
  return layer->dim;
}

/* e[j] = exp(sigma a_j); returns sigma sum(a), the log-det of the direction. */
static double fill_scales(const nf_layer *layer, const double *theta, double sigma, double *e)
{
  const double *a = theta + layer->dim;
  double sum_a = 0;
  for (size_t j = 0; j < layer->dim; j++) {
    e[j] = exp(sigma * a[j]);
    sum_a += a[j];
  }
  return sigma * sum_a;
}

/* out = (in - b_in) * exp(sigma a) + b_out; logdet[i] += sigma sum(a). */
nf_status nf_affine_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                          const double *in, const double *ctx, double *out, double *logdet,
                          const nf_apply_opts *opts, double *work)
{
  (void)ctx;
  (void)opts;
  size_t d = layer->dim;
  const double *b = theta;
  double ld = fill_scales(layer, theta, nf_dir_sign(dir), work);
  int fwd = dir == NF_FORWARD;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++)
      out[i * d + j] = fwd ? in[i * d + j] * work[j] + b[j] : (in[i * d + j] - b[j]) * work[j];
  nf_logdet_add(n, logdet, ld);
  return NF_OK;
}

/* g_in = g_out * e; g_b += sum_i g_out (forward) or -sum_i g_out e (inverse);
   g_a += sigma (sum_i g_out (out - b_out) + sum_i g_logdet). */
nf_status nf_affine_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                        const double *in, const double *ctx, const double *out,
                        const double *g_out, const double *g_logdet, double *g_in, double *g_ctx,
                        double *g_theta, double *work)
{
  (void)in;
  (void)ctx;
  (void)g_ctx;
  size_t d = layer->dim;
  const double *b = theta;
  double sigma = nf_dir_sign(dir), g_ld = nf_sum_or_zero(n, g_logdet);
  int fwd = dir == NF_FORWARD;
  fill_scales(layer, theta, sigma, work);
  for (size_t i = 0; g_in && i < n; i++)
    for (size_t j = 0; j < d; j++) g_in[i * d + j] = g_out[i * d + j] * work[j];
  if (!g_theta) return NF_OK;
  double *g_b = g_theta, *g_a = g_theta + d;
  for (size_t j = 0; j < d; j++) g_a[j] += sigma * g_ld;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) {
      double g = g_out[i * d + j];
      g_b[j] += fwd ? g : -g * work[j];
      g_a[j] += sigma * g * (out[i * d + j] - (fwd ? b[j] : 0.0));
    }
  return NF_OK;
}

/* check_params: exp(+-a_j) stays a normal double, so the map is invertible
   (the message names the family: affine or actnorm). */
nf_status nf_affine_check_params(const nf_layer *layer, const double *theta)
{
  return nf_check_log_scales(layer->type->name, "log_scale", layer->dim, theta + layer->dim, layer->dim);
}

/* save: nothing beyond the dimension the model file keeps (affine, actnorm). */
nf_status nf_affine_save(const nf_layer *layer, nf_config *cfg)
{
  (void)layer;
  (void)cfg;
  return NF_OK;
}

/* load: a fresh layer (theta is loaded apart). */
static nf_layer *affine_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                             const nf_resolver *res)
{
  (void)ctx_dim;
  (void)cfg;
  (void)res;
  return nf_affine_new(dim);
}

const nf_layer_type nf_affine_type = {
  .check_params = nf_affine_check_params,
  .save = nf_affine_save,
  .load = affine_load,
  .name = "affine",
  .work_size = nf_affine_work_size,
  .apply = nf_affine_apply,
  .vjp = nf_affine_vjp,
  .destroy = NULL,
};

nf_layer *nf_affine_new(size_t dim)
{
  if (nf_check_dim("nf_affine_new", dim)) return NULL;
  return nf_layer_create(&nf_affine_type, dim, 0, 2 * dim, NULL); /* 2 dim: nf_check_dim */
}
