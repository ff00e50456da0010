/* tests/test_ode.c — nf_ode: accuracy and order of every method on ODEs with
   closed-form solutions (both time directions), tolerance scaling, stiffness,
   gradients of every mode against central finite differences, counters, and
   failures (with nothing printed by SUNDIALS). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "nflow.h"
#include "../solvers/solver.h" /* nf_ode_replay: the DISCRETE map with its steps frozen */

#define N_METHODS 5
static const nf_ode_method all_methods[N_METHODS] = {NF_ODE_EULER, NF_ODE_RK4, NF_ODE_DOPRI5,
                                                      NF_ODE_ADAMS, NF_ODE_BDF};
static const char *const method_name[N_METHODS] = {"euler", "rk4", "dopri5", "adams", "bdf"};

/* ---- test systems ---------------------------------------------------------- */

/* y' = A y with A = [[-0.1, -1, 0], [1, -0.1, 0], [0, 0, -0.5]] (decaying rotation). */
static const double lin_A[9] = {-0.1, -1, 0, 1, -0.1, 0, 0, 0, -0.5};

/* Linear rhs y' = A y. */
static int lin_rhs(double t, const double *y, double *dy, void *u)
{
  (void)t;
  (void)u;
  for (int i = 0; i < 3; i++) dy[i] = lin_A[3 * i] * y[0] + lin_A[3 * i + 1] * y[1] + lin_A[3 * i + 2] * y[2];
  return 0;
}

/* Linear vjp: g_y = A^T a. */
static int lin_vjp(double t, const double *y, const double *a, double *g_y, double *g_theta,
                   double *g_t, void *u)
{
  (void)t;
  (void)y;
  (void)g_theta;
  (void)u;
  for (int j = 0; j < 3; j++) g_y[j] = a[0] * lin_A[j] + a[1] * lin_A[3 + j] + a[2] * lin_A[6 + j];
  if (g_t) *g_t = 0;
  return 0;
}

/* Linear jvp: A v. */
static int lin_jvp(double t, const double *y, const double *v, double *jv, void *u)
{
  (void)y;
  return lin_rhs(t, v, jv, u);
}

/* Exact exp(A tau) y0: e^{-tau/10} R(tau) on the first two components, e^{-tau/2} on the third. */
static void lin_exact(double tau, const double *y0, double *y)
{
  double r = exp(-0.1 * tau), c = cos(tau), s = sin(tau);
  y[0] = r * (c * y0[0] - s * y0[1]);
  y[1] = r * (s * y0[0] + c * y0[1]);
  y[2] = exp(-0.5 * tau) * y0[2];
}

/* Logistic y' = y (1 - y). */
static int logi_rhs(double t, const double *y, double *dy, void *u)
{
  (void)t;
  (void)u;
  dy[0] = y[0] * (1 - y[0]);
  return 0;
}

/* Logistic vjp: a (1 - 2y). */
static int logi_vjp(double t, const double *y, const double *a, double *g_y, double *g_theta,
                    double *g_t, void *u)
{
  (void)t;
  (void)g_theta;
  (void)u;
  g_y[0] = a[0] * (1 - 2 * y[0]);
  if (g_t) *g_t = 0;
  return 0;
}

/* Logistic closed form: y(t) = 1 / (1 + (1/y0 - 1) e^{-tau}). */
static double logi_exact(double tau, double y0) { return 1 / (1 + (1 / y0 - 1) * exp(-tau)); }

/* Stiff scalar y' = -k (y - cos t), k = 1000. */
static const double stiff_k = 1000;

/* Stiff rhs. */
static int stiff_rhs(double t, const double *y, double *dy, void *u)
{
  (void)u;
  dy[0] = -stiff_k * (y[0] - cos(t));
  return 0;
}

/* Stiff jvp: -k v. */
static int stiff_jvp(double t, const double *y, const double *v, double *jv, void *u)
{
  (void)t;
  (void)y;
  (void)u;
  jv[0] = -stiff_k * v[0];
  return 0;
}

/* Stiff closed form from y(0) = 0: A cos t + B sin t - A e^{-k t}, A = k^2/(1+k^2), B = k/(1+k^2). */
static double stiff_exact(double t)
{
  double k = stiff_k, A = k * k / (1 + k * k), B = k / (1 + k * k);
  return A * cos(t) + B * sin(t) - A * exp(-k * t);
}

/* Blow-up y' = y^2 (y = 1 / (1 - t) from y(0) = 1). */
static int blow_rhs(double t, const double *y, double *dy, void *u)
{
  (void)t;
  (void)u;
  dy[0] = y[0] * y[0];
  return 0;
}

/* Blow-up vjp: a 2y. */
static int blow_vjp(double t, const double *y, const double *a, double *g_y, double *g_theta,
                    double *g_t, void *u)
{
  (void)t;
  (void)g_theta;
  (void)u;
  g_y[0] = 2 * a[0] * y[0];
  if (g_t) *g_t = 0;
  return 0;
}

/* y' = -y, except that the second component of the derivative is NaN for
   t >= *(double *)u (a NaN wall in time). */
static int nan_rhs(double t, const double *y, double *dy, void *u)
{
  for (int i = 0; i < 3; i++) dy[i] = -y[i];
  if (t >= *(const double *)u) dy[1] = NAN;
  return 0;
}

/* Its vjp away from the wall: g_y = -a. */
static int nan_vjp(double t, const double *y, const double *a, double *g_y, double *g_theta,
                   double *g_t, void *u)
{
  (void)t;
  (void)y;
  (void)g_theta;
  (void)u;
  for (int i = 0; i < 3; i++) g_y[i] = -a[i];
  if (g_t) *g_t = 0;
  return 0;
}

/* Parametrised network y' = tanh(W y + b + t u), theta = [W (3x3, row-major), b, u]. */
#define NET_N 3
#define NET_P 15
typedef struct net {
  double theta[NET_P];
  double fail_after; /* callbacks fail (return 7) for t beyond this; INFINITY: never */
  int vjp_fails;     /* the vjp returns 5 */
} net;

/* s = tanh(W y + b + t u) into s; returns nonzero if the net is set to fail at t. */
static int net_eval(const net *p, double t, const double *y, double *s)
{
  const double *W = p->theta, *b = p->theta + 9, *u = p->theta + 12;
  for (int i = 0; i < NET_N; i++) {
    double z = b[i] + t * u[i];
    for (int j = 0; j < NET_N; j++) z += W[3 * i + j] * y[j];
    s[i] = tanh(z);
  }
  return t > p->fail_after ? 7 : 0;
}

/* Network rhs. */
static int net_rhs(double t, const double *y, double *dy, void *user)
{
  return net_eval(user, t, y, dy);
}

/* Network vjp with d = a * (1 - s^2): g_y = W^T d, g_W += d y^T, g_b += d, g_u += t d, g_t = d . u. */
static int net_vjp(double t, const double *y, const double *a, double *g_y, double *g_theta,
                   double *g_t, void *user)
{
  const net *p = user;
  double s[NET_N], d[NET_N];
  int rc = net_eval(p, t, y, s);
  if (rc) return rc;
  if (p->vjp_fails) return 5;
  for (int i = 0; i < NET_N; i++) d[i] = a[i] * (1 - s[i] * s[i]);
  for (int j = 0; j < NET_N; j++) {
    g_y[j] = 0;
    for (int i = 0; i < NET_N; i++) g_y[j] += p->theta[3 * i + j] * d[i];
  }
  if (g_theta)
    for (int i = 0; i < NET_N; i++) {
      for (int j = 0; j < NET_N; j++) g_theta[3 * i + j] += d[i] * y[j];
      g_theta[9 + i] += d[i];
      g_theta[12 + i] += t * d[i];
    }
  if (g_t) {
    *g_t = 0;
    for (int i = 0; i < NET_N; i++) *g_t += d[i] * p->theta[12 + i];
  }
  return 0;
}

/* Network jvp: (1 - s^2) * (W v). */
static int net_jvp(double t, const double *y, const double *v, double *jv, void *user)
{
  const net *p = user;
  double s[NET_N];
  int rc = net_eval(p, t, y, s);
  for (int i = 0; i < NET_N; i++) {
    double w = 0;
    for (int j = 0; j < NET_N; j++) w += p->theta[3 * i + j] * v[j];
    jv[i] = (1 - s[i] * s[i]) * w;
  }
  return rc;
}

/* A network with N(0, 0.6^2) parameters from a fixed seed, never failing. */
static net make_net(void)
{
  net p;
  nf_rng rng;
  nf_rng_seed(&rng, 20240611);
  th_randn(&rng, NET_P, 0.6, p.theta);
  p.fail_after = INFINITY;
  p.vjp_fails = 0;
  return p;
}

/* ---- helpers ------------------------------------------------------------- */

/* Options of a method with both tolerances tol and `fixed` steps. */
static nf_ode_opts opts_of(nf_ode_method m, nf_ode_grad g, double tol, size_t fixed)
{
  nf_ode_opts o = nf_ode_defaults(m);
  o.grad = g;
  o.rtol = o.atol = tol;
  o.fixed_steps = fixed;
  return o;
}

/* Solves y (n values) in place with a fresh integrator; asserts success. */
static void solve_fresh(const nf_ode_opts *o, const nf_ode_system *sys, size_t n, double t0,
                        double t1, double *y, nf_ode_stats *stats)
{
  nf_ode *ode = nf_ode_new(n, 0, o);
  ck_assert_msg(ode != NULL, "nf_ode_new: %s", nf_errmsg());
  nf_status st = nf_ode_solve(ode, sys, t0, t1, y);
  ck_assert_msg(st == NF_OK, "solve failed: %s", nf_errmsg());
  if (stats) *stats = *nf_ode_get_stats(ode);
  nf_ode_free(ode);
}

/* Max error of the linear system from [1, 0.5, -0.7] over [t0, t1] against exp(A (t1 - t0)). */
static double lin_error(const nf_ode_opts *o, double t0, double t1)
{
  nf_ode_system sys = {.rhs = lin_rhs, .vjp = lin_vjp, .jvp = lin_jvp, .user = NULL};
  double y0[3] = {1, 0.5, -0.7}, y[3], ex[3];
  memcpy(y, y0, sizeof y);
  solve_fresh(o, &sys, 3, t0, t1, y, NULL);
  lin_exact(t1 - t0, y0, ex);
  return th_max_abs_diff(3, y, ex);
}

/* Error of the logistic equation from y(t0) = y0 to t1. */
static double logi_error(const nf_ode_opts *o, double t0, double t1, double y0)
{
  nf_ode_system sys = {.rhs = logi_rhs, .vjp = logi_vjp, .jvp = NULL, .user = NULL};
  double y = y0;
  solve_fresh(o, &sys, 1, t0, t1, &y, NULL);
  return fabs(y - logi_exact(t1 - t0, y0));
}

/* The options a method is checked with for accuracy: 2000 Euler steps, 200 RK4 steps, tol 1e-8. */
static nf_ode_opts accuracy_opts(nf_ode_method m)
{
  return opts_of(m, NF_GRAD_NONE, 1e-8, m == NF_ODE_EULER ? 2000 : 200);
}

/* Bound on the error accuracy_opts should reach: Euler O(h) ~ 1e-2, RK4 O(h^4) ~ 3e-8, 1e-6 for tol 1e-8. */
static double accuracy_bound(nf_ode_method m)
{
  return m == NF_ODE_EULER ? 1e-2 : m == NF_ODE_RK4 ? 3e-8 : 1e-6;
}

/* ---- defaults, parsing, options ------------------------------------------ */

START_TEST(test_defaults_and_parse)
{
  nf_ode_opts o = nf_ode_defaults(NF_ODE_DOPRI5);
  ck_assert_int_eq(o.method, NF_ODE_DOPRI5);
  ck_assert_int_eq(o.grad, NF_GRAD_NONE);
  ck_assert(o.rtol == 1e-6 && o.atol == 1e-6 && o.h0 == 0);
  ck_assert_uint_eq(o.max_steps, 100000);
  ck_assert_uint_eq(o.fixed_steps, 100);
  ck_assert_int_eq(o.seminorm, 1);
  ck_assert_uint_eq(o.checkpoint_steps, 100);
  for (int i = 0; i < N_METHODS; i++) {
    nf_ode_method m;
    ck_assert_int_eq(nf_ode_method_parse(method_name[i], &m), NF_OK);
    ck_assert_int_eq(m, all_methods[i]);
  }
  nf_ode_grad g;
  ck_assert_int_eq(nf_ode_grad_parse("backsolve", &g), NF_OK);
  ck_assert_int_eq(g, NF_GRAD_BACKSOLVE);
  ck_assert_int_eq(nf_ode_grad_parse("checkpoint", &g), NF_OK);
  ck_assert_int_eq(g, NF_GRAD_CHECKPOINT);
  ck_assert_int_eq(nf_ode_grad_parse("discrete", &g), NF_OK);
  ck_assert_int_eq(g, NF_GRAD_DISCRETE);
  ck_assert_int_eq(nf_ode_grad_parse("none", &g), NF_OK);
  ck_assert_int_eq(g, NF_GRAD_NONE);
  nf_ode_method m = NF_ODE_BDF;
  ck_assert_int_eq(nf_ode_method_parse("rk45", &m), NF_EINVAL);
  ck_assert_int_eq(m, NF_ODE_BDF);
  ck_assert(strstr(nf_errmsg(), "rk45") != NULL);
  ck_assert_int_eq(nf_ode_grad_parse("adjoint", &g), NF_EINVAL);
  ck_assert_int_eq(nf_ode_method_parse(NULL, &m), NF_EINVAL);
  ck_assert_int_eq(nf_ode_grad_parse("discrete", NULL), NF_EINVAL);
}
END_TEST

/* nf_ode_new returns NULL with a message naming the problem. */
static void expect_bad(size_t n, const nf_ode_opts *o, const char *word)
{
  nf_ode *ode = nf_ode_new(n, 2, o);
  ck_assert_msg(ode == NULL, "expected NULL for '%s'", word);
  ck_assert_msg(strstr(nf_errmsg(), word) != NULL, "message '%s' lacks '%s'", nf_errmsg(), word);
}

START_TEST(test_bad_options)
{
  nf_ode_opts o = nf_ode_defaults(NF_ODE_DOPRI5);
  expect_bad(3, NULL, "opts");
  expect_bad(0, &o, "n = 0");
  o.rtol = 0;
  expect_bad(3, &o, "rtol = 0");
  o.rtol = -1e-6;
  expect_bad(3, &o, "rtol = -1e-06");
  /* below what double arithmetic can meet: the message names the value and the floor */
  o.rtol = o.atol = 1e-300;
  expect_bad(3, &o, "rtol = 1e-300");
  expect_bad(3, &o, "2.22e-14");
  o.rtol = 1e-14;
  expect_bad(3, &o, "rtol = 1e-14");
  o.rtol = 1e-13;
  o.atol = 1e-320; /* subnormal */
  expect_bad(3, &o, "atol = 9.99989e-321");
  o.atol = 0;
  expect_bad(3, &o, "atol = 0");
  o.rtol = 1e-13; /* at the floors: accepted */
  o.atol = 1e-300;
  nf_ode *ok = nf_ode_new(3, 0, &o);
  ck_assert_msg(ok != NULL, "%s", nf_errmsg());
  nf_ode_free(ok);
  o = nf_ode_defaults(NF_ODE_ADAMS);
  o.atol = NAN;
  expect_bad(3, &o, "atol = nan");
  o.atol = INFINITY;
  expect_bad(3, &o, "atol = inf");
  o = nf_ode_defaults(NF_ODE_BDF);
  o.rtol = INFINITY;
  expect_bad(3, &o, "rtol = inf");
  o = nf_ode_defaults(NF_ODE_DOPRI5);
  o.grad = NF_GRAD_CHECKPOINT;
  expect_bad(3, &o, "checkpoint");
  o = nf_ode_defaults(NF_ODE_BDF);
  o.grad = NF_GRAD_DISCRETE;
  expect_bad(3, &o, "discrete");
  o = nf_ode_defaults(NF_ODE_RK4);
  o.fixed_steps = 0;
  expect_bad(3, &o, "fixed_steps");
  o = nf_ode_defaults(NF_ODE_BDF);
  o.max_steps = 0;
  expect_bad(3, &o, "max_steps");
  o = nf_ode_defaults(NF_ODE_DOPRI5);
  o.h0 = -1; /* the wrong sign: the direction comes from t1 - t0 */
  expect_bad(3, &o, "h0 = -1");
  o.h0 = NAN;
  expect_bad(3, &o, "h0 = nan");
  o = nf_ode_defaults(NF_ODE_ADAMS);
  o.h0 = INFINITY;
  expect_bad(3, &o, "h0 = inf");
  o = nf_ode_defaults(NF_ODE_DOPRI5);
  o.max_steps = 0;
  expect_bad(3, &o, "max_steps = 0");
  o = nf_ode_defaults(NF_ODE_ADAMS);
  o.grad = NF_GRAD_CHECKPOINT;
  o.checkpoint_steps = 0;
  expect_bad(3, &o, "checkpoint_steps = 0");
  o = nf_ode_defaults(NF_ODE_DOPRI5);
  o.method = (nf_ode_method)17;
  expect_bad(3, &o, "method");
  nf_ode_free(NULL);
  ck_assert_ptr_null(nf_ode_get_stats(NULL));
}
END_TEST

/* ---- accuracy ----------------------------------------------------------- */

START_TEST(test_linear_both_directions)
{
  nf_ode_method m = all_methods[_i];
  nf_ode_opts o = accuracy_opts(m);
  double fwd = lin_error(&o, 0.5, 4.5), bwd = lin_error(&o, 4.5, 0.5);
  ck_assert_msg(fwd < accuracy_bound(m) && bwd < accuracy_bound(m),
                "%s: linear errors forward %.3g backward %.3g > %.3g", method_name[_i], fwd, bwd,
                accuracy_bound(m));
}
END_TEST

START_TEST(test_logistic_both_directions)
{
  nf_ode_method m = all_methods[_i];
  nf_ode_opts o = accuracy_opts(m);
  double fwd = logi_error(&o, 0, 3, 0.1);
  /* backwards from y(3) to t = 0: must come back to 0.1 */
  double y3 = logi_exact(3, 0.1), bwd = logi_error(&o, 3, 0, y3);
  ck_assert_msg(fwd < accuracy_bound(m) && bwd < accuracy_bound(m),
                "%s: logistic errors forward %.3g backward %.3g > %.3g", method_name[_i], fwd, bwd,
                accuracy_bound(m));
}
END_TEST

START_TEST(test_fixed_step_order)
{
  /* error ratio when halving the step: 2^p, p = 1 (Euler), 4 (RK4) */
  nf_ode_opts e1 = opts_of(NF_ODE_EULER, NF_GRAD_NONE, 1e-6, 200);
  nf_ode_opts e2 = opts_of(NF_ODE_EULER, NF_GRAD_NONE, 1e-6, 400);
  double re = logi_error(&e1, 0, 2, 0.2) / logi_error(&e2, 0, 2, 0.2);
  ck_assert_msg(fabs(re - 2) < 0.05, "Euler error ratio %.4f, expected 2 +- 0.05", re);
  nf_ode_opts r1 = opts_of(NF_ODE_RK4, NF_GRAD_NONE, 1e-6, 20);
  nf_ode_opts r2 = opts_of(NF_ODE_RK4, NF_GRAD_NONE, 1e-6, 40);
  double rr = logi_error(&r1, 0, 2, 0.2) / logi_error(&r2, 0, 2, 0.2);
  ck_assert_msg(fabs(rr - 16) < 1.0, "RK4 error ratio %.3f, expected 16 +- 1", rr);
  double lr = lin_error(&r1, 0, 2) / lin_error(&r2, 0, 2);
  ck_assert_msg(fabs(lr - 16) < 1.0, "RK4 linear error ratio %.3f, expected 16 +- 1", lr);
}
END_TEST

START_TEST(test_tolerance_scaling)
{
  /* adaptive methods: error at tol 1e-9 at least 100x below the error at 1e-6, both near tol */
  nf_ode_method m = all_methods[2 + _i];
  nf_ode_opts lo = opts_of(m, NF_GRAD_NONE, 1e-6, 1), hi = opts_of(m, NF_GRAD_NONE, 1e-9, 1);
  double e6 = lin_error(&lo, 0, 5), e9 = lin_error(&hi, 0, 5);
  ck_assert_msg(e6 < 1e-4 && e9 < 1e-7 && e9 < e6 / 100,
                "%s: error %.3g at tol 1e-6, %.3g at tol 1e-9", method_name[2 + _i], e6, e9);
}
END_TEST

START_TEST(test_stiff_bdf_beats_adams)
{
  nf_ode_system sys = {.rhs = stiff_rhs, .vjp = NULL, .jvp = stiff_jvp, .user = NULL};
  nf_ode_stats sa, sb;
  nf_ode_opts oa = opts_of(NF_ODE_ADAMS, NF_GRAD_NONE, 1e-6, 1);
  nf_ode_opts ob = opts_of(NF_ODE_BDF, NF_GRAD_NONE, 1e-6, 1);
  double ya = 0, yb = 0, ex = stiff_exact(2);
  solve_fresh(&oa, &sys, 1, 0, 2, &ya, &sa);
  solve_fresh(&ob, &sys, 1, 0, 2, &yb, &sb);
  ck_assert_msg(fabs(ya - ex) < 1e-5 && fabs(yb - ex) < 1e-5, "stiff errors adams %.3g bdf %.3g",
                fabs(ya - ex), fabs(yb - ex));
  ck_assert_msg(sb.steps * 10 < sa.steps, "bdf %zu steps, adams %zu steps", sb.steps, sa.steps);
  /* BDF with difference quotients instead of the jvp gets there too */
  nf_ode_system dq = {.rhs = stiff_rhs, .vjp = NULL, .jvp = NULL, .user = NULL};
  double yq = 0;
  solve_fresh(&ob, &dq, 1, 0, 2, &yq, NULL);
  ck_assert_msg(fabs(yq - ex) < 1e-5, "stiff bdf (DQ) error %.3g", fabs(yq - ex));
}
END_TEST

START_TEST(test_counters)
{
  nf_ode_system sys = {.rhs = lin_rhs, .vjp = lin_vjp, .jvp = lin_jvp, .user = NULL};
  nf_ode_stats s;
  double y[3] = {1, 0.5, -0.7};
  nf_ode_opts o = opts_of(NF_ODE_RK4, NF_GRAD_NONE, 1e-6, 37);
  solve_fresh(&o, &sys, 3, 0, 1, y, &s);
  ck_assert_uint_eq(s.steps, 37);
  ck_assert_uint_eq(s.nfe, 4 * 37);
  ck_assert_uint_eq(s.rejected, 0);
  ck_assert(s.t_reached == 1);
  o = opts_of(NF_ODE_EULER, NF_GRAD_NONE, 1e-6, 11);
  solve_fresh(&o, &sys, 3, 0, 1, y, &s);
  ck_assert_uint_eq(s.nfe, 11);
  /* DOPRI5 with FSAL: f(t0), one for the starting step, six per attempted step */
  o = opts_of(NF_ODE_DOPRI5, NF_GRAD_NONE, 1e-8, 1);
  solve_fresh(&o, &sys, 3, 0, 10, y, &s);
  ck_assert(s.steps > 10 && s.steps < 1000);
  ck_assert_uint_eq(s.nfe, 2 + 6 * (s.steps + s.rejected));
  o.h0 = 1e-3; /* a given first step saves the starting-step evaluation */
  solve_fresh(&o, &sys, 3, 0, 10, y, &s);
  ck_assert_uint_eq(s.nfe, 1 + 6 * (s.steps + s.rejected));
  for (int i = 3; i < 5; i++) {
    o = opts_of(all_methods[i], NF_GRAD_NONE, 1e-8, 1);
    solve_fresh(&o, &sys, 3, 0, 10, y, &s);
    ck_assert_msg(s.steps > 10 && s.steps < 5000 && s.nfe >= s.steps && s.nfe < 20 * s.steps,
                  "%s: %zu steps, %zu nfe", method_name[i], s.steps, s.nfe);
    ck_assert(s.t_reached == 10);
  }
}
END_TEST

START_TEST(test_reuse_and_empty_interval)
{
  /* one integrator, many solves: same answers as fresh ones; t0 == t1 is the identity */
  nf_ode_method m = all_methods[_i];
  nf_ode_system sys = {.rhs = lin_rhs, .vjp = lin_vjp, .jvp = lin_jvp, .user = NULL};
  nf_ode_opts o = accuracy_opts(m);
  nf_ode *ode = nf_ode_new(3, 0, &o);
  ck_assert_ptr_nonnull(ode);
  double a[3] = {1, 0.5, -0.7}, b[3] = {1, 0.5, -0.7}, c[3] = {-0.3, 0.2, 1.1};
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 2, a), NF_OK);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 3, 1, c), NF_OK);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 2, b), NF_OK);
  ck_assert_msg(th_max_abs_diff(3, a, b) == 0, "%s: repeated solve differs by %.3g",
                method_name[_i], th_max_abs_diff(3, a, b));
  double ref[3] = {-0.3, 0.2, 1.1};
  solve_fresh(&o, &sys, 3, 3, 1, ref, NULL);
  ck_assert_msg(th_max_abs_diff(3, c, ref) == 0, "%s: reused solve differs by %.3g",
                method_name[_i], th_max_abs_diff(3, c, ref));
  double keep[3] = {a[0], a[1], a[2]};
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 1.5, 1.5, a), NF_OK);
  ck_assert(th_max_abs_diff(3, a, keep) == 0);
  ck_assert_uint_eq(nf_ode_get_stats(ode)->nfe, 0);
  nf_ode_free(ode);
}
END_TEST

/* ---- gradients ----------------------------------------------------------- */

/* The mode configurations checked: method, gradient mode, tolerance, fixed steps. */
typedef struct grad_case {
  nf_ode_method method;
  nf_ode_grad grad;
  double tol;
  size_t fixed;
  const char *name;
} grad_case;

static const grad_case grad_cases[] = {
    {NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE, 1e-10, 1, "dopri5/backsolve"},
    {NF_ODE_RK4, NF_GRAD_BACKSOLVE, 1e-10, 400, "rk4/backsolve"},
    {NF_ODE_ADAMS, NF_GRAD_BACKSOLVE, 1e-10, 1, "adams/backsolve"},
    {NF_ODE_BDF, NF_GRAD_BACKSOLVE, 1e-10, 1, "bdf/backsolve"},
    {NF_ODE_ADAMS, NF_GRAD_CHECKPOINT, 1e-10, 1, "adams/checkpoint"},
    {NF_ODE_BDF, NF_GRAD_CHECKPOINT, 1e-10, 1, "bdf/checkpoint"},
    {NF_ODE_EULER, NF_GRAD_DISCRETE, 1e-10, 30, "euler/discrete"},
    {NF_ODE_RK4, NF_GRAD_DISCRETE, 1e-10, 30, "rk4/discrete"},
    {NF_ODE_DOPRI5, NF_GRAD_DISCRETE, 1e-7, 1, "dopri5/discrete"},
};
#define N_GRAD_CASES (sizeof grad_cases / sizeof *grad_cases)

static const double net_y0[NET_N] = {0.4, -0.8, 0.3};
static const double net_c[NET_N] = {0.7, -1.3, 0.5}; /* L = c . y(t1) */

/* All gradients of L = c . y(t1): [g_y0 (3), g_theta (15), g_t0, g_t1]. */
#define G_LEN (NET_N + NET_P + 2)

/* L = c . y(t1) of the net from (t0, y0); replay: the DISCRETE map frozen in `ode`, else a solve
   with `ode`. */
static double net_loss(nf_ode *ode, const nf_ode_system *sys, double t0, double t1,
                       const double *y0, int replay)
{
  double y[NET_N];
  memcpy(y, y0, sizeof y);
  nf_status st = replay ? nf_ode_replay(ode, sys, t0, t1, y) : nf_ode_solve(ode, sys, t0, t1, y);
  ck_assert_msg(st == NF_OK, "loss solve failed: %s", nf_errmsg());
  double l = 0;
  for (int i = 0; i < NET_N; i++) l += net_c[i] * y[i];
  return l;
}

/* Central differences (step h) of net_loss in y0, theta, t0, t1, laid out as G_LEN. */
static void net_fd(nf_ode *ode, net *p, double t0, double t1, int replay, double h, double *g)
{
  nf_ode_system sys = {.rhs = net_rhs, .vjp = net_vjp, .jvp = net_jvp, .user = p};
  double y0[NET_N];
  memcpy(y0, net_y0, sizeof y0);
  for (int k = 0; k < NET_N; k++) {
    y0[k] = net_y0[k] + h;
    double lp = net_loss(ode, &sys, t0, t1, y0, replay);
    y0[k] = net_y0[k] - h;
    double lm = net_loss(ode, &sys, t0, t1, y0, replay);
    y0[k] = net_y0[k];
    g[k] = (lp - lm) / (2 * h);
  }
  for (int k = 0; k < NET_P; k++) {
    double v = p->theta[k];
    p->theta[k] = v + h;
    double lp = net_loss(ode, &sys, t0, t1, y0, replay);
    p->theta[k] = v - h;
    double lm = net_loss(ode, &sys, t0, t1, y0, replay);
    p->theta[k] = v;
    g[NET_N + k] = (lp - lm) / (2 * h);
  }
  g[NET_N + NET_P] = (net_loss(ode, &sys, t0 + h, t1, y0, replay) -
                      net_loss(ode, &sys, t0 - h, t1, y0, replay)) / (2 * h);
  g[NET_N + NET_P + 1] = (net_loss(ode, &sys, t0, t1 + h, y0, replay) -
                          net_loss(ode, &sys, t0, t1 - h, y0, replay)) / (2 * h);
}

/* Solve and gradient of the net with case gc over [t0, t1] into g (G_LEN); g_theta starts at
   `theta_start` to check it is added to. */
static void net_gradient(const grad_case *gc, net *p, double t0, double t1, double *g,
                         nf_ode_stats *stats, nf_ode **keep)
{
  nf_ode_opts o = opts_of(gc->method, gc->grad, gc->tol, gc->fixed);
  nf_ode *ode = nf_ode_new(NET_N, NET_P, &o);
  ck_assert_msg(ode != NULL, "%s: %s", gc->name, nf_errmsg());
  nf_ode_system sys = {.rhs = net_rhs, .vjp = net_vjp, .jvp = net_jvp, .user = p};
  double y[NET_N];
  memcpy(y, net_y0, sizeof y);
  ck_assert_msg(nf_ode_solve(ode, &sys, t0, t1, y) == NF_OK, "%s: %s", gc->name, nf_errmsg());
  for (int k = 0; k < NET_P; k++) g[NET_N + k] = 1.0; /* added to */
  nf_status st = nf_ode_gradient(ode, &sys, net_c, g, g + NET_N, g + NET_N + NET_P,
                                 g + NET_N + NET_P + 1);
  ck_assert_msg(st == NF_OK, "%s: gradient failed: %s", gc->name, nf_errmsg());
  for (int k = 0; k < NET_P; k++) g[NET_N + k] -= 1.0;
  if (stats) *stats = *nf_ode_get_stats(ode);
  if (keep)
    *keep = ode;
  else
    nf_ode_free(ode);
}

/* The reference: central differences of tightly solved DOPRI5 (rtol = atol = 1e-10, h = 1e-5). */
static void net_reference(net *p, double t0, double t1, double *g)
{
  nf_ode_opts o = opts_of(NF_ODE_DOPRI5, NF_GRAD_NONE, 1e-10, 1);
  nf_ode *ode = nf_ode_new(NET_N, NET_P, &o);
  net_fd(ode, p, t0, t1, 0, 1e-5, g);
  nf_ode_free(ode);
}

/* Norm-wise relative error of each part (y0, theta, t0, t1) of two gradient layouts. */
static double grad_err(const double *g, const double *ref)
{
  double e = th_rel_err(NET_N, g, ref, 1e-3);
  e = fmax(e, th_rel_err(NET_P, g + NET_N, ref + NET_N, 1e-3));
  e = fmax(e, th_rel_err(2, g + NET_N + NET_P, ref + NET_N + NET_P, 1e-3));
  return e;
}

START_TEST(test_gradient_modes)
{
  /* every mode in both time directions against FD; continuous modes: FD of a tight solve;
     DISCRETE: FD of the same discrete map (steps frozen), which must agree to 1e-8 */
  const grad_case *gc = &grad_cases[_i];
  net p = make_net();
  for (int dir = 0; dir < 2; dir++) {
    double t0 = dir ? 1.5 : 0.0, t1 = dir ? 0.0 : 1.5;
    double g[G_LEN], ref[G_LEN];
    nf_ode_stats s;
    nf_ode *ode = NULL;
    net_gradient(gc, &p, t0, t1, g, &s, &ode);
    ck_assert_msg(s.nfe > 0 && s.steps > 0 && s.nfe_adjoint > 0 && s.steps_adjoint > 0,
                  "%s: counters nfe %zu steps %zu nfe_adj %zu steps_adj %zu", gc->name, s.nfe,
                  s.steps, s.nfe_adjoint, s.steps_adjoint);
    ck_assert(s.t_reached == t0);
    if (gc->grad == NF_GRAD_DISCRETE) {
      /* the gradient recomputes the stages: one rhs and one vjp per solution stage */
      size_t stages = gc->method == NF_ODE_EULER ? 1 : gc->method == NF_ODE_RK4 ? 4 : 6;
      ck_assert_uint_eq(s.steps_adjoint, s.steps);
      ck_assert_uint_eq(s.nfe_adjoint, 2 * stages * s.steps);
      net_fd(ode, &p, t0, t1, 1, 1e-5, ref);
      double e = grad_err(g, ref);
      ck_assert_msg(e < 1e-8, "%s dir %d: discrete gradient vs FD of the map: %.3g", gc->name,
                    dir, e);
    }
    nf_ode_free(ode);
    if (gc->grad != NF_GRAD_DISCRETE || gc->method == NF_ODE_DOPRI5) {
      net_reference(&p, t0, t1, ref);
      double e = grad_err(g, ref);
      double tol = gc->grad == NF_GRAD_DISCRETE ? 1e-4 : 1e-5; /* dopri5 discrete at tol 1e-7 */
      ck_assert_msg(e < tol, "%s dir %d: gradient vs FD of the ODE: %.3g", gc->name, dir, e);
    }
  }
}
END_TEST

START_TEST(test_gradient_modes_agree)
{
  net p = make_net();
  double g[N_GRAD_CASES][G_LEN];
  size_t ref_case = 0; /* dopri5/backsolve */
  for (size_t k = 0; k < N_GRAD_CASES; k++) net_gradient(&grad_cases[k], &p, 0, 1.5, g[k], NULL, NULL);
  for (size_t k = 0; k < N_GRAD_CASES; k++) {
    if (grad_cases[k].grad == NF_GRAD_DISCRETE && grad_cases[k].method != NF_ODE_DOPRI5) continue;
    double e = grad_err(g[k], g[ref_case]);
    ck_assert_msg(e < 1e-6 || (grad_cases[k].grad == NF_GRAD_DISCRETE && e < 1e-4),
                  "%s disagrees with %s: %.3g", grad_cases[k].name, grad_cases[ref_case].name, e);
  }
}
END_TEST

START_TEST(test_gradient_repeat_and_seminorm)
{
  /* a second gradient (after the same solve, and after a second solve) reproduces the first;
     with seminorm off the gradient agrees */
  net p = make_net();
  for (size_t k = 0; k < N_GRAD_CASES; k++) {
    const grad_case *gc = &grad_cases[k];
    nf_ode_opts o = opts_of(gc->method, gc->grad, gc->tol, gc->fixed);
    nf_ode *ode = nf_ode_new(NET_N, NET_P, &o);
    nf_ode_system sys = {.rhs = net_rhs, .vjp = net_vjp, .jvp = net_jvp, .user = &p};
    double g1[NET_N], g2[NET_N], y[NET_N];
    memcpy(y, net_y0, sizeof y);
    ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1.5, y), NF_OK);
    ck_assert_int_eq(nf_ode_gradient(ode, &sys, net_c, g1, NULL, NULL, NULL), NF_OK);
    ck_assert_int_eq(nf_ode_gradient(ode, &sys, net_c, g2, NULL, NULL, NULL), NF_OK);
    ck_assert_msg(th_max_abs_diff(NET_N, g1, g2) == 0, "%s: second gradient differs by %.3g",
                  gc->name, th_max_abs_diff(NET_N, g1, g2));
    memcpy(y, net_y0, sizeof y);
    ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1.5, y), NF_OK);
    ck_assert_int_eq(nf_ode_gradient(ode, &sys, net_c, g2, NULL, NULL, NULL), NF_OK);
    ck_assert_msg(th_max_abs_diff(NET_N, g1, g2) == 0, "%s: repeated gradient differs by %.3g",
                  gc->name, th_max_abs_diff(NET_N, g1, g2));
    nf_ode_free(ode);
    if (gc->grad == NF_GRAD_DISCRETE) continue;
    double gs[G_LEN], gf[G_LEN];
    nf_ode_stats ss;
    net_gradient(gc, &p, 0, 1.5, gs, &ss, NULL);
    o.seminorm = 0;
    nf_ode *full = nf_ode_new(NET_N, NET_P, &o);
    memcpy(y, net_y0, sizeof y);
    ck_assert_int_eq(nf_ode_solve(full, &sys, 0, 1.5, y), NF_OK);
    memset(gf, 0, sizeof gf);
    ck_assert_int_eq(nf_ode_gradient(full, &sys, net_c, gf, gf + NET_N, gf + NET_N + NET_P,
                                     gf + NET_N + NET_P + 1), NF_OK);
    size_t full_steps = nf_ode_get_stats(full)->steps_adjoint;
    nf_ode_free(full);
    ck_assert_msg(grad_err(gs, gf) < 1e-6, "%s: seminorm vs full norm %.3g", gc->name,
                  grad_err(gs, gf));
    /* (a variable-order method need not take fewer steps with the seminorm: no step claim) */
    ck_assert_msg(ss.steps_adjoint > 0 && full_steps > 0, "%s: %zu backward steps with seminorm, %zu without",
                  gc->name, ss.steps_adjoint, full_steps);
  }
}
END_TEST

START_TEST(test_gradient_empty_interval)
{
  /* t0 == t1: g_y0 = g_y1, g_t1 = g_y1 . f(t1, y1) = -g_t0, g_theta unchanged */
  net p = make_net();
  const grad_case *gc = &grad_cases[_i];
  nf_ode_opts o = opts_of(gc->method, gc->grad, gc->tol, gc->fixed);
  nf_ode *ode = nf_ode_new(NET_N, NET_P, &o);
  nf_ode_system sys = {.rhs = net_rhs, .vjp = net_vjp, .jvp = net_jvp, .user = &p};
  double y[NET_N], f[NET_N], g0[NET_N], gth[NET_P] = {0}, gt0, gt1, dot = 0;
  memcpy(y, net_y0, sizeof y);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0.7, 0.7, y), NF_OK);
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, net_c, g0, gth, &gt0, &gt1), NF_OK);
  net_rhs(0.7, net_y0, f, &p);
  for (int i = 0; i < NET_N; i++) dot += net_c[i] * f[i];
  ck_assert(th_max_abs_diff(NET_N, g0, net_c) == 0);
  ck_assert(fabs(gt1 - dot) < 1e-15 && fabs(gt0 + dot) < 1e-15);
  for (int k = 0; k < NET_P; k++) ck_assert(gth[k] == 0);
  nf_ode_free(ode);
}
END_TEST

START_TEST(test_gradient_linear_exact)
{
  /* no parameters (n_theta = 0); y' = A y: dL/dy0 = exp(A tau)^T c, dL/dt1 = c . A y1,
     dL/dt0 = -dL/dy0 . A y0, in closed form */
  const grad_case *gc = &grad_cases[_i];
  if (gc->grad == NF_GRAD_DISCRETE && gc->method != NF_ODE_DOPRI5) return;
  nf_ode_opts o = opts_of(gc->method, gc->grad, gc->tol, gc->fixed);
  nf_ode *ode = nf_ode_new(3, 0, &o);
  nf_ode_system sys = {.rhs = lin_rhs, .vjp = lin_vjp, .jvp = lin_jvp, .user = NULL};
  double y0[3] = {1, 0.5, -0.7}, y[3], c[3] = {0.3, -1.1, 0.8}, g[3], gt0, gt1;
  double ex[5], col[3], e[3], f[3];
  memcpy(y, y0, sizeof y);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 2, 0.5, y), NF_OK);
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, c, g, NULL, &gt0, &gt1), NF_OK);
  for (int j = 0; j < 3; j++) {
    memset(e, 0, sizeof e);
    e[j] = 1;
    lin_exact(0.5 - 2, e, col);
    ex[j] = c[0] * col[0] + c[1] * col[1] + c[2] * col[2];
  }
  lin_exact(0.5 - 2, y0, y);
  lin_rhs(0, y, f, NULL);
  ex[4] = c[0] * f[0] + c[1] * f[1] + c[2] * f[2];
  lin_rhs(0, y0, f, NULL);
  ex[3] = -(ex[0] * f[0] + ex[1] * f[1] + ex[2] * f[2]);
  double got[5] = {g[0], g[1], g[2], gt0, gt1};
  double err = th_rel_err(5, got, ex, 1e-3);
  double tol = gc->grad == NF_GRAD_DISCRETE ? 1e-5 : 1e-7;
  ck_assert_msg(err < tol, "%s: linear gradient error %.3g", gc->name, err);
  nf_ode_free(ode);
}
END_TEST

/* ---- failures ------------------------------------------------------------ */

/* Redirects stderr to a temporary file; returns the saved descriptor. */
static int stderr_capture(FILE **tmp)
{
  fflush(stderr);
  *tmp = tmpfile();
  ck_assert_ptr_nonnull(*tmp);
  int saved = dup(STDERR_FILENO);
  dup2(fileno(*tmp), STDERR_FILENO);
  return saved;
}

/* Restores stderr and returns how many bytes were written to it meanwhile. */
static long stderr_release(FILE *tmp, int saved)
{
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  fseek(tmp, 0, SEEK_END);
  long size = ftell(tmp);
  fclose(tmp);
  return size;
}

/* Solves and expects status `want` (or, with want2 >= 0, want2), y untouched, message words. */
static void expect_fail(nf_ode *ode, const nf_ode_system *sys, double t0, double t1, size_t n,
                        const double *y0, nf_status want, int want2, const char *w1,
                        const char *w2)
{
  double y[NET_N];
  memcpy(y, y0, n * sizeof *y);
  nf_status st = nf_ode_solve(ode, sys, t0, t1, y);
  ck_assert_msg(st == want || (want2 >= 0 && st == (nf_status)want2), "status %s: %s",
                nf_status_str(st), nf_errmsg());
  for (size_t i = 0; i < n; i++) ck_assert_msg(y[i] == y0[i] || (isnan(y[i]) && isnan(y0[i])), "y changed on failure");
  if (w1) ck_assert_msg(strstr(nf_errmsg(), w1) != NULL, "'%s' lacks '%s'", nf_errmsg(), w1);
  if (w2) ck_assert_msg(strstr(nf_errmsg(), w2) != NULL, "'%s' lacks '%s'", nf_errmsg(), w2);
  /* no gradient of a failed solve */
  double g[NET_N];
  ck_assert_int_eq(nf_ode_gradient(ode, sys, y0, g, NULL, NULL, NULL), NF_ESTATE);
}

START_TEST(test_failures)
{
  nf_ode_method m = all_methods[_i];
  int adaptive = m >= NF_ODE_DOPRI5;
  FILE *tmp;
  int saved = stderr_capture(&tmp);
  nf_ode_opts o = accuracy_opts(m);
  o.grad = m >= NF_ODE_ADAMS ? NF_GRAD_CHECKPOINT : NF_GRAD_DISCRETE;

  /* step limit on a long solve */
  if (adaptive) {
    nf_ode_opts lim = o;
    lim.max_steps = 5;
    nf_ode *ode = nf_ode_new(3, 0, &lim);
    nf_ode_system sys = {.rhs = lin_rhs, .vjp = lin_vjp, .jvp = lin_jvp, .user = NULL};
    double y0[3] = {1, 0.5, -0.7};
    expect_fail(ode, &sys, 0, 100, 3, y0, NF_ESOLVER, -1, "max_steps = 5", "at t = ");
    double tr = nf_ode_get_stats(ode)->t_reached;
    ck_assert_msg(tr > 0 && tr < 100, "t_reached %g", tr);
    ck_assert_uint_le(nf_ode_get_stats(ode)->steps, 5);
    nf_ode_free(ode);
  }

  /* the rhs returns nonzero past t = 0.5 */
  net p = make_net();
  p.fail_after = 0.5;
  nf_ode_system sys = {.rhs = net_rhs, .vjp = net_vjp, .jvp = net_jvp, .user = &p};
  nf_ode *ode = nf_ode_new(NET_N, NET_P, &o);
  expect_fail(ode, &sys, 0, 1, NET_N, net_y0, NF_ESOLVER, -1, "rhs callback returned 7", "at t = ");
  double tr = nf_ode_get_stats(ode)->t_reached;
  ck_assert_msg(tr > 0.2 && tr <= 0.5 + 1e-3, "t_reached %g", tr); /* start of the failing step */

  /* the vjp fails during the gradient: NF_ESOLVER, outputs untouched */
  p.fail_after = INFINITY;
  p.vjp_fails = 1;
  double y[NET_N], g[NET_N] = {9, 9, 9}, gth[NET_P] = {0}, gt0 = 9;
  memcpy(y, net_y0, sizeof y);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1, y), NF_OK);
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, net_c, g, gth, &gt0, NULL), NF_ESOLVER);
  ck_assert_msg(strstr(nf_errmsg(), "vjp callback returned 5") != NULL, "%s", nf_errmsg());
  ck_assert(g[0] == 9 && gt0 == 9 && gth[0] == 0);

  /* NaN in y0; NaN in g_y1; NULL arguments */
  double bad[NET_N] = {0.1, NAN, 0.3};
  expect_fail(ode, &sys, 0, 1, NET_N, bad, NF_ENONFINITE, -1, "y0[1]", NULL);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, INFINITY, y), NF_ENONFINITE);
  expect_fail(ode, &sys, NAN, 1, NET_N, net_y0, NF_ENONFINITE, -1, "t0 = nan", "finite");
  expect_fail(ode, &sys, 0, -INFINITY, NET_N, net_y0, NF_ENONFINITE, -1, "t1 = -inf", "finite");
  expect_fail(ode, &sys, -1e308, 1e308, NET_N, net_y0, NF_EINVAL, -1, "t1 - t0", "overflows");
  ck_assert_int_eq(nf_ode_solve(NULL, &sys, 0, 1, y), NF_EINVAL);
  ck_assert_int_eq(nf_ode_solve(ode, NULL, 0, 1, y), NF_EINVAL);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1, NULL), NF_EINVAL);
  p.vjp_fails = 0;
  memcpy(y, net_y0, sizeof y);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1, y), NF_OK);
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, bad, g, NULL, NULL, NULL), NF_ENONFINITE);
  nf_ode_system novjp = {.rhs = net_rhs, .vjp = NULL, .jvp = NULL, .user = &p};
  ck_assert_int_eq(nf_ode_gradient(ode, &novjp, net_c, g, NULL, NULL, NULL), NF_EINVAL);
  nf_ode_free(ode);

  /* blow-up y' = y^2 from y(0) = 1 past t = 1: a status, not a crash */
  nf_ode_system blow = {.rhs = blow_rhs, .vjp = blow_vjp, .jvp = NULL, .user = NULL};
  nf_ode_opts ob = accuracy_opts(m);
  ob.grad = NF_GRAD_BACKSOLVE;
  ode = nf_ode_new(1, 0, &ob);
  double one = 1;
  expect_fail(ode, &blow, 0, 2, 1, &one, NF_ESOLVER, NF_ENONFINITE, "at t = ", NULL);
  nf_ode_free(ode);

  /* gradient before any solve, and with grad = none */
  o = accuracy_opts(m);
  o.grad = NF_GRAD_BACKSOLVE;
  ode = nf_ode_new(NET_N, NET_P, &o);
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, net_c, g, NULL, NULL, NULL), NF_ESTATE);
  nf_ode_free(ode);
  o.grad = NF_GRAD_NONE;
  ode = nf_ode_new(NET_N, NET_P, &o);
  memcpy(y, net_y0, sizeof y);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1, y), NF_OK);
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, net_c, g, NULL, NULL, NULL), NF_ESTATE);
  nf_ode_free(ode);

  long printed = stderr_release(tmp, saved);
  ck_assert_msg(printed == 0, "%s: %ld bytes printed to stderr", method_name[_i], printed);
}
END_TEST

/* Every method and gradient mode: a span too short to resolve is the identity. */
typedef struct span_case {
  nf_ode_method method;
  nf_ode_grad grad;
} span_case;

static const span_case span_cases[] = {
    {NF_ODE_EULER, NF_GRAD_NONE},       {NF_ODE_RK4, NF_GRAD_NONE},
    {NF_ODE_DOPRI5, NF_GRAD_NONE},      {NF_ODE_ADAMS, NF_GRAD_NONE},
    {NF_ODE_BDF, NF_GRAD_NONE},         {NF_ODE_EULER, NF_GRAD_BACKSOLVE},
    {NF_ODE_RK4, NF_GRAD_BACKSOLVE},    {NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE},
    {NF_ODE_ADAMS, NF_GRAD_BACKSOLVE},  {NF_ODE_BDF, NF_GRAD_BACKSOLVE},
    {NF_ODE_ADAMS, NF_GRAD_CHECKPOINT}, {NF_ODE_BDF, NF_GRAD_CHECKPOINT},
    {NF_ODE_EULER, NF_GRAD_DISCRETE},   {NF_ODE_RK4, NF_GRAD_DISCRETE},
    {NF_ODE_DOPRI5, NF_GRAD_DISCRETE},
};
#define N_SPAN_CASES (sizeof span_cases / sizeof *span_cases)

START_TEST(test_degenerate_spans)
{
  /* t0 = 1 with spans 0, 1e-320, 1e-17 (all round to t1 == t0), one and four ulps; t0 = 0
     with 1e-320 (subnormal): y unchanged, no evaluation, the identity's gradient. A span of
     1e-17 at t0 = 0 is resolvable and solved. */
  const span_case *sc = &span_cases[_i];
  net p = make_net();
  nf_ode_system sys = {.rhs = net_rhs, .vjp = net_vjp, .jvp = net_jvp, .user = &p};
  nf_ode_opts o = opts_of(sc->method, sc->grad, 1e-6, 20);
  nf_ode *ode = nf_ode_new(NET_N, NET_P, &o);
  ck_assert_msg(ode != NULL, "%s", nf_errmsg());
  const double t0s[] = {1, 1, 1, 1, 1, 0, -3};
  const double t1s[] = {1, 1 + 1e-320, 1 + 1e-17, 0x1.0000000000001p0, 1 + 4 * 0x1p-52, 1e-320,
                        -3 - 8 * 0x1p-52};
  for (int k = 0; k < 7; k++) {
    double y[NET_N], f[NET_N], g0[NET_N], gth[NET_P] = {0}, gt0, gt1, dot = 0;
    memcpy(y, net_y0, sizeof y);
    nf_status st = nf_ode_solve(ode, &sys, t0s[k], t1s[k], y);
    ck_assert_msg(st == NF_OK, "%s/%s, span %g at t0 = %g: %s", nf_ode_method_name(sc->method),
                  nf_ode_grad_name(sc->grad), t1s[k] - t0s[k], t0s[k], nf_errmsg());
    ck_assert(memcmp(y, net_y0, sizeof y) == 0);
    ck_assert_uint_eq(nf_ode_get_stats(ode)->nfe, 0);
    if (sc->grad == NF_GRAD_NONE) continue;
    st = nf_ode_gradient(ode, &sys, net_c, g0, gth, &gt0, &gt1);
    ck_assert_msg(st == NF_OK, "gradient: %s", nf_errmsg());
    net_rhs(t1s[k], net_y0, f, &p);
    for (int i = 0; i < NET_N; i++) dot += net_c[i] * f[i];
    ck_assert(memcmp(g0, net_c, sizeof g0) == 0);
    ck_assert(gt1 == dot && gt0 == -dot);
    for (int j = 0; j < NET_P; j++) ck_assert(gth[j] == 0);
  }
  double y[NET_N];
  memcpy(y, net_y0, sizeof y);
  ck_assert_msg(nf_ode_solve(ode, &sys, 0, 1e-17, y) == NF_OK, "%s/%s, 1e-17 at 0: %s",
                nf_ode_method_name(sc->method), nf_ode_grad_name(sc->grad), nf_errmsg());
  ck_assert(th_max_abs_diff(NET_N, y, net_y0) < 1e-16);
  ck_assert_uint_gt(nf_ode_get_stats(ode)->nfe, 0);
  if (sc->grad != NF_GRAD_NONE) {
    double g0[NET_N];
    ck_assert_msg(nf_ode_gradient(ode, &sys, net_c, g0, NULL, NULL, NULL) == NF_OK, "%s",
                  nf_errmsg());
    ck_assert(th_max_abs_diff(NET_N, g0, net_c) < 1e-15);
  }
  nf_ode_free(ode);
}
END_TEST

START_TEST(test_memory_limits)
{
  /* a record larger than the memory limit is refused by nf_ode_new, fast and without
     allocating it: 10^9 RK4 steps of 1000 states (8 TB), against physical memory */
  nf_ode_opts o = opts_of(NF_ODE_RK4, NF_GRAD_DISCRETE, 1e-6, 1000000000);
  nf_ode *ode = nf_ode_new(1000, 0, &o);
  ck_assert_ptr_null(ode);
  ck_assert_int_eq(nf_last_status(), NF_ENOMEM);
  ck_assert_msg(strstr(nf_errmsg(), "fixed_steps = 1000000000") && strstr(nf_errmsg(), "GB") &&
                    strstr(nf_errmsg(), "physical memory"),
                "%s", nf_errmsg());
  /* without a record the same options are fine (the steps cost time, not memory) */
  o.grad = NF_GRAD_BACKSOLVE;
  ode = nf_ode_new(1000, 0, &o);
  ck_assert_msg(ode != NULL, "%s", nf_errmsg());
  nf_ode_free(ode);
  /* a lower limit set by the caller: 10^6 Euler steps of 3 states take 40 MB */
  o = opts_of(NF_ODE_EULER, NF_GRAD_DISCRETE, 1e-6, 1000000);
  o.max_memory = 1000000;
  ck_assert_ptr_null(nf_ode_new(3, 0, &o));
  ck_assert_msg(strstr(nf_errmsg(), "max_memory") && strstr(nf_errmsg(), "0.04 GB"), "%s",
                nf_errmsg());
  o.max_memory = 100000000;
  ode = nf_ode_new(3, 0, &o);
  ck_assert_msg(ode != NULL, "%s", nf_errmsg());
  nf_ode_free(ode);
  /* CVODES's interpolation store: checkpoint_steps + 1 points of 2 n doubles */
  o = opts_of(NF_ODE_BDF, NF_GRAD_CHECKPOINT, 1e-6, 1);
  o.checkpoint_steps = 1000000000;
  ck_assert_ptr_null(nf_ode_new(1000, 0, &o));
  ck_assert_int_eq(nf_last_status(), NF_ENOMEM);
  ck_assert_msg(strstr(nf_errmsg(), "checkpoint_steps = 1000000000"), "%s", nf_errmsg());
  /* DOPRI5's tape grows with the solve: refused when it would pass the limit, y untouched */
  o = opts_of(NF_ODE_DOPRI5, NF_GRAD_DISCRETE, 1e-10, 1);
  o.max_memory = 4000; /* 100 rows of 3 + 2 doubles */
  ode = nf_ode_new(3, 0, &o);
  ck_assert_msg(ode != NULL, "%s", nf_errmsg());
  nf_ode_system sys = {.rhs = lin_rhs, .vjp = lin_vjp, .jvp = lin_jvp, .user = NULL};
  double y0[3] = {1, 0.5, -0.7};
  expect_fail(ode, &sys, 0, 100, 3, y0, NF_ENOMEM, -1, "step tape", "max_memory");
  nf_ode_free(ode);
}
END_TEST

START_TEST(test_nonfinite_rhs)
{
  /* a NaN derivative is NF_ENONFINITE "the right-hand side became non-finite at t = ..." for
     every method and recording mode, y untouched, t_reached at the wall (not a step limit) */
  static const nf_ode_grad grads[3] = {NF_GRAD_NONE, NF_GRAD_BACKSOLVE, NF_GRAD_DISCRETE};
  nf_ode_method m = all_methods[_i];
  FILE *tmp;
  int saved = stderr_capture(&tmp);
  for (int k = 0; k < 6; k++) { /* tolerance 1e-8, then the default 1e-6 */
    nf_ode_opts o = k < 3 ? accuracy_opts(m) : nf_ode_defaults(m);
    o.grad = grads[k % 3] == NF_GRAD_DISCRETE && m >= NF_ODE_ADAMS ? NF_GRAD_CHECKPOINT : grads[k % 3];
    nf_ode *ode = nf_ode_new(3, 0, &o);
    ck_assert_msg(ode != NULL, "%s", nf_errmsg());
    double wall = 0.5, y0[3] = {1, 0.5, -0.7};
    nf_ode_system sys = {.rhs = nan_rhs, .vjp = nan_vjp, .jvp = NULL, .user = &wall};
    expect_fail(ode, &sys, 0, 1, 3, y0, NF_ENONFINITE, -1, "right-hand side became non-finite",
                "at t = ");
    double tr = nf_ode_get_stats(ode)->t_reached;
    ck_assert_msg(tr > 0.2 && tr <= 0.5, "%s: t_reached %g", method_name[_i], tr);
    ck_assert_msg(strstr(nf_errmsg(), "step limit") == NULL, "%s", nf_errmsg());
    /* non-finite at the start */
    wall = -1;
    expect_fail(ode, &sys, 0, 1, 3, y0, NF_ENONFINITE, -1, "right-hand side became non-finite",
                "at t = 0 ");
    nf_ode_free(ode);
  }
  long printed = stderr_release(tmp, saved);
  ck_assert_msg(printed == 0, "%s: %ld bytes printed to stderr", method_name[_i], printed);
}
END_TEST

START_TEST(test_replay_state)
{
  /* the test hook refuses without a DISCRETE solve */
  net p = make_net();
  nf_ode_system sys = {.rhs = net_rhs, .vjp = net_vjp, .jvp = net_jvp, .user = &p};
  nf_ode_opts o = opts_of(NF_ODE_DOPRI5, NF_GRAD_DISCRETE, 1e-6, 1);
  nf_ode *ode = nf_ode_new(NET_N, NET_P, &o);
  double y[NET_N];
  memcpy(y, net_y0, sizeof y);
  ck_assert_int_eq(nf_ode_replay(ode, &sys, 0, 1, y), NF_ESTATE);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1, y), NF_OK);
  double r[NET_N];
  memcpy(r, net_y0, sizeof r);
  ck_assert_int_eq(nf_ode_replay(ode, &sys, 0, 1, r), NF_OK);
  ck_assert_msg(th_max_abs_diff(NET_N, r, y) < 1e-14, "replay differs by %.3g",
                th_max_abs_diff(NET_N, r, y));
  nf_ode_free(ode);
}
END_TEST

/* ---- resizing ------------------------------------------------------------ */

/* Allocation calls (malloc, calloc, realloc) made from the statically linked
   library and this test, counted through the linker's --wrap (tests/local.mk). */
static size_t n_allocs;
void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *ptr, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t count, size_t size);
void *__wrap_realloc(void *ptr, size_t size);

/* Counted malloc. */
void *__wrap_malloc(size_t size)
{
  n_allocs++;
  return __real_malloc(size);
}

/* Counted calloc. */
void *__wrap_calloc(size_t count, size_t size)
{
  n_allocs++;
  return __real_calloc(count, size);
}

/* Counted realloc. */
void *__wrap_realloc(void *ptr, size_t size)
{
  n_allocs++;
  return __real_realloc(ptr, size);
}

/* A batch of k independent copies of the net, sharing its parameters: n = 3k states. */
#define BATCH_MAX 4
typedef struct bnet {
  net *p;
  size_t k;
} bnet;

/* Batch rhs: the net on every copy. */
static int bnet_rhs(double t, const double *y, double *dy, void *user)
{
  const bnet *b = user;
  int rc = 0;
  for (size_t c = 0; c < b->k && !rc; c++) rc = net_rhs(t, y + NET_N * c, dy + NET_N * c, b->p);
  return rc;
}

/* Batch vjp: per copy; g_theta accumulates over the copies, g_t is their sum. */
static int bnet_vjp(double t, const double *y, const double *a, double *g_y, double *g_theta,
                    double *g_t, void *user)
{
  const bnet *b = user;
  double sum = 0, gt = 0;
  for (size_t c = 0; c < b->k; c++) {
    size_t o = NET_N * c;
    int rc = net_vjp(t, y + o, a + o, g_y + o, g_theta, g_t ? &gt : NULL, b->p);
    if (rc) return rc;
    sum += gt;
  }
  if (g_t) *g_t = sum;
  return 0;
}

/* Batch jvp: per copy. */
static int bnet_jvp(double t, const double *y, const double *v, double *jv, void *user)
{
  const bnet *b = user;
  int rc = 0;
  for (size_t c = 0; c < b->k && !rc; c++)
    rc = net_jvp(t, y + NET_N * c, v + NET_N * c, jv + NET_N * c, b->p);
  return rc;
}

/* Everything a solve and its gradient give, compared bit for bit. */
typedef struct batch_result {
  double y[NET_N * BATCH_MAX], g_y0[NET_N * BATCH_MAX], g_theta[NET_P], g_t[2];
  size_t nfe, steps, nfe_adjoint, steps_adjoint;
} batch_result;

/* Solves k copies (copy c from net_y0 + 0.1 c) over [0, 1.2] with ode and, unless grad is
   NONE, takes the gradient of L = sum_c (1 + 0.2 c) net_c . y_c(t1); n_theta = 0 leaves
   the parameters out. */
static batch_result batch_run(nf_ode *ode, net *p, size_t k, size_t n_theta)
{
  batch_result r;
  memset(&r, 0, sizeof r);
  bnet b = {p, k};
  nf_ode_system sys = {.rhs = bnet_rhs, .vjp = bnet_vjp, .jvp = bnet_jvp, .user = &b};
  double c[NET_N * BATCH_MAX];
  for (size_t i = 0; i < NET_N * k; i++) {
    r.y[i] = net_y0[i % NET_N] + 0.1 * (double)(i / NET_N);
    c[i] = net_c[i % NET_N] * (1 + 0.2 * (double)(i / NET_N));
  }
  ck_assert_uint_eq(nf_ode_size(ode), NET_N * k);
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, c, r.g_y0, NULL, NULL, NULL), NF_ESTATE);
  ck_assert_msg(nf_ode_solve(ode, &sys, 0, 1.2, r.y) == NF_OK, "solve: %s", nf_errmsg());
  if (ode->opts.grad != NF_GRAD_NONE)
    ck_assert_msg(nf_ode_gradient(ode, &sys, c, r.g_y0, n_theta ? r.g_theta : NULL, r.g_t,
                                  r.g_t + 1) == NF_OK,
                  "gradient: %s", nf_errmsg());
  const nf_ode_stats *s = nf_ode_get_stats(ode);
  r.nfe = s->nfe;
  r.steps = s->steps;
  r.nfe_adjoint = s->nfe_adjoint;
  r.steps_adjoint = s->steps_adjoint;
  return r;
}

/* Every method with every gradient mode it offers. */
static const struct {
  nf_ode_method method;
  nf_ode_grad grad;
} resize_cases[] = {
    {NF_ODE_EULER, NF_GRAD_NONE},      {NF_ODE_EULER, NF_GRAD_BACKSOLVE},
    {NF_ODE_EULER, NF_GRAD_DISCRETE},  {NF_ODE_RK4, NF_GRAD_NONE},
    {NF_ODE_RK4, NF_GRAD_BACKSOLVE},   {NF_ODE_RK4, NF_GRAD_DISCRETE},
    {NF_ODE_DOPRI5, NF_GRAD_NONE},     {NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE},
    {NF_ODE_DOPRI5, NF_GRAD_DISCRETE}, {NF_ODE_ADAMS, NF_GRAD_NONE},
    {NF_ODE_ADAMS, NF_GRAD_BACKSOLVE}, {NF_ODE_ADAMS, NF_GRAD_CHECKPOINT},
    {NF_ODE_BDF, NF_GRAD_NONE},        {NF_ODE_BDF, NF_GRAD_BACKSOLVE},
    {NF_ODE_BDF, NF_GRAD_CHECKPOINT},
};
#define N_RESIZE_CASES (sizeof resize_cases / sizeof *resize_cases)

START_TEST(test_resize_bit_identical)
{
  /* an ode of capacity 4 copies (12 states, 15 parameters) resized through a sequence of
     sizes, alternating with the full one, gives bit for bit what a fresh nf_ode_new of
     each size gives (solution, gradient, counters); tol 1e-6, 20 fixed steps. EULER,
     RK4, DOPRI5 resize without an allocation; CVODES builds memory only for a size
     that is neither the full one nor the most recent other one. */
  nf_ode_opts o = opts_of(resize_cases[_i].method, resize_cases[_i].grad, 1e-6, 20);
  int cvodes = o.method >= NF_ODE_ADAMS;
  size_t backends = o.grad == NF_GRAD_BACKSOLVE ? 2 : 1;
  static const size_t seq[][2] = {{2, NET_P}, {4, NET_P}, {2, NET_P}, {4, NET_P}, {2, NET_P},
                                  {3, NET_P}, {3, 0},     {4, NET_P}, {1, NET_P}, {4, NET_P},
                                  {1, NET_P}, {4, NET_P}};
  net p = make_net();
  size_t before_new = n_allocs;
  nf_ode *ode = nf_ode_new(NET_N * BATCH_MAX, NET_P, &o);
  size_t allocs_new = n_allocs - before_new;
  ck_assert_ptr_nonnull(ode);
  ck_assert_uint_gt(allocs_new, 0); /* the counter sees the library's allocations */
  ck_assert_uint_eq(nf_ode_capacity(ode), NET_N * BATCH_MAX);
  size_t other_k = 0, other_nt = 0, want_builds = 0;
  for (size_t s = 0; s < sizeof seq / sizeof *seq; s++) {
    size_t k = seq[s][0], nt = seq[s][1];
    int full = k == BATCH_MAX && nt == NET_P, same = k == other_k && nt == other_nt;
    if (!full && !same) {
      want_builds += backends;
      other_k = k;
      other_nt = nt;
    }
    size_t before = n_allocs; /* (no check assertion in between: Check allocates) */
    nf_status st = nf_ode_resize(ode, NET_N * k, nt);
    size_t allocs = n_allocs - before;
    ck_assert_msg(st == NF_OK, "resize: %s", nf_errmsg());
    if (!cvodes) ck_assert_uint_eq(allocs, 0);
    ck_assert_uint_eq(ode->builds, cvodes ? want_builds : 0);
    batch_result got = batch_run(ode, &p, k, nt);
    nf_ode *fresh = nf_ode_new(NET_N * k, nt, &o);
    batch_result want = batch_run(fresh, &p, k, nt);
    nf_ode_free(fresh);
    ck_assert_msg(memcmp(&got, &want, sizeof got) == 0, "step %zu (k = %zu, n_theta = %zu): "
                  "resized and fresh results differ", s, k, nt);
  }
  ck_assert_uint_eq(nf_ode_capacity(ode), NET_N * BATCH_MAX);
  nf_ode_free(ode);
}
END_TEST

START_TEST(test_resize_refuses)
{
  /* sizes beyond the capacity (or n = 0) are refused, naming them; the size stays, the
     recording ends either way */
  net p = make_net();
  bnet b = {&p, 2};
  nf_ode_system sys = {.rhs = bnet_rhs, .vjp = bnet_vjp, .jvp = bnet_jvp, .user = &b};
  nf_ode_opts o = opts_of(NF_ODE_BDF, NF_GRAD_CHECKPOINT, 1e-6, 20);
  nf_ode *ode = nf_ode_new(6, NET_P, &o);
  double y[6] = {0.4, -0.8, 0.3, 0.5, -0.7, 0.4}, g[6];
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1, y), NF_OK);
  ck_assert_int_eq(nf_ode_resize(ode, 7, NET_P), NF_EINVAL);
  ck_assert_msg(strstr(nf_errmsg(), "n = 7") && strstr(nf_errmsg(), "n_theta = 15") &&
                    strstr(nf_errmsg(), "6"),
                "message: %s", nf_errmsg());
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, y, g, NULL, NULL, NULL), NF_ESTATE);
  ck_assert_int_eq(nf_ode_resize(ode, 3, NET_P + 1), NF_EINVAL);
  ck_assert_msg(strstr(nf_errmsg(), "n_theta = 16"), "message: %s", nf_errmsg());
  ck_assert_int_eq(nf_ode_resize(ode, 0, 0), NF_EINVAL);
  ck_assert_int_eq(nf_ode_resize(NULL, 3, 0), NF_EINVAL);
  ck_assert_uint_eq(nf_ode_size(ode), 6);
  ck_assert_uint_eq(nf_ode_size(NULL), 0);
  ck_assert_uint_eq(nf_ode_capacity(NULL), 0);
  ck_assert_int_eq(nf_ode_solve(ode, &sys, 0, 1, y), NF_OK);
  ck_assert_int_eq(nf_ode_gradient(ode, &sys, y, g, NULL, NULL, NULL), NF_OK);
  nf_ode_free(ode);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ode");
  TCase *tc = tcase_create("ode");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_defaults_and_parse);
  tcase_add_test(tc, test_bad_options);
  tcase_add_loop_test(tc, test_linear_both_directions, 0, N_METHODS);
  tcase_add_loop_test(tc, test_logistic_both_directions, 0, N_METHODS);
  tcase_add_test(tc, test_fixed_step_order);
  tcase_add_loop_test(tc, test_tolerance_scaling, 0, 3);
  tcase_add_test(tc, test_stiff_bdf_beats_adams);
  tcase_add_test(tc, test_counters);
  tcase_add_loop_test(tc, test_reuse_and_empty_interval, 0, N_METHODS);
  tcase_add_loop_test(tc, test_gradient_modes, 0, (int)N_GRAD_CASES);
  tcase_add_test(tc, test_gradient_modes_agree);
  tcase_add_loop_test(tc, test_gradient_linear_exact, 0, (int)N_GRAD_CASES);
  tcase_add_test(tc, test_gradient_repeat_and_seminorm);
  tcase_add_loop_test(tc, test_gradient_empty_interval, 0, (int)N_GRAD_CASES);
  tcase_add_loop_test(tc, test_failures, 0, N_METHODS);
  tcase_add_loop_test(tc, test_degenerate_spans, 0, (int)N_SPAN_CASES);
  tcase_add_test(tc, test_memory_limits);
  tcase_add_loop_test(tc, test_nonfinite_rhs, 0, N_METHODS);
  tcase_add_test(tc, test_replay_state);
  tcase_add_loop_test(tc, test_resize_bit_identical, 0, (int)N_RESIZE_CASES);
  tcase_add_test(tc, test_resize_refuses);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
