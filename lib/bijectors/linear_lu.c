/* lib/linear_lu.c — invertible linear layer x = P L U z + b in LU form
   (Kingma & Dhariwal 2018, Glow, section 3.2).

   Parameters (theta view), n_params = d + d*d:
     b[d]      the shift;
     W[d*d]    one row-major d x d matrix packed like LAPACK's getrf output:
               strict lower part = the strict lower entries of the unit-lower L,
               strict upper part = the strict upper entries of U,
               diagonal          = s, with diag(U) = m(s), m = exp or softplus.
   P is the fixed permutation (P v)[i] = v[perm[i]], the nf_permute gather.

   Forward:  t = U z, w = L t, x = P w + b,          logdet += sum_j log m(s_j).
   Inverse:  w = P^T (x - b), t = L^-1 w, z = U^-1 t, logdet -= sum_j log m(s_j).
   Rows of a batch are row vectors, so the batch forms are X = Z U^T L^T P^T + b
   and Z = (X - b) P L^-T U^-T: one dtrmm or dtrsm per factor on the whole batch.

   Gradients, with sigma = +1 forward, -1 inverse, T = U Z row-wise, and the
   row cotangents G_t of t and G_w of w (forward: G_w = P^T G_x, G_t = G_w L;
   inverse: G_t = G_z U^-1, G_w = G_t L^-1):
     g_L += sigma G_w^T T (strict lower),  g_U += sigma G_t^T Z (upper),
     g_b += sigma colsum(G_x),  g_s_j += g_U_jj m'(s_j) + sigma sum(g_logdet) m'/m. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/config.h"
#include "nflow/linear_lu.h"
#include "nflow/permute.h"

/* Standard deviation of the random initialisation: b and s - s0 ~ N(0, 0.1^2),
   off-diagonal entries of L and U ~ N(0, 0.1^2 / d). */
#define NF_LU_INIT_SCALE 0.1

typedef struct lu_data {
  nf_diag_map diag;
  nf_layer *perm; /* P as a permute layer; NULL for the identity */
} lu_data;

static void lu_destroy(void *data)
{
  lu_data *lu = data;
  if (!lu) return;
  nf_layer_free(lu->perm);
  free(lu);
}

/* m(s): the diagonal of U, exp(s) or softplus(s). */
static double diag_value(nf_diag_map map, double s)
{
  return map == NF_DIAG_EXP ? exp(s) : nf_softplus(s);
}

/* m'(s): exp(s) or sigmoid(s). */
static double diag_deriv(nf_diag_map map, double s)
{
  return map == NF_DIAG_EXP ? exp(s) : nf_sigmoid(s);
}

/* log m(s). */
static double diag_log(nf_diag_map map, double s)
{
  return map == NF_DIAG_EXP ? s : log(nf_softplus(s));
}

/* d log m(s) / ds: 1 or sigmoid(s) / softplus(s). */
static double diag_dlog(nf_diag_map map, double s)
{
  return map == NF_DIAG_EXP ? 1.0 : nf_sigmoid(s) / nf_softplus(s);
}

/* s with m(s) = 1: 0 for exp, log(e - 1) for softplus. */
static double diag_one(nf_diag_map map)
{
  return map == NF_DIAG_EXP ? 0.0 : log(expm1(1.0));
}

/* m = W with its diagonal mapped to m(s): L and U packed for dtrmm/dtrsm;
   returns sum_j log m(s_j) = log det(P L U). */
static double build_factors(const nf_layer *layer, const double *theta, double *m)
{
  const lu_data *lu = layer->data;
  size_t d = layer->dim;
  const double *w = theta + d;
  double ld = 0;
  memcpy(m, w, d * d * sizeof *m);
  for (size_t j = 0; j < d; j++) {
    m[j * d + j] = diag_value(lu->diag, w[j * d + j]);
    ld += diag_log(lu->diag, w[j * d + j]);
  }
  return ld;
}

static const nf_apply_opts no_opts = {0, 0, 0.0, 0, NULL};

/* out = P in (forward) or P^T in (inverse), row by row. */
static void permute_batch(const nf_layer *layer, nf_dir dir, size_t n, const double *in,
                          double *out)
{
  const nf_layer *p = ((const lu_data *)layer->data)->perm;
  if (p)
    p->type->apply(p, NULL, dir, n, in, NULL, out, NULL, &no_opts, NULL);
  else
    memcpy(out, in, n * layer->dim * sizeof *out);
}

/* B := B op(F) or B op(F)^-1 for the n x d batch B and the factor F (L or U) in m. */
static void factor_right(const nf_layer *layer, size_t n, const double *m, double *batch,
                         int upper, int transpose, int solve)
{
  int d = (int)layer->dim;
  enum CBLAS_UPLO uplo = upper ? CblasUpper : CblasLower;
  enum CBLAS_TRANSPOSE trans = transpose ? CblasTrans : CblasNoTrans;
  enum CBLAS_DIAG diag = upper ? CblasNonUnit : CblasUnit;
  if (solve)
    cblas_dtrsm(CblasRowMajor, CblasRight, uplo, trans, diag, (int)n, d, 1.0, m, d, batch, d);
  else
    cblas_dtrmm(CblasRowMajor, CblasRight, uplo, trans, diag, (int)n, d, 1.0, m, d, batch, d);
}

/* Doubles of workspace: apply uses m (d x d) and one n x d batch, vjp m, a
   d x d product and two n x d batches. */
static size_t lu_work_size(const nf_layer *layer, size_t n)
{
  size_t d = layer->dim, dd, nd, total;
  if (nf_size_mul3(2, d, d, &dd) || nf_size_mul3(2, n, d, &nd) || nf_size_add(dd, nd, &total))
    return 0;
  return total;
}

/* CBLAS takes int sizes: a batch must have at most INT_MAX rows. */
static nf_status check_rows(const char *fn, size_t n)
{
  return n > INT_MAX ? nf_fail(NF_EINVAL, "%s: %zu rows exceed INT_MAX", fn, n) : NF_OK;
}

/* Forward x = P L U z + b, or inverse z = U^-1 L^-1 P^T (x - b); logdet += +-log det. */
static nf_status lu_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                          const double *ctx, double *out, double *logdet, const nf_apply_opts *opts, double *work)
{
  (void)ctx;
  (void)opts;
  nf_status st = check_rows("linear_lu apply", n);
  if (st) return st;
  size_t d = layer->dim;
  const double *b = theta;
  double *m = work, *r = work + d * d;
  double ld = build_factors(layer, theta, m);
  if (dir == NF_FORWARD) {
    memcpy(r, in, n * d * sizeof *r);
    factor_right(layer, n, m, r, 1, 1, 0);
    factor_right(layer, n, m, r, 0, 1, 0);
    permute_batch(layer, NF_FORWARD, n, r, out);
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < d; j++) out[i * d + j] += b[j];
  } else {
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < d; j++) r[i * d + j] = in[i * d + j] - b[j];
    permute_batch(layer, NF_INVERSE, n, r, out);
    factor_right(layer, n, m, out, 0, 1, 1);
    factor_right(layer, n, m, out, 1, 1, 1);
    ld = -ld;
  }
  nf_logdet_add(n, logdet, ld);
  return NF_OK;
}

/* g_W += the L part (strict lower) or the U part (upper, diagonal through m') of
   C = sigma G^T V, for n x d batches G and V; c is d x d scratch. */
static void add_factor_grad(const nf_layer *layer, const double *theta, double *g_theta,
                            double sigma, size_t n, const double *g, const double *v, double *c,
                            int upper)
{
  if (!g_theta) return;
  const lu_data *lu = layer->data;
  size_t d = layer->dim;
  const double *w = theta + d;
  double *g_w = g_theta + d;
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)n, sigma, g,
              (int)d, v, (int)d, 0.0, c, (int)d);
  for (size_t j = 0; j < d; j++)
    for (size_t k = 0; k < d; k++) {
      if (j == k && upper) g_w[j * d + j] += c[j * d + j] * diag_deriv(lu->diag, w[j * d + j]);
      else if (upper ? k > j : k < j) g_w[j * d + k] += c[j * d + k];
    }
}

/* g_b += sigma colsum(G_x), and g_s_j += sigma sum(g_logdet) d log m(s_j)/ds_j. */
static void add_shift_logdet_grad(const nf_layer *layer, const double *theta, double *g_theta,
                                  double sigma, size_t n, const double *g_x,
                                  const double *g_logdet)
{
  if (!g_theta) return;
  const lu_data *lu = layer->data;
  size_t d = layer->dim;
  const double *w = theta + d;
  double *g_b = g_theta, *g_w = g_theta + d, g_ld = nf_sum_or_zero(n, g_logdet);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) g_b[j] += sigma * g_x[i * d + j];
  for (size_t j = 0; j < d; j++) g_w[j * d + j] += sigma * g_ld * diag_dlog(lu->diag, w[j * d + j]);
}

/* Forward: G_w = P^T G_x, G_t = G_w L, G_z = G_t U, with T = U Z from z = in. */
static void vjp_forward(const nf_layer *layer, const double *theta, double *g_theta, size_t n,
                        const double *z, const double *g_x, const double *g_logdet, double *g_z,
                        double *work)
{
  size_t d = layer->dim;
  double *m = work, *c = m + d * d, *g = c + d * d, *t = g + n * d;
  permute_batch(layer, NF_INVERSE, n, g_x, g);
  memcpy(t, z, n * d * sizeof *t);
  factor_right(layer, n, m, t, 1, 1, 0);
  add_factor_grad(layer, theta, g_theta, 1.0, n, g, t, c, 0);
  factor_right(layer, n, m, g, 0, 0, 0);
  add_factor_grad(layer, theta, g_theta, 1.0, n, g, z, c, 1);
  add_shift_logdet_grad(layer, theta, g_theta, 1.0, n, g_x, g_logdet);
  if (g_z) {
    memcpy(g_z, g, n * d * sizeof *g_z);
    factor_right(layer, n, m, g_z, 1, 0, 0);
  }
}

/* Inverse: G_t = G_z U^-1, G_w = G_t L^-1, G_x = P G_w, with T = U Z from z = out. */
static void vjp_inverse(const nf_layer *layer, const double *theta, double *g_theta, size_t n,
                        const double *z, const double *g_z, const double *g_logdet, double *g_x,
                        double *work)
{
  size_t d = layer->dim;
  double *m = work, *c = m + d * d, *g = c + d * d, *t = g + n * d;
  memcpy(g, g_z, n * d * sizeof *g);
  factor_right(layer, n, m, g, 1, 0, 1);
  add_factor_grad(layer, theta, g_theta, -1.0, n, g, z, c, 1);
  memcpy(t, z, n * d * sizeof *t);
  factor_right(layer, n, m, t, 1, 1, 0);
  factor_right(layer, n, m, g, 0, 0, 1);
  add_factor_grad(layer, theta, g_theta, -1.0, n, g, t, c, 0);
  permute_batch(layer, NF_FORWARD, n, g, t);
  add_shift_logdet_grad(layer, theta, g_theta, -1.0, n, t, g_logdet);
  if (g_x) memcpy(g_x, t, n * d * sizeof *g_x);
}

/* Pulls g_out, g_logdet back to g_in and adds dL/d(b, W) (see the file comment). */
static nf_status lu_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                        const double *ctx, const double *out, const double *g_out,
                        const double *g_logdet, double *g_in, double *g_ctx, double *g_theta, double *work)
{
  (void)ctx;
  (void)g_ctx;
  nf_status st = check_rows("linear_lu vjp", n);
  if (st) return st;
  build_factors(layer, theta, work);
  if (dir == NF_FORWARD)
    vjp_forward(layer, theta, g_theta, n, in, g_out, g_logdet, g_in, work);
  else
    vjp_inverse(layer, theta, g_theta, n, out, g_out, g_logdet, g_in, work);
  return NF_OK;
}

/* check_params: every mapped diagonal entry m(s_j) stays a normal positive
   double (exp: |s| <= 700; softplus: s >= -700), so L U is invertible. */
static nf_status lu_check_params(const nf_layer *layer, const double *theta)
{
  const lu_data *lu = layer->data;
  size_t d = layer->dim;
  for (size_t j = 0; j < d; j++) {
    double s = theta[d + j * d + j];
    if (s < -NF_MAX_LOG_SCALE || (lu->diag == NF_DIAG_EXP && s > NF_MAX_LOG_SCALE))
      return nf_fail(NF_EDOMAIN, "linear_lu: parameter %zu (diagonal s[%zu]) = %g makes the "
                     "diagonal m(s) over- or underflow: the map would be singular",
                     d + j * d + j, j, s);
  }
  return NF_OK;
}

static const char *const diag_names[] = {"exp", "softplus"};

const char *nf_diag_map_name(nf_diag_map diag)
{
  return (unsigned)diag < 2 ? diag_names[diag] : "?";
}

nf_status nf_diag_map_parse(const char *name, nf_diag_map *diag)
{
  int i = 0;
  nf_status st = nf_parse_choice("diagonal map", name, diag_names, 2, diag ? &i : NULL);
  if (st == NF_OK) *diag = (nf_diag_map)i;
  return st;
}

/* save: "diag" by name and, unless P is the identity, "perm" (the permute
   layer's own save). */
static nf_status lu_save(const nf_layer *layer, nf_config *cfg)
{
  const lu_data *lu = layer->data;
  nf_status st = nf_config_set_string(cfg, "diag", nf_diag_map_name(lu->diag));
  if (!st && lu->perm) st = nf_permute_type.save(lu->perm, cfg);
  return st;
}

/* load: nf_linear_lu_new with the saved diagonal map and permutation. */
static nf_layer *lu_load(size_t dim, size_t ctx_dim, const nf_config *cfg, const nf_resolver *res)
{
  (void)ctx_dim;
  (void)res;
  const char *name;
  nf_diag_map diag;
  if (nf_config_get_string(cfg, "diag", &name) || nf_diag_map_parse(name, &diag)) return NULL;
  if (!nf_config_has(cfg, "perm")) return nf_linear_lu_new(dim, NULL, diag, NULL);
  size_t *perm = nf_alloc_n(dim, sizeof *perm);
  if (!perm) {
    nf_fail(NF_ENOMEM, "linear_lu: out of memory");
    return NULL;
  }
  nf_layer *layer = nf_config_get_sizes(cfg, "perm", dim, perm)
                        ? NULL
                        : nf_linear_lu_new(dim, perm, diag, NULL);
  free(perm);
  return layer;
}

const nf_layer_type nf_linear_lu_type = {
  .check_params = lu_check_params,
  .save = lu_save,
  .load = lu_load,
  .name = "linear_lu",
  .work_size = lu_work_size,
  .apply = lu_apply,
  .vjp = lu_vjp,
  .destroy = lu_destroy,
};

/* b = 0, W = 0 off the diagonal and s = s0 (identity); with rng, plus the
   N(0, .) draws of NF_LU_INIT_SCALE. */
static void init_params(nf_layer *layer, nf_diag_map diag, nf_rng *rng)
{
  size_t d = layer->dim;
  double *b = layer->init, *w = layer->init + d;
  double off_scale = NF_LU_INIT_SCALE / sqrt((double)d);
  for (size_t j = 0; j < d; j++) b[j] = rng ? NF_LU_INIT_SCALE * nf_rng_normal(rng) : 0.0;
  for (size_t j = 0; j < d; j++)
    for (size_t k = 0; k < d; k++) {
      double base = j == k ? diag_one(diag) : 0.0;
      double scale = j == k ? NF_LU_INIT_SCALE : off_scale;
      w[j * d + k] = base + (rng ? scale * nf_rng_normal(rng) : 0.0);
    }
}

/* The permute layer of perm, with a failure reported as nf_linear_lu_new's. */
static nf_layer *perm_layer(size_t dim, const size_t *perm)
{
  nf_layer *p = nf_permute_new(dim, perm);
  if (!p) nf_fail_prefixed(NF_EINVAL, "nf_linear_lu_new");
  return p;
}

nf_layer *nf_linear_lu_new(size_t dim, const size_t *perm, nf_diag_map diag, nf_rng *rng)
{
  if (nf_check_dim("nf_linear_lu_new", dim)) return NULL;
  if (diag != NF_DIAG_EXP && diag != NF_DIAG_SOFTPLUS) {
    nf_fail(NF_EINVAL, "nf_linear_lu_new: unknown diagonal map %d", (int)diag);
    return NULL;
  }
  size_t np;
  if (nf_count_doubles("nf_linear_lu_new", "the weights", dim + 1, dim, &np)) return NULL;
  if (dim > INT_MAX) { /* CBLAS and LAPACK take int sizes */
    nf_fail(NF_EINVAL, "nf_linear_lu_new: dimension %zu overflows BLAS's int", dim);
    return NULL;
  }
  lu_data *lu = calloc(1, sizeof *lu);
  if (!lu) {
    nf_fail(NF_ENOMEM, "nf_linear_lu_new: out of memory");
    return NULL;
  }
  lu->diag = diag;
  if (perm && !(lu->perm = perm_layer(dim, perm))) {
    lu_destroy(lu);
    return NULL;
  }
  nf_layer *layer = nf_layer_create(&nf_linear_lu_type, dim, 0, np, lu);
  if (layer) init_params(layer, diag, rng);
  return layer;
}
