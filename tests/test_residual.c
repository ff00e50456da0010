/* tests/test_residual.c — residual flow layer (i-ResNet / Residual Flows):
   Lip(g) < 1 by finite differences, round trip, exact log-det against a
   finite-difference Jacobian and vjp against finite differences in both
   directions (input, context, theta), the Russian-roulette log-det estimator
   and the Neumann gradient estimator unbiased (within 4 standard errors),
   grid mass of a 2-D flow, save -> load bit for bit, threads, bad calls, a
   non-converging fixed point refused, and the one-step Euler CNF with the
   same field agreeing to first order in T. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static const size_t HID[2] = {16, 12};

/* Options: two hidden layers (16, 12), the given log-det mode. */
static nf_residual_opts opts_of(nf_residual_logdet mode)
{
  nf_residual_opts o = nf_residual_defaults();
  o.n_hidden = 2;
  o.hidden = HID;
  o.logdet = mode;
  o.fixed_tol = 1e-14; /* the sampling direction's FD checks at h = 1e-6 need error << 1e-12 */
  return o;
}

/* A residual layer (d, c, mode) and theta ~ N(0, scale^2) from seed (caller frees). */
static nf_layer *make_layer(size_t d, size_t c, nf_residual_logdet mode, uint64_t seed,
                            double scale, double **theta)
{
  nf_residual_opts o = opts_of(mode);
  nf_layer *layer = nf_residual_new(d, c, &o, NULL);
  ck_assert_msg(layer != NULL, "%s", nf_errmsg());
  *theta = th_random_theta(layer, seed, scale);
  return layer;
}

/* g(x) = z - x by the density direction, for n rows. */
static void eval_g(const nf_layer *layer, const double *theta, size_t n, const double *x,
                   const double *ctx, double *g)
{
  size_t d = nf_layer_dim(layer);
  double *work = nf_layer_work_new(layer, n);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, n, x, ctx, g, NULL, NULL, work), NF_OK);
  for (size_t k = 0; k < n * d; k++) g[k] -= x[k];
  nf_layer_work_free(layer, n, work);
}

/* max over the n rows of |g(x_i) - g(y_i)| / |x_i - y_i|. */
static double max_ratio(const nf_layer *layer, const double *theta, size_t n, const double *x,
                        const double *y, const double *ctx)
{
  size_t d = nf_layer_dim(layer);
  double *gx = malloc(n * d * sizeof *gx), *gy = malloc(n * d * sizeof *gy), worst = 0;
  eval_g(layer, theta, n, x, ctx, gx);
  eval_g(layer, theta, n, y, ctx, gy);
  for (size_t i = 0; i < n; i++) {
    double num = 0, den = 0;
    for (size_t j = 0; j < d; j++) {
      num += (gx[i * d + j] - gy[i * d + j]) * (gx[i * d + j] - gy[i * d + j]);
      den += (x[i * d + j] - y[i * d + j]) * (x[i * d + j] - y[i * d + j]);
    }
    worst = fmax(worst, sqrt(num / den));
  }
  free(gx);
  free(gy);
  return worst;
}

/* |g(x) - g(y)| / |x - y| <= c^L = 0.9^3 at 400 random pairs, near (|x - y| ~ 1e-4)
   and far (~1), weights N(0, 1) (every normalisation active); and a net built
   to reach the bound: d = 2, one hidden layer of 4, W1 = 10 (1,1,1,1)^T e1^T / 2,
   W2 = 10 e1 (1,1,1,1) / 2, zero biases, so J(0) = 0.81 e1 e1^T after
   normalisation: the ratio near 0 along e1 is in [0.80, 0.81]. */
START_TEST(lipschitz_below_one)
{
  enum { N = 200, D = 4, C = 2 };
  double *theta, worst = 0, bound = 0.9 * 0.9 * 0.9;
  nf_layer *layer = make_layer(D, C, NF_RESIDUAL_EXACT, 11, 1.0, &theta);
  double *x = th_random_points(N, D, 12, 1.0), *dx = th_random_points(N, D, 13, 1.0);
  double *ctx = th_random_points(N, C, 14, 1.0), y[N * D];
  for (int near = 0; near < 2; near++) {
    for (size_t k = 0; k < N * D; k++) y[k] = x[k] + (near ? 1e-4 : 1.0) * dx[k];
    worst = fmax(worst, max_ratio(layer, theta, N, x, y, ctx));
  }
  printf("residual: random net: max |g(x) - g(y)| / |x - y| = %.4f over %d pairs (bound %.4f)\n",
         worst, 2 * N, bound);
  ck_assert_double_le(worst, bound * (1 + 1e-9));
  free(theta);
  nf_layer_free(layer);

  static const size_t h4[1] = {4};
  nf_residual_opts o = nf_residual_defaults();
  o.hidden = h4;
  layer = nf_residual_new(2, 0, &o, NULL);
  double th[4 * 2 + 4 + 2 * 4 + 2] = {0};
  for (int k = 0; k < 4; k++) {
    th[2 * k] = 5.0;  /* W1[k][0] */
    th[12 + k] = 5.0; /* W2[0][k] */
  }
  for (size_t i = 0; i < N; i++) {
    x[2 * i] = 1e-4 * dx[2 * i];
    x[2 * i + 1] = dx[2 * i + 1];
    y[2 * i] = x[2 * i] + 1e-5;
    y[2 * i + 1] = x[2 * i + 1];
  }
  double aligned = max_ratio(layer, th, N, x, y, NULL);
  printf("residual: aligned net (unnormalised Lip 100): max ratio %.6f (bound 0.81)\n", aligned);
  ck_assert_double_le(aligned, 0.81 * (1 + 1e-9));
  ck_assert_double_ge(aligned, 0.80);
  free(x);
  free(dx);
  free(ctx);
  nf_layer_free(layer);
}
END_TEST

/* Exact mode, both directions: round trip <= 1e-8 (the sampling direction is a
   fixed point to 1e-12), log-det vs FD Jacobian <= 1e-6, vjp (input, context,
   theta) vs FD <= 1e-6; d = 1, 2, 4, with and without a context. */
START_TEST(exact_bijector_checks)
{
  th_tolerances tol = th_default_tolerances();
  tol.roundtrip = 1e-8;
  tol.cancel = 1e-8;
  const size_t dims[] = {1, 2, 4}, ctxs[] = {0, 2};
  for (size_t a = 0; a < 3; a++)
    for (size_t b = 0; b < 2; b++) {
      size_t d = dims[a], c = ctxs[b], n = 6;
      double *theta;
      nf_layer *layer = make_layer(d, c, NF_RESIDUAL_EXACT, 20 + a + 3 * b, 1.0, &theta);
      double *z = th_random_points(n, d, 30 + a, 1.5);
      double *ctx = c ? th_random_points(n, c, 40 + a, 1.0) : NULL;
      th_check_bijector("residual exact", layer, theta, n, z, ctx, &tol);
      th_check_vjp_accumulates(layer, theta, n, z, ctx);
      free(theta);
      free(z);
      free(ctx);
      nf_layer_free(layer);
    }
}
END_TEST

/* Exact log-det of n copies of the row x (d = 3) by the exact layer. */
static double exact_logdet(const double *theta, const double *x)
{
  nf_residual_opts o = opts_of(NF_RESIDUAL_EXACT);
  nf_layer *layer = nf_residual_new(3, 0, &o, NULL);
  double z[3], ld = 0, *work = nf_layer_work_new(layer, 1);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, 1, x, NULL, z, &ld, NULL, work), NF_OK);
  nf_layer_work_free(layer, 1, work);
  nf_layer_free(layer);
  return ld;
}

/* The Russian-roulette estimate over 20000 probe draws (rows of one batch: the
   noise is keyed by the global row) has mean within 4 standard errors of the
   exact log-det, for Rademacher and Gaussian probes. */
START_TEST(estimator_unbiased)
{
  enum { N = 20000, D = 3 };
  double *theta;
  nf_layer *exact = make_layer(D, 0, NF_RESIDUAL_EXACT, 51, 0.5, &theta);
  double x0[D] = {0.3, -0.7, 1.1}, want = exact_logdet(theta, x0);
  double *x = malloc(N * D * sizeof *x), *z = malloc(N * D * sizeof *z), *ld = malloc(N * sizeof *ld);
  for (size_t i = 0; i < N; i++) memcpy(x + i * D, x0, sizeof x0);
  for (int k = 0; k < 2; k++) {
    nf_residual_opts o = opts_of(NF_RESIDUAL_ESTIMATE);
    o.probe = k ? NF_NOISE_NORMAL : NF_NOISE_RADEMACHER;
    nf_layer *est = nf_residual_new(D, 0, &o, NULL);
    double *work = nf_layer_work_new(est, N), s = 0, s2 = 0;
    nf_apply_opts ao = {.seed = 7, .row0 = 1000};
    memset(ld, 0, N * sizeof *ld);
    ck_assert_int_eq(nf_layer_apply(est, theta, NF_INVERSE, N, x, NULL, z, ld, &ao, work), NF_OK);
    for (size_t i = 0; i < N; i++) {
      s += ld[i];
      s2 += ld[i] * ld[i];
    }
    double mean = s / N, se = sqrt((s2 / N - mean * mean) / (N - 1));
    printf("residual estimate (%s): mean %.5f, exact %.5f, |diff| %.2e = %.2f SE (SE %.1e)\n",
           nf_noise_kind_name(o.probe), mean, want, fabs(mean - want), fabs(mean - want) / se, se);
    ck_assert_double_le(fabs(mean - want), 4 * se);
    ck_assert_double_le(4 * se, 0.1 * fabs(want)); /* a test that can fail */
    nf_layer_work_free(est, N, work);
    nf_layer_free(est);
  }
  free(x);
  free(z);
  free(ld);
  free(theta);
  nf_layer_free(exact);
}
END_TEST

/* The Neumann gradient estimator (vjp with g_logdet = 1, g_out = 0) of the
   log-det at one row: over 40 batches of 500 probe draws, the mean gradient
   with respect to theta and x is within 4 standard errors of central
   differences of the exact log-det, entry by entry. */
START_TEST(gradient_estimator_unbiased)
{
  enum { B = 40, M = 500, D = 3 };
  double *theta;
  nf_layer *exact = make_layer(D, 0, NF_RESIDUAL_EXACT, 61, 0.5, &theta);
  nf_residual_opts o = opts_of(NF_RESIDUAL_ESTIMATE);
  nf_layer *est = nf_residual_new(D, 0, &o, NULL);
  size_t P = nf_layer_n_params(est), K = P + D;
  double x0[D] = {-0.4, 0.9, 0.2}, h = 1e-5;
  double *fd = calloc(K, sizeof *fd), *s = calloc(K, sizeof *s), *s2 = calloc(K, sizeof *s2);
  double *g = calloc(K, sizeof *g), *tp = malloc(P * sizeof *tp);
  for (size_t k = 0; k < K; k++) { /* central differences of the exact log-det */
    double xp[D], xm[D], lp, lm;
    memcpy(tp, theta, P * sizeof *tp);
    memcpy(xp, x0, sizeof x0);
    memcpy(xm, x0, sizeof x0);
    if (k < P) {
      tp[k] = theta[k] + h;
      lp = exact_logdet(tp, x0);
      tp[k] = theta[k] - h;
      lm = exact_logdet(tp, x0);
    } else {
      xp[k - P] += h;
      xm[k - P] -= h;
      lp = exact_logdet(theta, xp);
      lm = exact_logdet(theta, xm);
    }
    fd[k] = (lp - lm) / (2 * h);
  }
  double *x = malloc(M * D * sizeof *x), *z = malloc(M * D * sizeof *z), *gx = malloc(M * D * sizeof *gx);
  double *zero = calloc(M * D, sizeof *zero), ones[M], ld[M];
  for (size_t i = 0; i < M; i++) {
    memcpy(x + i * D, x0, sizeof x0);
    ones[i] = 1.0;
  }
  double *work = nf_layer_work_new(est, M);
  for (size_t b = 0; b < B; b++) {
    nf_apply_opts ao = {.seed = 3, .row0 = b * M};
    ck_assert_int_eq(nf_layer_apply(est, theta, NF_INVERSE, M, x, NULL, z, ld, &ao, work), NF_OK);
    memset(g, 0, K * sizeof *g);
    ck_assert_int_eq(nf_layer_vjp(est, theta, NF_INVERSE, M, x, NULL, z, zero, ones, gx, NULL, g,
                                  work), NF_OK);
    for (size_t i = 0; i < M; i++)
      for (size_t j = 0; j < D; j++) g[P + j] += gx[i * D + j];
    for (size_t k = 0; k < K; k++) {
      s[k] += g[k] / M;
      s2[k] += (g[k] / M) * (g[k] / M);
    }
  }
  double worst = 0, max_se = 0, max_fd = 0;
  for (size_t k = 0; k < K; k++) {
    double mean = s[k] / B, se = sqrt(fmax(s2[k] / B - mean * mean, 0) / (B - 1));
    double zsc = fabs(mean - fd[k]) / fmax(se, 1e-12);
    worst = fmax(worst, zsc);
    max_se = fmax(max_se, se);
    max_fd = fmax(max_fd, fabs(fd[k]));
    ck_assert_msg(zsc <= 4.0, "entry %zu: mean %g, FD %g, SE %g", k, mean, fd[k], se);
  }
  printf("residual gradient estimator: %zu entries (theta, x), worst |mean - FD| = %.2f SE, "
         "max SE %.2e, max |FD| %.2e\n", K, worst, max_se, max_fd);
  ck_assert_double_le(max_se, 0.05 * max_fd); /* a test that can fail */
  nf_layer_work_free(est, M, work);
  free(fd);
  free(s);
  free(s2);
  free(g);
  free(tp);
  free(x);
  free(z);
  free(gx);
  free(zero);
  free(theta);
  nf_layer_free(est);
  nf_layer_free(exact);
}
END_TEST

/* The family's constructor for the flow-level checks (exact log-det). */
static nf_layer *make_exact(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  nf_residual_opts o = opts_of(NF_RESIDUAL_EXACT);
  return nf_residual_new(dim, ctx_dim, &o, rng);
}

/* The same with the Russian-roulette estimate. */
static nf_layer *make_estimate(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  nf_residual_opts o = opts_of(NF_RESIDUAL_ESTIMATE);
  return nf_residual_new(dim, ctx_dim, &o, rng);
}

/* A 2-D flow of three exact residual layers with theta ~ N(0, 1): its density
   integrates to 1 +- 1e-3 on [-9, 9]^2 (300 x 300 midpoints). */
START_TEST(grid_mass)
{
  nf_flow *flow = th_flow_of(make_exact, 2, 0, 3, 71, 1.0);
  th_check_grid_mass("residual 2-D, 3 exact layers", flow, 9.0, 300, 1e-3);
  nf_flow_free(flow);
}
END_TEST

/* Conditional and unconditional flows, and two threads bit-identical to one,
   in both log-det modes (the estimate's noise is keyed by the global row). */
START_TEST(flows_and_threads)
{
  th_check_family_flows(make_exact, 0.8);
  th_check_family_flows(make_estimate, 0.8);
}
END_TEST

/* A flow of residual layers (one exact, one estimate with a Gaussian probe and
   its own settings) saved and loaded: theta, log p and samples bit for bit. */
START_TEST(save_load_bit_for_bit)
{
  enum { D = 3, N = 30 };
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_STD_NORMAL);
  nf_residual_opts o = opts_of(NF_RESIDUAL_EXACT);
  o.lipschitz = 0.7;
  o.power_iters = 50;
  ck_assert_int_eq(nf_flow_push(flow, nf_residual_new(D, 0, &o, &rng)), NF_OK);
  o = opts_of(NF_RESIDUAL_ESTIMATE);
  o.probe = NF_NOISE_NORMAL;
  o.n_exact_terms = 3;
  o.roulette_p = 0.3;
  o.probe_seed = 18446744073709551557ULL;
  ck_assert_int_eq(nf_flow_push(flow, nf_residual_new(D, 0, &o, &rng)), NF_OK);
  char path[64];
  snprintf(path, sizeof path, "/tmp/nf_test_residual_%d.nfm", (int)getpid());
  ck_assert_msg(nf_flow_save(flow, path, NULL) == NF_OK, "%s", nf_errmsg());
  nf_flow *copy = NULL;
  ck_assert_msg(nf_flow_load(path, NULL, &copy, NULL) == NF_OK, "%s", nf_errmsg());
  remove(path);
  size_t np = nf_flow_n_params(flow);
  ck_assert_uint_eq(nf_flow_n_params(copy), np);
  ck_assert(memcmp(nf_flow_params(copy), nf_flow_params(flow), np * sizeof(double)) == 0);
  double xa[N * D], xb[N * D], la[N], lb[N];
  nf_rng ra, rb;
  nf_rng_seed(&ra, 9);
  nf_rng_seed(&rb, 9);
  ck_assert_int_eq(nf_flow_sample(flow, &ra, N, NULL, xa, la), NF_OK);
  ck_assert_int_eq(nf_flow_sample(copy, &rb, N, NULL, xb, lb), NF_OK);
  ck_assert(memcmp(xa, xb, sizeof xa) == 0 && memcmp(la, lb, sizeof la) == 0);
  ck_assert_int_eq(nf_flow_log_prob(flow, N, xa, NULL, la), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob(copy, N, xa, NULL, lb), NF_OK);
  ck_assert(memcmp(la, lb, sizeof la) == 0);
  printf("residual: %zu parameters, samples and log p of %d rows identical after save/load\n",
         np, N);
  nf_flow_free(copy);
  nf_flow_free(flow);
}
END_TEST

/* Bad calls and bad parameters refused; mode names; bad options refused; a fixed point
   that cannot converge in 2 iterations gives NF_ESOLVER and leaves out alone. */
START_TEST(bad_input_refused)
{
  double *theta;
  nf_layer *layer = make_layer(3, 2, NF_RESIDUAL_EXACT, 81, 1.0, &theta);
  th_check_bad_calls(layer, theta);
  free(theta);
  nf_layer_free(layer);
  nf_flow *flow = th_flow_of(make_exact, 3, 0, 2, 82, 0.5);
  th_check_param_refused(flow, 4, NAN, NF_ENONFINITE);
  th_check_param_refused(flow, nf_flow_n_params(flow) - 1, INFINITY, NF_ENONFINITE);
  nf_flow_free(flow);

  nf_residual_logdet mode = NF_RESIDUAL_EXACT;
  ck_assert_int_eq(nf_residual_logdet_parse("estimate", &mode), NF_OK);
  ck_assert_int_eq(mode, NF_RESIDUAL_ESTIMATE);
  ck_assert_int_eq(nf_residual_logdet_parse("lu", &mode), NF_EINVAL);
  ck_assert_int_eq(mode, NF_RESIDUAL_ESTIMATE);
  ck_assert_str_eq(nf_residual_logdet_name(NF_RESIDUAL_EXACT), "exact");
  ck_assert_str_eq(nf_residual_logdet_name((nf_residual_logdet)7), "?");
  nf_residual_opts o = opts_of(NF_RESIDUAL_EXACT);
  o.lipschitz = 1.0;
  ck_assert_ptr_null(nf_residual_new(3, 0, &o, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "lipschitz"));
  o = opts_of(NF_RESIDUAL_ESTIMATE);
  o.roulette_p = 0;
  ck_assert_ptr_null(nf_residual_new(3, 0, &o, NULL));
  o = opts_of(NF_RESIDUAL_ESTIMATE);
  o.probe = NF_NOISE_UNIFORM;
  ck_assert_ptr_null(nf_residual_new(3, 0, &o, NULL));
  o.n_hidden = 0;
  ck_assert_ptr_null(nf_residual_new(3, 0, &o, NULL));

  o = opts_of(NF_RESIDUAL_EXACT);
  o.fixed_max_iter = 2;
  layer = nf_residual_new(3, 0, &o, NULL);
  theta = th_random_theta(layer, 83, 2.0);
  double z[6] = {1, 2, 3, -1, 0.5, 2}, x[6] = {7, 7, 7, 7, 7, 7}, ld[2] = {0, 0};
  double *work = nf_layer_work_new(layer, 2);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, 2, z, NULL, x, ld, NULL, work),
                   NF_ESOLVER);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "did not converge"));
  for (int k = 0; k < 6; k++) ck_assert(x[k] == 7.0);
  ck_assert(ld[0] == 0.0 && ld[1] == 0.0);
  nf_layer_work_free(layer, 2, work);
  free(theta);
  nf_layer_free(layer);
}
END_TEST

/* ---- discrete meets continuous ---- */

/* The field f(x) = W2 tanh(W1 x + b1) + b2 (d = 2, 8 hidden units), written out here. */
typedef struct field_params {
  double W1[8][2], b1[8], W2[2][8], b2[2];
} field_params;

static int field_f(double t, size_t n, const double *z, const double *ctx, const double *theta,
                   double *f, void *user)
{
  (void)t; (void)ctx; (void)theta;
  const field_params *p = user;
  for (size_t i = 0; i < n; i++)
    for (int a = 0; a < 2; a++) {
      double s = p->b2[a];
      for (int k = 0; k < 8; k++)
        s += p->W2[a][k] * tanh(p->W1[k][0] * z[2 * i] + p->W1[k][1] * z[2 * i + 1] + p->b1[k]);
      f[2 * i + a] = s;
    }
  return 0;
}

/* tr(df/dz) = sum_k (1 - h_k^2) sum_a W2[a][k] W1[k][a]. */
static int field_div(double t, size_t n, const double *z, const double *ctx, const double *theta,
                     double *div, void *user)
{
  (void)t; (void)ctx; (void)theta;
  const field_params *p = user;
  for (size_t i = 0; i < n; i++) {
    double s = 0;
    for (int k = 0; k < 8; k++) {
      double h = tanh(p->W1[k][0] * z[2 * i] + p->W1[k][1] * z[2 * i + 1] + p->b1[k]);
      s += (1 - h * h) * (p->W2[0][k] * p->W1[k][0] + p->W2[1][k] * p->W1[k][1]);
    }
    div[i] = s;
  }
  return 0;
}

/* The residual layer z = x + g(x) with g = -T f (its net: 2 -> 8 -> 2, tanh,
   weights small enough that no normalisation acts) and the CNF dx/dt = f
   integrated by one Euler step in the density direction (T back to 0,
   z = x - T f(x), log-det -T tr(df/dx)) agree to first order in T: the maps
   are the same, the log-dets log det(I - T J) and -T tr J differ by
   T^2 tr(J^2)/2 + O(T^3), so the difference shrinks 4-fold as T halves. */
START_TEST(euler_cnf_first_order)
{
  enum { N = 20 };
  field_params fp;
  nf_rng rng;
  nf_rng_seed(&rng, 91);
  double *w = &fp.W1[0][0];
  for (size_t k = 0; k < sizeof fp / sizeof *w; k++) w[k] = 0.3 * (2 * nf_rng_uniform(&rng) - 1);
  static const size_t h8[1] = {8};
  nf_residual_opts ro = nf_residual_defaults();
  ro.hidden = h8;
  nf_layer *res = nf_residual_new(2, 0, &ro, NULL);
  ck_assert_uint_eq(nf_layer_n_params(res), 8 * 2 + 8 + 2 * 8 + 2);
  double *x = th_random_points(N, 2, 92, 1.0), prev = 0, ratio = 0;
  for (int step = 0; step < 4; step++) {
    double T = 0.08 / (1 << step), theta[42];
    memcpy(theta, fp.W1, sizeof fp.W1);
    memcpy(theta + 16, fp.b1, sizeof fp.b1);
    for (int k = 0; k < 16; k++) theta[24 + k] = -T * (&fp.W2[0][0])[k];
    for (int k = 0; k < 2; k++) theta[40 + k] = -T * fp.b2[k];
    nf_field fl = {.f = field_f, .div = field_div, .user = &fp};
    nf_cnf_opts co = nf_cnf_defaults();
    co.end_time = T;
    co.train_end_time = 0;
    co.ode = nf_ode_defaults(NF_ODE_EULER);
    co.ode.fixed_steps = 1;
    nf_layer *cnf = nf_cnf_field_new(2, 0, &fl, &co);
    ck_assert_msg(cnf != NULL, "%s", nf_errmsg());
    double zr[N * 2], zc[N * 2], lr[N] = {0}, lc[N] = {0};
    double *wr = nf_layer_work_new(res, N), *wc = nf_layer_work_new(cnf, N);
    ck_assert_int_eq(nf_layer_apply(res, theta, NF_INVERSE, N, x, NULL, zr, lr, NULL, wr), NF_OK);
    ck_assert_int_eq(nf_layer_apply(cnf, nf_layer_init_params(cnf), NF_INVERSE, N, x, NULL, zc,
                                    lc, NULL, wc), NF_OK);
    double dz = th_max_abs_diff(N * 2, zr, zc), dl = th_max_abs_diff(N, lr, lc);
    if (step) ratio = prev / dl;
    printf("residual vs Euler CNF: T = %.4f: max |z diff| %.1e, max |log-det diff| %.3e%s",
           T, dz, dl, step ? "" : "\n");
    if (step) printf(", ratio to T*2: %.3f\n", ratio);
    ck_assert_double_le(dz, 1e-14);
    if (step) ck_assert_double_le(fabs(ratio - 4.0), 0.25);
    prev = dl;
    nf_layer_work_free(res, N, wr);
    nf_layer_work_free(cnf, N, wc);
    nf_layer_free(cnf);
  }
  free(x);
  nf_layer_free(res);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("residual");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, lipschitz_below_one);
  tcase_add_test(tc, exact_bijector_checks);
  tcase_add_test(tc, estimator_unbiased);
  tcase_add_test(tc, gradient_estimator_unbiased);
  tcase_add_test(tc, grid_mass);
  tcase_add_test(tc, flows_and_threads);
  tcase_add_test(tc, save_load_bit_for_bit);
  tcase_add_test(tc, bad_input_refused);
  tcase_add_test(tc, euler_cnf_first_order);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
