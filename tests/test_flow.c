/* tests/test_flow.c — nf_flow: base densities, the chain's log_prob / sample /
   nll_grad against finite differences, grid mass, and bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
  nf_coupling_opts affine = {NF_COUPLING_AFFINE, mask, 2, hidden, NF_ACT_TANH, 3.0};
  nf_coupling_opts additive = {NF_COUPLING_ADDITIVE, mask, 2, hidden, NF_ACT_SOFTPLUS, 3.0};
  nf_layer *layers[] = {nf_affine_new(d), nf_linear_lu_new(d, NULL, NF_DIAG_SOFTPLUS, &rng),
                        nf_coupling_new(d, 0, &affine, &rng), nf_reverse_new(d),
                        nf_coupling_new(d, 0, &additive, &rng), nf_planar_new(d, 1e-13, &rng),
                        nf_radial_new(d, 1e-13, &rng)};
  for (size_t k = 0; k < sizeof layers / sizeof *layers; k++) {
    ck_assert_ptr_nonnull(layers[k]);
    th_randomize_params(layers[k], &rng, scale);
    ck_assert_int_eq(nf_flow_push(flow, layers[k]), NF_OK);
  }
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
  double *theta = nf_flow_params(flow);
  theta[0] = 1.0; theta[1] = -2.0; theta[2] = log(0.5); theta[3] = log(3.0);
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
  double nll, nll2, *theta = nf_flow_params(flow), *fd = malloc(p * sizeof *fd);
  double *g = malloc(p * sizeof *g), h = 1e-6;
  ck_assert_int_eq(nf_flow_nll_grad(flow, n, x, NULL, &nll), NF_OK);
  memcpy(g, nf_flow_grad(flow), p * sizeof *g);
  ck_assert_int_eq(nf_flow_nll(flow, n, x, NULL, &nll2), NF_OK);
  ck_assert_double_eq_tol(nll, nll2, 1e-12);
  for (size_t k = 0; k < p; k++) {
    double t0 = theta[k], lp, lm;
    theta[k] = t0 + h;
    nf_flow_nll(flow, n, x, NULL, &lp);
    theta[k] = t0 - h;
    nf_flow_nll(flow, n, x, NULL, &lm);
    theta[k] = t0;
    fd[k] = (lp - lm) / (2 * h);
  }
  double err = th_rel_err(p, g, fd, 1e-8);
  free(fd); free(g);
  return err;
}

START_TEST(nll_grad_matches_finite_differences)
{
  nf_rng rng;
  nf_rng_seed(&rng, 8);
  double x[3 * 16];
  th_randn(&rng, 3 * 16, 1.5, x);
  nf_flow *base_only = nf_flow_new(3, 0, NF_BASE_DIAG_NORMAL);
  th_randn(&rng, 6, 0.5, nf_flow_params(base_only));
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
  ck_assert_int_eq(nf_flow_log_prob(flow, 2, x, NULL, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_flow_log_prob(flow, 2, x, NULL, logp), NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 1, column 0"));
  ck_assert(logp[0] == 42 && logp[1] == 42);
  x[2] = INFINITY;
  ck_assert_int_eq(nf_flow_nll_grad(flow, 2, x, NULL, &nll), NF_ENONFINITE);
  ck_assert_int_eq(nf_flow_nll(flow, 2, x, NULL, &nll), NF_ENONFINITE);
  ck_assert(nll == 42);
  ck_assert_int_eq(nf_flow_sample(flow, NULL, 2, NULL, x, logp), NF_EINVAL);
  ck_assert_int_eq(nf_flow_push(flow, NULL), NF_EINVAL);
  nf_layer *wrong = nf_affine_new(3);
  ck_assert_int_eq(nf_flow_push(flow, wrong), NF_EDIM);
  nf_layer_free(wrong);
  nf_layer *right = nf_affine_new(2);
  ck_assert_int_eq(nf_flow_push(flow, right), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, right), NF_EINVAL); /* already in a flow */
  ck_assert_ptr_null(nf_flow_layer(flow, 1));
  ck_assert_ptr_eq(nf_flow_layer(flow, 0), right);
  nf_flow_free(flow);
  nf_flow *cond = nf_flow_new(2, 3, NF_BASE_STD_NORMAL);
  double ok[2] = {0, 0};
  ck_assert_int_eq(nf_flow_log_prob(cond, 1, ok, NULL, logp), NF_EINVAL);
  nf_flow_free(cond);
  nf_flow_free(NULL);
  ck_assert_str_eq(nf_status_str(NF_OK), "NF_OK");
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
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
