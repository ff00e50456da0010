/* tests/test_affine.c — elementwise affine bijector x = z exp(a) + b: exact
   identity at initialisation, closed form, inverse, log-det and vjp against
   finite differences, density of a 2-D flow, argument checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define TOL_ROUNDTRIP 1e-10 /* max |inverse(forward(z)) - z| */
#define TOL_CANCEL 1e-10    /* max |logdet_forward + logdet_inverse| */
#define TOL_LOGDET 1e-6     /* max |logdet - log|det J_fd|| */
#define TOL_VJP 1e-6        /* norm-wise relative error against central differences */
#define TOL_CLOSED 1e-14    /* relative error against the closed form */
#define H_LOGDET 1e-5
#define H_VJP 1e-6

static const double LOG_2PI = 1.83787706640934548356;

/* A d-dimensional affine layer with parameters ~ N(0, 0.5^2) drawn from seed. */
static nf_layer *random_affine(size_t d, uint64_t seed)
{
  nf_layer *layer = nf_affine_new(d);
  ck_assert_ptr_nonnull(layer);
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  th_randomize_params(layer, &rng, 0.5);
  return layer;
}

/* Round trip, log-det cancellation, brute-force log-det and vjp (input and
   parameters) in both directions on n rows ~ N(0, 1.5^2). */
static void check_bijector(nf_layer *layer, size_t n, uint64_t seed)
{
  size_t d = layer->dim;
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *in = malloc(n * d * sizeof *in), cancel;
  th_randn(&rng, n * d, 1.5, in);
  double rt = th_roundtrip_error(layer, n, in, NULL, &cancel);
  printf("affine d=%zu: roundtrip %.2e, logdet cancel %.2e\n", d, rt, cancel);
  ck_assert_double_le(rt, TOL_ROUNDTRIP);
  ck_assert_double_le(cancel, TOL_CANCEL);
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    double ld = th_logdet_error(layer, dir, n, in, NULL, H_LOGDET);
    th_vjp_errors e = th_vjp_check(layer, dir, n, in, NULL, seed + 1, H_VJP);
    printf("affine d=%zu %s: logdet %.2e, vjp in %.2e, params %.2e\n", d,
           k ? "inverse" : "forward", ld, e.in, e.params);
    ck_assert_double_le(ld, TOL_LOGDET);
    ck_assert_double_le(e.in, TOL_VJP);
    ck_assert_double_le(e.params, TOL_VJP);
  }
  free(in);
}

START_TEST(identity_at_construction_is_exact)
{
  enum { D = 4, N = 5 };
  nf_layer *layer = nf_affine_new(D);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(layer->n_params, 2 * D);
  for (size_t k = 0; k < layer->n_params; k++) ck_assert_double_eq(layer->params[k], 0.0);
  nf_rng rng;
  nf_rng_seed(&rng, 11);
  double in[N * D], out[N * D], logdet[N], work[D];
  th_randn(&rng, N * D, 3.0, in);
  for (int k = 0; k < 2; k++) {
    for (size_t i = 0; i < N; i++) logdet[i] = (double)i - 2.5;
    ck_assert_int_eq(nf_layer_apply(layer, k ? NF_INVERSE : NF_FORWARD, N, in, NULL, out,
                                    logdet, work), NF_OK);
    for (size_t i = 0; i < N * D; i++) ck_assert_double_eq(out[i], in[i]);
    for (size_t i = 0; i < N; i++) ck_assert_double_eq(logdet[i], (double)i - 2.5);
  }
  nf_layer_free(layer);
}
END_TEST

START_TEST(matches_closed_form_and_adds_logdet)
{
  enum { D = 3, N = 4 };
  nf_layer *layer = nf_affine_new(D);
  const double b[D] = {0.5, -1.0, 2.0}, a[D] = {0.3, -0.7, 1.1};
  memcpy(layer->params, b, sizeof b);
  memcpy(layer->params + D, a, sizeof a);
  nf_rng rng;
  nf_rng_seed(&rng, 12);
  double z[N * D], x[N * D], logdet[N], work[D];
  th_randn(&rng, N * D, 1.0, z);
  for (size_t i = 0; i < N; i++) logdet[i] = 1.0;
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, z, NULL, x, logdet, work), NF_OK);
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

START_TEST(inverse_logdet_and_vjp_match_finite_differences)
{
  const size_t dims[] = {1, 2, 5};
  for (size_t k = 0; k < 3; k++) {
    nf_layer *layer = random_affine(dims[k], 100 + k);
    check_bijector(layer, 6, 200 + k);
    nf_layer_free(layer);
  }
}
END_TEST

/* vjp ADDS into layer->grad, WRITES g_in, and treats g_logdet == NULL as zero. */
START_TEST(vjp_accumulates_parameter_gradient)
{
  enum { D = 3, N = 4 };
  nf_layer *layer = random_affine(D, 13);
  nf_rng rng;
  nf_rng_seed(&rng, 14);
  double in[N * D], out[N * D], g_out[N * D], zeros[N] = {0}, g_in[N * D], work[D];
  double once[2 * D];
  th_randn(&rng, N * D, 1.0, in);
  th_randn(&rng, N * D, 1.0, g_out);
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    memset(layer->grad, 0, 2 * D * sizeof(double));
    ck_assert_int_eq(nf_layer_apply(layer, dir, N, in, NULL, out, NULL, work), NF_OK);
    ck_assert_int_eq(nf_layer_vjp(layer, dir, N, in, NULL, out, g_out, zeros, g_in, NULL, work),
                     NF_OK);
    memcpy(once, layer->grad, sizeof once);
    for (size_t i = 0; i < N * D; i++) g_in[i] = NAN;
    ck_assert_int_eq(nf_layer_vjp(layer, dir, N, in, NULL, out, g_out, NULL, g_in, NULL, work),
                     NF_OK);
    for (size_t i = 0; i < 2 * D; i++)
      ck_assert_double_le(fabs(layer->grad[i] - 2 * once[i]), 1e-14 * fabs(once[i]));
    for (size_t i = 0; i < N * D; i++) ck_assert(isfinite(g_in[i]));
    ck_assert_int_eq(nf_layer_vjp(layer, dir, N, in, NULL, out, g_out, NULL, NULL, NULL, work),
                     NF_OK);
    for (size_t i = 0; i < 2 * D; i++)
      ck_assert_double_le(fabs(layer->grad[i] - 3 * once[i]), 1e-14 * fabs(once[i]));
  }
  nf_layer_free(layer);
}
END_TEST

/* In a 2-D flow, log p(x) is the density of N(b, diag(exp(2a))), and it integrates to 1. */
START_TEST(flow_density_is_the_shifted_scaled_normal)
{
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  nf_layer *layer = random_affine(2, 15);
  double theta[4];
  memcpy(theta, layer->params, sizeof theta);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  const double *b = theta, *a = theta + 2;
  double x[6] = {0.1, -0.4, 2.0, 1.5, -3.0, 0.7}, logp[3];
  ck_assert_int_eq(nf_flow_log_prob(flow, 3, x, NULL, logp), NF_OK);
  for (size_t i = 0; i < 3; i++) {
    double want = -LOG_2PI - a[0] - a[1];
    for (size_t j = 0; j < 2; j++) want -= 0.5 * pow((x[2 * i + j] - b[j]) * exp(-a[j]), 2);
    ck_assert_double_le(fabs(logp[i] - want), 1e-12);
  }
  double mass = th_grid_mass(flow, 14.0, 400);
  printf("affine flow: grid mass %.12f\n", mass);
  ck_assert_double_le(fabs(mass - 1.0), 1e-6);
  nf_flow_free(flow);
}
END_TEST

START_TEST(rejects_bad_arguments)
{
  ck_assert_ptr_null(nf_affine_new(0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_affine_new"));

  enum { D = 2, N = 3 };
  nf_layer *layer = random_affine(D, 16);
  double in[N * D] = {1, 2, 3, 4, 5, 6}, out[N * D], logdet[N] = {7, 7, 7}, work[D];
  double g[N * D] = {0};
  for (size_t i = 0; i < N * D; i++) out[i] = -99;
  ck_assert_int_eq(nf_layer_apply(NULL, NF_FORWARD, N, in, NULL, out, logdet, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, (nf_dir)5, N, in, NULL, out, logdet, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, 0, in, NULL, out, logdet, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, NULL, NULL, out, logdet, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, in, NULL, NULL, logdet, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, in, NULL, out, logdet, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_layer_vjp(layer, NF_FORWARD, N, in, NULL, out, NULL, NULL, g, NULL, work),
                   NF_EINVAL);
  in[3] = NAN;
  ck_assert_int_eq(nf_layer_apply(layer, NF_INVERSE, N, in, NULL, out, logdet, work), NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 1, column 1"));
  in[3] = -INFINITY;
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, in, NULL, out, logdet, work), NF_ENONFINITE);
  for (size_t i = 0; i < N * D; i++) ck_assert_double_eq(out[i], -99);
  for (size_t i = 0; i < N; i++) ck_assert_double_eq(logdet[i], 7);

  nf_flow *flow = nf_flow_new(3, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_EDIM);
  nf_flow_free(flow);
  nf_layer_free(layer);
}
END_TEST

int main(void)
{
  Suite *suite = suite_create("affine");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, identity_at_construction_is_exact);
  tcase_add_test(tc, matches_closed_form_and_adds_logdet);
  tcase_add_test(tc, inverse_logdet_and_vjp_match_finite_differences);
  tcase_add_test(tc, vjp_accumulates_parameter_gradient);
  tcase_add_test(tc, flow_density_is_the_shifted_scaled_normal);
  tcase_add_test(tc, rejects_bad_arguments);
  suite_add_tcase(suite, tc);
  return th_run_suite(suite);
}
