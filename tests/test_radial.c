/* tests/test_radial.c — radial flow: the paper's formula, inverse round trip
   (also across radii from 1e-12 to 1e6 and at the centre), log-det against a
   finite-difference Jacobian, vjp against finite differences in both
   directions (also with beta near its bound -alpha), initialisation, bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define INV_TOL 1e-13 /* checked but unused: the inverse is closed-form */

static const size_t dims[] = {1, 2, 5};
#define N_DIMS (sizeof dims / sizeof *dims)

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

/* A radial layer and in *theta (caller frees) N(0, scale^2) parameters from
   `seed`; if constrained, b = -20 so that beta = softplus(-20) - alpha is
   within 3e-9 of its bound -alpha. */
static nf_layer *random_radial(size_t d, uint64_t seed, double scale, int constrained,
                               double **theta)
{
  nf_layer *layer = nf_radial_new(d, INV_TOL, NULL);
  *theta = th_random_theta(layer, seed, scale);
  if (constrained) (*theta)[d + 1] = -20.0;
  return layer;
}

/* Moves each row of p radially so that |p - z0| >= r_min. With beta near -alpha
   the map contracts the ball around z0 to a point (rho(r) ~ r/alpha), and there
   it loses digits by itself; r_min = 0.3 keeps rho >= 0.3/(alpha + 0.3). */
static void keep_off_centre(const nf_layer *layer, const double *theta, size_t n, double *p,
                            double r_min)
{
  size_t d = nf_layer_dim(layer);
  const double *z0 = theta;
  for (size_t i = 0; i < n; i++) {
    double r = 0;
    for (size_t j = 0; j < d; j++) r += (p[i * d + j] - z0[j]) * (p[i * d + j] - z0[j]);
    r = sqrt(r);
    if (r >= r_min) continue;
    for (size_t j = 0; j < d; j++) p[i * d + j] = z0[j] + (p[i * d + j] - z0[j]) * r_min / r;
  }
}

START_TEST(forward_matches_paper_formula)
{
  enum { N = 10 };
  double worst_x = 0, worst_ld = 0;
  for (size_t k = 0; k < N_DIMS; k++) {
    size_t d = dims[k];
    double *theta;
    nf_layer *layer = random_radial(d, 100 + k, 1.0, 0, &theta);
    const double *z0 = theta;
    double alpha = softplus(theta[d]), beta = -alpha + softplus(theta[d + 1]);
    double *z = th_random_points(N, d, 200 + k, 1.0), x[N * 5], ld[N] = {0}, work[8];
    ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N, z, NULL, x, ld, NULL, work), NF_OK);
    for (size_t i = 0; i < N; i++) {
      const double *zi = z + i * d;
      double r = 0;
      for (size_t j = 0; j < d; j++) r += (zi[j] - z0[j]) * (zi[j] - z0[j]);
      r = sqrt(r);
      double h = 1.0 / (alpha + r), dh = -h * h;
      for (size_t j = 0; j < d; j++)
        worst_x = fmax(worst_x, fabs(x[i * d + j] - (zi[j] + beta * h * (zi[j] - z0[j]))));
      double ldr = (d - 1.0) * log(1.0 + beta * h) + log(1.0 + beta * h + beta * dh * r);
      worst_ld = fmax(worst_ld, fabs(ld[i] - ldr));
    }
    free(z);
    free(theta);
    nf_layer_free(layer);
  }
  ck_assert_double_le(worst_x, 1e-14);
  ck_assert_double_le(worst_ld, 1e-13);
}
END_TEST

/* A case of the bijector checks: a radial layer with N(0, 1) parameters from seed,
   beta near its bound if `constrained`, and the rows kept off the centre the
   map then contracts to a point. */
static nf_layer *radial_case(size_t d, uint64_t seed, int constrained, size_t n, double *z,
                             double **theta)
{
  nf_layer *layer = random_radial(d, seed, 1.0, constrained, theta);
  if (constrained) keep_off_centre(layer, *theta, n, z, 0.3);
  return layer;
}

/* Every bijector check (th_check_bijector_family), with random parameters and
   with the constraint active. */
START_TEST(bijector_checks)
{
  th_check_bijector_family("radial", radial_case, 0, 1.5);
  th_check_bijector_family("radial, constraint active", radial_case, 1, 1.5);
}
END_TEST

/* z0 = 0, points at radius r along a fixed direction, r from 1e-12 to 1e6: the
   inverse recovers the radius to relative 1e-14 (a naive quadratic formula
   loses all digits at r = 1e-12), for beta of either sign. */
START_TEST(inverse_radius_accurate_across_scales)
{
  enum { D = 3 };
  const double radii[] = {1e-12, 1e-6, 1e-2, 1.0, 1e2, 1e6}, bs[] = {-3.0, 0.0, 2.0};
  const double dir[D] = {0.48, -0.6, 0.64}; /* unit vector */
  double worst = 0;
  for (size_t kb = 0; kb < 3; kb++) {
    nf_layer *layer = nf_radial_new(D, INV_TOL, NULL);
    double theta[D + 2] = {0};
    theta[D] = 0.5;
    theta[D + 1] = bs[kb];
    for (size_t kr = 0; kr < 6; kr++) {
      double z[D], x[D], z2[D], work[8];
      for (size_t j = 0; j < D; j++) z[j] = radii[kr] * dir[j];
      ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, 1, z, NULL, x, NULL, NULL, work),
                       NF_OK);
      ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, 1, x, NULL, z2, NULL, NULL, work),
                       NF_OK);
      worst = fmax(worst, th_max_abs_diff(D, z, z2) / radii[kr]);
    }
    nf_layer_free(layer);
  }
  ck_assert_double_le(worst, 1e-14);
}
END_TEST

/* At z = z0 both directions map the centre to itself with logdet = +-d log(softplus(b)/alpha),
   and vjp is finite there. */
START_TEST(centre_is_fixed_point)
{
  enum { D = 3 };
  double *theta, g_theta[D + 2];
  nf_layer *layer = random_radial(D, 19, 1.0, 0, &theta);
  double ratio = softplus(theta[D + 1]) / softplus(theta[D]);
  double c[D], out[D], ld[1], work[8], g_out[D] = {1.0, -2.0, 0.5}, g_l = 1.5, g_in[D];
  memcpy(c, theta, sizeof c);
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ld[0] = 0;
    ck_assert_int_eq(nf_layer_apply(layer, theta, (nf_dir)dir, 1, c, NULL, out, ld, NULL, work),
                     NF_OK);
    ck_assert_double_le(th_max_abs_diff(D, out, c), 0.0);
    ck_assert_double_eq_tol(ld[0], (dir == NF_FORWARD ? 1 : -1) * D * log(ratio), 1e-14);
    memset(g_theta, 0, sizeof g_theta);
    ck_assert_int_eq(nf_layer_vjp(layer, theta, (nf_dir)dir, 1, c, NULL, out, g_out, &g_l, g_in,
                                  NULL, g_theta, work), NF_OK);
    for (size_t j = 0; j < D; j++) ck_assert(isfinite(g_in[j]));
    for (size_t k = 0; k < D + 2; k++) ck_assert(isfinite(g_theta[k]));
  }
  free(theta);
  nf_layer_free(layer);
}
END_TEST

START_TEST(null_rng_gives_identity)
{
  enum { D = 3 };
  nf_layer *layer = nf_radial_new(D, INV_TOL, NULL);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(nf_layer_n_params(layer), D + 2);
  ck_assert_uint_eq(nf_layer_ctx_dim(layer), 0);
  th_check_identity(layer, 4, 13, 0.0);
  nf_layer_free(layer);
}
END_TEST

/* rng init: reproducible for a seed, z0 random, a = 0, |b| small. */
START_TEST(rng_init_is_reproducible_near_identity)
{
  enum { D = 4 };
  nf_rng r1, r2;
  nf_rng_seed(&r1, 14);
  nf_rng_seed(&r2, 14);
  nf_layer *a = nf_radial_new(D, INV_TOL, &r1), *b = nf_radial_new(D, INV_TOL, &r2);
  const double *pa = nf_layer_init_params(a);
  ck_assert_int_eq(memcmp(pa, nf_layer_init_params(b), (D + 2) * sizeof(double)), 0);
  double z0n = 0;
  for (size_t j = 0; j < D; j++) z0n += fabs(pa[j]);
  ck_assert(z0n > 0);
  ck_assert_double_eq(pa[D], 0.0);
  ck_assert_double_le(fabs(pa[D + 1]), 0.5);
  nf_layer_free(a);
  nf_layer_free(b);
}
END_TEST

/* A 2-D radial layer with inverse tolerance inv_tol. */
static nf_layer *radial_with_tol(double inv_tol)
{
  return nf_radial_new(2, inv_tol, NULL);
}

START_TEST(bad_arguments)
{
  ck_assert_ptr_null(nf_radial_new(0, INV_TOL, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "dimension"));
  th_check_rejects_nonpositive(radial_with_tol, "nf_radial_new", "inv_tol");

  enum { D = 2 };
  double *theta;
  nf_layer *layer = random_radial(D, 17, 1.0, 0, &theta);
  th_check_bad_calls(layer, theta);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  th_check_param_refused(flow, D + 1, NAN, NF_ENONFINITE);
  nf_flow_free(flow);
  free(theta);
}
END_TEST

/* A radial layer with parameters from rng (takes no context). */
static nf_layer *make_radial(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  (void)ctx_dim;
  return nf_radial_new(dim, INV_TOL, rng);
}

/* In conditional flows (ctx = NULL) and shared by two threads. */
START_TEST(conditional_flows_and_threads)
{
  th_check_family_flows(make_radial, 0.5);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {forward_matches_paper_formula, bijector_checks,
                          inverse_radius_accurate_across_scales, centre_is_fixed_point,
                          null_rng_gives_identity, rng_init_is_reproducible_near_identity,
                          bad_arguments, conditional_flows_and_threads, NULL};
  return th_run_tests("radial", 60, tests);
}
