/* tests/test_flow.c — nf_flow: base densities, the chain's log_prob / sample /
   nll_grad against finite differences, grid mass, and bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"

static const double LOG_2PI = 1.83787706640934548356;

/* A 2- or 3-D chain of every kind of layer with random parameters (seed 21):
   affine, LU-linear, affine coupling, permutation, additive coupling, planar, radial. */
static nf_flow *random_chain(size_t d, nf_base base, double scale)
{
  nf_rng rng;
  nf_rng_seed(&rng, 21);
  nf_flow *flow = nf_flow_new(d, 0, base);
  unsigned char mask[3];
  size_t hidden[] = {8, 8};
  nf_coupling_mask_half(d, 0, mask);
  nf_coupling_opts affine = {nf_transformer_spec_default(NF_TRANSFORMER_AFFINE), mask, 2, hidden, NF_ACT_TANH, NF_PRECISION_DOUBLE};
  nf_coupling_opts additive = {nf_transformer_spec_default(NF_TRANSFORMER_ADDITIVE), mask, 2, hidden, NF_ACT_SOFTPLUS, NF_PRECISION_DOUBLE};
  nf_layer *layers[] = {nf_affine_new(d), nf_linear_lu_new(d, NULL, NF_DIAG_SOFTPLUS, &rng),
                        nf_coupling_new(d, 0, &affine, &rng), nf_reverse_new(d),
                        nf_coupling_new(d, 0, &additive, &rng), nf_planar_new(d, 1e-13, &rng),
                        nf_radial_new(d, 1e-13, &rng)};
  for (size_t k = 0; k < sizeof layers / sizeof *layers; k++) {
    ck_assert_ptr_nonnull(layers[k]);
    ck_assert_int_eq(nf_flow_push(flow, layers[k]), NF_OK);
  }
  size_t p = nf_flow_n_params(flow);
  double *theta = calloc(p, sizeof *theta); /* the base's mu = log_sigma = 0 */
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++)
    th_randomize_params(nf_flow_layer(flow, k), &rng, scale,
                        theta + nf_flow_param_offset(flow, k));
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
  return flow;
}

START_TEST(standard_normal_base_density)
{
  nf_flow *flow = nf_flow_new(3, 0, NF_BASE_STD_NORMAL);
  double x[6] = {0, 0, 0, 1, -2, 0.5}, logp[2];
  ck_assert_int_eq(nf_flow_log_prob(flow, 2, x, NULL, logp), NF_OK);
  ck_assert_double_eq_tol(logp[0], -1.5 * LOG_2PI, 1e-15);
  ck_assert_double_eq_tol(logp[1], -1.5 * LOG_2PI - 0.5 * 5.25, 1e-14);
  ck_assert_uint_eq(nf_flow_n_params(flow), 0);
  nf_flow_free(flow);
}
END_TEST

START_TEST(diagonal_normal_base_density_and_samples)
{
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_DIAG_NORMAL);
  const double theta[4] = {1.0, -2.0, log(0.5), log(3.0)};
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  double x[2] = {2.0, 1.0}, logp;
  ck_assert_int_eq(nf_flow_log_prob(flow, 1, x, NULL, &logp), NF_OK);
  double expect = -LOG_2PI - log(0.5) - log(3.0) - 0.5 * (4.0 + 1.0);
  ck_assert_double_eq_tol(logp, expect, 1e-14);
  enum { N = 100000 };
  double *s = malloc(2 * N * sizeof *s), *lp = malloc(N * sizeof *lp), *lp2 = malloc(N * sizeof *lp2);
  nf_rng rng;
  nf_rng_seed(&rng, 4);
  ck_assert_int_eq(nf_flow_sample(flow, &rng, N, NULL, s, lp), NF_OK);
  double m0 = 0, m1 = 0;
  for (size_t i = 0; i < N; i++) { m0 += s[2 * i]; m1 += s[2 * i + 1]; }
  ck_assert_double_le(fabs(m0 / N - 1.0), 5 * 0.5 / sqrt(N));
  ck_assert_double_le(fabs(m1 / N + 2.0), 5 * 3.0 / sqrt(N));
  ck_assert_int_eq(nf_flow_log_prob(flow, N, s, NULL, lp2), NF_OK);
  ck_assert_double_le(th_max_abs_diff(N, lp, lp2), 1e-12);
  free(s); free(lp); free(lp2);
  nf_flow_free(flow);
}
END_TEST

/* d(mean NLL)/d theta of nll_grad against central differences of nf_flow_nll. */
static double nll_grad_error(nf_flow *flow, size_t n, const double *x)
{
  size_t p = nf_flow_n_params(flow);
  double nll, nll2, *theta = malloc(p * sizeof *theta), *fd = malloc(p * sizeof *fd);
  memcpy(theta, nf_flow_params(flow), p * sizeof *theta);
  double *g = malloc(p * sizeof *g), h = 1e-6;
  ck_assert_int_eq(nf_flow_nll_grad(flow, n, x, NULL, &nll), NF_OK);
  memcpy(g, nf_flow_grad(flow), p * sizeof *g);
  ck_assert_int_eq(nf_flow_nll(flow, n, x, NULL, &nll2), NF_OK);
  ck_assert_double_eq_tol(nll, nll2, 1e-12);
  for (size_t k = 0; k < p; k++) {
    double t0 = theta[k], lp, lm;
    theta[k] = t0 + h;
    ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
    nf_flow_nll(flow, n, x, NULL, &lp);
    theta[k] = t0 - h;
    ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
    nf_flow_nll(flow, n, x, NULL, &lm);
    theta[k] = t0;
    fd[k] = (lp - lm) / (2 * h);
  }
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  double err = th_rel_err(p, g, fd, 1e-8);
  free(fd); free(g); free(theta);
  return err;
}

START_TEST(nll_grad_matches_finite_differences)
{
  nf_rng rng;
  nf_rng_seed(&rng, 8);
  double x[3 * 16];
  th_randn(&rng, 3 * 16, 1.5, x);
  nf_flow *base_only = nf_flow_new(3, 0, NF_BASE_DIAG_NORMAL);
  double base_theta[6];
  th_randn(&rng, 6, 0.5, base_theta);
  ck_assert_int_eq(nf_flow_set_params(base_only, base_theta), NF_OK);
  ck_assert_double_le(nll_grad_error(base_only, 16, x), 1e-6);
  nf_flow_free(base_only);
  nf_flow *chain = random_chain(3, NF_BASE_DIAG_NORMAL, 0.3);
  ck_assert_double_le(nll_grad_error(chain, 16, x), 1e-6);
  nf_flow_free(chain);
}
END_TEST

START_TEST(sample_log_densities_match_log_prob)
{
  nf_flow *flow = random_chain(2, NF_BASE_STD_NORMAL, 0.3);
  enum { N = 5000 }; /* more than one 4096-row chunk */
  double *x = malloc(2 * N * sizeof *x), *lp = malloc(N * sizeof *lp), *lp2 = malloc(N * sizeof *lp2);
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  ck_assert_int_eq(nf_flow_sample(flow, &rng, N, NULL, x, lp), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob(flow, N, x, NULL, lp2), NF_OK);
  ck_assert_double_le(th_max_abs_diff(N, lp, lp2), 1e-9);
  double one;
  ck_assert_int_eq(nf_flow_log_prob(flow, 1, x + 2 * (N - 1), NULL, &one), NF_OK);
  ck_assert_double_eq_tol(one, lp2[N - 1], 1e-12);
  free(x); free(lp); free(lp2);
  nf_flow_free(flow);
}
END_TEST

START_TEST(random_chain_density_integrates_to_one)
{
  nf_flow *flow = random_chain(2, NF_BASE_STD_NORMAL, 0.3);
  double mass = th_grid_mass(flow, 9.0, 600);
  ck_assert_double_le(fabs(mass - 1.0), 1e-3);
  nf_flow_free(flow);
}
END_TEST

START_TEST(bad_input_returns_status)
{
  ck_assert_ptr_null(nf_flow_new(0, 0, NF_BASE_STD_NORMAL));
  ck_assert_ptr_null(nf_flow_new(2, 0, (nf_base)7));
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  double x[4] = {0, 1, NAN, 2}, logp[2] = {42, 42}, nll = 42;
  ck_assert_int_eq(nf_flow_log_prob(NULL, 2, x, NULL, logp), NF_EINVAL);
  ck_assert_int_eq(nf_flow_log_prob(flow, 0, x, NULL, logp), NF_EINVAL);
  ck_assert_int_eq(nf_flow_log_prob(flow, 2, NULL, NULL, logp), NF_EINVAL);
  const double fin[4] = {0, 1, 2, 3};
  ck_assert_int_eq(nf_flow_log_prob(flow, 2, fin, NULL, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_flow_log_prob(flow, 2, x, NULL, logp), NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 1, column 0"));
  ck_assert(logp[0] == 42 && logp[1] == 42);
  x[2] = INFINITY;
  ck_assert_int_eq(nf_flow_nll(flow, 2, x, NULL, &nll), NF_ENONFINITE);
  ck_assert(nll == 42);
  ck_assert_int_eq(nf_flow_sample(flow, NULL, 2, NULL, x, logp), NF_EINVAL);
  /* push owns the layer on failure too: none of these leaks (valgrind) */
  ck_assert_int_eq(nf_flow_push(flow, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(0)), NF_EINVAL); /* constructor failed */
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(3)), NF_EDIM);
  ck_assert_int_eq(nf_flow_push(NULL, nf_affine_new(2)), NF_EINVAL);
  ck_assert_uint_eq(nf_flow_n_layers(flow), 0);
  nf_flow_ws *stale = nf_flow_ws_new(flow, 4);
  ck_assert_ptr_nonnull(stale);
  nf_layer *right = nf_affine_new(2);
  ck_assert_int_eq(nf_flow_push(flow, right), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, right), NF_EINVAL); /* already in a flow */
  ck_assert_ptr_null(nf_flow_layer(flow, 1));
  ck_assert_ptr_eq(nf_flow_layer(flow, 0), right);
  /* a workspace made before the push is refused */
  double ok[4] = {0.5, -1, 2, 0.25};
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, stale, 0, 2, ok, NULL, logp), NF_ESTATE);
  ck_assert(logp[0] == 42 && logp[1] == 42);
  nf_flow_ws_free(stale);
  /* freeing a layer the flow owns does nothing but say so */
  nf_layer_free(right);
  ck_assert_int_eq(nf_last_status(), NF_ESTATE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "belongs to a flow"));
  ck_assert_int_eq(nf_flow_log_prob(flow, 2, ok, NULL, logp), NF_OK);
  ck_assert(isfinite(logp[0]) && isfinite(logp[1]));
  /* nll_grad on bad input zeroes the gradient and leaves nll alone */
  ck_assert_int_eq(nf_flow_nll_grad(flow, 2, ok, NULL, &nll), NF_OK);
  ck_assert_double_ne(nf_flow_grad(flow)[0], 0.0);
  nll = 42;
  ck_assert_int_eq(nf_flow_nll_grad(flow, 2, x, NULL, &nll), NF_ENONFINITE);
  ck_assert(nll == 42);
  for (size_t k = 0; k < nf_flow_n_params(flow); k++) ck_assert_double_eq(nf_flow_grad(flow)[k], 0.0);
  double grad[4] = {7, 7, 7, 7};
  nf_flow_ws *ws = nf_flow_ws_new(flow, 2);
  ck_assert_int_eq(nf_flow_nll_grad_ws(flow, ws, 0, 2, x, NULL, &nll, grad, NULL), NF_ENONFINITE);
  for (size_t k = 0; k < 4; k++) ck_assert_double_eq(grad[k], 0.0);
  nf_flow_ws_free(ws);
  nf_flow_free(flow);
  nf_flow *cond = nf_flow_new(2, 3, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_log_prob(cond, 1, ok, NULL, logp), NF_EINVAL);
  nf_flow_free(cond);
  nf_flow_free(NULL);
  ck_assert_str_eq(nf_status_str(NF_OK), "NF_OK");
}
END_TEST

/* v1: a layer without a context joins a conditional flow (it receives ctx = NULL). */
START_TEST(conditional_flow_accepts_unconditional_layers)
{
  nf_flow *cond = nf_flow_new(2, 3, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(cond, nf_affine_new(2)), NF_OK);
  ck_assert_int_eq(nf_flow_push(cond, nf_reverse_new(2)), NF_OK);
  ck_assert_uint_eq(nf_flow_n_layers(cond), 2);
  double x[2] = {0.5, -0.25}, ctx[3] = {1, 2, 3}, logp;
  ck_assert_int_eq(nf_flow_log_prob(cond, 1, x, ctx, &logp), NF_OK);
  ck_assert_double_eq_tol(logp, -LOG_2PI - 0.5 * (0.25 + 0.0625), 1e-15);
  nf_flow_free(cond);
}
END_TEST

/* Theta is checked when written: the diag_normal base refuses a NaN mu and a
   log_sigma of -800 (NF_EDOMAIN), naming the parameter; layers' checks are
   named with the layer's own index. */
START_TEST(set_params_refuses_bad_theta)
{
  nf_flow *flow = random_chain(2, NF_BASE_DIAG_NORMAL, 0.3);
  th_check_param_refused(flow, 0, NAN, NF_ENONFINITE);
  th_check_param_refused(flow, 2, -800.0, NF_EDOMAIN);
  th_check_param_refused(flow, 3, 800.0, NF_EDOMAIN);
  th_check_param_refused(flow, 4, INFINITY, NF_ENONFINITE); /* the affine layer's shift */
  th_check_param_refused(flow, 7, -800.0, NF_EDOMAIN);      /* its log-scale[1] */
  th_check_param_refused(flow, nf_flow_n_params(flow) - 1, NAN, NF_ENONFINITE);
  ck_assert_int_eq(nf_flow_set_params(flow, NULL), NF_EINVAL);
  nf_flow_free(flow);
  /* a flow without parameters: its own (empty) theta, NULL, and nll_grad are fine */
  nf_flow *bare = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(bare, nf_reverse_new(2)), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(bare, nf_flow_params(bare)), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(bare, NULL), NF_OK);
  double x[4] = {1, 2, 3, 4}, nll;
  ck_assert_int_eq(nf_flow_nll_grad(bare, 2, x, NULL, &nll), NF_OK);
  ck_assert_double_eq_tol(nll, LOG_2PI + 0.25 * 30, 1e-14);
  nf_flow_free(bare);
}
END_TEST

/* transform in both directions round-trips, the log-dets cancel, and the
   inverse log-det plus the base density is log_prob. */
START_TEST(transform_round_trips_and_matches_log_prob)
{
  enum { N = 20, D = 3 };
  nf_flow *flow = random_chain(D, NF_BASE_STD_NORMAL, 0.3);
  double *x = th_random_points(N, D, 40, 1.0), z[N * D], x2[N * D], ld_i[N], ld_f[N], logp[N];
  ck_assert_int_eq(nf_flow_transform(flow, NF_INVERSE, N, x, NULL, z, ld_i), NF_OK);
  ck_assert_int_eq(nf_flow_transform(flow, NF_FORWARD, N, z, NULL, x2, ld_f), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob(flow, N, x, NULL, logp), NF_OK);
  double rt = th_max_abs_diff(N * D, x, x2), cancel = 0, lp_err = 0;
  for (size_t i = 0; i < N; i++) {
    double q = 0;
    for (size_t j = 0; j < D; j++) q += z[i * D + j] * z[i * D + j];
    cancel = fmax(cancel, fabs(ld_i[i] + ld_f[i]));
    lp_err = fmax(lp_err, fabs(-0.5 * D * LOG_2PI - 0.5 * q + ld_i[i] - logp[i]));
  }
  printf("transform: round trip %.2e, log-det cancellation %.2e, vs log_prob %.2e\n", rt, cancel,
         lp_err);
  ck_assert_double_le(rt, 1e-10);
  ck_assert_double_le(cancel, 1e-10);
  ck_assert_double_le(lp_err, 1e-12);
  ck_assert_int_eq(nf_flow_transform(flow, (nf_dir)3, N, x, NULL, z, ld_i), NF_EINVAL);
  ck_assert_int_eq(nf_flow_transform(flow, NF_FORWARD, N, x, NULL, x, ld_i), NF_EINVAL);
  free(x);
  nf_flow_free(flow);
}
END_TEST

/* log_prob_vjp with g_logp = -1/n gives nll_grad's gradient; its g_x matches
   central differences of log p; log_prob_grad's g_x is log_prob_vjp's with g_logp = 1. */
START_TEST(log_prob_vjp_and_grad)
{
  enum { N = 12, D = 3 };
  nf_flow *flow = random_chain(D, NF_BASE_DIAG_NORMAL, 0.3);
  size_t p = nf_flow_n_params(flow);
  double *x = th_random_points(N, D, 41, 1.0), g_logp[N], ones[N], logp[N], g_x[N * D];
  double *g_theta = calloc(p, sizeof *g_theta), g_x1[N * D], g_x2[N * D], lp1[N], nll;
  for (size_t i = 0; i < N; i++) {
    g_logp[i] = -1.0 / N;
    ones[i] = 1.0;
  }
  nf_flow_ws *ws = nf_flow_ws_new(flow, N);
  ck_assert_int_eq(nf_flow_log_prob_vjp_ws(flow, ws, 0, N, x, NULL, g_logp, logp, g_x, NULL,
                                           g_theta), NF_OK);
  ck_assert_int_eq(nf_flow_nll_grad(flow, N, x, NULL, &nll), NF_OK);
  double e_theta = th_rel_err(p, g_theta, nf_flow_grad(flow), 1e-300);
  /* g_x against central differences of sum_i g_logp_i log p(x_i) */
  double fd[N * D], h = 1e-6, xp[D], lpp, lpm;
  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j < D; j++) {
      memcpy(xp, x + i * D, sizeof xp);
      xp[j] += h;
      ck_assert_int_eq(nf_flow_log_prob(flow, 1, xp, NULL, &lpp), NF_OK);
      xp[j] -= 2 * h;
      ck_assert_int_eq(nf_flow_log_prob(flow, 1, xp, NULL, &lpm), NF_OK);
      fd[i * D + j] = g_logp[i] * (lpp - lpm) / (2 * h);
    }
  double e_x = th_rel_err(N * D, g_x, fd, 1e-8);
  ck_assert_int_eq(nf_flow_log_prob_vjp_ws(flow, ws, 0, N, x, NULL, ones, lp1, g_x1, NULL, NULL),
                   NF_OK);
  ck_assert_int_eq(nf_flow_log_prob_grad(flow, N, x, NULL, logp, g_x2, NULL), NF_OK);
  printf("log_prob_vjp: g_theta vs nll_grad %.2e (<= 1e-12), g_x vs FD %.2e (<= 1e-6); "
         "log_prob_grad's g_x vs vjp's: max diff %.2e\n", e_theta, e_x,
         th_max_abs_diff(N * D, g_x1, g_x2));
  ck_assert_double_le(e_theta, 1e-12);
  ck_assert_double_le(e_x, 1e-6);
  ck_assert_int_eq(memcmp(g_x1, g_x2, sizeof g_x1), 0);
  ck_assert_int_eq(memcmp(lp1, logp, sizeof lp1), 0);
  nf_flow_ws_free(ws);
  free(x);
  free(g_theta);
  nf_flow_free(flow);
}
END_TEST

/* log_prob over more rows than the workspace holds (chunks of 7) against the
   one-chunk call: bit for bit for the layers without an MLP; with couplings
   only to rounding (KNOWN ISSUE: OpenBLAS's dgemm rounds a row differently
   depending on the batch's row count, so the conditioners are not bit for
   bit across chunkings, against flow.h's promise). A bad row in a later
   chunk fails the whole call. */
START_TEST(chunked_log_prob_is_exact_and_all_or_nothing)
{
  enum { N = 50, D = 3 };
  nf_flow *flow = random_chain(D, NF_BASE_STD_NORMAL, 0.3);
  nf_flow *plain = nf_flow_new(D, 0, NF_BASE_DIAG_NORMAL); /* no MLP */
  nf_rng rng;
  nf_rng_seed(&rng, 44);
  ck_assert_int_eq(nf_flow_push(plain, nf_affine_new(D)), NF_OK);
  ck_assert_int_eq(nf_flow_push(plain, nf_linear_lu_new(D, NULL, NF_DIAG_EXP, &rng)), NF_OK);
  ck_assert_int_eq(nf_flow_push(plain, nf_planar_new(D, 1e-13, &rng)), NF_OK);
  ck_assert_int_eq(nf_flow_push(plain, nf_radial_new(D, 1e-13, &rng)), NF_OK);
  double *x = th_random_points(N, D, 42, 1.0), one[N], chunked[N];
  nf_flow_ws *p7 = nf_flow_ws_new(plain, 7), *p50 = nf_flow_ws_new(plain, N);
  ck_assert_int_eq(nf_flow_log_prob_ws(plain, p50, 3, N, x, NULL, one), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob_ws(plain, p7, 3, N, x, NULL, chunked), NF_OK);
  ck_assert_int_eq(memcmp(one, chunked, sizeof one), 0);
  nf_flow_ws_free(p7);
  nf_flow_ws_free(p50);
  nf_flow_free(plain);
  nf_flow_ws *ws7 = nf_flow_ws_new(flow, 7), *ws50 = nf_flow_ws_new(flow, N);
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws50, 3, N, x, NULL, one), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws7, 3, N, x, NULL, chunked), NF_OK);
  double chunk_err = th_rel_err(N, chunked, one, 1.0);
  printf("chunks of 7 vs one chunk: bit for bit without MLPs; with couplings %.2e (<= 1e-14)\n",
         chunk_err);
  ck_assert_double_le(chunk_err, 1e-14);
  double nll7, nll50;
  ck_assert_int_eq(nf_flow_nll_ws(flow, ws7, 3, N, x, NULL, &nll7), NF_OK);
  ck_assert_int_eq(nf_flow_nll_ws(flow, ws50, 3, N, x, NULL, &nll50), NF_OK);
  ck_assert_double_eq_tol(nll7, nll50, 1e-13);
  x[45 * D + 1] = NAN;
  for (size_t i = 0; i < N; i++) chunked[i] = -1.5;
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws7, 3, N, x, NULL, chunked), NF_ENONFINITE);
  ck_assert_msg(strstr(nf_errmsg(), "row 45") != NULL, "message: %s", nf_errmsg());
  for (size_t i = 0; i < N; i++) ck_assert_double_eq(chunked[i], -1.5);
  /* the gradient calls do not chunk */
  double *grad = malloc(nf_flow_n_params(flow) * sizeof *grad);
  x[45 * D + 1] = 0.5;
  ck_assert_int_eq(nf_flow_nll_grad_ws(flow, ws7, 3, N, x, NULL, &nll7, grad, NULL), NF_EINVAL);
  free(grad);
  nf_flow_ws_free(ws7);
  nf_flow_ws_free(ws50);
  free(x);
  nf_flow_free(flow);
}
END_TEST

/* Two threads share the chain of every kind of layer, with their own workspaces. */
START_TEST(threads_share_one_flow)
{
  enum { N = 40, D = 3 };
  nf_flow *flow = random_chain(D, NF_BASE_DIAG_NORMAL, 0.3);
  double *x = th_random_points(N, D, 43, 1.0);
  th_check_threads(flow, N, x, NULL);
  free(x);
  nf_flow_free(flow);
}
END_TEST

/* Pushing is amortised O(1): 10^5 parameter-free layers. Timing printed, not asserted. */
START_TEST(many_pushes_are_cheap)
{
  enum { K = 100000 };
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_DIAG_NORMAL);
  struct timespec t0, t1, t2;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (size_t k = 0; k < K / 10; k++)
    ck_assert_int_eq(nf_flow_push(flow, nf_reverse_new(2)), NF_OK);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  for (size_t k = K / 10; k < K; k++)
    ck_assert_int_eq(nf_flow_push(flow, nf_reverse_new(2)), NF_OK);
  clock_gettime(CLOCK_MONOTONIC, &t2);
  double s1 = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  double s = (double)(t2.tv_sec - t0.tv_sec) + 1e-9 * (double)(t2.tv_nsec - t0.tv_nsec);
  printf("pushes of nf_reverse_new(2): first %d in %.3f s (%.0f ns each), all %d in %.3f s "
         "(%.0f ns each)\n", K / 10, s1, 1e9 * s1 / (K / 10), K, s, 1e9 * s / K);
  ck_assert_uint_eq(nf_flow_n_layers(flow), K);
  double x[2] = {0.5, -1.0}, logp;
  ck_assert_int_eq(nf_flow_log_prob(flow, 1, x, NULL, &logp), NF_OK);
  ck_assert_double_eq_tol(logp, -LOG_2PI - 0.5 * 1.25, 1e-14); /* an even number of reversals */
  nf_flow_free(flow);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("flow");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, standard_normal_base_density);
  tcase_add_test(tc, diagonal_normal_base_density_and_samples);
  tcase_add_test(tc, nll_grad_matches_finite_differences);
  tcase_add_test(tc, sample_log_densities_match_log_prob);
  tcase_add_test(tc, random_chain_density_integrates_to_one);
  tcase_add_test(tc, bad_input_returns_status);
  tcase_add_test(tc, conditional_flow_accepts_unconditional_layers);
  tcase_add_test(tc, set_params_refuses_bad_theta);
  tcase_add_test(tc, transform_round_trips_and_matches_log_prob);
  tcase_add_test(tc, log_prob_vjp_and_grad);
  tcase_add_test(tc, chunked_log_prob_is_exact_and_all_or_nothing);
  tcase_add_test(tc, threads_share_one_flow);
  tcase_add_test(tc, many_pushes_are_cheap);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
