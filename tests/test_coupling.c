/* tests/test_coupling.c — additive and affine coupling layers: round trip,
   log-det against a finite-difference Jacobian, vjp against central
   differences (input, context, parameters; both directions), log-det
   cancellation, the soft clamp, identity start, masks, bad options and inputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define N_ROWS 6
#define BOUND 2.0
#define RT_TOL 1e-10
#define VJP_STEP 1e-5
#define CANCEL_TOL 1e-10

static const size_t hidden2[2] = {8, 6};

/* A coupling of the given kind on R^d with context width c; mask_kind 0 = half,
   1 = alternate, with the given parity; activation act. Aborts the test on failure. */
static nf_layer *make_coupling(nf_coupling_kind kind, size_t d, size_t c, int mask_kind,
                               int parity, nf_activation act)
{
  unsigned char mask[8];
  (mask_kind ? nf_coupling_mask_alternate : nf_coupling_mask_half)(d, parity, mask);
  nf_coupling_opts o = {kind, mask, 2, hidden2, act, BOUND};
  nf_layer *layer = nf_coupling_new(d, c, &o, NULL);
  ck_assert_msg(layer != NULL, "nf_coupling_new failed: %s", nf_errmsg());
  return layer;
}

/* Every numerical check of one configuration, with parameters ~ N(0, 0.3^2). */
static void check_config(nf_coupling_kind kind, size_t d, size_t c, int mask_kind, int parity,
                         nf_activation act, uint64_t seed)
{
  nf_layer *layer = make_coupling(kind, d, c, mask_kind, parity, act);
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  double *theta = malloc(nf_layer_n_params(layer) * sizeof *theta);
  th_randomize_params(layer, &rng, 0.3, theta);
  double z[N_ROWS * 8], ctx[N_ROWS * 3];
  th_randn(&rng, N_ROWS * d, 1.0, z);
  th_randn(&rng, N_ROWS * c, 1.0, ctx);
  char what[96];
  snprintf(what, sizeof what, "coupling kind %d, mask %d/%d, act %d", (int)kind, mask_kind,
           parity, (int)act);
  th_tolerances tol = th_default_tolerances();
  tol.h_vjp = VJP_STEP;
  th_check_bijector(what, layer, theta, N_ROWS, z, c ? ctx : NULL, &tol);
  nf_layer_free(layer);
  free(theta);
}

/* Both kinds, both masks and parities, d = 2 and 5, context width 0 and 3. */
START_TEST(test_numerics)
{
  const nf_activation acts[3] = {NF_ACT_TANH, NF_ACT_ELU, NF_ACT_SOFTPLUS};
  const size_t dims[2] = {2, 5}, ctxs[2] = {0, 3};
  uint64_t seed = 100;
  for (int kind = 0; kind < 2; kind++)
    for (int mk = 0; mk < 2; mk++)
      for (int par = 0; par < 2; par++)
        for (int di = 0; di < 2; di++)
          for (int ci = 0; ci < 2; ci++, seed++)
            check_config((nf_coupling_kind)kind, dims[di], ctxs[ci], mk, par, acts[seed % 3],
                         seed);
}
END_TEST

/* With an rng the layer starts as the exact identity, but its parameter
   gradient is not zero (the hidden layers are drawn). */
START_TEST(test_identity_start)
{
  unsigned char mask[4];
  nf_coupling_mask_alternate(4, 0, mask);
  nf_coupling_opts o = {NF_COUPLING_AFFINE, mask, 2, hidden2, NF_ACT_RELU, 3.0};
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  nf_layer *layer = nf_coupling_new(4, 2, &o, &rng);
  ck_assert_ptr_nonnull(layer);
  double z[N_ROWS * 4], ctx[N_ROWS * 2], x[N_ROWS * 4], ld[N_ROWS] = {0}, g[N_ROWS * 4];
  double *work = malloc(nf_layer_work_size(layer, N_ROWS) * sizeof *work);
  const double *theta = nf_layer_init_params(layer);
  size_t p = nf_layer_n_params(layer);
  double *g_theta = calloc(p, sizeof *g_theta);
  th_randn(&rng, N_ROWS * 4, 1.0, z);
  th_randn(&rng, N_ROWS * 2, 1.0, ctx);
  th_randn(&rng, N_ROWS * 4, 1.0, g);
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(layer, theta, (nf_dir)dir, N_ROWS, z, ctx, x, ld, NULL, work),
                     NF_OK);
    ck_assert_double_eq(th_max_abs_diff(N_ROWS * 4, x, z), 0.0);
    for (size_t i = 0; i < N_ROWS; i++) ck_assert_double_eq(ld[i], 0.0);
  }
  ck_assert_int_eq(nf_layer_vjp(layer, theta, NF_INVERSE, N_ROWS, z, ctx, x, g, NULL, NULL, NULL,
                                g_theta, work), NF_OK);
  double gmax = 0, pmax = 0;
  for (size_t k = 0; k < p; k++) {
    gmax = fmax(gmax, fabs(g_theta[k]));
    pmax = fmax(pmax, fabs(theta[k]));
  }
  ck_assert_double_gt(gmax, 1e-3);
  ck_assert_double_gt(pmax, 1e-3);
  free(work);
  free(g_theta);
  nf_layer_free(layer);
}
END_TEST

/* Huge raw log-scales saturate at +-B: |logdet| <= B db, and inverse still works. */
START_TEST(test_soft_clamp)
{
  nf_layer *layer = make_coupling(NF_COUPLING_AFFINE, 5, 0, 0, 0, NF_ACT_TANH);
  nf_rng rng;
  nf_rng_seed(&rng, 9);
  size_t p = nf_layer_n_params(layer);
  double *theta = malloc(p * sizeof *theta);
  th_randomize_params(layer, &rng, 0.3, theta);
  const size_t db = 3, m = 2 * db; /* half mask on R^5: 2 pass, 3 transformed */
  double *out_bias = theta + p - m;  /* (s_raw_j, t_j) pairs */
  for (int sign = -1; sign <= 1; sign += 2) {
    for (size_t j = 0; j < db; j++) out_bias[2 * j] = sign * 1e8;
    double z[N_ROWS * 5], x[N_ROWS * 5], ld[N_ROWS] = {0}, cancel;
    double *work = malloc(nf_layer_work_size(layer, N_ROWS) * sizeof *work);
    th_randn(&rng, N_ROWS * 5, 1.0, z);
    ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N_ROWS, z, NULL, x, ld, NULL, work),
                     NF_OK);
    for (size_t i = 0; i < N_ROWS; i++) {
      ck_assert_double_le(fabs(ld[i]), BOUND * db);
      ck_assert_double_ge(fabs(ld[i]), BOUND * db * (1 - 1e-12));
    }
    ck_assert_double_le(th_roundtrip_error(layer, theta, N_ROWS, z, NULL, &cancel), RT_TOL);
    ck_assert_double_le(cancel, CANCEL_TOL);
    free(work);
  }
  nf_layer_free(layer);
  free(theta);
}
END_TEST

/* vjp ADDS into g_ctx and the parameter gradient, WRITES g_in, and its
   parameter gradient does not depend on which cotangents are wanted. */
START_TEST(test_vjp_accumulates)
{
  nf_layer *layer = make_coupling(NF_COUPLING_AFFINE, 5, 3, 1, 1, NF_ACT_TANH);
  nf_rng rng;
  nf_rng_seed(&rng, 4);
  double *theta = malloc(nf_layer_n_params(layer) * sizeof *theta);
  th_randomize_params(layer, &rng, 0.3, theta);
  double z[N_ROWS * 5], ctx[N_ROWS * 3];
  th_randn(&rng, N_ROWS * 5, 1.0, z);
  th_randn(&rng, N_ROWS * 3, 1.0, ctx);
  th_check_vjp_accumulates(layer, theta, N_ROWS, z, ctx);
  nf_layer_free(layer);
  free(theta);
}
END_TEST

START_TEST(test_masks)
{
  unsigned char m[5];
  const unsigned char half0[5] = {1, 1, 0, 0, 0}, half1[5] = {0, 0, 1, 1, 1};
  const unsigned char alt0[5] = {1, 0, 1, 0, 1}, alt1[5] = {0, 1, 0, 1, 0};
  nf_coupling_mask_half(5, 0, m);
  ck_assert_mem_eq(m, half0, 5);
  nf_coupling_mask_half(5, 1, m);
  ck_assert_mem_eq(m, half1, 5);
  nf_coupling_mask_alternate(5, 0, m);
  ck_assert_mem_eq(m, alt0, 5);
  nf_coupling_mask_alternate(5, 1, m);
  ck_assert_mem_eq(m, alt1, 5);
  nf_coupling_mask_half(5, 0, NULL);
  /* the passing coordinates are copied exactly, whatever the parameters */
  nf_layer *layer = make_coupling(NF_COUPLING_ADDITIVE, 5, 0, 1, 0, NF_ACT_TANH);
  nf_rng rng;
  nf_rng_seed(&rng, 2);
  double *theta = malloc(nf_layer_n_params(layer) * sizeof *theta);
  th_randomize_params(layer, &rng, 1.0, theta);
  double z[N_ROWS * 5], x[N_ROWS * 5], ld[N_ROWS] = {0};
  double *work = malloc(nf_layer_work_size(layer, N_ROWS) * sizeof *work);
  th_randn(&rng, N_ROWS * 5, 1.0, z);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, N_ROWS, z, NULL, x, ld, NULL, work),
                   NF_OK);
  for (size_t i = 0; i < N_ROWS; i++) {
    ck_assert_double_eq(ld[i], 0.0);
    for (size_t j = 0; j < 5; j++)
      if (alt0[j]) ck_assert_double_eq(x[i * 5 + j], z[i * 5 + j]);
      else ck_assert_double_ne(x[i * 5 + j], z[i * 5 + j]);
  }
  free(work);
  free(theta);
  nf_layer_free(layer);
}
END_TEST

/* NULL from nf_coupling_new with a message naming it. */
static void expect_bad(size_t dim, const nf_coupling_opts *o, const char *why)
{
  nf_layer *layer = nf_coupling_new(dim, 0, o, NULL);
  ck_assert_msg(layer == NULL, "accepted: %s", why);
  ck_assert_msg(strstr(nf_errmsg(), "nf_coupling_new") != NULL, "%s: message '%s'", why,
                nf_errmsg());
}

START_TEST(test_bad_options)
{
  unsigned char ones[3] = {1, 1, 1}, zeros[3] = {0, 0, 0}, two[3] = {1, 2, 0}, ok[3] = {1, 0, 0};
  const size_t zero_width[2] = {4, 0};
  nf_coupling_opts o = {NF_COUPLING_AFFINE, ok, 2, hidden2, NF_ACT_TANH, 3.0}, b;
  expect_bad(3, NULL, "NULL options");
  expect_bad(0, &o, "dim 0");
  b = o; b.mask = NULL; expect_bad(3, &b, "NULL mask");
  b = o; b.mask = ones; expect_bad(3, &b, "all-ones mask");
  b = o; b.mask = zeros; expect_bad(3, &b, "all-zeros mask");
  b = o; b.mask = two; expect_bad(3, &b, "mask entry 2");
  b = o; b.kind = (nf_coupling_kind)7; expect_bad(3, &b, "unknown kind");
  b = o; b.scale_bound = 0; expect_bad(3, &b, "scale_bound 0");
  b = o; b.scale_bound = -1; expect_bad(3, &b, "scale_bound -1");
  b = o; b.scale_bound = NAN; expect_bad(3, &b, "scale_bound NaN");
  b = o; b.scale_bound = INFINITY; expect_bad(3, &b, "scale_bound Inf");
  b = o; b.hidden = NULL; expect_bad(3, &b, "NULL hidden widths");
  b = o; b.hidden = zero_width; expect_bad(3, &b, "zero hidden width");
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "width 0"));
  b = o; b.act = (nf_activation)42; expect_bad(3, &b, "unknown activation");
  expect_bad(1, &o, "dim 1 (no room for both halves)");
  /* additive ignores scale_bound; zero hidden layers is a single affine conditioner */
  b = o; b.kind = NF_COUPLING_ADDITIVE; b.scale_bound = 0; b.n_hidden = 0; b.hidden = NULL;
  nf_layer *layer = nf_coupling_new(3, 0, &b, NULL);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(nf_layer_n_params(layer), (1 + 1) * 2);
  nf_layer_free(layer);
}
END_TEST

START_TEST(test_bad_inputs)
{
  nf_layer *layer = make_coupling(NF_COUPLING_AFFINE, 2, 3, 0, 0, NF_ACT_TANH);
  double *theta = th_random_theta(layer, 3, 0.3);
  th_check_bad_calls(layer, theta);
  nf_layer_free(layer);
  free(theta);
}
END_TEST

/* Couplings of either kind for the flow-level checks: alternate masks with
   the parity of the rng's next draw, context width ctx_dim, parameters from rng. */
static nf_layer *make_kind(nf_coupling_kind kind, size_t dim, size_t ctx_dim, nf_rng *rng)
{
  unsigned char mask[8];
  nf_coupling_mask_alternate(dim, (int)(nf_rng_u64(rng) & 1), mask);
  nf_coupling_opts o = {kind, mask, 2, hidden2, NF_ACT_TANH, BOUND};
  return nf_coupling_new(dim, ctx_dim, &o, rng);
}

static nf_layer *make_additive(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_kind(NF_COUPLING_ADDITIVE, dim, ctx_dim, rng);
}

static nf_layer *make_affine_coupling(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_kind(NF_COUPLING_AFFINE, dim, ctx_dim, rng);
}

/* Both kinds in conditional flows (log p depends on ctx; NF_EDIM for another
   context width) and shared by two threads (with a context). */
START_TEST(test_conditional_flows_and_threads)
{
  th_check_family_flows(make_additive, 0.3);
  th_check_family_flows(make_affine_coupling, 0.3);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_numerics, test_identity_start, test_soft_clamp,
                          test_vjp_accumulates, test_masks, test_bad_options, test_bad_inputs,
                          test_conditional_flows_and_threads, NULL};
  return th_run_tests("coupling", 30, tests);
}
