/* tests/test_preprocess.c — preprocessing bijections: standardize and logit
   against the shared checks (round trip, brute-force log-det, vjp both ways),
   the logit's tails and domain, nf_standardize_fit, and refused arguments. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* th_case_fn: shift ~ N(0, 2^2), scale = exp(N(0, 0.5^2)). */
static nf_layer *standardize_case(size_t d, uint64_t seed, int variant, size_t n, double *z,
                                  double **theta)
{
  (void)variant;
  (void)n;
  (void)z;
  double *shift = th_random_points(1, d, seed, 2.0), *ls = th_random_points(1, d, seed + 1, 0.5);
  for (size_t j = 0; j < d; j++) ls[j] = exp(ls[j]);
  nf_layer *layer = nf_standardize_new(d, shift, ls);
  free(shift);
  free(ls);
  *theta = th_random_theta(layer, seed, 1.0);
  return layer;
}

/* th_case_fn: alpha = 0 (variant 0): lo_j ~ N(0, 1), hi_j = lo_j + 0.5 +
   |N(0, 2^2)|; alpha = 0.05 (variant 1): lo_j in [-2.5, -0.5], hi_j in
   [0.5, 2.5]. The rows are moved strictly inside every [lo_j, hi_j]: both
   directions are checked at the same rows, and with alpha = 0.05 the forward
   map sends |z| <= logit(0.95) = 2.94 into [lo, hi], the inverse's domain. */
static nf_layer *logit_case(size_t d, uint64_t seed, int variant, size_t n, double *z,
                            double **theta)
{
  double *lo = th_random_points(1, d, seed, 1.0), *hi = th_random_points(1, d, seed + 1, 2.0);
  for (size_t j = 0; j < d; j++) {
    if (variant) {
      lo[j] = -0.5 - 2 * fabs(tanh(lo[j]));
      hi[j] = 0.5 + 2 * fabs(tanh(hi[j]));
    } else {
      hi[j] = lo[j] + 0.5 + fabs(hi[j]);
    }
  }
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) {
      double t = 0.5 + 0.45 * tanh(z[i * d + j] / 2); /* in (0.05, 0.95) */
      z[i * d + j] = lo[j] + t * (hi[j] - lo[j]);
    }
  nf_layer *layer = nf_logit_new(d, lo, hi, variant ? 0.05 : 0.0);
  free(lo);
  free(hi);
  *theta = th_random_theta(layer, seed, 1.0);
  return layer;
}

START_TEST(standardize_is_a_consistent_bijector)
{
  th_check_bijector_family("standardize", standardize_case, 0, 1.5);
  const double shift[2] = {1, -2}, scale[2] = {2, 0.5}, x[2] = {5, -1};
  nf_layer *layer = nf_standardize_new(2, shift, scale);
  ck_assert_uint_eq(nf_layer_n_params(layer), 0);
  double z[2], ld = 0;
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_INVERSE, 1, x, NULL, z, &ld, NULL, NULL), NF_OK);
  ck_assert_double_eq(z[0], 2.0);
  ck_assert_double_eq(z[1], 2.0);
  ck_assert_double_eq_tol(ld, -log(2.0) - log(0.5), 1e-15);
  th_check_bad_calls(layer, NULL);
  nf_layer_free(layer);
}
END_TEST

START_TEST(logit_is_a_consistent_bijector)
{
  th_check_bijector_family("logit alpha=0", logit_case, 0, 1.5);
  th_check_bijector_family("logit alpha=0.05", logit_case, 1, 1.5);
}
END_TEST

/* Far into the tails the forward log-det is -|z| - 2 exp(-|z|) - log c to
   rounding, finite up to |z| = 700, and x stays in (lo, hi) (alpha = 0). */
START_TEST(logit_tails_are_exact)
{
  const double lo = -1, hi = 3, c = 1.0 / 4;
  nf_layer *layer = nf_logit_new(1, &lo, &hi, 0.0);
  const double zs[] = {-700, -300, -40, -20, 20, 40, 300, 700};
  for (size_t k = 0; k < sizeof zs / sizeof *zs; k++) {
    double x, ld = 0;
    ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_FORWARD, 1, &zs[k], NULL, &x, &ld, NULL, NULL),
                     NF_OK);
    double a = fabs(zs[k]), want = -a - 2 * exp(-a) - log(c);
    ck_assert_msg(isfinite(ld) && fabs(ld - want) <= 1e-15 * fabs(want), "z = %g: logdet %.17g, want %.17g",
                  zs[k], ld, want);
    ck_assert(x >= lo && x <= hi);
  }
  /* Close to a bound the inverse keeps full relative accuracy: x = lo + 1e-12. */
  double x = lo + 1e-12, z, ld = 0;
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_INVERSE, 1, &x, NULL, &z, &ld, NULL, NULL), NF_OK);
  double u = c * (x - lo);
  ck_assert_double_eq_tol(z, log(u) - log1p(-u), 1e-12 * fabs(z));
  nf_layer_free(layer);
}
END_TEST

START_TEST(logit_refuses_values_outside_its_box)
{
  const double lo[2] = {0, 0}, hi[2] = {1, 2};
  nf_layer *layer = nf_logit_new(2, lo, hi, 0.0);
  double x[6] = {0.5, 0.5, 0.25, 2.5, 0.1, 0.1}, z[6] = {7, 7, 7, 7, 7, 7}, ld[3] = {0, 0, 0};
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_INVERSE, 3, x, NULL, z, ld, NULL, NULL),
                   NF_EDOMAIN);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 1, column 1"));
  for (size_t k = 0; k < 6; k++) ck_assert_double_eq(z[k], 7);
  x[3] = 0.0; /* the end itself, alpha = 0: z would be -inf */
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_INVERSE, 3, x, NULL, z, ld, NULL, NULL),
                   NF_EDOMAIN);
  nf_layer_free(layer);
  /* With alpha > 0 the domain is the forward map's image, (lo - e, hi + e),
     e = alpha (hi - lo)/(1 - 2 alpha): the ends of [lo, hi] and points just
     beyond them are inside, the image's own ends and beyond are refused. */
  layer = nf_logit_new(2, lo, hi, 0.01);
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_INVERSE, 3, x, NULL, z, ld, NULL, NULL), NF_OK);
  ck_assert(isfinite(z[3]));
  const double e1 = 0.01 * 2 / 0.98;
  x[3] = -0.99 * e1;
  x[4] = 1 + 0.99 * 0.01 / 0.98;
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_INVERSE, 3, x, NULL, z, ld, NULL, NULL), NF_OK);
  ck_assert(isfinite(z[3]) && isfinite(z[4]) && isfinite(ld[1]) && isfinite(ld[2]));
  for (size_t k = 0; k < 6; k++) z[k] = 7;
  x[4] = 1 + 1.01 * 0.01 / 0.98;
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_INVERSE, 3, x, NULL, z, ld, NULL, NULL),
                   NF_EDOMAIN);
  ck_assert_msg(strstr(nf_errmsg(), "row 2, column 0") != NULL, "%s", nf_errmsg());
  for (size_t k = 0; k < 6; k++) ck_assert_double_eq(z[k], 7);
  x[4] = 0.5;
  x[3] = -1.01 * e1;
  ck_assert_int_eq(nf_layer_apply(layer, NULL, NF_INVERSE, 3, x, NULL, z, ld, NULL, NULL),
                   NF_EDOMAIN);
  ck_assert_msg(strstr(nf_errmsg(), "row 1, column 1") != NULL, "%s", nf_errmsg());
  x[3] = NAN; /* refused too (as not finite, before the domain check) */
  ck_assert_int_ne(nf_layer_apply(layer, NULL, NF_INVERSE, 3, x, NULL, z, ld, NULL, NULL), NF_OK);
  x[3] = 0.0;

  /* Through a flow the row is the caller's, across chunks of the convenience calls. */
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  enum { N = 3000 };
  double *xs = malloc(2 * N * sizeof *xs), *lp = malloc(N * sizeof *lp);
  for (size_t i = 0; i < 2 * N; i++) xs[i] = 0.5;
  xs[2 * 2500 + 1] = -0.5;
  ck_assert_int_eq(nf_flow_log_prob(flow, N, xs, NULL, lp), NF_EDOMAIN);
  ck_assert_msg(strstr(nf_errmsg(), "row 2500, column 1") != NULL, "%s", nf_errmsg());
  free(xs);
  free(lp);
  nf_flow_free(flow);
}
END_TEST

/* The density of z ~ N(0, 1) through a logit with alpha = 0.05 over [0, 1]
   integrates to 1 over the map's image (-e, 1 + e), e = 0.05/0.9 (midpoint
   rule; the density vanishes with all its derivatives at the ends), and
   every sample, tails included, has a finite log-density. */
START_TEST(logit_density_is_normalised_on_its_image)
{
  const double lo = 0, hi = 1, alpha = 0.05, e = alpha * (hi - lo) / (1 - 2 * alpha);
  nf_flow *flow = nf_flow_new(1, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_logit_new(1, &lo, &hi, alpha)), NF_OK);
  enum { M = 200000 };
  double *x = malloc(M * sizeof *x), *lp = malloc(M * sizeof *lp);
  const double a = lo - e, b = hi + e, h = (b - a) / M;
  for (size_t i = 0; i < M; i++) x[i] = a + (i + 0.5) * h;
  ck_assert_int_eq(nf_flow_log_prob(flow, M, x, NULL, lp), NF_OK);
  double mass = 0, inside = 0;
  for (size_t i = 0; i < M; i++) {
    mass += exp(lp[i]) * h;
    if (x[i] >= lo && x[i] <= hi) inside += exp(lp[i]) * h;
  }
  printf("logit alpha=0.05 on [0, 1]: mass over the image %.12f, over [0, 1] %.6f\n", mass,
         inside);
  ck_assert_msg(fabs(mass - 1) <= 1e-6, "mass over the image %.12f", mass);
  ck_assert_msg(inside < 1 - 1e-3, "mass over [0, 1] %.12f: the tails should hold some", inside);

  /* Samples, and the forward map far into both tails (where u or v rounds
     to 0 unless x is moved inwards), always evaluate. */
  nf_rng rng;
  nf_rng_seed(&rng, 11);
  ck_assert_int_eq(nf_flow_sample(flow, &rng, M, NULL, x, NULL), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob(flow, M, x, NULL, lp), NF_OK);
  size_t outside = 0;
  for (size_t i = 0; i < M; i++) {
    ck_assert(isfinite(lp[i]) && x[i] > a && x[i] < b);
    outside += x[i] < lo || x[i] > hi;
  }
  ck_assert_uint_gt(outside, 0); /* alpha = 0.05 puts about 1.7% of the samples there */
  const double zs[] = {-800, -745, -200, -60, -40, -38, -37, -36, -30, 30, 36, 37, 38, 40, 60,
                       200, 745, 800};
  enum { NZ = sizeof zs / sizeof *zs };
  double xz[NZ], lz[NZ];
  ck_assert_int_eq(nf_flow_transform(flow, NF_FORWARD, NZ, zs, NULL, xz, NULL), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob(flow, NZ, xz, NULL, lz), NF_OK);
  for (size_t k = 0; k < NZ; k++)
    ck_assert_msg(!isnan(lz[k]) && xz[k] > a && xz[k] < b, "z = %g: x = %.17g, log p %g", zs[k],
                  xz[k], lz[k]);
  free(x);
  free(lp);
  nf_flow_free(flow);
}
END_TEST

START_TEST(constructors_refuse_bad_constants)
{
  const double one[2] = {1, 1}, zero[2] = {0, 0}, bad[2] = {1, NAN}, neg[2] = {1, -1};
  ck_assert_ptr_null(nf_standardize_new(2, zero, neg));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "scale[1]"));
  ck_assert_ptr_null(nf_standardize_new(2, bad, one));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "shift[1]"));
  ck_assert_ptr_null(nf_standardize_new(0, zero, one));
  ck_assert_ptr_null(nf_standardize_new(2, NULL, one));
  ck_assert_ptr_null(nf_logit_new(2, one, one, 0.0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "column 0"));
  ck_assert_ptr_null(nf_logit_new(2, zero, one, 0.5));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "alpha"));
  ck_assert_ptr_null(nf_logit_new(2, zero, one, -0.1));
  ck_assert_ptr_null(nf_logit_new(2, zero, bad, 0.1));
  const double huge_lo[1] = {-DBL_MAX}, huge_hi[1] = {DBL_MAX};
  ck_assert_ptr_null(nf_logit_new(1, huge_lo, huge_hi, 0.0));
}
END_TEST

START_TEST(fit_gives_means_and_standard_deviations)
{
  /* column 0: 1, 2, 3, 4 (mean 2.5, sd sqrt(1.25)); column 1 constant 0.1;
     column 2: -1e300, 1e300 twice (its sum would overflow in one pass). */
  const double x[12] = {1, 0.1, -1e300, 2, 0.1, 1e300, 3, 0.1, -1e300, 4, 0.1, 1e300};
  double shift[3], scale[3];
  ck_assert_int_eq(nf_standardize_fit(4, 3, x, shift, scale), NF_OK);
  ck_assert_double_eq(shift[0], 2.5);
  ck_assert_double_eq_tol(scale[0], sqrt(1.25), 1e-15);
  ck_assert_double_eq(shift[1], 0.1);
  ck_assert_double_eq(scale[1], 1.0);
  ck_assert_double_eq_tol(shift[2], 0.0, 1e285);
  ck_assert(isfinite(scale[2]) && scale[2] > 0);
  double y[3] = {1, NAN, 2};
  ck_assert_int_eq(nf_standardize_fit(1, 3, y, shift, scale), NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 0, column 1"));
  ck_assert_int_eq(nf_standardize_fit(0, 3, y, shift, scale), NF_EINVAL);
  ck_assert_int_eq(nf_standardize_fit(1, 3, NULL, shift, scale), NF_EINVAL);

  /* Appended last, a fitted standardisation gives log p in the data's units:
     x = shift + scale z with z ~ N(0, 1) has log p = log N(z) - sum log scale. */
  nf_flow *flow = nf_flow_new(1, 0, NF_BASE_STD_NORMAL);
  double s0 = 2.5, c0 = 2.0;
  ck_assert_int_eq(nf_flow_push(flow, nf_standardize_new(1, &s0, &c0)), NF_OK);
  double xv = 4.5, lp;
  ck_assert_int_eq(nf_flow_log_prob(flow, 1, &xv, NULL, &lp), NF_OK);
  ck_assert_double_eq_tol(lp, -0.5 * log(2 * 3.14159265358979323846) - 0.5 - log(2.0), 1e-15);
  ck_assert_uint_eq(nf_flow_n_params(flow), 0);
  nf_flow_free(flow);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {
    standardize_is_a_consistent_bijector, logit_is_a_consistent_bijector,
    logit_tails_are_exact, logit_refuses_values_outside_its_box,
    logit_density_is_normalised_on_its_image,
    constructors_refuse_bad_constants, fit_gives_means_and_standard_deviations, NULL};
  return th_run_tests("preprocess", 0, tests);
}
