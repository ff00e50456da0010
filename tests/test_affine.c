/* tests/test_affine.c — elementwise affine bijector x = z exp(a) + b: exact
   identity at initialisation, closed form, inverse, log-det and vjp against
   finite differences, density of a 2-D flow, argument checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define TOL_CLOSED 1e-14    /* relative error against the closed form */

static const double LOG_2PI = 1.83787706640934548356;

/* A d-dimensional affine layer, and in *theta parameters ~ N(0, 0.5^2) drawn from seed. */
static nf_layer *random_affine(size_t d, uint64_t seed, double **theta)
{
  nf_layer *layer = nf_affine_new(d);
  *theta = th_random_theta(layer, seed, 0.5);
  return layer;
}

START_TEST(identity_at_construction_is_exact)
{
  enum { D = 4 };
  nf_layer *layer = nf_affine_new(D);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(nf_layer_n_params(layer), 2 * D);
  for (size_t k = 0; k < 2 * D; k++) ck_assert_double_eq(nf_layer_init_params(layer)[k], 0.0);
  th_check_identity(layer, 5, 11, 0.0);
  nf_layer_free(layer);
}
END_TEST

START_TEST(matches_closed_form_and_adds_logdet)
{
  enum { D = 3, N = 4 };
  nf_layer *layer = nf_affine_new(D);
  const double b[D] = {0.5, -1.0, 2.0}, a[D] = {0.3, -0.7, 1.1};
  double theta[2 * D];
  memcpy(theta, b, sizeof b);
  memcpy(theta + D, a, sizeof a);
  nf_rng rng;
  nf_rng_seed(&rng, 12);
  double z[N * D], x[N * D], logdet[N], work[D];
  th_randn(&rng, N * D, 1.0, z);
  for (size_t i = 0; i < N; i++) logdet[i] = 1.0;
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N, z, NULL, x, logdet, NULL, work), NF_OK);
  for (size_t i = 0; i < N; i++) {
    for (size_t j = 0; j < D; j++) {
      double want = z[i * D + j] * exp(a[j]) + b[j];
      ck_assert_double_le(fabs(x[i * D + j] - want), TOL_CLOSED * fmax(1.0, fabs(want)));
    }
    ck_assert_double_le(fabs(logdet[i] - (1.0 + 0.3 - 0.7 + 1.1)), TOL_CLOSED);
  }
  nf_layer_free(layer);
}
END_TEST

/* A case of the bijector checks: parameters ~ N(0, 0.5^2) from seed. */
static nf_layer *affine_case(size_t d, uint64_t seed, int variant, size_t n, double *z,
                             double **theta)
{
  (void)variant;
  (void)n;
  (void)z;
  return random_affine(d, seed, theta);
}

/* Round trip, log-det and vjp against finite differences, vjp's accumulation. */
START_TEST(inverse_logdet_and_vjp_match_finite_differences)
{
  th_check_bijector_family("affine", affine_case, 0, 1.5);
}
END_TEST

/* In a 2-D flow, log p(x) is the density of N(b, diag(exp(2a))), and it integrates to 1. */
START_TEST(flow_density_is_the_shifted_scaled_normal)
{
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  double *theta;
  ck_assert_int_eq(nf_flow_push(flow, random_affine(2, 15, &theta)), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  const double *b = theta, *a = theta + 2;
  double x[6] = {0.1, -0.4, 2.0, 1.5, -3.0, 0.7}, logp[3];
  ck_assert_int_eq(nf_flow_log_prob(flow, 3, x, NULL, logp), NF_OK);
  for (size_t i = 0; i < 3; i++) {
    double want = -LOG_2PI - a[0] - a[1];
    for (size_t j = 0; j < 2; j++) want -= 0.5 * pow((x[2 * i + j] - b[j]) * exp(-a[j]), 2);
    ck_assert_double_le(fabs(logp[i] - want), 1e-12);
  }
  th_check_grid_mass("affine flow", flow, 14.0, 400, 1e-6);
  nf_flow_free(flow);
  free(theta);
}
END_TEST

START_TEST(rejects_bad_arguments)
{
  ck_assert_ptr_null(nf_affine_new(0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_affine_new"));
  double *theta;
  nf_layer *layer = random_affine(2, 16, &theta);
  th_check_bad_calls(layer, theta);
  nf_layer_free(layer);
  free(theta);
}
END_TEST

/* Theta is checked when written: a NaN or Inf, or a log-scale whose exp()
   underflows (-800) or overflows (+800), is refused naming the parameter. */
START_TEST(rejects_bad_parameters)
{
  double *theta;
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, random_affine(2, 17, &theta)), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  th_check_param_refused(flow, 0, NAN, NF_ENONFINITE);
  th_check_param_refused(flow, 3, INFINITY, NF_ENONFINITE);
  th_check_param_refused(flow, 2, -800.0, NF_EDOMAIN);
  th_check_param_refused(flow, 3, 800.0, NF_EDOMAIN);
  nf_flow_free(flow);
  free(theta);
}
END_TEST

/* A d-dimensional affine layer (takes no context; parameters set by the caller). */
static nf_layer *make_affine(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  (void)ctx_dim;
  (void)rng;
  return nf_affine_new(dim);
}

/* In conditional flows (ctx = NULL) and shared by two threads. */
START_TEST(conditional_flows_and_threads)
{
  th_check_family_flows(make_affine, 0.5);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {identity_at_construction_is_exact, matches_closed_form_and_adds_logdet,
                          inverse_logdet_and_vjp_match_finite_differences,
                          flow_density_is_the_shifted_scaled_normal, rejects_bad_arguments,
                          rejects_bad_parameters, conditional_flows_and_threads, NULL};
  return th_run_tests("affine", 0, tests);
}
