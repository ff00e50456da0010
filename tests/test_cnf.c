/* tests/test_cnf.c — the continuous normalizing flow layer: inverse round trip
   (DOPRI5, Adams, BDF); linear dynamics f = A z against the matrix exponential
   and T tr(A); exact log-det against a finite-difference Jacobian of the
   solution map; Hutchinson's estimate unbiased; vjp against central
   differences for every adjoint mode (and the modes against each other), with
   Hutchinson probes, RNODE penalties and the learnable end time; one Euler
   step as a residual layer; a 2-D flow with one CNF layer (mass 1, nll
   gradient, counters); in flows: reproducible probes across chunks,
   workspaces and threads, one integrator per workspace, the conditional CNF,
   g_x against differences of log p, the RNODE penalty in nll_grad but not in
   log_prob_vjp; the layer interface's contracts and theta checks; bad input,
   bad options and solver failure; user fields; save -> JSON -> load. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "helpers.h"
#include "io/io_internal.h"   /* nf_config_new, _json, _from_json (linked -static) */
#include "nflow/layer_impl.h" /* the penalty, save and load ops */
#include "nflow/model.h"      /* nf_resolver */

#define ROUNDTRIP_TOL 1e-6   /* inverse(forward(z)) and log-det cancellation, rtol = atol = 1e-9 */
#define LINEAR_TOL 1e-8      /* z(T) = e^{AT} z0 and log-det T tr(A) */
#define LOGDET_TOL 1e-6      /* against log|det| of the FD Jacobian */
#define VJP_TOL 1e-5         /* vjp against central differences, norm-wise relative */
#define MODES_TOL 1e-6       /* adjoint modes against each other */
#define EULER_TOL 1e-14      /* one Euler step against the net itself */
#define PENALTY_TOL 1e-8     /* RNODE penalty against its closed form (relative) */
#define MASS_TOL 1e-3        /* 2-D density integrates to 1 */
#define N_SE 4.0             /* Hutchinson mean within this many standard errors */

#define FD_JAC_H 1e-5        /* step of the finite-difference Jacobian */
#define FD_VJP_H 1e-5        /* step of the finite-difference gradients */

static const size_t H8[] = {8, 8}, H16[] = {16, 16};

/* One adjoint configuration, and every one (tests/helpers.h). */
typedef th_cnf_mode mode;
#define grad_modes th_cnf_modes
#define N_MODES TH_N_CNF_MODES

/* "forward" or "inverse", for the reports. */
static const char *dir_name(nf_dir dir) { return dir == NF_FORWARD ? "forward" : "inverse"; }

/* CNF options: two hidden layers of the given widths (concatsquash, tanh), the
   method and gradient mode, rtol = atol = tol, end time T (learned if learn_T). */
static nf_cnf_opts cnf_opts(const size_t *hidden, mode m, double tol, double T, int learn_T,
                            nf_trace_kind trace)
{
  nf_cnf_opts o = nf_cnf_defaults();
  o.n_hidden = 2;
  o.hidden = hidden;
  o.end_time = T;
  o.train_end_time = learn_T;
  o.trace = trace;
  o.ode = nf_ode_defaults(m.method);
  o.ode.grad = m.grad;
  o.ode.rtol = o.ode.atol = tol;
  return o;
}

/* A CNF layer on R^d with context width c, net initialised from `seed`, and in
   *theta a copy of its initial parameters (caller frees); then, if scale > 0,
   every net parameter redrawn ~ N(0, scale^2) (theta_T kept). */
static nf_layer *new_cnf(size_t d, size_t c, const nf_cnf_opts *o, uint64_t seed, double scale,
                         double **theta)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_layer *layer = nf_cnf_new(d, c, o, &rng);
  ck_assert_msg(layer != NULL, "nf_cnf_new: %s", nf_errmsg());
  size_t p = nf_layer_n_params(layer), n_net = p - (o->train_end_time ? 1 : 0);
  *theta = malloc((p ? p : 1) * sizeof **theta);
  memcpy(*theta, nf_layer_init_params(layer), p * sizeof **theta);
  if (scale > 0) th_randn(&rng, n_net, scale, *theta);
  return layer;
}

/* A copy of the layer's parameters (caller frees). */
static double *copy_theta(const nf_layer *layer, const double *theta)
{
  size_t p = nf_layer_n_params(layer);
  double *t = malloc((p ? p : 1) * sizeof *t);
  memcpy(t, theta, p * sizeof *t);
  return t;
}

/* Per-call options: noise seed 0 from row 0, penalty weight 1 (as the helpers). */
static const nf_apply_opts OPTS = {0, 0, 1.0, 0, NULL};

/* apply with a fresh workspace into out and a zeroed logdet; returns the penalty. */
static double apply_new(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                        const double *in, const double *ctx, double *out, double *logdet)
{
  double *work = nf_layer_work_new(layer, n);
  memset(logdet, 0, n * sizeof *logdet);
  nf_status st = nf_layer_apply(layer, theta, dir, n, in, ctx, out, logdet, &OPTS, work);
  ck_assert_msg(st == NF_OK, "apply: %s: %s", nf_status_str(st), nf_errmsg());
  double penalty = layer->type->penalty(layer, n, work);
  nf_layer_work_free(layer, n, work);
  return penalty;
}

/* apply then vjp with a fresh workspace: writes g_in, g_ctx (zeroed first, may be
   NULL) and the parameter gradient g_theta (zeroed first). */
static void apply_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                      const double *in, const double *ctx, const double *g_out,
                      const double *g_logdet, double *g_in, double *g_ctx, double *g_theta)
{
  size_t d = nf_layer_dim(layer);
  double *out = malloc(n * d * sizeof *out), *logdet = calloc(n, sizeof *logdet);
  double *work = nf_layer_work_new(layer, n);
  memset(g_theta, 0, nf_layer_n_params(layer) * sizeof *g_theta);
  if (g_ctx) memset(g_ctx, 0, n * nf_layer_ctx_dim(layer) * sizeof *g_ctx);
  nf_status st = nf_layer_apply(layer, theta, dir, n, in, ctx, out, logdet, &OPTS, work);
  ck_assert_msg(st == NF_OK, "apply: %s", nf_errmsg());
  st = nf_layer_vjp(layer, theta, dir, n, in, ctx, out, g_out, g_logdet, g_in, g_ctx, g_theta,
                    work);
  ck_assert_msg(st == NF_OK, "vjp: %s", nf_errmsg());
  nf_layer_work_free(layer, n, work);
  free(out);
  free(logdet);
}

/* ---- linear dynamics f = A z: an odenet with no hidden layer, kind concat ---- */

/* A CNF whose dynamics are f(t, z) = A z (d x d): the single concat layer
   y = W z + w_t t + b with W = A, w_t = 0, b = 0; its parameters in *theta. */
static nf_layer *linear_cnf(size_t d, const double *A, const nf_cnf_opts *base, double **theta)
{
  nf_cnf_opts o = *base;
  o.n_hidden = 0;
  o.hidden = NULL;
  o.kind = NF_ODENET_CONCAT;
  nf_layer *layer = new_cnf(d, 0, &o, 99, 0.0, theta);
  ck_assert_uint_eq(nf_layer_n_params(layer), d * d + 2 * d + (o.train_end_time ? 1 : 0));
  memcpy(*theta, A, d * d * sizeof *A);
  memset(*theta + d * d, 0, 2 * d * sizeof *A);
  return layer;
}

/* C = A B for d x d matrices. */
static void matmul(size_t d, const double *A, const double *B, double *C)
{
  for (size_t i = 0; i < d; i++)
    for (size_t j = 0; j < d; j++) {
      double s = 0;
      for (size_t k = 0; k < d; k++) s += A[i * d + k] * B[k * d + j];
      C[i * d + j] = s;
    }
}

static const double ROT_A = 0.4, ROT_B = 1.3;

/* The scaled rotation A = [[a, -b], [b, a]] and
   e^{As} = e^{as} [[cos bs, -sin bs], [sin bs, cos bs]] (either may be NULL). */
static void rotation(double s, double *A, double *E)
{
  double a = ROT_A, b = ROT_B, g = exp(a * s), cs = cos(b * s), sn = sin(b * s);
  if (A) { A[0] = a; A[1] = -b; A[2] = b; A[3] = a; }
  if (E) { E[0] = g * cs; E[1] = -g * sn; E[2] = g * sn; E[3] = g * cs; }
}

/* A = P D P^-1 on R^3 with P unit upper triangular (P^-1 in closed form), and
   e^{As} = P e^{Ds} P^-1; returns tr(A) = sum D. */
static double diagonalisable(double s, double *A, double *E)
{
  const double p = 0.7, q = -0.4, r = 0.9, D[3] = {-0.5, 0.2, 0.8};
  const double P[9] = {1, p, q, 0, 1, r, 0, 0, 1};
  const double Pinv[9] = {1, -p, p * r - q, 0, 1, -r, 0, 0, 1};
  double M[9], X[9];
  for (int k = 0; k < 2; k++) {
    double *out = k == 0 ? A : E;
    if (!out) continue;
    memset(M, 0, sizeof M);
    for (int i = 0; i < 3; i++) M[i * 4] = k == 0 ? D[i] : exp(D[i] * s);
    matmul(3, P, M, X);
    matmul(3, X, Pinv, out);
  }
  return D[0] + D[1] + D[2];
}

/* x_i = E z_i for n rows of width d. */
static void apply_matrix(size_t n, size_t d, const double *E, const double *z, double *x)
{
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) {
      double s = 0;
      for (size_t k = 0; k < d; k++) s += E[j * d + k] * z[i * d + k];
      x[i * d + j] = s;
    }
}

/* ---- 1. round trip ---- */

static const mode solve_modes[] = {
  {NF_ODE_DOPRI5, NF_GRAD_NONE, "dopri5"},
  {NF_ODE_ADAMS, NF_GRAD_NONE, "adams"},
  {NF_ODE_BDF, NF_GRAD_NONE, "bdf"},
};

START_TEST(roundtrip)
{
  const mode m = solve_modes[_i];
  for (size_t c = 0; c <= 2; c += 2) {
    size_t d = c ? 3 : 2, n = 5;
    nf_cnf_opts o = cnf_opts(H16, m, 1e-9, 0.8, 1, NF_TRACE_EXACT);
    double *theta;
    nf_layer *layer = new_cnf(d, c, &o, 11 + c, 0.5, &theta);
    double *z = th_random_points(n, d, 12, 1.0);
    double *ctx = c ? th_random_points(n, c, 13, 1.0) : NULL;
    double *x = malloc(n * d * sizeof *x), ld[5];
    apply_new(layer, theta, NF_FORWARD, n, z, ctx, x, ld);
    double moved = th_max_abs_diff(n * d, x, z), cancel;
    double err = th_roundtrip_error(layer, theta, n, z, ctx, &cancel);
    fprintf(stderr, "round trip %s d %zu ctx %zu: |z - inv(fwd(z))| %.3g, log-det cancel %.3g "
            "(tol %g); max |x - z| %.3g\n", m.name, d, c, err, cancel, ROUNDTRIP_TOL, moved);
    ck_assert_double_gt(moved, 0.1); /* the map is far from the identity */
    ck_assert_double_lt(err, ROUNDTRIP_TOL);
    ck_assert_double_lt(cancel, ROUNDTRIP_TOL);
    free(z); free(ctx); free(x); free(theta);
    nf_layer_free(layer);
  }
}
END_TEST

/* ---- 2. linear dynamics ---- */

static const mode linear_modes[] = {
  {NF_ODE_DOPRI5, NF_GRAD_NONE, "dopri5"},
  {NF_ODE_ADAMS, NF_GRAD_NONE, "adams"},
  {NF_ODE_BDF, NF_GRAD_NONE, "bdf"},
  {NF_ODE_RK4, NF_GRAD_NONE, "rk4 (1000 steps)"},
};

START_TEST(linear_dynamics_matrix_exponential)
{
  const mode m = linear_modes[_i];
  const double T = 0.8;
  for (size_t d = 2; d <= 3; d++) {
    size_t n = 4;
    double A[9], E[9], trA;
    nf_cnf_opts o = cnf_opts(H8, m, 1e-12, T, 0, NF_TRACE_EXACT);
    o.ode.fixed_steps = 1000;
    if (d == 2) { rotation(0, A, NULL); trA = 2 * ROT_A; }
    else trA = diagonalisable(0, A, NULL);
    double *theta;
    nf_layer *layer = linear_cnf(d, A, &o, &theta);
    double *z = th_random_points(n, d, 21, 1.0), *x = malloc(n * d * sizeof *x);
    double *ref = malloc(n * d * sizeof *ref), ld[4], worst_x = 0, worst_ld = 0;
    for (int k = 0; k < 2; k++) {
      nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
      double s = dir == NF_FORWARD ? T : -T; /* inverse: e^{-AT}, log-det -T tr(A) */
      if (d == 2) rotation(s, NULL, E);
      else diagonalisable(s, NULL, E);
      apply_new(layer, theta, dir, n, z, NULL, x, ld);
      apply_matrix(n, d, E, z, ref);
      worst_x = fmax(worst_x, th_max_abs_diff(n * d, x, ref));
      for (size_t i = 0; i < n; i++) worst_ld = fmax(worst_ld, fabs(ld[i] - s * trA));
    }
    fprintf(stderr, "linear f = A z, %s, d %zu: |z(T) - e^{AT} z0| %.3g, |logdet - T tr A| %.3g "
            "(tol %g, both directions)\n", m.name, d, worst_x, worst_ld, LINEAR_TOL);
    ck_assert_double_lt(worst_x, LINEAR_TOL);
    ck_assert_double_lt(worst_ld, LINEAR_TOL);
    free(z); free(x); free(ref); free(theta);
    nf_layer_free(layer);
  }
}
END_TEST

/* ---- 3. exact log-det against a brute-force Jacobian ---- */

START_TEST(logdet_matches_fd_jacobian)
{
  const mode m = solve_modes[_i];
  size_t d = 3, c = 2, n = 4;
  nf_cnf_opts o = cnf_opts(H16, m, 1e-10, 0.8, 1, NF_TRACE_EXACT);
  double *theta;
  nf_layer *layer = new_cnf(d, c, &o, 31, 0.5, &theta);
  double *z = th_random_points(n, d, 32, 1.0), *ctx = th_random_points(n, c, 33, 1.0);
  double ef = th_logdet_error(layer, theta, NF_FORWARD, n, z, ctx, FD_JAC_H);
  double ei = th_logdet_error(layer, theta, NF_INVERSE, n, z, ctx, FD_JAC_H);
  fprintf(stderr, "log-det vs FD Jacobian, %s d 3 ctx 2: forward %.3g, inverse %.3g (tol %g)\n",
          m.name, ef, ei, LOGDET_TOL);
  ck_assert_double_lt(ef, LOGDET_TOL);
  ck_assert_double_lt(ei, LOGDET_TOL);
  free(z); free(ctx); free(theta);
  nf_layer_free(layer);
}
END_TEST

/* ---- 4. Hutchinson's estimator ---- */

START_TEST(hutchinson_is_unbiased)
{
  static const nf_trace_kind traces[] = {NF_TRACE_RADEMACHER, NF_TRACE_GAUSSIAN};
  const mode m = {NF_ODE_DOPRI5, NF_GRAD_NONE, "dopri5"};
  size_t d = 2, N = 10000;
  double z0[2] = {0.3, -0.7}, x_exact[2], ld_exact;
  nf_cnf_opts o = cnf_opts(H16, m, 1e-10, 0.8, 1, NF_TRACE_EXACT);
  double *theta;
  nf_layer *exact = new_cnf(d, 0, &o, 41, 0.5, &theta);
  apply_new(exact, theta, NF_FORWARD, 1, z0, NULL, x_exact, &ld_exact);
  double *z = malloc(N * d * sizeof *z), *x = malloc(N * d * sizeof *x);
  double *ld = malloc(N * sizeof *ld);
  for (size_t i = 0; i < N; i++) memcpy(z + i * d, z0, sizeof z0);
  for (size_t k = 0; k < 2; k++) {
    o = cnf_opts(H16, m, 1e-8, 0.8, 1, traces[k]);
    double *unused;
    nf_layer *hutch = new_cnf(d, 0, &o, 41, 0.5, &unused); /* same parameters: theta */
    free(unused);
    apply_new(hutch, theta, NF_FORWARD, N, z, NULL, x, ld); /* N rows, N independent probes */
    double mean = 0, var = 0, x_err = 0;
    for (size_t i = 0; i < N; i++) mean += ld[i] / (double)N;
    for (size_t i = 0; i < N; i++) var += (ld[i] - mean) * (ld[i] - mean) / (double)(N - 1);
    for (size_t i = 0; i < N; i++) x_err = fmax(x_err, th_max_abs_diff(d, x + i * d, x_exact));
    double se = sqrt(var / (double)N), dev = fabs(mean - ld_exact) / se;
    fprintf(stderr, "Hutchinson %s, %zu probes: mean %.6f, exact %.6f, sd %.4f, "
            "%.2f standard errors (tol %g); |x - x_exact| %.3g\n",
            k ? "gaussian" : "rademacher", N, mean, ld_exact, sqrt(var), dev, N_SE, x_err);
    ck_assert_double_gt(sqrt(var), 1e-2); /* the probes do make a difference */
    ck_assert_double_lt(dev, N_SE);
    ck_assert_double_lt(x_err, 1e-6);     /* the state does not depend on the probe */
    nf_layer_free(hutch);
  }
  free(z); free(x); free(ld); free(theta);
  nf_layer_free(exact);
}
END_TEST

/* Row i's probe is a function of (probe_seed, the call's seed, row0 + i) only:
   reusing a workspace or taking a fresh one changes nothing, the same rows
   applied from a later row0 see the probes of those global rows, and another
   seed draws other probes (so th_vjp_check, which re-applies with one seed and
   row0, sees one fixed probe). RK4 with fixed steps, so that rows do not share
   step sizes: an adaptive method controls the error of the batch as one system,
   and a sub-batch then takes other steps (results agree to the tolerance only). */
START_TEST(hutchinson_probe_stream)
{
  const mode m = {NF_ODE_RK4, NF_GRAD_DISCRETE, "rk4"};
  size_t d = 2, n = 3;
  nf_cnf_opts o = cnf_opts(H8, m, 1e-8, 0.8, 1, NF_TRACE_RADEMACHER);
  o.ode.fixed_steps = 40;
  double *theta;
  nf_layer *layer = new_cnf(d, 0, &o, 42, 0.5, &theta);
  double *z = th_random_points(n, d, 43, 1.0), x[6], ld1[3], ld2[3], ld3[3], ld_fresh[3];
  double ld_seed[3], ld_tail[2];
  double *work = nf_layer_work_new(layer, n);
  nf_apply_opts other = {7, 0, 0.0, 0, NULL}, tail = {0, 1, 0.0, 0, NULL};
  memset(ld1, 0, sizeof ld1); memset(ld2, 0, sizeof ld2); memset(ld3, 0, sizeof ld3);
  memset(ld_seed, 0, sizeof ld_seed); memset(ld_tail, 0, sizeof ld_tail);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, n, z, NULL, x, ld1, &OPTS, work), NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, n, z, NULL, x, ld2, &OPTS, work), NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, n, z, NULL, x, ld_seed, &other, work),
                   NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, n - 1, z + d, NULL, x, ld_tail, &tail,
                                  work), NF_OK);
  nf_layer_work_free(layer, n, work);
  apply_new(layer, theta, NF_FORWARD, n, z, NULL, x, ld_fresh);
  apply_new(layer, theta, NF_FORWARD, n, z, NULL, x, ld3);
  ck_assert_double_eq(th_max_abs_diff(n, ld1, ld2), 0.0);
  ck_assert_double_eq(th_max_abs_diff(n, ld1, ld_fresh), 0.0);
  ck_assert_double_eq(th_max_abs_diff(n, ld3, ld_fresh), 0.0);
  ck_assert_double_eq(th_max_abs_diff(n - 1, ld_tail, ld1 + 1), 0.0);
  ck_assert_double_gt(th_max_abs_diff(n, ld1, ld_seed), 1e-3);
  free(z); free(theta);
  nf_layer_free(layer);
}
END_TEST

/* ---- 5. gradients ---- */

/* th_vjp_check in both directions; asserts every field below tol; returns the worst. */
static double check_vjp_both(const nf_layer *layer, const double *theta, size_t n,
                             const double *in, const double *ctx, const char *what, double tol)
{
  double worst = 0;
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    th_vjp_errors e = th_vjp_check(layer, theta, dir, n, in, ctx, 51 + k, FD_VJP_H);
    fprintf(stderr, "vjp vs FD, %s, %s: in %.3g, ctx %.3g, params (incl. theta_T) %.3g "
            "(tol %g)\n", what, dir_name(dir), e.in, e.ctx, e.params, tol);
    ck_assert_double_lt(e.in, tol);
    ck_assert_double_lt(e.ctx, tol);
    ck_assert_double_lt(e.params, tol);
    worst = fmax(worst, fmax(e.in, fmax(e.ctx, e.params)));
  }
  return worst;
}

/* Relative differences of the gradients (input, context, parameters) of two
   layers with the same parameters, one apply + vjp each, both directions. */
static double compare_modes(const nf_layer *a, const nf_layer *b, const double *theta, size_t n,
                            const double *in, const double *ctx)
{
  size_t d = nf_layer_dim(a), c = nf_layer_ctx_dim(a), p = nf_layer_n_params(a);
  double *g_out = th_random_points(n, d, 61, 1.0), *g_ld = th_random_points(n, 1, 62, 1.0);
  double *gi_a = malloc(n * d * sizeof *gi_a), *gi_b = malloc(n * d * sizeof *gi_b);
  double *gc_a = malloc(n * c * sizeof *gc_a), *gc_b = malloc(n * c * sizeof *gc_b);
  double *gp_a = malloc(p * sizeof *gp_a), *gp_b = malloc(p * sizeof *gp_b), worst = 0;
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    apply_vjp(a, theta, dir, n, in, ctx, g_out, g_ld, gi_a, gc_a, gp_a);
    apply_vjp(b, theta, dir, n, in, ctx, g_out, g_ld, gi_b, gc_b, gp_b);
    worst = fmax(worst, th_rel_err(n * d, gi_b, gi_a, 1e-8));
    worst = fmax(worst, th_rel_err(n * c, gc_b, gc_a, 1e-8));
    worst = fmax(worst, th_rel_err(p, gp_b, gp_a, 1e-8));
  }
  free(g_out); free(g_ld); free(gi_a); free(gi_b); free(gc_a); free(gc_b); free(gp_a);
  free(gp_b);
  return worst;
}

/* The gradient test's layer: d = 2, ctx 2, 8-8 net, learned T = 0.6; its
   parameters (the same for every mode and trace) in *theta. */
static nf_layer *grad_layer(mode m, nf_trace_kind trace, double kinetic, double jacobian,
                            double **theta)
{
  nf_cnf_opts o = cnf_opts(H8, m, 1e-10, 0.6, 1, trace);
  o.kinetic_weight = kinetic;
  o.jacobian_weight = jacobian;
  return new_cnf(2, 2, &o, 71, 0.5, theta);
}

START_TEST(vjp_matches_fd_every_mode)
{
  const mode m = grad_modes[_i];
  size_t n = 3;
  double *z = th_random_points(n, 2, 72, 1.0), *ctx = th_random_points(n, 2, 73, 1.0);
  double *theta, *theta_ref;
  nf_layer *layer = grad_layer(m, NF_TRACE_EXACT, 0, 0, &theta);
  check_vjp_both(layer, theta, n, z, ctx, m.name, VJP_TOL);
  nf_layer *ref = grad_layer(grad_modes[0], NF_TRACE_EXACT, 0, 0, &theta_ref);
  double agree = compare_modes(ref, layer, theta, n, z, ctx);
  fprintf(stderr, "gradients %s vs backsolve/dopri5: rel diff %.3g (tol %g)\n", m.name, agree,
          MODES_TOL);
  ck_assert_double_lt(agree, MODES_TOL);
  free(z); free(ctx); free(theta); free(theta_ref);
  nf_layer_free(layer);
  nf_layer_free(ref);
}
END_TEST

/* vjp of a (mode, trace, RNODE weights) layer against central differences, both
   directions, on 3 rows and contexts drawn from seed. */
static void check_grad_case(const mode m, nf_trace_kind trace, double kinetic, double jacobian,
                            uint64_t seed)
{
  size_t n = 3;
  double *z = th_random_points(n, 2, seed, 1.0), *ctx = th_random_points(n, 2, seed + 1, 1.0);
  double *theta;
  nf_layer *layer = grad_layer(m, trace, kinetic, jacobian, &theta);
  char what[96];
  snprintf(what, sizeof what, "%s, %s trace, RNODE kinetic %g jacobian %g", m.name,
           nf_cnf_trace_name(trace), kinetic, jacobian);
  check_vjp_both(layer, theta, n, z, ctx, what, VJP_TOL);
  free(z); free(ctx); free(theta);
  nf_layer_free(layer);
}

/* Hutchinson: every apply with the same seed and rows draws the same probes (see
   hutchinson_probe_stream), so central differences see the very map the vjp
   differentiates. */
START_TEST(vjp_hutchinson)
{
  static const size_t pick[] = {0, 3, 5};
  check_grad_case(grad_modes[pick[_i]], _i == 1 ? NF_TRACE_GAUSSIAN : NF_TRACE_RADEMACHER,
                  0, 0, 74);
}
END_TEST

START_TEST(hutchinson_modes_agree)
{
  size_t n = 3;
  double *z = th_random_points(n, 2, 76, 1.0), *ctx = th_random_points(n, 2, 77, 1.0);
  double worst = 0, *theta, *unused;
  nf_layer *ref = grad_layer(grad_modes[0], NF_TRACE_GAUSSIAN, 0.3, 0.2, &theta);
  for (size_t k = 1; k < N_MODES; k++) {
    nf_layer *layer = grad_layer(grad_modes[k], NF_TRACE_GAUSSIAN, 0.3, 0.2, &unused);
    free(unused);
    double agree = compare_modes(ref, layer, theta, n, z, ctx);
    fprintf(stderr, "gaussian probe + RNODE, gradients %s vs backsolve/dopri5: rel diff %.3g "
            "(tol %g)\n", grad_modes[k].name, agree, MODES_TOL);
    worst = fmax(worst, agree);
    nf_layer_free(layer);
  }
  ck_assert_double_lt(worst, MODES_TOL);
  free(z); free(ctx); free(theta);
  nf_layer_free(ref);
}
END_TEST

START_TEST(vjp_rnode_penalty)
{
  static const size_t pick[] = {0, 2, 5};
  check_grad_case(grad_modes[pick[_i / 2]], _i % 2 ? NF_TRACE_RADEMACHER : NF_TRACE_EXACT,
                  0.3, 0.2, 78);
}
END_TEST

/* Linear f = A z with A = [[a, -b], [b, a]]: |A y|^2 = (a^2 + b^2) |y|^2, so the kinetic
   term of row i is (a^2+b^2) |z_i|^2 (e^{2aT} - 1) / (2a) forward and
   (a^2+b^2) |x_i|^2 (1 - e^{-2aT}) / (2a) inverse, and the Jacobian term T |A|_F^2 =
   2 T (a^2 + b^2); with Rademacher probes v^T A v = tr A and |A v|^2 = |A|_F^2 exactly. */
START_TEST(rnode_penalty_linear)
{
  static const nf_trace_kind traces[] = {NF_TRACE_EXACT, NF_TRACE_RADEMACHER};
  const double T = 0.7, wk = 0.3, wj = 0.2, a = ROT_A, b = ROT_B, r2 = a * a + b * b;
  size_t n = 5, d = 2;
  double A[4], x[10], ld[5], worst = 0;
  rotation(0, A, NULL);
  double *z = th_random_points(n, d, 81, 1.0);
  for (size_t k = 0; k < 2; k++) {
    nf_cnf_opts o = cnf_opts(H8, grad_modes[0], 1e-12, T, 1, traces[k]);
    o.kinetic_weight = wk;
    o.jacobian_weight = wj;
    double *theta;
    nf_layer *layer = linear_cnf(d, A, &o, &theta);
    for (int q = 0; q < 2; q++) {
      nf_dir dir = q ? NF_INVERSE : NF_FORWARD;
      double growth = dir == NF_FORWARD ? expm1(2 * a * T) : -expm1(-2 * a * T), kin = 0;
      for (size_t i = 0; i < n; i++)
        kin += r2 * (z[2 * i] * z[2 * i] + z[2 * i + 1] * z[2 * i + 1]) * growth / (2 * a) / n;
      double expect = wk * kin + wj * 2 * T * r2;
      double got = apply_new(layer, theta, dir, n, z, NULL, x, ld), err = fabs(got - expect) / expect;
      double ld_err = 0;
      for (size_t i = 0; i < n; i++)
        ld_err = fmax(ld_err, fabs(ld[i] - (dir == NF_FORWARD ? 1 : -1) * 2 * a * T));
      fprintf(stderr, "RNODE penalty, linear f = A z, %s trace, %s: %.12f vs closed form %.12f, "
              "rel err %.3g (tol %g); log-det err %.3g\n",
              k ? "rademacher" : "exact", dir_name(dir), got, expect, err, PENALTY_TOL, ld_err);
      worst = fmax(worst, err);
      ck_assert_double_lt(ld_err, LINEAR_TOL);
    }
    free(theta);
    nf_layer_free(layer);
  }
  ck_assert_double_lt(worst, PENALTY_TOL);
  free(z);
}
END_TEST

/* ---- 6. one Euler step is a residual layer ---- */

START_TEST(one_euler_step_is_residual_layer)
{
  const mode m = {NF_ODE_EULER, NF_GRAD_DISCRETE, "euler"};
  const double T = 0.3;
  size_t d = 3, c = 2, n = 4;
  nf_cnf_opts o = cnf_opts(H16, m, 1e-6, T, 0, NF_TRACE_EXACT);
  o.ode.fixed_steps = 1;
  double *theta;
  nf_layer *layer = new_cnf(d, c, &o, 91, 0.5, &theta);
  nf_odenet *net = nf_odenet_new(d, c, 2, H16, o.kind, o.act);
  ck_assert_ptr_nonnull(net);
  ck_assert_uint_eq(nf_odenet_n_params(net), nf_layer_n_params(layer));
  double *work = malloc(nf_odenet_work_size(net, n, 1) * sizeof *work);
  double *z = th_random_points(n, d, 92, 1.0), *ctx = th_random_points(n, c, 93, 1.0);
  double x[12], ld[4], f[12], f2[12], tr[4], ex = 0, el = 0, moved = 0;
  for (int q = 0; q < 2; q++) {
    nf_dir dir = q ? NF_INVERSE : NF_FORWARD;
    double t0 = dir == NF_FORWARD ? 0 : T, h = dir == NF_FORWARD ? T : -T;
    apply_new(layer, theta, dir, n, z, ctx, x, ld);
    ck_assert_int_eq(nf_odenet_eval(net, theta, n, t0, z, ctx, f, work), NF_OK);
    ck_assert_int_eq(nf_odenet_trace(net, theta, n, t0, z, ctx, NULL, f2, tr, NULL, NULL,
                                     work), NF_OK);
    for (size_t k = 0; k < n * d; k++) {
      ex = fmax(ex, fabs(x[k] - (z[k] + h * f[k])));
      moved = fmax(moved, fabs(x[k] - z[k]));
    }
    for (size_t i = 0; i < n; i++) el = fmax(el, fabs(ld[i] - h * tr[i]));
  }
  fprintf(stderr, "one Euler step vs z + T f(0, z), T tr J(0, z) (and back from T): "
          "out %.3g, log-det %.3g (tol %g); max |x - z| %.3g\n", ex, el, EULER_TOL, moved);
  ck_assert_double_gt(moved, 0.1);
  ck_assert_double_lt(ex, EULER_TOL);
  ck_assert_double_lt(el, EULER_TOL);
  free(work); free(z); free(ctx); free(theta);
  nf_odenet_free(net);
  nf_layer_free(layer);
}
END_TEST

/* ---- 7. learnable end time ---- */

/* With f = A z: x = e^{AT} z, so dx/dT = A x and dlogdet/dT = tr A (inverse: -A z,
   -tr A); dL/dtheta_T = 2 theta_T dL/dT. */
START_TEST(learned_end_time)
{
  static const size_t pick[] = {0, 2, 3};
  const mode m = grad_modes[pick[_i]];
  size_t d = 2, n = 4;
  double A[4], out[8], ld[4], g_in[8], worst = 0;
  rotation(0, A, NULL);
  nf_cnf_opts o = cnf_opts(H8, m, 1e-11, 0.5, 1, NF_TRACE_EXACT);
  double *theta, g_theta[9];
  nf_layer *layer = linear_cnf(d, A, &o, &theta);
  size_t iT = d * d + 2 * d;
  ck_assert_uint_eq(nf_layer_n_params(layer), iT + 1);
  ck_assert_double_eq_tol(nf_cnf_end_time(layer, theta), 0.5, 1e-15);
  ck_assert_double_eq_tol(nf_cnf_end_time(layer, NULL), 0.5, 1e-15);
  ck_assert_double_eq_tol(theta[iT], sqrt(0.5), 1e-15);
  theta[iT] = -0.9; /* T = theta_T^2 */
  ck_assert_double_eq(nf_cnf_end_time(layer, theta), 0.9 * 0.9);
  ck_assert_double_eq_tol(nf_cnf_end_time(layer, NULL), 0.5, 1e-15); /* configured T */
  double *z = th_random_points(n, d, 101, 1.0), *g_out = th_random_points(n, d, 102, 1.0);
  double *g_ld = th_random_points(n, 1, 103, 1.0);
  for (int q = 0; q < 2; q++) {
    nf_dir dir = q ? NF_INVERSE : NF_FORWARD;
    double s = dir == NF_FORWARD ? 1.0 : -1.0, dL_dT = 0;
    apply_new(layer, theta, dir, n, z, NULL, out, ld);
    apply_vjp(layer, theta, dir, n, z, NULL, g_out, g_ld, g_in, NULL, g_theta);
    for (size_t i = 0; i < n; i++) {
      double Ax[2];
      apply_matrix(1, d, A, out + i * d, Ax);
      dL_dT += s * (g_out[i * d] * Ax[0] + g_out[i * d + 1] * Ax[1] + g_ld[i] * 2 * ROT_A);
    }
    double expect = 2 * theta[iT] * dL_dT;
    double err = fabs(g_theta[iT] - expect) / fabs(expect);
    fprintf(stderr, "dL/dtheta_T, %s, %s: %.12f vs closed form %.12f, rel err %.3g (tol 1e-8)\n",
            m.name, dir_name(dir), g_theta[iT], expect, err);
    worst = fmax(worst, err);
  }
  ck_assert_double_lt(worst, 1e-8);
  free(z); free(g_out); free(g_ld); free(theta);
  nf_layer_free(layer);

  o.train_end_time = 0; /* fixed T: no theta_T */
  layer = new_cnf(d, 0, &o, 104, 0.0, &theta);
  nf_odenet *net = nf_odenet_new(d, 0, 2, H8, o.kind, o.act);
  ck_assert_uint_eq(nf_layer_n_params(layer), nf_odenet_n_params(net));
  ck_assert_double_eq(nf_cnf_end_time(layer, theta), 0.5);
  nf_odenet_free(net);
  free(theta);
  nf_layer_free(layer);
}
END_TEST

/* ---- 8. in a flow ---- */

/* L = nll(theta) for the FD check of nf_flow_nll_grad. */
static double flow_nll(nf_flow *flow, size_t n, const double *x)
{
  double nll;
  nf_status st = nf_flow_nll(flow, n, x, NULL, &nll);
  ck_assert_msg(st == NF_OK, "nll: %s", nf_errmsg());
  return nll;
}

START_TEST(flow_with_cnf_layer)
{
  const mode m = {NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE, "dopri5"};
  nf_cnf_opts o = cnf_opts(H8, m, 1e-10, 0.8, 1, NF_TRACE_EXACT);
  double *theta0;
  nf_layer *layer = new_cnf(2, 0, &o, 111, 1.0, &theta0);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(flow, theta0), NF_OK); /* the base has none */

  /* the map is nontrivial and the density integrates to one */
  double z[4] = {0.5, -1.0, -0.3, 0.8}, x[4], ld[2];
  apply_new(layer, theta0, NF_FORWARD, 2, z, NULL, x, ld);
  double moved = th_max_abs_diff(4, x, z);
  double mass = th_grid_mass(flow, 7.0, 140);
  fprintf(stderr, "flow with a CNF layer: grid mass on [-7, 7]^2 (140^2) 1 %+.3g (tol %g); "
          "max |x - z| %.3g, log-dets %.3f %.3f\n", mass - 1.0, MASS_TOL, moved, ld[0], ld[1]);
  ck_assert_double_gt(moved, 0.2);
  ck_assert_double_gt(fabs(ld[0]), 0.05);
  ck_assert_double_lt(fabs(mass - 1.0), MASS_TOL);

  /* counters: one solve per log_prob chunk, one gradient per nll_grad */
  size_t n = 6;
  double *xs = th_random_points(n, 2, 112, 1.5), logp[6], nll;
  nf_cnf_counters c0, c1, c2;
  ck_assert_int_eq(nf_cnf_reset_counters(layer), NF_OK);
  ck_assert_int_eq(nf_cnf_get_counters(layer, &c0), NF_OK);
  ck_assert_uint_eq(c0.solves + c0.nfe + c0.steps + c0.gradients + c0.nfe_adjoint +
                    c0.integrators, 0);
  ck_assert_int_eq(nf_flow_log_prob(flow, n, xs, NULL, logp), NF_OK);
  ck_assert_int_eq(nf_cnf_get_counters(layer, &c1), NF_OK);
  ck_assert_int_eq(nf_flow_nll_grad(flow, n, xs, NULL, &nll), NF_OK);
  ck_assert_int_eq(nf_cnf_get_counters(layer, &c2), NF_OK);
  fprintf(stderr, "counters after log_prob: solves %zu nfe %zu steps %zu rejected %zu; after "
          "nll_grad: solves %zu gradients %zu nfe_adjoint %zu steps_adjoint %zu\n", c1.solves,
          c1.nfe, c1.steps, c1.rejected, c2.solves, c2.gradients, c2.nfe_adjoint,
          c2.steps_adjoint);
  ck_assert_uint_eq(c1.solves, 1);
  ck_assert_uint_eq(c1.integrators, 0); /* the own workspace th_grid_mass grew serves 6 rows */
  ck_assert_uint_gt(c1.steps, 10);                          /* tight tolerance: many steps */
  ck_assert_uint_ge(c1.nfe, 6 * c1.steps);                 /* DOPRI5: six stages a step (FSAL) */
  ck_assert_uint_le(c1.nfe, 6 * (c1.steps + c1.rejected) + 2);
  ck_assert_uint_eq(c1.gradients, 0);
  ck_assert_uint_eq(c2.solves, 2);
  ck_assert_uint_eq(c2.integrators, 0);
  ck_assert_uint_eq(c2.gradients, 1);
  ck_assert_uint_gt(c2.steps_adjoint, 0);
  ck_assert_uint_gt(c2.nfe_adjoint, c2.steps_adjoint);
  ck_assert_double_eq(nf_flow_penalty(flow), 0.0);

  /* nll_grad against central differences of nll */
  size_t p = nf_flow_n_params(flow);
  double *theta = malloc(p * sizeof *theta), *g = malloc(p * sizeof *g);
  double *fd = malloc(p * sizeof *fd);
  memcpy(theta, nf_flow_params(flow), p * sizeof *theta);
  memcpy(g, nf_flow_grad(flow), p * sizeof *g);
  ck_assert_double_eq_tol(nll, flow_nll(flow, n, xs), 1e-12);
  for (size_t k = 0; k < p; k++) {
    double t0 = theta[k];
    theta[k] = t0 + FD_VJP_H;
    ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
    double lp = flow_nll(flow, n, xs);
    theta[k] = t0 - FD_VJP_H;
    ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
    double lm = flow_nll(flow, n, xs);
    theta[k] = t0;
    fd[k] = (lp - lm) / (2 * FD_VJP_H);
  }
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  double err = th_rel_err(p, g, fd, 1e-8);
  fprintf(stderr, "nf_flow_nll_grad vs FD of nf_flow_nll (%zu params): rel err %.3g (tol %g)\n",
          p, err, VJP_TOL);
  ck_assert_double_lt(err, VJP_TOL);
  free(xs); free(g); free(fd); free(theta); free(theta0);
  nf_flow_free(flow);
}
END_TEST

/* ---- 8b. a CNF in a flow: reproducible noise, one integrator, threads,
   context, input gradients, the penalty's place ---- */

/* A 2-D flow (context width c) of one CNF layer whose net is redrawn from seed
   with scale 0.5; method m, tolerance tol, trace and RNODE weights as given. */
static nf_flow *cnf_flow(size_t c, mode m, double tol, nf_trace_kind trace, double kinetic,
                         double jacobian, uint64_t seed)
{
  nf_cnf_opts o = cnf_opts(H8, m, tol, 0.6, 1, trace);
  o.kinetic_weight = kinetic;
  o.jacobian_weight = jacobian;
  o.ode.fixed_steps = 20;
  double *theta;
  nf_layer *layer = new_cnf(2, c, &o, seed, 0.5, &theta);
  nf_flow *flow = nf_flow_new(2, c, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
  return flow;
}

/* log p of n rows with a new workspace of `rows` rows (chunks when rows < n). */
static void log_prob_in(const nf_flow *flow, size_t rows, uint64_t seed, size_t n,
                        const double *x, const double *ctx, double *logp)
{
  nf_flow_ws *ws = nf_flow_ws_new(flow, rows);
  ck_assert_ptr_nonnull(ws);
  nf_status st = nf_flow_log_prob_ws(flow, ws, seed, n, x, ctx, logp);
  ck_assert_msg(st == NF_OK, "log_prob: %s", nf_errmsg());
  nf_flow_ws_free(ws);
}

/* log p of n rows by the training verb log_prob_vjp (the layers' own
   estimators, here Hutchinson's) with a new workspace of n rows. */
static void estimated_log_prob(const nf_flow *flow, uint64_t seed, size_t n, const double *x,
                               double *logp)
{
  nf_flow_ws *ws = nf_flow_ws_new(flow, n);
  ck_assert_ptr_nonnull(ws);
  double *ones = malloc(n * sizeof *ones);
  for (size_t i = 0; i < n; i++) ones[i] = 1.0;
  nf_status st = nf_flow_log_prob_vjp_ws(flow, ws, seed, n, x, NULL, ones, logp, NULL, NULL, NULL);
  free(ones);
  ck_assert_msg(st == NF_OK, "log_prob_vjp: %s", nf_errmsg());
  nf_flow_ws_free(ws);
}

/* Hutchinson log p of 50 rows (training verb): the same bit for bit in a
   fresh workspace and in two threads; another seed gives other values. The
   evaluation verb log_prob asks for the exact trace (d = 2 <= 128): it equals
   the exact-trace CNF's log p at the same parameters bit for bit, whatever
   the seed and the chunking (_i = 0: RK4, 1: DOPRI5). */
START_TEST(flow_noise_reproducible)
{
  static const mode modes[] = {{NF_ODE_RK4, NF_GRAD_DISCRETE, "rk4"},
                               {NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE, "dopri5"}};
  const mode m = modes[_i];
  size_t n = 50;
  nf_flow *flow = cnf_flow(0, m, 1e-8, NF_TRACE_GAUSSIAN, 0, 0, 161);
  nf_flow *exact = cnf_flow(0, m, 1e-8, NF_TRACE_EXACT, 0, 0, 161);
  double *x = th_random_points(n, 2, 162, 1.0);
  double all[50], fresh[50], other[50], eval[50], eval_exact[50];
  estimated_log_prob(flow, 5, n, x, all);
  estimated_log_prob(flow, 5, n, x, fresh);
  estimated_log_prob(flow, 6, n, x, other);
  double d_fresh = th_max_abs_diff(n, fresh, all), d_seed = th_max_abs_diff(n, other, all);
  log_prob_in(flow, 7, 5, n, x, NULL, eval);
  log_prob_in(exact, n, 9, n, x, NULL, eval_exact);
  double d_eval = th_max_abs_diff(n, eval, eval_exact), d_est = th_max_abs_diff(n, all, eval);
  fprintf(stderr, "Hutchinson flow log p, 50 rows, %s: fresh workspace %.3g, another seed "
          "%.3g; evaluation (chunks of 7) vs exact-trace CNF %.3g; estimate vs exact %.3g\n",
          m.name, d_fresh, d_seed, d_eval, d_est);
  ck_assert_double_eq(d_fresh, 0.0);
  ck_assert_double_gt(d_seed, 1e-3);
  if (m.method == NF_ODE_RK4) ck_assert_double_eq(d_eval, 0.0);
  else ck_assert_double_lt(d_eval, 1e-6); /* DOPRI5 steps the batch (chunk) as one system */
  ck_assert_double_gt(d_est, 1e-3);
  th_check_threads(flow, n, x, NULL);
  free(x);
  nf_flow_free(exact);
  nf_flow_free(flow);
}
END_TEST

/* One integrator per workspace: n = 100, 37, 100 through one workspace of 100
   rows make one integrator (and, for CVODES, one SUNContext), and each call
   gives bit for bit what a workspace of its own size gives. */
START_TEST(flow_one_integrator)
{
  static const mode modes[] = {{NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE, "backsolve/dopri5"},
                               {NF_ODE_ADAMS, NF_GRAD_CHECKPOINT, "checkpoint/adams"},
                               {NF_ODE_BDF, NF_GRAD_CHECKPOINT, "checkpoint/bdf"}};
  const mode m = modes[_i];
  const size_t sizes[] = {100, 37, 100};
  nf_flow *flow = cnf_flow(0, m, 1e-6, NF_TRACE_EXACT, 0, 0, 171);
  const nf_layer *layer = nf_flow_layer(flow, 0);
  size_t p = nf_flow_n_params(flow);
  double *x = th_random_points(100, 2, 172, 1.0), *g = malloc(p * sizeof *g);
  double *g_ref = malloc(p * sizeof *g_ref), nll, nll_ref, logp[100], logp_ref[100];
  nf_flow_ws *ws = nf_flow_ws_new(flow, 100);
  nf_cnf_counters cnt;
  size_t made = 0; /* integrators made for ws */
  for (size_t k = 0; k < 3; k++) {
    size_t n = sizes[k];
    ck_assert_int_eq(nf_cnf_reset_counters(layer), NF_OK);
    ck_assert_int_eq(nf_flow_nll_grad_ws(flow, ws, 1, n, x, NULL, &nll, g, NULL), NF_OK);
    ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws, 1, n, x, NULL, logp), NF_OK);
    ck_assert_int_eq(nf_cnf_get_counters(layer, &cnt), NF_OK);
    made += cnt.integrators;
    ck_assert_uint_eq(made, 1);
    nf_flow_ws *own = nf_flow_ws_new(flow, n);
    ck_assert_int_eq(nf_flow_nll_grad_ws(flow, own, 1, n, x, NULL, &nll_ref, g_ref, NULL), NF_OK);
    ck_assert_int_eq(nf_flow_log_prob_ws(flow, own, 1, n, x, NULL, logp_ref), NF_OK);
    nf_flow_ws_free(own);
    ck_assert(nll == nll_ref);
    ck_assert_double_eq(th_max_abs_diff(p, g, g_ref), 0.0);
    ck_assert_double_eq(th_max_abs_diff(n, logp, logp_ref), 0.0);
  }
  fprintf(stderr, "%s: n = 100, 37, 100 in one workspace: %zu integrator(s), results equal "
          "those of workspaces of each size bit for bit\n", m.name, made);
  nf_flow_ws_free(ws);
  free(x); free(g); free(g_ref);
  nf_flow_free(flow);
}
END_TEST

/* th_check_conditional's maker: a small CNF (concatsquash 8-8, DOPRI5 at 1e-6,
   fixed T) that takes the context. */
static nf_layer *make_cond_cnf(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  nf_cnf_opts o = cnf_opts(H8, grad_modes[0], 1e-6, 0.5, 0, NF_TRACE_EXACT);
  return nf_cnf_new(dim, ctx_dim, &o, rng);
}

/* The CNF conditioned on ctx (width 2) in a flow; two threads on one shared
   conditional Hutchinson CNF flow equal serial bit for bit. */
START_TEST(flow_conditional_and_threads)
{
  th_check_conditional(make_cond_cnf);
  size_t n = 24;
  nf_flow *flow = cnf_flow(2, grad_modes[0], 1e-7, NF_TRACE_RADEMACHER, 0.1, 0.1, 181);
  double *x = th_random_points(n, 2, 182, 1.0), *ctx = th_random_points(n, 2, 183, 1.0);
  th_check_threads(flow, n, x, ctx);
  free(x); free(ctx);
  nf_flow_free(flow);
}
END_TEST

/* nf_flow_log_prob_grad's g_x against central differences of log p (exact
   trace), on a conditional flow. */
START_TEST(flow_log_prob_grad_x)
{
  size_t n = 4, d = 2;
  nf_flow *flow = cnf_flow(2, grad_modes[0], 1e-11, NF_TRACE_EXACT, 0, 0, 191);
  double *x = th_random_points(n, d, 192, 1.0), *ctx = th_random_points(n, 2, 193, 1.0);
  double logp[4], g_x[8], fd[8], lp[4], lm[4];
  ck_assert_int_eq(nf_flow_log_prob_grad(flow, n, x, ctx, logp, g_x, NULL), NF_OK);
  for (size_t k = 0; k < n * d; k++) {
    double x0 = x[k];
    x[k] = x0 + FD_VJP_H;
    ck_assert_int_eq(nf_flow_log_prob(flow, n, x, ctx, lp), NF_OK);
    x[k] = x0 - FD_VJP_H;
    ck_assert_int_eq(nf_flow_log_prob(flow, n, x, ctx, lm), NF_OK);
    x[k] = x0;
    fd[k] = (lp[k / d] - lm[k / d]) / (2 * FD_VJP_H);
  }
  double err = th_rel_err(n * d, g_x, fd, 1e-8);
  fprintf(stderr, "nf_flow_log_prob_grad g_x vs FD of log p: rel err %.3g (tol 1e-6)\n", err);
  ck_assert_double_lt(err, 1e-6);
  free(x); free(ctx);
  nf_flow_free(flow);
}
END_TEST

/* With RNODE weights > 0, nf_flow_nll_grad_ws's gradient is that of mean NLL +
   penalty, and nf_flow_log_prob_vjp's (penalty weight 0) that of the NLL alone:
   each against central differences of its objective. */
START_TEST(flow_penalty_gradient)
{
  size_t n = 3;
  nf_flow *flow = cnf_flow(0, grad_modes[0], 1e-10, NF_TRACE_EXACT, 0.5, 0.4, 201);
  size_t p = nf_flow_n_params(flow);
  double *x = th_random_points(n, 2, 202, 1.0), *theta = malloc(p * sizeof *theta);
  double *g_obj = malloc(p * sizeof *g_obj), *g_nll = calloc(p, sizeof *g_nll);
  double *fd_obj = malloc(p * sizeof *fd_obj), *fd_nll = malloc(p * sizeof *fd_nll);
  double *scratch = malloc(p * sizeof *scratch), g_logp[3], nll, pen;
  nf_flow_ws *ws = nf_flow_ws_new(flow, n);
  memcpy(theta, nf_flow_params(flow), p * sizeof *theta);
  ck_assert_int_eq(nf_flow_nll_grad_ws(flow, ws, 0, n, x, NULL, &nll, g_obj, &pen), NF_OK);
  for (size_t i = 0; i < n; i++) g_logp[i] = -1.0 / (double)n;
  ck_assert_int_eq(nf_flow_log_prob_vjp_ws(flow, ws, 0, n, x, NULL, g_logp, NULL, NULL, NULL,
                                           g_nll), NF_OK);
  for (size_t k = 0; k < p; k++) {
    double t0 = theta[k], obj[2], nl[2];
    for (int q = 0; q < 2; q++) {
      theta[k] = t0 + (q ? -FD_VJP_H : FD_VJP_H);
      ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
      ck_assert_int_eq(nf_flow_nll_grad_ws(flow, ws, 0, n, x, NULL, &nl[q], scratch, &pen), NF_OK);
      obj[q] = nl[q] + pen;
    }
    theta[k] = t0;
    fd_obj[k] = (obj[0] - obj[1]) / (2 * FD_VJP_H);
    fd_nll[k] = (nl[0] - nl[1]) / (2 * FD_VJP_H);
  }
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  double e_obj = th_rel_err(p, g_obj, fd_obj, 1e-8), e_nll = th_rel_err(p, g_nll, fd_nll, 1e-8);
  double apart = th_rel_err(p, g_nll, g_obj, 1e-8);
  fprintf(stderr, "RNODE in a flow (penalty %.4g): nll_grad vs FD of nll + penalty %.3g, "
          "log_prob_vjp vs FD of nll %.3g (tol %g); the two gradients differ by %.3g\n", pen,
          e_obj, e_nll, VJP_TOL, apart);
  ck_assert_double_gt(pen, 0.0);
  ck_assert_double_lt(e_obj, VJP_TOL);
  ck_assert_double_lt(e_nll, VJP_TOL);
  ck_assert_double_gt(apart, 1e-3);
  nf_flow_ws_free(ws);
  free(x); free(theta); free(g_obj); free(g_nll); free(fd_obj); free(fd_nll); free(scratch);
  nf_flow_free(flow);
}
END_TEST

/* ---- 9. bad input, bad options, solver failure ---- */

START_TEST(bad_arguments)
{
  const mode m = {NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE, "dopri5"};
  size_t d = 2, c = 2, n = 3;
  nf_cnf_opts o = cnf_opts(H8, m, 1e-6, 0.5, 1, NF_TRACE_EXACT);
  double *th;
  nf_layer *layer = new_cnf(d, c, &o, 121, 0.0, &th);
  double *work = nf_layer_work_new(layer, n);
  double z[6] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, ctx[6] = {0}, out[6], ld[3], g_in[6];
  for (size_t k = 0; k < 6; k++) out[k] = -7.0;
  for (size_t k = 0; k < 3; k++) ld[k] = -7.0;
  ck_assert_int_eq(nf_layer_apply(NULL, th, NF_FORWARD, n, z, ctx, out, ld, &OPTS, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, th, NF_FORWARD, 0, z, ctx, out, ld, &OPTS, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, th, NF_FORWARD, n, NULL, ctx, out, ld, &OPTS, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, th, NF_FORWARD, n, z, ctx, NULL, ld, &OPTS, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, th, NF_FORWARD, n, z, NULL, out, ld, &OPTS, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, th, NF_FORWARD, n, z, ctx, out, ld, &OPTS, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_FORWARD, n, z, ctx, out, ld, &OPTS, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, th, (nf_dir)5, n, z, ctx, out, ld, &OPTS, work), NF_EINVAL);
  z[3] = NAN;
  ck_assert_int_eq(nf_layer_apply(layer, th, NF_FORWARD, n, z, ctx, out, ld, &OPTS, work), NF_ENONFINITE);
  z[3] = 0.4;
  ctx[5] = INFINITY;
  ck_assert_int_eq(nf_layer_apply(layer, th, NF_INVERSE, n, z, ctx, out, ld, &OPTS, work), NF_ENONFINITE);
  ctx[5] = 0.0;
  ck_assert_str_ne(nf_errmsg(), "");
  for (size_t k = 0; k < 6; k++) ck_assert_double_eq(out[k], -7.0);
  for (size_t k = 0; k < 3; k++) ck_assert_double_eq(ld[k], -7.0);

  /* vjp needs an apply of the same direction and batch size in the workspace */
  ck_assert_int_eq(nf_layer_vjp(layer, th, NF_FORWARD, n, z, ctx, out, out, NULL, g_in, NULL, NULL, work),
                   NF_ESTATE);
  ck_assert_int_eq(nf_layer_apply(layer, th, NF_FORWARD, n, z, ctx, out, NULL, &OPTS, work), NF_OK);
  ck_assert_int_eq(nf_layer_vjp(layer, th, NF_INVERSE, n, z, ctx, out, out, NULL, g_in, NULL, NULL, work),
                   NF_ESTATE);
  ck_assert_int_eq(nf_layer_vjp(layer, th, NF_FORWARD, 2, z, ctx, out, out, NULL, g_in, NULL, NULL, work),
                   NF_ESTATE);
  ck_assert_int_eq(nf_layer_vjp(layer, th, NF_FORWARD, n, z, ctx, NULL, out, NULL, g_in, NULL, NULL, work),
                   NF_EINVAL);
  ck_assert_int_eq(nf_layer_vjp(layer, th, NF_FORWARD, n, z, ctx, out, out, NULL, g_in, NULL, NULL, work),
                   NF_OK);

  /* queries */
  nf_cnf_counters cnt;
  nf_layer *other = nf_affine_new(d);
  ck_assert_int_eq(nf_cnf_get_counters(NULL, &cnt), NF_EINVAL);
  ck_assert_int_eq(nf_cnf_get_counters(other, &cnt), NF_EINVAL);
  ck_assert_int_eq(nf_cnf_get_counters(layer, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_cnf_reset_counters(other), NF_EINVAL);
  ck_assert_double_eq(nf_cnf_end_time(NULL, NULL), 0.0);
  ck_assert_double_eq(nf_cnf_end_time(other, NULL), 0.0);
  ck_assert_double_eq(nf_cnf_rhs_flops(other), 0.0);
  ck_assert_double_gt(nf_cnf_rhs_flops(layer), 0.0);
  nf_layer_free(other);
  nf_trace_kind tk = NF_TRACE_GAUSSIAN;
  ck_assert_int_eq(nf_cnf_trace_parse("rademacher", &tk), NF_OK);
  ck_assert_int_eq(tk, NF_TRACE_RADEMACHER);
  ck_assert_int_eq(nf_cnf_trace_parse("exact", &tk), NF_OK);
  ck_assert_int_eq(tk, NF_TRACE_EXACT);
  ck_assert_int_eq(nf_cnf_trace_parse("hutch", &tk), NF_EINVAL);
  ck_assert_int_eq(tk, NF_TRACE_EXACT);
  ck_assert_int_eq(nf_cnf_trace_parse(NULL, &tk), NF_EINVAL);
  ck_assert_str_eq(nf_cnf_trace_name(NF_TRACE_GAUSSIAN), "gaussian");
  ck_assert_str_eq(nf_cnf_trace_name((nf_trace_kind)9), "?");
  for (int k = 0; k < 3; k++) { /* name and parse are inverses */
    ck_assert_int_eq(nf_cnf_trace_parse(nf_cnf_trace_name((nf_trace_kind)k), &tk), NF_OK);
    ck_assert_int_eq(tk, k);
  }
  nf_layer_work_free(layer, n, work);
  free(th);
  nf_layer_free(layer);
}
END_TEST

START_TEST(bad_options)
{
  const mode m = {NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE, "dopri5"};
  nf_cnf_opts good = cnf_opts(H8, m, 1e-6, 0.5, 1, NF_TRACE_EXACT), o;
  const size_t zero_width[] = {8, 0};
  nf_rng rng;
  nf_rng_seed(&rng, 131);
#define REFUSED(edit)                                                  \
  do {                                                                 \
    o = good;                                                          \
    edit;                                                              \
    ck_assert_ptr_null(nf_cnf_new(2, 0, &o, &rng));                    \
    ck_assert_str_ne(nf_errmsg(), "");                                 \
  } while (0)
  /* refused with a message naming the option, its value and the bound */
#define REFUSED_SAYING(edit, w1, w2)                                                   \
  do {                                                                                 \
    REFUSED(edit);                                                                     \
    ck_assert_int_eq(nf_last_status(), NF_EINVAL);                                     \
    ck_assert_msg(strstr(nf_errmsg(), w1) && strstr(nf_errmsg(), w2), "%s", nf_errmsg()); \
  } while (0)
  REFUSED_SAYING(o.kinetic_weight = 1e300, "kinetic_weight = 1e+300", "1e+10");
  REFUSED_SAYING(o.jacobian_weight = 2e10, "jacobian_weight = 2e+10", "NF_CNF_MAX_WEIGHT");
  REFUSED_SAYING(o.ode.rtol = 1e-300, "rtol = 1e-300", "2.22e-14");
  REFUSED_SAYING(o.ode.atol = 0.0, "atol = 0", "atol");
  REFUSED(o.end_time = 0.0);
  REFUSED(o.end_time = -1.0);
  REFUSED(o.end_time = NAN);
  REFUSED(o.end_time = INFINITY);
  REFUSED(o.kinetic_weight = -0.1);
  REFUSED(o.jacobian_weight = -1e-3);
  REFUSED(o.kinetic_weight = NAN);
  REFUSED(o.jacobian_weight = INFINITY);
  REFUSED(o.ode.grad = NF_GRAD_CHECKPOINT);               /* with DOPRI5 */
  REFUSED((o.ode.method = NF_ODE_ADAMS, o.ode.grad = NF_GRAD_DISCRETE));
  REFUSED(o.ode.rtol = 0.0);
  REFUSED(o.ode.max_steps = 0);
  REFUSED(o.trace = (nf_trace_kind)7);
  REFUSED(o.hidden = NULL);
  REFUSED(o.hidden = zero_width);
  REFUSED(o.kind = (nf_odenet_kind)9);
  REFUSED(o.act = (nf_odenet_act)9);
#undef REFUSED_SAYING
#undef REFUSED
  ck_assert_ptr_null(nf_cnf_new(0, 0, &good, &rng));
  ck_assert_ptr_null(nf_cnf_new(2, 0, NULL, &rng));
  ck_assert_ptr_null(nf_cnf_new(2, 0, &good, NULL));
  o = good;
  o.end_time = -2.0;
  ck_assert_ptr_null(nf_cnf_new(2, 0, &o, &rng));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "end_time"));
  nf_layer *layer = nf_cnf_new(2, 0, &good, &rng);
  ck_assert_ptr_nonnull(layer);
  nf_layer_free(layer);
}
END_TEST

/* The layer interface's contracts (helpers.c): the checked entry points refuse
   bad calls and leave outputs untouched; vjp writes g_in, adds into g_ctx and
   the parameter gradient, and may be repeated after one apply. Theta is
   checked where it is written: nf_layer_check_params (and the flow's setters)
   refuse a NaN or Inf network weight with NF_ENONFINITE naming its index, and
   theta_T = 0 (T = 0) with NF_EDOMAIN. */
START_TEST(layer_contracts)
{
  static const size_t pick[] = {0, 2, 5};
  static const nf_trace_kind traces[] = {NF_TRACE_EXACT, NF_TRACE_RADEMACHER, NF_TRACE_EXACT};
  const mode m = grad_modes[pick[_i]];
  size_t n = 4;
  double *theta;
  nf_layer *layer = grad_layer(m, traces[_i], _i == 2 ? 0.3 : 0, _i == 2 ? 0.2 : 0, &theta);
  double *z = th_random_points(n, 2, 150, 1.0), *ctx = th_random_points(n, 2, 151, 1.0);
  th_check_bad_calls(layer, theta);
  th_check_vjp_accumulates(layer, theta, n, z, ctx);

  size_t iT = nf_layer_n_params(layer) - 1;
  ck_assert_int_eq(nf_layer_check_params(layer, theta), NF_OK);
  double keep = theta[5];
  theta[5] = NAN;
  nf_status st = nf_layer_check_params(layer, theta);
  fprintf(stderr, "%s, weight 5 NaN: %s: %s\n", m.name, nf_status_str(st), nf_errmsg());
  ck_assert_int_eq(st, NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "parameter 5 "));
  theta[5] = keep;
  keep = theta[iT];
  theta[iT] = 0.0;
  st = nf_layer_check_params(layer, theta);
  fprintf(stderr, "%s, theta_T = 0: %s: %s\n", m.name, nf_status_str(st), nf_errmsg());
  ck_assert_int_eq(st, NF_EDOMAIN);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "theta_T"));
  theta[iT] = keep;

  /* the same through a conditional flow's setters (the layer's slice after a diagonal base) */
  double *unused;
  nf_flow *flow = nf_flow_new(2, 2, NF_BASE_DIAG_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, grad_layer(m, traces[_i], 0, 0, &unused)), NF_OK);
  size_t off = nf_flow_param_offset(flow, 0);
  th_check_param_refused(flow, off + 5, NAN, NF_ENONFINITE);
  th_check_param_refused(flow, off + 7, INFINITY, NF_ENONFINITE);
  th_check_param_refused(flow, off + iT, 0.0, NF_EDOMAIN);
  nf_flow_free(flow);
  free(unused);
  free(z); free(ctx); free(theta);
  nf_layer_free(layer);
}
END_TEST

/* max_steps = 2 at a tight tolerance: NF_ESOLVER naming the step limit and the time
   reached, outputs untouched, and the workspace holds no record for vjp. */
START_TEST(solver_failure)
{
  static const mode modes[] = {{NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE, "dopri5"},
                               {NF_ODE_ADAMS, NF_GRAD_CHECKPOINT, "adams"}};
  const mode m = modes[_i];
  size_t d = 2, n = 3;
  nf_cnf_opts o = cnf_opts(H8, m, 1e-12, 0.8, 1, NF_TRACE_EXACT);
  o.ode.max_steps = 2;
  double *theta;
  nf_layer *layer = new_cnf(d, 0, &o, 141, 0.5, &theta);
  double *work = nf_layer_work_new(layer, n);
  double z[6] = {0.1, -0.2, 0.3, 1.4, -0.5, 0.6}, out[6], ld[3], g_in[6];
  size_t iT = nf_layer_n_params(layer) - 1;
  double theta_T = theta[iT];
  theta[iT] = 0.0; /* T = 0 (check_params refuses it, apply does not scan theta):
                      a successful (empty) solve within the limit */
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, n, z, NULL, out, NULL, &OPTS, work),
                   NF_OK);
  theta[iT] = theta_T;
  for (size_t k = 0; k < 6; k++) out[k] = -7.0;
  for (size_t k = 0; k < 3; k++) ld[k] = -7.0;
  nf_status st = nf_layer_apply(layer, theta, NF_FORWARD, n, z, NULL, out, ld, &OPTS, work);
  const char *msg = nf_errmsg();
  fprintf(stderr, "solver failure (%s): %s: %s\n", m.name, nf_status_str(st), msg);
  ck_assert_int_eq(st, NF_ESOLVER);
  ck_assert_ptr_nonnull(strstr(msg, "step limit"));
  const char *at = strstr(msg, "at t = ");
  ck_assert_ptr_nonnull(at);
  double t_reached = -1;
  ck_assert_int_eq(sscanf(at, "at t = %lf", &t_reached), 1);
  ck_assert_double_ge(t_reached, 0.0);
  ck_assert_double_lt(t_reached, 0.8);
  for (size_t k = 0; k < 6; k++) ck_assert_double_eq(out[k], -7.0);
  for (size_t k = 0; k < 3; k++) ck_assert_double_eq(ld[k], -7.0);
  ck_assert_int_eq(nf_layer_vjp(layer, theta, NF_FORWARD, n, z, NULL, z, z, NULL, g_in, NULL,
                                NULL, work), NF_ESTATE);
  nf_layer_work_free(layer, n, work);
  free(theta);
  nf_layer_free(layer);
}
END_TEST

/* ---- user-supplied vector fields ---- */

/* f = A z with A = theta (d x d, row-major) as a user field: the adjoint of
   S = sum_i a_i.f_i + w_i tr(A) is g_z = A^T a, g_A += sum_i a_i z_i^T + w_i I. */
static int linear_f(double t, size_t n, const double *z, const double *ctx, const double *A,
                    double *f, void *user)
{
  (void)t; (void)ctx;
  size_t d = *(const size_t *)user;
  for (size_t i = 0; i < n; i++)
    for (size_t r = 0; r < d; r++) {
      f[i * d + r] = 0;
      for (size_t c = 0; c < d; c++) f[i * d + r] += A[r * d + c] * z[i * d + c];
    }
  return 0;
}

static int linear_div(double t, size_t n, const double *z, const double *ctx, const double *A,
                      double *div, void *user)
{
  (void)t; (void)z; (void)ctx;
  size_t d = *(const size_t *)user;
  for (size_t i = 0; i < n; i++) {
    div[i] = 0;
    for (size_t r = 0; r < d; r++) div[i] += A[r * d + r];
  }
  return 0;
}

static int linear_adjoint(double t, size_t n, const double *z, const double *ctx,
                          const double *A, const double *a, const double *w, double *g_z,
                          double *g_A, double *g_t, double *g_ctx, void *user)
{
  (void)t; (void)ctx; (void)g_ctx;
  size_t d = *(const size_t *)user;
  for (size_t i = 0; i < n; i++)
    for (size_t c = 0; c < d; c++) {
      g_z[i * d + c] = 0;
      for (size_t r = 0; r < d; r++) g_z[i * d + c] += A[r * d + c] * a[i * d + r];
    }
  for (size_t i = 0; g_A && i < n; i++)
    for (size_t r = 0; r < d; r++) {
      for (size_t c = 0; c < d; c++) g_A[r * d + c] += a[i * d + r] * z[i * d + c];
      if (w) g_A[r * d + r] += w[i];
    }
  if (g_t) *g_t = 0;
  return 0;
}

static size_t field_dim = 2;

/* A field CNF of f = A z, A = [[0.3, -1.1], [0.7, -0.2]], T = 0.8 learnable, DOPRI5
   at rtol = atol = 1e-10 with the given gradient mode. */
static nf_layer *linear_field_layer(int with_div, int with_adjoint, nf_ode_grad grad,
                                    double **theta)
{
  nf_field fl = {.name = "linear", .n_params = 4, .f = linear_f,
                 .div = with_div ? linear_div : NULL,
                 .adjoint = with_adjoint ? linear_adjoint : NULL, .user = &field_dim};
  nf_cnf_opts o = nf_cnf_defaults();
  o.end_time = 0.8;
  o.ode.rtol = o.ode.atol = 1e-10;
  o.ode.grad = grad;
  nf_layer *layer = nf_cnf_field_new(2, 0, &fl, &o);
  ck_assert_ptr_nonnull(layer);
  const double A[4] = {0.3, -1.1, 0.7, -0.2};
  *theta = copy_theta(layer, nf_layer_init_params(layer));
  memcpy(*theta, A, sizeof A);
  return layer;
}

/* The log-det of f = A z is T tr(A) = 0.08 exactly, from the divergence callback or
   from central differences of f (exact for linear f up to rounding). */
START_TEST(field_logdet_with_and_without_divergence)
{
  double z[6] = {0.5, -1.0, 2.0, 0.25, -1.5, 3.0}, x[6], ld[3];
  for (int with_div = 0; with_div < 2; with_div++) {
    double *theta;
    nf_layer *layer = linear_field_layer(with_div, 1, NF_GRAD_BACKSOLVE, &theta);
    double *work = nf_layer_work_new(layer, 3);
    memset(ld, 0, sizeof ld);
    ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, 3, z, NULL, x, ld, &OPTS, work),
                     NF_OK);
    double err = 0;
    for (int i = 0; i < 3; i++) err = fmax(err, fabs(ld[i] - 0.8 * 0.1));
    fprintf(stderr, "user field, %s divergence: |logdet - T tr A| = %.3g (tol %g)\n",
            with_div ? "callback" : "finite-difference", err, LINEAR_TOL);
    ck_assert_double_le(err, LINEAR_TOL);
    ck_assert_double_le(th_roundtrip_error(layer, theta, 3, z, NULL, NULL), ROUNDTRIP_TOL);
    nf_layer_work_free(layer, 3, work);
    free(theta);
    nf_layer_free(layer);
  }
}
END_TEST

/* Gradients of a user field (A and T) against central differences, both directions. */
START_TEST(field_vjp_matches_fd)
{
  static const nf_ode_grad grads[] = {NF_GRAD_BACKSOLVE, NF_GRAD_DISCRETE};
  double *z = th_random_points(4, 2, 91, 1.0);
  double *theta;
  nf_layer *layer = linear_field_layer(_i == 0, 1, grads[_i], &theta);
  check_vjp_both(layer, theta, 4, z, NULL,
                 _i == 0 ? "user field, backsolve" : "user field, discrete", VJP_TOL);
  free(z); free(theta);
  nf_layer_free(layer);
}
END_TEST

/* Harmonic oscillator (q, p)' = (p, -q), divergence-free: log-det 0, energy kept. */
static int oscillator(double t, size_t n, const double *z, const double *ctx,
                      const double *theta, double *f, void *user)
{
  (void)t; (void)ctx; (void)theta; (void)user;
  for (size_t i = 0; i < n; i++) {
    f[2 * i] = z[2 * i + 1];
    f[2 * i + 1] = -z[2 * i];
  }
  return 0;
}

START_TEST(field_hamiltonian_without_adjoint)
{
  nf_field fl = {.divergence_free = 1, .f = oscillator};
  nf_cnf_opts o = nf_cnf_defaults();
  o.end_time = 2.0;
  o.train_end_time = 0;
  o.ode.rtol = o.ode.atol = 1e-10;
  nf_layer *layer = nf_cnf_field_new(2, 0, &fl, &o);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(nf_layer_n_params(layer), 0);
  double z[4] = {1.0, 0.0, -0.5, 2.0}, x[4], ld[2] = {0, 0}, g[4] = {1, 1, 1, 1}, gz[4];
  double *work = nf_layer_work_new(layer, 2);
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_FORWARD, 2, z, NULL, x, ld, &OPTS, work), NF_OK);
  ck_assert(ld[0] == 0.0 && ld[1] == 0.0);
  ck_assert_double_le(fabs(x[0] - cos(2.0)), 1e-8); /* q(t) = cos t, p(t) = -sin t */
  ck_assert_double_le(fabs(x[1] + sin(2.0)), 1e-8);
  for (int i = 0; i < 2; i++) /* energy q^2 + p^2 */
    ck_assert_double_le(fabs(x[2 * i] * x[2 * i] + x[2 * i + 1] * x[2 * i + 1] -
                             z[2 * i] * z[2 * i] - z[2 * i + 1] * z[2 * i + 1]), 1e-8);
  ck_assert_int_eq(nf_layer_vjp(layer, NULL, NF_FORWARD, 2, z, NULL, x, g, NULL, gz, NULL, NULL,
                                work), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "adjoint"));
  nf_layer_work_free(layer, 2, work);
  nf_layer_free(layer);
}
END_TEST

START_TEST(field_bad_options)
{
  nf_field none = {.n_params = 0};
  nf_cnf_opts o = nf_cnf_defaults();
  ck_assert_ptr_null(nf_cnf_field_new(2, 0, &none, &o));
  ck_assert_ptr_null(nf_cnf_field_new(2, 0, NULL, &o));
  nf_field fl = {.f = oscillator};
  o.trace = NF_TRACE_RADEMACHER;
  ck_assert_ptr_null(nf_cnf_field_new(2, 0, &fl, &o));
  o = nf_cnf_defaults();
  o.kinetic_weight = 0.1;
  ck_assert_ptr_null(nf_cnf_field_new(2, 0, &fl, &o));
  o = nf_cnf_defaults();
  o.end_time = -1;
  ck_assert_ptr_null(nf_cnf_field_new(2, 0, &fl, &o));
}
END_TEST

/* ---- model files: the save and load ops ---- */

/* save into a new config, through JSON text and back (what a model file
   keeps), then load: the rebuilt layer, or NULL with nf_errmsg. */
static nf_layer *save_load(const nf_layer *layer, const nf_resolver *res, nf_status *save_st)
{
  nf_config *cfg = nf_config_new(), *back = NULL;
  ck_assert_ptr_nonnull(cfg);
  const nf_layer_type *type = nf_layer_type_find("cnf"); /* registered: it has save and load */
  ck_assert_ptr_nonnull(type);
  ck_assert_ptr_eq(type, layer->type);
  *save_st = type->save(layer, cfg);
  nf_layer *loaded = NULL;
  if (*save_st == NF_OK) {
    char *text = json_dumps(nf_config_json(cfg), JSON_SORT_KEYS);
    json_error_t err;
    json_t *obj = json_loads(text, 0, &err);
    ck_assert_ptr_nonnull(obj);
    ck_assert_int_eq(nf_config_from_json(obj, "cnf", &back), NF_OK);
    fprintf(stderr, "cnf config: %s\n", text);
    loaded = type->load(nf_layer_dim(layer), nf_layer_ctx_dim(layer), back, res);
    json_decref(obj);
    free(text);
  }
  nf_config_free(cfg);
  nf_config_free(back);
  return loaded;
}

/* apply of a and b with the same theta, seed and rows: bit for bit. */
static void assert_same_map(const nf_layer *a, const nf_layer *b, const double *theta, size_t n,
                            const double *z, const double *ctx)
{
  size_t d = nf_layer_dim(a);
  double *xa = malloc(n * d * sizeof *xa), *xb = malloc(n * d * sizeof *xb);
  double *la = malloc(n * sizeof *la), *lb = malloc(n * sizeof *lb);
  for (int q = 0; q < 2; q++) {
    nf_dir dir = q ? NF_INVERSE : NF_FORWARD;
    double pa = apply_new(a, theta, dir, n, z, ctx, xa, la);
    double pb = apply_new(b, theta, dir, n, z, ctx, xb, lb);
    ck_assert_double_eq(th_max_abs_diff(n * d, xa, xb), 0.0);
    ck_assert_double_eq(th_max_abs_diff(n, la, lb), 0.0);
    ck_assert(pa == pb);
  }
  free(xa); free(xb); free(la); free(lb);
}

/* A network CNF with every option off its default: save -> JSON -> load gives
   a layer of the same parameter count and the same map, bit for bit. */
START_TEST(save_load_network)
{
  static const size_t hidden[] = {7, 5, 6};
  nf_cnf_opts o = cnf_opts(H8, grad_modes[2], 3e-9, 0.7, _i == 0, NF_TRACE_GAUSSIAN);
  o.n_hidden = 3;
  o.hidden = hidden;
  o.kind = _i == 0 ? NF_ODENET_SINUSOIDAL : NF_ODENET_CONCAT;
  o.act = _i == 0 ? NF_ODENET_SWISH : NF_ODENET_SOFTPLUS;
  o.kinetic_weight = 0.25;
  o.jacobian_weight = 0.125;
  o.probe_seed = 0xfedcba9876543210ULL; /* beyond a signed 64-bit integer */
  o.ode.h0 = 1e-3;
  o.ode.max_steps = 4321;
  o.ode.fixed_steps = 17;
  o.ode.seminorm = 0;
  o.ode.checkpoint_steps = 23;
  double *theta;
  nf_layer *layer = new_cnf(3, 2, &o, 211, 0.5, &theta);
  nf_status st;
  nf_layer *loaded = save_load(layer, NULL, &st);
  ck_assert_int_eq(st, NF_OK);
  ck_assert_msg(loaded != NULL, "load: %s", nf_errmsg());
  ck_assert_str_eq(nf_layer_name(loaded), "cnf");
  ck_assert_uint_eq(nf_layer_n_params(loaded), nf_layer_n_params(layer));
  ck_assert_uint_eq(nf_layer_ctx_dim(loaded), 2);
  ck_assert(nf_cnf_end_time(loaded, NULL) == 0.7);
  ck_assert(nf_cnf_rhs_flops(loaded) == nf_cnf_rhs_flops(layer));
  double *z = th_random_points(4, 3, 212, 1.0), *ctx = th_random_points(4, 2, 213, 1.0);
  assert_same_map(layer, loaded, theta, 4, z, ctx);
  free(z); free(ctx); free(theta);
  nf_layer_free(loaded);
  nf_layer_free(layer);
}
END_TEST

/* The resolver of the field tests: knows "linear" (f = A z), nothing else. */
static int resolve_linear(const char *name, nf_field *field, void *user)
{
  (void)user;
  if (strcmp(name, "linear") != 0) return 1;
  field->n_params = 4;
  field->f = linear_f;
  field->div = linear_div;
  field->adjoint = linear_adjoint;
  field->user = &field_dim;
  return 0;
}

/* A user field is saved by name and its callbacks come from the resolver; no
   name, no resolver, or a name the resolver does not know: NF_EINVAL naming
   the field. nf_cnf_field_new copied the name. */
START_TEST(save_load_field)
{
  double *theta;
  nf_layer *layer = linear_field_layer(1, 1, NF_GRAD_BACKSOLVE, &theta);
  nf_resolver res = {resolve_linear, NULL};
  nf_status st;
  nf_layer *loaded = save_load(layer, &res, &st);
  ck_assert_msg(loaded != NULL, "load: %s", nf_errmsg());
  double z[6] = {0.5, -1.0, 2.0, 0.25, -1.5, 3.0};
  assert_same_map(layer, loaded, theta, 3, z, NULL);
  nf_layer_free(loaded);

  ck_assert_ptr_null(save_load(layer, NULL, &st)); /* no resolver */
  ck_assert_int_eq(st, NF_OK);
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "'linear'"));
  nf_resolver none = {resolve_linear, NULL};
  nf_field renamed = {.name = "quadratic", .n_params = 4, .f = linear_f, .user = &field_dim};
  char name[16];
  strcpy(name, "quadratic");
  renamed.name = name;
  nf_cnf_opts o = nf_cnf_defaults();
  nf_layer *other = nf_cnf_field_new(2, 0, &renamed, &o);
  strcpy(name, "overwritten"); /* the layer kept its own copy */
  ck_assert_ptr_null(save_load(other, &none, &st));
  ck_assert_int_eq(nf_last_status(), NF_EINVAL);
  fprintf(stderr, "unknown field: %s\n", nf_errmsg());
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "'quadratic'"));
  nf_layer_free(other);

  renamed.name = NULL; /* no name: cannot be saved */
  other = nf_cnf_field_new(2, 0, &renamed, &o);
  nf_config *cfg = nf_config_new();
  ck_assert_int_eq(other->type->save(other, cfg), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "name"));
  nf_config_free(cfg);
  nf_layer_free(other);
  free(theta);
  nf_layer_free(layer);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("cnf");
  TCase *tc = tcase_create("cnf");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, roundtrip, 0, 3);
  tcase_add_loop_test(tc, linear_dynamics_matrix_exponential, 0, 4);
  tcase_add_loop_test(tc, logdet_matches_fd_jacobian, 0, 3);
  tcase_add_test(tc, hutchinson_is_unbiased);
  tcase_add_test(tc, hutchinson_probe_stream);
  tcase_add_loop_test(tc, vjp_matches_fd_every_mode, 0, N_MODES);
  tcase_add_loop_test(tc, vjp_hutchinson, 0, 3);
  tcase_add_test(tc, hutchinson_modes_agree);
  tcase_add_loop_test(tc, vjp_rnode_penalty, 0, 6);
  tcase_add_test(tc, rnode_penalty_linear);
  tcase_add_test(tc, one_euler_step_is_residual_layer);
  tcase_add_loop_test(tc, learned_end_time, 0, 3);
  tcase_add_test(tc, flow_with_cnf_layer);
  tcase_add_loop_test(tc, flow_noise_reproducible, 0, 2);
  tcase_add_loop_test(tc, flow_one_integrator, 0, 3);
  tcase_add_test(tc, flow_conditional_and_threads);
  tcase_add_test(tc, flow_log_prob_grad_x);
  tcase_add_test(tc, flow_penalty_gradient);
  tcase_add_test(tc, bad_arguments);
  tcase_add_test(tc, bad_options);
  tcase_add_loop_test(tc, layer_contracts, 0, 3);
  tcase_add_loop_test(tc, solver_failure, 0, 2);
  tcase_add_test(tc, field_logdet_with_and_without_divergence);
  tcase_add_loop_test(tc, field_vjp_matches_fd, 0, 2);
  tcase_add_test(tc, field_hamiltonian_without_adjoint);
  tcase_add_test(tc, field_bad_options);
  tcase_add_loop_test(tc, save_load_network, 0, 2);
  tcase_add_test(tc, save_load_field);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
