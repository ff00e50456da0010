/* lib/bijectors/residual_logdet.c — log|det(I + J_g(x))| of the residual
   layer and its gradients: exact (Jacobian by d batched tangents, LU) and the
   Russian-roulette power series with a Hutchinson probe and the Neumann
   gradient estimator (Chen et al. 2019, eqs. 6-8). Both gradients go through
   the second-order primitive rn_wjv_grad. */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "residual_internal.h"

/* In-place LU with partial pivoting of the d x d row-major a (piv: d doubles,
   the row swapped in at each step); log|det a|, or -Inf if a is singular. */
static double lu_logdet(size_t d, double *a, double *piv)
{
  double ld = 0;
  for (size_t k = 0; k < d; k++) {
    size_t r = k;
    for (size_t i = k + 1; i < d; i++)
      if (fabs(a[i * d + k]) > fabs(a[r * d + k])) r = i;
    piv[k] = (double)r;
    if (r != k)
      for (size_t j = 0; j < d; j++) {
        double t = a[k * d + j];
        a[k * d + j] = a[r * d + j];
        a[r * d + j] = t;
      }
    double pk = a[k * d + k];
    if (pk == 0.0) return -INFINITY;
    ld += log(fabs(pk));
    for (size_t i = k + 1; i < d; i++) {
      double f = a[i * d + k] /= pk;
      for (size_t j = k + 1; j < d; j++) a[i * d + j] -= f * a[k * d + j];
    }
  }
  return ld;
}

/* b = A^-1 b with lu_logdet's factors of A. */
static void lu_solve(size_t d, const double *a, const double *piv, double *b)
{
  for (size_t k = 0; k < d; k++) {
    size_t r = (size_t)piv[k];
    double t = b[k];
    b[k] = b[r];
    b[r] = t;
  }
  for (size_t i = 0; i < d; i++)
    for (size_t j = 0; j < i; j++) b[i] -= a[i * d + j] * b[j];
  for (size_t i = d; i-- > 0;) {
    for (size_t j = i + 1; j < d; j++) b[i] -= a[i * d + j] * b[j];
    b[i] /= a[i * d + i];
  }
}

/* Row (i, k) of the n d x d matrix e = e_k: the unit tangents of every row. */
static void fill_units(size_t n, size_t d, double *e)
{
  memset(e, 0, n * d * d * sizeof *e);
  for (size_t r = 0; r < n * d; r++) e[r * d + r % d] = 1.0;
}

/* Exact: J_i e_k for all k by one batched tangent pass, ld_i = log|det(I + J_i)|
   by LU, and the record R_i = (I + J_i)^-1 (row-major). */
static nf_status logdet_exact(const rn_net *net, rn_work *w, size_t n, double *ld)
{
  size_t d = net->d;
  fill_units(n, d, w->tin);
  rn_tangent(net, w, n, d, w->tin, w->tout);
  double *a = w->lu, *piv = w->lu + d * d, *col = w->s[2];
  for (size_t i = 0; i < n; i++) {
    const double *Je = w->tout + i * d * d; /* row k: J_i e_k, column k of J_i */
    for (size_t r = 0; r < d; r++)
      for (size_t k = 0; k < d; k++) a[r * d + k] = (r == k) + Je[k * d + r];
    ld[i] = lu_logdet(d, a, piv);
    if (!isfinite(ld[i]))
      return nf_fail(NF_EDOMAIN, "residual: I + dg/dx is singular at row %zu", i);
    double *R = w->ld + i * d * d;
    for (size_t k = 0; k < d; k++) {
      memset(col, 0, d * sizeof *col);
      col[k] = 1.0;
      lu_solve(d, a, piv, col);
      for (size_t r = 0; r < d; r++) R[r * d + k] = col[r];
    }
  }
  return NF_OK;
}

/* Roulette weight of series term k >= 1 for a row with N extra terms:
   1 for k <= n_exact, 1 / P(N >= j) = (1 - p)^-j for k = n_exact + j, j <= N, else 0. */
static double term_weight(const rn_net *net, size_t k, size_t N)
{
  size_t n0 = net->o.n_exact_terms;
  if (k <= n0) return 1.0;
  return k - n0 <= N ? pow(1.0 - net->o.roulette_p, -(double)(k - n0)) : 0.0;
}

/* Estimate: probes v_i and N_i ~ Geometric(p) (P(N >= j) = (1 - p)^j, by
   inversion of a uniform) from the noise of (seed, probe_seed) at the global
   rows row0 + i; ld_i = sum_{k=1}^{n_exact + N_i} (-1)^{k+1} w_k v^T J^k v / k,
   and the record y_i = sum_{k=0}^{K-1} (-1)^k w_{k+1} J^k v for the gradient. */
static void logdet_estimate(const rn_net *net, rn_work *w, size_t n, uint64_t seed, size_t row0,
                            double *ld)
{
  size_t d = net->d, kmax = 0;
  double *v = w->ld, *y = w->ld + n * d, *Nrow = w->s[2], *cur = w->tin, *next = w->tout;
  uint64_t key = nf_noise_key(seed, net->o.probe_seed);
  nf_noise_fill(net->o.probe, key, row0, n, d, v);
  nf_noise_fill(NF_NOISE_UNIFORM, nf_noise_key(key, 1), row0, n, 1, Nrow);
  double log_q = log1p(-net->o.roulette_p);
  for (size_t i = 0; i < n; i++) {
    Nrow[i] = floor(log1p(-Nrow[i]) / log_q); /* 1 - u in (0, 1]: N finite */
    size_t K = net->o.n_exact_terms + (size_t)Nrow[i];
    if (K > kmax) kmax = K;
    ld[i] = 0;
  }
  memset(y, 0, n * d * sizeof *y);
  memcpy(cur, v, n * d * sizeof *v);
  for (size_t k = 0; k < kmax; k++) { /* cur = J^k v */
    int last = k + 1 == kmax;
    for (size_t i = 0; i < n; i++) {
      double wk = term_weight(net, k + 1, (size_t)Nrow[i]) * (k % 2 ? -1.0 : 1.0);
      for (size_t j = 0; wk != 0.0 && j < d; j++) y[i * d + j] += wk * cur[i * d + j];
    }
    rn_tangent(net, w, n, 1, cur, next);
    for (size_t i = 0; i < n; i++) {
      double wk = term_weight(net, k + 1, (size_t)Nrow[i]) * (k % 2 ? -1.0 : 1.0), vj = 0;
      for (size_t j = 0; wk != 0.0 && j < d; j++) vj += v[i * d + j] * next[i * d + j];
      if (wk != 0.0) ld[i] += wk * vj / (double)(k + 1);
    }
    if (!last) {
      double *t = cur;
      cur = next;
      next = t;
    }
  }
}

nf_status rn_logdet(const rn_net *net, rn_work *w, size_t n, uint64_t seed, size_t row0,
                    double *ld)
{
  if (net->o.logdet == NF_RESIDUAL_EXACT) return logdet_exact(net, w, n, ld);
  logdet_estimate(net, w, n, seed, row0, ld);
  return NF_OK;
}

/* Exact: d/dtheta log det(I + J) = tr((I + J)^-1 dJ) = sum_k R[k, :] dJ e_k, so
   S = sum_{i,k} gl_i R_i[k, :]^T J_i e_k through the primitive. Estimate:
   S = sum_i gl_i v_i^T J_i y_i (Chen et al. 2019, eq. 8, with tr(J^k dJ) =
   tr(dJ J^k) estimated as v^T dJ J^k v). */
void rn_logdet_grad(const rn_net *net, rn_work *w, size_t n, const double *x,
                    const double *ctx, const double *gl, double *gx, double *gctx)
{
  size_t d = net->d, m = rn_tangents(net);
  const double *src = w->ld; /* row r: R_i[k, :] (r = i d + k) or v_i (r = i) */
  if (m == d)
    fill_units(n, d, w->tin);
  else
    memcpy(w->tin, w->ld + n * d, n * d * sizeof *w->tin); /* y */
  for (size_t r = 0; r < n * m; r++)
    for (size_t j = 0; j < d; j++) w->tw[r * d + j] = gl[r / m] * src[r * d + j];
  rn_tangent(net, w, n, m, w->tin, w->tout);
  rn_wjv_grad(net, w, n, m, x, ctx, w->tin, w->tw, gx, gctx);
}
