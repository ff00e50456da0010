/* tests/test_odenet.c — the CNF dynamics network: f against a naive per-row
   reference, J v and u^T J against central differences, exact and Hutchinson
   traces, the RNODE terms, and the second-order adjoint gradient of
   S = sum_i [a_i . f_i + w_i tr_i + wk_i |f_i|^2 + wj_i j_i] against central
   differences of S, for every layer kind x activation, with and without context. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

enum { N_ROWS = 5, MAXW = 80 };
static const double T0 = 0.37; /* time of every check */
static const double H = 1e-5;  /* central-difference step */

/* ---- fixture: a net, its parameters, a batch and a workspace ---- */

typedef struct fixture {
  nf_odenet *net;
  nf_odenet_kind kind;
  nf_odenet_act act;
  size_t dim, c, n, np, n_hidden, hidden[4];
  double *theta, *z, *ctx, *work;
  double *f, *tr, *kin, *jac; /* scratch outputs for S */
} fixture;

static fixture fixture_new(nf_odenet_kind kind, nf_odenet_act act, size_t dim, size_t c,
                           size_t n_hidden, const size_t *hidden, size_t n, uint64_t seed)
{
  fixture fx = {.kind = kind, .act = act, .dim = dim, .c = c, .n = n, .n_hidden = n_hidden};
  for (size_t l = 0; l < n_hidden; l++) fx.hidden[l] = hidden[l];
  fx.net = nf_odenet_new(dim, c, n_hidden, hidden, kind, act);
  ck_assert_msg(fx.net != NULL, "nf_odenet_new: %s", nf_errmsg());
  fx.np = nf_odenet_n_params(fx.net);
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  fx.theta = calloc(fx.np, sizeof *fx.theta);
  fx.z = calloc(n * dim, sizeof *fx.z);
  fx.ctx = c ? calloc(n * c, sizeof *fx.ctx) : NULL;
  fx.work = calloc(nf_odenet_work_size(fx.net, n, 1), sizeof *fx.work);
  fx.f = calloc(n * dim, sizeof *fx.f);
  fx.tr = calloc(n, sizeof *fx.tr);
  fx.kin = calloc(n, sizeof *fx.kin);
  fx.jac = calloc(n, sizeof *fx.jac);
  ck_assert_int_eq(nf_odenet_init(fx.net, &rng, fx.theta), NF_OK);
  th_randn(&rng, n * dim, 1.0, fx.z);
  if (c) th_randn(&rng, n * c, 1.0, fx.ctx);
  return fx;
}

static void fixture_free(fixture *fx)
{
  nf_odenet_free(fx->net);
  free(fx->theta); free(fx->z); free(fx->ctx); free(fx->work);
  free(fx->f); free(fx->tr); free(fx->kin); free(fx->jac);
}

/* The configurations every check runs: kind x activation x dim {2, 3} x ctx {0, 2},
   hidden 8, 8. */
enum { N_CONFIGS = 3 * 3 * 2 * 2 };
static fixture config(int i, size_t n, uint64_t seed)
{
  static const size_t hidden[] = {8, 8};
  return fixture_new((nf_odenet_kind)(i % 3), (nf_odenet_act)(i / 3 % 3), 2 + (size_t)(i / 9 % 2),
                     (size_t)(i / 18) * 2, 2, hidden, n, seed + (uint64_t)i);
}

static const char *config_name(const fixture *fx)
{
  static char buf[96];
  static const char *kinds[] = {"concatsquash", "concat", "sinusoidal"};
  static const char *acts[] = {"tanh", "softplus", "swish"};
  snprintf(buf, sizeof buf, "%s/%s dim %zu ctx %zu", kinds[fx->kind], acts[fx->act], fx->dim,
           fx->c);
  return buf;
}

/* ---- naive per-row reference of f (plain loops over the documented layout) ---- */

static double ref_act(nf_odenet_act act, double x)
{
  switch (act) {
  case NF_ODENET_TANH: return tanh(x);
  case NF_ODENET_SOFTPLUS: return log1p(exp(x));
  case NF_ODENET_SWISH: return x / (1.0 + exp(-x));
  }
  return NAN;
}

/* f(t, z, ctx) of one row. */
static void ref_f(const fixture *fx, const double *theta, double t, const double *z,
                  const double *ctx, double *f)
{
  double h[MAXW], y[MAXW];
  size_t p = fx->dim + fx->c, L = fx->n_hidden + 1;
  for (size_t i = 0; i < fx->dim; i++) h[i] = z[i];
  for (size_t i = 0; i < fx->c; i++) h[fx->dim + i] = ctx[i];
  const double *th = theta;
  for (size_t l = 0; l < L; l++) {
    size_t q = l + 1 < L ? fx->hidden[l] : fx->dim;
    const double *W = th, *tp = th + p * q;
    for (size_t j = 0; j < q; j++) {
      double s = 0;
      for (size_t i = 0; i < p; i++) s += W[j * p + i] * h[i];
      if (fx->kind == NF_ODENET_CONCATSQUASH) {
        double gate = 1.0 / (1.0 + exp(-(tp[q + j] * t + tp[2 * q + j])));
        y[j] = (s + tp[j]) * gate + tp[3 * q + j] * t;
      } else if (fx->kind == NF_ODENET_CONCAT) {
        y[j] = s + tp[j] * t + tp[q + j];
      } else {
        y[j] = s + tp[8 * q + j];
        for (int k = 0; k < 4; k++) {
          double w = (double)(1 << k);
          y[j] += tp[8 * j + 2 * k] * sin(w * t) + tp[8 * j + 2 * k + 1] * cos(w * t);
        }
      }
      if (l + 1 < L) y[j] = ref_act(fx->act, y[j]);
    }
    th += p * q + (fx->kind == NF_ODENET_CONCATSQUASH ? 4 * q
                   : fx->kind == NF_ODENET_CONCAT     ? 2 * q
                                                      : 9 * q);
    p = q;
    for (size_t j = 0; j < q; j++) h[j] = y[j];
  }
  for (size_t j = 0; j < fx->dim; j++) f[j] = h[j];
}

/* ---- small wrappers ---- */

static void eval(const fixture *fx, const double *theta, double t, const double *z,
                 const double *ctx, double *f)
{
  nf_status st = nf_odenet_eval(fx->net, theta, fx->n, t, z, ctx, f, fx->work);
  ck_assert_msg(st == NF_OK, "eval: %s", nf_errmsg());
}

static void jvp(const fixture *fx, const double *v, double *jv)
{
  nf_status st = nf_odenet_jvp(fx->net, fx->theta, fx->n, T0, fx->z, fx->ctx, v, NULL, jv,
                               fx->work);
  ck_assert_msg(st == NF_OK, "jvp: %s", nf_errmsg());
}

/* Central-difference Jacobian of row i (dim x dim, J[a * dim + b] = df_a/dz_b). */
static void fd_jacobian(const fixture *fx, size_t i, double *J)
{
  size_t d = fx->dim, n = fx->n;
  double *zp = malloc(n * d * sizeof *zp), *fp = malloc(n * d * sizeof *fp),
         *fm = malloc(n * d * sizeof *fm);
  for (size_t b = 0; b < d; b++) {
    memcpy(zp, fx->z, n * d * sizeof *zp);
    zp[i * d + b] += H;
    eval(fx, fx->theta, T0, zp, fx->ctx, fp);
    zp[i * d + b] -= 2 * H;
    eval(fx, fx->theta, T0, zp, fx->ctx, fm);
    for (size_t a = 0; a < d; a++) J[a * d + b] = (fp[i * d + a] - fm[i * d + a]) / (2 * H);
  }
  free(zp); free(fp); free(fm);
}

/* ---- f ---- */

START_TEST(eval_matches_reference)
{
  double worst = 0;
  for (int c = 0; c < N_CONFIGS; c++) {
    fixture fx = config(c, N_ROWS, 100);
    double f[N_ROWS * 3], r[N_ROWS * 3];
    eval(&fx, fx.theta, T0, fx.z, fx.ctx, f);
    for (size_t i = 0; i < fx.n; i++)
      ref_f(&fx, fx.theta, T0, fx.z + i * fx.dim, fx.ctx ? fx.ctx + i * fx.c : NULL,
            r + i * fx.dim);
    double err = th_max_abs_diff(fx.n * fx.dim, f, r);
    ck_assert_msg(err <= 1e-12, "%s: f differs from the reference by %g", config_name(&fx), err);
    worst = fmax(worst, err);
    fixture_free(&fx);
  }
  fprintf(stderr, "f vs naive reference: max abs error %.3g (tol 1e-12)\n", worst);
}
END_TEST

START_TEST(eval_without_hidden_layers)
{
  double worst = 0;
  for (int k = 0; k < 3; k++) {
    fixture fx = fixture_new((nf_odenet_kind)k, NF_ODENET_TANH, 3, 1, 0, NULL, N_ROWS, 7);
    double f[N_ROWS * 3], r[N_ROWS * 3];
    eval(&fx, fx.theta, T0, fx.z, fx.ctx, f);
    for (size_t i = 0; i < fx.n; i++)
      ref_f(&fx, fx.theta, T0, fx.z + i * 3, fx.ctx + i, r + i * 3);
    worst = fmax(worst, th_max_abs_diff(fx.n * 3, f, r));
    fixture_free(&fx);
  }
  ck_assert_double_le(worst, 1e-12);
}
END_TEST

/* ---- J v and u^T J ---- */

START_TEST(jvp_matches_finite_differences)
{
  double worst = 0, worst_dual = 0;
  for (int c = 0; c < N_CONFIGS; c++) {
    fixture fx = config(c, N_ROWS, 200);
    size_t nd = fx.n * fx.dim;
    double v[N_ROWS * 3], u[N_ROWS * 3], jv[N_ROWS * 3], fd[N_ROWS * 3], zp[N_ROWS * 3],
        fp[N_ROWS * 3], fm[N_ROWS * 3], ujac[N_ROWS * 3];
    nf_rng rng;
    nf_rng_seed(&rng, 300 + (uint64_t)c);
    th_randn(&rng, nd, 1.0, v);
    th_randn(&rng, nd, 1.0, u);
    jvp(&fx, v, jv);
    for (size_t k = 0; k < nd; k++) zp[k] = fx.z[k] + H * v[k];
    eval(&fx, fx.theta, T0, zp, fx.ctx, fp);
    for (size_t k = 0; k < nd; k++) zp[k] = fx.z[k] - H * v[k];
    eval(&fx, fx.theta, T0, zp, fx.ctx, fm);
    for (size_t k = 0; k < nd; k++) fd[k] = (fp[k] - fm[k]) / (2 * H);
    double err = th_rel_err(nd, jv, fd, 1e-3);
    ck_assert_msg(err <= 1e-7, "%s: jvp relative error %g", config_name(&fx), err);
    worst = fmax(worst, err);
    /* u^T (J v) == (u^T J) v per row */
    ck_assert_int_eq(nf_odenet_vjp(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, u, NULL, ujac,
                                   NULL, NULL, NULL, fx.work), NF_OK);
    for (size_t i = 0; i < fx.n; i++) {
      double a = 0, b = 0, s = 0;
      for (size_t j = 0; j < fx.dim; j++) {
        a += u[i * fx.dim + j] * jv[i * fx.dim + j];
        b += ujac[i * fx.dim + j] * v[i * fx.dim + j];
        s += fabs(u[i * fx.dim + j] * jv[i * fx.dim + j]);
      }
      double e = fabs(a - b) / fmax(s, 1.0);
      ck_assert_msg(e <= 1e-12, "%s: u.(Jv) - (u^T J).v = %g", config_name(&fx), a - b);
      worst_dual = fmax(worst_dual, e);
    }
    fixture_free(&fx);
  }
  fprintf(stderr, "jvp vs central differences: max rel error %.3g (tol 1e-7)\n", worst);
  fprintf(stderr, "u.(Jv) vs (u^T J).v: max rel error %.3g (tol 1e-12)\n", worst_dual);
}
END_TEST

/* ---- S and its finite-difference gradient ---- */

/* Weights of S = sum_i [a_i . f_i + w_i tr_i + wk_i k_i + wj_i j_i]; NULL = absent. */
typedef struct weights {
  const double *probe, *a, *w, *wk, *wj;
} weights;

/* s_i (n values) of S at (theta, t, z, ctx), through nf_odenet_trace. */
static void rows_of_S(fixture *fx, const weights *wt, const double *theta, double t,
                      const double *z, const double *ctx, double *s)
{
  nf_status st = nf_odenet_trace(fx->net, theta, fx->n, t, z, ctx, wt->probe, fx->f, fx->tr,
                                 fx->kin, fx->jac, fx->work);
  ck_assert_msg(st == NF_OK, "trace: %s", nf_errmsg());
  for (size_t i = 0; i < fx->n; i++) {
    s[i] = 0;
    for (size_t j = 0; wt->a && j < fx->dim; j++) s[i] += wt->a[i * fx->dim + j] * fx->f[i * fx->dim + j];
    if (wt->w) s[i] += wt->w[i] * fx->tr[i];
    if (wt->wk) s[i] += wt->wk[i] * fx->kin[i];
    if (wt->wj) s[i] += wt->wj[i] * fx->jac[i];
  }
}

static double sum(size_t n, const double *s)
{
  double t = 0;
  for (size_t i = 0; i < n; i++) t += s[i];
  return t;
}

/* Gradients of S. */
typedef struct grads {
  double *z, *theta, t, *ctx;
} grads;

static grads grads_new(const fixture *fx)
{
  grads g = {calloc(fx->n * fx->dim, sizeof(double)), calloc(fx->np, sizeof(double)), 0,
             calloc(fx->n * fx->c + 1, sizeof(double))};
  return g;
}

static void grads_free(grads *g)
{
  free(g->z); free(g->theta); free(g->ctx);
}

/* Per-row central differences of S along column j of a row-major n x w array x. */
static void fd_rows(fixture *fx, const weights *wt, double *x, size_t w, double *grad)
{
  double sp[N_ROWS], sm[N_ROWS];
  for (size_t j = 0; j < w; j++) {
    for (size_t i = 0; i < fx->n; i++) x[i * w + j] += H;
    rows_of_S(fx, wt, fx->theta, T0, fx->z, fx->ctx, sp);
    for (size_t i = 0; i < fx->n; i++) x[i * w + j] -= 2 * H;
    rows_of_S(fx, wt, fx->theta, T0, fx->z, fx->ctx, sm);
    for (size_t i = 0; i < fx->n; i++) {
      x[i * w + j] += H;
      grad[i * w + j] = (sp[i] - sm[i]) / (2 * H);
    }
  }
}

/* Central-difference gradient of S with respect to z, theta, t and ctx. */
static grads fd_grads(fixture *fx, const weights *wt)
{
  grads g = grads_new(fx);
  double sp[N_ROWS], sm[N_ROWS];
  fd_rows(fx, wt, fx->z, fx->dim, g.z);
  if (fx->c) fd_rows(fx, wt, fx->ctx, fx->c, g.ctx);
  for (size_t k = 0; k < fx->np; k++) {
    double keep = fx->theta[k];
    fx->theta[k] = keep + H;
    rows_of_S(fx, wt, fx->theta, T0, fx->z, fx->ctx, sp);
    fx->theta[k] = keep - H;
    rows_of_S(fx, wt, fx->theta, T0, fx->z, fx->ctx, sm);
    fx->theta[k] = keep;
    g.theta[k] = (sum(fx->n, sp) - sum(fx->n, sm)) / (2 * H);
  }
  rows_of_S(fx, wt, fx->theta, T0 + H, fx->z, fx->ctx, sp);
  rows_of_S(fx, wt, fx->theta, T0 - H, fx->z, fx->ctx, sm);
  g.t = (sum(fx->n, sp) - sum(fx->n, sm)) / (2 * H);
  return g;
}

/* Largest norm-wise relative error of the four gradients. */
static double grads_err(const fixture *fx, const grads *g, const grads *ref)
{
  double e = th_rel_err(fx->n * fx->dim, g->z, ref->z, 1e-3);
  e = fmax(e, th_rel_err(fx->np, g->theta, ref->theta, 1e-3));
  e = fmax(e, th_rel_err(1, &g->t, &ref->t, 1e-3));
  if (fx->c) e = fmax(e, th_rel_err(fx->n * fx->c, g->ctx, ref->ctx, 1e-3));
  return e;
}

START_TEST(vjp_matches_finite_differences)
{
  double worst = 0;
  for (int c = 0; c < N_CONFIGS; c++) {
    fixture fx = config(c, N_ROWS, 400);
    double u[N_ROWS * 3];
    nf_rng rng;
    nf_rng_seed(&rng, 500 + (uint64_t)c);
    th_randn(&rng, fx.n * fx.dim, 1.0, u);
    weights wt = {.a = u};
    grads g = grads_new(&fx), ref = fd_grads(&fx, &wt);
    ck_assert_int_eq(nf_odenet_vjp(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, u, NULL, g.z,
                                   g.theta, &g.t, fx.c ? g.ctx : NULL, fx.work), NF_OK);
    double err = grads_err(&fx, &g, &ref);
    ck_assert_msg(err <= 1e-7, "%s: vjp relative error %g", config_name(&fx), err);
    worst = fmax(worst, err);
    grads_free(&g);
    grads_free(&ref);
    fixture_free(&fx);
  }
  fprintf(stderr, "vjp (z, theta, t, ctx) vs central differences: max rel error %.3g (tol 1e-7)\n",
          worst);
}
END_TEST

/* ---- traces ---- */

START_TEST(exact_trace_matches_jacobian_diagonal)
{
  double worst_fd = 0, worst_jvp = 0, worst_frob = 0, worst_kin = 0;
  for (int c = 0; c < N_CONFIGS; c++) {
    fixture fx = config(c, N_ROWS, 600);
    size_t d = fx.dim;
    double f[N_ROWS * 3], tr[N_ROWS], kin[N_ROWS], jac[N_ROWS], J[9], e[N_ROWS * 3],
        je[N_ROWS * 3], sum_jvp[N_ROWS] = {0};
    ck_assert_int_eq(nf_odenet_trace(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, NULL, f, tr, kin,
                                     jac, fx.work), NF_OK);
    for (size_t k = 0; k < d; k++) { /* sum_k e_k^T J e_k through the jvp */
      memset(e, 0, sizeof e);
      for (size_t i = 0; i < fx.n; i++) e[i * d + k] = 1.0;
      jvp(&fx, e, je);
      for (size_t i = 0; i < fx.n; i++) sum_jvp[i] += je[i * d + k];
    }
    for (size_t i = 0; i < fx.n; i++) {
      fd_jacobian(&fx, i, J);
      double diag = 0, frob = 0, k2 = 0;
      for (size_t a = 0; a < d; a++) diag += J[a * d + a];
      for (size_t a = 0; a < d * d; a++) frob += J[a] * J[a];
      for (size_t a = 0; a < d; a++) k2 += f[i * d + a] * f[i * d + a];
      worst_fd = fmax(worst_fd, fabs(tr[i] - diag) / fmax(1.0, fabs(diag)));
      worst_jvp = fmax(worst_jvp, fabs(tr[i] - sum_jvp[i]) / fmax(1.0, fabs(tr[i])));
      worst_frob = fmax(worst_frob, fabs(jac[i] - frob) / fmax(1.0, frob));
      worst_kin = fmax(worst_kin, fabs(kin[i] - k2) / fmax(1.0, k2));
    }
    ck_assert_msg(worst_fd <= 1e-7 && worst_jvp <= 1e-12 && worst_frob <= 1e-7 &&
                      worst_kin <= 1e-14,
                  "%s: trace errors fd %g jvp %g, frobenius %g, kinetic %g", config_name(&fx),
                  worst_fd, worst_jvp, worst_frob, worst_kin);
    fixture_free(&fx);
  }
  fprintf(stderr, "exact trace vs FD Jacobian diagonal: max rel error %.3g (tol 1e-7)\n", worst_fd);
  fprintf(stderr, "exact trace vs sum_k e_k^T J e_k (jvp): max rel error %.3g (tol 1e-12)\n",
          worst_jvp);
  fprintf(stderr, "exact j = ||J||_F^2 vs FD Jacobian: max rel error %.3g (tol 1e-7)\n",
          worst_frob);
}
END_TEST

START_TEST(ffjord_toy_shape_exact_trace)
{
  static const size_t hidden[] = {64, 64, 64};
  enum { N = 64 };
  double worst = 0;
  for (int k = 0; k < 3; k++) {
    fixture fx = fixture_new((nf_odenet_kind)k, NF_ODENET_SOFTPLUS, 2, 0, 3, hidden, N, 11);
    double f[N * 2], tr[N], e[N * 2], je[N * 2], s[N] = {0};
    ck_assert_int_eq(nf_odenet_trace(fx.net, fx.theta, N, T0, fx.z, NULL, NULL, f, tr, NULL, NULL,
                                     fx.work), NF_OK);
    for (size_t d = 0; d < 2; d++) {
      for (size_t i = 0; i < N; i++) e[i * 2] = d == 0, e[i * 2 + 1] = d == 1;
      jvp(&fx, e, je);
      for (size_t i = 0; i < N; i++) s[i] += je[i * 2 + d];
    }
    for (size_t i = 0; i < N; i++) worst = fmax(worst, fabs(tr[i] - s[i]) / fmax(1.0, fabs(s[i])));
    /* FLOPs of the exact trace: (2*64 + 2*64*64 + 64*2) multiply-adds, 3 rows, 2 flops each */
    ck_assert_double_eq(nf_odenet_trace_flops(fx.net, 1), 2.0 * 3 * (128 + 2 * 4096 + 128));
    /* adjoint: forward, dS/dW (the same count) and dS/dX (primal row only in layer 0) */
    ck_assert_double_eq(nf_odenet_adjoint_flops(fx.net, 1),
                        2.0 * (2 * 3 * (128 + 2 * 4096 + 128) + 128 + 3 * (2 * 4096 + 128)));
    fixture_free(&fx);
  }
  ck_assert_double_le(worst, 1e-12);
  fprintf(stderr, "64-64-64: exact trace vs jvp trace: max rel error %.3g (tol 1e-12)\n", worst);
}
END_TEST

START_TEST(hutchinson_is_vjv_and_unbiased)
{
  enum { N = 10000 };
  double worst_vjv = 0, worst_z = 0;
  for (int c = 0; c < N_CONFIGS; c++) {
    fixture one = config(c, 1, 700);
    size_t d = one.dim;
    double f1[3], tr_exact;
    ck_assert_int_eq(nf_odenet_trace(one.net, one.theta, 1, T0, one.z, one.ctx, NULL, f1,
                                     &tr_exact, NULL, NULL, one.work), NF_OK);
    /* N copies of the same row, one Rademacher probe per copy */
    fixture fx = config(c, N, 700);
    for (size_t i = 0; i < N; i++) {
      memcpy(fx.z + i * d, one.z, d * sizeof *fx.z);
      if (fx.c) memcpy(fx.ctx + i * fx.c, one.ctx, fx.c * sizeof *fx.ctx);
    }
    double *v = malloc(N * d * sizeof *v), *jv = malloc(N * d * sizeof *jv),
           *f = malloc(N * d * sizeof *f), *tr = malloc(N * sizeof *tr),
           *jac = malloc(N * sizeof *jac);
    nf_rng rng;
    nf_rng_seed(&rng, 800 + (uint64_t)c);
    nf_rng_rademacher_fill(&rng, N * d, v);
    ck_assert_int_eq(nf_odenet_trace(fx.net, fx.theta, N, T0, fx.z, fx.ctx, v, f, tr, NULL, jac,
                                     fx.work), NF_OK);
    jvp(&fx, v, jv);
    double m = 0, m2 = 0;
    for (size_t i = 0; i < N; i++) {
      double vjv = 0, jj = 0;
      for (size_t j = 0; j < d; j++) {
        vjv += v[i * d + j] * jv[i * d + j];
        jj += jv[i * d + j] * jv[i * d + j];
      }
      worst_vjv = fmax(worst_vjv, fabs(tr[i] - vjv) / fmax(1.0, fabs(vjv)));
      worst_vjv = fmax(worst_vjv, fabs(jac[i] - jj) / fmax(1.0, jj));
      m += tr[i];
      m2 += tr[i] * tr[i];
    }
    m /= N;
    double se = sqrt((m2 / N - m * m) / N), zscore = fabs(m - tr_exact) / se;
    ck_assert_msg(zscore <= 4.0, "%s: Hutchinson mean %g vs exact %g (%g standard errors)",
                  config_name(&fx), m, tr_exact, zscore);
    worst_z = fmax(worst_z, zscore);
    free(v); free(jv); free(f); free(tr); free(jac);
    fixture_free(&fx);
    fixture_free(&one);
  }
  ck_assert_double_le(worst_vjv, 1e-12);
  fprintf(stderr, "Hutchinson v^T J v and |Jv|^2 vs jvp: max rel error %.3g (tol 1e-12)\n",
          worst_vjv);
  fprintf(stderr, "Hutchinson mean of 1e4 probes: max %.2f standard errors from exact (tol 4)\n",
          worst_z);
}
END_TEST

/* ---- the adjoint gradient ---- */

/* One variant of S: exact trace or a probe, with or without the RNODE terms. */
static double adjoint_error(int c, int use_probe, int regularise)
{
  fixture fx = config(c, N_ROWS, 900);
  size_t nd = fx.n * fx.dim;
  double probe[N_ROWS * 3], a[N_ROWS * 3], w[N_ROWS], wk[N_ROWS], wj[N_ROWS];
  nf_rng rng;
  nf_rng_seed(&rng, 1000 + (uint64_t)(4 * c + 2 * use_probe + regularise));
  th_randn(&rng, nd, 1.0, probe);
  th_randn(&rng, nd, 1.0, a);
  th_randn(&rng, fx.n, 1.0, w);
  th_randn(&rng, fx.n, 1.0, wk);
  th_randn(&rng, fx.n, 1.0, wj);
  weights wt = {use_probe ? probe : NULL, a, w, regularise ? wk : NULL, regularise ? wj : NULL};
  grads ref = fd_grads(&fx, &wt), g = grads_new(&fx);
  double f[N_ROWS * 3], tr[N_ROWS], kin[N_ROWS], jac[N_ROWS], s[N_ROWS];
  nf_status st = nf_odenet_adjoint(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, wt.probe, wt.a,
                                   wt.w, wt.wk, wt.wj, f, tr, kin, jac, g.z, g.theta, &g.t,
                                   fx.c ? g.ctx : NULL, fx.work);
  ck_assert_msg(st == NF_OK, "adjoint: %s", nf_errmsg());
  /* the forward values of the adjoint call are those of nf_odenet_trace */
  rows_of_S(&fx, &wt, fx.theta, T0, fx.z, fx.ctx, s);
  ck_assert_double_le(th_max_abs_diff(nd, f, fx.f), 0.0);
  ck_assert_double_le(th_max_abs_diff(fx.n, tr, fx.tr), 0.0);
  ck_assert_double_le(th_max_abs_diff(fx.n, kin, fx.kin), 0.0);
  ck_assert_double_le(th_max_abs_diff(fx.n, jac, fx.jac), 0.0);
  double err = grads_err(&fx, &g, &ref);
  ck_assert_msg(err <= 1e-6, "%s probe %d reg %d: adjoint relative error %g", config_name(&fx),
                use_probe, regularise, err);
  grads_free(&g);
  grads_free(&ref);
  fixture_free(&fx);
  return err;
}

START_TEST(adjoint_matches_finite_differences)
{
  double worst[2][2] = {{0}};
  for (int c = 0; c < N_CONFIGS; c++)
    for (int p = 0; p < 2; p++)
      for (int r = 0; r < 2; r++) worst[p][r] = fmax(worst[p][r], adjoint_error(c, p, r));
  for (int p = 0; p < 2; p++)
    for (int r = 0; r < 2; r++)
      fprintf(stderr, "adjoint grad (z, theta, t, ctx), %s trace%s: max rel error %.3g (tol 1e-6)\n",
              p ? "Hutchinson" : "exact", r ? " + kinetic + jacobian" : "", worst[p][r]);
}
END_TEST

/* g_params and g_ctx are added to; g_z and g_t are written. */
START_TEST(adjoint_adds_and_writes)
{
  fixture fx = config(19, N_ROWS, 1100); /* has context */
  ck_assert_uint_gt(fx.c, 0);
  double a[N_ROWS * 3], w[N_ROWS];
  nf_rng rng;
  nf_rng_seed(&rng, 12);
  th_randn(&rng, fx.n * fx.dim, 1.0, a);
  th_randn(&rng, fx.n, 1.0, w);
  grads g1 = grads_new(&fx), g2 = grads_new(&fx);
  ck_assert_int_eq(nf_odenet_adjoint(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, NULL, a, w, NULL,
                                     NULL, NULL, NULL, NULL, NULL, g1.z, g1.theta, &g1.t, g1.ctx,
                                     fx.work), NF_OK);
  for (size_t k = 0; k < fx.np; k++) g2.theta[k] = 1.0;
  for (size_t k = 0; k < fx.n * fx.c; k++) g2.ctx[k] = 2.0;
  for (size_t k = 0; k < fx.n * fx.dim; k++) g2.z[k] = 99.0;
  g2.t = 99.0;
  ck_assert_int_eq(nf_odenet_adjoint(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, NULL, a, w, NULL,
                                     NULL, NULL, NULL, NULL, NULL, g2.z, g2.theta, &g2.t, g2.ctx,
                                     fx.work), NF_OK);
  for (size_t k = 0; k < fx.np; k++) ck_assert_double_eq_tol(g2.theta[k], g1.theta[k] + 1.0, 1e-12);
  for (size_t k = 0; k < fx.n * fx.c; k++) ck_assert_double_eq_tol(g2.ctx[k], g1.ctx[k] + 2.0, 1e-12);
  ck_assert_double_le(th_max_abs_diff(fx.n * fx.dim, g2.z, g1.z), 0.0);
  ck_assert_double_eq(g2.t, g1.t);
  grads_free(&g1);
  grads_free(&g2);
  fixture_free(&fx);
}
END_TEST

/* Every call with a probe (or no trace) fits in nf_odenet_work_size(n, 0) doubles,
   allocated exactly so that valgrind sees any overrun; results equal those of the
   full-size workspace. */
START_TEST(probe_calls_fit_small_workspace)
{
  fixture fx = config(35, N_ROWS, 1300); /* sinusoidal/swish, dim 3, context 2 */
  size_t nd = fx.n * fx.dim;
  double *small = malloc(nf_odenet_work_size(fx.net, fx.n, 0) * sizeof *small);
  ck_assert_uint_lt(nf_odenet_work_size(fx.net, fx.n, 0), nf_odenet_work_size(fx.net, fx.n, 1));
  double v[N_ROWS * 3], f[2][N_ROWS * 3], jv[2][N_ROWS * 3], gz[2][N_ROWS * 3], tr[2][N_ROWS],
      gt[2];
  nf_rng rng;
  nf_rng_seed(&rng, 13);
  nf_rng_rademacher_fill(&rng, nd, v);
  for (int k = 0; k < 2; k++) {
    double *work = k ? small : fx.work;
    ck_assert_int_eq(nf_odenet_eval(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, f[k], work), NF_OK);
    ck_assert_int_eq(nf_odenet_jvp(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, v, NULL, jv[k], work),
                     NF_OK);
    ck_assert_int_eq(nf_odenet_vjp(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, v, NULL, gz[k], NULL,
                                   &gt[k], NULL, work), NF_OK);
    ck_assert_int_eq(nf_odenet_adjoint(fx.net, fx.theta, fx.n, T0, fx.z, fx.ctx, v, v, v, v, v,
                                       NULL, tr[k], NULL, NULL, gz[k], NULL, &gt[k], NULL, work),
                     NF_OK);
  }
  ck_assert_double_le(th_max_abs_diff(nd, f[0], f[1]), 0.0);
  ck_assert_double_le(th_max_abs_diff(nd, jv[0], jv[1]), 0.0);
  ck_assert_double_le(th_max_abs_diff(nd, gz[0], gz[1]), 0.0);
  ck_assert_double_le(th_max_abs_diff(fx.n, tr[0], tr[1]), 0.0);
  ck_assert_double_eq(gt[0], gt[1]);
  free(small);
  fixture_free(&fx);
}
END_TEST

/* ---- bad arguments ---- */

START_TEST(bad_arguments)
{
  size_t hidden[] = {8, 0};
  ck_assert_ptr_null(nf_odenet_new(0, 0, 1, hidden, NF_ODENET_CONCAT, NF_ODENET_TANH));
  ck_assert_ptr_null(nf_odenet_new(2, 0, 2, hidden, NF_ODENET_CONCAT, NF_ODENET_TANH));
  ck_assert_ptr_null(nf_odenet_new(2, 0, 2, NULL, NF_ODENET_CONCAT, NF_ODENET_TANH));
  ck_assert_ptr_null(nf_odenet_new(2, 0, 1, hidden, (nf_odenet_kind)7, NF_ODENET_TANH));
  ck_assert_ptr_null(nf_odenet_new(2, 0, 1, hidden, NF_ODENET_CONCAT, (nf_odenet_act)7));
  ck_assert_str_ne(nf_errmsg(), "");
  nf_odenet_free(NULL);
  ck_assert_uint_eq(nf_odenet_n_params(NULL), 0);
  ck_assert_uint_eq(nf_odenet_work_size(NULL, 10, 1), 0);

  nf_odenet_kind kind;
  nf_odenet_act act;
  ck_assert_int_eq(nf_odenet_kind_parse("sinusoidal", &kind), NF_OK);
  ck_assert_int_eq(kind, NF_ODENET_SINUSOIDAL);
  ck_assert_int_eq(nf_odenet_act_parse("swish", &act), NF_OK);
  ck_assert_int_eq(act, NF_ODENET_SWISH);
  ck_assert_int_eq(nf_odenet_kind_parse("resnet", &kind), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_act_parse("relu", &act), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_act_parse(NULL, &act), NF_EINVAL);

  fixture fx = config(18, N_ROWS, 1200); /* dim 2, context 2 */
  ck_assert_uint_eq(fx.c, 2);
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  ck_assert_int_eq(nf_odenet_init(NULL, &rng, fx.theta), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_init(fx.net, NULL, fx.theta), NF_EINVAL);
  double f[N_ROWS * 2], tr[N_ROWS], gz[N_ROWS * 2], v[N_ROWS * 2] = {0};
  for (size_t k = 0; k < N_ROWS * 2; k++) f[k] = gz[k] = -7.0;
  const nf_odenet *net = fx.net;
  ck_assert_int_eq(nf_odenet_eval(NULL, fx.theta, 5, T0, fx.z, fx.ctx, f, fx.work), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_eval(net, NULL, 5, T0, fx.z, fx.ctx, f, fx.work), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_eval(net, fx.theta, 0, T0, fx.z, fx.ctx, f, fx.work), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_eval(net, fx.theta, 5, T0, NULL, fx.ctx, f, fx.work), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_eval(net, fx.theta, 5, T0, fx.z, NULL, f, fx.work), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_eval(net, fx.theta, 5, T0, fx.z, fx.ctx, NULL, fx.work), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_eval(net, fx.theta, 5, T0, fx.z, fx.ctx, f, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_eval(net, fx.theta, 5, NAN, fx.z, fx.ctx, f, fx.work),
                   NF_ENONFINITE);
  ck_assert_int_eq(nf_odenet_jvp(net, fx.theta, 5, T0, fx.z, fx.ctx, NULL, NULL, f, fx.work),
                   NF_EINVAL);
  ck_assert_int_eq(nf_odenet_jvp(net, fx.theta, 5, T0, fx.z, fx.ctx, v, NULL, NULL, fx.work),
                   NF_EINVAL);
  ck_assert_int_eq(nf_odenet_vjp(net, fx.theta, 5, T0, fx.z, fx.ctx, NULL, NULL, gz, NULL, NULL,
                                 NULL, fx.work), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_trace(net, fx.theta, 5, T0, fx.z, fx.ctx, NULL, f, NULL, NULL, NULL,
                                   fx.work), NF_EINVAL);
  ck_assert_int_eq(nf_odenet_adjoint(net, fx.theta, 0, T0, fx.z, fx.ctx, NULL, NULL, NULL, NULL,
                                     NULL, f, tr, NULL, NULL, gz, NULL, NULL, NULL, fx.work),
                   NF_EINVAL);
  fx.z[3] = INFINITY;
  ck_assert_int_eq(nf_odenet_trace(net, fx.theta, 5, T0, fx.z, fx.ctx, NULL, f, tr, NULL, NULL,
                                   fx.work), NF_ENONFINITE);
  fx.z[3] = 0.0;
  fx.ctx[1] = NAN;
  ck_assert_int_eq(nf_odenet_adjoint(net, fx.theta, 5, T0, fx.z, fx.ctx, NULL, NULL, NULL, NULL,
                                     NULL, f, tr, NULL, NULL, gz, NULL, NULL, NULL, fx.work),
                   NF_ENONFINITE);
  fx.ctx[1] = 0.0;
  v[4] = NAN;
  ck_assert_int_eq(nf_odenet_adjoint(net, fx.theta, 5, T0, fx.z, fx.ctx, v, NULL, NULL, NULL,
                                     NULL, f, tr, NULL, NULL, gz, NULL, NULL, NULL, fx.work),
                   NF_ENONFINITE);
  ck_assert_str_ne(nf_errmsg(), "");
  for (size_t k = 0; k < N_ROWS * 2; k++) { /* outputs untouched on error */
    ck_assert_double_eq(f[k], -7.0);
    ck_assert_double_eq(gz[k], -7.0);
  }
  fixture_free(&fx);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("odenet");
  TCase *tc = tcase_create("odenet");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, eval_matches_reference);
  tcase_add_test(tc, eval_without_hidden_layers);
  tcase_add_test(tc, jvp_matches_finite_differences);
  tcase_add_test(tc, vjp_matches_finite_differences);
  tcase_add_test(tc, exact_trace_matches_jacobian_diagonal);
  tcase_add_test(tc, ffjord_toy_shape_exact_trace);
  tcase_add_test(tc, hutchinson_is_vjv_and_unbiased);
  tcase_add_test(tc, adjoint_matches_finite_differences);
  tcase_add_test(tc, adjoint_adds_and_writes);
  tcase_add_test(tc, probe_calls_fit_small_workspace);
  tcase_add_test(tc, bad_arguments);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
