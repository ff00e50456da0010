/* tests/helpers.c — finite-difference vjp check, brute-force log-det, inverse
   round trip and grid mass: the numerical evidence behind every bijector. */
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

/* The arguments of one call of nf_layer_apply or nf_layer_vjp. */
typedef struct th_call {
  const nf_layer *layer;
  nf_dir dir;
  size_t n;
  double *in, *ctx, *out, *logdet, *g_out, *g_logdet, *g_in, *g_ctx, *work;
} th_call;

static nf_status call_apply(th_call a)
{
  return nf_layer_apply(a.layer, a.dir, a.n, a.in, a.ctx, a.out, a.logdet, a.work);
}

static nf_status call_vjp(th_call a)
{
  return nf_layer_vjp(a.layer, a.dir, a.n, a.in, a.ctx, a.out, a.g_out, a.g_logdet, a.g_in,
                      a.g_ctx, a.work);
}

/* Asserts st == want, with a message naming fn and containing detail (if not NULL). */
static void expect_status(const char *what, nf_status st, nf_status want, const char *fn,
                          const char *detail)
{
  ck_assert_msg(st == want, "%s: got %s, want %s", what, nf_status_str(st), nf_status_str(want));
  ck_assert_msg(strstr(nf_errmsg(), fn) != NULL, "%s: message '%s' does not name %s", what,
                nf_errmsg(), fn);
  ck_assert_msg(!detail || strstr(nf_errmsg(), detail) != NULL,
                "%s: message '%s' does not say '%s'", what, nf_errmsg(), detail);
}

/* Both entry points refuse the call a with status want (and detail in the message). */
static void expect_refused(const char *what, th_call a, nf_status want, const char *detail)
{
  expect_status(what, call_apply(a), want, "nf_layer_apply", detail);
  expect_status(what, call_vjp(a), want, "nf_layer_vjp", detail);
}

/* Puts bad at a[k], expects both entry points to refuse call c naming row k / width
   and column k % width, and restores a[k]. */
static void expect_nonfinite(th_call c, double *a, size_t k, size_t width, double bad,
                             const char *which)
{
  char what[64], detail[64];
  double keep = a[k];
  a[k] = bad;
  snprintf(what, sizeof what, "%g in the %s", bad, which);
  snprintf(detail, sizeof detail, "%s row %zu, column %zu", which, k / width, k % width);
  expect_refused(what, c, NF_ENONFINITE, detail);
  a[k] = keep;
}

/* Asserts v[0..n) == value exactly. */
static void expect_all(const char *what, size_t n, const double *v, double value)
{
  for (size_t k = 0; k < n; k++)
    ck_assert_msg(v[k] == value, "%s[%zu] = %g was overwritten", what, k, v[k]);
}

void th_check_bad_calls(nf_layer *layer)
{
  enum { N = 2 };
  const double OUT = -99.5, LOGDET = 7.25, G_IN = 1e300, G_CTX = -3.5;
  ck_assert_msg(layer && layer->storage, "th_check_bad_calls needs a layer not in a flow");
  size_t d = layer->dim, c = layer->ctx_dim, p = layer->n_params;
  double *in = malloc(N * d * sizeof *in), *ctx = c ? malloc(N * c * sizeof *ctx) : NULL;
  double *out = malloc(N * d * sizeof *out), *g_out = malloc(N * d * sizeof *g_out);
  double *g_in = malloc(N * d * sizeof *g_in), *g_ctx = c ? malloc(N * c * sizeof *g_ctx) : NULL;
  double *grad0 = malloc((p + 1) * sizeof *grad0), logdet[N], g_logdet[N] = {0.5, -1.5};
  double *work = nf_layer_work_new(layer, N);
  for (size_t k = 0; k < N * d; k++) {
    in[k] = 0.25 * (double)(k % 5) - 0.5;
    g_out[k] = 1.0;
  }
  for (size_t k = 0; k < N * c; k++) ctx[k] = 0.5 - 0.125 * (double)(k % 7);
  th_call good = {layer, NF_FORWARD, N, in, ctx, out, logdet, g_out, g_logdet, g_in, g_ctx, work};
  for (size_t k = 0; k < N * d; k++) {
    out[k] = OUT;
    g_in[k] = G_IN;
  }
  for (size_t k = 0; k < N * c; k++) g_ctx[k] = G_CTX;
  for (size_t i = 0; i < N; i++) logdet[i] = LOGDET;
  if (p) memcpy(grad0, layer->grad, p * sizeof *grad0);

  for (int k = 0; k < 2; k++) {
    th_call a = good, b;
    a.dir = k ? NF_INVERSE : NF_FORWARD;
    b = a; b.layer = NULL; expect_refused("NULL layer", b, NF_EINVAL, "layer is NULL");
    b = a; b.dir = (nf_dir)5; expect_refused("direction 5", b, NF_EINVAL, "direction 5");
    b = a; b.n = 0; expect_refused("n = 0", b, NF_EINVAL, "n is 0");
    b = a; b.in = NULL; expect_refused("NULL input", b, NF_EINVAL, "input array is NULL");
    if (c) { b = a; b.ctx = NULL; expect_refused("NULL context", b, NF_EINVAL, "context"); }
    if (nf_layer_work_size(layer, N)) {
      b = a; b.work = NULL; expect_refused("NULL workspace", b, NF_EINVAL, "workspace");
    }
    b = a; b.out = NULL;
    expect_status("NULL output", call_apply(b), NF_EINVAL, "nf_layer_apply", "output");
    expect_status("NULL output", call_vjp(b), NF_EINVAL, "nf_layer_vjp", "out");
    b = a; b.out = in;
    expect_status("output aliasing input", call_apply(b), NF_EINVAL, "nf_layer_apply", "aliases");
    b = a; b.g_out = NULL;
    expect_status("NULL g_out", call_vjp(b), NF_EINVAL, "nf_layer_vjp", "g_out");
    expect_nonfinite(a, in, N * d - 1, d, NAN, "input");
    expect_nonfinite(a, in, 0, d, -INFINITY, "input");
    if (c) {
      expect_nonfinite(a, ctx, N * c - 1, c, NAN, "context");
      expect_nonfinite(a, ctx, 0, c, INFINITY, "context");
    }
  }
  expect_all("out", N * d, out, OUT);
  expect_all("logdet", N, logdet, LOGDET);
  expect_all("g_in", N * d, g_in, G_IN);
  expect_all("g_ctx", N * c, g_ctx, G_CTX);
  for (size_t k = 0; k < p; k++)
    ck_assert_msg(layer->grad[k] == grad0[k], "parameter gradient %zu was changed", k);

  nf_flow *wide = nf_flow_new(d + 1, c, NF_BASE_STD_NORMAL);
  nf_flow *other_ctx = nf_flow_new(d, c + 1, NF_BASE_STD_NORMAL);
  ck_assert_ptr_nonnull(wide);
  ck_assert_ptr_nonnull(other_ctx);
  expect_status("flow of dimension d + 1", nf_flow_push(wide, layer), NF_EDIM, "nf_flow_push", NULL);
  expect_status("flow of context width c + 1", nf_flow_push(other_ctx, layer), NF_EDIM,
                "nf_flow_push", NULL);
  nf_flow_free(wide);
  nf_flow_free(other_ctx);

  for (int k = 0; k < 2; k++) { /* the good arguments themselves are accepted */
    good.dir = k ? NF_INVERSE : NF_FORWARD;
    ck_assert_msg(call_apply(good) == NF_OK, "good apply failed: %s", nf_errmsg());
    ck_assert_msg(call_vjp(good) == NF_OK, "good vjp failed: %s", nf_errmsg());
  }
  nf_layer_work_free(layer, N, work);
  free(in); free(ctx); free(out); free(g_out); free(g_in); free(g_ctx); free(grad0);
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

int th_run_tests(const char *name, double timeout, const TTest *const *tests)
{
  Suite *suite = suite_create(name);
  TCase *tc = tcase_create("core");
  if (timeout > 0) tcase_set_timeout(tc, timeout);
  for (; *tests; tests++) tcase_add_test(tc, *tests);
  suite_add_tcase(suite, tc);
  return th_run_suite(suite);
}
