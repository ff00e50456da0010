/* tests/helpers.c — finite-difference vjp check, brute-force log-det, inverse
   round trip and grid mass: the numerical evidence behind every bijector; and
   the checks every bijector's test shares (th_check_*), built on them. */
#define _GNU_SOURCE /* mkdtemp */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* rmdir */

#include "helpers.h"
#include "nflow/layer_impl.h" /* the penalty op and the layer record */

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

void th_randomize_params(const nf_layer *layer, nf_rng *rng, double scale, double *theta)
{
  th_randn(rng, nf_layer_n_params(layer), scale, theta);
}

void th_perturb_flow(nf_flow *flow, nf_rng *rng, double scale)
{
  size_t p = nf_flow_n_params(flow);
  double *theta = malloc(p * sizeof *theta);
  for (size_t k = 0; k < p; k++) theta[k] = nf_flow_params(flow)[k] + scale * nf_rng_normal(rng);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
}

double *th_random_theta(const nf_layer *layer, uint64_t seed, double scale)
{
  ck_assert_msg(layer != NULL, "no layer: %s", nf_errmsg());
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *theta = malloc((layer->n_params + 1) * sizeof *theta);
  th_randomize_params(layer, &rng, scale, theta);
  return theta;
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
    ck_assert_int_eq(nf_layer_apply(layer, nf_layer_init_params(layer), k ? NF_INVERSE : NF_FORWARD,
                                    n, in, ctx, out, logdet, NULL, work), NF_OK);
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

/* Options of the finite-difference checks' calls on rows from row0: noise
   keyed as for the whole batch, penalty weight 1 (what probe_loss adds). */
static nf_apply_opts probe_opts(size_t row0)
{
  nf_apply_opts o = {0, row0, 1.0, 0, NULL};
  return o;
}

/* apply to rows row0.. of a batch with a fresh workspace and a zeroed logdet;
   aborts the test on failure. Returns the layer's penalty for this apply (0
   without one). */
static double apply_fresh(const nf_layer *layer, const double *theta, nf_dir dir, size_t row0,
                          size_t n, const double *in, const double *ctx, double *out,
                          double *logdet)
{
  double *work = nf_layer_work_new(layer, n), penalty = 0;
  nf_apply_opts o = probe_opts(row0);
  memset(logdet, 0, n * sizeof *logdet);
  nf_status st = nf_layer_apply(layer, theta, dir, n, in, ctx, out, logdet, &o, work);
  if (st == NF_OK && layer->type->penalty) penalty = layer->type->penalty(layer, n, work);
  nf_layer_work_free(layer, n, work);
  ck_assert_msg(st == NF_OK, "apply failed: %s: %s", nf_status_str(st), nf_errmsg());
  return penalty;
}

double th_roundtrip_error(const nf_layer *layer, const double *theta, size_t n, const double *z,
                          const double *ctx, double *logdet_cancel)
{
  size_t d = layer->dim;
  double *x = calloc(n * d, sizeof *x), *z2 = calloc(n * d, sizeof *z2);
  double *ld_f = calloc(n, sizeof *ld_f), *ld_i = calloc(n, sizeof *ld_i);
  apply_fresh(layer, theta, NF_FORWARD, 0, n, z, ctx, x, ld_f);
  apply_fresh(layer, theta, NF_INVERSE, 0, n, x, ctx, z2, ld_i);
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

double th_logdet_error(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                       const double *in, const double *ctx, double h)
{
  size_t d = layer->dim, c = layer->ctx_dim;
  double *row = malloc(d * sizeof *row), *jac = malloc(d * d * sizeof *jac);
  double *op = malloc(d * sizeof *op), *om = malloc(d * sizeof *om);
  double *logdet = calloc(n, sizeof *logdet), *out = malloc(n * d * sizeof *out);
  double ld_dummy, worst = 0;
  apply_fresh(layer, theta, dir, 0, n, in, ctx, out, logdet);
  for (size_t i = 0; i < n; i++) {
    const double *ctx_i = c ? ctx + i * c : NULL;
    for (size_t j = 0; j < d; j++) {
      memcpy(row, in + i * d, d * sizeof *row);
      row[j] += h;
      apply_fresh(layer, theta, dir, i, 1, row, ctx_i, op, &ld_dummy);
      row[j] -= 2 * h;
      apply_fresh(layer, theta, dir, i, 1, row, ctx_i, om, &ld_dummy);
      for (size_t k = 0; k < d; k++) jac[k * d + j] = (op[k] - om[k]) / (2 * h);
    }
    worst = fmax(worst, fabs(logdet[i] - log_abs_det(d, jac)));
  }
  free(row); free(jac); free(op); free(om); free(logdet); free(out);
  return worst;
}

/* L = sum(g_out * out) + sum(g_logdet * logdet) + penalty at (in, ctx, theta). */
static double probe_loss(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                         const double *in, const double *ctx, const double *g_out,
                         const double *g_logdet)
{
  size_t d = layer->dim;
  double *out = malloc(n * d * sizeof *out), *logdet = malloc(n * sizeof *logdet);
  double loss = apply_fresh(layer, theta, dir, 0, n, in, ctx, out, logdet);
  for (size_t i = 0; i < n * d; i++) loss += g_out[i] * out[i];
  for (size_t i = 0; i < n; i++) loss += g_logdet[i] * logdet[i];
  free(out); free(logdet);
  return loss;
}

/* Central difference of probe_loss in every entry of v (one of theta, in and
   ctx; in place, restored). */
static void fd_gradient(const nf_layer *layer, double *theta, nf_dir dir, size_t n, double *in,
                        double *ctx, const double *g_out, const double *g_logdet, double *v,
                        size_t len, double h, double *grad)
{
  for (size_t k = 0; k < len; k++) {
    double v0 = v[k];
    v[k] = v0 + h;
    double lp = probe_loss(layer, theta, dir, n, in, ctx, g_out, g_logdet);
    v[k] = v0 - h;
    double lm = probe_loss(layer, theta, dir, n, in, ctx, g_out, g_logdet);
    v[k] = v0;
    grad[k] = (lp - lm) / (2 * h);
  }
}

th_vjp_errors th_vjp_check(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                           const double *in, const double *ctx, uint64_t seed, double h)
{
  size_t d = layer->dim, c = layer->ctx_dim, p = layer->n_params;
  th_vjp_errors e = {0, 0, 0};
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *g_out = malloc(n * d * sizeof *g_out), *g_logdet = malloc(n * sizeof *g_logdet);
  th_randn(&rng, n * d, 1.0, g_out);
  th_randn(&rng, n, 1.0, g_logdet);
  double *x = malloc(n * d * sizeof *x), *cx = c ? malloc(n * c * sizeof *cx) : NULL;
  double *th = malloc((p + 1) * sizeof *th), *g_theta = calloc(p + 1, sizeof *g_theta);
  memcpy(x, in, n * d * sizeof *x);
  if (c && cx && ctx) memcpy(cx, ctx, n * c * sizeof *cx);
  if (p) memcpy(th, theta, p * sizeof *th);

  /* analytic */
  double *out = malloc(n * d * sizeof *out), *logdet = calloc(n, sizeof *logdet);
  double *g_in = malloc(n * d * sizeof *g_in), *g_ctx = c ? calloc(n * c, sizeof *g_ctx) : NULL;
  double *work = nf_layer_work_new(layer, n);
  nf_apply_opts o = probe_opts(0);
  nf_status st = nf_layer_apply(layer, th, dir, n, x, cx, out, logdet, &o, work);
  ck_assert_msg(st == NF_OK, "apply failed: %s", nf_errmsg());
  st = nf_layer_vjp(layer, th, dir, n, x, cx, out, g_out, g_logdet, g_in, g_ctx, g_theta, work);
  ck_assert_msg(st == NF_OK, "vjp failed: %s", nf_errmsg());
  nf_layer_work_free(layer, n, work);

  /* numerical */
  size_t big = n * d > n * c ? n * d : n * c;
  double *fd = malloc((big > p ? big : p) * sizeof *fd + 1);
  fd_gradient(layer, th, dir, n, x, cx, g_out, g_logdet, x, n * d, h, fd);
  e.in = th_rel_err(n * d, g_in, fd, 1e-8);
  if (c) {
    fd_gradient(layer, th, dir, n, x, cx, g_out, g_logdet, cx, n * c, h, fd);
    e.ctx = th_rel_err(n * c, g_ctx, fd, 1e-8);
  }
  if (p) {
    fd_gradient(layer, th, dir, n, x, cx, g_out, g_logdet, th, p, h, fd);
    e.params = th_rel_err(p, g_theta, fd, 1e-8);
  }
  free(g_out); free(g_logdet); free(x); free(cx); free(out); free(logdet);
  free(g_in); free(g_ctx); free(fd); free(th); free(g_theta);
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

void th_check_bijector(const char *label, const nf_layer *layer, const double *theta, size_t n,
                       const double *z, const double *ctx, const th_tolerances *tol)
{
  th_tolerances t = tol ? *tol : th_default_tolerances();
  char head[160], dir_head[176];
  int len = snprintf(head, sizeof head, "%s d=%zu", label ? label : layer->type->name,
                     layer->dim);
  if (layer->ctx_dim) len += snprintf(head + len, sizeof head - len, " c=%zu", layer->ctx_dim);
  snprintf(head + len, sizeof head - len, " n=%zu", n);
  double cancel, rt = th_roundtrip_error(layer, theta, n, z, ctx, &cancel);
  check_le(head, "round trip", rt, t.roundtrip);
  check_le(head, "log-det cancellation", cancel, t.cancel);
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    snprintf(dir_head, sizeof dir_head, "%s %s", head, k ? "inverse" : "forward");
    check_le(dir_head, "log-det vs FD Jacobian", th_logdet_error(layer, theta, dir, n, z, ctx, t.h_logdet),
             t.logdet);
    th_vjp_errors e = th_vjp_check(layer, theta, dir, n, z, ctx, TH_PROBE_SEED, t.h_vjp);
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
      double *theta;
      nf_layer *layer = make(dims[k], seed, variant, N, z, &theta);
      th_check_bijector(label, layer, theta, N, z, NULL, NULL);
      nf_layer_free(layer);
      free(z);
      free(theta);
    }
  double *z = th_random_points(4, 3, 1007, row_scale), *theta;
  nf_layer *layer = make(3, 7, variant, 4, z, &theta);
  th_check_vjp_accumulates(layer, theta, 4, z, NULL);
  nf_layer_free(layer);
  free(z);
  free(theta);
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

void th_check_vjp_accumulates(const nf_layer *layer, const double *theta, size_t n,
                              const double *z, const double *ctx)
{
  size_t d = layer->dim, c = layer->ctx_dim, p = layer->n_params;
  double *out = malloc(n * d * sizeof *out), *g_out = th_random_points(n, d, TH_PROBE_SEED, 1.0);
  double *zeros = calloc(n, sizeof *zeros), *g_in1 = malloc(n * d * sizeof *g_in1);
  double *g_in2 = malloc(n * d * sizeof *g_in2), *grad1 = malloc((p + 1) * sizeof *grad1);
  double *grad = malloc((p + 1) * sizeof *grad);
  double *g_ctx1 = calloc(n * c + 1, sizeof *g_ctx1);
  double *g_ctx2 = malloc((n * c + 1) * sizeof *g_ctx2);
  double *work = nf_layer_work_new(layer, n);
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    ck_assert_int_eq(nf_layer_apply(layer, theta, dir, n, z, ctx, out, NULL, NULL, work), NF_OK);
    fill(p, grad, 0.0);
    fill(n * c, g_ctx1, 0.0);
    ck_assert_int_eq(nf_layer_vjp(layer, theta, dir, n, z, ctx, out, g_out, zeros, g_in1,
                                  c ? g_ctx1 : NULL, grad, work), NF_OK);
    memcpy(grad1, grad, p * sizeof *grad1);
    fill(p, grad, 0.0);
    fill(n * d, g_in2, NAN);
    ck_assert_int_eq(nf_layer_vjp(layer, theta, dir, n, z, ctx, out, g_out, NULL, g_in2, NULL,
                                  grad, work), NF_OK);
    expect_same("g_in written with g_logdet NULL", n * d, g_in2, g_in1);
    expect_same("parameter gradient with g_logdet NULL", p, grad, grad1);
    fill(p, grad, 0.0);
    ck_assert_int_eq(nf_layer_vjp(layer, theta, dir, n, z, ctx, out, g_out, zeros, NULL, NULL,
                                  grad, work), NF_OK);
    expect_same("parameter gradient without g_in", p, grad, grad1);
    fill(n * c, g_ctx2, 1.0);
    fill(n * d, g_in2, NAN);
    ck_assert_int_eq(nf_layer_vjp(layer, theta, dir, n, z, ctx, out, g_out, zeros, g_in2,
                                  c ? g_ctx2 : NULL, NULL, work), NF_OK);
    expect_same("g_in with g_theta NULL", n * d, g_in2, g_in1);
    for (size_t j = 0; j < n * c; j++)
      ck_assert_msg(fabs(g_ctx2[j] - (1.0 + g_ctx1[j])) <= 1e-14,
                    "g_ctx[%zu] = %g: not added to 1 + %g", j, g_ctx2[j], g_ctx1[j]);
    ck_assert_int_eq(nf_layer_vjp(layer, theta, dir, n, z, ctx, out, g_out, zeros, g_in2, NULL,
                                  grad, work), NF_OK);
    expect_same("g_in written again", n * d, g_in2, g_in1);
    for (size_t j = 0; j < p; j++) grad1[j] *= 2;
    double err = th_rel_err(p, grad, grad1, 1e-300);
    printf("%s d=%zu %s: a second vjp doubles the parameter gradient to %.2e (<= %.0e)\n",
           layer->type->name, d, k ? "inverse" : "forward", err, TH_ACCUMULATE_TOL);
    ck_assert_msg(err <= TH_ACCUMULATE_TOL, "parameter gradient not accumulated: %g", err);
  }
  nf_layer_work_free(layer, n, work);
  free(out); free(g_out); free(zeros); free(g_in1); free(g_in2); free(grad1); free(grad);
  free(g_ctx1); free(g_ctx2);
}

/* The arguments of one call of nf_layer_apply or nf_layer_vjp. */
typedef struct th_call {
  const nf_layer *layer;
  const double *theta;
  nf_dir dir;
  size_t n;
  double *in, *ctx, *out, *logdet, *g_out, *g_logdet, *g_in, *g_ctx, *g_theta, *work;
} th_call;

/* nf_layer_apply with the arguments of a. */
static nf_status call_apply(th_call a)
{
  return nf_layer_apply(a.layer, a.theta, a.dir, a.n, a.in, a.ctx, a.out, a.logdet, NULL, a.work);
}

/* nf_layer_vjp with the arguments of a. */
static nf_status call_vjp(th_call a)
{
  return nf_layer_vjp(a.layer, a.theta, a.dir, a.n, a.in, a.ctx, a.out, a.g_out, a.g_logdet,
                      a.g_in, a.g_ctx, a.g_theta, a.work);
}

/* Asserts st == want, with a message containing fn and detail (each unless NULL). */
static void expect_status(const char *what, nf_status st, nf_status want, const char *fn,
                          const char *detail)
{
  ck_assert_msg(st == want, "%s: got %s, want %s (%s)", what, nf_status_str(st),
                nf_status_str(want), nf_errmsg());
  const char *says[2] = {fn, detail};
  for (int k = 0; k < 2; k++)
    ck_assert_msg(!says[k] || strstr(nf_errmsg(), says[k]) != NULL,
                  "%s: message '%s' does not say '%s'", what, nf_errmsg(), says[k]);
}

/* Both entry points refuse the call a with status want, naming themselves and saying detail. */
static void expect_refused(const char *what, th_call a, nf_status want, const char *detail)
{
  expect_status(what, call_apply(a), want, "nf_layer_apply", detail);
  expect_status(what, call_vjp(a), want, "nf_layer_vjp", detail);
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
  expect_refused(what, c, NF_ENONFINITE, detail);
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
#define TH_G_THETA 0.125

/* Good arguments for calls on 2 rows (theta: the caller's), outputs holding the sentinels. */
static th_call fixture_new(const nf_layer *layer, const double *theta)
{
  enum { N = 2 };
  size_t d = layer->dim, c = layer->ctx_dim, p = layer->n_params;
  th_call g = {layer, theta, NF_FORWARD, N, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL};
  g.in = malloc(N * d * sizeof(double));
  g.ctx = c ? malloc(N * c * sizeof(double)) : NULL;
  g.out = malloc(N * d * sizeof(double));
  g.logdet = malloc(N * sizeof(double));
  g.g_out = malloc(N * d * sizeof(double));
  g.g_logdet = malloc(N * sizeof(double));
  g.g_in = malloc(N * d * sizeof(double));
  g.g_ctx = c ? malloc(N * c * sizeof(double)) : NULL;
  g.g_theta = malloc((p + 1) * sizeof(double));
  g.work = nf_layer_work_new(layer, N);
  for (size_t k = 0; k < N * d; k++) {
    g.in[k] = 0.25 * (double)(k % 5) - 0.5;
    g.g_out[k] = 1.0;
  }
  for (size_t k = 0; k < N * c; k++) g.ctx[k] = 0.5 - 0.125 * (double)(k % 7);
  for (size_t i = 0; i < N; i++) g.g_logdet[i] = 0.5 - (double)i;
  fill(N * d, g.out, TH_OUT);
  fill(N * d, g.g_in, TH_G_IN);
  fill(N * c, g.g_ctx, TH_G_CTX);
  fill(p, g.g_theta, TH_G_THETA);
  fill(N, g.logdet, TH_LOGDET);
  return g;
}

/* Asserts that no refused call wrote an output, a cotangent or the parameter gradient. */
static void fixture_expect_untouched(const th_call *g)
{
  size_t n = g->n, d = g->layer->dim, c = g->layer->ctx_dim;
  expect_all("out", n * d, g->out, TH_OUT);
  expect_all("logdet", n, g->logdet, TH_LOGDET);
  expect_all("g_in", n * d, g->g_in, TH_G_IN);
  expect_all("g_ctx", n * c, g->g_ctx, TH_G_CTX);
  expect_all("g_theta", g->layer->n_params, g->g_theta, TH_G_THETA);
}

/* The good calls themselves succeed in both directions (so each refusal was the bad argument's). */
static void fixture_expect_good(th_call *g)
{
  for (int k = 0; k < 2; k++) {
    g->dir = k ? NF_INVERSE : NF_FORWARD;
    ck_assert_msg(call_apply(*g) == NF_OK, "good apply failed: %s", nf_errmsg());
    ck_assert_msg(call_vjp(*g) == NF_OK, "good vjp failed: %s", nf_errmsg());
  }
}

/* Frees the fixture's arrays and workspace. */
static void fixture_free(th_call *g)
{
  nf_layer_work_free(g->layer, g->n, g->work);
  free(g->in); free(g->ctx); free(g->out); free(g->logdet); free(g->g_out);
  free(g->g_logdet); free(g->g_in); free(g->g_ctx); free(g->g_theta);
}

void th_check_bad_calls(const nf_layer *layer, const double *theta)
{
  ck_assert_msg(layer != NULL, "th_check_bad_calls needs a layer: %s", nf_errmsg());
  size_t d = layer->dim, c = layer->ctx_dim;
  th_call f = fixture_new(layer, theta);
  size_t n = f.n;
  for (int k = 0; k < 2; k++) {
    th_call a = f, b;
    a.dir = k ? NF_INVERSE : NF_FORWARD;
    b = a; b.layer = NULL; expect_refused("NULL layer", b, NF_EINVAL, "layer is NULL");
    if (layer->n_params) {
      b = a; b.theta = NULL; expect_refused("NULL theta", b, NF_EINVAL, "theta is NULL");
    }
    b = a; b.dir = (nf_dir)5; expect_refused("direction 5", b, NF_EINVAL, "direction 5");
    b = a; b.n = 0; expect_refused("n = 0", b, NF_EINVAL, "n is 0");
    b = a; b.in = NULL; expect_refused("NULL input", b, NF_EINVAL, "input array is NULL");
    if (c) { b = a; b.ctx = NULL; expect_refused("NULL context", b, NF_EINVAL, "context"); }
    if (nf_layer_work_size(layer, n)) {
      b = a; b.work = NULL; expect_refused("NULL workspace", b, NF_EINVAL, "workspace");
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
  fixture_expect_good(&f);
  fixture_free(&f);
}

void th_check_param_refused(nf_flow *flow, size_t k, double bad, nf_status want)
{
  size_t p = nf_flow_n_params(flow), nb = nf_flow_base_n_params(flow), K = nf_flow_n_layers(flow);
  ck_assert_msg(k < p, "parameter %zu of %zu", k, p);
  double *theta = malloc(p * sizeof *theta), *keep = malloc(p * sizeof *keep);
  memcpy(keep, nf_flow_params(flow), p * sizeof *keep);
  memcpy(theta, keep, p * sizeof *theta);
  theta[k] = bad;
  size_t L = K, j = k; /* L = K: the base's slice */
  for (size_t l = 0; k >= nb && l < K; l++)
    if (k >= nf_flow_param_offset(flow, l) && k < nf_flow_param_offset(flow, l + 1)) {
      L = l;
      j = k - nf_flow_param_offset(flow, l);
    }
  char what[96], detail[48];
  snprintf(detail, sizeof detail, "parameter %zu ", j);
  snprintf(what, sizeof what, "theta[%zu] = %g (%s %zu)", k, bad, L < K ? "layer" : "base", L);
  expect_status(what, nf_flow_check_params(flow, theta), want, NULL, detail);
  expect_status(what, nf_flow_set_params(flow, theta), want, NULL, detail);
  ck_assert_msg(memcmp(nf_flow_params(flow), keep, p * sizeof *keep) == 0,
                "%s: the refused theta was written", what);
  if (L < K)
    expect_status(what, nf_layer_check_params(nf_flow_layer(flow, L),
                                              theta + nf_flow_param_offset(flow, L)),
                  want, NULL, detail);
  size_t c = nf_flow_ctx_dim(flow);
  double *x = calloc(2 * nf_flow_dim(flow), sizeof *x), *ctx = c ? calloc(2 * c, sizeof *ctx) : NULL;
  double logp[2];
  ck_assert_msg(nf_flow_log_prob(flow, 2, x, ctx, logp) == NF_OK, "%s: flow broken: %s", what,
                nf_errmsg());
  ck_assert(isfinite(logp[0]) && isfinite(logp[1]));
  ck_assert_int_eq(nf_flow_check_params(flow, nf_flow_params(flow)), NF_OK);
  free(x);
  free(ctx);
  free(theta);
  free(keep);
}

/* The width of context th_check_conditional and th_check_conditional_flow use. */
#define TH_CTX 2

/* Sets n_params(flow) parameters ~ N(0, scale^2) from seed through nf_flow_set_params. */
static void randomize_flow(nf_flow *flow, uint64_t seed, double scale)
{
  size_t p = nf_flow_n_params(flow);
  double *theta = th_random_points(p, 1, seed, scale);
  ck_assert_msg(nf_flow_set_params(flow, theta) == NF_OK, "set_params: %s", nf_errmsg());
  free(theta);
}

void th_check_conditional_flow(nf_flow *cond, nf_flow *plain)
{
  enum { N = 6 };
  ck_assert_ptr_nonnull(cond);
  size_t d = nf_flow_dim(cond), c = nf_flow_ctx_dim(cond), p = nf_flow_n_params(cond);
  ck_assert_uint_eq(c, TH_CTX);
  randomize_flow(cond, 77, 0.3);
  double *x = th_random_points(N, d, 78, 1.0), *ctx = th_random_points(N, c, 79, 1.0);
  double *ctx2 = th_random_points(N, c, 80, 1.0), logp[N], logp2[N], nll;
  ck_assert_msg(nf_flow_log_prob(cond, N, x, ctx, logp) == NF_OK, "log_prob: %s", nf_errmsg());
  ck_assert_msg(nf_flow_log_prob(cond, N, x, ctx2, logp2) == NF_OK, "log_prob: %s", nf_errmsg());
  for (size_t i = 0; i < N; i++) ck_assert(isfinite(logp[i]) && isfinite(logp2[i]));
  if (plain) {
    ck_assert_uint_eq(nf_flow_n_params(plain), p);
    ck_assert_int_eq(nf_flow_set_params(plain, nf_flow_params(cond)), NF_OK);
    double logp0[N];
    ck_assert_int_eq(nf_flow_log_prob(plain, N, x, NULL, logp0), NF_OK);
    ck_assert_msg(memcmp(logp, logp0, sizeof logp) == 0 && memcmp(logp2, logp0, sizeof logp) == 0,
                  "unconditional layers in a conditional flow: log p %.17g, unconditional %.17g",
                  logp[0], logp0[0]);
  } else {
    ck_assert_msg(th_max_abs_diff(N, logp, logp2) > 1e-8, "log p does not depend on ctx");
  }
  printf("%s ... in a conditional flow (c=%zu): log p %s ctx (max change %.2e)\n",
         nf_layer_name(nf_flow_layer(cond, 0)), c, plain ? "ignores" : "depends on",
         th_max_abs_diff(N, logp, logp2));
  nf_rng rng;
  nf_rng_seed(&rng, 81);
  double xs[N * 8], lps[N];
  ck_assert_msg(d <= 8, "th_check_conditional_flow takes d <= 8");
  ck_assert_msg(nf_flow_sample(cond, &rng, N, ctx, xs, lps) == NF_OK, "sample: %s", nf_errmsg());
  for (size_t i = 0; i < N; i++) ck_assert(isfinite(lps[i]));
  ck_assert_msg(nf_flow_nll_grad(cond, N, x, ctx, &nll) == NF_OK, "nll_grad: %s", nf_errmsg());
  ck_assert(isfinite(nll));
  for (size_t k = 0; k < p; k++) ck_assert(isfinite(nf_flow_grad(cond)[k]));
  free(x); free(ctx); free(ctx2);
}

nf_flow *th_flow_of(th_make_fn make, size_t dim, size_t ctx_dim, size_t layers, uint64_t seed,
                    double scale)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_flow *flow = nf_flow_new(dim, ctx_dim, NF_BASE_STD_NORMAL);
  ck_assert_msg(flow != NULL, "nf_flow_new: %s", nf_errmsg());
  for (size_t k = 0; k < layers; k++)
    ck_assert_msg(nf_flow_push(flow, make(dim, ctx_dim, &rng)) == NF_OK, "push: %s", nf_errmsg());
  if (scale > 0) randomize_flow(flow, seed + 1, scale);
  return flow;
}

void th_check_conditional(th_make_fn make)
{
  enum { D = 3 };
  nf_rng rng;
  nf_flow *cond = th_flow_of(make, D, TH_CTX, 2, 76, 0.0);
  int conditional = nf_layer_ctx_dim(nf_flow_layer(cond, 0)) > 0;
  nf_flow *plain = conditional ? NULL : th_flow_of(make, D, 0, 2, 76, 0.0);
  th_check_conditional_flow(cond, plain);
  nf_rng_seed(&rng, 75);
  expect_status("a layer of dimension d + 1", nf_flow_push(cond, make(D + 1, TH_CTX, &rng)),
                NF_EDIM, "nf_flow_push", NULL);
  if (conditional)
    expect_status("a layer of context width c + 1",
                  nf_flow_push(cond, make(D, TH_CTX + 1, &rng)), NF_EDIM, "nf_flow_push", NULL);
  ck_assert_uint_eq(nf_flow_n_layers(cond), 2);
  nf_flow_free(cond);
  nf_flow_free(plain);
}

void th_check_family_flows(th_make_fn make, double scale)
{
  enum { D = 3, N = 40 };
  th_check_conditional(make);
  nf_rng rng;
  nf_rng_seed(&rng, 92);
  nf_layer *probe = make(D, TH_CTX, &rng);
  size_t c = nf_layer_ctx_dim(probe);
  nf_layer_free(probe);
  nf_flow *flow = th_flow_of(make, D, c, 3, 93, scale);
  double *x = th_random_points(N, D, 94, 1.0), *ctx = c ? th_random_points(N, c, 95, 1.0) : NULL;
  th_check_threads(flow, N, x, ctx);
  nf_flow_free(flow);
  free(x);
  free(ctx);
}

/* One thread's share of th_check_threads: its rows, its workspace, its results. */
typedef struct th_worker {
  const nf_flow *flow;
  size_t n;
  const double *x, *ctx;
  double *logp, *grad, nll, penalty; /* of the last repetition */
  const double *logp_ref, *grad_ref;
  double nll_ref;
  int failures;                      /* repetitions that differed from the reference */
  nf_status status;
} th_worker;

#define TH_THREAD_SEED 0x7eadULL
#define TH_THREAD_REPS 8

/* log_prob_ws and nll_grad_ws on the worker's rows with a new workspace. */
static nf_status worker_eval(th_worker *w)
{
  nf_flow_ws *ws = nf_flow_ws_new(w->flow, w->n);
  if (!ws) return NF_ENOMEM;
  nf_status st = nf_flow_log_prob_ws(w->flow, ws, TH_THREAD_SEED, w->n, w->x, w->ctx, w->logp);
  if (!st)
    st = nf_flow_nll_grad_ws(w->flow, ws, TH_THREAD_SEED, w->n, w->x, w->ctx, &w->nll, w->grad,
                             &w->penalty);
  nf_flow_ws_free(ws);
  return st;
}

static void *worker_run(void *arg)
{
  th_worker *w = arg;
  size_t p = nf_flow_n_params(w->flow);
  for (int r = 0; r < TH_THREAD_REPS && !w->status; r++) {
    w->status = worker_eval(w);
    if (!w->status && (memcmp(w->logp, w->logp_ref, w->n * sizeof *w->logp) != 0 ||
                       memcmp(w->grad, w->grad_ref, p * sizeof *w->grad) != 0 ||
                       memcmp(&w->nll, &w->nll_ref, sizeof w->nll) != 0))
      w->failures++;
  }
  return NULL;
}

void th_check_threads(const nf_flow *flow, size_t n, const double *x, const double *ctx)
{
  ck_assert_msg(flow && n >= 2, "th_check_threads needs a flow and 2 rows at least");
  size_t d = nf_flow_dim(flow), c = nf_flow_ctx_dim(flow), p = nf_flow_n_params(flow);
  th_worker w[2];
  double *ref[2][2];
  for (int t = 0; t < 2; t++) {
    size_t i0 = t ? n / 2 : 0, m = t ? n - n / 2 : n / 2;
    w[t] = (th_worker){flow, m, x + i0 * d, c ? ctx + i0 * c : NULL, malloc(m * sizeof(double)),
                       malloc((p + 1) * sizeof(double)), 0, 0, NULL, NULL, 0, 0, NF_OK};
    nf_status st = worker_eval(&w[t]); /* alone: the reference */
    ck_assert_msg(st == NF_OK, "thread %d alone: %s", t, nf_errmsg());
    ref[t][0] = malloc(m * sizeof(double));
    ref[t][1] = malloc((p + 1) * sizeof(double));
    memcpy(ref[t][0], w[t].logp, m * sizeof(double));
    memcpy(ref[t][1], w[t].grad, p * sizeof(double));
    w[t].logp_ref = ref[t][0];
    w[t].grad_ref = ref[t][1];
    w[t].nll_ref = w[t].nll;
  }
  pthread_t tid[2];
  for (int t = 0; t < 2; t++)
    ck_assert_int_eq(pthread_create(&tid[t], NULL, worker_run, &w[t]), 0);
  for (int t = 0; t < 2; t++) ck_assert_int_eq(pthread_join(tid[t], NULL), 0);
  for (int t = 0; t < 2; t++) {
    ck_assert_msg(w[t].status == NF_OK, "thread %d: %s", t, nf_status_str(w[t].status));
    ck_assert_msg(w[t].failures == 0, "thread %d: %d of %d concurrent repetitions differ from "
                  "the call made alone", t, w[t].failures, TH_THREAD_REPS);
    free(w[t].logp); free(w[t].grad); free(ref[t][0]); free(ref[t][1]);
  }
  printf("%s...: 2 threads x %d repetitions of log_prob_ws + nll_grad_ws on %zu rows: "
         "bit for bit as alone\n", nf_layer_name(nf_flow_layer(flow, 0)), TH_THREAD_REPS, n);
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

nf_flow *th_save_load(const nf_flow *flow, size_t n, const double *x)
{
  char dir[] = "/tmp/nf_test_save_XXXXXX", path[64];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/flow.nflow", dir);
  nf_flow *copy = NULL;
  ck_assert_msg(nf_flow_save(flow, path, NULL) == NF_OK, "save: %s", nf_errmsg());
  ck_assert_msg(nf_flow_load(path, NULL, &copy, NULL) == NF_OK, "load: %s", nf_errmsg());
  remove(path);
  rmdir(dir);
  size_t np = nf_flow_n_params(flow);
  ck_assert_uint_eq(nf_flow_n_layers(copy), nf_flow_n_layers(flow));
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++)
    ck_assert_str_eq(nf_layer_name(nf_flow_layer(copy, k)), nf_layer_name(nf_flow_layer(flow, k)));
  ck_assert_uint_eq(nf_flow_n_params(copy), np);
  ck_assert_msg(memcmp(nf_flow_params(copy), nf_flow_params(flow), np * sizeof(double)) == 0,
                "theta differs after save/load");
  nf_flow_ws *wa = nf_flow_ws_new(flow, n), *wb = nf_flow_ws_new(copy, n);
  double *la = malloc(n * sizeof *la), *lb = malloc(n * sizeof *lb);
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, wa, 0, n, x, NULL, la), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob_ws(copy, wb, 0, n, x, NULL, lb), NF_OK);
  ck_assert_msg(memcmp(la, lb, n * sizeof *la) == 0, "log p differs after save/load");
  printf("save/load: %zu layers, %zu parameters, log p of %zu rows bit for bit\n",
         nf_flow_n_layers(flow), np, n);
  free(la);
  free(lb);
  nf_flow_ws_free(wa);
  nf_flow_ws_free(wb);
  return copy;
}

const th_cnf_mode th_cnf_modes[TH_N_CNF_MODES] = {
  {NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE, "backsolve/dopri5"},
  {NF_ODE_ADAMS, NF_GRAD_BACKSOLVE, "backsolve/adams"},
  {NF_ODE_ADAMS, NF_GRAD_CHECKPOINT, "checkpoint/adams"},
  {NF_ODE_BDF, NF_GRAD_CHECKPOINT, "checkpoint/bdf"},
  {NF_ODE_DOPRI5, NF_GRAD_DISCRETE, "discrete/dopri5"},
  {NF_ODE_RK4, NF_GRAD_DISCRETE, "discrete/rk4"},
};

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

void th_write_file(const char *path, const void *bytes, size_t len)
{
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

unsigned char *th_read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  unsigned char *b = malloc((size_t)n + 1);
  ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return b;
}

void th_check_same_maps(const nf_layer *a, const nf_layer *b, const double *theta, size_t n,
                        uint64_t seed)
{
  size_t d = nf_layer_dim(a), c = nf_layer_ctx_dim(a);
  ck_assert_uint_eq(nf_layer_dim(b), d);
  ck_assert_uint_eq(nf_layer_ctx_dim(b), c);
  ck_assert_uint_eq(nf_layer_n_params(b), nf_layer_n_params(a));
  double *z = th_random_points(n, d, seed, 1.0);
  double *ctx = c ? th_random_points(n, c, seed + 1, 1.0) : NULL;
  double *xa = malloc(n * d * sizeof *xa), *xb = malloc(n * d * sizeof *xb);
  double *la = calloc(n, sizeof *la), *lb = calloc(n, sizeof *lb);
  double *wa = nf_layer_work_new(a, n), *wb = nf_layer_work_new(b, n);
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(a, theta, (nf_dir)dir, n, z, ctx, xa, la, NULL, wa), NF_OK);
    ck_assert_int_eq(nf_layer_apply(b, theta, (nf_dir)dir, n, z, ctx, xb, lb, NULL, wb), NF_OK);
    ck_assert_mem_eq(xa, xb, n * d * sizeof *xa);
    ck_assert_mem_eq(la, lb, n * sizeof *la);
  }
  nf_layer_work_free(a, n, wa);
  nf_layer_work_free(b, n, wb);
  free(z); free(ctx); free(xa); free(xb); free(la); free(lb);
}
