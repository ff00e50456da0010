/* tests/test_radial.c — radial flow: the paper's formula, inverse round trip
   (also across radii from 1e-12 to 1e6 and at the centre), log-det against a
   finite-difference Jacobian, vjp against finite differences in both
   directions (also with beta near its bound -alpha), initialisation, bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define INV_TOL 1e-13 /* checked but unused: the inverse is closed-form */
#define ROUNDTRIP_TOL 1e-10
#define LOGDET_TOL 1e-6
#define VJP_TOL 1e-6
#define FD_JAC_H 1e-5
#define FD_VJP_H 1e-6

static const size_t dims[] = {1, 2, 5};
#define N_DIMS (sizeof dims / sizeof *dims)

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

/* A radial layer with N(0, scale^2) parameters from `seed`; if constrained,
   b = -20 so that beta = softplus(-20) - alpha is within 3e-9 of its bound -alpha. */
static nf_layer *random_radial(size_t d, uint64_t seed, double scale, int constrained)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_layer *layer = nf_radial_new(d, INV_TOL, NULL);
  ck_assert_ptr_nonnull(layer);
  th_randomize_params(layer, &rng, scale);
  if (constrained) layer->params[d + 1] = -20.0;
  return layer;
}

/* n x d points ~ N(0, scale^2) from `seed` (caller frees). */
static double *random_points(size_t n, size_t d, uint64_t seed, double scale)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *p = malloc(n * d * sizeof *p);
  th_randn(&rng, n * d, scale, p);
  return p;
}

/* Moves each row of p radially so that |p - z0| >= r_min. With beta near -alpha
   the map contracts the ball around z0 to a point (rho(r) ~ r/alpha), and there
   it loses digits by itself; r_min = 0.3 keeps rho >= 0.3/(alpha + 0.3). */
static void keep_off_centre(const nf_layer *layer, size_t n, double *p, double r_min)
{
  size_t d = layer->dim;
  const double *z0 = layer->params;
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
    nf_layer *layer = random_radial(d, 100 + k, 1.0, 0);
    const double *z0 = layer->params;
    double alpha = softplus(layer->params[d]), beta = -alpha + softplus(layer->params[d + 1]);
    double *z = random_points(N, d, 200 + k, 1.0), x[N * 5], ld[N] = {0}, work[8];
    ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, z, NULL, x, ld, work), NF_OK);
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
    nf_layer_free(layer);
  }
  ck_assert_double_le(worst_x, 1e-14);
  ck_assert_double_le(worst_ld, 1e-13);
}
END_TEST

/* Round trip, cancellation of the log-dets and the finite-difference log-det,
   in both directions, for every dimension. */
static void check_bijection(int constrained)
{
  enum { N = 20 };
  for (size_t k = 0; k < N_DIMS; k++) {
    size_t d = dims[k];
    for (uint64_t seed = 1; seed <= 3; seed++) {
      nf_layer *layer = random_radial(d, seed * 10 + k, 1.0, constrained);
      double *z = random_points(N, d, seed * 20 + k, 1.5), cancel;
      if (constrained) keep_off_centre(layer, N, z, 0.3);
      double rt = th_roundtrip_error(layer, N, z, NULL, &cancel);
      ck_assert_msg(rt <= ROUNDTRIP_TOL, "d=%zu: round trip %g", d, rt);
      ck_assert_msg(cancel <= 1e-10, "d=%zu: log-dets cancel to %g", d, cancel);
      double lf = th_logdet_error(layer, NF_FORWARD, N, z, NULL, FD_JAC_H);
      double li = th_logdet_error(layer, NF_INVERSE, N, z, NULL, FD_JAC_H);
      ck_assert_msg(lf <= LOGDET_TOL && li <= LOGDET_TOL, "d=%zu: logdet errors %g %g", d, lf, li);
      free(z);
      nf_layer_free(layer);
    }
  }
}

START_TEST(bijection_random_params)
{
  check_bijection(0);
}
END_TEST

START_TEST(bijection_constraint_active)
{
  check_bijection(1);
}
END_TEST

/* vjp against central differences: input and parameter gradients, both directions. */
static void check_vjp(int constrained)
{
  enum { N = 6 };
  for (size_t k = 0; k < N_DIMS; k++) {
    size_t d = dims[k];
    for (uint64_t seed = 1; seed <= 2; seed++) {
      nf_layer *layer = random_radial(d, seed * 30 + k, 1.0, constrained);
      double *p = random_points(N, d, seed * 40 + k, 1.5);
      if (constrained) keep_off_centre(layer, N, p, 0.3);
      for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
        th_vjp_errors e = th_vjp_check(layer, (nf_dir)dir, N, p, NULL, seed, FD_VJP_H);
        ck_assert_msg(e.in <= VJP_TOL && e.params <= VJP_TOL,
                      "d=%zu dir=%d constrained=%d: vjp errors in %g params %g", d, dir,
                      constrained, e.in, e.params);
      }
      free(p);
      nf_layer_free(layer);
    }
  }
}

START_TEST(vjp_random_params)
{
  check_vjp(0);
}
END_TEST

START_TEST(vjp_constraint_active)
{
  check_vjp(1);
}
END_TEST

/* The parameter gradient is the same whether or not g_in is asked for, and g_logdet = NULL means 0. */
START_TEST(vjp_optional_outputs)
{
  enum { N = 4, D = 3 };
  nf_layer *layer = random_radial(D, 7, 1.0, 0);
  double *p = random_points(N, D, 8, 1.0), out[N * D], g_out[N * D], g_in[N * D], g_in2[N * D];
  double zeros[N] = {0}, work[8], grad1[D + 2], grad2[D + 2];
  nf_rng rng;
  nf_rng_seed(&rng, 9);
  th_randn(&rng, N * D, 1.0, g_out);
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(layer, (nf_dir)dir, N, p, NULL, out, NULL, work), NF_OK);
    memset(layer->grad, 0, sizeof grad1);
    ck_assert_int_eq(nf_layer_vjp(layer, (nf_dir)dir, N, p, NULL, out, g_out, NULL, g_in, NULL, work), NF_OK);
    memcpy(grad1, layer->grad, sizeof grad1);
    memset(layer->grad, 0, sizeof grad1);
    ck_assert_int_eq(nf_layer_vjp(layer, (nf_dir)dir, N, p, NULL, out, g_out, zeros, g_in2, NULL, work), NF_OK);
    ck_assert_double_le(th_max_abs_diff(N * D, g_in, g_in2), 0.0);
    memset(layer->grad, 0, sizeof grad1);
    ck_assert_int_eq(nf_layer_vjp(layer, (nf_dir)dir, N, p, NULL, out, g_out, NULL, NULL, NULL, work), NF_OK);
    memcpy(grad2, layer->grad, sizeof grad2);
    ck_assert_double_le(th_max_abs_diff(D + 2, grad1, grad2), 0.0);
  }
  free(p);
  nf_layer_free(layer);
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
    layer->params[D] = 0.5;
    layer->params[D + 1] = bs[kb];
    for (size_t kr = 0; kr < 6; kr++) {
      double z[D], x[D], z2[D], work[8];
      for (size_t j = 0; j < D; j++) z[j] = radii[kr] * dir[j];
      ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, 1, z, NULL, x, NULL, work), NF_OK);
      ck_assert_int_eq(nf_layer_apply(layer, NF_INVERSE, 1, x, NULL, z2, NULL, work), NF_OK);
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
  nf_layer *layer = random_radial(D, 19, 1.0, 0);
  double ratio = softplus(layer->params[D + 1]) / softplus(layer->params[D]);
  double c[D], out[D], ld[1], work[8], g_out[D] = {1.0, -2.0, 0.5}, g_l = 1.5, g_in[D];
  memcpy(c, layer->params, sizeof c);
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ld[0] = 0;
    ck_assert_int_eq(nf_layer_apply(layer, (nf_dir)dir, 1, c, NULL, out, ld, work), NF_OK);
    ck_assert_double_le(th_max_abs_diff(D, out, c), 0.0);
    ck_assert_double_eq_tol(ld[0], (dir == NF_FORWARD ? 1 : -1) * D * log(ratio), 1e-14);
    memset(layer->grad, 0, (D + 2) * sizeof(double));
    ck_assert_int_eq(nf_layer_vjp(layer, (nf_dir)dir, 1, c, NULL, out, g_out, &g_l, g_in, NULL, work), NF_OK);
    for (size_t j = 0; j < D; j++) ck_assert(isfinite(g_in[j]));
    for (size_t k = 0; k < D + 2; k++) ck_assert(isfinite(layer->grad[k]));
  }
  nf_layer_free(layer);
}
END_TEST

START_TEST(null_rng_gives_identity)
{
  enum { N = 4, D = 3 };
  nf_layer *layer = nf_radial_new(D, INV_TOL, NULL);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(layer->n_params, D + 2);
  ck_assert_uint_eq(layer->ctx_dim, 0);
  double *z = random_points(N, D, 13, 2.0), x[N * D], ld[N] = {0}, work[8];
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(layer, (nf_dir)dir, N, z, NULL, x, ld, work), NF_OK);
    ck_assert_double_le(th_max_abs_diff(N * D, x, z), 0.0);
    for (size_t i = 0; i < N; i++) ck_assert_double_le(fabs(ld[i]), 0.0);
  }
  free(z);
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
  ck_assert_int_eq(memcmp(a->params, b->params, (D + 2) * sizeof(double)), 0);
  double z0n = 0;
  for (size_t j = 0; j < D; j++) z0n += fabs(a->params[j]);
  ck_assert(z0n > 0);
  ck_assert_double_eq(a->params[D], 0.0);
  ck_assert_double_le(fabs(a->params[D + 1]), 0.5);
  nf_layer_free(a);
  nf_layer_free(b);
}
END_TEST

START_TEST(bad_arguments)
{
  ck_assert_ptr_null(nf_radial_new(0, INV_TOL, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "dimension"));
  ck_assert_ptr_null(nf_radial_new(2, 0.0, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "inv_tol"));
  ck_assert_ptr_null(nf_radial_new(2, -1.0, NULL));
  ck_assert_ptr_null(nf_radial_new(2, NAN, NULL));
  ck_assert_ptr_null(nf_radial_new(2, INFINITY, NULL));

  enum { D = 2, N = 2 };
  nf_layer *layer = random_radial(D, 17, 1.0, 0);
  double in[N * D] = {0.1, 0.2, 0.3, 0.4}, out[N * D], ld[N], work[8], g[N * D] = {1, 1, 1, 1};
  for (size_t i = 0; i < N * D; i++) out[i] = 42.0;
  ld[0] = ld[1] = 7.0;
  ck_assert_int_eq(nf_layer_apply(NULL, NF_FORWARD, N, in, NULL, out, ld, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, 0, in, NULL, out, ld, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, NULL, NULL, out, ld, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, in, NULL, NULL, ld, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, in, NULL, out, ld, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_layer_vjp(layer, NF_INVERSE, N, in, NULL, out, NULL, NULL, g, NULL, work), NF_EINVAL);
  in[2] = -INFINITY;
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, in, NULL, out, ld, work), NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 1"));
  in[2] = 0.3;
  layer->params[D + 1] = NAN;
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(layer, (nf_dir)dir, N, in, NULL, out, ld, work), NF_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(nf_errmsg(), "parameter 3"));
    ck_assert_int_eq(nf_layer_vjp(layer, (nf_dir)dir, N, in, NULL, out, g, NULL, g, NULL, work),
                     NF_ENONFINITE);
  }
  for (size_t i = 0; i < N * D; i++) ck_assert_double_eq(out[i], 42.0);
  ck_assert_double_eq(ld[0], 7.0);
  ck_assert_double_eq(ld[1], 7.0);
  nf_layer_free(layer);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("radial");
  TCase *tc = tcase_create("radial");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, forward_matches_paper_formula);
  tcase_add_test(tc, bijection_random_params);
  tcase_add_test(tc, bijection_constraint_active);
  tcase_add_test(tc, vjp_random_params);
  tcase_add_test(tc, vjp_constraint_active);
  tcase_add_test(tc, vjp_optional_outputs);
  tcase_add_test(tc, inverse_radius_accurate_across_scales);
  tcase_add_test(tc, centre_is_fixed_point);
  tcase_add_test(tc, null_rng_gives_identity);
  tcase_add_test(tc, rng_init_is_reproducible_near_identity);
  tcase_add_test(tc, bad_arguments);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
