/* tests/test_objective.c — objectives beyond maximum likelihood (issue 9):
   reparametrised sampling with gradients (nf_flow_sample_grad_ws), the
   weighted objectives (nf_objective_grad_ws: reverse KL, E_q[F], entropy,
   mixed; total and STL estimators), importance weights and the targets.

   Checked: the reverse-KL gradient of an affine flow against its closed form
   at the same draws; E_q[F] and mixed objectives of a nonlinear flow against
   central differences of the common-random-numbers estimate; the entropy
   estimate against the Gaussian's closed form, its gradient, and the naive
   (samples-held-fixed) gradient that differs from it (lecture 004's "wrong
   gradient!"); STL and total estimators unbiased, STL exactly 0 at q = p;
   importance weights at q = p and a reweighted mean; sample_grad_ws against
   central differences for every recipe and every CNF adjoint mode, and g_ctx
   of conditional flows; two threads bit for bit as serial; the built-in
   targets; bad input. Every draw comes from a stated seed. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "nflow/layer_impl.h" /* nf_set_error, for a user cotangent's message */

static const double LOG_2PI = 1.83787706640934548356;

#define CLOSED_TOL 1e-8   /* gradient vs its closed form at the same draws (norm-wise relative) */
#define FD_TOL 1e-6       /* vs central differences, explicit maps (norm-wise relative) */
#define FD_H 1e-5         /* their step */
#define SOLVE_FD_TOL 1e-5 /* vs central differences through an ODE solved to 1e-10 (as test_cnf) */
#define N_SE 4.0          /* Monte Carlo checks: within this many standard errors */

/* ---- helpers ---- */

/* A workspace of n rows, asserted. */
static nf_flow_ws *ws_of(const nf_flow *flow, size_t n)
{
  nf_flow_ws *ws = nf_flow_ws_new(flow, n);
  ck_assert_msg(ws != NULL, "nf_flow_ws_new: %s", nf_errmsg());
  return ws;
}

/* diag_normal base (mu, log_sigma) then one affine layer (shift b, log_scale a) on
   R^d: x = b + e^a (mu + e^ls eps); theta = [mu, ls, b, a] (4 d). */
static nf_flow *affine_flow(size_t d, const double *theta)
{
  nf_flow *flow = nf_flow_new(d, 0, NF_BASE_DIAG_NORMAL);
  ck_assert_ptr_nonnull(flow);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(d)), NF_OK);
  ck_assert_uint_eq(nf_flow_n_params(flow), 4 * d);
  ck_assert_msg(nf_flow_set_params(flow, theta) == NF_OK, "set_params: %s", nf_errmsg());
  return flow;
}

/* The Gaussian q of an affine flow: mean m = b + e^a mu and sd s = e^(a + ls). */
static void affine_moments(size_t d, const double *theta, double *m, double *s)
{
  const double *mu = theta, *ls = theta + d, *b = theta + 2 * d, *a = theta + 3 * d;
  for (size_t j = 0; j < d; j++) {
    m[j] = b[j] + exp(a[j]) * mu[j];
    s[j] = exp(a[j] + ls[j]);
  }
}

/* weight x N(c, diag(t^2)): a one-component mixture, asserted. */
static nf_target *gauss_target(size_t d, double weight, const double *c, const double *t)
{
  nf_target *target = nf_target_mixture(d, 1, &weight, c, t);
  ck_assert_msg(target != NULL, "nf_target_mixture: %s", nf_errmsg());
  return target;
}

/* An objective's loss and gradient at the flow's theta, asserted. */
static double objective_at(const nf_objective *o, const nf_flow *flow, nf_flow_ws *ws,
                           size_t n, const double *eps, double *grad, double *log_w,
                           nf_objective_terms *terms)
{
  double loss = NAN;
  nf_status st = nf_objective_grad_ws(o, flow, ws, 5, n, eps, 0, NULL, NULL, &loss, grad, log_w,
                                      terms);
  ck_assert_msg(st == NF_OK, "nf_objective_grad_ws: %s", nf_errmsg());
  return loss;
}

/* A scalar function of the flow's theta (for central differences). */
typedef double (*theta_loss_fn)(const nf_flow *flow, void *user);

/* Central differences (step h) of loss in every parameter into fd; theta restored. */
static void fd_theta(nf_flow *flow, theta_loss_fn loss, void *user, double h, double *fd)
{
  size_t p = nf_flow_n_params(flow);
  double *theta = malloc(p * sizeof *theta);
  memcpy(theta, nf_flow_params(flow), p * sizeof *theta);
  for (size_t k = 0; k < p; k++) {
    double keep = theta[k], f[2];
    for (int s = 0; s < 2; s++) {
      theta[k] = keep + (s ? -h : h);
      ck_assert_msg(nf_flow_set_params(flow, theta) == NF_OK, "set_params: %s", nf_errmsg());
      f[s] = loss(flow, user);
    }
    theta[k] = keep;
    fd[k] = (f[0] - f[1]) / (2 * h);
  }
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
}

/* The objective's loss at fixed draws, as a function of theta. */
typedef struct objective_case {
  const nf_objective *o;
  nf_flow_ws *ws;
  size_t n;
  const double *eps;
  double *scratch; /* n_params */
} objective_case;

static double objective_loss(const nf_flow *flow, void *user)
{
  objective_case *c = user;
  return objective_at(c->o, flow, c->ws, c->n, c->eps, c->scratch, NULL, NULL);
}

/* Norm-wise relative error of the objective's gradient against central
   differences (step h) of its loss at the same n draws eps. */
static double objective_fd_error(const nf_objective *o, nf_flow *flow, size_t n,
                                 const double *eps, double h)
{
  size_t p = nf_flow_n_params(flow);
  nf_flow_ws *ws = ws_of(flow, n);
  double *grad = malloc(p * sizeof *grad), *fd = malloc(p * sizeof *fd);
  objective_case c = {o, ws, n, eps, malloc(p * sizeof(double))};
  objective_at(o, flow, ws, n, eps, grad, NULL, NULL);
  fd_theta(flow, objective_loss, &c, h, fd);
  double err = th_rel_err(p, grad, fd, 1e-3);
  free(grad); free(fd); free(c.scratch);
  nf_flow_ws_free(ws);
  return err;
}

/* A linear loss of the samples, L = sum_i (u_i . x_i + v_i log q(x_i)): its
   cotangents are the constants u (n x d) and v (n). */
typedef struct linear_loss {
  const double *u, *v;
} linear_loss;

static nf_status linear_cotangent(size_t n, size_t d, const double *x, const double *log_q,
                                  double *g_x, double *g_log_q, void *user)
{
  const linear_loss *l = user;
  (void)x;
  (void)log_q;
  memcpy(g_x, l->u, n * d * sizeof *g_x);
  memcpy(g_log_q, l->v, n * sizeof *g_log_q);
  return NF_OK;
}

/* x = T(mu + sigma eps) and log q(x) = log N(z; mu, sigma) - log|det T'(z)|
   by the evaluation verb nf_flow_transform_ws: a path independent of
   sample_grad's. */
static void sample_by_transform(const nf_flow *flow, nf_flow_ws *ws, size_t n, const double *eps,
                                const double *ctx, double *x, double *log_q)
{
  size_t d = nf_flow_dim(flow);
  const double *bp = nf_flow_base_params(flow);
  int diag = nf_flow_base(flow) == NF_BASE_DIAG_NORMAL;
  double *z = malloc(n * d * sizeof *z);
  for (size_t i = 0; i < n; i++) {
    log_q[i] = 0;
    for (size_t j = 0; j < d; j++) {
      double e = eps[i * d + j];
      z[i * d + j] = diag ? bp[j] + exp(bp[d + j]) * e : e;
      log_q[i] -= 0.5 * LOG_2PI + 0.5 * e * e + (diag ? bp[d + j] : 0.0);
    }
  }
  double *logdet = malloc(n * sizeof *logdet);
  nf_status st = nf_flow_transform_ws(flow, ws, 9, NF_FORWARD, n, z, ctx, x, logdet);
  ck_assert_msg(st == NF_OK, "transform: %s", nf_errmsg());
  for (size_t i = 0; i < n; i++) log_q[i] -= logdet[i];
  free(z); free(logdet);
}

/* The linear loss at fixed draws and contexts, through sample_by_transform. */
typedef struct sample_case {
  nf_flow_ws *ws;
  size_t n;
  const double *eps, *u, *v;
  double *ctx;       /* n x ctx_dim or NULL; perturbed by fd of g_ctx */
  double *x, *log_q; /* scratch */
} sample_case;

static double sample_loss(const nf_flow *flow, void *user)
{
  sample_case *c = user;
  size_t nd = c->n * nf_flow_dim(flow);
  sample_by_transform(flow, c->ws, c->n, c->eps, c->ctx, c->x, c->log_q);
  double L = 0;
  for (size_t k = 0; k < nd; k++) L += c->u[k] * c->x[k];
  for (size_t i = 0; i < c->n; i++) L += c->v[i] * c->log_q[i];
  return L;
}

/* sample_grad_ws's errors: samples against the transform path, and g_theta
   and g_ctx (both accumulated onto 1s) against central differences. */
typedef struct sample_errors {
  double x, log_q, theta, ctx;
  double ctx_size; /* max |FD d L / d ctx|: that the context matters */
} sample_errors;

/* The checks above on n rows: eps, u, v ~ N(0, 1) from seed, seed + 1,
   seed + 2, contexts (conditional flow) from seed + 3; step h. */
static sample_errors sample_grad_errors(nf_flow *flow, size_t n, uint64_t seed, double h)
{
  size_t d = nf_flow_dim(flow), c = nf_flow_ctx_dim(flow), p = nf_flow_n_params(flow);
  double *eps = th_random_points(n, d, seed, 1.0), *u = th_random_points(n, d, seed + 1, 1.0);
  double *v = th_random_points(n, 1, seed + 2, 1.0);
  double *ctx = c ? th_random_points(n, c, seed + 3, 1.0) : NULL;
  double *x = malloc(n * d * sizeof *x), *log_q = malloc(n * sizeof *log_q);
  double *x_ref = malloc(n * d * sizeof *x), *log_q_ref = malloc(n * sizeof *log_q);
  double *g = malloc(p * sizeof *g), *fd = malloc(p * sizeof *fd);
  double *g_ctx = malloc((n * c + 1) * sizeof *g_ctx), *fd_ctx = malloc((n * c + 1) * sizeof *fd);
  nf_flow_ws *ws = ws_of(flow, n);
  for (size_t k = 0; k < p; k++) g[k] = 1.0;
  for (size_t k = 0; k < n * c; k++) g_ctx[k] = 1.0;
  linear_loss l = {u, v};
  nf_status st = nf_flow_sample_grad_ws(flow, ws, 7, n, eps, ctx, linear_cotangent, &l, x, log_q,
                                        c ? g_ctx : NULL, g);
  ck_assert_msg(st == NF_OK, "sample_grad_ws: %s", nf_errmsg());
  for (size_t k = 0; k < p; k++) g[k] -= 1.0;
  for (size_t k = 0; k < n * c; k++) g_ctx[k] -= 1.0;
  sample_errors e = {0, 0, 0, 0, 0};
  sample_by_transform(flow, ws, n, eps, ctx, x_ref, log_q_ref);
  e.x = th_max_abs_diff(n * d, x, x_ref);
  e.log_q = th_max_abs_diff(n, log_q, log_q_ref);
  sample_case sc = {ws, n, eps, u, v, ctx, x_ref, log_q_ref};
  fd_theta(flow, sample_loss, &sc, h, fd);
  e.theta = th_rel_err(p, g, fd, 1e-3);
  for (size_t k = 0; k < n * c; k++) {
    double keep = ctx[k], f[2];
    for (int s = 0; s < 2; s++) {
      ctx[k] = keep + (s ? -h : h);
      f[s] = sample_loss(flow, &sc);
    }
    ctx[k] = keep;
    fd_ctx[k] = (f[0] - f[1]) / (2 * h);
  }
  if (c) e.ctx = th_rel_err(n * c, g_ctx, fd_ctx, 1e-3);
  for (size_t k = 0; k < n * c; k++) e.ctx_size = fmax(e.ctx_size, fabs(fd_ctx[k]));
  nf_flow_ws_free(ws);
  free(eps); free(u); free(v); free(ctx); free(x); free(log_q); free(x_ref); free(log_q_ref);
  free(g); free(fd); free(g_ctx); free(fd_ctx);
  return e;
}

/* Replaces the flow's theta by theta + scale N(0, 1) (seed): a generic point
   instead of the recipes' identity start. Halves scale until the flow accepts it. */
static void perturb_theta(nf_flow *flow, double scale, uint64_t seed)
{
  size_t p = nf_flow_n_params(flow);
  double *noise = th_random_points(p, 1, seed, 1.0), *theta = malloc(p * sizeof *theta);
  nf_status st = NF_EINVAL;
  for (int tries = 0; tries < 6 && st; tries++, scale /= 2) {
    for (size_t k = 0; k < p; k++) theta[k] = nf_flow_params(flow)[k] + scale * noise[k];
    st = nf_flow_set_params(flow, theta);
  }
  ck_assert_msg(st == NF_OK, "perturb_theta: %s", nf_errmsg());
  free(noise); free(theta);
}

/* ---- 1. reverse KL of an affine flow: closed form at the same draws ---- */

/* The reverse-KL estimate of the affine flow theta = [mu, ls, b, a] (d each)
   against weight x N(c, diag(t^2)) at the n draws eps, its gradient into want
   (4 d) and each draw's log p~ - log q into log_w; returns the loss. With
   x_ij = b_j + e^a_j (mu_j + e^ls_j eps_ij), log q(x_i) = sum_j [-log(2 pi)/2
   - ls_j - a_j - eps_ij^2 / 2] and r_ij = (x_ij - c_j) / t_j^2 (= -d log p~/dx):
   L = mean_i [log q(x_i) - log p~(x_i)], dL/dmu_j = e^a_j mean_i r_ij,
   dL/dls_j = -1 + e^a_j e^ls_j mean_i r_ij eps_ij, dL/db_j = mean_i r_ij,
   dL/da_j = -1 + mean_i r_ij (x_ij - b_j). */
static double affine_reverse_kl(size_t d, size_t n, const double *theta, const double *eps,
                                const double *c, const double *t, double weight, double *want,
                                double *log_w)
{
  const double *mu = theta, *ls = theta + d, *b = theta + 2 * d, *a = theta + 3 * d;
  double loss = 0;
  memset(want, 0, 4 * d * sizeof *want);
  for (size_t i = 0; i < n; i++) {
    double log_q = 0, log_p = log(weight);
    for (size_t j = 0; j < d; j++) {
      double e = eps[i * d + j], x = b[j] + exp(a[j]) * (mu[j] + exp(ls[j]) * e);
      double r = (x - c[j]) / (t[j] * t[j]);
      log_q += -0.5 * LOG_2PI - ls[j] - a[j] - 0.5 * e * e;
      log_p += -0.5 * LOG_2PI - log(t[j]) - 0.5 * (x - c[j]) * (x - c[j]) / (t[j] * t[j]);
      want[j] += exp(a[j]) * r / n;
      want[d + j] += exp(a[j]) * exp(ls[j]) * r * e / n;
      want[2 * d + j] += r / n;
      want[3 * d + j] += r * (x - b[j]) / n;
    }
    loss += (log_q - log_p) / n;
    log_w[i] = log_p - log_q;
  }
  for (size_t j = 0; j < d; j++) {
    want[d + j] -= 1.0;
    want[3 * d + j] -= 1.0;
  }
  return loss;
}

/* d = 3, n = 50 draws eps (seed 101), target 2.5 N(c, diag(t^2)): the
   objective's loss (1e-12 relative), log_w (1e-12) and gradient (CLOSED_TOL
   relative) against affine_reverse_kl, for the affine flow (the base's mu,
   log_sigma and the layer's shift, log-scale) and for the base alone (no
   layer: the same with b = a = 0). log_w is left untouched by an objective
   whose reverse-KL weight is 0, target or not (the header). */
START_TEST(reverse_kl_gradient_of_affine_flow_is_closed_form)
{
  enum { D = 3, N = 50 };
  double theta[4 * D] = {0.3, -0.2, 0.5, -0.1, 0.2, 0.05, 0.1, 0.4, -0.3, 0.2, -0.3, 0.1};
  const double c[D] = {1.0, -0.5, 0.2}, t[D] = {0.7, 1.3, 1.1}, weight = 2.5;
  nf_target *target = gauss_target(D, weight, c, t);
  double *eps = th_random_points(N, D, 101, 1.0);
  for (int base_only = 0; base_only < 2; base_only++) {
    nf_flow *flow = base_only ? nf_flow_new(D, 0, NF_BASE_DIAG_NORMAL) : affine_flow(D, theta);
    if (base_only) {
      memset(theta + 2 * D, 0, 2 * D * sizeof *theta);
      ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
    }
    size_t p = nf_flow_n_params(flow);
    double want[4 * D], want_log_w[N], grad[4 * D], log_w[N];
    double want_loss = affine_reverse_kl(D, N, theta, eps, c, t, weight, want, want_log_w);
    nf_objective o = nf_objective_reverse_kl(target);
    nf_flow_ws *ws = ws_of(flow, N);
    nf_objective_terms terms;
    double loss = objective_at(&o, flow, ws, N, eps, grad, log_w, &terms);
    double e_grad = th_rel_err(p, grad, want, 1e-12);
    double e_loss = fabs(loss - want_loss) / fabs(want_loss);
    double e_log_w = th_max_abs_diff(N, log_w, want_log_w);
    printf("reverse KL, %s d = 3, n = 50: loss rel err %.2e, gradient rel err %.2e (tol %.0e), "
           "log_w max err %.2e\n", base_only ? "diag_normal base alone" : "affine flow", e_loss,
           e_grad, CLOSED_TOL, e_log_w);
    ck_assert_double_le(e_loss, 1e-12);
    ck_assert_double_le(e_grad, CLOSED_TOL);
    ck_assert_double_le(e_log_w, 1e-12);
    ck_assert(terms.reverse_kl == loss);
    ck_assert(isnan(terms.nll) && isnan(terms.expectation));
    nf_objective h = {0, 0, 0, 1.0, target, NULL, NF_GRAD_TOTAL, 1.0};
    for (size_t i = 0; i < N; i++) log_w[i] = 7;
    objective_at(&h, flow, ws, N, eps, grad, log_w, NULL);
    for (size_t i = 0; i < N; i++) ck_assert(log_w[i] == 7);
    nf_flow_ws_free(ws);
    nf_flow_free(flow);
  }
  free(eps);
  nf_target_free(target);
}
END_TEST

/* ---- 2. E_q[F] and mixed objectives of a nonlinear flow against central differences ---- */

/* A user observable: F(x) = sum_j sin(x_j) + x_0 x_1 / 2, gradient by hand. */
static int sine_observable(size_t n, size_t dim, const double *x, double *f, double *grad,
                           void *user)
{
  (void)user;
  for (size_t i = 0; i < n; i++) {
    const double *xi = x + i * dim;
    f[i] = 0.5 * xi[0] * xi[1];
    for (size_t j = 0; j < dim; j++) {
      f[i] += sin(xi[j]);
      if (grad) grad[i * dim + j] = cos(xi[j]) + (j < 2 ? 0.5 * xi[1 - j] : 0.0);
    }
  }
  return 0;
}

/* diag_normal base (mu = (0.1, -0.2), log sigma = (0.1, -0.1)), then an affine
   coupling (tanh, hidden 8), a reversal, a planar and a radial layer on R^2,
   layer parameters ~ N(0, 0.3^2) (seed 201). */
static nf_flow *nonlinear_flow(void)
{
  nf_rng rng;
  nf_rng_seed(&rng, 201);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_DIAG_NORMAL);
  unsigned char mask[2];
  size_t hidden[] = {8};
  nf_coupling_mask_half(2, 0, mask);
  nf_coupling_opts co = {nf_transformer_spec_default(NF_TRANSFORMER_AFFINE), mask, 1, hidden,
                         NF_ACT_TANH, NF_PRECISION_DOUBLE};
  nf_layer *layers[] = {nf_coupling_new(2, 0, &co, &rng), nf_reverse_new(2),
                        nf_planar_new(2, 1e-13, &rng), nf_radial_new(2, 1e-13, &rng)};
  for (size_t k = 0; k < 4; k++) ck_assert_int_eq(nf_flow_push(flow, layers[k]), NF_OK);
  size_t p = nf_flow_n_params(flow);
  double *theta = calloc(p, sizeof *theta);
  const double base[4] = {0.1, -0.2, 0.1, -0.1};
  memcpy(theta, base, sizeof base);
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++)
    th_randomize_params(nf_flow_layer(flow, k), &rng, 0.3, theta + nf_flow_param_offset(flow, k));
  ck_assert_msg(nf_flow_set_params(flow, theta) == NF_OK, "set_params: %s", nf_errmsg());
  free(theta);
  return flow;
}

/* n = 16 draws (seed 202). E_q[F] with F the double well's log p~ (values of
   order 1 to 10 here, so rounding in the loss is ~1e-15 and the step
   h = 1e-5 gives FD errors ~1e-10), weight 1; then the mixed objective
   0.7 KL(q || 2-component mixture) + 0.3 E_q[sin-observable] - 0.2 H[q],
   with the total and the STL estimator (STL's gradient is not that of the
   estimate, so it is compared with the total one only in expectation, test 5).
   Gradients (base and layers) to FD_TOL, norm-wise relative. */
START_TEST(expectation_and_mixed_gradients_match_finite_differences)
{
  enum { N = 16 };
  nf_flow *flow = nonlinear_flow();
  double *eps = th_random_points(N, 2, 202, 1.0);
  nf_target *well = nf_target_doublewell(), *sine = nf_target_new(2, sine_observable, NULL);
  const double w[2] = {0.4, 0.6}, m[4] = {-1, 0.5, 1, -0.5}, s[4] = {0.8, 1.2, 0.6, 0.9};
  nf_target *mix = nf_target_mixture(2, 2, w, m, s);
  ck_assert(well && sine && mix);
  nf_objective ef = {0, 0, 1.0, 0, NULL, well, NF_GRAD_TOTAL, 1.0};
  double e1 = objective_fd_error(&ef, flow, N, eps, FD_H);
  nf_objective mixed = {0, 0.7, 0.3, -0.2, mix, sine, NF_GRAD_TOTAL, 1.0};
  double e2 = objective_fd_error(&mixed, flow, N, eps, FD_H);
  printf("E_q[double well] (coupling, planar, radial; diag base; n = 16): gradient vs FD rel "
         "err %.2e; mixed KL + E_q[F] - H: %.2e (tol %.0e, h %.0e)\n", e1, e2, FD_TOL, FD_H);
  ck_assert_double_le(e1, FD_TOL);
  ck_assert_double_le(e2, FD_TOL);
  /* the mixed terms: each part the mean its single-term objective reports */
  nf_flow_ws *ws = ws_of(flow, N);
  size_t p = nf_flow_n_params(flow);
  double *g = malloc(p * sizeof *g);
  nf_objective_terms all, kl, fx;
  double loss = objective_at(&mixed, flow, ws, N, eps, g, NULL, &all);
  nf_objective only_kl = nf_objective_reverse_kl(mix), only_f = {0, 0, 1, 0, NULL, sine, 0, 1.0};
  objective_at(&only_kl, flow, ws, N, eps, g, NULL, &kl);
  objective_at(&only_f, flow, ws, N, eps, g, NULL, &fx);
  ck_assert_double_eq_tol(all.reverse_kl, kl.reverse_kl, 1e-14);
  ck_assert_double_eq_tol(all.expectation, fx.expectation, 1e-14);
  ck_assert_double_eq_tol(loss, 0.7 * all.reverse_kl + 0.3 * all.expectation - 0.2 * all.entropy,
                          1e-13);
  free(g);
  nf_flow_ws_free(ws);
  free(eps);
  nf_target_free(well); nf_target_free(sine); nf_target_free(mix);
  nf_flow_free(flow);
}
END_TEST

/* beta multiplies log p~: reverse KL against the double well at beta = 0.3
   equals reverse KL against a user target 0.3 x log p~ (loss, gradient and
   log weights, 1e-14 relative; same draws, seed 203); its gradient matches
   finite differences; beta outside [0, 1] is refused. */
typedef struct scaled_well {
  nf_target *well;
  double beta;
} scaled_well;

static int scaled_well_fn(size_t n, size_t d, const double *x, double *f, double *grad, void *user)
{
  const scaled_well *s = user;
  if (nf_target_eval(s->well, n, x, f, grad)) return 1;
  for (size_t i = 0; i < n; i++) f[i] *= s->beta;
  for (size_t k = 0; grad && k < n * d; k++) grad[k] *= s->beta;
  return 0;
}

START_TEST(tempered_target_is_the_scaled_target)
{
  enum { N = 16 };
  nf_flow *flow = nonlinear_flow();
  double *eps = th_random_points(N, 2, 203, 1.0);
  scaled_well sw = {nf_target_doublewell(), 0.3};
  nf_target *scaled = nf_target_new(2, scaled_well_fn, &sw);
  nf_objective tempered = nf_objective_reverse_kl(sw.well), plain = nf_objective_reverse_kl(scaled);
  tempered.beta = 0.3;
  nf_flow_ws *ws = ws_of(flow, N);
  size_t p = nf_flow_n_params(flow);
  double *g1 = malloc(p * sizeof *g1), *g2 = malloc(p * sizeof *g2), w1[N], w2[N], gmax = 0;
  double l1 = objective_at(&tempered, flow, ws, N, eps, g1, w1, NULL);
  double l2 = objective_at(&plain, flow, ws, N, eps, g2, w2, NULL);
  ck_assert_double_eq_tol(l1, l2, 1e-14 * fabs(l2));
  for (size_t k = 0; k < p; k++) gmax = fmax(gmax, fabs(g2[k]));
  for (size_t k = 0; k < p; k++) ck_assert_double_eq_tol(g1[k], g2[k], 1e-14 * gmax);
  for (size_t i = 0; i < N; i++) ck_assert_double_eq_tol(w1[i], w2[i], 1e-14 * (1 + fabs(w2[i])));
  double e = objective_fd_error(&tempered, flow, N, eps, FD_H);
  printf("tempered reverse KL (beta 0.3): gradient vs FD rel err %.2e\n", e);
  ck_assert_double_le(e, FD_TOL);
  double loss = 7;
  tempered.beta = 1.5;
  ck_assert_int_eq(nf_objective_grad_ws(&tempered, flow, ws, 5, N, eps, 0, NULL, NULL, &loss, g1,
                                        NULL, NULL), NF_EINVAL);
  ck_assert_msg(strstr(nf_errmsg(), "beta is 1.5"), "%s", nf_errmsg());
  ck_assert(loss == 7);
  free(g1);
  free(g2);
  free(eps);
  nf_flow_ws_free(ws);
  nf_target_free(scaled);
  nf_target_free(sw.well);
  nf_flow_free(flow);
}
END_TEST

/* A mixed forward/reverse objective: nll_weight 0.5 on 10 data rows (seed
   211) plus reverse KL 1.5 on 12 draws (seed 212) equals, gradient and loss,
   0.5 x nf_flow_nll_grad_ws plus 1.5 x the reverse-KL objective alone (1e-13). */
START_TEST(mixed_forward_and_reverse_is_the_weighted_sum)
{
  nf_flow *flow = nonlinear_flow();
  size_t p = nf_flow_n_params(flow);
  double *x = th_random_points(10, 2, 211, 1.0), *eps = th_random_points(12, 2, 212, 1.0);
  nf_target *well = nf_target_doublewell();
  nf_flow_ws *ws = ws_of(flow, 12);
  double *g = malloc(p * sizeof *g), *g_nll = malloc(p * sizeof *g), *g_kl = malloc(p * sizeof *g);
  double nll, loss, kl;
  nf_objective_terms terms;
  nf_objective o = {0.5, 1.5, 0, 0, well, NULL, NF_GRAD_TOTAL, 1.0};
  ck_assert_int_eq(nf_objective_grad_ws(&o, flow, ws, 3, 12, eps, 10, x, NULL, &loss, g, NULL,
                                        &terms), NF_OK);
  ck_assert_int_eq(nf_flow_nll_grad_ws(flow, ws, 3, 10, x, NULL, &nll, g_nll, NULL), NF_OK);
  nf_objective rk = nf_objective_reverse_kl(well);
  kl = objective_at(&rk, flow, ws, 12, eps, g_kl, NULL, NULL);
  for (size_t k = 0; k < p; k++) g_nll[k] = 0.5 * g_nll[k] + 1.5 * g_kl[k];
  double e = th_rel_err(p, g, g_nll, 1e-12);
  printf("nll 0.5 + reverse KL 1.5: gradient vs the weighted parts rel err %.2e\n", e);
  ck_assert_double_le(e, 1e-13);
  ck_assert_double_eq_tol(loss, 0.5 * nll + 1.5 * kl, 1e-13);
  ck_assert_double_eq_tol(terms.nll, nll, 1e-14);
  free(g); free(g_nll); free(g_kl); free(x); free(eps);
  nf_flow_ws_free(ws);
  nf_target_free(well);
  nf_flow_free(flow);
}
END_TEST

/* ---- 3, 4. the entropy estimate, its gradient, and the wrong gradient ---- */

/* Affine flow d = 3 (theta below), n = 4000 draws (seed 301): terms.entropy
   = mean_i v_i, v_i = -log q(x_i) (from sample_grad_ws's log_q, to 1e-12),
   within N_SE standard errors sd(v) / sqrt(n) of H = d/2 log(2 pi e) + sum_j
   (ls_j + a_j). Then, on 200 draws (seed 302), the reparametrised gradient of
   the estimate H^ = sum_j (log(2 pi)/2 + ls_j + a_j) + mean_i |eps_i|^2 / 2 is
   exactly (0, 1, 0, 1) per block (mu, ls, b, a) (to 1e-6; measured ~1e-15);
   the naive gradient that holds x fixed, -mean_i d/dtheta log q_theta(x_i)
   (nf_flow_log_prob_vjp_ws), is, with g_m = -mean eps / s and g_log_s = mean
   (1 - eps^2), (e^a g_m, g_log_s, g_m, g_log_s + e^a mu g_m) (to 1e-8) and
   differs from it by more than 0.5 in the sup norm. */
START_TEST(entropy_estimate_and_its_gradient)
{
  enum { D = 3, N = 4000, M = 200 };
  const double theta[4 * D] = {0.2, -0.4, 0.1, 0.3, -0.2, 0.1, -0.5, 0.6, 0.0, -0.1, 0.25, 0.4};
  nf_flow *flow = affine_flow(D, theta);
  double m[D], s[D], H = 0;
  affine_moments(D, theta, m, s);
  for (size_t j = 0; j < D; j++) H += 0.5 * (LOG_2PI + 1.0) + log(s[j]);
  nf_objective o = {0, 0, 0, 1.0, NULL, NULL, NF_GRAD_TOTAL, 1.0};
  double *eps = th_random_points(N, D, 301, 1.0), *x = malloc(N * D * sizeof *x);
  double *log_q = malloc(N * sizeof *log_q), g[4 * D], naive[4 * D] = {0}, want[4 * D] = {0};
  nf_flow_ws *ws = ws_of(flow, N);
  nf_objective_terms terms;
  double loss = objective_at(&o, flow, ws, N, eps, g, NULL, &terms);
  double *u = calloc(N * D, sizeof *u), *v = calloc(N, sizeof *v);
  linear_loss l = {u, v};
  ck_assert_int_eq(nf_flow_sample_grad_ws(flow, ws, 5, N, eps, NULL, linear_cotangent, &l, x,
                                          log_q, NULL, NULL), NF_OK);
  double mean = 0, var = 0;
  for (size_t i = 0; i < N; i++) mean -= log_q[i] / N;
  for (size_t i = 0; i < N; i++) var += (-log_q[i] - mean) * (-log_q[i] - mean) / (N - 1);
  double se = sqrt(var / N);
  printf("entropy estimate, affine d = 3, n = %d: %.6f, closed form %.6f, |diff| = %.2f SE "
         "(SE %.4f)\n", N, terms.entropy, H, fabs(terms.entropy - H) / se, se);
  ck_assert_double_eq_tol(terms.entropy, mean, 1e-12);
  ck_assert(loss == terms.entropy);
  ck_assert_double_le(fabs(terms.entropy - H), N_SE * se);
  /* the gradient at fixed draws, and the wrong one */
  objective_at(&o, flow, ws, M, eps, g, NULL, NULL);
  ck_assert_int_eq(nf_flow_sample_grad_ws(flow, ws, 5, M, eps, NULL, linear_cotangent, &l, x,
                                          log_q, NULL, NULL), NF_OK);
  for (size_t i = 0; i < M; i++) v[i] = -1.0 / M;
  ck_assert_int_eq(nf_flow_log_prob_vjp_ws(flow, ws, 5, M, x, NULL, v, NULL, NULL, NULL, naive),
                   NF_OK);
  double want_naive[4 * D] = {0};
  for (size_t j = 0; j < D; j++) {
    want[D + j] = want[3 * D + j] = 1.0;
    for (size_t i = 0; i < M; i++) {
      double e = eps[i * D + j];
      want_naive[j] -= exp(theta[3 * D + j]) * e / s[j] / M;
      want_naive[D + j] += (1 - e * e) / M;
      want_naive[2 * D + j] -= e / s[j] / M;
    }
    want_naive[3 * D + j] = want_naive[D + j] + theta[j] * want_naive[j];
  }
  double e_grad = th_max_abs_diff(4 * D, g, want);
  double e_naive = th_rel_err(4 * D, naive, want_naive, 1e-12);
  double gap = th_max_abs_diff(4 * D, naive, g);
  printf("entropy gradient at fixed draws (n = %d): max err %.2e (tol 1e-6); naive (x held "
         "fixed) vs its closed form rel err %.2e; |naive - reparametrised|_inf = %.3f (> 0.5)\n",
         M, e_grad, e_naive, gap);
  ck_assert_double_le(e_grad, 1e-6);
  ck_assert_double_le(e_naive, 1e-8);
  ck_assert_double_gt(gap, 0.5);
  free(eps); free(x); free(log_q); free(u); free(v);
  nf_flow_ws_free(ws);
  nf_flow_free(flow);
}
END_TEST

/* ---- 5. STL and total estimators ---- */

/* The exact gradient of KL(q || p) for the affine flow's q = N(m, s^2) and
   p = N(c, t^2) (normalised): KL = sum_j [log(t_j/s_j) + (s_j^2 + (m_j - c_j)^2)
   / (2 t_j^2) - 1/2], with dm/dmu = e^a, dm/db = 1, dm/da = e^a mu and
   d log s / dls = d log s / da = 1. */
static void affine_kl_gradient(size_t d, const double *theta, const double *c, const double *t,
                               double *g)
{
  double m[8], s[8];
  affine_moments(d, theta, m, s);
  for (size_t j = 0; j < d; j++) {
    double dm = (m[j] - c[j]) / (t[j] * t[j]), dls = -1.0 + s[j] * s[j] / (t[j] * t[j]);
    g[j] = exp(theta[3 * d + j]) * dm;
    g[d + j] = dls;
    g[2 * d + j] = dm;
    g[3 * d + j] = exp(theta[3 * d + j]) * theta[j] * dm + dls;
  }
}

/* Mean and standard error over R independent sets of n draws (draws of set r
   from seed0 + r) of the objective's gradient (p entries). */
static void gradient_moments(const nf_objective *o, const nf_flow *flow, size_t R, size_t n,
                             uint64_t seed0, double *mean, double *se)
{
  size_t p = nf_flow_n_params(flow), d = nf_flow_dim(flow);
  nf_flow_ws *ws = ws_of(flow, n);
  double *g = malloc(p * sizeof *g), *sq = calloc(p, sizeof *sq);
  memset(mean, 0, p * sizeof *mean);
  for (size_t r = 0; r < R; r++) {
    double *eps = th_random_points(n, d, seed0 + r, 1.0);
    objective_at(o, flow, ws, n, eps, g, NULL, NULL);
    for (size_t k = 0; k < p; k++) {
      mean[k] += g[k] / R;
      sq[k] += g[k] * g[k] / R;
    }
    free(eps);
  }
  for (size_t k = 0; k < p; k++) se[k] = sqrt((sq[k] - mean[k] * mean[k]) * R / (R - 1) / R);
  free(g); free(sq);
  nf_flow_ws_free(ws);
}

/* Affine flow d = 2 against N(c, t^2): the STL and total gradients averaged
   over R = 400 sets of n = 8 draws (seeds 500..899) are within N_SE standard
   errors of the exact gradient of KL, entry by entry. At q = p (the target
   made from the flow's own m, s) every STL gradient of 50 sets (seeds
   1000..1049) is 0 to 1e-12 while the total gradient's standard deviation
   over the sets exceeds 0.05 in some entry. */
START_TEST(stl_is_unbiased_and_exact_at_q_equals_p)
{
  enum { D = 2, P = 4 * D, R = 400, NS = 8 };
  const double theta[P] = {0.3, -0.2, 0.1, -0.3, 0.2, 0.4, -0.1, 0.2};
  const double c[D] = {0.9, -0.4}, t[D] = {1.2, 0.7};
  nf_flow *flow = affine_flow(D, theta);
  nf_target *target = gauss_target(D, 1.0, c, t);
  double truth[P], mean[P], se[P], worst[2] = {0, 0};
  affine_kl_gradient(D, theta, c, t, truth);
  for (int e = 0; e < 2; e++) {
    nf_objective o = nf_objective_reverse_kl(target);
    o.estimator = e ? NF_GRAD_STL : NF_GRAD_TOTAL;
    gradient_moments(&o, flow, R, NS, 500, mean, se);
    for (size_t k = 0; k < P; k++) {
      double z = fabs(mean[k] - truth[k]) / se[k];
      worst[e] = fmax(worst[e], z);
      ck_assert_msg(z <= N_SE, "%s: entry %zu mean %g, truth %g, SE %g",
                    nf_grad_estimator_name(o.estimator), k, mean[k], truth[k], se[k]);
    }
  }
  printf("affine d = 2, %d sets of %d draws: mean gradient vs exact KL gradient within %.2f SE "
         "(total), %.2f SE (stl)\n", R, NS, worst[0], worst[1]);
  nf_target_free(target);
  /* q = p */
  double m[D], s[D], stl_max = 0, total_sd = 0, g[P];
  affine_moments(D, theta, m, s);
  target = gauss_target(D, 1.0, m, s);
  nf_objective o = nf_objective_reverse_kl(target);
  nf_flow_ws *ws = ws_of(flow, NS);
  for (size_t r = 0; r < 50; r++) {
    double *eps = th_random_points(NS, D, 1000 + r, 1.0);
    o.estimator = NF_GRAD_STL;
    objective_at(&o, flow, ws, NS, eps, g, NULL, NULL);
    for (size_t k = 0; k < P; k++) stl_max = fmax(stl_max, fabs(g[k]));
    free(eps);
  }
  o.estimator = NF_GRAD_TOTAL;
  gradient_moments(&o, flow, 50, NS, 1000, mean, se);
  for (size_t k = 0; k < P; k++) total_sd = fmax(total_sd, se[k] * sqrt(50.0));
  printf("q = p: STL gradient max |g| %.2e over 50 sets (tol 1e-12); total gradient sd %.3f\n",
         stl_max, total_sd);
  ck_assert_double_le(stl_max, 1e-12);
  ck_assert_double_gt(total_sd, 0.05);
  nf_flow_ws_free(ws);
  nf_target_free(target);
  nf_flow_free(flow);
}
END_TEST

/* A flow on R^2 (context width c) of one CNF layer as tests/test_cnf.c builds
   it: concatsquash 8-8 tanh, learned T = 0.6, rtol = atol = 1e-10 (RK4: 20
   fixed steps), net parameters ~ N(0, 0.5^2) (seed); base as given, a
   diag_normal base at mu = (0.2, -0.1), log sigma = (0.1, -0.2). */
static nf_flow *cnf_flow(th_cnf_mode m, size_t c, nf_trace_kind trace, nf_base base,
                         uint64_t seed)
{
  static const size_t H8[] = {8, 8};
  nf_cnf_opts o = nf_cnf_defaults();
  o.n_hidden = 2;
  o.hidden = H8;
  o.end_time = 0.6;
  o.train_end_time = 1;
  o.trace = trace;
  o.ode = nf_ode_defaults(m.method);
  o.ode.grad = m.grad;
  o.ode.rtol = o.ode.atol = 1e-10;
  o.ode.fixed_steps = 20;
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_layer *layer = nf_cnf_new(2, c, &o, &rng);
  ck_assert_msg(layer != NULL, "nf_cnf_new: %s", nf_errmsg());
  nf_flow *flow = nf_flow_new(2, c, base);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  size_t p = nf_flow_n_params(flow), b = nf_flow_base_n_params(flow);
  double *theta = malloc(p * sizeof *theta);
  memcpy(theta, nf_flow_params(flow), p * sizeof *theta);
  const double bp[4] = {0.2, -0.1, 0.1, -0.2};
  memcpy(theta, bp, b * sizeof *theta);
  th_randn(&rng, p - b - 1, 0.5, theta + b); /* the net; theta_T kept */
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
  return flow;
}

/* ---- 6. importance weights ---- */

/* q = p: an affine flow d = 2 and the normalised Gaussian of its own m, s
   (then 3 times it): 1000 draws (rng seed 601) give ESS 1 and log Z = 0
   (log 3) to 1e-12, log Z's SE ~0; nf_importance_sample_ws with the same rng
   seed gives the same bits. q = N(0, 1) (identity affine layer), p~ = N(0.5,
   1): <x>_p from 20000 draws (seed 602) within N_SE of 0.5 by its own SE, and
   equal to sum w x / sum w computed here (1e-12), as are both delta-method
   standard errors (1e-12, 1e-10 relative); log Z = 0 within N_SE. A
   Hutchinson CNF's samples and log weights equal its exact-trace twin's bit
   for bit (the header's exact log-dets). */
START_TEST(importance_weights_at_q_equals_p_and_a_known_mean)
{
  enum { D = 2, N = 1000, NB = 20000 };
  const double theta[4 * D] = {0.3, -0.2, 0.1, -0.3, 0.2, 0.4, -0.1, 0.2};
  nf_flow *flow = affine_flow(D, theta);
  double m[D], s[D];
  affine_moments(D, theta, m, s);
  double *x = malloc(NB * D * sizeof *x), *x2 = malloc(N * D * sizeof *x);
  double *log_w = malloc(NB * sizeof *log_w), *log_w2 = malloc(N * sizeof *log_w);
  for (int k = 0; k < 2; k++) {
    double weight = k ? 3.0 : 1.0;
    nf_target *target = gauss_target(D, weight, m, s);
    nf_rng rng;
    nf_rng_seed(&rng, 601);
    ck_assert_int_eq(nf_importance_sample(flow, &rng, target, N, x, log_w), NF_OK);
    nf_importance sum;
    ck_assert_int_eq(nf_importance_summary(N, log_w, &sum), NF_OK);
    printf("q = p (weight %g): ESS - 1 = %.2e, log Z - log %g = %.2e, SE %.2e\n", weight,
           sum.ess - 1, weight, sum.log_z - log(weight), sum.log_z_err);
    ck_assert_uint_eq(sum.n, N);
    ck_assert_double_eq_tol(sum.ess, 1.0, 1e-12);
    ck_assert_double_eq_tol(sum.log_z, log(weight), 1e-12);
    ck_assert_double_le(sum.log_z_err, 1e-12);
    nf_flow_ws *ws = ws_of(flow, 64);
    nf_rng_seed(&rng, 601);
    ck_assert_int_eq(nf_importance_sample_ws(flow, ws, &rng, target, N, x2, log_w2), NF_OK);
    ck_assert(memcmp(x, x2, N * D * sizeof *x) == 0);
    ck_assert(memcmp(log_w, log_w2, N * sizeof *log_w) == 0);
    nf_flow_ws_free(ws);
    nf_target_free(target);
  }
  nf_flow_free(flow);
  const double zero[2] = {0, 0}, c[1] = {0.5}, one[1] = {1.0};
  flow = nf_flow_new(1, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(1)), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(flow, zero), NF_OK);
  nf_target *target = gauss_target(1, 1.0, c, one);
  nf_rng rng;
  nf_rng_seed(&rng, 602);
  ck_assert_int_eq(nf_importance_sample(flow, &rng, target, NB, x, log_w), NF_OK);
  double mean, err, sw = 0, swx = 0;
  nf_importance sum;
  ck_assert_int_eq(nf_importance_mean(NB, log_w, 1, x, &mean, &err), NF_OK);
  ck_assert_int_eq(nf_importance_summary(NB, log_w, &sum), NF_OK);
  for (size_t i = 0; i < NB; i++) {
    sw += exp(log_w[i]);
    swx += exp(log_w[i]) * x[i];
  }
  printf("q = N(0,1), p = N(0.5,1), n = %d: <x>_p = %.4f +- %.4f (|diff| %.2f SE), ESS %.3f "
         "(exact exp(-0.25) = %.3f), log Z %.4f +- %.4f\n", NB, mean, err,
         fabs(mean - 0.5) / err, sum.ess, exp(-0.25), sum.log_z, sum.log_z_err);
  ck_assert_double_le(fabs(mean - 0.5), N_SE * err);
  ck_assert_double_eq_tol(mean, swx / sw, 1e-12);
  /* the delta-method errors of the header, computed here: sqrt(sum w^2 (x - <x>)^2) / sum w
     and s_w / (sqrt(n) mean w) */
  double sq = 0, s2 = 0;
  for (size_t i = 0; i < NB; i++) {
    double wi = exp(log_w[i]);
    sq += wi * wi * (x[i] - mean) * (x[i] - mean);
    s2 += (wi - sw / NB) * (wi - sw / NB);
  }
  ck_assert_double_eq_tol(err, sqrt(sq) / sw, 1e-12 * err);
  ck_assert_double_eq_tol(sum.log_z_err, sqrt(s2 / (NB - 1)) / sqrt((double)NB) / (sw / NB),
                          1e-10 * sum.log_z_err);
  ck_assert_double_le(fabs(sum.log_z), N_SE * sum.log_z_err);
  nf_flow_free(flow);
  /* q's log-dets exact where a layer estimates them: a Hutchinson CNF's log
     weights are its exact-trace twin's, bit for bit (RK4, 8 draws, seed 603) */
  const th_cnf_mode rk4 = {NF_ODE_RK4, NF_GRAD_DISCRETE, "rk4"};
  nf_target *well = nf_target_doublewell();
  for (int k = 0; k < 2; k++) {
    flow = cnf_flow(rk4, 0, k ? NF_TRACE_RADEMACHER : NF_TRACE_EXACT, NF_BASE_STD_NORMAL, 604);
    nf_rng_seed(&rng, 603);
    ck_assert_int_eq(nf_importance_sample(flow, &rng, well, 8, k ? x2 : x, k ? log_w2 : log_w),
                     NF_OK);
    nf_flow_free(flow);
  }
  ck_assert(memcmp(x, x2, 16 * sizeof *x) == 0);
  ck_assert(memcmp(log_w, log_w2, 8 * sizeof *log_w) == 0);
  free(x); free(x2); free(log_w); free(log_w2);
  nf_target_free(target);
  nf_target_free(well);
}
END_TEST

/* ---- 7. sample_grad_ws against central differences: every recipe, CNFs, contexts ---- */

/* A small recipe flow: 2 layers, one hidden layer of 8 (tanh), 4 bins, 3
   components; theta perturbed by 0.2 N(0, 1) (seed 700 + kind). */
static nf_flow *small_recipe(nf_recipe_kind kind, size_t d, size_t ctx_dim)
{
  static const size_t hidden[] = {8};
  nf_recipe r = nf_recipe_defaults(kind);
  r.layers = 2;
  r.n_hidden = 1;
  r.hidden = hidden;
  r.act = NF_ACT_TANH;
  r.bins = 4;
  r.components = 3;
  nf_rng rng;
  nf_rng_seed(&rng, 70 + (uint64_t)kind);
  nf_flow *flow = nf_recipe_build(d, ctx_dim, &r, &rng);
  ck_assert_msg(flow != NULL, "nf_recipe_build(%s): %s", nf_recipe_name(kind), nf_errmsg());
  perturb_theta(flow, 0.2, 700 + (uint64_t)kind);
  return flow;
}

/* Every recipe kind with d = 2 and d = 3 (5 rows, seeds 710 + d): x and log q
   as the transform path's (1e-10), g_theta to FD_TOL (h = FD_H); the residual
   flow samples by a fixed point solved to 1e-12 (relative), so its
   differences carry ~1e-12 / h noise: h = 1e-4 (FD_TOL still holds with a
   wide margin: measured 2e-9). A rational-
   quadratic spline is only C1 at its knots, so log q has a kink in theta
   where a point crosses a knot, and differences straddling it are off by
   O(1): the nsf d = 3 case (row 4 of seed 713) lies ~5e-6 from one in
   parameter 308 (h = 1e-5 gives 6e-2, h <= 1e-6 agrees to 1e-9), so the
   spline recipes take h = 1e-6. Then every
   recipe that takes a context, conditional with ctx_dim 2 on d = 2: g_ctx and
   g_theta (both accumulated onto 1s) to the same tolerances. */
START_TEST(sample_grad_matches_fd_for_every_recipe)
{
  double worst = 0, worst_ctx = 0, worst_x = 0;
  for (int kind = NF_RECIPE_REALNVP; kind <= NF_RECIPE_RESFLOW; kind++) {
    int solves = kind == NF_RECIPE_RESFLOW;
    int spline = kind == NF_RECIPE_NSF || kind == NF_RECIPE_NSF_COUPLING;
    double h = solves ? 1e-4 : spline ? 1e-6 : FD_H;
    for (size_t d = 2; d <= 3; d++) {
      nf_flow *flow = small_recipe((nf_recipe_kind)kind, d, 0);
      sample_errors e = sample_grad_errors(flow, 5, 710 + d, h);
      printf("sample_grad %-12s d = %zu (%3zu params): g_theta vs FD %.2e, x %.1e, log q %.1e\n",
             nf_recipe_name((nf_recipe_kind)kind), d, nf_flow_n_params(flow), e.theta, e.x,
             e.log_q);
      ck_assert_msg(e.theta <= FD_TOL, "%s d = %zu: %g", nf_recipe_name((nf_recipe_kind)kind), d,
                    e.theta);
      ck_assert_double_le(e.x, 1e-10);
      ck_assert_double_le(e.log_q, 1e-10);
      worst = fmax(worst, e.theta);
      worst_x = fmax(worst_x, fmax(e.x, e.log_q));
      nf_flow_free(flow);
    }
    if (kind == NF_RECIPE_PLANAR || kind == NF_RECIPE_RADIAL || kind == NF_RECIPE_GF) continue;
    nf_flow *flow = small_recipe((nf_recipe_kind)kind, 2, 2);
    sample_errors e = sample_grad_errors(flow, 5, 720, h);
    printf("sample_grad %-12s conditional d = 2, ctx 2: g_theta %.2e, g_ctx %.2e\n",
           nf_recipe_name((nf_recipe_kind)kind), e.theta, e.ctx);
    ck_assert_double_le(e.theta, FD_TOL);
    ck_assert_double_le(e.ctx, FD_TOL);
    ck_assert_double_gt(e.ctx_size, 1e-3);
    worst_ctx = fmax(worst_ctx, e.ctx);
    nf_flow_free(flow);
  }
  printf("sample_grad, every recipe: worst g_theta rel err %.2e, g_ctx %.2e, x/log q %.1e\n",
         worst, worst_ctx, worst_x);
}
END_TEST



/* The requirement: the CNF trained by reverse KL in the forward
   direction, every adjoint mode, against central differences. 3 draws (seed
   730), target a 2-component mixture; the solves are accurate to ~1e-10, so
   h = 1e-5 and SOLVE_FD_TOL (as tests/test_cnf.c's vjp checks). A
   Hutchinson CNF with fixed RK4 steps (seed 732) is smooth in theta for its
   fixed probes: FD_TOL. Then the
   conditional CNF's g_ctx and g_theta through sample_grad (backsolve/dopri5,
   3 rows, seeds 740..743). */
START_TEST(cnf_reverse_kl_matches_fd_every_adjoint)
{
  const double w[2] = {0.4, 0.6}, m[4] = {-1, 0.5, 1, -0.5}, s[4] = {0.8, 1.2, 0.6, 0.9};
  nf_target *mix = nf_target_mixture(2, 2, w, m, s);
  nf_objective o = nf_objective_reverse_kl(mix);
  double *eps = th_random_points(3, 2, 730, 1.0), worst = 0;
  for (size_t k = 0; k < TH_N_CNF_MODES; k++) {
    nf_flow *flow = cnf_flow(th_cnf_modes[k], 0, NF_TRACE_EXACT, NF_BASE_DIAG_NORMAL, 731);
    double e = objective_fd_error(&o, flow, 3, eps, FD_H);
    printf("CNF reverse KL, %-16s (%zu params, diag base): gradient vs FD rel err %.2e (tol "
           "%.0e)\n", th_cnf_modes[k].name, nf_flow_n_params(flow), e, SOLVE_FD_TOL);
    ck_assert_msg(e <= SOLVE_FD_TOL, "%s: %g", th_cnf_modes[k].name, e);
    worst = fmax(worst, e);
    nf_flow_free(flow);
  }
  /* a Hutchinson CNF (RK4, discrete adjoint): the gradient of the estimate
     with the probes of the call's seed, which the differences reuse */
  const th_cnf_mode rk4 = {NF_ODE_RK4, NF_GRAD_DISCRETE, "rk4"};
  nf_flow *hutch = cnf_flow(rk4, 0, NF_TRACE_GAUSSIAN, NF_BASE_DIAG_NORMAL, 732);
  double e_h = objective_fd_error(&o, hutch, 3, eps, FD_H);
  printf("CNF reverse KL, Gaussian Hutchinson trace, discrete/rk4: gradient vs FD rel err %.2e "
         "(tol %.0e)\n", e_h, FD_TOL);
  ck_assert_double_le(e_h, FD_TOL);
  nf_flow *twin = cnf_flow(rk4, 0, NF_TRACE_EXACT, NF_BASE_DIAG_NORMAL, 732);
  double g_h[200], g_t[200];
  ck_assert_uint_le(nf_flow_n_params(twin), 200);
  nf_flow_ws *ws_h = ws_of(hutch, 3), *ws_t = ws_of(twin, 3);
  double l_h = objective_at(&o, hutch, ws_h, 3, eps, g_h, NULL, NULL);
  double l_t = objective_at(&o, twin, ws_t, 3, eps, g_t, NULL, NULL);
  ck_assert_msg(fabs(l_h - l_t) > 1e-6, "the estimate equals the exact loss: %g", l_h);
  nf_flow_ws_free(ws_h);
  nf_flow_ws_free(ws_t);
  nf_flow_free(twin);
  nf_flow_free(hutch);
  nf_flow *flow = cnf_flow(th_cnf_modes[0], 2, NF_TRACE_EXACT, NF_BASE_STD_NORMAL, 741);
  sample_errors e = sample_grad_errors(flow, 3, 740, FD_H);
  printf("conditional CNF sample_grad: g_theta %.2e, g_ctx %.2e, x %.1e, log q %.1e; worst "
         "reverse KL %.2e\n", e.theta, e.ctx, e.x, e.log_q, worst);
  ck_assert_double_le(e.theta, SOLVE_FD_TOL);
  ck_assert_double_le(e.ctx, SOLVE_FD_TOL);
  ck_assert_double_gt(e.ctx_size, 1e-3);
  ck_assert_double_le(e.x, 1e-8);
  ck_assert_double_le(e.log_q, 1e-8);
  nf_flow_free(flow);
  free(eps);
  nf_target_free(mix);
}
END_TEST

/* nf_flow_sample_grad (own workspace, draws from rng seed 750) overwrites
   nf_flow_grad with exactly what sample_grad_ws gives for the same draws, the
   flow's seed and a workspace of n rows. */
START_TEST(convenience_sample_grad_is_the_ws_call)
{
  nf_flow *flow = small_recipe(NF_RECIPE_NSF_COUPLING, 2, 0);
  size_t n = 6, p = nf_flow_n_params(flow);
  double *eps = malloc(n * 2 * sizeof *eps), *u = th_random_points(n, 2, 751, 1.0);
  double *v = th_random_points(n, 1, 752, 1.0), x[12], x2[12], lq[6], lq2[6];
  double *g = calloc(p, sizeof *g);
  nf_rng rng;
  nf_rng_seed(&rng, 750);
  nf_rng_normal_fill(&rng, n * 2, eps);
  linear_loss l = {u, v};
  nf_flow_set_seed(flow, 99);
  for (size_t k = 0; k < p; k++) nf_flow_grad(flow)[k] = 5.0;
  nf_rng_seed(&rng, 750);
  ck_assert_int_eq(nf_flow_sample_grad(flow, &rng, n, NULL, linear_cotangent, &l, x, lq), NF_OK);
  nf_flow_ws *ws = ws_of(flow, n);
  ck_assert_int_eq(nf_flow_sample_grad_ws(flow, ws, 99, n, eps, NULL, linear_cotangent, &l, x2,
                                          lq2, NULL, g), NF_OK);
  ck_assert(memcmp(x, x2, sizeof x) == 0);
  ck_assert(memcmp(lq, lq2, sizeof lq) == 0);
  ck_assert(memcmp(nf_flow_grad(flow), g, p * sizeof *g) == 0);
  nf_flow_ws_free(ws);
  free(eps); free(u); free(v); free(g);
  nf_flow_free(flow);
}
END_TEST

/* ---- 8. two threads, one flow: bit for bit as serial ---- */

typedef struct worker {
  const nf_flow *flow;
  const nf_objective *o;
  size_t n;
  const double *eps, *u, *v;
  double *x, *log_q, *g, *grad, *log_w, loss; /* the last repetition */
  const double *ref_g, *ref_grad, *ref_x;
  double ref_loss;
  int failures;
  nf_status status;
} worker;

/* sample_grad_ws (linear loss, seed 11) and objective_grad_ws (seed 12) with a new workspace. */
static nf_status worker_eval(worker *w)
{
  size_t p = nf_flow_n_params(w->flow);
  nf_flow_ws *ws = nf_flow_ws_new(w->flow, w->n);
  if (!ws) return NF_ENOMEM;
  linear_loss l = {w->u, w->v};
  memset(w->g, 0, p * sizeof *w->g);
  nf_status st = nf_flow_sample_grad_ws(w->flow, ws, 11, w->n, w->eps, NULL, linear_cotangent,
                                        &l, w->x, w->log_q, NULL, w->g);
  if (!st)
    st = nf_objective_grad_ws(w->o, w->flow, ws, 12, w->n, w->eps, 0, NULL, NULL, &w->loss,
                              w->grad, w->log_w, NULL);
  nf_flow_ws_free(ws);
  return st;
}

static void *worker_run(void *arg)
{
  worker *w = arg;
  size_t p = nf_flow_n_params(w->flow), nd = w->n * nf_flow_dim(w->flow);
  for (int r = 0; r < 4 && !w->status; r++) {
    w->status = worker_eval(w);
    if (!w->status && (memcmp(w->g, w->ref_g, p * sizeof *w->g) || memcmp(w->grad, w->ref_grad,
                       p * sizeof *w->g) || memcmp(w->x, w->ref_x, nd * sizeof *w->x) ||
                       memcmp(&w->loss, &w->ref_loss, sizeof w->loss)))
      w->failures++;
  }
  return NULL;
}

/* Two threads on one flow, each its own half of the rows and workspace, 4
   repetitions each, give bit for bit the results of the same calls made alone. */
static void check_threads(const nf_flow *flow, const nf_objective *o, size_t n, uint64_t seed)
{
  size_t d = nf_flow_dim(flow), p = nf_flow_n_params(flow), h = n / 2;
  double *eps = th_random_points(n, d, seed, 1.0), *u = th_random_points(n, d, seed + 1, 1.0);
  double *v = th_random_points(n, 1, seed + 2, 1.0);
  worker w[2];
  double *bufs[2][8];
  for (int t = 0; t < 2; t++) {
    size_t i0 = t ? h : 0;
    for (int b = 0; b < 8; b++) bufs[t][b] = malloc((n * d + p + 1) * sizeof(double));
    w[t] = (worker){flow, o, h, eps + i0 * d, u + i0 * d, v + i0, bufs[t][0], bufs[t][1],
                    bufs[t][2], bufs[t][3], bufs[t][4], 0, bufs[t][5], bufs[t][6], bufs[t][7],
                    0, 0, NF_OK};
    ck_assert_msg(worker_eval(&w[t]) == NF_OK, "alone: %s", nf_errmsg());
    memcpy(bufs[t][5], w[t].g, p * sizeof(double));
    memcpy(bufs[t][6], w[t].grad, p * sizeof(double));
    memcpy(bufs[t][7], w[t].x, h * d * sizeof(double));
    w[t].ref_loss = w[t].loss;
  }
  pthread_t tid[2];
  for (int t = 0; t < 2; t++) ck_assert_int_eq(pthread_create(&tid[t], NULL, worker_run, &w[t]), 0);
  for (int t = 0; t < 2; t++) ck_assert_int_eq(pthread_join(tid[t], NULL), 0);
  for (int t = 0; t < 2; t++) {
    ck_assert_msg(w[t].status == NF_OK, "thread %d: %s", t, nf_status_str(w[t].status));
    ck_assert_msg(w[t].failures == 0, "thread %d: %d repetitions differ", t, w[t].failures);
    for (int b = 0; b < 8; b++) free(bufs[t][b]);
  }
  free(eps); free(u); free(v);
}

/* realnvp d = 3 (16 rows, seed 800; reverse KL + entropy, STL) and a
   Hutchinson CNF (RK4, 8 rows, seed 810; reverse KL, total): the CNF's probes
   are keyed by the call's seed and row, not by the thread. */
START_TEST(two_threads_are_bit_for_bit_serial)
{
  const double c[3] = {0.5, -0.5, 0.2}, t[3] = {1, 1.5, 0.8};
  nf_target *g3 = gauss_target(3, 1.0, c, t), *well = nf_target_doublewell();
  nf_flow *flow = small_recipe(NF_RECIPE_REALNVP, 3, 0);
  nf_objective o = {0, 1.0, 0, 0.5, g3, NULL, NF_GRAD_STL, 1.0};
  check_threads(flow, &o, 16, 800);
  nf_flow_free(flow);
  const th_cnf_mode rk4 = {NF_ODE_RK4, NF_GRAD_DISCRETE, "rk4"};
  flow = cnf_flow(rk4, 0, NF_TRACE_RADEMACHER, NF_BASE_STD_NORMAL, 811);
  nf_objective ok = nf_objective_reverse_kl(well);
  check_threads(flow, &ok, 8, 810);
  printf("two threads: sample_grad_ws and objective_grad_ws bit for bit as alone (realnvp, "
         "Hutchinson CNF)\n");
  nf_flow_free(flow);
  nf_target_free(g3);
  nf_target_free(well);
}
END_TEST

/* ---- 9. targets ---- */

/* Max over n rows (seed) of the norm-wise relative error of the target's
   gradient against central differences with step h. */
static double target_grad_error(const nf_target *t, size_t n, uint64_t seed, double scale,
                                double h)
{
  size_t d = nf_target_dim(t);
  double *x = th_random_points(n, d, seed, scale), *f = malloc(n * sizeof *f);
  double *g = malloc(n * d * sizeof *g), *fd = malloc(d * sizeof *fd), worst = 0;
  ck_assert_int_eq(nf_target_eval(t, n, x, f, g), NF_OK);
  for (size_t i = 0; i < n; i++) {
    double *xi = x + i * d, fp, fm, f_only;
    for (size_t j = 0; j < d; j++) {
      double keep = xi[j];
      xi[j] = keep + h;
      ck_assert_int_eq(nf_target_eval(t, 1, xi, &fp, NULL), NF_OK);
      xi[j] = keep - h;
      ck_assert_int_eq(nf_target_eval(t, 1, xi, &fm, NULL), NF_OK);
      xi[j] = keep;
      fd[j] = (fp - fm) / (2 * h);
    }
    ck_assert_int_eq(nf_target_eval(t, 1, xi, &f_only, NULL), NF_OK);
    ck_assert(f_only == f[i]); /* with or without the gradient, row alone or in the batch */
    worst = fmax(worst, th_rel_err(d, g + i * d, fd, 1e-3));
  }
  free(x); free(f); free(g); free(fd);
  return worst;
}

/* phi4's log p~ of one field (asserted). */
static double phi4_log_p(const nf_target *t, const double *phi)
{
  double f;
  ck_assert_int_eq(nf_target_eval(t, 1, phi, &f, NULL), NF_OK);
  return f;
}

/* Gradients against central differences (h = 1e-6, 1e-7 relative: the FD
   error is ~1e-10 here) at 8 points each (seeds 900..906): the double well
   (scale 1.5), a 3-component mixture in d = 2 (scale 2), phi4 L = 4, m2 =
   -1, lambda = 0.7 at random fields (scale 1), a user target, and phi4 on
   L = 2 (each neighbour twice) and L = 3 (odd). The mixture far in its
   tails keeps its dominant component's value and gradient. phi4 at a
   constant field c = 0.6: S = L^2 ((4 + m2 - 4) c^2 + lambda c^4); at the
   checkerboard +-c: L^2 ((8 + m2) c^2 + lambda c^4) (1e-13 relative);
   magnetisation = the sum of the sites. The double well's log Z against
   composite Simpson on [-6, 6] with 24000 intervals (1e-12); the mixture's
   log Z = log sum w (1e-15) and its density integrates to sum w on a
   400 x 400 midpoint grid over [-9, 9]^2 (1e-6 relative); the mixture's value
   against the direct sum (1e-13). */
START_TEST(targets_values_gradients_and_normalisers)
{
  nf_target *well = nf_target_doublewell();
  const double w[3] = {0.5, 1.5, 2.25}, m[6] = {-1, 0.5, 1.5, -0.5, 0.2, 1.8};
  const double s[6] = {0.8, 1.2, 0.6, 0.9, 1.1, 0.5};
  nf_target *mix = nf_target_mixture(2, 3, w, m, s), *phi4 = nf_target_phi4(4, -1.0, 0.7);
  nf_target *sine = nf_target_new(3, sine_observable, NULL);
  ck_assert(well && mix && phi4 && sine);
  ck_assert_str_eq(nf_target_name(well), "doublewell");
  ck_assert_str_eq(nf_target_name(mix), "mixture");
  ck_assert_str_eq(nf_target_name(phi4), "phi4");
  ck_assert_str_eq(nf_target_name(sine), "user");
  ck_assert_uint_eq(nf_target_dim(phi4), 16);
  ck_assert_uint_eq(nf_target_dim(mix), 2);
  ck_assert_uint_eq(nf_target_dim(NULL), 0);
  ck_assert_str_eq(nf_target_name(NULL), "");
  nf_target *phi2 = nf_target_phi4(2, 0.5, 0.3), *phi3 = nf_target_phi4(3, -0.5, 1.2);
  double e[6] = {target_grad_error(well, 8, 900, 1.5, 1e-6),
                 target_grad_error(mix, 8, 901, 2.0, 1e-6),
                 target_grad_error(phi4, 8, 902, 1.0, 1e-6),
                 target_grad_error(sine, 8, 903, 1.0, 1e-6),
                 target_grad_error(phi2, 8, 905, 1.0, 1e-6),
                 target_grad_error(phi3, 8, 906, 1.0, 1e-6)};
  printf("target gradients vs FD: doublewell %.2e, mixture %.2e, phi4 L=4 %.2e, user %.2e, "
         "phi4 L=2 %.2e, L=3 %.2e (tol 1e-7)\n", e[0], e[1], e[2], e[3], e[4], e[5]);
  for (int k = 0; k < 6; k++) ck_assert_double_le(e[k], 1e-7);
  nf_target_free(phi2);
  nf_target_free(phi3);
  /* phi4 closed forms */
  double phi[16], c = 0.6, L2 = 16, m2 = -1.0, lam = 0.7;
  for (size_t i = 0; i < 16; i++) phi[i] = c;
  double want = -L2 * ((4 + m2 - 4) * c * c + lam * c * c * c * c), got = phi4_log_p(phi4, phi);
  double e_const = fabs(got - want) / fabs(want);
  for (size_t i = 0; i < 16; i++) phi[i] = ((i / 4 + i % 4) % 2 ? -c : c);
  double want_cb = -L2 * ((8 + m2) * c * c + lam * c * c * c * c);
  double e_cb = fabs(phi4_log_p(phi4, phi) - want_cb) / fabs(want_cb);
  printf("phi4 L = 4: constant field rel err %.1e, checkerboard %.1e\n", e_const, e_cb);
  ck_assert_double_le(e_const, 1e-13);
  ck_assert_double_le(e_cb, 1e-13);
  double *fields = th_random_points(3, 16, 904, 1.0), mag[3];
  ck_assert_int_eq(nf_target_phi4_magnetisation(phi4, 3, fields, mag), NF_OK);
  for (size_t i = 0; i < 3; i++) {
    double sum = 0;
    for (size_t j = 0; j < 16; j++) sum += fields[i * 16 + j];
    ck_assert_double_eq_tol(mag[i], sum, 1e-13);
  }
  free(fields);
  /* normalisers */
  const int K = 24000;
  double hs = 12.0 / K, simpson = 0;
  for (int i = 0; i <= K; i++) {
    double x = -6.0 + i * hs, q = x * x - 1.0, f = exp(-4.0 * q * q);
    simpson += f * (i == 0 || i == K ? 1.0 : i % 2 ? 4.0 : 2.0);
  }
  simpson *= hs / 3.0;
  double log_z, want_z = 0.5 * LOG_2PI + log(simpson);
  ck_assert_int_eq(nf_target_log_z(well, &log_z), NF_OK);
  printf("double well log Z %.15f, Simpson (24000 intervals on [-6, 6]) %.15f, diff %.1e\n",
         log_z, want_z, fabs(log_z - want_z));
  ck_assert_double_le(fabs(log_z - want_z), 1e-12);
  ck_assert_int_eq(nf_target_log_z(mix, &log_z), NF_OK);
  ck_assert_double_eq_tol(log_z, log(4.25), 1e-15);
  double cell = 18.0 / 400, mass = 0, pt[800], f[400];
  for (int i = 0; i < 400; i++) {
    for (int j = 0; j < 400; j++) {
      pt[2 * j] = -9 + (i + 0.5) * cell;
      pt[2 * j + 1] = -9 + (j + 0.5) * cell;
    }
    ck_assert_int_eq(nf_target_eval(mix, 400, pt, f, NULL), NF_OK);
    for (int j = 0; j < 400; j++) mass += exp(f[j]) * cell * cell;
  }
  printf("mixture: log Z = log 4.25; grid mass %.9f (4.25)\n", mass);
  ck_assert_double_le(fabs(mass / 4.25 - 1), 1e-6);
  double x[2] = {0.3, -0.7}, direct = 0;
  for (int k = 0; k < 3; k++) {
    double l = 1;
    for (int j = 0; j < 2; j++) {
      double u = (x[j] - m[2 * k + j]) / s[2 * k + j];
      l *= exp(-0.5 * u * u) / (exp(0.5 * LOG_2PI) * s[2 * k + j]);
    }
    direct += w[k] * l;
  }
  ck_assert_int_eq(nf_target_eval(mix, 1, x, f, NULL), NF_OK);
  ck_assert_double_eq_tol(f[0], log(direct), 1e-13);
  /* far out (x = (200, -300), where every density underflows to 0) the
     log-sum-exp keeps the log value and the gradient of the dominant
     component, the others being e^-(thousands) smaller (1e-12 relative) */
  double far[2] = {200, -300}, gf[2], top = -INFINITY, want_g[2];
  ck_assert_int_eq(nf_target_eval(mix, 1, far, f, gf), NF_OK);
  for (int k = 0; k < 3; k++) {
    double l = log(w[k]) - LOG_2PI;
    for (int j = 0; j < 2; j++) {
      double u = (far[j] - m[2 * k + j]) / s[2 * k + j];
      l -= 0.5 * u * u + log(s[2 * k + j]);
    }
    if (l > top) {
      top = l;
      for (int j = 0; j < 2; j++)
        want_g[j] = (m[2 * k + j] - far[j]) / (s[2 * k + j] * s[2 * k + j]);
    }
  }
  ck_assert_double_eq_tol(f[0], top, 1e-12 * fabs(top));
  ck_assert_double_le(th_rel_err(2, gf, want_g, 1e-12), 1e-12);
  nf_target_free(well); nf_target_free(mix); nf_target_free(phi4); nf_target_free(sine);
}
END_TEST

/* ---- 10. bad input ---- */

/* Asserts status st and a message containing part. */
#define ASSERT_FAILS(call, want, part)                                                          \
  do {                                                                                          \
    nf_status st_ = (call);                                                                     \
    ck_assert_msg(st_ == (want), "%s: got %s (%s)", #call, nf_status_str(st_), nf_errmsg());   \
    ck_assert_msg(strstr(nf_errmsg(), (part)) != NULL, "%s: message '%s' lacks '%s'", #call,   \
                  nf_errmsg(), (part));                                                         \
  } while (0)

/* Asserts a constructor returned NULL with a message containing part. */
#define ASSERT_NULL(call, part)                                                                 \
  do {                                                                                          \
    nf_target *t_ = (call);                                                                     \
    ck_assert_msg(t_ == NULL, "%s: not refused", #call);                                       \
    ck_assert_msg(strstr(nf_errmsg(), (part)) != NULL, "%s: message '%s' lacks '%s'", #call,   \
                  nf_errmsg(), (part));                                                         \
  } while (0)

/* A user target that misbehaves by mode: 0 fine (log N(0, I)), 1 returns 5,
   2 a NaN value at row 1, 3 a NaN gradient at row 1 column 1. */
static int bad_target_fn(size_t n, size_t dim, const double *x, double *f, double *grad,
                         void *user)
{
  int mode = *(const int *)user;
  if (mode == 1) return 5;
  for (size_t i = 0; i < n; i++) {
    f[i] = 0;
    for (size_t j = 0; j < dim; j++) {
      f[i] -= 0.5 * x[i * dim + j] * x[i * dim + j];
      if (grad) grad[i * dim + j] = -x[i * dim + j];
    }
  }
  if (mode == 2 && n > 1) f[1] = NAN;
  if (mode == 3 && n > 1 && grad) grad[dim + 1] = NAN;
  return 0;
}

/* A cotangent that misbehaves by mode: 1 NaN in g_x, 2 Inf in g_log_q, 3
   refuses with NF_EDOMAIN and its own message. */
static nf_status bad_cotangent(size_t n, size_t d, const double *x, const double *log_q,
                               double *g_x, double *g_log_q, void *user)
{
  int mode = *(const int *)user;
  (void)x;
  (void)log_q;
  for (size_t k = 0; k < n * d; k++) g_x[k] = 1.0;
  for (size_t i = 0; i < n; i++) g_log_q[i] = 1.0;
  if (mode == 1) g_x[n * d - 1] = NAN;
  if (mode == 2) g_log_q[0] = INFINITY;
  if (mode == 3) return nf_set_error(NF_EDOMAIN, "my cotangent refuses");
  return NF_OK;
}

START_TEST(bad_targets_and_estimator_names)
{
  const double w[2] = {1, 1}, m[4] = {0, 0, 1, 1}, s[4] = {1, 1, 1, 1}, bad_w[2] = {1, 0};
  const double nan_m[4] = {0, NAN, 1, 1}, inf_s[4] = {1, 1, INFINITY, 1}, neg_w[2] = {-1, 1};
  ASSERT_NULL(nf_target_new(0, bad_target_fn, NULL), "dim is 0");
  ASSERT_NULL(nf_target_new(2, NULL, NULL), "callback is NULL");
  ASSERT_NULL(nf_target_mixture(0, 2, w, m, s), "dim or k is 0");
  ASSERT_NULL(nf_target_mixture(2, 0, w, m, s), "dim or k is 0");
  ASSERT_NULL(nf_target_mixture(2, 2, NULL, m, s), "NULL");
  ASSERT_NULL(nf_target_mixture(2, 2, w, NULL, s), "NULL");
  ASSERT_NULL(nf_target_mixture(2, 2, w, m, NULL), "NULL");
  ASSERT_NULL(nf_target_mixture(2, 2, bad_w, m, s), "weights[1] is 0");
  ASSERT_NULL(nf_target_mixture(2, 2, neg_w, m, s), "weights[0] is -1");
  ASSERT_NULL(nf_target_mixture(2, 2, w, nan_m, s), "means[1] is nan");
  ASSERT_NULL(nf_target_mixture(2, 2, w, m, inf_s), "sigmas[2] is inf");
  ASSERT_NULL(nf_target_phi4(1, 0, 0), "L >= 2");
  ASSERT_NULL(nf_target_phi4(4, NAN, 0), "finite m2");
  ASSERT_NULL(nf_target_phi4(4, 1, -1), "lambda >= 0");
  ASSERT_NULL(nf_target_phi4(4, 1, INFINITY), "lambda >= 0");
  nf_target_free(NULL);
  int mode = 0;
  nf_target *user = nf_target_new(2, bad_target_fn, &mode), *phi4 = nf_target_phi4(2, 1, 0);
  double x[4] = {0, 1, 2, 3}, f[2] = {7, 7}, g[4], lz = 7, mag = 7;
  ASSERT_FAILS(nf_target_eval(NULL, 2, x, f, g), NF_EINVAL, "target, x or f is NULL");
  ASSERT_FAILS(nf_target_eval(user, 2, NULL, f, g), NF_EINVAL, "target, x or f is NULL");
  ASSERT_FAILS(nf_target_eval(user, 2, x, NULL, g), NF_EINVAL, "target, x or f is NULL");
  ASSERT_FAILS(nf_target_eval(user, 0, x, f, g), NF_EINVAL, "n is 0");
  x[3] = NAN;
  ASSERT_FAILS(nf_target_eval(user, 2, x, f, g), NF_ENONFINITE, "row 1, column 1 is nan");
  x[3] = 3;
  mode = 1;
  ASSERT_FAILS(nf_target_eval(user, 2, x, f, g), NF_EDOMAIN, "callback returned 5");
  mode = 2;
  ASSERT_FAILS(nf_target_eval(user, 2, x, f, NULL), NF_ENONFINITE, "value at row 1");
  mode = 3;
  ASSERT_FAILS(nf_target_eval(user, 2, x, f, g), NF_ENONFINITE, "gradient at row 1, column 1");
  ck_assert_int_eq(nf_target_eval(user, 2, x, f, NULL), NF_OK); /* no gradient asked: fine */
  ASSERT_FAILS(nf_target_log_z(NULL, &lz), NF_EINVAL, "NULL");
  ASSERT_FAILS(nf_target_log_z(user, NULL), NF_EINVAL, "NULL");
  ASSERT_FAILS(nf_target_log_z(user, &lz), NF_ESTATE, "'user' is not known");
  ASSERT_FAILS(nf_target_log_z(phi4, &lz), NF_ESTATE, "'phi4' is not known");
  ck_assert(lz == 7);
  ASSERT_FAILS(nf_target_phi4_magnetisation(user, 1, x, &mag), NF_EINVAL, "not phi4");
  ASSERT_FAILS(nf_target_phi4_magnetisation(phi4, 0, x, &mag), NF_EINVAL, "n is 0");
  ASSERT_FAILS(nf_target_phi4_magnetisation(NULL, 1, x, &mag), NF_EINVAL, "NULL");
  ASSERT_FAILS(nf_target_phi4_magnetisation(phi4, 1, NULL, &mag), NF_EINVAL, "NULL");
  ASSERT_FAILS(nf_target_phi4_magnetisation(phi4, 1, x, NULL), NF_EINVAL, "NULL");
  ck_assert(mag == 7);
  nf_grad_estimator e;
  for (int k = NF_GRAD_TOTAL; k <= NF_GRAD_STL; k++) {
    ck_assert_int_eq(nf_grad_estimator_parse(nf_grad_estimator_name(k), &e), NF_OK);
    ck_assert_int_eq(e, k);
  }
  ck_assert_str_eq(nf_grad_estimator_name(NF_GRAD_TOTAL), "total");
  ASSERT_FAILS(nf_grad_estimator_parse("score", &e), NF_EINVAL, "score");
  ck_assert_int_eq(e, NF_GRAD_STL);
  ck_assert_int_eq(nf_grad_estimator_parse(NULL, &e), NF_EINVAL);
  ck_assert_str_eq(nf_grad_estimator_name(NF_GRAD_STL), "stl");
  ck_assert_str_eq(nf_grad_estimator_name((nf_grad_estimator)9), "?");
  nf_objective ml = nf_objective_max_likelihood(), rk = nf_objective_reverse_kl(user);
  ck_assert(ml.nll_weight == 1 && ml.reverse_kl_weight == 0 && !nf_objective_samples(&ml));
  ck_assert(rk.reverse_kl_weight == 1 && rk.target == user && nf_objective_samples(&rk));
  ck_assert(!nf_objective_samples(NULL));
  nf_target_free(user);
  nf_target_free(phi4);
}
END_TEST

/* sample_grad_ws's refusals: g_theta and g_ctx (filled with 7) untouched by
   every one, as the header promises; x untouched when the cotangent fails. */
START_TEST(bad_sample_grad_calls)
{
  nf_flow *flow = small_recipe(NF_RECIPE_REALNVP, 2, 2), *other = small_recipe(NF_RECIPE_MAF, 2, 0);
  size_t p = nf_flow_n_params(flow);
  nf_flow_ws *ws = ws_of(flow, 3), *ws_other = ws_of(other, 3);
  /* 8 rows of room: the n = 4 call reads its rows before refusing them */
  double eps[8] = {0.1, 0.2, -0.3, 0.4, 0.5, -0.6}, ctx[8] = {0}, x[6], lq[4], g_ctx[6];
  double *g = malloc(p * sizeof *g);
  for (size_t k = 0; k < p; k++) g[k] = 7;
  for (size_t k = 0; k < 6; k++) g_ctx[k] = x[k] = 7;
  int mode = 0;
#define SG(fl, w, n, e, c, cot, xx) \
  nf_flow_sample_grad_ws(fl, w, 1, n, e, c, cot, &mode, xx, lq, g_ctx, g)
  ASSERT_FAILS(SG(NULL, ws, 3, eps, ctx, bad_cotangent, x), NF_EINVAL, "flow is NULL");
  ASSERT_FAILS(SG(flow, NULL, 3, eps, ctx, bad_cotangent, x), NF_EINVAL, "workspace is NULL");
  ASSERT_FAILS(SG(flow, ws_other, 3, eps, ctx, bad_cotangent, x), NF_ESTATE, "another flow");
  ASSERT_FAILS(SG(flow, ws, 0, eps, ctx, bad_cotangent, x), NF_EINVAL, "n is 0");
  ASSERT_FAILS(SG(flow, ws, 4, eps, ctx, bad_cotangent, x), NF_EINVAL, "exceed the workspace");
  ASSERT_FAILS(SG(flow, ws, 3, NULL, ctx, bad_cotangent, x), NF_EINVAL, "eps or cotangent");
  ASSERT_FAILS(SG(flow, ws, 3, eps, ctx, NULL, x), NF_EINVAL, "eps or cotangent");
  ASSERT_FAILS(SG(flow, ws, 3, eps, ctx, bad_cotangent, NULL), NF_EINVAL, "output is NULL");
  ASSERT_FAILS(SG(flow, ws, 3, eps, NULL, bad_cotangent, x), NF_EINVAL, "ctx");
  eps[3] = NAN;
  ASSERT_FAILS(SG(flow, ws, 3, eps, ctx, bad_cotangent, x), NF_ENONFINITE, "eps");
  eps[3] = 0.4;
  ctx[5] = INFINITY;
  ASSERT_FAILS(SG(flow, ws, 3, eps, ctx, bad_cotangent, x), NF_ENONFINITE, "row 2");
  ctx[5] = 0;
  mode = 1;
  ASSERT_FAILS(SG(flow, ws, 3, eps, ctx, bad_cotangent, x), NF_ENONFINITE, "cotangent g_x");
  mode = 2;
  ASSERT_FAILS(SG(flow, ws, 3, eps, ctx, bad_cotangent, x), NF_ENONFINITE, "cotangent g_log_q");
  mode = 3;
  ASSERT_FAILS(SG(flow, ws, 3, eps, ctx, bad_cotangent, x), NF_EDOMAIN, "my cotangent refuses");
#undef SG
  for (size_t k = 0; k < p; k++) ck_assert(g[k] == 7);
  for (size_t k = 0; k < 6; k++) ck_assert(g_ctx[k] == 7 && x[k] == 7);
  mode = 0;
  ck_assert_int_eq(nf_flow_sample_grad_ws(flow, ws, 1, 3, eps, ctx, bad_cotangent, &mode, x, lq,
                                          g_ctx, g), NF_OK);
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  ASSERT_FAILS(nf_flow_sample_grad(NULL, &rng, 3, NULL, bad_cotangent, &mode, x, lq), NF_EINVAL,
               "flow or rng is NULL");
  ASSERT_FAILS(nf_flow_sample_grad(other, NULL, 3, NULL, bad_cotangent, &mode, x, lq), NF_EINVAL,
               "flow or rng is NULL");
  ASSERT_FAILS(nf_flow_sample_grad(other, &rng, 0, NULL, bad_cotangent, &mode, x, lq), NF_EINVAL,
               "n is 0");
  free(g);
  nf_flow_ws_free(ws);
  nf_flow_ws_free(ws_other);
  nf_flow_free(flow);
  nf_flow_free(other);
}
END_TEST

/* Asserts that nf_objective_grad_ws refuses the call (ctx NULL, seed 1,
   loss NULL if null_loss) with status want and
   a message containing part, zeroing grad (filled with 7 first) and leaving
   *loss (42) untouched, as the header promises. */
static void objective_refused(const nf_objective *o, const nf_flow *flow, nf_flow_ws *ws,
                              size_t n_draws, const double *eps, size_t n_data, const double *x,
                              int null_loss, nf_status want, const char *part)
{
  size_t p = nf_flow_n_params(flow);
  double loss = 42, *g = malloc(p * sizeof *g);
  for (size_t k = 0; k < p; k++) g[k] = 7;
  ASSERT_FAILS(nf_objective_grad_ws(o, flow, ws, 1, n_draws, eps, n_data, x, NULL,
                                    null_loss ? NULL : &loss, g, NULL, NULL), want, part);
  for (size_t k = 0; k < p; k++) ck_assert_msg(g[k] == 0, "grad[%zu] = %g, not zeroed", k, g[k]);
  ck_assert(loss == 42);
  free(g);
}

/* nf_objective_check and nf_objective_grad_ws refusals: grad zeroed (it was
   filled with 7) and *loss untouched on every failure with a flow and grad. */
START_TEST(bad_objectives)
{
  nf_flow *flow = small_recipe(NF_RECIPE_REALNVP, 2, 0), *cond = small_recipe(NF_RECIPE_MAF, 2, 2);
  nf_flow_ws *ws = ws_of(flow, 4);
  int mode = 0;
  nf_target *well = nf_target_doublewell(), *user = nf_target_new(2, bad_target_fn, &mode);
  nf_target *phi4 = nf_target_phi4(2, 1, 0.5);
  /* 5 rows of draws: the n_draws = 5 call reads them before refusing the batch */
  double eps[10] = {0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, -0.8}, data[4] = {0, 1, 1, 0};
  nf_objective o = nf_objective_reverse_kl(well), bad;
  ASSERT_FAILS(nf_objective_check(NULL, 2, 0), NF_EINVAL, "objective is NULL");
  const struct {
    nf_objective o;
    nf_status want;
    const char *part;
  } cases[] = {
    {{0, 0, 0, 0, well, NULL, NF_GRAD_TOTAL, 1.0}, NF_EINVAL, "every weight is 0"},
    {{0, 1, 0, NAN, well, NULL, NF_GRAD_TOTAL, 1.0}, NF_EINVAL, "entropy_weight is nan"},
    {{INFINITY, 1, 0, 0, well, NULL, NF_GRAD_TOTAL, 1.0}, NF_EINVAL, "nll_weight is inf"},
    {{0, 1, 0, 0, NULL, NULL, NF_GRAD_TOTAL, 1.0}, NF_EINVAL, "no target"},
    {{0, 1, 1, 0, well, NULL, NF_GRAD_TOTAL, 1.0}, NF_EINVAL, "no observable"},
    {{0, 1, 0, 0, phi4, NULL, NF_GRAD_TOTAL, 1.0}, NF_EDIM, "target 'phi4' is 4-D, the flow 2-D"},
    {{0, 0, 1, 0, NULL, phi4, NF_GRAD_TOTAL, 1.0}, NF_EDIM, "observable 'phi4' is 4-D"},
    {{0, 1, 0, 0, well, NULL, (nf_grad_estimator)5, 1.0}, NF_EINVAL, "unknown gradient estimator 5"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    ASSERT_FAILS(nf_objective_check(&cases[k].o, 2, 0), cases[k].want, cases[k].part);
    objective_refused(&cases[k].o, flow, ws, 4, eps, 0, NULL, 0, cases[k].want, cases[k].part);
  }
  ASSERT_FAILS(nf_objective_check(&o, 2, 2), NF_EDIM, "conditional");
  nf_objective ml = nf_objective_max_likelihood();
  ck_assert_int_eq(nf_objective_check(&ml, 2, 2), NF_OK);
  ck_assert_int_eq(nf_objective_check(&o, 2, 0), NF_OK);
  /* grad_ws */
  double loss = 42, g1[1] = {7};
  ASSERT_FAILS(nf_objective_grad_ws(&o, NULL, ws, 1, 4, eps, 0, NULL, NULL, &loss, g1, NULL,
                                    NULL), NF_EINVAL, "flow, loss or grad is NULL");
  ck_assert(g1[0] == 7); /* no flow: its size is unknown */
  objective_refused(&o, flow, ws, 4, eps, 0, NULL, 1, NF_EINVAL, "flow, loss or grad is NULL");
  ASSERT_FAILS(nf_objective_grad_ws(&o, flow, ws, 1, 4, eps, 0, NULL, NULL, &loss, NULL, NULL,
                                    NULL), NF_EINVAL, "flow, loss or grad is NULL");
  objective_refused(NULL, flow, ws, 4, eps, 0, NULL, 0, NF_EINVAL, "objective is NULL");
  objective_refused(&o, flow, ws, 0, eps, 0, NULL, 0, NF_EINVAL, "n_draws is 0");
  objective_refused(&o, flow, ws, 4, NULL, 0, NULL, 0, NF_EINVAL, "eps");
  objective_refused(&o, flow, ws, 5, eps, 0, NULL, 0, NF_EINVAL, "exceed the workspace");
  objective_refused(&ml, flow, ws, 0, NULL, 0, NULL, 0, NF_EINVAL, "n_data is 0");
  objective_refused(&ml, flow, ws, 0, NULL, 2, NULL, 0, NF_EINVAL, "input is NULL");
  eps[5] = NAN;
  objective_refused(&o, flow, ws, 4, eps, 0, NULL, 0, NF_ENONFINITE, "eps");
  eps[5] = -0.6;
  bad = o;
  bad.target = user;
  static const char *const parts[] = {"", "callback returned 5", "value at row 1",
                                      "gradient at row 1"};
  for (mode = 1; mode <= 3; mode++)
    objective_refused(&bad, flow, ws, 4, eps, 0, NULL, 0, mode == 1 ? NF_EDOMAIN : NF_ENONFINITE,
                      parts[mode]);
  nf_objective ef = {0, 0, 1, 0, NULL, user, NF_GRAD_TOTAL, 1.0};
  mode = 1;
  objective_refused(&ef, flow, ws, 4, eps, 0, NULL, 0, NF_EDOMAIN, "callback returned 5");
  /* a flow without parameters takes grad NULL */
  nf_flow *fixed = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(fixed, nf_reverse_new(2)), NF_OK);
  nf_flow_ws *ws_f = ws_of(fixed, 4);
  double loss_f = NAN;
  ck_assert_int_eq(nf_objective_grad_ws(&o, fixed, ws_f, 1, 4, eps, 0, NULL, NULL, &loss_f, NULL,
                                        NULL, NULL), NF_OK);
  ck_assert(isfinite(loss_f));
  nf_flow_ws_free(ws_f);
  nf_flow_free(fixed);
  nf_flow_ws *ws_c = ws_of(cond, 4);
  double ctx[4] = {0};
  objective_refused(&o, cond, ws_c, 4, eps, 0, NULL, 0, NF_EDIM, "conditional");
  size_t pc = nf_flow_n_params(cond);
  double *gc = malloc(pc * sizeof *gc);
  /* a data-only objective on the conditional flow is fine */
  ck_assert_int_eq(nf_objective_grad_ws(&ml, cond, ws_c, 1, 0, NULL, 2, data, ctx, &loss, gc,
                                        NULL, NULL), NF_OK);
  ck_assert(isfinite(loss) && loss != 42);
  free(gc);
  nf_flow_ws_free(ws);
  nf_flow_ws_free(ws_c);
  nf_target_free(well); nf_target_free(user); nf_target_free(phi4);
  nf_flow_free(flow);
  nf_flow_free(cond);
}
END_TEST

/* Importance refusals; outputs untouched (filled with 7). A weight of 0 (log w
   = -inf) is allowed: log w = (0, -inf, 0, -inf) gives ESS 1/2 and log Z = log 1/2. */
START_TEST(bad_importance_calls)
{
  double lw[4] = {0, -INFINITY, 0, -INFINITY}, obs[4] = {1, 2, 3, 4}, mean = 7, err = 7;
  nf_importance out = {7, 7, 7, 7};
  ck_assert_int_eq(nf_importance_summary(4, lw, &out), NF_OK);
  ck_assert_double_eq_tol(out.ess, 0.5, 1e-15);
  ck_assert_double_eq_tol(out.log_z, log(0.5), 1e-15);
  ck_assert_int_eq(nf_importance_mean(4, lw, 1, obs, &mean, &err), NF_OK);
  ck_assert_double_eq_tol(mean, 2.0, 1e-15); /* (1 + 3) / 2 */
  out = (nf_importance){7, 7, 7, 7};
  mean = err = 7;
  ASSERT_FAILS(nf_importance_summary(1, lw, &out), NF_EINVAL, "n < 2");
  ASSERT_FAILS(nf_importance_summary(4, NULL, &out), NF_EINVAL, "NULL");
  ASSERT_FAILS(nf_importance_summary(4, lw, NULL), NF_EINVAL, "out is NULL");
  lw[2] = NAN;
  ASSERT_FAILS(nf_importance_summary(4, lw, &out), NF_ENONFINITE, "log weight 2 is nan");
  ASSERT_FAILS(nf_importance_mean(4, lw, 1, obs, &mean, &err), NF_ENONFINITE, "log weight 2");
  lw[2] = INFINITY;
  ASSERT_FAILS(nf_importance_summary(4, lw, &out), NF_ENONFINITE, "log weight 2 is inf");
  lw[0] = lw[2] = -INFINITY;
  ASSERT_FAILS(nf_importance_summary(4, lw, &out), NF_ENONFINITE, "every weight is 0");
  ASSERT_FAILS(nf_importance_mean(4, lw, 1, obs, &mean, &err), NF_ENONFINITE, "every weight is 0");
  lw[0] = lw[2] = 0;
  ASSERT_FAILS(nf_importance_mean(1, lw, 1, obs, &mean, &err), NF_EINVAL, "n < 2");
  ASSERT_FAILS(nf_importance_mean(4, lw, 0, obs, &mean, &err), NF_EINVAL, "m is 0");
  ASSERT_FAILS(nf_importance_mean(4, lw, 1, NULL, &mean, &err), NF_EINVAL, "obs or mean is NULL");
  ASSERT_FAILS(nf_importance_mean(4, lw, 1, obs, NULL, &err), NF_EINVAL, "obs or mean is NULL");
  obs[1] = NAN;
  ASSERT_FAILS(nf_importance_mean(2, lw, 2, obs, &mean, &err), NF_ENONFINITE,
               "observable 1 of draw 0");
  ck_assert(out.n == 7 && out.ess == 7 && out.log_z == 7 && out.log_z_err == 7);
  ck_assert(mean == 7 && err == 7);
  /* samplers */
  nf_flow *flow = small_recipe(NF_RECIPE_REALNVP, 2, 0), *cond = small_recipe(NF_RECIPE_MAF, 2, 2);
  nf_target *well = nf_target_doublewell(), *phi4 = nf_target_phi4(2, 1, 0.5);
  int mode = 1;
  nf_target *user = nf_target_new(2, bad_target_fn, &mode);
  nf_rng rng;
  nf_rng_seed(&rng, 3);
  double x[8], log_w[4];
  ASSERT_FAILS(nf_importance_sample(NULL, &rng, well, 4, x, log_w), NF_EINVAL, "NULL argument");
  ASSERT_FAILS(nf_importance_sample(flow, &rng, NULL, 4, x, log_w), NF_EINVAL, "NULL argument");
  ASSERT_FAILS(nf_importance_sample(flow, &rng, well, 0, x, log_w), NF_EINVAL, "n is 0");
  ASSERT_FAILS(nf_importance_sample(flow, &rng, well, 4, NULL, log_w), NF_EINVAL, "NULL");
  ASSERT_FAILS(nf_importance_sample(flow, &rng, well, 4, x, NULL), NF_EINVAL, "NULL");
  ASSERT_FAILS(nf_importance_sample(flow, NULL, well, 4, x, log_w), NF_EINVAL, "NULL");
  ASSERT_FAILS(nf_importance_sample(flow, &rng, phi4, 4, x, log_w), NF_EDIM, "'phi4' is 4-D");
  ASSERT_FAILS(nf_importance_sample(cond, &rng, well, 4, x, log_w), NF_EDIM, "context 2");
  ASSERT_FAILS(nf_importance_sample(flow, &rng, user, 4, x, log_w), NF_EDOMAIN, "returned 5");
  nf_flow_ws *ws = ws_of(flow, 4);
  ASSERT_FAILS(nf_importance_sample_ws(flow, NULL, &rng, well, 4, x, log_w), NF_EINVAL,
               "workspace is NULL");
  ASSERT_FAILS(nf_importance_sample_ws(flow, ws, &rng, phi4, 4, x, log_w), NF_EDIM, "4-D");
  mode = 2;
  ASSERT_FAILS(nf_importance_sample_ws(flow, ws, &rng, user, 4, x, log_w), NF_ENONFINITE,
               "value at row 1");
  nf_flow_ws_free(ws);
  nf_target_free(well); nf_target_free(phi4); nf_target_free(user);
  nf_flow_free(flow);
  nf_flow_free(cond);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {reverse_kl_gradient_of_affine_flow_is_closed_form,
                          expectation_and_mixed_gradients_match_finite_differences,
                          tempered_target_is_the_scaled_target,
                          mixed_forward_and_reverse_is_the_weighted_sum,
                          entropy_estimate_and_its_gradient,
                          stl_is_unbiased_and_exact_at_q_equals_p,
                          importance_weights_at_q_equals_p_and_a_known_mean,
                          sample_grad_matches_fd_for_every_recipe,
                          cnf_reverse_kl_matches_fd_every_adjoint,
                          convenience_sample_grad_is_the_ws_call,
                          two_threads_are_bit_for_bit_serial,
                          targets_values_gradients_and_normalisers,
                          bad_targets_and_estimator_names,
                          bad_sample_grad_calls,
                          bad_objectives,
                          bad_importance_calls,
                          NULL};
  return th_run_tests("objective", 0, tests);
}
