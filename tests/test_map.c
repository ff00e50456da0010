/* tests/test_map.c — MAP estimates with a flow prior (nflow/map.h): the
   closed form under a Gaussian prior, stationarity and local maximality under
   non-Gaussian and conditional priors, bad input refused with nothing written,
   and the de-noising example's MAP beating the Wiener filter. */
#include "config.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define MAP_DENOISE_NO_MAIN
#include "../examples/map_denoise.c"

#define GD 3  /* the Gaussian prior's dimension */
#define GN 40 /* its rows: blocks of 16, 16 and 8 */

static const double g_mean[GD] = {0.5, -1.0, 2.0}, g_sd[GD] = {0.7, 1.5, 2.0};
static const double g_var[GD] = {0.3, 1.0, 4.0}; /* noise variances */

/* The prior N(g_mean, diag(g_sd^2)) as a flow: std normal base, x = g_sd z + g_mean. */
static nf_flow *gaussian_prior(void)
{
  nf_flow *flow = nf_flow_new(GD, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(GD)), NF_OK);
  double theta[2 * GD];
  for (int t = 0; t < GD; t++) theta[t] = g_mean[t], theta[GD + t] = log(g_sd[t]);
  ck_assert_int_eq(nf_flow_set_params(flow, theta), NF_OK);
  return flow;
}

/* log N(x; m, diag(v)) of one row of dim d. */
static double log_normal(size_t d, const double *x, const double *m, const double *v)
{
  double s = 0;
  for (size_t t = 0; t < d; t++)
    s += -0.5 * (x[t] - m[t]) * (x[t] - m[t]) / v[t] - 0.5 * log(2 * 3.14159265358979323846 * v[t]);
  return s;
}

/* MAP of the GN rows under the Gaussian prior by `method`; asserts every row
   converged and returns max |y - (s^2 d + v m) / (s^2 + v)| (the Wiener filter
   per coordinate); the log posterior must equal J at y to 1e-12 relative, and
   a call with y = data must give the same y. */
static double gaussian_error(nf_map_opts opts, size_t *iterations)
{
  nf_flow *flow = gaussian_prior();
  nf_flow_ws *ws = nf_flow_ws_new(flow, 16);
  double *data = th_random_points(GN, GD, 11, 2.0), y[GN * GD], lp[GN], err = 0;
  memcpy(y, data, sizeof y);
  nf_map_report rep;
  ck_assert_int_eq(nf_map_gaussian_noise(flow, ws, GN, data, g_var, NULL, &opts, y, lp, &rep),
                   NF_OK);
  ck_assert_uint_eq(rep.converged_rows, GN);
  ck_assert(rep.max_grad_norm <= opts.grad_tol);
  ck_assert(rep.iterations >= 1 && rep.iterations <= opts.max_iter);
  *iterations = rep.iterations;
  for (size_t i = 0; i < GN; i++) {
    double var[GD];
    for (int t = 0; t < GD; t++) {
      double s2 = g_sd[t] * g_sd[t], v = g_var[t];
      double want = (s2 * data[i * GD + t] + v * g_mean[t]) / (s2 + v);
      err = fmax(err, fabs(y[i * GD + t] - want));
      var[t] = s2;
    }
    double J = log_normal(GD, data + i * GD, y + i * GD, g_var) +
               log_normal(GD, y + i * GD, g_mean, var);
    ck_assert_msg(fabs(lp[i] - J) <= 1e-12 * fabs(J), "row %zu: log_post %.17g, J %.17g", i,
                  lp[i], J);
  }
  /* y may be data itself: the same estimates, bit for bit */
  ck_assert_int_eq(nf_map_gaussian_noise(flow, ws, GN, data, g_var, NULL, &opts, data, NULL, NULL),
                   NF_OK);
  ck_assert(memcmp(data, y, sizeof y) == 0);
  free(data);
  nf_flow_ws_free(ws);
  nf_flow_free(flow);
  return err;
}

START_TEST(test_gaussian_closed_form)
{
  nf_map_opts o = nf_map_defaults();
  o.grad_tol = 1e-10;
  size_t it;
  double e = gaussian_error(o, &it);
  printf("gaussian prior: L-BFGS max error %.3g in %zu iterations\n", e, it);
  ck_assert_msg(e <= 1e-8, "L-BFGS error %g", e);
  o.method = NF_MAP_ADAM;
  o.lr = 1e-2, o.max_iter = 20000, o.grad_tol = 1e-7;
  e = gaussian_error(o, &it);
  printf("gaussian prior: Adam max error %.3g in %zu iterations\n", e, it);
  ck_assert_msg(e <= 1e-6, "Adam error %g", e);
}
END_TEST

/* J(x) of n rows (log_normal of the data about x plus log p(x | ctx)) and its gradient. */
static void objective(const nf_flow *flow, nf_flow_ws *ws, size_t n, const double *x,
                      const double *data, const double *var, const double *ctx, double *J,
                      double *g)
{
  size_t d = nf_flow_dim(flow);
  ck_assert_int_eq(nf_flow_log_prob_grad_ws(flow, ws, 0, n, x, ctx, J, g, NULL), NF_OK);
  for (size_t i = 0; i < n; i++) {
    J[i] += log_normal(d, data + i * d, x + i * d, var);
    for (size_t t = 0; t < d; t++) g[i * d + t] += (data[i * d + t] - x[i * d + t]) / var[t];
  }
}

/* A 4-D RealNVP (tanh conditioners, context width c) with parameters moved by
   N(0, 0.3^2) off the identity: a smooth non-Gaussian prior. */
static nf_flow *random_prior(size_t c)
{
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  nf_recipe r = nf_recipe_defaults(NF_RECIPE_REALNVP);
  size_t hidden[] = {16};
  r.layers = 4, r.n_hidden = 1, r.hidden = hidden, r.act = NF_ACT_TANH;
  nf_flow *flow = nf_recipe_build(4, c, &r, &rng);
  ck_assert_ptr_nonnull(flow);
  th_perturb_flow(flow, &rng, 0.3);
  return flow;
}

/* Under the random prior (unconditional or with context): every row converges,
   ||grad J|| <= grad_tol recomputed independently, log_post = J, and J at y is
   at least J at 8 random perturbations of sizes 1e-1, 1e-2, 1e-3. */
static void check_stationary(size_t c)
{
  enum { N = 24, DIM = 4 };
  nf_flow *flow = random_prior(c);
  nf_flow_ws *ws = nf_flow_ws_new(flow, N);
  nf_rng rng;
  nf_rng_seed(&rng, 9);
  double data[N * DIM], y[N * DIM], ctx[N * 2], var[DIM] = {0.5, 1.0, 0.2, 2.0};
  double lp[N], J[N], g[N * DIM], xp[N * DIM], Jp[N];
  th_randn(&rng, N * 2, 1.0, ctx);
  ck_assert_int_eq(nf_flow_sample_ws(flow, ws, &rng, N, c ? ctx : NULL, data, NULL), NF_OK);
  for (size_t i = 0; i < N * DIM; i++) y[i] = data[i] += sqrt(var[i % DIM]) * nf_rng_normal(&rng);
  nf_map_opts o = nf_map_defaults();
  o.grad_tol = 1e-8;
  nf_map_report rep;
  ck_assert_int_eq(nf_map_gaussian_noise(flow, ws, N, data, var, c ? ctx : NULL, &o, y, lp, &rep),
                   NF_OK);
  ck_assert_uint_eq(rep.converged_rows, N);
  objective(flow, ws, N, y, data, var, c ? ctx : NULL, J, g);
  for (size_t i = 0; i < N; i++) {
    double gn = sqrt(g[i * DIM] * g[i * DIM] + g[i * DIM + 1] * g[i * DIM + 1] +
                     g[i * DIM + 2] * g[i * DIM + 2] + g[i * DIM + 3] * g[i * DIM + 3]);
    ck_assert_msg(gn <= o.grad_tol, "row %zu: |grad J| = %g", i, gn);
    ck_assert_msg(fabs(lp[i] - J[i]) <= 1e-12 * fabs(J[i]), "row %zu: %g vs %g", i, lp[i], J[i]);
  }
  for (double scale = 1e-1; scale > 1e-4; scale /= 10)
    for (int k = 0; k < 8; k++) {
      for (size_t i = 0; i < N * DIM; i++) xp[i] = y[i] + scale * nf_rng_normal(&rng);
      objective(flow, ws, N, xp, data, var, c ? ctx : NULL, Jp, g);
      for (size_t i = 0; i < N; i++)
        ck_assert_msg(Jp[i] <= J[i], "row %zu, scale %g: J %.17g < perturbed %.17g", i, scale,
                      J[i], Jp[i]);
    }
  nf_flow_ws_free(ws);
  nf_flow_free(flow);
}

START_TEST(test_nongaussian_stationary) { check_stationary(0); }
END_TEST

START_TEST(test_conditional_stationary) { check_stationary(2); }
END_TEST

/* Asserts status want and a message naming `what`, with y, log_post and report untouched. */
static void expect_refused(nf_status got, nf_status want, const char *what, const double *y,
                           const double *y0, size_t ny, const double *lp,
                           const nf_map_report *rep)
{
  ck_assert_msg(got == want, "%s: status %s, want %s (%s)", what, nf_status_str(got),
                nf_status_str(want), nf_errmsg());
  ck_assert_msg(strstr(nf_errmsg(), what) != NULL, "message '%s' lacks '%s'", nf_errmsg(), what);
  ck_assert(memcmp(y, y0, ny * sizeof *y) == 0);
  ck_assert(lp[0] == 7.0 && lp[1] == 7.0 && lp[2] == 7.0);
  ck_assert(rep->iterations == 99 && rep->converged_rows == 99 && rep->max_grad_norm == 7.0);
}

START_TEST(test_bad_input)
{
  nf_flow *flow = gaussian_prior(), *other = gaussian_prior(), *cond = random_prior(2);
  nf_flow_ws *ws = nf_flow_ws_new(flow, 4), *ws_other = nf_flow_ws_new(other, 4);
  nf_flow_ws *ws_cond = nf_flow_ws_new(cond, 4);
  /* 3 rows of dimension 3 (flow) or 4 (cond), y compared over 12 entries */
  double data[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, y[3 * 4], y0[3 * 4];
  double lp[3] = {7, 7, 7}, var[4] = {1, 1, 1, 1}, ctx[3 * 2] = {0};
  for (size_t i = 0; i < 3 * 4; i++) y[i] = y0[i] = data[i] + 0.5;
  nf_map_report rep = {99, 99, 7.0};
  nf_map_opts d = nf_map_defaults(), o;
#define MAP(fl, w, n, dt, v, c, op) nf_map_gaussian_noise(fl, w, n, dt, v, c, op, y, lp, &rep)
#define REFUSED(call, want, what) expect_refused(call, want, what, y, y0, 3 * 4, lp, &rep)
  REFUSED(MAP(NULL, ws, 3, data, var, NULL, &d), NF_EINVAL, "prior");
  REFUSED(MAP(flow, NULL, 3, data, var, NULL, &d), NF_EINVAL, "workspace");
  REFUSED(MAP(flow, ws, 3, NULL, var, NULL, &d), NF_EINVAL, "data");
  REFUSED(MAP(flow, ws, 3, data, NULL, NULL, &d), NF_EINVAL, "noise_var");
  REFUSED(nf_map_gaussian_noise(flow, ws, 3, data, var, NULL, &d, NULL, lp, &rep), NF_EINVAL,
          "NULL y");
  REFUSED(MAP(flow, ws, 0, data, var, NULL, &d), NF_EINVAL, "n is 0");
  REFUSED(MAP(flow, ws, 3, data, var, ctx, &d), NF_EINVAL, "ctx must be NULL");
  REFUSED(MAP(cond, ws_cond, 3, data, var, NULL, &d), NF_EINVAL,
          "ctx must be given");
  double bad_var[] = {0.0, -1.0, NAN, INFINITY};
  for (int k = 0; k < 4; k++) {
    double v[GD] = {1, bad_var[k], 1};
    REFUSED(MAP(flow, ws, 3, data, v, NULL, &d), NF_EINVAL, "noise_var[1]");
  }
  data[2 * GD + 1] = NAN;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &d), NF_ENONFINITE, "data row 2, column 1");
  data[2 * GD + 1] = 8;
  y[GD] = y0[GD] = INFINITY;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &d), NF_ENONFINITE, "y row 1, column 0");
  y[GD] = y0[GD] = 4.5;
  ck_assert_int_eq(MAP(cond, ws_cond, 3, data, var, ctx, &d), NF_OK); /* the good call */
  memcpy(y, y0, sizeof y);
  lp[0] = lp[1] = lp[2] = 7.0;
  rep = (nf_map_report){99, 99, 7.0};
  ctx[3] = NAN;
  REFUSED(MAP(cond, ws_cond, 3, data, var, ctx, &d), NF_ENONFINITE, "ctx row 1, column 1");
  o = d, o.method = (nf_map_method)7;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &o), NF_EINVAL, "method");
  o = d, o.max_iter = 0;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &o), NF_EINVAL, "max_iter");
  o = d, o.grad_tol = -1;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &o), NF_EINVAL, "grad_tol");
  o = d, o.grad_tol = NAN;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &o), NF_EINVAL, "grad_tol");
  o = d, o.memory = 0;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &o), NF_EINVAL, "memory");
  o = d, o.memory = 101;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &o), NF_EINVAL, "memory");
  o = d, o.method = NF_MAP_ADAM, o.lr = 0;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &o), NF_EINVAL, "lr");
  o = d, o.method = NF_MAP_ADAM, o.lr = NAN;
  REFUSED(MAP(flow, ws, 3, data, var, NULL, &o), NF_EINVAL, "lr");
  REFUSED(MAP(flow, ws_other, 3, data, var, NULL, &d), NF_ESTATE, "workspace");
#undef MAP
#undef REFUSED
  nf_flow_ws_free(ws);
  nf_flow_ws_free(ws_other);
  nf_flow_ws_free(ws_cond);
  nf_flow_free(flow);
  nf_flow_free(other);
  nf_flow_free(cond);
}
END_TEST

/* examples/map_denoise.c at a small size (seed 1, 4000 training fields, 300
   steps, 200 held-out fields): the flow-prior MAP beats the Wiener filter,
   which beats the noisy data. */
START_TEST(test_denoise_beats_wiener)
{
  double m[3];
  nf_map_report rep;
  ck_assert_int_eq(map_denoise(1, 4000, 300, 200, m, &rep), 0);
  printf("denoise: mse_noisy %.5f mse_wiener %.5f mse_map %.5f (%zu/200 converged)\n", m[0],
         m[1], m[2], rep.converged_rows);
  ck_assert(m[1] < m[0]);
  ck_assert_msg(m[2] < m[1], "MAP %g, Wiener %g", m[2], m[1]);
}
END_TEST

#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
void openblas_set_num_threads(int n);
#endif

int main(void)
{
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
  /* small batches: one BLAS thread (the CLI's default), so that idle threads spinning on a
     loaded machine do not stretch the de-noising run */
  openblas_set_num_threads(1);
#endif
  const TTest *tests[] = {test_gaussian_closed_form, test_nongaussian_stationary,
                          test_conditional_stationary, test_bad_input, test_denoise_beats_wiener,
                          NULL};
  return th_run_tests("map", 0, tests);
}
