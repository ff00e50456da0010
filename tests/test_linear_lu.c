/* tests/test_linear_lu.c — LU-form linear layer x = P L U z + b: identity at
   construction, the documented parameter layout, inverse, log-det and vjp
   against finite differences for d = 1, 2, 5 and both diagonal maps, density
   of a 2-D flow, argument checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define TOL_ROUNDTRIP 1e-10 /* max |inverse(forward(z)) - z| */
#define TOL_CANCEL 1e-10    /* max |logdet_forward + logdet_inverse| */
#define TOL_LOGDET 1e-6     /* max |logdet - log|det J_fd|| */
#define TOL_VJP 1e-6        /* norm-wise relative error against central differences */
#define TOL_CLOSED 1e-13    /* against the matrix built from the documented layout */
#define H_LOGDET 1e-5
#define H_VJP 1e-6
#define DMAX 5

static const double LOG_2PI = 1.83787706640934548356;
static const nf_diag_map maps[2] = {NF_DIAG_EXP, NF_DIAG_SOFTPLUS};
static const char *const map_names[2] = {"exp", "softplus"};

/* diag(U) = m(s). */
static double diag_of(nf_diag_map map, double s)
{
  return map == NF_DIAG_EXP ? exp(s) : log1p(exp(s));
}

/* A layer of dimension d with diagonal map `map`, a random permutation when
   permuted (else none), and parameters: the constructor's draw plus N(0, 0.4^2). */
static nf_layer *random_lu(size_t d, nf_diag_map map, int permuted, uint64_t seed,
                           size_t *perm)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  for (size_t i = 0; i < d; i++) perm[i] = i;
  if (permuted) nf_rng_shuffle(&rng, d, perm);
  nf_layer *layer = nf_linear_lu_new(d, permuted ? perm : NULL, map, &rng);
  ck_assert_msg(layer != NULL, "nf_linear_lu_new: %s", nf_errmsg());
  for (size_t k = 0; k < layer->n_params; k++) layer->params[k] += 0.4 * nf_rng_normal(&rng);
  return layer;
}

/* A = P L U from the documented layout: params = b[d], W[d x d] with strict
   lower = L, strict upper = U, diagonal s and diag(U) = m(s); returns log|det A|. */
static double expected_matrix(const nf_layer *layer, nf_diag_map map, const size_t *perm,
                              double *a)
{
  size_t d = layer->dim;
  const double *w = layer->params + d;
  double lu[DMAX * DMAX], logdet = 0;
  for (size_t j = 0; j < d; j++) {
    logdet += log(diag_of(map, w[j * d + j]));
    for (size_t k = 0; k < d; k++) {
      double sum = 0;
      for (size_t r = 0; r <= (j < k ? j : k); r++) {
        double l = r == j ? 1.0 : w[j * d + r];
        double u = r == k ? diag_of(map, w[k * d + k]) : w[r * d + k];
        sum += l * u;
      }
      lu[j * d + k] = sum;
    }
  }
  for (size_t i = 0; i < d; i++)
    for (size_t k = 0; k < d; k++) a[i * d + k] = lu[perm[i] * d + k];
  return logdet;
}

/* Round trip, log-det cancellation, brute-force log-det and vjp (input and
   parameters) in both directions on n rows ~ N(0, 1.5^2). */
static void check_bijector(nf_layer *layer, const char *label, size_t n, uint64_t seed)
{
  size_t d = layer->dim;
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *in = malloc(n * d * sizeof *in), cancel;
  th_randn(&rng, n * d, 1.5, in);
  double rt = th_roundtrip_error(layer, n, in, NULL, &cancel);
  printf("linear_lu %s d=%zu n=%zu: roundtrip %.2e, logdet cancel %.2e\n", label, d, n, rt, cancel);
  ck_assert_double_le(rt, TOL_ROUNDTRIP);
  ck_assert_double_le(cancel, TOL_CANCEL);
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    double ld = th_logdet_error(layer, dir, n, in, NULL, H_LOGDET);
    th_vjp_errors e = th_vjp_check(layer, dir, n, in, NULL, seed + 1, H_VJP);
    printf("linear_lu %s d=%zu %s: logdet %.2e, vjp in %.2e, params %.2e\n", label, d,
           k ? "inverse" : "forward", ld, e.in, e.params);
    ck_assert_double_le(ld, TOL_LOGDET);
    ck_assert_double_le(e.in, TOL_VJP);
    ck_assert_double_le(e.params, TOL_VJP);
  }
  free(in);
}

START_TEST(identity_without_rng)
{
  enum { N = 4 };
  for (int m = 0; m < 2; m++)
    for (size_t d = 1; d <= 3; d += 2) {
      nf_layer *layer = nf_linear_lu_new(d, NULL, maps[m], NULL);
      ck_assert_ptr_nonnull(layer);
      ck_assert_uint_eq(layer->n_params, d + d * d);
      nf_rng rng;
      nf_rng_seed(&rng, 40 + d);
      double in[N * 3], out[N * 3], logdet[N] = {0};
      double *work = malloc(nf_layer_work_size(layer, N) * sizeof *work);
      th_randn(&rng, N * d, 2.0, in);
      for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(nf_layer_apply(layer, k ? NF_INVERSE : NF_FORWARD, N, in, NULL, out,
                                        logdet, work), NF_OK);
        for (size_t i = 0; i < N * d; i++)
          ck_assert_double_le(fabs(out[i] - in[i]), 1e-15 * fabs(in[i]));
        for (size_t i = 0; i < N; i++) ck_assert_double_le(fabs(logdet[i]), 1e-15);
      }
      free(work);
      nf_layer_free(layer);
    }
}
END_TEST

START_TEST(rng_initialisation_is_small_reproducible_and_not_identity)
{
  nf_rng r1, r2;
  nf_rng_seed(&r1, 41);
  nf_rng_seed(&r2, 41);
  nf_layer *a = nf_linear_lu_new(4, NULL, NF_DIAG_SOFTPLUS, &r1);
  nf_layer *b = nf_linear_lu_new(4, NULL, NF_DIAG_SOFTPLUS, &r2);
  nf_layer *id = nf_linear_lu_new(4, NULL, NF_DIAG_SOFTPLUS, NULL);
  double dev = 0;
  for (size_t k = 0; k < a->n_params; k++) {
    ck_assert_double_eq(a->params[k], b->params[k]);
    dev = fmax(dev, fabs(a->params[k] - id->params[k]));
  }
  ck_assert_double_gt(dev, 1e-3);
  ck_assert_double_lt(dev, 0.5);
  nf_layer_free(a);
  nf_layer_free(b);
  nf_layer_free(id);
}
END_TEST

/* apply agrees with x = A z + b and log|det A| for A built from the documented layout. */
START_TEST(matches_documented_layout)
{
  enum { N = 3 };
  const size_t dims[] = {1, 2, 5};
  for (int m = 0; m < 2; m++)
    for (size_t k = 0; k < 3; k++) {
      size_t d = dims[k], perm[DMAX];
      nf_layer *layer = random_lu(d, maps[m], d > 1, 50 + k, perm);
      double a[DMAX * DMAX], z[N * DMAX], x[N * DMAX], logdet[N] = {0};
      double *work = malloc(nf_layer_work_size(layer, N) * sizeof *work);
      double want_ld = expected_matrix(layer, maps[m], perm, a);
      nf_rng rng;
      nf_rng_seed(&rng, 60 + k);
      th_randn(&rng, N * d, 1.0, z);
      ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, z, NULL, x, logdet, work), NF_OK);
      for (size_t i = 0; i < N; i++) {
        for (size_t r = 0; r < d; r++) {
          double want = layer->params[r];
          for (size_t c = 0; c < d; c++) want += a[r * d + c] * z[i * d + c];
          ck_assert_double_le(fabs(x[i * d + r] - want), TOL_CLOSED * fmax(1.0, fabs(want)));
        }
        ck_assert_double_le(fabs(logdet[i] - want_ld), TOL_CLOSED);
      }
      free(work);
      nf_layer_free(layer);
    }
}
END_TEST

START_TEST(inverse_logdet_and_vjp_match_finite_differences)
{
  const size_t dims[] = {1, 2, 5};
  for (int m = 0; m < 2; m++)
    for (size_t k = 0; k < 3; k++)
      for (int permuted = 0; permuted < 2; permuted++) {
        size_t perm[DMAX];
        nf_layer *layer = random_lu(dims[k], maps[m], permuted, 70 + 10 * k + permuted, perm);
        char label[32];
        snprintf(label, sizeof label, "%s%s", map_names[m], permuted ? "+perm" : "");
        check_bijector(layer, label, 6, 80 + k);
        nf_layer_free(layer);
      }
}
END_TEST

/* A batch large enough for the BLAS kernels' blocked paths. */
START_TEST(large_batch)
{
  size_t perm[DMAX];
  nf_layer *layer = random_lu(5, NF_DIAG_EXP, 1, 90, perm);
  check_bijector(layer, "exp+perm", 300, 91);
  nf_layer_free(layer);
}
END_TEST

/* vjp ADDS into layer->grad, WRITES g_in, and treats g_logdet == NULL as zero. */
START_TEST(vjp_accumulates_parameter_gradient)
{
  enum { D = 3, N = 4, P = D + D * D };
  size_t perm[D];
  nf_layer *layer = random_lu(D, NF_DIAG_SOFTPLUS, 1, 92, perm);
  nf_rng rng;
  nf_rng_seed(&rng, 93);
  double in[N * D], out[N * D], g_out[N * D], zeros[N] = {0}, g_in[N * D], once[P];
  double *work = malloc(nf_layer_work_size(layer, N) * sizeof *work);
  th_randn(&rng, N * D, 1.0, in);
  th_randn(&rng, N * D, 1.0, g_out);
  for (int k = 0; k < 2; k++) {
    nf_dir dir = k ? NF_INVERSE : NF_FORWARD;
    memset(layer->grad, 0, P * sizeof(double));
    ck_assert_int_eq(nf_layer_apply(layer, dir, N, in, NULL, out, NULL, work), NF_OK);
    ck_assert_int_eq(nf_layer_vjp(layer, dir, N, in, NULL, out, g_out, zeros, g_in, NULL, work),
                     NF_OK);
    memcpy(once, layer->grad, sizeof once);
    for (size_t i = 0; i < N * D; i++) g_in[i] = NAN;
    ck_assert_int_eq(nf_layer_vjp(layer, dir, N, in, NULL, out, g_out, NULL, g_in, NULL, work),
                     NF_OK);
    for (size_t i = 0; i < P; i++)
      ck_assert_double_le(fabs(layer->grad[i] - 2 * once[i]), 1e-13 * fmax(1.0, fabs(once[i])));
    for (size_t i = 0; i < N * D; i++) ck_assert(isfinite(g_in[i]));
    ck_assert_int_eq(nf_layer_vjp(layer, dir, N, in, NULL, out, g_out, NULL, NULL, NULL, work),
                     NF_OK);
    for (size_t i = 0; i < P; i++)
      ck_assert_double_le(fabs(layer->grad[i] - 3 * once[i]), 1e-13 * fmax(1.0, fabs(once[i])));
  }
  free(work);
  nf_layer_free(layer);
}
END_TEST

/* In a 2-D flow, log p(x) is the density of N(b, A A^T), and it integrates to 1. */
START_TEST(flow_density_is_the_linear_gaussian)
{
  size_t perm[2];
  nf_layer *layer = random_lu(2, NF_DIAG_EXP, 1, 94, perm);
  double a[4], b[2] = {layer->params[0], layer->params[1]};
  double log_det = expected_matrix(layer, NF_DIAG_EXP, perm, a);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  double x[6] = {0.1, -0.4, 2.0, 1.5, -3.0, 0.7}, logp[3];
  ck_assert_int_eq(nf_flow_log_prob(flow, 3, x, NULL, logp), NF_OK);
  double det = a[0] * a[3] - a[1] * a[2];
  for (size_t i = 0; i < 3; i++) {
    double r0 = x[2 * i] - b[0], r1 = x[2 * i + 1] - b[1];
    double z0 = (a[3] * r0 - a[1] * r1) / det, z1 = (a[0] * r1 - a[2] * r0) / det;
    double want = -LOG_2PI - log_det - 0.5 * (z0 * z0 + z1 * z1);
    ck_assert_double_le(fabs(logp[i] - want), 1e-12);
  }
  double mass = th_grid_mass(flow, 14.0, 400);
  printf("linear_lu flow: grid mass %.12f\n", mass);
  ck_assert_double_le(fabs(mass - 1.0), 1e-6);
  nf_flow_free(flow);
}
END_TEST

START_TEST(rejects_bad_arguments)
{
  const size_t dup[3] = {1, 0, 1};
  nf_rng rng;
  nf_rng_seed(&rng, 95);
  ck_assert_ptr_null(nf_linear_lu_new(0, NULL, NF_DIAG_EXP, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_linear_lu_new: dimension is 0"));
  ck_assert_ptr_null(nf_linear_lu_new(3, NULL, (nf_diag_map)7, &rng));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "unknown diagonal map 7"));
  ck_assert_ptr_null(nf_linear_lu_new(3, dup, NF_DIAG_EXP, &rng));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_linear_lu_new"));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "perm[2] = 1 repeats perm[0]"));

  size_t perm[2];
  nf_layer *layer = random_lu(2, NF_DIAG_EXP, 1, 96, perm);
  double in[4] = {1, INFINITY, 3, 4}, out[4] = {-9, -9, -9, -9}, logdet[2] = {5, 5};
  double *work = malloc(nf_layer_work_size(layer, 2) * sizeof *work);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, 2, in, NULL, out, logdet, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, 0, in, NULL, out, logdet, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_INVERSE, 2, in, NULL, out, logdet, work),
                   NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 0, column 1"));
  for (size_t i = 0; i < 4; i++) ck_assert_double_eq(out[i], -9);
  for (size_t i = 0; i < 2; i++) ck_assert_double_eq(logdet[i], 5);
  nf_flow *flow = nf_flow_new(3, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_EDIM);
  nf_flow_free(flow);
  free(work);
  nf_layer_free(layer);
}
END_TEST

int main(void)
{
  Suite *suite = suite_create("linear_lu");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, identity_without_rng);
  tcase_add_test(tc, rng_initialisation_is_small_reproducible_and_not_identity);
  tcase_add_test(tc, matches_documented_layout);
  tcase_add_test(tc, inverse_logdet_and_vjp_match_finite_differences);
  tcase_add_test(tc, large_batch);
  tcase_add_test(tc, vjp_accumulates_parameter_gradient);
  tcase_add_test(tc, flow_density_is_the_linear_gaussian);
  tcase_add_test(tc, rejects_bad_arguments);
  suite_add_tcase(suite, tc);
  return th_run_suite(suite);
}
