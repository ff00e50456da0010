/* tests/test_gaussianization.c — the Gaussianization flow's elementwise
   layer z = Phi^-1(F(x)): the log-space normal CDF and its inverse against
   50-digit values (mpmath), tail accuracy against the exact logistic case,
   round trips across the range stated in gaussianization.h, log-det and vjp
   against finite differences in both directions (centre and tails), bad
   parameters refused, a 2-D flow [gaussianization, LU] x 2 integrating to 1,
   shared by threads, and saved and loaded bit for bit. Links the static
   library for the internal nf_ndtri_log and nf_log_ndtr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "normal.h"

#define TOL_REF 1e-14      /* relative error against the 50-digit references */
#define TOL_ROUNDTRIP 1e-8 /* round trips over the stated range */
#define TOL_FD 1e-6        /* log-det and vjp against finite differences */

/* A layer of dimension d with K components and theta = init + N(0, scale^2) from seed. */
static nf_layer *random_layer(size_t d, size_t K, uint64_t seed, double scale, double **theta)
{
  nf_layer *layer = nf_gaussianization_new(d, K, NULL);
  ck_assert_msg(layer != NULL, "%s", nf_errmsg());
  *theta = th_random_theta(layer, seed, scale);
  for (size_t p = 0; p < nf_layer_n_params(layer); p++) (*theta)[p] += nf_layer_init_params(layer)[p];
  return layer;
}

/* |got - want| <= tol max(|want|, floor). */
static void expect_close(const char *what, double arg, double got, double want, double tol,
                         double floor)
{
  double err = fabs(got - want) / fmax(fabs(want), floor);
  ck_assert_msg(err <= tol, "%s(%g) = %.17g, want %.17g (relative %.2e)", what, arg, got, want,
                err);
}

/* Phi^-1 from a log probability and log Phi, against mpmath at 50 digits. */
START_TEST(normal_cdf_in_log_space_matches_references)
{
  static const double ndtri[][2] = {
    {-0.75, -0.069322262459629651575}, {-1.0, -0.33747496376420245528},
    {-2.0, -1.1015196284987502661},    {-2.5, -1.3911828143255684557},
    {-5.0, -2.4709386372615884169},    {-13.0, -4.5858856993250928706},
    {-40.0, -8.5926757184737721488},   {-100.0, -13.888476033003886317},
    {-400.0, -28.133355508542440269},  {-728.0, -38.037922863483043877},
    {-800.0, -39.884694838256677568},  {-2000.0, -63.165418608783609485},
    {-100000.0, -447.19789367852505149}, {-1e12, -1414213.5623624311554}};
  static const double logndtr[][2] = {
    {5.0, -2.8665161296376359338e-7}, {1.5, -0.069143455612233982993},
    {0.0, -0.69314718055994530942},   {-1.5, -2.705944400823889807},
    {-6.0, -20.736768949974705655},   {-19.0, -184.36612866916096735},
    {-21.0, -224.46571583141447131},  {-30.0, -454.32124395634319711},
    {-39.0, -765.0831565643775444},   {-50.0, -1254.8313611394199013},
    {-300.0, -45006.62273211866336}};
  double worst = 0;
  for (size_t k = 0; k < sizeof ndtri / sizeof *ndtri; k++) {
    double got = nf_ndtri_log(ndtri[k][0]);
    expect_close("nf_ndtri_log", ndtri[k][0], got, ndtri[k][1], TOL_REF, 0);
    worst = fmax(worst, fabs(got - ndtri[k][1]) / fabs(ndtri[k][1]));
    /* the upper half through log(1 - p): Phi^-1(1 - p) = -Phi^-1(p) */
    if (ndtri[k][0] < -2.0) continue;
    expect_close("nf_ndtri_log upper", ndtri[k][0], nf_ndtri_log(log(-expm1(ndtri[k][0]))),
                 -ndtri[k][1], 1e-13, 0);
  }
  for (size_t k = 0; k < sizeof logndtr / sizeof *logndtr; k++) {
    double got = nf_log_ndtr(logndtr[k][0]);
    expect_close("nf_log_ndtr", logndtr[k][0], got, logndtr[k][1], TOL_REF, 0);
    worst = fmax(worst, fabs(got - logndtr[k][1]) / fabs(logndtr[k][1]));
  }
  ck_assert(nf_ndtri_log(0.0) == INFINITY && isnan(nf_ndtri_log(0.5)) && isnan(nf_ndtri_log(NAN)));
  printf("log-space normal CDF and inverse: max relative error %.2e\n", worst);
}
END_TEST

/* One component with mu = 0, s = 1 is the logistic: z = Phi^-1(sigmoid(x))
   exactly, known to 20 digits out to |x| = 1000 (|z| = 44.6), and back. */
START_TEST(tails_stay_accurate)
{
  static const double ref[][2] = {
    {-1000.0, -44.61574773196940302}, {-700.0, -37.295079632647416957},
    {-300.0, -24.326438906565587379}, {-40.0, -8.5926757184737721492},
    {-5.0, -2.4733392227978292964},   {0.5, 0.31194629604925409602},
    {5.0, 2.4733392227978292964},     {40.0, 8.5926757184737721492},
    {300.0, 24.326438906565587379},   {1000.0, 44.61574773196940302}};
  enum { N = sizeof ref / sizeof *ref };
  nf_layer *layer = nf_gaussianization_new(1, 1, NULL);
  double theta[3] = {0.0, 0.0, 0.0}, x[N], z[N], back[N], work[16 + N];
  ck_assert_uint_le(nf_layer_work_size(layer, N), 16 + N);
  for (size_t i = 0; i < N; i++) x[i] = ref[i][0];
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, N, x, NULL, z, NULL, NULL, work), NF_OK);
  double worst = 0, worst_back = 0;
  for (size_t i = 0; i < N; i++) {
    expect_close("z", x[i], z[i], ref[i][1], 1e-14, 0);
    worst = fmax(worst, fabs(z[i] - ref[i][1]) / fabs(ref[i][1]));
  }
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N, z, NULL, back, NULL, NULL, work), NF_OK);
  for (size_t i = 0; i < N; i++) {
    expect_close("x(z(x))", x[i], back[i], x[i], 1e-12, 1.0);
    worst_back = fmax(worst_back, fabs(back[i] - x[i]) / fmax(1.0, fabs(x[i])));
  }
  printf("logistic tails to |z| = 44.6: z relative error %.2e, x round trip %.2e\n", worst,
         worst_back);
  nf_layer_free(layer);
}
END_TEST

/* The start: F within 0.03 of Phi, so z = Phi^-1(F(x)) stays near x. */
START_TEST(initialisation_is_close_to_the_identity)
{
  for (size_t K = 1; K <= 16; K *= 2) {
    nf_layer *layer = nf_gaussianization_new(1, K, NULL);
    enum { N = 121 };
    double x[N], z[N], *work = nf_layer_work_new(layer, N), worst = 0;
    for (size_t i = 0; i < N; i++) x[i] = -6.0 + 0.1 * (double)i;
    ck_assert_int_eq(nf_layer_apply(layer, nf_layer_init_params(layer), NF_INVERSE, N, x, NULL,
                                    z, NULL, NULL, work), NF_OK);
    for (size_t i = 0; i < N; i++)
      worst = fmax(worst, fabs(0.5 * erfc(-z[i] / sqrt(2.0)) - 0.5 * erfc(-x[i] / sqrt(2.0))));
    ck_assert_msg(worst <= 0.03, "K = %zu: max |F - Phi| = %g", K, worst);
    printf("init K = %zu: max |F - Phi| on [-6, 6] = %.4f\n", K, worst);
    nf_layer_work_free(layer, N, work);
    nf_layer_free(layer);
  }
}
END_TEST

/* Cases of the bijector battery: K = 1 (variant 1) or 4 components,
   theta = init + N(0, 0.5^2). */
static nf_layer *gauss_case(size_t d, uint64_t seed, int variant, size_t n, double *z,
                            double **theta)
{
  (void)n;
  (void)z;
  return random_layer(d, variant == 1 ? 1 : 4, seed, 0.5, theta);
}

/* Round trip, log-det and vjp (both directions) against finite differences. */
START_TEST(bijector_checks)
{
  th_check_bijector_family("gaussianization K=4", gauss_case, 0, 1.5);
  th_check_bijector_family("gaussianization K=1", gauss_case, 1, 1.5);
}
END_TEST

/* In the tails too (z up to +-9, x out to +-40): log-det and vjp in both directions. */
START_TEST(tails_logdet_and_vjp)
{
  enum { N = 8, D = 2 };
  double *theta;
  nf_layer *layer = random_layer(D, 3, 41, 0.5, &theta);
  const double zs[N * D] = {-9, 8, -6, 5, 7, -8.5, 3, -4, -2, 9, 0.5, -7, 6, 6, -9, -9};
  double xs[N * D], *work = nf_layer_work_new(layer, N);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N, zs, NULL, xs, NULL, NULL, work), NF_OK);
  for (int dir = 0; dir < 2; dir++) {
    const double *in = dir == NF_FORWARD ? zs : xs;
    double ld = th_logdet_error(layer, theta, (nf_dir)dir, N, in, NULL, 1e-5);
    th_vjp_errors e = th_vjp_check(layer, theta, (nf_dir)dir, N, in, NULL, 43, 1e-6);
    printf("tails %s: logdet %.2e, vjp in %.2e, params %.2e\n", nf_dir_name((nf_dir)dir), ld,
           e.in, e.params);
    ck_assert_double_le(ld, TOL_FD);
    ck_assert_double_le(e.in, TOL_FD);
    ck_assert_double_le(e.params, TOL_FD);
  }
  nf_layer_work_free(layer, N, work);
  nf_layer_free(layer);
  free(theta);
}
END_TEST

/* Max over the n x D rows a of |back - a| / max(1, |a|), where back is a
   mapped in direction dir and back again. */
static double round_trip(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                         const double *a, double *work)
{
  double *b = malloc(n * 3 * sizeof *b), *c = malloc(n * 3 * sizeof *c), worst = 0;
  nf_dir back = dir == NF_FORWARD ? NF_INVERSE : NF_FORWARD;
  ck_assert_msg(nf_layer_apply(layer, theta, dir, n, a, NULL, b, NULL, NULL, work) == NF_OK, "%s", nf_errmsg());
  ck_assert_int_eq(nf_layer_apply(layer, theta, back, n, b, NULL, c, NULL, NULL, work), NF_OK);
  for (size_t k = 0; k < n * 3; k++) worst = fmax(worst, fabs(c[k] - a[k]) / fmax(1.0, fabs(a[k])));
  free(b);
  free(c);
  return worst;
}

/* The header's range (K = 4, d = 3, theta = init + N(0, 0.5^2), three seeds):
   inverse(forward(z)) = z for |z| = 0 .. 35 in steps of 0.5 and log-spaced
   up to 1e8, forward(inverse(x)) = x for |x| log-spaced from 1e-3 to 1e299,
   both to 1e-8 relative (to 1e-8 absolute below 1). */
START_TEST(round_trips_over_the_stated_range)
{
  enum { N = 141, D = 3 };
  double worst_z = 0, worst_x = 0, a[N * D];
  for (uint64_t seed = 1; seed <= 3; seed++) {
    double *theta;
    nf_layer *layer = random_layer(D, 4, seed, 0.5, &theta);
    double *work = nf_layer_work_new(layer, N);
    for (size_t i = 0; i < N; i++)
      for (size_t j = 0; j < D; j++) a[i * D + j] = -35.0 + 0.5 * (double)i - 0.1 * (double)j;
    worst_z = fmax(worst_z, round_trip(layer, theta, NF_FORWARD, N, a, work));
    for (size_t i = 0; i < N; i++) /* z = +-10^(0 .. 8) */
      for (size_t j = 0; j < D; j++)
        a[i * D + j] = (i % 2 ? 1 : -1) * pow(10.0, 8.0 * (double)i / (N - 1)) + 0.1 * (double)j;
    worst_z = fmax(worst_z, round_trip(layer, theta, NF_FORWARD, N, a, work));
    for (size_t i = 0; i < N; i++) /* x = +-10^(-3 .. 299) */
      for (size_t j = 0; j < D; j++)
        a[i * D + j] = (i % 2 ? 1 : -1) * pow(10.0, -3.0 + 302.0 * (double)i / (N - 1)) + (double)j;
    worst_x = fmax(worst_x, round_trip(layer, theta, NF_INVERSE, N, a, work));
    nf_layer_work_free(layer, N, work);
    nf_layer_free(layer);
    free(theta);
  }
  printf("round trips: |z| <= 1e8 max relative error %.2e; |x| <= 1e299 %.2e\n", worst_z,
         worst_x);
  ck_assert_double_le(worst_z, TOL_ROUNDTRIP);
  ck_assert_double_le(worst_x, TOL_ROUNDTRIP);
}
END_TEST

/* A 2-D Gaussianization flow: [gaussianization, LU, gaussianization, LU]. */
static nf_flow *gauss_flow(uint64_t seed)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(nf_flow_push(flow, nf_gaussianization_new(2, 3, &rng)), NF_OK);
    ck_assert_int_eq(nf_flow_push(flow, nf_linear_lu_new(2, NULL, NF_DIAG_EXP, &rng)), NF_OK);
  }
  return flow;
}

START_TEST(flow_integrates_to_one_and_is_thread_safe)
{
  nf_flow *flow = gauss_flow(5);
  th_check_grid_mass("gaussianization + LU flow", flow, 12.0, 300, 1e-3);
  double *x = th_random_points(40, 2, 6, 1.5);
  th_check_threads(flow, 40, x, NULL);
  free(x);
  nf_flow_free(flow);
}
END_TEST

/* A d-dimensional layer with 2 components from rng, for the flow battery. */
static nf_layer *make_gauss(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  (void)ctx_dim;
  return nf_gaussianization_new(dim, 2, rng);
}

START_TEST(conditional_flows_and_threads)
{
  th_check_family_flows(make_gauss, 0.0);
}
END_TEST

/* NaN and Inf refused; a log-scale beyond +-20 refused with NF_EDOMAIN. */
START_TEST(rejects_bad_parameters_and_arguments)
{
  nf_flow *flow = gauss_flow(7);
  size_t off = nf_flow_param_offset(flow, 0), K = 3;
  th_check_param_refused(flow, off, NAN, NF_ENONFINITE);
  th_check_param_refused(flow, off + K, INFINITY, NF_ENONFINITE);
  th_check_param_refused(flow, off + 2 * K, 25.0, NF_EDOMAIN);
  th_check_param_refused(flow, off + 3 * K + 2 * K + 1, -1e3, NF_EDOMAIN);
  nf_flow_free(flow);
  ck_assert_ptr_null(nf_gaussianization_new(0, 2, NULL));
  ck_assert_ptr_null(nf_gaussianization_new(2, 0, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "n_components"));
  ck_assert_ptr_null(nf_gaussianization_new(2, SIZE_MAX / 2, NULL));
  double *theta;
  nf_layer *layer = random_layer(2, 3, 8, 0.5, &theta);
  ck_assert_uint_eq(nf_gaussianization_components(layer), 3);
  th_check_bad_calls(layer, theta);
  /* x / s overflows: no finite z, refused with the entry named and logdet untouched */
  double x[4] = {0.5, -1.0, 1e308, 2.0}, z[4], ld[2] = {7.0, 7.0};
  double *work = nf_layer_work_new(layer, 2);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, 2, x, NULL, z, ld, NULL, work), NF_EDOMAIN);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 1, column 0"));
  ck_assert(ld[0] == 7.0 && ld[1] == 7.0);
  nf_layer_work_free(layer, 2, work);
  nf_layer_free(layer);
  free(theta);
}
END_TEST

/* Save -> load: theta and log p bit for bit, and samples too. */
START_TEST(save_load_is_bit_for_bit)
{
  nf_flow *flow = gauss_flow(9);
  double *theta = th_random_points(1, nf_flow_n_params(flow), 10, 0.3);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  enum { N = 30 };
  double xa[2 * N], xb[2 * N], la[N], lb[N];
  nf_rng ra, rb;
  nf_rng_seed(&ra, 11);
  nf_rng_seed(&rb, 11);
  ck_assert_int_eq(nf_flow_sample(flow, &ra, N, NULL, xa, la), NF_OK);
  nf_flow *copy = th_save_load(flow, N, xa);
  ck_assert_uint_eq(nf_gaussianization_components(nf_flow_layer(copy, 2)), 3);
  ck_assert_int_eq(nf_flow_sample(copy, &rb, N, NULL, xb, lb), NF_OK);
  ck_assert(memcmp(xa, xb, sizeof xa) == 0 && memcmp(la, lb, sizeof la) == 0);
  free(theta);
  nf_flow_free(flow);
  nf_flow_free(copy);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {normal_cdf_in_log_space_matches_references, tails_stay_accurate,
                          initialisation_is_close_to_the_identity, bijector_checks,
                          tails_logdet_and_vjp, round_trips_over_the_stated_range,
                          flow_integrates_to_one_and_is_thread_safe, conditional_flows_and_threads,
                          rejects_bad_parameters_and_arguments, save_load_is_bit_for_bit, NULL};
  return th_run_tests("gaussianization", 0, tests);
}
