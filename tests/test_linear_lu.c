/* tests/test_linear_lu.c — LU-form linear layer x = P L U z + b: identity at
   construction, the documented parameter layout, inverse, log-det and vjp
   against finite differences for d = 1, 2, 5 and both diagonal maps, density
   of a 2-D flow, argument checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define TOL_CLOSED 1e-13    /* against the matrix built from the documented layout */
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
   permuted (else none), and in *theta (caller frees) parameters: the
   constructor's draw plus N(0, 0.4^2). */
static nf_layer *random_lu(size_t d, nf_diag_map map, int permuted, uint64_t seed,
                           size_t *perm, double **theta)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  for (size_t i = 0; i < d; i++) perm[i] = i;
  if (permuted) nf_rng_shuffle(&rng, d, perm);
  nf_layer *layer = nf_linear_lu_new(d, permuted ? perm : NULL, map, &rng);
  ck_assert_msg(layer != NULL, "nf_linear_lu_new: %s", nf_errmsg());
  size_t p = nf_layer_n_params(layer);
  *theta = malloc(p * sizeof **theta);
  for (size_t k = 0; k < p; k++)
    (*theta)[k] = nf_layer_init_params(layer)[k] + 0.4 * nf_rng_normal(&rng);
  return layer;
}

/* A = P L U from the documented layout: params = b[d], W[d x d] with strict
   lower = L, strict upper = U, diagonal s and diag(U) = m(s); returns log|det A|. */
static double expected_matrix(const nf_layer *layer, const double *theta, nf_diag_map map,
                              const size_t *perm, double *a)
{
  size_t d = nf_layer_dim(layer);
  const double *w = theta + d;
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

/* A case of the bijector checks: diagonal map maps[variant / 2], a random
   permutation if variant is odd, parameters as random_lu draws them from seed. */
static nf_layer *lu_case(size_t d, uint64_t seed, int variant, size_t n, double *z,
                        double **theta)
{
  (void)n;
  (void)z;
  size_t perm[DMAX];
  return random_lu(d, maps[variant / 2], variant % 2, seed, perm, theta);
}

START_TEST(identity_without_rng)
{
  for (int m = 0; m < 2; m++)
    for (size_t d = 1; d <= 3; d += 2) {
      nf_layer *layer = nf_linear_lu_new(d, NULL, maps[m], NULL);
      ck_assert_ptr_nonnull(layer);
      ck_assert_uint_eq(nf_layer_n_params(layer), d + d * d);
      th_check_identity(layer, 4, 40 + d, 1e-15);
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
  const double *pa = nf_layer_init_params(a), *pb = nf_layer_init_params(b);
  for (size_t k = 0; k < nf_layer_n_params(a); k++) {
    ck_assert_double_eq(pa[k], pb[k]);
    dev = fmax(dev, fabs(pa[k] - nf_layer_init_params(id)[k]));
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
      double *theta;
      nf_layer *layer = random_lu(d, maps[m], d > 1, 50 + k, perm, &theta);
      double a[DMAX * DMAX], z[N * DMAX], x[N * DMAX], logdet[N] = {0};
      double *work = malloc(nf_layer_work_size(layer, N) * sizeof *work);
      double want_ld = expected_matrix(layer, theta, maps[m], perm, a);
      nf_rng rng;
      nf_rng_seed(&rng, 60 + k);
      th_randn(&rng, N * d, 1.0, z);
      ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N, z, NULL, x, logdet, NULL, work), NF_OK);
      for (size_t i = 0; i < N; i++) {
        for (size_t r = 0; r < d; r++) {
          double want = theta[r];
          for (size_t c = 0; c < d; c++) want += a[r * d + c] * z[i * d + c];
          ck_assert_double_le(fabs(x[i * d + r] - want), TOL_CLOSED * fmax(1.0, fabs(want)));
        }
        ck_assert_double_le(fabs(logdet[i] - want_ld), TOL_CLOSED);
      }
      free(work);
      free(theta);
      nf_layer_free(layer);
    }
}
END_TEST

/* Round trip, log-det and vjp against finite differences, vjp's accumulation,
   for both diagonal maps, with and without a permutation. */
START_TEST(inverse_logdet_and_vjp_match_finite_differences)
{
  for (int variant = 0; variant < 4; variant++) {
    char label[32];
    snprintf(label, sizeof label, "linear_lu %s%s", map_names[variant / 2],
             variant % 2 ? "+perm" : "");
    th_check_bijector_family(label, lu_case, variant, 1.5);
  }
}
END_TEST

/* A batch large enough for the BLAS kernels' blocked paths. */
START_TEST(large_batch)
{
  size_t perm[DMAX];
  double *theta;
  nf_layer *layer = random_lu(5, NF_DIAG_EXP, 1, 90, perm, &theta);
  double *z = th_random_points(300, 5, 91, 1.5);
  th_check_bijector("linear_lu exp+perm", layer, theta, 300, z, NULL, NULL);
  free(z);
  free(theta);
  nf_layer_free(layer);
}
END_TEST

/* In a 2-D flow, log p(x) is the density of N(b, A A^T), and it integrates to 1. */
START_TEST(flow_density_is_the_linear_gaussian)
{
  size_t perm[2];
  double *theta;
  nf_layer *layer = random_lu(2, NF_DIAG_EXP, 1, 94, perm, &theta);
  double a[4], b[2] = {theta[0], theta[1]};
  double log_det = expected_matrix(layer, theta, NF_DIAG_EXP, perm, a);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  free(theta);
  double x[6] = {0.1, -0.4, 2.0, 1.5, -3.0, 0.7}, logp[3];
  ck_assert_int_eq(nf_flow_log_prob(flow, 3, x, NULL, logp), NF_OK);
  double det = a[0] * a[3] - a[1] * a[2];
  for (size_t i = 0; i < 3; i++) {
    double r0 = x[2 * i] - b[0], r1 = x[2 * i + 1] - b[1];
    double z0 = (a[3] * r0 - a[1] * r1) / det, z1 = (a[0] * r1 - a[2] * r0) / det;
    double want = -LOG_2PI - log_det - 0.5 * (z0 * z0 + z1 * z1);
    ck_assert_double_le(fabs(logp[i] - want), 1e-12);
  }
  th_check_grid_mass("linear_lu flow", flow, 14.0, 400, 1e-6);
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
  double *theta;
  nf_layer *layer = random_lu(2, NF_DIAG_EXP, 1, 96, perm, &theta);
  th_check_bad_calls(layer, theta);
  nf_layer_free(layer);
  free(theta);
}
END_TEST

/* Theta is checked when written: NaN/Inf anywhere, and a diagonal s whose
   m(s) underflows (-800, both maps) or overflows (+800, exp) is refused with
   NF_EDOMAIN naming the parameter; softplus(+800) = 800 is fine. */
START_TEST(rejects_bad_parameters)
{
  for (int m = 0; m < 2; m++) {
    size_t perm[2];
    double *theta;
    nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
    ck_assert_int_eq(nf_flow_push(flow, random_lu(2, maps[m], 1, 97, perm, &theta)), NF_OK);
    ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
    th_check_param_refused(flow, 0, NAN, NF_ENONFINITE);
    th_check_param_refused(flow, 3, -INFINITY, NF_ENONFINITE); /* W[0][1], U's */
    th_check_param_refused(flow, 2, -800.0, NF_EDOMAIN);       /* s[0] = W[0][0] */
    th_check_param_refused(flow, 5, -800.0, NF_EDOMAIN);       /* s[1] = W[1][1] */
    theta[5] = 800.0;
    ck_assert_int_eq(nf_flow_set_params(flow, theta), maps[m] == NF_DIAG_EXP ? NF_EDOMAIN : NF_OK);
    nf_flow_free(flow);
    free(theta);
  }
}
END_TEST

/* A d-dimensional LU layer, exp diagonal, random permutation and parameters from rng. */
static nf_layer *make_lu(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  (void)ctx_dim;
  size_t perm[8];
  for (size_t i = 0; i < dim; i++) perm[i] = i;
  nf_rng_shuffle(rng, dim, perm);
  return nf_linear_lu_new(dim, perm, NF_DIAG_EXP, rng);
}

/* In conditional flows (ctx = NULL) and shared by two threads. */
START_TEST(conditional_flows_and_threads)
{
  th_check_family_flows(make_lu, 0.3);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {identity_without_rng,
                          rng_initialisation_is_small_reproducible_and_not_identity,
                          matches_documented_layout,
                          inverse_logdet_and_vjp_match_finite_differences,
                          large_batch,
                          flow_density_is_the_linear_gaussian, rejects_bad_arguments,
                          rejects_bad_parameters, conditional_flows_and_threads, NULL};
  return th_run_tests("linear_lu", 0, tests);
}
