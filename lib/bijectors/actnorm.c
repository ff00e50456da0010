/* lib/bijectors/actnorm.c — actnorm (Kingma & Dhariwal 2018): the affine
   layer's map and parameters (affine.c), plus data-dependent initialisation:
   shift = mean, log_scale = log sd of the rows entering it towards z. */
#include <float.h>
#include <math.h>

#include "internal.h"
#include "affine_ops.h"
#include "nflow/actnorm.h"

/* Population mean and variance of column j of the n x d rows x (two passes,
   the mean corrected by the mean residual), and the column's max |x|. */
static void column_moments(size_t n, size_t d, size_t j, const double *x, double *mean,
                           double *var, double *amax)
{
  double s = 0, m, r = 0, v = 0, a = 0;
  for (size_t i = 0; i < n; i++) s += x[i * d + j];
  m = s / (double)n;
  for (size_t i = 0; i < n; i++) r += x[i * d + j] - m;
  m += r / (double)n;
  for (size_t i = 0; i < n; i++) {
    double e = x[i * d + j] - m;
    v += e * e;
    a = fmax(a, fabs(x[i * d + j]));
  }
  *mean = m;
  *var = v / (double)n;
  *amax = a;
}

/* init_from_data: b_j = mean_j, a_j = log sd_j (0 for a column constant up
   to rounding), so (x - b) exp(-a) has mean 0 and variance 1 per column. */
static nf_status actnorm_init_from_data(const nf_layer *layer, double *theta, size_t n,
                                        const double *in, const double *ctx)
{
  (void)ctx;
  size_t d = layer->dim;
  for (size_t j = 0; j < d; j++) {
    double mean, var, amax, floor_sd;
    column_moments(n, d, j, in, &mean, &var, &amax);
    floor_sd = 64.0 * DBL_EPSILON * amax;
    double a = var > floor_sd * floor_sd ? 0.5 * log(var) : 0.0;
    if (!isfinite(var) || fabs(a) > NF_MAX_LOG_SCALE)
      return nf_fail(NF_EDOMAIN, "actnorm: column %zu of the data has variance %g, whose log "
                     "scale is beyond +-%g", j, var, NF_MAX_LOG_SCALE);
    theta[j] = mean;
    theta[d + j] = a;
  }
  return NF_OK;
}

/* load: a fresh layer (theta is loaded apart). */
static nf_layer *actnorm_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                              const nf_resolver *res)
{
  (void)ctx_dim;
  (void)cfg;
  (void)res;
  return nf_actnorm_new(dim);
}

const nf_layer_type nf_actnorm_type = {
  .name = "actnorm",
  .work_size = nf_affine_work_size,
  .apply = nf_affine_apply,
  .vjp = nf_affine_vjp,
  .check_params = nf_affine_check_params,
  .save = nf_affine_save,
  .load = actnorm_load,
  .init_from_data = actnorm_init_from_data,
};

nf_layer *nf_actnorm_new(size_t dim)
{
  if (nf_check_dim("nf_actnorm_new", dim)) return NULL;
  return nf_layer_create(&nf_actnorm_type, dim, 0, 2 * dim, NULL); /* 2 dim: nf_check_dim */
}
