/* tests/test_planar.c — planar flow: the paper's formula, inverse round trip,
   log-det against a finite-difference Jacobian, vjp against finite differences
   in both directions (also with the invertibility constraint active), w = 0,
   initialisation, non-convergence, bad input, and a 2-D planar + radial chain
   whose density integrates to 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define INV_TOL 1e-13
#define ROUNDTRIP_TOL 1e-10
#define LOGDET_TOL 1e-6
#define VJP_TOL 1e-6
#define FD_JAC_H 1e-5
#define FD_VJP_H 1e-6

static const size_t dims[] = {1, 2, 5};
#define N_DIMS (sizeof dims / sizeof *dims)

/* Sets u so that w.u = wu (moves u along w only). */
static void set_wu(nf_layer *layer, double wu)
{
  size_t d = layer->dim;
  double *u = layer->params, *w = layer->params + d, cur = 0, ww = 0;
  for (size_t j = 0; j < d; j++) {
    cur += w[j] * u[j];
    ww += w[j] * w[j];
  }
  for (size_t j = 0; j < d; j++) u[j] += (wu - cur) * w[j] / ww;
}

/* A planar layer with N(0, scale^2) parameters from `seed`; if constrained,
   w.u = -40 so that w.u_hat = -1 + softplus(-40) (the constraint is active). */
static nf_layer *random_planar(size_t d, uint64_t seed, double scale, int constrained)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_layer *layer = nf_planar_new(d, INV_TOL, NULL);
  ck_assert_ptr_nonnull(layer);
  th_randomize_params(layer, &rng, scale);
  if (constrained) set_wu(layer, -40.0);
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

/* The paper's map, written out independently: u_hat, then z + u_hat tanh(w.z + b). */
static void reference_forward(const nf_layer *layer, const double *z, double *x,
                              double *logdet, double *w_dot_uhat)
{
  size_t d = layer->dim;
  const double *u = layer->params, *w = layer->params + d;
  double b = layer->params[2 * d], wu = 0, ww = 0, wz = 0;
  for (size_t j = 0; j < d; j++) {
    wu += w[j] * u[j];
    ww += w[j] * w[j];
    wz += w[j] * z[j];
  }
  double m = -1.0 + log1p(exp(wu)), uhat[8], s = 0;
  for (size_t j = 0; j < d; j++) {
    uhat[j] = u[j] + (m - wu) * w[j] / ww;
    s += w[j] * uhat[j];
  }
  double t = tanh(wz + b);
  for (size_t j = 0; j < d; j++) x[j] = z[j] + uhat[j] * t;
  *logdet = log(fabs(1.0 + (1.0 - t * t) * s));
  *w_dot_uhat = s;
}

START_TEST(forward_matches_paper_formula)
{
  enum { N = 10 };
  double worst_x = 0, worst_ld = 0;
  for (size_t k = 0; k < N_DIMS; k++) {
    size_t d = dims[k];
    nf_layer *layer = random_planar(d, 100 + k, 1.0, 0);
    double *z = random_points(N, d, 200 + k, 1.0), x[N * 5], ld[N] = {0}, work[64];
    ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, z, NULL, x, ld, work), NF_OK);
    for (size_t i = 0; i < N; i++) {
      double xr[5], ldr, s;
      reference_forward(layer, z + i * d, xr, &ldr, &s);
      ck_assert(s >= -1.0);
      worst_x = fmax(worst_x, th_max_abs_diff(d, x + i * d, xr));
      worst_ld = fmax(worst_ld, fabs(ld[i] - ldr));
    }
    free(z);
    nf_layer_free(layer);
  }
  ck_assert_double_le(worst_x, 1e-13);
  ck_assert_double_le(worst_ld, 1e-13);
}
END_TEST

/* Moves each row of z along w so that |w.z + b| >= a_min. With the constraint
   active, det J = tanh^2(a) + softplus(w.u) sech^2(a) ~ a^2 vanishes on the
   hyperplane a = 0, where the map itself loses digits (x carries z only to
   about eps/det J); a_min = 0.1 keeps det J >= 0.01. */
static void keep_off_hyperplane(const nf_layer *layer, size_t n, double *z, double a_min)
{
  size_t d = layer->dim;
  const double *w = layer->params + d;
  double b = layer->params[2 * d], ww = 0;
  for (size_t j = 0; j < d; j++) ww += w[j] * w[j];
  for (size_t i = 0; i < n; i++) {
    double a = b;
    for (size_t j = 0; j < d; j++) a += w[j] * z[i * d + j];
    if (fabs(a) >= a_min) continue;
    double shift = copysign(a_min, a) - a;
    for (size_t j = 0; j < d; j++) z[i * d + j] += shift * w[j] / ww;
  }
}

/* Round trip, cancellation of the log-dets and the finite-difference log-det,
   in both directions, for every dimension. */
static void check_bijection(int constrained)
{
  enum { N = 20 };
  for (size_t k = 0; k < N_DIMS; k++) {
    size_t d = dims[k];
    for (uint64_t seed = 1; seed <= 3; seed++) {
      nf_layer *layer = random_planar(d, seed * 10 + k, 1.0, constrained);
      double *z = random_points(N, d, seed * 20 + k, 1.0), cancel;
      if (constrained) keep_off_hyperplane(layer, N, z, 0.1);
      double rt = th_roundtrip_error(layer, N, z, NULL, &cancel);
      ck_assert_msg(rt <= ROUNDTRIP_TOL, "d=%zu seed=%llu: round trip %g", d,
                    (unsigned long long)seed, rt);
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
      nf_layer *layer = random_planar(d, seed * 30 + k, 1.0, constrained);
      double *p = random_points(N, d, seed * 40 + k, 1.0);
      if (constrained) keep_off_hyperplane(layer, N, p, 0.1);
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
  nf_layer *layer = random_planar(D, 7, 1.0, 0);
  double *p = random_points(N, D, 8, 1.0), out[N * D], g_out[N * D], g_in[N * D];
  double zeros[N] = {0}, work[64], grad1[2 * D + 1], grad2[2 * D + 1], g_in2[N * D];
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
    ck_assert_double_le(th_max_abs_diff(2 * D + 1, grad1, grad2), 0.0);
  }
  free(p);
  nf_layer_free(layer);
}
END_TEST

/* w = 0: u_hat = u, the map is the translation by u tanh(b), log-det 0, vjp finite. */
START_TEST(zero_w_is_translation)
{
  enum { N = 5, D = 3 };
  nf_layer *layer = random_planar(D, 11, 1.0, 0);
  memset(layer->params + D, 0, D * sizeof(double));
  double *z = random_points(N, D, 12, 1.0), x[N * D], ld[N] = {0}, work[64];
  double shift = tanh(layer->params[2 * D]);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, z, NULL, x, ld, work), NF_OK);
  for (size_t i = 0; i < N; i++) {
    ck_assert_double_eq(ld[i], 0.0);
    for (size_t j = 0; j < D; j++)
      ck_assert_double_eq_tol(x[i * D + j], z[i * D + j] + layer->params[j] * shift, 1e-15);
  }
  double cancel, rt = th_roundtrip_error(layer, N, z, NULL, &cancel);
  ck_assert_double_le(rt, 1e-15);
  ck_assert_double_le(cancel, 0.0);
  double g_out[N * D], g_in[N * D];
  for (size_t i = 0; i < N * D; i++) g_out[i] = 1.0;
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(layer, (nf_dir)dir, N, z, NULL, x, NULL, work), NF_OK);
    ck_assert_int_eq(nf_layer_vjp(layer, (nf_dir)dir, N, z, NULL, x, g_out, ld, g_in, NULL, work), NF_OK);
  }
  for (size_t k = 0; k < 2 * D + 1; k++) ck_assert(isfinite(layer->grad[k]));
  for (size_t i = 0; i < N * D; i++) ck_assert(isfinite(g_in[i]));
  free(z);
  nf_layer_free(layer);
}
END_TEST

START_TEST(null_rng_gives_identity)
{
  enum { N = 4, D = 3 };
  nf_layer *layer = nf_planar_new(D, INV_TOL, NULL);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(layer->n_params, 2 * D + 1);
  ck_assert_uint_eq(layer->ctx_dim, 0);
  double *z = random_points(N, D, 13, 2.0), x[N * D], ld[N] = {0}, work[64];
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, z, NULL, x, ld, work), NF_OK);
  ck_assert_double_le(th_max_abs_diff(N * D, x, z), 1e-15);
  for (size_t i = 0; i < N; i++) ck_assert_double_le(fabs(ld[i]), 1e-15);
  free(z);
  nf_layer_free(layer);
}
END_TEST

/* rng init: reproducible for a seed, |w|^2 near 1, and a perturbation of the identity. */
START_TEST(rng_init_is_reproducible_near_identity)
{
  enum { D = 6 };
  nf_rng r1, r2;
  nf_rng_seed(&r1, 14);
  nf_rng_seed(&r2, 14);
  nf_layer *a = nf_planar_new(D, INV_TOL, &r1), *b = nf_planar_new(D, INV_TOL, &r2);
  ck_assert_int_eq(memcmp(a->params, b->params, (2 * D + 1) * sizeof(double)), 0);
  double ww = 0;
  for (size_t j = 0; j < D; j++) ww += a->params[D + j] * a->params[D + j];
  ck_assert(ww > 0.1 && ww < 10.0);
  double *z = random_points(1, D, 15, 1.0), x[D], work[64];
  ck_assert_int_eq(nf_layer_apply(a, NF_FORWARD, 1, z, NULL, x, NULL, work), NF_OK);
  ck_assert_double_le(th_max_abs_diff(D, x, z), 1.0);
  free(z);
  nf_layer_free(a);
  nf_layer_free(b);
}
END_TEST

/* With an iteration cap of 1 the inverse fails on the first row that needs more:
   rows 0 and 1 lie on the hyperplane w.x + b = 0 (root a = 0 at once), row 2 does not. */
START_TEST(inverse_reports_no_convergence)
{
  enum { N = 3, D = 2 };
  nf_layer *layer = random_planar(D, 16, 1.0, 0);
  set_wu(layer, 3.0);
  double *w = layer->params + D, b = layer->params[2 * D], ww = w[0] * w[0] + w[1] * w[1];
  double x[N * D] = {-b * w[0] / ww, -b * w[1] / ww, -b * w[0] / ww + w[1], -b * w[1] / ww - w[0], 2.0, -1.5};
  double z[N * D], ld[N], work[64];
  for (size_t i = 0; i < N * D; i++) z[i] = 42.0;
  for (size_t i = 0; i < N; i++) ld[i] = 7.0;
  ck_assert_int_eq(nf_planar_set_max_iter(layer, 1), NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, NF_INVERSE, N, x, NULL, z, ld, work), NF_ENOCONV);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 2"));
  for (size_t i = 0; i < N * D; i++) ck_assert_double_eq(z[i], 42.0);
  for (size_t i = 0; i < N; i++) ck_assert_double_eq(ld[i], 7.0);
  ck_assert_int_eq(nf_planar_set_max_iter(layer, NF_PLANAR_MAX_ITER), NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, NF_INVERSE, N, x, NULL, z, ld, work), NF_OK);
  nf_layer_free(layer);
}
END_TEST

START_TEST(bad_arguments)
{
  ck_assert_ptr_null(nf_planar_new(0, INV_TOL, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "dimension"));
  ck_assert_ptr_null(nf_planar_new(2, 0.0, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "inv_tol"));
  ck_assert_ptr_null(nf_planar_new(2, -1e-12, NULL));
  ck_assert_ptr_null(nf_planar_new(2, NAN, NULL));
  ck_assert_ptr_null(nf_planar_new(2, INFINITY, NULL));
  ck_assert_int_eq(nf_planar_set_max_iter(NULL, 5), NF_EINVAL);

  enum { D = 2, N = 2 };
  nf_layer *layer = random_planar(D, 17, 1.0, 0);
  nf_layer *radial = nf_radial_new(D, INV_TOL, NULL);
  ck_assert_int_eq(nf_planar_set_max_iter(radial, 5), NF_EINVAL);
  ck_assert_int_eq(nf_planar_set_max_iter(layer, 0), NF_EINVAL);
  double in[N * D] = {0.1, 0.2, 0.3, 0.4}, out[N * D], ld[N], work[64], g[N * D] = {1, 1, 1, 1};
  for (size_t i = 0; i < N * D; i++) out[i] = 42.0;
  ld[0] = ld[1] = 7.0;
  ck_assert_int_eq(nf_layer_apply(NULL, NF_FORWARD, N, in, NULL, out, ld, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, 0, in, NULL, out, ld, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, NULL, NULL, out, ld, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, in, NULL, NULL, ld, work), NF_EINVAL);
  ck_assert_int_eq(nf_layer_apply(layer, NF_FORWARD, N, in, NULL, out, ld, NULL), NF_EINVAL);
  ck_assert_int_eq(nf_layer_vjp(layer, NF_INVERSE, N, in, NULL, out, NULL, NULL, g, NULL, work), NF_EINVAL);
  in[3] = NAN;
  ck_assert_int_eq(nf_layer_apply(layer, NF_INVERSE, N, in, NULL, out, ld, work), NF_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 1"));
  in[3] = 0.4;
  layer->params[D] = INFINITY;
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(layer, (nf_dir)dir, N, in, NULL, out, ld, work), NF_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(nf_errmsg(), "parameter 2"));
    ck_assert_int_eq(nf_layer_vjp(layer, (nf_dir)dir, N, in, NULL, out, g, NULL, g, NULL, work),
                     NF_ENONFINITE);
  }
  for (size_t i = 0; i < N * D; i++) ck_assert_double_eq(out[i], 42.0);
  ck_assert_double_eq(ld[0], 7.0);
  ck_assert_double_eq(ld[1], 7.0);
  nf_layer_free(layer);
  nf_layer_free(radial);
  nf_layer_free(NULL);
}
END_TEST

/* A 2-D flow of three planar and three radial layers (N(0, 0.5^2) parameters,
   seed 18): its density integrates to 1 on [-10, 10]^2 (midpoint rule, 500 x 500;
   the error is 1e-4 at 125 x 125, 1.4e-6 here). Larger parameters (scale 1) give
   ridges of width ~1e-3 where a planar layer has w.u ~ -3.4, which no such grid resolves. */
START_TEST(chain_density_integrates_to_one)
{
  nf_rng rng;
  nf_rng_seed(&rng, 18);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_ptr_nonnull(flow);
  for (int k = 0; k < 3; k++) {
    nf_layer *p = nf_planar_new(2, INV_TOL, &rng), *r = nf_radial_new(2, INV_TOL, &rng);
    th_randomize_params(p, &rng, 0.5);
    th_randomize_params(r, &rng, 0.5);
    ck_assert_int_eq(nf_flow_push(flow, p), NF_OK);
    ck_assert_int_eq(nf_flow_push(flow, r), NF_OK);
  }
  double mass = th_grid_mass(flow, 10.0, 500);
  ck_assert_msg(fabs(mass - 1.0) <= 1e-4, "mass %.8f", mass);
  nf_flow_free(flow);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("planar");
  TCase *tc = tcase_create("planar");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, forward_matches_paper_formula);
  tcase_add_test(tc, bijection_random_params);
  tcase_add_test(tc, bijection_constraint_active);
  tcase_add_test(tc, vjp_random_params);
  tcase_add_test(tc, vjp_constraint_active);
  tcase_add_test(tc, vjp_optional_outputs);
  tcase_add_test(tc, zero_w_is_translation);
  tcase_add_test(tc, null_rng_gives_identity);
  tcase_add_test(tc, rng_init_is_reproducible_near_identity);
  tcase_add_test(tc, inverse_reports_no_convergence);
  tcase_add_test(tc, bad_arguments);
  tcase_add_test(tc, chain_density_integrates_to_one);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
