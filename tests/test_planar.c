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

static const size_t dims[] = {1, 2, 5};
#define N_DIMS (sizeof dims / sizeof *dims)

/* Sets u so that w.u = wu (moves u along w only). */
static void set_wu(const nf_layer *layer, double *theta, double wu)
{
  size_t d = nf_layer_dim(layer);
  double *u = theta, *w = theta + d, cur = 0, ww = 0;
  for (size_t j = 0; j < d; j++) {
    cur += w[j] * u[j];
    ww += w[j] * w[j];
  }
  for (size_t j = 0; j < d; j++) u[j] += (wu - cur) * w[j] / ww;
}

/* A planar layer and in *theta (caller frees) N(0, scale^2) parameters from
   `seed`; if constrained, w.u = -40 so that w.u_hat = -1 + softplus(-40) (the
   constraint is active). */
static nf_layer *random_planar(size_t d, uint64_t seed, double scale, int constrained,
                               double **theta)
{
  nf_layer *layer = nf_planar_new(d, INV_TOL, NULL);
  *theta = th_random_theta(layer, seed, scale);
  if (constrained) set_wu(layer, *theta, -40.0);
  return layer;
}

/* The paper's map, written out independently: u_hat, then z + u_hat tanh(w.z + b). */
static void reference_forward(const nf_layer *layer, const double *theta, const double *z,
                              double *x, double *logdet, double *w_dot_uhat)
{
  size_t d = nf_layer_dim(layer);
  const double *u = theta, *w = theta + d;
  double b = theta[2 * d], wu = 0, ww = 0, wz = 0;
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
    double *theta;
    nf_layer *layer = random_planar(d, 100 + k, 1.0, 0, &theta);
    double *z = th_random_points(N, d, 200 + k, 1.0), x[N * 5], ld[N] = {0}, work[64];
    ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N, z, NULL, x, ld, NULL, work),
                     NF_OK);
    for (size_t i = 0; i < N; i++) {
      double xr[5], ldr, s;
      reference_forward(layer, theta, z + i * d, xr, &ldr, &s);
      ck_assert(s >= -1.0);
      worst_x = fmax(worst_x, th_max_abs_diff(d, x + i * d, xr));
      worst_ld = fmax(worst_ld, fabs(ld[i] - ldr));
    }
    free(z);
    free(theta);
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
static void keep_off_hyperplane(const nf_layer *layer, const double *theta, size_t n, double *z,
                                double a_min)
{
  size_t d = nf_layer_dim(layer);
  const double *w = theta + d;
  double b = theta[2 * d], ww = 0;
  for (size_t j = 0; j < d; j++) ww += w[j] * w[j];
  for (size_t i = 0; i < n; i++) {
    double a = b;
    for (size_t j = 0; j < d; j++) a += w[j] * z[i * d + j];
    if (fabs(a) >= a_min) continue;
    double shift = copysign(a_min, a) - a;
    for (size_t j = 0; j < d; j++) z[i * d + j] += shift * w[j] / ww;
  }
}

/* A case of the bijector checks: a planar layer with N(0, 1) parameters from seed,
   the constraint active if `constrained`, and the rows kept off the hyperplane
   where its det J nearly vanishes. */
static nf_layer *planar_case(size_t d, uint64_t seed, int constrained, size_t n, double *z,
                             double **theta)
{
  nf_layer *layer = random_planar(d, seed, 1.0, constrained, theta);
  if (constrained) keep_off_hyperplane(layer, *theta, n, z, 0.1);
  return layer;
}

/* Every bijector check (th_check_bijector_family), with random parameters and
   with the constraint active. */
START_TEST(bijector_checks)
{
  th_check_bijector_family("planar", planar_case, 0, 1.0);
  th_check_bijector_family("planar, constraint active", planar_case, 1, 1.0);
}
END_TEST

/* w = 0: u_hat = u, the map is the translation by u tanh(b), log-det 0, vjp finite. */
START_TEST(zero_w_is_translation)
{
  enum { N = 5, D = 3 };
  double *theta, g_theta[2 * D + 1] = {0};
  nf_layer *layer = random_planar(D, 11, 1.0, 0, &theta);
  memset(theta + D, 0, D * sizeof(double));
  double *z = th_random_points(N, D, 12, 1.0), x[N * D], ld[N] = {0}, work[64];
  double shift = tanh(theta[2 * D]);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N, z, NULL, x, ld, NULL, work), NF_OK);
  for (size_t i = 0; i < N; i++) {
    ck_assert_double_eq(ld[i], 0.0);
    for (size_t j = 0; j < D; j++)
      ck_assert_double_eq_tol(x[i * D + j], z[i * D + j] + theta[j] * shift, 1e-15);
  }
  double cancel, rt = th_roundtrip_error(layer, theta, N, z, NULL, &cancel);
  ck_assert_double_le(rt, 1e-15);
  ck_assert_double_le(cancel, 0.0);
  double g_out[N * D], g_in[N * D];
  for (size_t i = 0; i < N * D; i++) g_out[i] = 1.0;
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(layer, theta, (nf_dir)dir, N, z, NULL, x, NULL, NULL, work),
                     NF_OK);
    ck_assert_int_eq(nf_layer_vjp(layer, theta, (nf_dir)dir, N, z, NULL, x, g_out, ld, g_in, NULL,
                                  g_theta, work), NF_OK);
  }
  for (size_t k = 0; k < 2 * D + 1; k++) ck_assert(isfinite(g_theta[k]));
  for (size_t i = 0; i < N * D; i++) ck_assert(isfinite(g_in[i]));
  free(z);
  free(theta);
  nf_layer_free(layer);
}
END_TEST

START_TEST(null_rng_gives_identity)
{
  enum { D = 3 };
  nf_layer *layer = nf_planar_new(D, INV_TOL, NULL);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(nf_layer_n_params(layer), 2 * D + 1);
  ck_assert_uint_eq(nf_layer_ctx_dim(layer), 0);
  th_check_identity(layer, 4, 13, 1e-15);
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
  const double *pa = nf_layer_init_params(a);
  ck_assert_int_eq(memcmp(pa, nf_layer_init_params(b), (2 * D + 1) * sizeof(double)), 0);
  double ww = 0;
  for (size_t j = 0; j < D; j++) ww += pa[D + j] * pa[D + j];
  ck_assert(ww > 0.1 && ww < 10.0);
  double *z = th_random_points(1, D, 15, 1.0), x[D], work[64];
  ck_assert_int_eq(nf_layer_apply(a, pa, NF_FORWARD, 1, z, NULL, x, NULL, NULL, work), NF_OK);
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
  double *theta;
  nf_layer *layer = random_planar(D, 16, 1.0, 0, &theta);
  set_wu(layer, theta, 3.0);
  double *w = theta + D, b = theta[2 * D], ww = w[0] * w[0] + w[1] * w[1];
  double x[N * D] = {-b * w[0] / ww, -b * w[1] / ww, -b * w[0] / ww + w[1], -b * w[1] / ww - w[0], 2.0, -1.5};
  double z[N * D], ld[N], work[64];
  for (size_t i = 0; i < N * D; i++) z[i] = 42.0;
  for (size_t i = 0; i < N; i++) ld[i] = 7.0;
  ck_assert_int_eq(nf_planar_set_max_iter(layer, 1), NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, N, x, NULL, z, ld, NULL, work),
                   NF_ENOCONV);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "row 2"));
  for (size_t i = 0; i < N * D; i++) ck_assert_double_eq(z[i], 42.0);
  for (size_t i = 0; i < N; i++) ck_assert_double_eq(ld[i], 7.0);
  ck_assert_int_eq(nf_planar_set_max_iter(layer, NF_PLANAR_MAX_ITER), NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, N, x, NULL, z, ld, NULL, work), NF_OK);
  nf_layer_free(layer);
  free(theta);
}
END_TEST

/* A 2-D planar layer with inverse tolerance inv_tol. */
static nf_layer *planar_with_tol(double inv_tol)
{
  return nf_planar_new(2, inv_tol, NULL);
}

START_TEST(bad_arguments)
{
  ck_assert_ptr_null(nf_planar_new(0, INV_TOL, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "dimension"));
  ck_assert_ptr_null(nf_planar_new(2, -1e-12, NULL));
  th_check_rejects_nonpositive(planar_with_tol, "nf_planar_new", "inv_tol");
  ck_assert_int_eq(nf_planar_set_max_iter(NULL, 5), NF_EINVAL);

  enum { D = 2 };
  double *theta;
  nf_layer *layer = random_planar(D, 17, 1.0, 0, &theta);
  nf_layer *radial = nf_radial_new(D, INV_TOL, NULL);
  ck_assert_int_eq(nf_planar_set_max_iter(radial, 5), NF_EINVAL);
  ck_assert_int_eq(nf_planar_set_max_iter(layer, 0), NF_EINVAL);
  th_check_bad_calls(layer, theta);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, layer), NF_OK);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  th_check_param_refused(flow, D, INFINITY, NF_ENONFINITE);
  nf_flow_free(flow);
  nf_layer_free(radial);
  nf_layer_free(NULL);
  free(theta);
}
END_TEST

/* A planar layer with parameters from rng (takes no context). */
static nf_layer *make_planar(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  (void)ctx_dim;
  return nf_planar_new(dim, INV_TOL, rng);
}

/* In conditional flows (ctx = NULL) and shared by two threads. */
START_TEST(conditional_flows_and_threads)
{
  th_check_family_flows(make_planar, 0.5);
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
  double theta[6 * 5 + 6 * 4];
  size_t np = 0;
  for (int k = 0; k < 3; k++) {
    nf_layer *p = nf_planar_new(2, INV_TOL, &rng), *r = nf_radial_new(2, INV_TOL, &rng);
    th_randomize_params(p, &rng, 0.5, theta + np);
    np += nf_layer_n_params(p);
    th_randomize_params(r, &rng, 0.5, theta + np);
    np += nf_layer_n_params(r);
    ck_assert_int_eq(nf_flow_push(flow, p), NF_OK);
    ck_assert_int_eq(nf_flow_push(flow, r), NF_OK);
  }
  ck_assert_uint_eq(nf_flow_n_params(flow), np);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  th_check_grid_mass("planar + radial chain", flow, 10.0, 500, 1e-4);
  nf_flow_free(flow);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {forward_matches_paper_formula, bijector_checks, zero_w_is_translation,
                          null_rng_gives_identity, rng_init_is_reproducible_near_identity,
                          inverse_reports_no_convergence, bad_arguments,
                          chain_density_integrates_to_one, conditional_flows_and_threads, NULL};
  return th_run_tests("planar", 60, tests);
}
