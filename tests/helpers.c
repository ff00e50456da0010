/* tests/helpers.c — finite-difference vjp check, brute-force log-det, inverse
   round trip and grid mass: the numerical evidence behind every bijector. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

void th_randn(nf_rng *rng, size_t n, double scale, double *out)
{
  for (size_t i = 0; i < n; i++) out[i] = scale * nf_rng_normal(rng);
}

double th_max_abs_diff(size_t n, const double *a, const double *b)
{
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
  return m;
}

double th_rel_err(size_t n, const double *a, const double *b, double floor)
{
  double nb = 0;
  for (size_t i = 0; i < n; i++) nb = fmax(nb, fabs(b[i]));
  return th_max_abs_diff(n, a, b) / fmax(nb, floor);
}

void th_randomize_params(nf_layer *layer, nf_rng *rng, double scale)
{
  th_randn(rng, layer->n_params, scale, layer->params);
}


/* apply with a fresh workspace and a zeroed logdet; aborts the test on failure.
   Returns the layer's penalty for this apply (0 without one). */
static double apply_fresh(const nf_layer *layer, nf_dir dir, size_t n, const double *in,
                          const double *ctx, double *out, double *logdet)
{
  double *work = nf_layer_work_new(layer, n), penalty = 0;
  memset(logdet, 0, n * sizeof *logdet);
  nf_status st = nf_layer_apply(layer, dir, n, in, ctx, out, logdet, work);
  if (st == NF_OK && layer->type->penalty) penalty = layer->type->penalty(layer, n, work);
  nf_layer_work_free(layer, n, work);
  ck_assert_msg(st == NF_OK, "apply failed: %s: %s", nf_status_str(st), nf_errmsg());
  return penalty;
}

double th_roundtrip_error(const nf_layer *layer, size_t n, const double *z,
                          const double *ctx, double *logdet_cancel)
{
  size_t d = layer->dim;
  double *x = calloc(n * d, sizeof *x), *z2 = calloc(n * d, sizeof *z2);
  double *ld_f = calloc(n, sizeof *ld_f), *ld_i = calloc(n, sizeof *ld_i);
  apply_fresh(layer, NF_FORWARD, n, z, ctx, x, ld_f);
  apply_fresh(layer, NF_INVERSE, n, x, ctx, z2, ld_i);
  double err = th_max_abs_diff(n * d, z, z2);
  if (logdet_cancel) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(ld_f[i] + ld_i[i]));
    *logdet_cancel = m;
  }
  free(x); free(z2); free(ld_f); free(ld_i);
  return err;
}

/* log|det A| of a d x d matrix (destroyed) by Gaussian elimination with partial pivoting. */
static double log_abs_det(size_t d, double *a)
{
  double s = 0;
  for (size_t k = 0; k < d; k++) {
    size_t p = k;
    for (size_t i = k + 1; i < d; i++)
      if (fabs(a[i * d + k]) > fabs(a[p * d + k])) p = i;
    if (p != k)
      for (size_t j = 0; j < d; j++) {
        double t = a[k * d + j]; a[k * d + j] = a[p * d + j]; a[p * d + j] = t;
      }
    double piv = a[k * d + k];
    s += log(fabs(piv));
    for (size_t i = k + 1; i < d; i++) {
      double f = a[i * d + k] / piv;
      for (size_t j = k; j < d; j++) a[i * d + j] -= f * a[k * d + j];
    }
  }
  return s;
}

double th_logdet_error(const nf_layer *layer, nf_dir dir, size_t n, const double *in,
                       const double *ctx, double h)
{
  size_t d = layer->dim, c = layer->ctx_dim;
  double *row = malloc(d * sizeof *row), *jac = malloc(d * d * sizeof *jac);
  double *op = malloc(d * sizeof *op), *om = malloc(d * sizeof *om);
  double *logdet = calloc(n, sizeof *logdet), *out = malloc(n * d * sizeof *out);
  double ld_dummy, worst = 0;
  apply_fresh(layer, dir, n, in, ctx, out, logdet);
  for (size_t i = 0; i < n; i++) {
    const double *ctx_i = c ? ctx + i * c : NULL;
    for (size_t j = 0; j < d; j++) {
      memcpy(row, in + i * d, d * sizeof *row);
      row[j] += h;
      apply_fresh(layer, dir, 1, row, ctx_i, op, &ld_dummy);
      row[j] -= 2 * h;
      apply_fresh(layer, dir, 1, row, ctx_i, om, &ld_dummy);
      for (size_t k = 0; k < d; k++) jac[k * d + j] = (op[k] - om[k]) / (2 * h);
    }
    worst = fmax(worst, fabs(logdet[i] - log_abs_det(d, jac)));
  }
  free(row); free(jac); free(op); free(om); free(logdet); free(out);
  return worst;
}

/* L = sum(g_out * out) + sum(g_logdet * logdet) + penalty at (in, ctx, params). */
static double probe_loss(const nf_layer *layer, nf_dir dir, size_t n, const double *in,
                         const double *ctx, const double *g_out, const double *g_logdet)
{
  size_t d = layer->dim;
  double *out = malloc(n * d * sizeof *out), *logdet = malloc(n * sizeof *logdet);
  double loss = apply_fresh(layer, dir, n, in, ctx, out, logdet);
  for (size_t i = 0; i < n * d; i++) loss += g_out[i] * out[i];
  for (size_t i = 0; i < n; i++) loss += g_logdet[i] * logdet[i];
  free(out); free(logdet);
  return loss;
}

/* Central difference of probe_loss in every entry of v (in place, restored). */
static void fd_gradient(const nf_layer *layer, nf_dir dir, size_t n, double *in, double *ctx,
                        const double *g_out, const double *g_logdet, double *v, size_t len,
                        double h, double *grad)
{
  for (size_t k = 0; k < len; k++) {
    double v0 = v[k];
    v[k] = v0 + h;
    double lp = probe_loss(layer, dir, n, in, ctx, g_out, g_logdet);
    v[k] = v0 - h;
    double lm = probe_loss(layer, dir, n, in, ctx, g_out, g_logdet);
    v[k] = v0;
    grad[k] = (lp - lm) / (2 * h);
  }
}

th_vjp_errors th_vjp_check(nf_layer *layer, nf_dir dir, size_t n, const double *in,
                           const double *ctx, uint64_t seed, double h)
{
  size_t d = layer->dim, c = layer->ctx_dim, p = layer->n_params;
  th_vjp_errors e = {0, 0, 0};
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *g_out = malloc(n * d * sizeof *g_out), *g_logdet = malloc(n * sizeof *g_logdet);
  th_randn(&rng, n * d, 1.0, g_out);
  th_randn(&rng, n, 1.0, g_logdet);
  double *x = malloc(n * d * sizeof *x), *cx = c ? malloc(n * c * sizeof *cx) : NULL;
  memcpy(x, in, n * d * sizeof *x);
  if (c) memcpy(cx, ctx, n * c * sizeof *cx);

  /* analytic */
  double *out = malloc(n * d * sizeof *out), *logdet = calloc(n, sizeof *logdet);
  double *g_in = malloc(n * d * sizeof *g_in), *g_ctx = c ? calloc(n * c, sizeof *g_ctx) : NULL;
  double *work = nf_layer_work_new(layer, n);
  memset(layer->grad, 0, p * sizeof(double));
  nf_status st = nf_layer_apply(layer, dir, n, x, cx, out, logdet, work);
  ck_assert_msg(st == NF_OK, "apply failed: %s", nf_errmsg());
  st = nf_layer_vjp(layer, dir, n, x, cx, out, g_out, g_logdet, g_in, g_ctx, work);
  ck_assert_msg(st == NF_OK, "vjp failed: %s", nf_errmsg());
  nf_layer_work_free(layer, n, work);

  /* numerical */
  size_t big = n * d > n * c ? n * d : n * c;
  double *fd = malloc((big > p ? big : p) * sizeof *fd + 1);
  fd_gradient(layer, dir, n, x, cx, g_out, g_logdet, x, n * d, h, fd);
  e.in = th_rel_err(n * d, g_in, fd, 1e-8);
  if (c) {
    fd_gradient(layer, dir, n, x, cx, g_out, g_logdet, cx, n * c, h, fd);
    e.ctx = th_rel_err(n * c, g_ctx, fd, 1e-8);
  }
  if (p) {
    fd_gradient(layer, dir, n, x, cx, g_out, g_logdet, layer->params, p, h, fd);
    e.params = th_rel_err(p, layer->grad, fd, 1e-8);
  }
  free(g_out); free(g_logdet); free(x); free(cx); free(out); free(logdet);
  free(g_in); free(g_ctx); free(fd);
  return e;
}

double th_grid_mass(nf_flow *flow, double a, size_t m)
{
  double cell = 2 * a / (double)m, mass = 0;
  double *pts = malloc(2 * m * sizeof *pts), *logp = malloc(m * sizeof *logp);
  for (size_t i = 0; i < m; i++) {
    for (size_t j = 0; j < m; j++) {
      pts[2 * j] = -a + (i + 0.5) * cell;
      pts[2 * j + 1] = -a + (j + 0.5) * cell;
    }
    nf_status st = nf_flow_log_prob(flow, m, pts, NULL, logp);
    ck_assert_msg(st == NF_OK, "log_prob failed: %s", nf_errmsg());
    for (size_t j = 0; j < m; j++) mass += exp(logp[j]);
  }
  free(pts); free(logp);
  return mass * cell * cell;
}

int th_run_suite(Suite *suite)
{
  SRunner *runner = srunner_create(suite);
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
