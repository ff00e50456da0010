/* tests/helpers.c — finite-difference vjp check, brute-force log-det, inverse
   round trip and grid mass: the numerical evidence behind every bijector; and
   the checks every bijector's test shares (th_check_*), built on them. */
#include <math.h>
#include <stdio.h>
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

nf_layer *th_random_layer(nf_layer *layer, uint64_t seed, double scale)
{
  ck_assert_msg(layer != NULL, "no layer: %s", nf_errmsg());
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  th_randomize_params(layer, &rng, scale);
  return layer;
}

double *th_random_points(size_t n, size_t d, uint64_t seed, double scale)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *p = malloc(n * d * sizeof *p + 1);
  th_randn(&rng, n * d, scale, p);
  return p;
}

void th_check_identity(const nf_layer *layer, size_t n, uint64_t seed, double rel_tol)
{
  size_t d = layer->dim, c = layer->ctx_dim;
  double *in = th_random_points(n, d, seed, 2.0);
  double *ctx = c ? th_random_points(n, c, seed + 1, 2.0) : NULL;
  double *out = malloc(n * d * sizeof *out), *logdet = malloc(n * sizeof *logdet);
  double *work = nf_layer_work_new(layer, n);
  for (int k = 0; k < 2; k++) {
    for (size_t i = 0; i < n; i++) logdet[i] = (double)i - 2.5;
    ck_assert_int_eq(nf_layer_apply(layer, k ? NF_INVERSE : NF_FORWARD, n, in, ctx, out, logdet,
                                    work), NF_OK);
    for (size_t j = 0; j < n * d; j++)
      ck_assert_msg(fabs(out[j] - in[j]) <= rel_tol * fabs(in[j]),
                    "%s: out[%zu] = %.17g, in %.17g", k ? "inverse" : "forward", j, out[j], in[j]);
    for (size_t i = 0; i < n; i++)
      ck_assert_msg(fabs(logdet[i] - ((double)i - 2.5)) <= rel_tol,
                    "%s: logdet[%zu] moved to %.17g", k ? "inverse" : "forward", i, logdet[i]);
  }
  nf_layer_work_free(layer, n, work);
  free(in); free(ctx); free(out); free(logdet);
}

void th_check_rejects_nonpositive(nf_layer *(*make)(double v), const char *fn, const char *name)
{
  const double bad[4] = {0.0, -1.0, NAN, INFINITY};
  for (int k = 0; k < 4; k++) {
    nf_layer *layer = make(bad[k]);
    ck_assert_msg(layer == NULL, "%s accepted %s = %g", fn, name, bad[k]);
    ck_assert_msg(strstr(nf_errmsg(), fn) && strstr(nf_errmsg(), name),
                  "%s = %g: message '%s' does not name %s and %s", name, bad[k], nf_errmsg(), fn,
                  name);
  }
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

th_tolerances th_default_tolerances(void)
{
  return (th_tolerances){.roundtrip = 1e-10, .cancel = 1e-10, .logdet = 1e-6, .vjp = 1e-6,
                         .h_logdet = 1e-5, .h_vjp = 1e-6};
}

/* Seed of the random cotangents th_check_bijector probes vjp with. */
#define TH_PROBE_SEED 0x5eedULL

/* Prints "head: what value (<= bound)" and asserts value <= bound (NaN fails). */
static void check_le(const char *head, const char *what, double value, double bound)
{
  printf("%s: %s %.2e (<= %.0e)\n", head, what, value, bound);
  ck_assert_msg(value <= bound, "%s: %s %g exceeds %g", head, what, value, bound);
}

void th_check_bijector(const char *label, nf_layer *layer, size_t n, const double *z,
                       const double *ctx, const th_tolerances *tol)
{
  th_tolerances t = tol ? *tol : th_default_tolerances();
  char head[160], dir_head[176];
  int len = snprintf(head, sizeof head, "%s d=%zu", label ? label : layer->type->name,
                     layer->dim);
  if (layer->ctx_dim) len += snprintf(head + len, sizeof head - len, " c=%zu", layer->ctx_dim);
  snprintf(head + len, sizeof head - len, " n=%zu", n);
  double cancel, rt = th_roundtrip_error(layer, n, z, ctx, &cancel);
  check_le(head, "round trip", rt, t.roundtrip);
  check_le(head, "log-det cancellation", cancel, t.cancel);
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    snprintf(dir_head, sizeof dir_head, "%s %s", head, k ? "inverse" : "forward");
    check_le(dir_head, "log-det vs FD Jacobian", th_logdet_error(layer, dir, n, z, ctx, t.h_logdet),
             t.logdet);
    th_vjp_errors e = th_vjp_check(layer, dir, n, z, ctx, TH_PROBE_SEED, t.h_vjp);
    printf("%s: vjp vs FD: in %.2e, ctx %.2e, params %.2e (<= %.0e)\n", dir_head, e.in, e.ctx,
           e.params, t.vjp);
    ck_assert_msg(e.in <= t.vjp && e.ctx <= t.vjp && e.params <= t.vjp,
                  "%s: vjp errors in %g, ctx %g, params %g exceed %g", dir_head, e.in, e.ctx,
                  e.params, t.vjp);
  }
}

void th_check_bijector_family(const char *label, th_case_fn make, int variant, double row_scale)
{
  static const size_t dims[3] = {1, 2, 5};
  enum { N = 20, SEEDS = 3 };
  for (size_t k = 0; k < 3; k++)
    for (uint64_t s = 1; s <= SEEDS; s++) {
      uint64_t seed = 10 * s + k;
      double *z = th_random_points(N, dims[k], seed + 1000, row_scale);
      nf_layer *layer = make(dims[k], seed, variant, N, z);
      th_check_bijector(label, layer, N, z, NULL, NULL);
      nf_layer_free(layer);
      free(z);
    }
  double *z = th_random_points(4, 3, 1007, row_scale);
  nf_layer *layer = make(3, 7, variant, 4, z);
  th_check_vjp_accumulates(layer, 4, z, NULL);
  nf_layer_free(layer);
  free(z);
}

/* Asserts a[0..n) == b[0..n) exactly. */
static void expect_same(const char *what, size_t n, const double *a, const double *b)
{
  for (size_t k = 0; k < n; k++)
    ck_assert_msg(a[k] == b[k], "%s[%zu]: %.17g != %.17g", what, k, a[k], b[k]);
}

/* Fills v[0..n) with value. */
static void fill(size_t n, double *v, double value)
{
  for (size_t k = 0; k < n; k++) v[k] = value;
}

/* Norm-wise relative bound on the rounding of a second accumulation of the parameter gradient. */
#define TH_ACCUMULATE_TOL 1e-14

void th_check_vjp_accumulates(nf_layer *layer, size_t n, const double *z, const double *ctx)
{
  size_t d = layer->dim, c = layer->ctx_dim, p = layer->n_params;
  double *out = malloc(n * d * sizeof *out), *g_out = th_random_points(n, d, TH_PROBE_SEED, 1.0);
  double *zeros = calloc(n, sizeof *zeros), *g_in1 = malloc(n * d * sizeof *g_in1);
  double *g_in2 = malloc(n * d * sizeof *g_in2), *grad1 = malloc((p + 1) * sizeof *grad1);
  double *g_ctx1 = calloc(n * c + 1, sizeof *g_ctx1);
  double *g_ctx2 = malloc((n * c + 1) * sizeof *g_ctx2);
  double *work = nf_layer_work_new(layer, n), *grad = layer->grad;
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    ck_assert_int_eq(nf_layer_apply(layer, dir, n, z, ctx, out, NULL, work), NF_OK);
    fill(p, grad, 0.0);
    fill(n * c, g_ctx1, 0.0);
    ck_assert_int_eq(nf_layer_vjp(layer, dir, n, z, ctx, out, g_out, zeros, g_in1,
                                  c ? g_ctx1 : NULL, work), NF_OK);
    memcpy(grad1, grad, p * sizeof *grad1);
    fill(p, grad, 0.0);
    fill(n * d, g_in2, NAN);
    ck_assert_int_eq(nf_layer_vjp(layer, dir, n, z, ctx, out, g_out, NULL, g_in2, NULL, work),
                     NF_OK);
    expect_same("g_in written with g_logdet NULL", n * d, g_in2, g_in1);
    expect_same("parameter gradient with g_logdet NULL", p, grad, grad1);
    fill(p, grad, 0.0);
    ck_assert_int_eq(nf_layer_vjp(layer, dir, n, z, ctx, out, g_out, zeros, NULL, NULL, work),
                     NF_OK);
    expect_same("parameter gradient without g_in", p, grad, grad1);
    fill(n * c, g_ctx2, 1.0);
    ck_assert_int_eq(nf_layer_vjp(layer, dir, n, z, ctx, out, g_out, zeros, g_in2,
                                  c ? g_ctx2 : NULL, work), NF_OK);
    expect_same("g_in written again", n * d, g_in2, g_in1);
    for (size_t j = 0; j < n * c; j++)
      ck_assert_msg(fabs(g_ctx2[j] - (1.0 + g_ctx1[j])) <= 1e-14,
                    "g_ctx[%zu] = %g: not added to 1 + %g", j, g_ctx2[j], g_ctx1[j]);
    for (size_t j = 0; j < p; j++) grad1[j] *= 2;
    double err = th_rel_err(p, grad, grad1, 1e-300);
    printf("%s d=%zu %s: a second vjp doubles the parameter gradient to %.2e (<= %.0e)\n",
           layer->type->name, d, k ? "inverse" : "forward", err, TH_ACCUMULATE_TOL);
    ck_assert_msg(err <= TH_ACCUMULATE_TOL, "parameter gradient not accumulated: %g", err);
  }
  nf_layer_work_free(layer, n, work);
  free(out); free(g_out); free(zeros); free(g_in1); free(g_in2); free(grad1);
  free(g_ctx1); free(g_ctx2);
}

/* The arguments of one call of nf_layer_apply or nf_layer_vjp. */
typedef struct th_call {
  const nf_layer *layer;
  nf_dir dir;
  size_t n;
  double *in, *ctx, *out, *logdet, *g_out, *g_logdet, *g_in, *g_ctx, *work;
} th_call;

/* nf_layer_apply with the arguments of a. */
static nf_status call_apply(th_call a)
{
  return nf_layer_apply(a.layer, a.dir, a.n, a.in, a.ctx, a.out, a.logdet, a.work);
}

/* nf_layer_vjp with the arguments of a. */
static nf_status call_vjp(th_call a)
{
  return nf_layer_vjp(a.layer, a.dir, a.n, a.in, a.ctx, a.out, a.g_out, a.g_logdet, a.g_in,
                      a.g_ctx, a.work);
}

/* Asserts st == want, with a message containing fn and detail (each unless NULL). */
static void expect_status(const char *what, nf_status st, nf_status want, const char *fn,
                          const char *detail)
{
  ck_assert_msg(st == want, "%s: got %s, want %s", what, nf_status_str(st), nf_status_str(want));
  const char *says[2] = {fn, detail};
  for (int k = 0; k < 2; k++)
    ck_assert_msg(!says[k] || strstr(nf_errmsg(), says[k]) != NULL,
                  "%s: message '%s' does not say '%s'", what, nf_errmsg(), says[k]);
}

/* Both entry points refuse the call a with status want, naming themselves (if
   named) and saying detail. */
static void expect_refused(const char *what, th_call a, nf_status want, int named,
                           const char *detail)
{
  expect_status(what, call_apply(a), want, named ? "nf_layer_apply" : NULL, detail);
  expect_status(what, call_vjp(a), want, named ? "nf_layer_vjp" : NULL, detail);
}

/* Puts bad at v[k], expects both entry points to refuse call c naming row k / width
   and column k % width of `which` (input or context), and restores v[k]. */
static void expect_nonfinite(th_call c, double *v, size_t k, size_t width, double bad,
                             const char *which)
{
  char what[64], detail[64];
  double keep = v[k];
  v[k] = bad;
  snprintf(what, sizeof what, "%g in the %s", bad, which);
  snprintf(detail, sizeof detail, "%s row %zu, column %zu", which, k / width, k % width);
  expect_refused(what, c, NF_ENONFINITE, 1, detail);
  v[k] = keep;
}

/* Asserts v[0..n) == value exactly. */
static void expect_all(const char *what, size_t n, const double *v, double value)
{
  for (size_t k = 0; k < n; k++)
    ck_assert_msg(v[k] == value, "%s[%zu] = %g was overwritten", what, k, v[k]);
}

/* Sentinel values of the outputs a refused call must leave alone. */
#define TH_OUT -99.5
#define TH_LOGDET 7.25
#define TH_G_IN 1e300
#define TH_G_CTX -3.5

/* Good arguments for calls on 2 rows, outputs holding the sentinels, and a
   copy of the parameter gradient. */
typedef struct th_fixture {
  th_call good;
  double *grad0;
} th_fixture;

/* The fixture of calls on layer: deterministic inputs, sentinels in the outputs. */
static th_fixture fixture_new(nf_layer *layer)
{
  enum { N = 2 };
  size_t d = layer->dim, c = layer->ctx_dim, p = layer->n_params;
  th_fixture f = {{layer, NF_FORWARD, N, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
                  malloc((p + 1) * sizeof(double))};
  th_call *g = &f.good;
  g->in = malloc(N * d * sizeof(double));
  g->ctx = c ? malloc(N * c * sizeof(double)) : NULL;
  g->out = malloc(N * d * sizeof(double));
  g->logdet = malloc(N * sizeof(double));
  g->g_out = malloc(N * d * sizeof(double));
  g->g_logdet = malloc(N * sizeof(double));
  g->g_in = malloc(N * d * sizeof(double));
  g->g_ctx = c ? malloc(N * c * sizeof(double)) : NULL;
  g->work = nf_layer_work_new(layer, N);
  for (size_t k = 0; k < N * d; k++) {
    g->in[k] = 0.25 * (double)(k % 5) - 0.5;
    g->g_out[k] = 1.0;
  }
  for (size_t k = 0; k < N * c; k++) g->ctx[k] = 0.5 - 0.125 * (double)(k % 7);
  for (size_t i = 0; i < N; i++) g->g_logdet[i] = 0.5 - (double)i;
  fill(N * d, g->out, TH_OUT);
  fill(N * d, g->g_in, TH_G_IN);
  fill(N * c, g->g_ctx, TH_G_CTX);
  fill(N, g->logdet, TH_LOGDET);
  memcpy(f.grad0, layer->grad, p * sizeof(double));
  return f;
}

/* Asserts that no refused call wrote an output, a cotangent or the parameter gradient. */
static void fixture_expect_untouched(const th_fixture *f)
{
  const th_call *g = &f->good;
  size_t n = g->n, d = g->layer->dim, c = g->layer->ctx_dim;
  expect_all("out", n * d, g->out, TH_OUT);
  expect_all("logdet", n, g->logdet, TH_LOGDET);
  expect_all("g_in", n * d, g->g_in, TH_G_IN);
  expect_all("g_ctx", n * c, g->g_ctx, TH_G_CTX);
  expect_same("parameter gradient", g->layer->n_params, g->layer->grad, f->grad0);
}

/* The good calls themselves succeed in both directions (so each refusal was the bad argument's). */
static void fixture_expect_good(th_fixture *f)
{
  for (int k = 0; k < 2; k++) {
    f->good.dir = k ? NF_INVERSE : NF_FORWARD;
    ck_assert_msg(call_apply(f->good) == NF_OK, "good apply failed: %s", nf_errmsg());
    ck_assert_msg(call_vjp(f->good) == NF_OK, "good vjp failed: %s", nf_errmsg());
  }
}

/* Frees the fixture's arrays and workspace. */
static void fixture_free(th_fixture *f)
{
  th_call *g = &f->good;
  nf_layer_work_free(g->layer, g->n, g->work);
  free(g->in); free(g->ctx); free(g->out); free(g->logdet); free(g->g_out);
  free(g->g_logdet); free(g->g_in); free(g->g_ctx); free(f->grad0);
}

void th_check_bad_calls(nf_layer *layer)
{
  ck_assert_msg(layer && layer->storage, "th_check_bad_calls needs a layer not in a flow");
  size_t d = layer->dim, c = layer->ctx_dim;
  th_fixture f = fixture_new(layer);
  size_t n = f.good.n;
  for (int k = 0; k < 2; k++) {
    th_call a = f.good, b;
    a.dir = k ? NF_INVERSE : NF_FORWARD;
    b = a; b.layer = NULL; expect_refused("NULL layer", b, NF_EINVAL, 1, "layer is NULL");
    b = a; b.dir = (nf_dir)5; expect_refused("direction 5", b, NF_EINVAL, 1, "direction 5");
    b = a; b.n = 0; expect_refused("n = 0", b, NF_EINVAL, 1, "n is 0");
    b = a; b.in = NULL; expect_refused("NULL input", b, NF_EINVAL, 1, "input array is NULL");
    if (c) { b = a; b.ctx = NULL; expect_refused("NULL context", b, NF_EINVAL, 1, "context"); }
    if (nf_layer_work_size(layer, n)) {
      b = a; b.work = NULL; expect_refused("NULL workspace", b, NF_EINVAL, 1, "workspace");
    }
    b = a; b.out = NULL;
    expect_status("NULL output", call_apply(b), NF_EINVAL, "nf_layer_apply", "output");
    expect_status("NULL output", call_vjp(b), NF_EINVAL, "nf_layer_vjp", "out");
    b = a; b.out = a.in;
    expect_status("output aliasing input", call_apply(b), NF_EINVAL, "nf_layer_apply", "aliases");
    b = a; b.g_out = NULL;
    expect_status("NULL g_out", call_vjp(b), NF_EINVAL, "nf_layer_vjp", "g_out");
    expect_nonfinite(a, a.in, n * d - 1, d, NAN, "input");
    expect_nonfinite(a, a.in, 0, d, -INFINITY, "input");
    if (c) {
      expect_nonfinite(a, a.ctx, n * c - 1, c, NAN, "context");
      expect_nonfinite(a, a.ctx, 0, c, INFINITY, "context");
    }
  }
  fixture_expect_untouched(&f);

  nf_flow *wide = nf_flow_new(d + 1, c, NF_BASE_STD_NORMAL);
  nf_flow *other_ctx = nf_flow_new(d, c + 1, NF_BASE_STD_NORMAL);
  ck_assert_ptr_nonnull(wide);
  ck_assert_ptr_nonnull(other_ctx);
  expect_status("flow of dimension d + 1", nf_flow_push(wide, layer), NF_EDIM, "nf_flow_push",
                NULL);
  expect_status("flow of context width c + 1", nf_flow_push(other_ctx, layer), NF_EDIM,
                "nf_flow_push", NULL);
  nf_flow_free(wide);
  nf_flow_free(other_ctx);

  fixture_expect_good(&f);
  fixture_free(&f);
}

void th_check_nonfinite_param(nf_layer *layer, size_t k, double bad)
{
  char detail[48];
  snprintf(detail, sizeof detail, "parameter %zu", k);
  th_fixture f = fixture_new(layer);
  double keep = layer->params[k];
  layer->params[k] = bad;
  for (int j = 0; j < 2; j++) {
    th_call a = f.good;
    a.dir = j ? NF_INVERSE : NF_FORWARD;
    expect_refused(detail, a, NF_ENONFINITE, 0, detail);
  }
  layer->params[k] = keep;
  fixture_expect_untouched(&f);
  fixture_expect_good(&f);
  fixture_free(&f);
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

void th_check_grid_mass(const char *label, nf_flow *flow, double a, size_t m, double tol)
{
  double mass = th_grid_mass(flow, a, m);
  printf("%s: grid mass on [-%g, %g]^2 (%zu x %zu) %.12f (|mass - 1| <= %.0e)\n", label, a, a, m,
         m, mass, tol);
  ck_assert_msg(fabs(mass - 1.0) <= tol, "%s: grid mass %.12f", label, mass);
}

const char *th_data_path(const char *name)
{
  static char path[4096];
  const char *top = getenv("top_srcdir");
  snprintf(path, sizeof path, "%s/tests/data/%s", top && *top ? top : ".", name);
  return path;
}

void th_assert_read_error(nf_status (*reader)(const char *, nf_dataset **), const char *name,
                          nf_status status, const char *suffix)
{
  static nf_dataset untouched;
  nf_dataset *ds = &untouched;
  const char *path = th_data_path(name);
  nf_status st = reader(path, &ds);
  ck_assert_msg(st == status, "%s: got %s (%s)", name, nf_status_str(st), nf_errmsg());
  ck_assert_ptr_eq(ds, &untouched);
  char want[4400];
  snprintf(want, sizeof want, "%s%s", path, suffix);
  ck_assert_str_eq(nf_errmsg(), want);
}

int th_run_suite(Suite *suite)
{
  SRunner *runner = srunner_create(suite);
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int th_run_tests(const char *name, double timeout, const TTest *const *tests)
{
  Suite *suite = suite_create(name);
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, timeout > 0 ? timeout : 60); /* guards hangs only */
  for (; *tests; tests++) tcase_add_test(tc, *tests);
  suite_add_tcase(suite, tc);
  return th_run_suite(suite);
}
