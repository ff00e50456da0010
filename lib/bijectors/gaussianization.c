/* lib/bijectors/gaussianization.c — the elementwise layer of Gaussianization
   flows (Meng et al. 2020): z = Phi^-1(F(x)) per dimension, F a mixture of K
   logistics, all in log space.

   Per dimension, with pi = softmax(w), s_k = exp(l_k), u_k = (x - mu_k)/s_k:
     log F     = LSE_k(log pi_k + log sigmoid(u_k))
     log (1-F) = LSE_k(log pi_k + log sigmoid(-u_k))
     log f     = LSE_k(log pi_k - l_k + log sigmoid(u_k) + log sigmoid(-u_k))
   z comes from the smaller of log F, log(1 - F) (nf_ndtri_log), and the
   density-direction log-det is log f(x) - log phi(z) = log dz/dx.

   Pullbacks (J = dz/dx = f/phi(z), r_k = pi_k f_k / f the responsibilities,
   t_k = tanh(u_k/2) = 2 sigmoid(u_k) - 1, f'/f = -sum_k r_k t_k / s_k):
     dF/dmu_k / f = -r_k,  dF/dl_k / f = -r_k (x - mu_k),
     dF/dw_k / f = pi_k (sigmoid(u_k) - F) / f,
     dlog f/dmu_k = r_k t_k / s_k,  dlog f/dl_k = r_k (t_k u_k - 1),
     dlog f/dw_k = r_k - pi_k.
   Every parameter cotangent is c1 dF/dtheta / f + cl dlog f/dtheta with
     NF_INVERSE: c1 = (g_z + g_l z) J,     cl = g_l,  g_x = c1 + g_l f'/f;
     NF_FORWARD: c1 = -(g_x - g_l f'/f),   cl = -g_l, g_z = -c1 / J - g_l z,
   the forward one by the implicit function theorem on F(x) = Phi(z). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "normal.h"
#include "nflow/config.h"
#include "nflow/gaussianization.h"

#define SOLVE_MAX_ITER 200
#define SOLVE_RTOL 1e-14

/* One dimension's mixture: views of theta and of the prepared work, and
   K-sized scratch for the per-component log terms at the last x. */
typedef struct mixture {
  size_t K;
  const double *mu, *ls;          /* means, log-scales (theta) */
  const double *lp, *is;          /* log weights, inverse scales (work) */
  double *aF, *aG, *af, *u, *lsn; /* scratch: log pi sigma(u), log pi sigma(-u), log pi f_k,
                                     u, log sigma(-u) */
  double *tmp;                    /* scratch for log_f_ratio */
} mixture;

/* log F, log(1 - F), log f at one x. */
typedef struct mix_value {
  double lF, lG, lf;
} mix_value;

/* K of the layer: n_params = 3 K d. */
static size_t components(const nf_layer *layer)
{
  return layer->n_params / (3 * layer->dim);
}

/* log sum_k exp(a_k), stable (max shifted out); -Inf if every a_k is -Inf. */
static double log_sum_exp(size_t K, const double *a)
{
  double m = a[0], s = 0;
  for (size_t k = 1; k < K; k++) m = fmax(m, a[k]);
  if (m == -INFINITY) return m;
  for (size_t k = 0; k < K; k++) s += exp(a[k] - m);
  return m + log(s);
}

/* Doubles of work: log weights and inverse scales (2 d K), scratch (6 K),
   the n log-dets staged until every row succeeded. 0 on overflow. */
static size_t gauss_work_size(const nf_layer *layer, size_t n)
{
  size_t K = components(layer), dk, total;
  if (nf_size_mul3(2, layer->dim, K, &dk) || nf_size_add(dk, 6 * K, &total) ||
      nf_size_add(total, n, &total))
    return 0;
  return total;
}

/* Work: lp = w - LSE(w) and is = exp(-l) for every dimension. */
static void prepare(const nf_layer *layer, const double *theta, double *work)
{
  size_t d = layer->dim, K = components(layer);
  double *lp = work, *is = work + d * K;
  for (size_t j = 0; j < d; j++) {
    const double *w = theta + 3 * K * j, *l = w + 2 * K;
    double lse = log_sum_exp(K, w);
    for (size_t k = 0; k < K; k++) {
      lp[j * K + k] = w[k] - lse;
      is[j * K + k] = exp(-l[k]);
    }
  }
}

/* Dimension j's mixture over the prepared work. */
static mixture view(const nf_layer *layer, const double *theta, double *work, size_t j)
{
  size_t d = layer->dim, K = components(layer);
  double *scratch = work + 2 * d * K;
  mixture m = {K, theta + 3 * K * j + K, theta + 3 * K * j + 2 * K, work + j * K,
               work + d * K + j * K, scratch, scratch + K, scratch + 2 * K, scratch + 3 * K,
               scratch + 4 * K, scratch + 5 * K};
  return m;
}

/* log F, log(1 - F), log f at x by log-sum-exp of log-sigmoids:
   log sigmoid(+-u) = -(max(-+u, 0) + log1p(exp(-|u|))), one exp and log1p. */
static mix_value evaluate(const mixture *m, double x)
{
  for (size_t k = 0; k < m->K; k++) {
    double u = (x - m->mu[k]) * m->is[k], t = log1p(exp(-fabs(u)));
    double ls_pos = -(fmax(-u, 0.0) + t), ls_neg = -(fmax(u, 0.0) + t);
    m->u[k] = u;
    m->lsn[k] = ls_neg;
    m->aF[k] = m->lp[k] + ls_pos;
    m->aG[k] = m->lp[k] + ls_neg;
    m->af[k] = m->lp[k] - m->ls[k] + ls_pos + ls_neg;
  }
  mix_value v = {log_sum_exp(m->K, m->aF), log_sum_exp(m->K, m->aG), log_sum_exp(m->K, m->af)};
  return v;
}

/* z = Phi^-1(F) from the smaller tail: Phi^-1(exp(log F)) or -Phi^-1(exp(log(1 - F))). */
static double z_of(mix_value v)
{
  return v.lF <= v.lG ? nf_ndtri_log(v.lF) : -nf_ndtri_log(v.lG);
}

/* log(f/F) (lower) or log(f/(1 - F)) as LSE_k of (log pi_k sigma(+-u_k) - log F)
   + log sigma(-+u_k) - l_k: the huge parts of log f and log F (-|u| in a
   tail) cancel inside each term, exactly for the dominant component. */
static double log_f_ratio(const mixture *m, mix_value v, int lower)
{
  for (size_t k = 0; k < m->K; k++)
    m->tmp[k] = lower ? m->aF[k] - v.lF + m->lsn[k] - m->ls[k]
                      : m->aG[k] - v.lG + (m->lsn[k] + m->u[k]) - m->ls[k];
  return log_sum_exp(m->K, m->tmp);
}

/* log dz/dx = log f(x) - log phi(z), written log(f/F) + log(Phi(z)/phi(z))
   (or with 1 - F and -z on the upper side, lower == 0): log F = log Phi(z)
   holds by construction, and neither term cancels in the tails, where
   log f and z^2/2 are both huge. */
static double log_jacobian(const mixture *m, mix_value v, double z, int lower)
{
  return log_f_ratio(m, v, lower) + nf_log_mills(lower ? z : -z);
}

/* g(x) = log F(x) - log Phi(z) (lower: z <= 0) or log Phi(-z) - log(1 - F(x)),
   increasing in x, and g'(x) in *dg; v gets the mixture's values at x. */
static double residual(const mixture *m, double x, int lower, double target, double *dg,
                       mix_value *v)
{
  *v = evaluate(m, x);
  double side = lower ? v->lF : v->lG;
  *dg = exp(log_f_ratio(m, *v, lower));
  return lower ? side - target : target - side;
}

/* Grows [lo, hi] by doubling steps from the component means +- the largest
   scale until g(lo) <= 0 <= g(hi); *glo, *ghi get g there. 0 on success. */
static int bracket(const mixture *m, int lower, double target, double *lo, double *hi,
                   double *glo, double *ghi)
{
  double mu_min = m->mu[0], mu_max = m->mu[0], s_max = 0, dg;
  mix_value v;
  for (size_t k = 0; k < m->K; k++) {
    mu_min = fmin(mu_min, m->mu[k]);
    mu_max = fmax(mu_max, m->mu[k]);
    s_max = fmax(s_max, 1.0 / m->is[k]);
  }
  *lo = mu_min - s_max;
  *hi = mu_max + s_max;
  *glo = residual(m, *lo, lower, target, &dg, &v);
  *ghi = residual(m, *hi, lower, target, &dg, &v);
  for (double step = s_max; *glo > 0 && isfinite(*lo); step *= 2) {
    *hi = *lo;
    *ghi = *glo;
    *lo -= step;
    *glo = residual(m, *lo, lower, target, &dg, &v);
  }
  for (double step = s_max; *ghi < 0 && isfinite(*hi); step *= 2) {
    *lo = *hi;
    *glo = *ghi;
    *hi += step;
    *ghi = residual(m, *hi, lower, target, &dg, &v);
  }
  return !(isfinite(*lo) && isfinite(*hi) && *glo <= 0 && *ghi >= 0);
}

/* x = F^-1(Phi(z)): Newton on g (residual), safeguarded by bisection inside
   the bracket, until a step is below SOLVE_RTOL (|x| + smallest scale).
   *v gets the mixture's values at x. NF_ENOCONV or NF_EDOMAIN on failure. */
static nf_status solve_x(const mixture *m, double z, double *x_out, mix_value *v)
{
  int lower = z <= 0;
  double target = nf_log_ndtr(lower ? z : -z), lo, hi, glo, ghi, s_min = INFINITY, dg;
  for (size_t k = 0; k < m->K; k++) s_min = fmin(s_min, 1.0 / m->is[k]);
  if (bracket(m, lower, target, &lo, &hi, &glo, &ghi))
    return nf_fail(NF_EDOMAIN, "gaussianization: no finite x has Phi^-1(F(x)) = %g", z);
  double x = -glo < ghi ? lo : hi, step_old = hi - lo;
  double g = residual(m, x, lower, target, &dg, v);
  for (int it = 0; it < SOLVE_MAX_ITER; it++) {
    double xn = x - g / dg;
    /* bisect when Newton leaves the bracket or shrinks slower than halving */
    if (!(xn > lo && xn < hi) || fabs(xn - x) > 0.5 * step_old) xn = 0.5 * (lo + hi);
    double step = fabs(xn - x);
    step_old = step;
    x = xn;
    g = residual(m, x, lower, target, &dg, v);
    if (g < 0) lo = x;
    else hi = x;
    double tol = SOLVE_RTOL * (fabs(x) + s_min);
    if (g == 0 || step <= tol || hi - lo <= tol) {
      *x_out = x;
      return NF_OK;
    }
  }
  return nf_fail(NF_ENOCONV, "gaussianization: Newton-bisection for z = %g did not converge "
                 "in %d iterations (bracket [%.17g, %.17g])", z, SOLVE_MAX_ITER, lo, hi);
}

/* One entry in direction dir: *out and the direction's log-det *ld. */
static nf_status map_entry(const mixture *m, nf_dir dir, double in, double *out, double *ld)
{
  mix_value v = {0, 0, 0};
  if (dir == NF_INVERSE) {
    v = evaluate(m, in);
    *out = z_of(v);
    *ld = log_jacobian(m, v, *out, v.lF <= v.lG);
  } else {
    nf_status st = solve_x(m, in, out, &v);
    if (st) return st;
    *ld = -log_jacobian(m, v, in, in <= 0);
  }
  if (!isfinite(*out) || !isfinite(*ld))
    return nf_fail(NF_EDOMAIN, "gaussianization: %g is beyond the layer's range (gives %g)", in,
                   *out);
  return NF_OK;
}

/* out = Phi^-1(F(in)) (NF_INVERSE) or F^-1(Phi(in)) (NF_FORWARD) entrywise;
   the log-dets are staged in work and added only when every entry succeeded. */
static nf_status gauss_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                             const double *in, const double *ctx, double *out, double *logdet,
                             const nf_apply_opts *opts, double *work)
{
  (void)ctx;
  (void)opts;
  size_t d = layer->dim, K = components(layer);
  double *ld_rows = work + 2 * d * K + 6 * K;
  prepare(layer, theta, work);
  for (size_t i = 0; i < n; i++) ld_rows[i] = 0;
  for (size_t j = 0; j < d; j++) {
    mixture m = view(layer, theta, work, j);
    for (size_t i = 0; i < n; i++) {
      double ld;
      nf_status st = map_entry(&m, dir, in[i * d + j], out + i * d + j, &ld);
      if (st) {
        char prefix[96];
        snprintf(prefix, sizeof prefix, "row %zu, column %zu", i, j);
        return nf_fail_prefixed(st, prefix);
      }
      ld_rows[i] += ld;
    }
  }
  for (size_t i = 0; logdet && i < n; i++) logdet[i] += ld_rows[i];
  return NF_OK;
}

/* g_theta of one entry: c1 dF/dtheta / f + cl dlog f/dtheta (see the file's head),
   with the components' terms left in m's scratch by evaluate at x. */
static void add_param_grads(const mixture *m, double x, mix_value v, double c1, double cl,
                            double *g)
{
  size_t K = m->K;
  double *g_w = g, *g_mu = g + K, *g_l = g + 2 * K;
  int lower = v.lF <= v.lG;
  for (size_t k = 0; k < K; k++) {
    double r = exp(m->af[k] - v.lf), t = tanh(0.5 * m->u[k]), pi = exp(m->lp[k]);
    double dF_w = lower ? exp(m->aF[k] - v.lf) - pi * exp(v.lF - v.lf)
                        : pi * exp(v.lG - v.lf) - exp(m->aG[k] - v.lf);
    g_w[k] += c1 * dF_w + cl * (r - pi);
    g_mu[k] += -c1 * r + cl * r * t * m->is[k];
    g_l[k] += -c1 * r * (x - m->mu[k]) + cl * r * (t * m->u[k] - 1.0);
  }
}

/* f'(x)/f(x) = -sum_k r_k tanh(u_k/2) / s_k, from m's scratch at x. */
static double log_density_slope(const mixture *m, mix_value v)
{
  double s = 0;
  for (size_t k = 0; k < m->K; k++) s -= exp(m->af[k] - v.lf) * tanh(0.5 * m->u[k]) * m->is[k];
  return s;
}

/* vjp of either direction entrywise (the coefficients c1, cl of the file's head). */
static nf_status gauss_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                           const double *in, const double *ctx, const double *out,
                           const double *g_out, const double *g_logdet, double *g_in,
                           double *g_ctx, double *g_theta, double *work)
{
  (void)ctx;
  (void)g_ctx;
  size_t d = layer->dim, K = components(layer);
  int inv = dir == NF_INVERSE;
  prepare(layer, theta, work);
  for (size_t j = 0; j < d; j++) {
    mixture m = view(layer, theta, work, j);
    for (size_t i = 0; i < n; i++) {
      double x = inv ? in[i * d + j] : out[i * d + j], z = inv ? out[i * d + j] : in[i * d + j];
      mix_value v = evaluate(&m, x);
      double J = exp(log_jacobian(&m, v, z, inv ? v.lF <= v.lG : z <= 0));
      double fp = log_density_slope(&m, v);
      double go = g_out[i * d + j], gl = g_logdet ? g_logdet[i] : 0.0;
      double c1 = inv ? (go + gl * z) * J : -(go - gl * fp), cl = inv ? gl : -gl;
      if (g_in) g_in[i * d + j] = inv ? c1 + gl * fp : -c1 / J - gl * z;
      if (g_theta) add_param_grads(&m, x, v, c1, cl, g_theta + 3 * K * j);
    }
  }
  return NF_OK;
}

/* check_params: every log-scale within +-NF_GAUSSIANIZATION_MAX_LOG_SCALE. */
static nf_status gauss_check_params(const nf_layer *layer, const double *theta)
{
  size_t K = components(layer);
  for (size_t j = 0; j < layer->dim; j++)
    for (size_t k = 0; k < K; k++) {
      size_t p = 3 * K * j + 2 * K + k;
      if (fabs(theta[p]) > NF_GAUSSIANIZATION_MAX_LOG_SCALE)
        return nf_fail(NF_EDOMAIN, "gaussianization: parameter %zu (log_scale %zu of dimension "
                       "%zu) = %g is outside [-%g, %g]", p, k, j, theta[p],
                       NF_GAUSSIANIZATION_MAX_LOG_SCALE, NF_GAUSSIANIZATION_MAX_LOG_SCALE);
    }
  return NF_OK;
}

/* save: the number of components. */
static nf_status gauss_save(const nf_layer *layer, nf_config *cfg)
{
  return nf_config_set_int(cfg, "components", (long long)components(layer));
}

/* load: a layer with the saved number of components (theta is loaded apart). */
static nf_layer *gauss_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                            const nf_resolver *res)
{
  (void)ctx_dim;
  (void)res;
  size_t K;
  if (nf_config_get_size(cfg, "components", &K)) return NULL;
  return nf_gaussianization_new(dim, K, NULL);
}

const nf_layer_type nf_gaussianization_type = {
  .name = "gaussianization",
  .work_size = gauss_work_size,
  .apply = gauss_apply,
  .vjp = gauss_vjp,
  .check_params = gauss_check_params,
  .save = gauss_save,
  .load = gauss_load,
};

size_t nf_gaussianization_components(const nf_layer *layer)
{
  return layer && layer->type == &nf_gaussianization_type ? components(layer) : 0;
}

/* Means at the normal quantiles Phi^-1((k + 1/2)/K), equal weights, and the
   scale s with s^2 pi^2/3 = 1 - mean mu_k^2 (mixture variance 1); plus
   N(0, 0.1^2) on every parameter if rng is given. */
static void initialise(nf_layer *layer, nf_rng *rng)
{
  size_t d = layer->dim, K = components(layer);
  double *p = layer->init, mean_sq = 0;
  for (size_t k = 0; k < K; k++) {
    double mu = nf_ndtri_log(log(((double)k + 0.5) / (double)K));
    p[K + k] = mu;
    mean_sq += mu * mu / (double)K;
  }
  double log_s = 0.5 * log(3.0 * (1.0 - mean_sq)) - log(3.14159265358979323846);
  for (size_t k = 0; k < K; k++) p[2 * K + k] = log_s;
  for (size_t j = 1; j < d; j++)
    for (size_t q = 0; q < 3 * K; q++) p[3 * K * j + q] = p[q];
  for (size_t q = 0; rng && q < layer->n_params; q++) p[q] += 0.1 * nf_rng_normal(rng);
}

nf_layer *nf_gaussianization_new(size_t dim, size_t n_components, nf_rng *rng)
{
  const char *fn = "nf_gaussianization_new";
  size_t np, work;
  if (nf_check_dim(fn, dim)) return NULL;
  if (n_components == 0) {
    nf_fail(NF_EINVAL, "%s: n_components is 0", fn);
    return NULL;
  }
  if (nf_size_mul3(3, n_components, dim, &np) || nf_size_mul(4, n_components, &work) ||
      nf_count_doubles(fn, "the parameters", np, 1, &np)) {
    nf_fail(NF_EINVAL, "%s: %zu components in %zu dimensions overflow", fn, n_components, dim);
    return NULL;
  }
  nf_layer *layer = nf_layer_create(&nf_gaussianization_type, dim, 0, np, NULL);
  if (layer) initialise(layer, rng);
  return layer;
}
