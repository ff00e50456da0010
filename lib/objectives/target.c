/* lib/objectives/target.c — targets: a callback on a batch behind one checked
   evaluation, and the built-in double well, Gaussian mixture and phi^4. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/target.h"

static const double LOG_2PI = 1.83787706640934548356;

struct nf_target {
  size_t dim;
  const char *name;
  nf_target_fn fn;
  void *user;
  double *own;         /* the built-ins' parameters, owned (freed with the target) */
  size_t k;            /* mixture: components; phi4: L */
  double m2, lambda;   /* phi4 */
};

/* A target around fn with parameter storage own (taken, freed on failure);
   its callback gets the target itself as user (nf_target_new replaces it). */
static nf_target *target_make(size_t dim, const char *name, nf_target_fn fn, double *own)
{
  nf_target *t = calloc(1, sizeof *t);
  if (!t) {
    free(own);
    nf_fail(NF_ENOMEM, "nf_target: out of memory");
    return NULL;
  }
  *t = (nf_target){dim, name, fn, t, own, 0, 0.0, 0.0};
  return t;
}

nf_target *nf_target_new(size_t dim, nf_target_fn fn, void *user)
{
  if (dim == 0 || !fn) {
    nf_fail(NF_EINVAL, "nf_target_new: dim is 0 or the callback is NULL");
    return NULL;
  }
  nf_target *t = target_make(dim, "user", fn, NULL);
  if (t) t->user = user;
  return t;
}

void nf_target_free(nf_target *target)
{
  if (!target) return;
  free(target->own);
  free(target);
}

size_t nf_target_dim(const nf_target *target) { return target ? target->dim : 0; }
const char *nf_target_name(const nf_target *target) { return target ? target->name : ""; }

nf_status nf_target_eval(const nf_target *t, size_t n, const double *x, double *f, double *grad)
{
  const char *fn = "nf_target_eval";
  if (!t || !x || !f || n == 0)
    return nf_fail(NF_EINVAL, "%s: target, x or f is NULL, or n is 0", fn);
  size_t d = t->dim, nd;
  if (nf_count_doubles(fn, "the rows", n, d, &nd)) return NF_EINVAL;
  size_t bad = nf_first_nonfinite(nd, x);
  if (bad < nd)
    return nf_fail(NF_ENONFINITE, "%s: x row %zu, column %zu is %g, not finite", fn, bad / d,
                   bad % d, x[bad]);
  int rc = t->fn(n, d, x, f, grad, t->user);
  if (rc)
    return nf_fail(NF_EDOMAIN, "target '%s': the callback returned %d (x outside its domain?)",
                   t->name, rc);
  if ((bad = nf_first_nonfinite(n, f)) < n)
    return nf_fail(NF_ENONFINITE, "target '%s': its value at row %zu is %g, not finite", t->name,
                   bad, f[bad]);
  if (grad && (bad = nf_first_nonfinite(nd, grad)) < nd)
    return nf_fail(NF_ENONFINITE, "target '%s': its gradient at row %zu, column %zu is %g, not "
                   "finite", t->name, bad / d, bad % d, grad[bad]);
  return NF_OK;
}

/* ---- the double well ---- */

/* log p~ = -4 (x1^2 - 1)^2 - x2^2 / 2; gradient (-16 x1 (x1^2 - 1), -x2). */
static int doublewell_eval(size_t n, size_t dim, const double *x, double *f, double *grad,
                           void *user)
{
  (void)dim;
  (void)user;
  for (size_t i = 0; i < n; i++) {
    double a = x[2 * i], b = x[2 * i + 1], s = a * a - 1.0;
    f[i] = -4.0 * s * s - 0.5 * b * b;
    if (grad) {
      grad[2 * i] = -16.0 * a * s;
      grad[2 * i + 1] = -b;
    }
  }
  return 0;
}

nf_target *nf_target_doublewell(void)
{
  return target_make(2, "doublewell", doublewell_eval, NULL);
}

/* log Z of the double well: log sqrt(2 pi) + log of the integral of
   exp(-4 (x^2 - 1)^2) by the trapezoid rule on [-4, 4] with h = 1/512, which
   converges geometrically for this entire, rapidly decaying integrand (the
   ends contribute exp(-900)). */
static double doublewell_log_z(void)
{
  const double h = 1.0 / 512.0;
  double sum = 0;
  for (int i = -4 * 512; i <= 4 * 512; i++) {
    double x = i * h, s = x * x - 1.0;
    sum += exp(-4.0 * s * s);
  }
  return 0.5 * LOG_2PI + log(sum * h);
}

/* ---- the Gaussian mixture ---- */

/* log sum_j w_j N(x; m_j, diag(s_j^2)) by log-sum-exp, and its gradient
   sum_j r_j (m_j - x) / s_j^2 with responsibilities r_j (two passes per row:
   the largest log term, then the sums). Layout of own: log w (k), each
   component's log normaliser log w_j - d/2 log 2 pi - sum log s_j (k), means
   (k d), sigmas (k d). */
static int mixture_eval(size_t n, size_t d, const double *x, double *f, double *grad, void *user)
{
  const nf_target *t = user;
  size_t k = t->k;
  const double *log_norm = t->own + k, *mean = log_norm + k, *sigma = mean + k * d;
  for (size_t i = 0; i < n; i++) {
    const double *xi = x + i * d;
    double top = -INFINITY;
    for (int pass = 0; pass < 2; pass++) {
      double sum = 0;
      for (size_t j = 0; grad && pass == 1 && j < d; j++) grad[i * d + j] = 0;
      for (size_t c = 0; c < k; c++) {
        double l = log_norm[c];
        for (size_t j = 0; j < d; j++) {
          double u = (xi[j] - mean[c * d + j]) / sigma[c * d + j];
          l -= 0.5 * u * u;
        }
        if (pass == 0) {
          top = l > top ? l : top;
          continue;
        }
        double r = exp(l - top);
        sum += r;
        for (size_t j = 0; grad && j < d; j++)
          grad[i * d + j] += r * (mean[c * d + j] - xi[j]) / (sigma[c * d + j] * sigma[c * d + j]);
      }
      if (pass == 0) continue;
      f[i] = top + log(sum);
      for (size_t j = 0; grad && j < d; j++) grad[i * d + j] /= sum;
    }
  }
  return 0;
}

/* NF_EINVAL naming entry i of a mixture array that is not finite (and positive). */
static nf_status check_entries(const char *what, size_t count, const double *v, int positive)
{
  for (size_t i = 0; i < count; i++)
    if (!isfinite(v[i]) || (positive && v[i] <= 0))
      return nf_fail(NF_EINVAL, "nf_target_mixture: %s[%zu] is %g, not finite%s", what, i, v[i],
                     positive ? " and positive" : "");
  return NF_OK;
}

nf_target *nf_target_mixture(size_t dim, size_t k, const double *weights, const double *means,
                             const double *sigmas)
{
  size_t kd, total;
  if (dim == 0 || k == 0 || !weights || !means || !sigmas) {
    nf_fail(NF_EINVAL, "nf_target_mixture: dim or k is 0, or an array is NULL");
    return NULL;
  }
  if (nf_count_doubles("nf_target_mixture", "the components", k, dim, &kd) ||
      nf_count_doubles("nf_target_mixture", "the parameters", kd, 2, &total) ||
      check_entries("weights", k, weights, 1) || check_entries("means", kd, means, 0) ||
      check_entries("sigmas", kd, sigmas, 1))
    return NULL;
  double *own = nf_dalloc(total + 2 * k);
  if (!own) {
    nf_fail(NF_ENOMEM, "nf_target_mixture: out of memory");
    return NULL;
  }
  for (size_t c = 0; c < k; c++) {
    own[c] = log(weights[c]);
    own[k + c] = own[c] - 0.5 * (double)dim * LOG_2PI;
    for (size_t j = 0; j < dim; j++) own[k + c] -= log(sigmas[c * dim + j]);
  }
  memcpy(own + 2 * k, means, kd * sizeof *own);
  memcpy(own + 2 * k + kd, sigmas, kd * sizeof *own);
  nf_target *t = target_make(dim, "mixture", mixture_eval, own);
  if (t) t->k = k;
  return t;
}

/* ---- phi^4 ---- */

/* log p~ = -S(phi), S = sum_x [-2 phi_x (phi_{x+e1} + phi_{x+e2}) + (4 + m2) phi_x^2
   + lambda phi_x^4] on the periodic L x L lattice; dS/dphi_x = -2 (sum of the
   four neighbours) + 2 (4 + m2) phi_x + 4 lambda phi_x^3. */
static int phi4_eval(size_t n, size_t dim, const double *x, double *f, double *grad, void *user)
{
  const nf_target *t = user;
  size_t L = t->k;
  double mass = 4.0 + t->m2, lam = t->lambda;
  for (size_t i = 0; i < n; i++) {
    const double *p = x + i * dim;
    double s = 0;
    for (size_t r = 0; r < L; r++)
      for (size_t c = 0; c < L; c++) {
        size_t at = r * L + c, right = r * L + (c + 1) % L, down = ((r + 1) % L) * L + c;
        size_t left = r * L + (c + L - 1) % L, up = ((r + L - 1) % L) * L + c;
        double v = p[at], v2 = v * v;
        s += -2.0 * v * (p[right] + p[down]) + mass * v2 + lam * v2 * v2;
        if (grad)
          grad[i * dim + at] = 2.0 * (p[right] + p[down] + p[left] + p[up]) - 2.0 * mass * v -
                               4.0 * lam * v2 * v;
      }
    f[i] = -s;
  }
  return 0;
}

nf_target *nf_target_phi4(size_t L, double m2, double lambda)
{
  size_t dim;
  if (L < 2 || !isfinite(m2) || !isfinite(lambda) || lambda < 0) {
    nf_fail(NF_EINVAL, "nf_target_phi4: need L >= 2 (got %zu), a finite m2 (got %g) and a finite "
            "lambda >= 0 (got %g)", L, m2, lambda);
    return NULL;
  }
  if (nf_count_doubles("nf_target_phi4", "the lattice", L, L, &dim)) return NULL;
  nf_target *t = target_make(dim, "phi4", phi4_eval, NULL);
  if (t) {
    t->k = L;
    t->m2 = m2;
    t->lambda = lambda;
  }
  return t;
}

nf_status nf_target_phi4_magnetisation(const nf_target *t, size_t n, const double *phi, double *m)
{
  if (!t || !phi || !m || n == 0 || t->fn != phi4_eval)
    return nf_fail(NF_EINVAL, "nf_target_phi4_magnetisation: NULL argument, n is 0, or the "
                   "target is not phi4");
  for (size_t i = 0; i < n; i++) {
    double s = 0;
    for (size_t j = 0; j < t->dim; j++) s += phi[i * t->dim + j];
    m[i] = s;
  }
  return NF_OK;
}

nf_status nf_target_log_z(const nf_target *t, double *log_z)
{
  if (!t || !log_z) return nf_fail(NF_EINVAL, "nf_target_log_z: target or log_z is NULL");
  if (t->fn == doublewell_eval) {
    *log_z = doublewell_log_z();
    return NF_OK;
  }
  if (t->fn != mixture_eval)
    return nf_fail(NF_ESTATE, "nf_target_log_z: the normaliser of target '%s' is not known",
                   t->name);
  double top = -INFINITY, sum = 0;
  for (size_t c = 0; c < t->k; c++) top = t->own[c] > top ? t->own[c] : top;
  for (size_t c = 0; c < t->k; c++) sum += exp(t->own[c] - top);
  *log_z = top + log(sum);
  return NF_OK;
}
