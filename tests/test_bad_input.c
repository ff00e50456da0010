/* tests/test_bad_input.c — every bad input gets a status: NaN through tanh,
   radial at huge radii, overflowing sizes, absurd recipes, and NULL, zero,
   overflowing and non-finite arguments to the public functions, each
   refused with its status and a message naming the argument, the outputs
   left untouched. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "internal.h" /* nf_tanh (static inline); nf_affine_type for nf_layer_create */

#define HUGE_N (1ull << 62)

/* Asserts status st == want and that nf_errmsg() contains each of the
   NULL-terminated key words. */
static void expect_fail(nf_status st, nf_status want, const char *const *words)
{
  ck_assert_msg(st == want, "status %s, wanted %s (%s)", nf_status_str(st), nf_status_str(want),
                nf_errmsg());
  for (size_t i = 0; words && words[i]; i++)
    ck_assert_msg(strstr(nf_errmsg(), words[i]), "message '%s' lacks '%s'", nf_errmsg(),
                  words[i]);
}
#define EXPECT(st, want, ...) expect_fail((st), (want), (const char *const[]){__VA_ARGS__, NULL})
/* A constructor returned NULL with status want and the key words. */
#define EXPECT_NULL(p, want, ...)                                                     \
  do {                                                                                \
    ck_assert_msg((p) == NULL, "constructor accepted a bad argument");                \
    expect_fail(nf_last_status(), (want), (const char *const[]){__VA_ARGS__, NULL}); \
  } while (0)

/* Asserts that v[0..n) all still hold the sentinel. */
static void expect_untouched(size_t n, const double *v, double sentinel)
{
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(v[i] == sentinel || (isnan(sentinel) && isnan(v[i])),
                  "output %zu was written (%g)", i, v[i]);
}

/* Distance in units in the last place between two finite doubles of equal sign. */
static double ulp_diff(double a, double b)
{
  if (a == b) return 0;
  int64_t ia, ib;
  memcpy(&ia, &a, sizeof ia);
  memcpy(&ib, &b, sizeof ib);
  return fabs((double)(ia - ib));
}

/* nf_tanh: NaN -> NaN (was 1), +-Inf -> +-1, within 4 ulp of libm's tanh on 10^6 points. */
START_TEST(tanh_propagates_nan)
{
  ck_assert(isnan(nf_tanh(NAN)));
  ck_assert(isnan(nf_tanh(-NAN)));
  ck_assert(nf_tanh(INFINITY) == 1.0);
  ck_assert(nf_tanh(-INFINITY) == -1.0);
  ck_assert(nf_tanh(0.0) == 0.0);
  double worst = 0;
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  for (int i = 0; i < 1000000; i++) {
    /* half uniform on [-25, 25], half log-uniform magnitudes 1e-300 .. 1e2 */
    double x = i % 2 ? 50.0 * nf_rng_uniform(&rng) - 25.0
                     : (nf_rng_uniform(&rng) < 0.5 ? -1 : 1) *
                           pow(10.0, -300.0 + 302.0 * nf_rng_uniform(&rng));
    double u = ulp_diff(nf_tanh(x), tanh(x));
    if (u > worst) worst = u;
  }
  ck_assert_msg(worst <= 4.0, "nf_tanh is %g ulp off libm", worst);
}
END_TEST

/* One NaN pre-activation through a tanh MLP comes out NaN, not a finite wrong value. */
START_TEST(tanh_mlp_nan_propagates)
{
  size_t hidden[] = {4};
  nf_mlp *mlp = nf_mlp_new(2, 1, hidden, 1, NF_ACT_TANH);
  ck_assert_ptr_nonnull(mlp);
  double *theta = calloc(nf_mlp_n_params(mlp), sizeof *theta);
  double *work = calloc(nf_mlp_work_size(mlp, 1) + 1, sizeof *work);
  nf_rng rng;
  nf_rng_seed(&rng, 2);
  nf_mlp_init(mlp, &rng, 1.0, theta);
  double in[2] = {NAN, 0.5}, out = 0;
  nf_mlp_forward(mlp, theta, 1, in, &out, work);
  ck_assert_msg(isnan(out), "tanh MLP turned NaN into %g", out);
  free(theta);
  free(work);
  nf_mlp_free(mlp);
}
END_TEST

/* Radial at |x| = 1e200: the scaled norm keeps r, the log-det finite and the round trip exact. */
START_TEST(radial_huge_radius)
{
  enum { D = 3 };
  nf_rng rng;
  nf_rng_seed(&rng, 3);
  nf_layer *layer = nf_radial_new(D, 1e-12, &rng);
  ck_assert_ptr_nonnull(layer);
  const double *theta = nf_layer_init_params(layer);
  double work[2 * D + 2], z[D] = {1e200, -6e199, 3e199}, x[D], back[D];
  double ld_f = 0, ld_i = 0;
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, 1, z, NULL, x, &ld_f, NULL, work), NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, 1, x, NULL, back, &ld_i, NULL, work), NF_OK);
  ck_assert(isfinite(ld_f) && isfinite(ld_i));
  ck_assert(fabs(ld_f + ld_i) < 1e-12);
  for (int j = 0; j < D; j++) {
    ck_assert(isfinite(x[j]));
    ck_assert_msg(fabs(back[j] - z[j]) <= 1e-14 * fabs(z[j]), "z[%d] %g came back %g", j, z[j], back[j]);
  }
  /* tiny radii too: squares of 1e-200 would underflow */
  double zs[D] = {theta[0] + 1e-200, theta[1] - 2e-200, theta[2]}, xs[D], bs[D];
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, 1, zs, NULL, xs, NULL, NULL, work), NF_OK);
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, 1, xs, NULL, bs, NULL, NULL, work), NF_OK);
  for (int j = 0; j < D; j++) ck_assert(fabs(bs[j] - zs[j]) <= 1e-14 * fabs(zs[j]) + 1e-300);
  /* vjp at the huge radius stays finite */
  double g_out[D] = {1, 1, 1}, g_in[D], g_ld = 1, g_theta[D + 2] = {0};
  ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, 1, z, NULL, x, NULL, NULL, work), NF_OK);
  ck_assert_int_eq(nf_layer_vjp(layer, theta, NF_FORWARD, 1, z, NULL, x, g_out, &g_ld, g_in, NULL,
                                g_theta, work), NF_OK);
  for (int j = 0; j < D; j++) ck_assert(isfinite(g_in[j]));
  for (int j = 0; j < D + 2; j++) ck_assert(isfinite(g_theta[j]));
  nf_layer_free(layer);
}
END_TEST


/* Absurd widths: every constructor refuses with "overflows" before reading
   the caller's arrays or allocating. */
START_TEST(sizes_overflow)
{
  static const size_t widths[] = {HUGE_N, SIZE_MAX, SIZE_MAX / 2 + 1};
  nf_rng rng;
  nf_rng_seed(&rng, 4);
  size_t small_perm[2] = {1, 0}, hidden[2] = {8, 8};
  unsigned char mask[2] = {1, 0};
  for (size_t k = 0; k < sizeof widths / sizeof *widths; k++) {
    size_t w = widths[k];
    EXPECT_NULL(nf_affine_new(w), NF_EINVAL, "nf_affine_new", "overflows");
    EXPECT_NULL(nf_linear_lu_new(w, NULL, NF_DIAG_EXP, &rng), NF_EINVAL, "nf_linear_lu_new", "overflows");
    EXPECT_NULL(nf_planar_new(w, 1e-12, &rng), NF_EINVAL, "nf_planar_new", "overflows");
    EXPECT_NULL(nf_radial_new(w, 1e-12, &rng), NF_EINVAL, "nf_radial_new", "overflows");
    EXPECT_NULL(nf_permute_new(w, small_perm), NF_EINVAL, "nf_permute_new", "overflows");
    EXPECT_NULL(nf_reverse_new(w), NF_EINVAL, "overflows");
    nf_coupling_opts co = {nf_transformer_spec_default(NF_TRANSFORMER_AFFINE), mask, 2, hidden, NF_ACT_RELU, NF_PRECISION_DOUBLE};
    EXPECT_NULL(nf_coupling_new(w, 0, &co, &rng), NF_EINVAL, "nf_coupling_new", "overflows");
    size_t wide[2] = {w, w};
    co.hidden = wide;
    EXPECT_NULL(nf_coupling_new(2, 0, &co, &rng), NF_EINVAL, "nf_coupling_new", "overflows");
    EXPECT_NULL(nf_coupling_new(2, w, &(nf_coupling_opts){nf_transformer_spec_default(NF_TRANSFORMER_AFFINE), mask, 2,
                                                         hidden, NF_ACT_RELU, NF_PRECISION_DOUBLE}, &rng),
                NF_EINVAL, "nf_coupling_new", "overflows");
    EXPECT_NULL(nf_mlp_new(w, 2, hidden, 1, NF_ACT_TANH), NF_EINVAL, "nf_mlp_new", "overflows");
    EXPECT_NULL(nf_mlp_new(2, 2, wide, 1, NF_ACT_TANH), NF_EINVAL, "nf_mlp_new", "overflows");
    EXPECT_NULL(nf_mlp_new(2, 0, NULL, w, NF_ACT_TANH), NF_EINVAL, "nf_mlp_new", "overflows");
    EXPECT_NULL(nf_odenet_new(w, 0, 2, hidden, NF_ODENET_CONCATSQUASH, NF_ODENET_TANH),
                NF_EINVAL, "nf_odenet_new", "overflows");
    EXPECT_NULL(nf_odenet_new(2, 0, 2, wide, NF_ODENET_CONCATSQUASH, NF_ODENET_TANH),
                NF_EINVAL, "nf_odenet_new", "overflows");
    EXPECT_NULL(nf_odenet_new(2, w, 2, hidden, NF_ODENET_CONCAT, NF_ODENET_TANH),
                NF_EINVAL, "nf_odenet_new", "overflows");
    EXPECT_NULL(nf_dataset_new(w, 3), NF_EINVAL, "nf_dataset_new", "overflows");
  }
  /* a mask or perm array of a small flow is never read past its end */
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(2)), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, nf_linear_lu_new(2, NULL, NF_DIAG_EXP, &rng)), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, nf_planar_new(2, 1e-12, &rng)), NF_OK);
  EXPECT_NULL(nf_flow_ws_new(flow, SIZE_MAX / 2), NF_EINVAL, "nf_flow_ws_new", "overflows");
  EXPECT_NULL(nf_flow_ws_new(flow, SIZE_MAX / 16), NF_EINVAL, "nf_flow_ws_new", "overflows");
  EXPECT(nf_flow_reserve(flow, SIZE_MAX), NF_EINVAL, "overflows");
  for (size_t k = 0; k < nf_flow_n_layers(flow); k++) {
    const nf_layer *layer = nf_flow_layer(flow, k);
    ck_assert_msg(nf_layer_work_size(layer, SIZE_MAX) == 0 ||
                  nf_layer_work_size(layer, SIZE_MAX) == nf_layer_work_size(layer, 1),
                  "layer %zu: work size of SIZE_MAX rows wrapped", k);
    if (nf_layer_work_size(layer, SIZE_MAX) == 0)
      EXPECT_NULL(nf_layer_work_new(layer, SIZE_MAX), NF_EINVAL, "nf_layer_work_new", "overflows");
  }
  double x[2] = {0.5, 0.25}, logp = 7.0;
  EXPECT(nf_flow_log_prob(flow, SIZE_MAX, x, NULL, &logp), NF_EINVAL, "nf_flow_log_prob", "overflows");
  ck_assert(logp == 7.0);
  nf_flow_free(flow);
  /* the MLP's work size saturates instead of wrapping */
  nf_mlp *mlp = nf_mlp_new(2, 2, hidden, 1, NF_ACT_TANH);
  ck_assert(nf_mlp_work_size(mlp, SIZE_MAX) == SIZE_MAX);
  nf_mlp_free(mlp);
}
END_TEST

/* Recipes estimate their training memory before allocating: 10^9 layers
   refuse at once, a caller's max_memory is honoured, and the estimate bounds
   the built flow's parameters x 40 bytes (exactly, for even dimensions). */
START_TEST(recipe_memory_refused_before_allocating)
{
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  for (int kind = NF_RECIPE_REALNVP; kind <= NF_RECIPE_RADIAL; kind++) {
    nf_recipe r = nf_recipe_defaults((nf_recipe_kind)kind);
    ck_assert(r.max_memory == 0);
    for (size_t dim = 2; dim <= 5; dim += 3) {
      nf_flow *flow = nf_recipe_build(dim, 0, &r, &rng);
      ck_assert_ptr_nonnull(flow);
      size_t est = nf_recipe_memory(dim, 0, &r), real = nf_flow_n_params(flow) * 40;
      ck_assert_msg(est >= real && (dim % 2 || est == real), "%s on R^%zu: estimate %zu, real %zu",
                    nf_recipe_name(r.kind), dim, est, real);
      nf_flow_free(flow);
      r.max_memory = est - 1; /* one byte short */
      EXPECT_NULL(nf_recipe_build(dim, 0, &r, &rng), NF_ENOMEM, "nf_recipe_build",
                  nf_recipe_name(r.kind), "GB", "max_memory");
      r.max_memory = 0;
    }
    r.layers = 1000000000;
    EXPECT_NULL(nf_recipe_build(4, 0, &r, &rng), NF_ENOMEM, "nf_recipe_build", "1000000000 layers",
                "GB", "physical memory");
    r.layers = SIZE_MAX;
    ck_assert(nf_recipe_memory(4, 0, &r) == SIZE_MAX);
    EXPECT_NULL(nf_recipe_build(4, 0, &r, &rng), NF_ENOMEM, "nf_recipe_build", "GB");
  }
  nf_recipe r = nf_recipe_defaults(NF_RECIPE_REALNVP);
  size_t wide[2] = {SIZE_MAX / 4, 2};
  r.hidden = wide;
  ck_assert(nf_recipe_memory(4, 0, &r) == SIZE_MAX);
  EXPECT_NULL(nf_recipe_build(4, 0, &r, &rng), NF_ENOMEM, "nf_recipe_build", "GB");
  r.hidden = NULL;
  ck_assert(nf_recipe_memory(4, 0, &r) == 0);
  EXPECT_NULL(nf_recipe_build(4, 0, &r, &rng), NF_EINVAL, "nf_recipe_build", "hidden");
  ck_assert(nf_recipe_memory(4, 0, NULL) == 0);
  ck_assert(nf_recipe_memory(0, 0, &r) == 0);
  r = nf_recipe_defaults(NF_RECIPE_REALNVP);
  EXPECT_NULL(nf_recipe_build(0, 0, &r, &rng), NF_EINVAL, "nf_recipe_build", "dimension is 0");
  EXPECT_NULL(nf_recipe_build(HUGE_N, 0, &r, &rng), NF_EINVAL, "nf_recipe_build", "overflows");
  EXPECT_NULL(nf_recipe_build(4, 0, NULL, &rng), NF_EINVAL, "nf_recipe_build", "NULL");
  EXPECT_NULL(nf_recipe_build(4, 0, &r, NULL), NF_EINVAL, "nf_recipe_build", "NULL");
}
END_TEST

/* The flow calls: NULLs, n = 0, a NaN deep in a chunked batch (row 5000 named,
   logp untouched), a NaN context; nll_grad zeroes the gradient on bad input. */
START_TEST(flow_calls_refuse_bad_input)
{
  enum { N = 6000, D = 2 };
  nf_rng rng;
  nf_rng_seed(&rng, 6);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_DIAG_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(D)), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, nf_linear_lu_new(D, NULL, NF_DIAG_EXP, &rng)), NF_OK);
  double *x = th_random_points(N, D, 7, 1.0), *logp = malloc(N * sizeof *logp), nll = -3.0;
  for (size_t i = 0; i < N; i++) logp[i] = -1.0;
  x[5000 * D + 1] = NAN;
  EXPECT(nf_flow_log_prob(flow, N, x, NULL, logp), NF_ENONFINITE, "nf_flow_log_prob", "row 5000",
         "column 1");
  expect_untouched(N, logp, -1.0);
  EXPECT(nf_flow_nll(flow, N, x, NULL, &nll), NF_ENONFINITE, "row 5000");
  ck_assert(nll == -3.0);
  double *grad = nf_flow_grad(flow);
  size_t np = nf_flow_n_params(flow);
  for (size_t p = 0; p < np; p++) grad[p] = 9.0;
  EXPECT(nf_flow_nll_grad(flow, 5001, x, NULL, &nll), NF_ENONFINITE, "nf_flow_nll_grad", "row 5000");
  expect_untouched(np, grad, 0.0);
  ck_assert(nll == -3.0);
  for (size_t p = 0; p < np; p++) grad[p] = 9.0;
  EXPECT(nf_flow_nll_grad(flow, 0, x, NULL, &nll), NF_EINVAL, "n is 0");
  expect_untouched(np, grad, 0.0);
  x[5000 * D + 1] = 0.5;
  x[1] = INFINITY;
  EXPECT(nf_flow_transform(flow, NF_INVERSE, 4, x, NULL, logp + 10, logp), NF_ENONFINITE, "row 0");
  expect_untouched(N, logp, -1.0);
  x[1] = 0.5;
  EXPECT(nf_flow_log_prob(NULL, 4, x, NULL, logp), NF_EINVAL, "NULL");
  EXPECT(nf_flow_log_prob(flow, 4, NULL, NULL, logp), NF_EINVAL, "NULL");
  EXPECT(nf_flow_log_prob(flow, 4, x, NULL, NULL), NF_EINVAL, "logp is NULL");
  EXPECT(nf_flow_log_prob(flow, 0, x, NULL, logp), NF_EINVAL, "n is 0");
  EXPECT(nf_flow_sample(flow, NULL, 4, NULL, x, logp), NF_EINVAL, "rng is NULL");
  EXPECT(nf_flow_sample(flow, &rng, 4, NULL, NULL, logp), NF_EINVAL, "NULL");
  EXPECT(nf_flow_transform(flow, (nf_dir)7, 4, x, NULL, logp + 10, NULL), NF_EINVAL, "direction 7");
  EXPECT(nf_flow_transform(flow, NF_FORWARD, 4, x, NULL, x, NULL), NF_EINVAL, "aliases");
  EXPECT(nf_flow_log_prob_grad(flow, 4, x, NULL, logp, NULL, NULL), NF_EINVAL, "g_x is NULL");
  EXPECT(nf_flow_log_prob_vjp_ws(flow, NULL, 0, 4, x, NULL, NULL, logp, NULL, NULL, NULL),
         NF_EINVAL, "g_logp is NULL");
  EXPECT(nf_flow_reserve(NULL, 4), NF_EINVAL, "NULL");
  EXPECT(nf_flow_reserve(flow, 0), NF_EINVAL, "0");
  EXPECT_NULL(nf_flow_ws_new(NULL, 4), NF_EINVAL, "nf_flow_ws_new", "NULL");
  EXPECT_NULL(nf_flow_ws_new(flow, 0), NF_EINVAL, "nf_flow_ws_new", "0");
  EXPECT_NULL(nf_flow_new(0, 0, NF_BASE_STD_NORMAL), NF_EINVAL, "nf_flow_new", "0");
  EXPECT_NULL(nf_flow_new(2, 0, (nf_base)9), NF_EINVAL, "nf_flow_new", "base");
  EXPECT(nf_flow_push(NULL, nf_affine_new(2)), NF_EINVAL, "NULL"); /* the layer is freed */
  EXPECT(nf_flow_push(flow, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_flow_push(flow, nf_affine_new(3)), NF_EDIM, "nf_flow_push");
  EXPECT(nf_flow_set_params(NULL, x), NF_EINVAL, "NULL");
  EXPECT(nf_flow_set_params(flow, NULL), NF_EINVAL, "NULL");
  ck_assert(nf_flow_dim(NULL) == 0 && nf_flow_n_params(NULL) == 0 && nf_flow_layer(flow, 99) == NULL);
  nf_flow_free(flow);
  free(x);
  free(logp);
}
END_TEST

/* nf_flow_set_params with NaN, Inf and -800 log-scales for affine, linear_lu
   and the diag_normal base: NF_ENONFINITE / NF_EDOMAIN naming layer and index,
   theta unchanged. */
START_TEST(set_params_refuses_bad_log_scales)
{
  enum { D = 2 };
  nf_rng rng;
  nf_rng_seed(&rng, 8);
  nf_flow *flow = nf_flow_new(D, 0, NF_BASE_DIAG_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(D)), NF_OK);
  ck_assert_int_eq(nf_flow_push(flow, nf_linear_lu_new(D, NULL, NF_DIAG_EXP, &rng)), NF_OK);
  size_t np = nf_flow_n_params(flow);
  double *theta = malloc(np * sizeof *theta), *before = malloc(np * sizeof *before);
  memcpy(before, nf_flow_params(flow), np * sizeof *before);
  /* log_sigma[1] of the base; the affine's log-scale a[1] (layer 0: shift then
     log-scale); the LU diagonal W[1][1] of layer 1 */
  size_t off0 = nf_flow_param_offset(flow, 0), off1 = nf_flow_param_offset(flow, 1);
  struct { size_t k; const char *who; } cases[] = {
    {D + 1, "base"}, {off0 + D + 1, "layer 0"}, {off1 + D + D * D - 1, "layer 1"}};
  const double bad[] = {NAN, INFINITY, -800.0};
  const nf_status want[] = {NF_ENONFINITE, NF_ENONFINITE, NF_EDOMAIN};
  for (size_t c = 0; c < 3; c++)
    for (size_t b = 0; b < 3; b++) {
      memcpy(theta, before, np * sizeof *theta);
      theta[cases[c].k] = bad[b];
      EXPECT(nf_flow_set_params(flow, theta), want[b], cases[c].who, "parameter");
      ck_assert(memcmp(nf_flow_params(flow), before, np * sizeof *before) == 0);
    }
  free(theta);
  free(before);
  nf_flow_free(flow);
}
END_TEST

/* A layer type without apply or name, dim 0, NULL layers at the entry points. */
START_TEST(layer_interface_refuses_bad_input)
{
  static const nf_layer_type no_apply = {.name = "broken"};
  EXPECT_NULL(nf_layer_create(NULL, 2, 0, 0, NULL), NF_EINVAL, "nf_layer_create", "NULL");
  EXPECT_NULL(nf_layer_create(&no_apply, 2, 0, 0, NULL), NF_EINVAL, "nf_layer_create", "apply");
  EXPECT_NULL(nf_layer_create(&nf_affine_type, 0, 0, 0, NULL), NF_EINVAL, "nf_layer_create", "dimension 0");
  EXPECT_NULL(nf_layer_create(&nf_affine_type, 2, 0, SIZE_MAX, NULL), NF_EINVAL, "nf_layer_create", "overflows");
  double in[2] = {0, 0}, out[2] = {5, 5}, work[4];
  EXPECT(nf_layer_apply(NULL, NULL, NF_FORWARD, 1, in, NULL, out, NULL, NULL, work), NF_EINVAL, "layer is NULL");
  expect_untouched(2, out, 5.0);
  EXPECT(nf_layer_check_params(NULL, in), NF_EINVAL, "NULL");
  EXPECT_NULL(nf_layer_work_new(NULL, 4), NF_EINVAL, "nf_layer_work_new", "NULL");
  EXPECT(nf_layer_register(NULL), NF_EINVAL, "nf_layer_register");
  ck_assert_ptr_null(nf_layer_type_find(NULL));
  ck_assert_str_eq(nf_layer_name(NULL), "");
  nf_layer_free(NULL);
  nf_layer_work_free(NULL, 1, NULL);
}
END_TEST

/* nf_rng_* on NULL: no-ops returning 0, outputs untouched. */
START_TEST(rng_null_is_a_no_op)
{
  double v[3] = {4, 4, 4};
  size_t idx[3] = {0, 1, 2};
  nf_rng_seed(NULL, 1);
  nf_rng_jump(NULL);
  ck_assert(nf_rng_u64(NULL) == 0 && nf_rng_uniform(NULL) == 0 && nf_rng_normal(NULL) == 0);
  ck_assert(nf_rng_rademacher(NULL) == 0 && nf_rng_below(NULL, 5) == 0);
  nf_rng_normal_fill(NULL, 3, v);
  nf_rng_rademacher_fill(NULL, 3, v);
  expect_untouched(3, v, 4.0);
  nf_rng_shuffle(NULL, 3, idx);
  ck_assert(idx[0] == 0 && idx[1] == 1 && idx[2] == 2);
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  nf_rng_normal_fill(&rng, 3, NULL);
  nf_rng_shuffle(&rng, 3, NULL);
  ck_assert(nf_rng_below(&rng, 0) == 0);
}
END_TEST

/* Datasets, metadata, configs, Adam and the trainer with NULLs and bad options. */
START_TEST(containers_and_training_refuse_bad_input)
{
  nf_dataset *a = NULL, *b = NULL;
  nf_rng rng;
  nf_rng_seed(&rng, 9);
  EXPECT_NULL(nf_dataset_new(0, 2), NF_EINVAL, "nf_dataset_new");
  EXPECT_NULL(nf_dataset_new(2, 0), NF_EINVAL, "nf_dataset_new");
  EXPECT_NULL(nf_dataset_view(2, 2, NULL), NF_EINVAL, "nf_dataset_view");
  EXPECT(nf_dataset_split(NULL, 0.5, &rng, &a, &b), NF_EINVAL, "nf_dataset_split");
  ck_assert(a == NULL && b == NULL);
  nf_dataset *ds = nf_dataset_new(10, 2);
  EXPECT(nf_dataset_split(ds, NAN, &rng, &a, &b), NF_EINVAL, "nf_dataset_split");
  EXPECT(nf_dataset_split(ds, 0.5, NULL, &a, &b), NF_EINVAL, "nf_dataset_split");
  EXPECT(nf_dataset_split(ds, 0.5, &rng, NULL, &b), NF_EINVAL, "nf_dataset_split");
  ck_assert(a == NULL && b == NULL);
  EXPECT(nf_dataset_write_csv(NULL, "x.csv"), NF_EINVAL, "NULL");
  EXPECT(nf_dataset_write_npy(ds, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_dataset_read_csv(NULL, &a), NF_EINVAL, "NULL");
  EXPECT(nf_dataset_read_npy("x.npy", NULL), NF_EINVAL, "NULL");
  EXPECT(nf_write_column_csv(NULL, 1, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_toy_sample(NULL, 4, &rng, &a), NF_EINVAL, "");
  EXPECT(nf_toy_sample("moons", 4, NULL, &a), NF_EINVAL, "");
  EXPECT(nf_toy_sample("moons", 0, &rng, &a), NF_EINVAL, "");
  ck_assert(a == NULL);
  nf_dataset_free(NULL);

  EXPECT(nf_meta_set(NULL, "k", "v"), NF_EINVAL, "nf_meta_set");
  nf_meta *m = nf_meta_new();
  EXPECT(nf_meta_set(m, NULL, "v"), NF_EINVAL, "nf_meta_set");
  EXPECT(nf_meta_set(m, "k", NULL), NF_EINVAL, "nf_meta_set");
  ck_assert(nf_meta_count(m) == 0 && nf_meta_count(NULL) == 0);
  ck_assert_ptr_null(nf_meta_get(NULL, "k"));
  ck_assert_ptr_null(nf_meta_get(m, NULL));
  ck_assert_ptr_null(nf_meta_key(m, 0));
  ck_assert_ptr_null(nf_meta_value(NULL, 0));
  nf_meta_free(m);
  nf_meta_free(NULL);

  long long iv = 3;
  double rv = 3;
  const char *sv = "keep";
  size_t zv = 3;
  EXPECT(nf_config_set_int(NULL, "k", 1), NF_EINVAL, "NULL");
  EXPECT(nf_config_set_real(NULL, "k", 1), NF_EINVAL, "NULL");
  EXPECT(nf_config_set_string(NULL, "k", "v"), NF_EINVAL, "NULL");
  EXPECT(nf_config_set_sizes(NULL, "k", 1, &zv), NF_EINVAL, "NULL");
  EXPECT(nf_config_set_tensor(NULL, "k", 1, &rv), NF_EINVAL, "NULL");
  EXPECT(nf_config_get_int(NULL, "k", &iv), NF_EINVAL, "NULL");
  EXPECT(nf_config_get_real(NULL, "k", &rv), NF_EINVAL, "NULL");
  EXPECT(nf_config_get_string(NULL, "k", &sv), NF_EINVAL, "NULL");
  EXPECT(nf_config_get_size(NULL, "k", &zv), NF_EINVAL, "NULL");
  EXPECT(nf_config_get_len(NULL, "k", &zv), NF_EINVAL, "NULL");
  EXPECT(nf_config_get_sizes(NULL, "k", 1, &zv), NF_EINVAL, "NULL");
  EXPECT(nf_config_get_tensor(NULL, "k", 1, &rv), NF_EINVAL, "NULL");
  ck_assert(iv == 3 && rv == 3 && zv == 3 && strcmp(sv, "keep") == 0);
  ck_assert(!nf_config_has(NULL, "k"));

  nf_adam_opts o = nf_adam_defaults();
  EXPECT_NULL(nf_adam_new(0, &o), NF_EINVAL, "nf_adam_new");
  EXPECT_NULL(nf_adam_new(SIZE_MAX, &o), NF_EINVAL, "nf_adam_new");
  const double bad_lr[] = {0, -1, NAN, INFINITY};
  for (size_t i = 0; i < 4; i++) {
    nf_adam_opts q = o;
    q.lr = bad_lr[i];
    EXPECT_NULL(nf_adam_new(4, &q), NF_EINVAL, "nf_adam_new", "lr");
    q = o;
    q.beta1 = i ? bad_lr[i] : 1.0;
    EXPECT_NULL(nf_adam_new(4, &q), NF_EINVAL, "nf_adam_new", "beta1");
  }
  nf_adam *adam = nf_adam_new(4, &o);
  double th[4] = {1, 1, 1, 1}, g[4] = {0, NAN, 0, 0};
  EXPECT(nf_adam_step(NULL, th, g), NF_EINVAL, "NULL");
  EXPECT(nf_adam_step(adam, NULL, g), NF_EINVAL, "NULL");
  EXPECT(nf_adam_step(adam, th, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_adam_step(adam, th, g), NF_ENONFINITE, "1");
  expect_untouched(4, th, 1.0);
  ck_assert(nf_adam_steps(adam) == 0);
  EXPECT(nf_adam_set_lr(NULL, 1e-3), NF_EINVAL, "NULL");
  EXPECT(nf_adam_set_lr(adam, NAN), NF_EINVAL, "lr");
  EXPECT(nf_adam_set_state(NULL, 1, th, th), NF_EINVAL, "NULL");
  EXPECT(nf_adam_set_state(adam, 1, NULL, th), NF_EINVAL, "NULL");
  ck_assert(nf_adam_size(NULL) == 0 && nf_adam_steps(NULL) == 0);
  nf_adam_reset(NULL);
  nf_adam_free(NULL);

  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(2)), NF_OK);
  nf_adam *ad4 = nf_adam_new(nf_flow_n_params(flow), &o);
  EXPECT_NULL(nf_trainer_new(NULL, ad4, ds, NULL, NULL, &rng), NF_EINVAL, "nf_trainer_new");
  EXPECT_NULL(nf_trainer_new(flow, NULL, ds, NULL, NULL, &rng), NF_EINVAL, "nf_trainer_new");
  EXPECT_NULL(nf_trainer_new(flow, ad4, NULL, NULL, NULL, &rng), NF_EINVAL, "nf_trainer_new");
  EXPECT_NULL(nf_trainer_new(flow, ad4, ds, NULL, NULL, NULL), NF_EINVAL, "nf_trainer_new");
  nf_adam *ad5 = nf_adam_new(5, &o); /* the flow has 4 parameters */
  EXPECT_NULL(nf_trainer_new(flow, ad5, ds, NULL, NULL, &rng), NF_EDIM, "nf_trainer_new");
  nf_adam_free(ad5);
  nf_trainer_opts to = nf_trainer_defaults();
  to.batch_size = 0;
  EXPECT_NULL(nf_trainer_new(flow, ad4, ds, NULL, &to, &rng), NF_EINVAL, "nf_trainer_new", "batch");
  double loss = 5.0;
  EXPECT(nf_trainer_step(NULL, &loss), NF_EINVAL, "NULL");
  EXPECT(nf_trainer_validate(NULL, &loss), NF_EINVAL, "NULL");
  EXPECT(nf_trainer_run(NULL, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_trainer_set_context(NULL, ds, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_trainer_save_state(NULL, "x"), NF_EINVAL, "NULL");
  EXPECT(nf_trainer_load_state(NULL, "x"), NF_EINVAL, "NULL");
  ck_assert(loss == 5.0 && nf_trainer_iterations(NULL) == 0);
  ds->x[3] = NAN;
  EXPECT_NULL(nf_trainer_new(flow, ad4, ds, NULL, NULL, &rng), NF_ENONFINITE, "nf_trainer_new", "row 1");
  nf_trainer_free(NULL);
  nf_adam_free(ad4);
  nf_adam_free(adam);
  nf_flow_free(flow);
  nf_dataset_free(ds);
}
END_TEST


/* A user field: f = -z (n_params 0), divergence -dim. */
static int neg_f(double t, size_t n, const double *z, const double *ctx, const double *theta,
                 double *f, void *user)
{
  (void)t, (void)ctx, (void)theta, (void)user;
  for (size_t i = 0; i < 2 * n; i++) f[i] = -z[i];
  return 0;
}

/* The dynamics net: NULLs, n = 0, zero and overflowing sizes, NaN z / ctx / t / params. */
START_TEST(odenet_refuses_bad_input)
{
  size_t hidden[1] = {4};
  EXPECT_NULL(nf_odenet_new(0, 0, 1, hidden, NF_ODENET_CONCATSQUASH, NF_ODENET_TANH), NF_EINVAL,
              "nf_odenet_new", "0");
  EXPECT_NULL(nf_odenet_new(2, 0, 1, NULL, NF_ODENET_CONCATSQUASH, NF_ODENET_TANH), NF_EINVAL,
              "nf_odenet_new", "NULL");
  EXPECT_NULL(nf_odenet_new(2, 0, 1, hidden, (nf_odenet_kind)99, NF_ODENET_TANH), NF_EINVAL,
              "nf_odenet_new", "kind");
  EXPECT_NULL(nf_odenet_new(2, 0, HUGE_N, hidden, NF_ODENET_CONCAT, NF_ODENET_TANH), NF_EINVAL,
              "nf_odenet_new", "overflows"); /* hidden[] (one entry) is not read past its end */
  nf_odenet_kind kind = NF_ODENET_CONCAT;
  nf_odenet_act act = NF_ODENET_TANH;
  EXPECT(nf_odenet_kind_parse("bogus", &kind), NF_EINVAL, "bogus");
  EXPECT(nf_odenet_kind_parse(NULL, &kind), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_act_parse("bogus", &act), NF_EINVAL, "bogus");
  EXPECT(nf_odenet_act_parse("tanh", NULL), NF_EINVAL, "NULL");
  ck_assert(kind == NF_ODENET_CONCAT && act == NF_ODENET_TANH);
  ck_assert(nf_odenet_n_params(NULL) == 0 && nf_odenet_dim(NULL) == 0);
  ck_assert(nf_odenet_work_size(NULL, 4, 1) == 0);

  nf_odenet *net = nf_odenet_new(2, 1, 1, hidden, NF_ODENET_CONCATSQUASH, NF_ODENET_TANH);
  ck_assert_ptr_nonnull(net);
  size_t np = nf_odenet_n_params(net);
  double *params = calloc(np, sizeof *params);
  nf_rng rng;
  nf_rng_seed(&rng, 11);
  EXPECT(nf_odenet_init(NULL, &rng, params), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_init(net, NULL, params), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_init(net, &rng, NULL), NF_EINVAL, "NULL");
  ck_assert_int_eq(nf_odenet_init(net, &rng, params), NF_OK);
  ck_assert(nf_odenet_work_size(net, SIZE_MAX, 1) == 0 || nf_odenet_work_size(net, SIZE_MAX, 1) == SIZE_MAX);
  double *work = calloc(nf_odenet_work_size(net, 2, 1), sizeof *work);
  double z[4] = {0.1, 0.2, 0.3, 0.4}, ctx[2] = {1, -1}, f[4] = {7, 7, 7, 7}, u[4] = {1, 1, 1, 1};
  double g_z[4] = {7, 7, 7, 7};
  EXPECT(nf_odenet_eval(NULL, params, 2, 0.5, z, ctx, f, work), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_eval(net, NULL, 2, 0.5, z, ctx, f, work), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_eval(net, params, 2, 0.5, NULL, ctx, f, work), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_eval(net, params, 2, 0.5, z, NULL, f, work), NF_EINVAL, "ctx");
  EXPECT(nf_odenet_eval(net, params, 2, 0.5, z, ctx, NULL, work), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_eval(net, params, 2, 0.5, z, ctx, f, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_eval(net, params, 0, 0.5, z, ctx, f, work), NF_EINVAL, "0");
  EXPECT(nf_odenet_eval(net, params, SIZE_MAX, 0.5, z, ctx, f, work), NF_EINVAL, "too large");
  EXPECT(nf_odenet_eval(net, params, 2, NAN, z, ctx, f, work), NF_ENONFINITE, "t");
  z[3] = NAN;
  EXPECT(nf_odenet_eval(net, params, 2, 0.5, z, ctx, f, work), NF_ENONFINITE, "z[3]");
  z[3] = 0.4;
  ctx[1] = INFINITY;
  EXPECT(nf_odenet_eval(net, params, 2, 0.5, z, ctx, f, work), NF_ENONFINITE, "ctx[1]");
  ctx[1] = -1;
  expect_untouched(4, f, 7.0);
  EXPECT(nf_odenet_jvp(net, params, 2, 0.5, z, ctx, NULL, f, g_z, work), NF_EINVAL, "NULL");
  EXPECT(nf_odenet_vjp(net, params, 2, 0.5, z, ctx, NULL, f, g_z, NULL, NULL, NULL, work),
         NF_EINVAL, "NULL");
  z[0] = NAN;
  EXPECT(nf_odenet_jvp(net, params, 2, 0.5, z, ctx, u, f, g_z, work), NF_ENONFINITE, "z[0]");
  EXPECT(nf_odenet_vjp(net, params, 2, 0.5, z, ctx, u, f, g_z, NULL, NULL, NULL, work),
         NF_ENONFINITE, "z[0]");
  double tr[2] = {7, 7};
  EXPECT(nf_odenet_trace(net, params, 2, 0.5, z, ctx, NULL, f, tr, NULL, NULL, work),
         NF_ENONFINITE, "z[0]");
  expect_untouched(4, f, 7.0);
  expect_untouched(4, g_z, 7.0);
  expect_untouched(2, tr, 7.0);
  free(work);
  free(params);
  nf_odenet_free(net);
  nf_odenet_free(NULL);
}
END_TEST

/* CNF constructors and queries: bad options, NULL fields, foreign layers. */
START_TEST(cnf_refuses_bad_input)
{
  nf_rng rng;
  nf_rng_seed(&rng, 12);
  size_t hidden[2] = {8, 8};
  nf_cnf_opts o = nf_cnf_defaults();
  o.n_hidden = 2;
  o.hidden = hidden;
  EXPECT_NULL(nf_cnf_new(0, 0, &o, &rng), NF_EINVAL, "nf_cnf_new", "0");
  EXPECT_NULL(nf_cnf_new(HUGE_N, 0, &o, &rng), NF_EINVAL, "overflows");
  EXPECT_NULL(nf_cnf_new(SIZE_MAX, 0, &o, &rng), NF_EINVAL, "overflows");
  EXPECT_NULL(nf_cnf_new(2, 0, NULL, &rng), NF_EINVAL, "nf_cnf_new", "NULL");
  EXPECT_NULL(nf_cnf_new(2, 0, &o, NULL), NF_EINVAL, "nf_cnf_new", "NULL");
  nf_cnf_opts q = o;
  q.end_time = NAN;
  EXPECT_NULL(nf_cnf_new(2, 0, &q, &rng), NF_EINVAL, "nf_cnf_new", "end_time");
  q = o;
  q.end_time = -1;
  EXPECT_NULL(nf_cnf_new(2, 0, &q, &rng), NF_EINVAL, "nf_cnf_new", "end_time");
  q = o;
  q.kinetic_weight = INFINITY;
  EXPECT_NULL(nf_cnf_new(2, 0, &q, &rng), NF_EINVAL, "nf_cnf_new", "kinetic_weight");
  q = o;
  q.trace = (nf_trace_kind)9;
  EXPECT_NULL(nf_cnf_new(2, 0, &q, &rng), NF_EINVAL, "nf_cnf_new", "trace");
  q = o;
  q.hidden = NULL;
  EXPECT_NULL(nf_cnf_new(2, 0, &q, &rng), NF_EINVAL, "nf_cnf_new", "hidden");
  nf_field fd = {.name = "neg", .f = neg_f};
  EXPECT_NULL(nf_cnf_field_new(2, 0, NULL, &o), NF_EINVAL, "nf_cnf_field_new", "NULL");
  EXPECT_NULL(nf_cnf_field_new(0, 0, &fd, &o), NF_EINVAL, "nf_cnf_field_new", "0");
  EXPECT_NULL(nf_cnf_field_new(SIZE_MAX, 0, &fd, &o), NF_EINVAL, "nf_cnf_field_new", "overflows");
  nf_field nof = {.name = "nof"};
  EXPECT_NULL(nf_cnf_field_new(2, 0, &nof, &o), NF_EINVAL, "nf_cnf_field_new", "f");
  nf_field hugep = {.name = "huge", .f = neg_f, .n_params = SIZE_MAX};
  EXPECT_NULL(nf_cnf_field_new(2, 0, &hugep, &o), NF_EINVAL, "nf_cnf_field_new", "overflows");
  EXPECT_NULL(nf_cnf_field_new(2, SIZE_MAX, &fd, &o), NF_EINVAL, "nf_cnf_field_new", "overflows");
  EXPECT_NULL(nf_cnf_field_new(2, 0, &fd, NULL), NF_EINVAL, "nf_cnf_field_new", "opts is NULL");
  nf_trace_kind tk = NF_TRACE_EXACT;
  EXPECT(nf_cnf_trace_parse("bogus", &tk), NF_EINVAL, "bogus");
  EXPECT(nf_cnf_trace_parse(NULL, &tk), NF_EINVAL, "NULL");
  ck_assert(tk == NF_TRACE_EXACT);
  nf_cnf_counters c;
  memset(&c, 0x5a, sizeof c);
  unsigned char before[sizeof c];
  memcpy(before, &c, sizeof c);
  EXPECT(nf_cnf_get_counters(NULL, &c), NF_EINVAL, "NULL");
  nf_layer *aff = nf_affine_new(2);
  EXPECT(nf_cnf_get_counters(aff, &c), NF_EINVAL, "not a CNF layer");
  ck_assert(memcmp(&c, before, sizeof c) == 0);
  EXPECT(nf_cnf_reset_counters(aff), NF_EINVAL, "not a CNF layer");
  EXPECT(nf_cnf_reset_counters(NULL), NF_EINVAL, "not a CNF layer");
  ck_assert(nf_cnf_end_time(aff, NULL) == 0 && nf_cnf_end_time(NULL, NULL) == 0);
  nf_layer *cnf = nf_cnf_field_new(2, 0, &fd, &o);
  ck_assert_ptr_nonnull(cnf);
  EXPECT(nf_cnf_get_counters(cnf, NULL), NF_EINVAL, "NULL");
  nf_layer_free(cnf);
  nf_layer_free(aff);
}
END_TEST


static int decay_rhs(double t, const double *y, double *dydt, void *user)
{
  (void)t, (void)user;
  dydt[0] = -y[0];
  dydt[1] = -y[1];
  return 0;
}

/* The ODE solver: zero and overflowing sizes, NULL system / state, non-finite
   times and states; y untouched on refusal. */
START_TEST(ode_refuses_bad_input)
{
  nf_ode_opts o = nf_ode_defaults(NF_ODE_DOPRI5);
  EXPECT_NULL(nf_ode_new(0, 0, &o), NF_EINVAL, "nf_ode_new");
  EXPECT_NULL(nf_ode_new(SIZE_MAX, 0, &o), NF_EINVAL, "nf_ode_new");
  EXPECT_NULL(nf_ode_new(HUGE_N, 0, &o), NF_EINVAL, "nf_ode_new");
  EXPECT_NULL(nf_ode_new(2, SIZE_MAX, &o), NF_EINVAL, "nf_ode_new");
  EXPECT_NULL(nf_ode_new(2, 0, NULL), NF_EINVAL, "nf_ode_new");
  nf_ode_opts q = o;
  q.rtol = NAN;
  EXPECT_NULL(nf_ode_new(2, 0, &q), NF_EINVAL, "nf_ode_new", "rtol");
  q = o;
  q.method = (nf_ode_method)99;
  EXPECT_NULL(nf_ode_new(2, 0, &q), NF_EINVAL, "nf_ode_new", "method");
  nf_ode_method m = NF_ODE_RK4;
  nf_ode_grad g = (nf_ode_grad)0;
  EXPECT(nf_ode_method_parse("bogus", &m), NF_EINVAL, "bogus");
  EXPECT(nf_ode_method_parse(NULL, &m), NF_EINVAL, "NULL");
  EXPECT(nf_ode_grad_parse("bogus", &g), NF_EINVAL, "bogus");
  ck_assert(m == NF_ODE_RK4 && g == (nf_ode_grad)0);
  nf_ode *ode = nf_ode_new(2, 0, &o);
  ck_assert_ptr_nonnull(ode);
  nf_ode_system sys = {.rhs = decay_rhs};
  double y[2] = {1, 2};
  EXPECT(nf_ode_solve(NULL, &sys, 0, 1, y), NF_EINVAL, "NULL");
  EXPECT(nf_ode_solve(ode, NULL, 0, 1, y), NF_EINVAL, "NULL");
  EXPECT(nf_ode_solve(ode, &(nf_ode_system){0}, 0, 1, y), NF_EINVAL, "rhs");
  EXPECT(nf_ode_solve(ode, &sys, 0, 1, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_ode_solve(ode, &sys, NAN, 1, y), NF_ENONFINITE, "t0");
  EXPECT(nf_ode_solve(ode, &sys, 0, INFINITY, y), NF_ENONFINITE, "t1");
  ck_assert(y[0] == 1 && y[1] == 2);
  y[1] = NAN;
  EXPECT(nf_ode_solve(ode, &sys, 0, 1, y), NF_ENONFINITE, "y0[1]");
  ck_assert(y[0] == 1 && isnan(y[1]));
  y[1] = 2;
  EXPECT(nf_ode_resize(ode, 0, 0), NF_EINVAL, "nf_ode_resize");
  EXPECT(nf_ode_resize(ode, SIZE_MAX, 0), NF_EINVAL, "nf_ode_resize");
  EXPECT(nf_ode_resize(NULL, 2, 0), NF_EINVAL, "NULL");
  ck_assert(nf_ode_size(ode) == 2);
  double g_y0[2] = {7, 7};
  EXPECT(nf_ode_gradient(ode, &sys, NULL, g_y0, NULL, NULL, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_ode_gradient(NULL, &sys, y, g_y0, NULL, NULL, NULL), NF_EINVAL, "NULL");
  expect_untouched(2, g_y0, 7.0);
  ck_assert(nf_ode_size(NULL) == 0);
  nf_ode_free(ode);
  nf_ode_free(NULL);
}
END_TEST

static int no_fields(const char *name, nf_field *field, void *user)
{
  (void)name, (void)field, (void)user;
  return 1;
}

/* Model files: NULLs, a missing path, a directory, and a user-field CNF loaded
   without a resolver (or with one that does not know the field). */
START_TEST(model_files_refuse_bad_paths)
{
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL), *out = (nf_flow *)&out;
  nf_meta *meta = (nf_meta *)&meta;
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(2)), NF_OK);
  EXPECT(nf_flow_save(NULL, "x.nfm", NULL), NF_EINVAL, "NULL");
  EXPECT(nf_flow_save(flow, NULL, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_flow_save(flow, ".", NULL), NF_EIO, ".");
  EXPECT(nf_flow_save(flow, "no/such/dir/m.nfm", NULL), NF_EIO, "no/such/dir");
  EXPECT(nf_flow_load(NULL, NULL, &out, &meta), NF_EINVAL, "NULL");
  EXPECT(nf_flow_load("x.nfm", NULL, NULL, &meta), NF_EINVAL, "NULL");
  EXPECT(nf_flow_load("no_such_model.nfm", NULL, &out, &meta), NF_EIO, "no_such_model.nfm");
  EXPECT(nf_flow_load(".", NULL, &out, &meta), NF_EIO, ".");
  ck_assert(out == NULL && meta == NULL); /* "nothing is returned" */
  nf_flow_free(flow);

  nf_cnf_opts o = nf_cnf_defaults();
  nf_field fd = {.name = "decay_field", .f = neg_f};
  flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_cnf_field_new(2, 0, &fd, &o)), NF_OK);
  const char *path = "bad_input_field.nfm";
  ck_assert_int_eq(nf_flow_save(flow, path, NULL), NF_OK);
  /* the caller's fault, not the file's: NF_EINVAL naming the field */
  EXPECT(nf_flow_load(path, NULL, &out, &meta), NF_EINVAL, "decay_field", "resolver");
  ck_assert(out == NULL && meta == NULL); /* "nothing is returned" */
  nf_resolver r = {.field = NULL};
  EXPECT(nf_flow_load(path, &r, &out, &meta), NF_EINVAL, "decay_field", "resolver");
  r.field = no_fields;
  EXPECT(nf_flow_load(path, &r, &out, &meta), NF_EINVAL, "decay_field", "resolver");
  ck_assert(out == NULL && meta == NULL); /* "nothing is returned" */
  remove(path);
  nf_flow_free(flow);
  /* a field without a name cannot be saved */
  nf_field anon = {.f = neg_f};
  flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_cnf_field_new(2, 0, &anon, &o)), NF_OK);
  EXPECT(nf_flow_save(flow, "bad_input_anon.nfm", NULL), NF_EINVAL, "name");
  ck_assert_int_ne(access("bad_input_anon.nfm", F_OK), 0);
  nf_flow_free(flow);
}
END_TEST

/* Preprocessing layers, the noise streams, the MLP, couplings and planar's
   iteration cap. */
START_TEST(preprocess_noise_mlp_coupling_refuse_bad_input)
{
  double shift[2] = {0, 0}, scale[2] = {1, 1}, lo[2] = {0, 0}, hi[2] = {1, 1};
  EXPECT_NULL(nf_standardize_new(0, shift, scale), NF_EINVAL, "nf_standardize_new");
  EXPECT_NULL(nf_standardize_new(SIZE_MAX, shift, scale), NF_EINVAL, "nf_standardize_new", "overflows");
  EXPECT_NULL(nf_standardize_new(HUGE_N, shift, scale), NF_EINVAL, "nf_standardize_new", "overflows");
  EXPECT_NULL(nf_standardize_new(2, NULL, scale), NF_EINVAL, "nf_standardize_new", "NULL");
  EXPECT_NULL(nf_standardize_new(2, shift, NULL), NF_EINVAL, "nf_standardize_new", "NULL");
  scale[1] = 0;
  EXPECT_NULL(nf_standardize_new(2, shift, scale), NF_EINVAL, "nf_standardize_new", "scale[1]");
  scale[1] = NAN;
  EXPECT_NULL(nf_standardize_new(2, shift, scale), NF_EINVAL, "nf_standardize_new", "scale[1]");
  scale[1] = 1;
  shift[0] = INFINITY;
  EXPECT_NULL(nf_standardize_new(2, shift, scale), NF_EINVAL, "nf_standardize_new", "shift[0]");
  shift[0] = 0;
  double x[4] = {1, 2, 3, NAN}, sh[2] = {7, 7}, sc[2] = {7, 7};
  EXPECT(nf_standardize_fit(2, 2, x, sh, sc), NF_ENONFINITE, "row 1", "column 1");
  EXPECT(nf_standardize_fit(0, 2, x, sh, sc), NF_EINVAL, "nf_standardize_fit");
  EXPECT(nf_standardize_fit(2, 0, x, sh, sc), NF_EINVAL, "nf_standardize_fit");
  EXPECT(nf_standardize_fit(SIZE_MAX, 2, x, sh, sc), NF_EINVAL, "nf_standardize_fit", "overflows");
  EXPECT(nf_standardize_fit(2, 2, NULL, sh, sc), NF_EINVAL, "NULL");
  EXPECT(nf_standardize_fit(2, 2, x, NULL, sc), NF_EINVAL, "NULL");
  expect_untouched(2, sh, 7.0);
  expect_untouched(2, sc, 7.0);
  EXPECT_NULL(nf_logit_new(0, lo, hi, 0.05), NF_EINVAL, "nf_logit_new");
  EXPECT_NULL(nf_logit_new(SIZE_MAX, lo, hi, 0.05), NF_EINVAL, "nf_logit_new", "overflows");
  EXPECT_NULL(nf_logit_new(2, NULL, hi, 0.05), NF_EINVAL, "nf_logit_new", "NULL");
  EXPECT_NULL(nf_logit_new(2, lo, hi, 0.5), NF_EINVAL, "nf_logit_new", "alpha");
  EXPECT_NULL(nf_logit_new(2, lo, hi, NAN), NF_EINVAL, "nf_logit_new", "alpha");
  hi[1] = 0;
  EXPECT_NULL(nf_logit_new(2, lo, hi, 0.05), NF_EINVAL, "nf_logit_new", "1");
  hi[1] = 1;
  lo[0] = -DBL_MAX, hi[0] = DBL_MAX;
  EXPECT_NULL(nf_logit_new(2, lo, hi, 0.05), NF_EINVAL, "nf_logit_new", "0");

  /* the noise streams: NULL out or an unknown kind leave out untouched */
  double v[4] = {3, 3, 3, 3};
  nf_noise_fill(NF_NOISE_NORMAL, 1, 0, 2, 2, NULL);
  nf_noise_fill((nf_noise_kind)9, 1, 0, 2, 2, v);
  nf_noise_fill(NF_NOISE_NORMAL, 1, 0, 0, 2, v);
  nf_noise_fill(NF_NOISE_NORMAL, 1, 0, 2, 0, v);
  expect_untouched(4, v, 3.0);
  nf_noise_kind nk = NF_NOISE_UNIFORM;
  EXPECT(nf_noise_kind_parse("bogus", &nk), NF_EINVAL, "bogus");
  EXPECT(nf_noise_kind_parse(NULL, &nk), NF_EINVAL, "NULL");
  EXPECT(nf_noise_kind_parse("normal", NULL), NF_EINVAL, "NULL");
  ck_assert(nk == NF_NOISE_UNIFORM);
  ck_assert_str_eq(nf_noise_kind_name((nf_noise_kind)9), "?");

  /* the MLP: zero sizes, NULL hidden, NULL queries */
  size_t hidden[2] = {4, 4};
  EXPECT_NULL(nf_mlp_new(0, 1, hidden, 1, NF_ACT_TANH), NF_EINVAL, "nf_mlp_new");
  EXPECT_NULL(nf_mlp_new(2, 1, hidden, 0, NF_ACT_TANH), NF_EINVAL, "nf_mlp_new");
  EXPECT_NULL(nf_mlp_new(2, 1, NULL, 1, NF_ACT_TANH), NF_EINVAL, "nf_mlp_new", "NULL");
  size_t zero[1] = {0};
  EXPECT_NULL(nf_mlp_new(2, 1, zero, 1, NF_ACT_TANH), NF_EINVAL, "nf_mlp_new");
  EXPECT_NULL(nf_mlp_new(2, 1, hidden, 1, (nf_activation)77), NF_EINVAL, "nf_mlp_new", "activation");
  nf_activation act = NF_ACT_TANH;
  EXPECT(nf_activation_parse("bogus", &act), NF_EINVAL, "bogus");
  EXPECT(nf_activation_parse(NULL, &act), NF_EINVAL, "NULL");
  ck_assert(act == NF_ACT_TANH);
  ck_assert(nf_mlp_n_params(NULL) == 0 && nf_mlp_n_in(NULL) == 0 && nf_mlp_work_size(NULL, 4) == 0);
  nf_mlp_free(NULL);

  /* couplings: NULL opts / mask / rng, a mask without both kinds, a bad kind or clamp */
  nf_rng rng;
  nf_rng_seed(&rng, 13);
  unsigned char mask[2] = {1, 0}, ones[2] = {1, 1};
  nf_coupling_opts co = {nf_transformer_spec_default(NF_TRANSFORMER_AFFINE), mask, 2, hidden, NF_ACT_RELU, NF_PRECISION_DOUBLE};
  EXPECT_NULL(nf_coupling_new(2, 0, NULL, &rng), NF_EINVAL, "nf_coupling_new", "NULL");
  EXPECT_NULL(nf_coupling_new(0, 0, &co, &rng), NF_EINVAL, "nf_coupling_new");
  nf_coupling_opts cq = co;
  cq.mask = NULL;
  EXPECT_NULL(nf_coupling_new(2, 0, &cq, &rng), NF_EINVAL, "nf_coupling_new", "mask");
  cq.mask = ones;
  EXPECT_NULL(nf_coupling_new(2, 0, &cq, &rng), NF_EINVAL, "nf_coupling_new", "mask");
  cq = co;
  cq.transformer.kind = (nf_transformer_kind)5;
  EXPECT_NULL(nf_coupling_new(2, 0, &cq, &rng), NF_EINVAL, "nf_coupling_new", "kind");
  cq = co;
  cq.hidden = NULL;
  EXPECT_NULL(nf_coupling_new(2, 0, &cq, &rng), NF_EINVAL, "nf_coupling_new", "hidden");
  nf_transformer_kind ck = NF_TRANSFORMER_ADDITIVE;
  EXPECT(nf_transformer_kind_parse("bogus", &ck), NF_EINVAL, "bogus");
  EXPECT(nf_transformer_kind_parse(NULL, &ck), NF_EINVAL, "NULL");
  ck_assert(ck == NF_TRANSFORMER_ADDITIVE);
  unsigned char mk[2] = {9, 9};
  nf_coupling_mask_half(2, 0, NULL);
  nf_coupling_mask_alternate(0, 0, mk);
  ck_assert(mk[0] == 9 && mk[1] == 9);

  /* planar's iteration cap */
  nf_layer *pl = nf_planar_new(2, 1e-12, &rng), *aff = nf_affine_new(2);
  EXPECT(nf_planar_set_max_iter(NULL, 10), NF_EINVAL, "nf_planar_set_max_iter", "NULL");
  EXPECT(nf_planar_set_max_iter(aff, 10), NF_EINVAL, "nf_planar_set_max_iter", "planar");
  EXPECT(nf_planar_set_max_iter(pl, 0), NF_EINVAL, "nf_planar_set_max_iter", "0");
  EXPECT_NULL(nf_planar_new(0, 1e-12, &rng), NF_EINVAL, "nf_planar_new");
  EXPECT_NULL(nf_planar_new(2, NAN, &rng), NF_EINVAL, "nf_planar_new");
  nf_layer_free(pl);
  nf_layer_free(aff);
}
END_TEST


/* nf_layer_apply / nf_layer_vjp with NULL or non-finite theta, in and ctx on a
   conditional coupling: refused, out / logdet / gradients untouched. */
START_TEST(layer_apply_vjp_refuse_bad_input)
{
  enum { D = 2, C = 1, N = 2 };
  nf_rng rng;
  nf_rng_seed(&rng, 14);
  size_t hidden[1] = {4};
  unsigned char mask[D] = {1, 0};
  nf_coupling_opts co = {nf_transformer_spec_default(NF_TRANSFORMER_AFFINE), mask, 1, hidden, NF_ACT_TANH, NF_PRECISION_DOUBLE};
  nf_layer *layer = nf_coupling_new(D, C, &co, &rng);
  ck_assert_ptr_nonnull(layer);
  size_t np = nf_layer_n_params(layer);
  double *theta = th_random_theta(layer, 15, 0.1);
  double *work = nf_layer_work_new(layer, N);
  double in[N * D] = {0.1, 0.2, 0.3, 0.4}, ctx[N * C] = {1, 2}, out[N * D], ld[N];
  double g_out[N * D] = {1, 1, 1, 1}, g_ld[N] = {1, 1}, g_in[N * D], g_ctx[N * C];
  double *g_theta = malloc(np * sizeof *g_theta);
  for (int i = 0; i < N * D; i++) out[i] = g_in[i] = 8;
  for (int i = 0; i < N; i++) ld[i] = g_ctx[i] = 8;
  for (size_t p = 0; p < np; p++) g_theta[p] = 8;
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    EXPECT(nf_layer_apply(layer, NULL, dir, N, in, ctx, out, ld, NULL, work), NF_EINVAL, "NULL");
    EXPECT(nf_layer_apply(layer, theta, dir, N, NULL, ctx, out, ld, NULL, work), NF_EINVAL, "NULL");
    EXPECT(nf_layer_apply(layer, theta, dir, N, in, NULL, out, ld, NULL, work), NF_EINVAL, "context");
    EXPECT(nf_layer_apply(layer, theta, dir, N, in, ctx, NULL, ld, NULL, work), NF_EINVAL, "NULL");
    EXPECT(nf_layer_apply(layer, theta, dir, 0, in, ctx, out, ld, NULL, work), NF_EINVAL, "0");
    EXPECT(nf_layer_apply(layer, theta, dir, SIZE_MAX, in, ctx, out, ld, NULL, work), NF_EINVAL,
           "overflows");
    in[3] = NAN;
    EXPECT(nf_layer_apply(layer, theta, dir, N, in, ctx, out, ld, NULL, work), NF_ENONFINITE, "row 1");
    in[3] = 0.4;
    ctx[1] = INFINITY;
    EXPECT(nf_layer_apply(layer, theta, dir, N, in, ctx, out, ld, NULL, work), NF_ENONFINITE, "context",
           "row 1");
    ctx[1] = 2;
    /* apply and vjp take theta "as checked by nf_layer_check_params" (a
       precondition, not re-checked on the hot path): the check refuses it */
    theta[np - 1] = NAN;
    EXPECT(nf_layer_check_params(layer, theta), NF_ENONFINITE, "parameter");
    theta[np - 1] = 0;
    EXPECT(nf_layer_vjp(layer, NULL, dir, N, in, ctx, in, g_out, g_ld, g_in, g_ctx, g_theta, work),
           NF_EINVAL, "NULL");
    EXPECT(nf_layer_vjp(layer, theta, dir, N, NULL, ctx, in, g_out, g_ld, g_in, g_ctx, g_theta, work),
           NF_EINVAL, "NULL");
    EXPECT(nf_layer_vjp(layer, theta, dir, N, in, NULL, in, g_out, g_ld, g_in, g_ctx, g_theta, work),
           NF_EINVAL, "context");
    EXPECT(nf_layer_vjp(layer, theta, dir, 0, in, ctx, in, g_out, g_ld, g_in, g_ctx, g_theta, work),
           NF_EINVAL, "0");
    in[0] = -INFINITY;
    EXPECT(nf_layer_vjp(layer, theta, dir, N, in, ctx, in, g_out, g_ld, g_in, g_ctx, g_theta, work),
           NF_ENONFINITE, "row 0");
    in[0] = 0.1;
    ctx[0] = NAN;
    EXPECT(nf_layer_vjp(layer, theta, dir, N, in, ctx, in, g_out, g_ld, g_in, g_ctx, g_theta, work),
           NF_ENONFINITE, "context", "row 0");
    ctx[0] = 1;
  }
  expect_untouched(N * D, out, 8.0);
  expect_untouched(N, ld, 8.0);
  expect_untouched(N * D, g_in, 8.0);
  expect_untouched(N * C, g_ctx, 8.0);
  expect_untouched(np, g_theta, 8.0);
  nf_layer_work_free(layer, N, work);
  free(theta);
  free(g_theta);
  nf_layer_free(layer);
}
END_TEST

/* The _ws calls with a NULL or foreign workspace, and a non-finite context on
   a conditional flow; outputs untouched. */
START_TEST(flow_ws_calls_refuse_bad_workspaces)
{
  enum { D = 2, C = 1, N = 3 };
  nf_rng rng;
  nf_rng_seed(&rng, 16);
  size_t hidden[1] = {4};
  unsigned char mask[D] = {1, 0};
  nf_coupling_opts co = {nf_transformer_spec_default(NF_TRANSFORMER_AFFINE), mask, 1, hidden, NF_ACT_TANH, NF_PRECISION_DOUBLE};
  nf_flow *flow = nf_flow_new(D, C, NF_BASE_STD_NORMAL), *other = nf_flow_new(D, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_coupling_new(D, C, &co, &rng)), NF_OK);
  ck_assert_int_eq(nf_flow_push(other, nf_affine_new(D)), NF_OK);
  nf_flow_ws *ws = nf_flow_ws_new(flow, N), *foreign = nf_flow_ws_new(other, N);
  ck_assert(ws && foreign);
  double x[N * D] = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, ctx[N * C] = {1, 2, 3}, logp[N] = {8, 8, 8};
  double out[N * D] = {8, 8, 8, 8, 8, 8}, nll = 8, g_x[N * D] = {8, 8, 8, 8, 8, 8};
  size_t np = nf_flow_n_params(flow);
  double *grad = malloc(np * sizeof *grad);
  nf_flow_ws *bad[2] = {NULL, foreign};
  for (int b = 0; b < 2; b++) {
    /* a foreign workspace is NF_ESTATE ("made for another flow") */
    const char *word = b ? "another flow" : "NULL";
    nf_status want = b ? NF_ESTATE : NF_EINVAL;
    EXPECT(nf_flow_log_prob_ws(flow, bad[b], 0, N, x, ctx, logp), want, word);
    EXPECT(nf_flow_sample_ws(flow, bad[b], &rng, N, ctx, out, logp), want, word);
    EXPECT(nf_flow_transform_ws(flow, bad[b], 0, NF_FORWARD, N, x, ctx, out, logp), want, word);
    EXPECT(nf_flow_nll_ws(flow, bad[b], 0, N, x, ctx, &nll), want, word);
    for (size_t p = 0; p < np; p++) grad[p] = 9;
    EXPECT(nf_flow_nll_grad_ws(flow, bad[b], 0, N, x, ctx, &nll, grad, NULL), want, word);
    expect_untouched(np, grad, 0.0);
    EXPECT(nf_flow_log_prob_grad_ws(flow, bad[b], 0, N, x, ctx, logp, g_x, NULL), want, word);
  }
  ctx[2] = NAN;
  EXPECT(nf_flow_log_prob_ws(flow, ws, 0, N, x, ctx, logp), NF_ENONFINITE, "ctx", "row 2");
  EXPECT(nf_flow_sample_ws(flow, ws, &rng, N, ctx, out, logp), NF_ENONFINITE, "ctx", "row 2");
  EXPECT(nf_flow_transform_ws(flow, ws, 0, NF_INVERSE, N, x, ctx, out, logp), NF_ENONFINITE, "row 2");
  EXPECT(nf_flow_nll_ws(flow, ws, 0, N, x, ctx, &nll), NF_ENONFINITE, "row 2");
  for (size_t p = 0; p < np; p++) grad[p] = 9;
  EXPECT(nf_flow_nll_grad_ws(flow, ws, 0, N, x, ctx, &nll, grad, NULL), NF_ENONFINITE, "row 2");
  expect_untouched(np, grad, 0.0);
  EXPECT(nf_flow_log_prob_grad_ws(flow, ws, 0, N, x, ctx, logp, g_x, NULL), NF_ENONFINITE, "row 2");
  ctx[2] = 3;
  EXPECT(nf_flow_log_prob_ws(flow, ws, 0, N, x, NULL, logp), NF_EINVAL, "ctx");
  EXPECT(nf_flow_nll_grad_ws(flow, ws, 0, SIZE_MAX, x, ctx, &nll, grad, NULL), NF_EINVAL, "");
  expect_untouched(N, logp, 8.0);
  expect_untouched(N * D, out, 8.0);
  expect_untouched(N * D, g_x, 8.0);
  ck_assert(nll == 8);
  free(grad);
  nf_flow_ws_free(ws);
  nf_flow_ws_free(foreign);
  nf_flow_free(flow);
  nf_flow_free(other);
}
END_TEST

/* Trainer states: a missing file, a directory, a path in a missing directory;
   the trainer keeps its iteration count. */
START_TEST(trainer_state_refuses_bad_paths)
{
  nf_rng rng;
  nf_rng_seed(&rng, 17);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(2)), NF_OK);
  nf_adam_opts o = nf_adam_defaults();
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), &o);
  nf_dataset *ds = nf_dataset_new(16, 2);
  for (size_t i = 0; i < 32; i++) ds->x[i] = 0.1 * (double)i;
  nf_trainer *tr = nf_trainer_new(flow, adam, ds, NULL, NULL, &rng);
  ck_assert_ptr_nonnull(tr);
  double loss;
  ck_assert_int_eq(nf_trainer_step(tr, &loss), NF_OK);
  EXPECT(nf_trainer_save_state(tr, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_trainer_save_state(tr, "."), NF_EIO, ".");
  EXPECT(nf_trainer_save_state(tr, "no/such/dir/state.st"), NF_EIO, "no/such/dir");
  EXPECT(nf_trainer_load_state(tr, NULL), NF_EINVAL, "NULL");
  EXPECT(nf_trainer_load_state(tr, "no_such_state.st"), NF_EIO, "no_such_state.st");
  EXPECT(nf_trainer_load_state(tr, "."), NF_EIO, ".");
  ck_assert(nf_trainer_iterations(tr) == 1);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_dataset_free(ds);
  nf_flow_free(flow);
}
END_TEST

/* The allocation cap: a model file larger than the cap is refused with
   NF_ENOMEM naming the limit; the cap reads back and is reset. */
START_TEST(alloc_limit_refuses_large_files)
{
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL), *out = NULL;
  ck_assert_int_eq(nf_flow_push(flow, nf_affine_new(2)), NF_OK);
  const char *path = "bad_input_limit.nfm";
  ck_assert_int_eq(nf_flow_save(flow, path, NULL), NF_OK);
  nf_set_alloc_limit(16);
  ck_assert(nf_alloc_limit() == 16);
  EXPECT(nf_flow_load(path, NULL, &out, NULL), NF_ENOMEM, path, "allocation limit");
  ck_assert_ptr_null(out);
  nf_set_alloc_limit(0);
  ck_assert(nf_alloc_limit() == 0);
  ck_assert_int_eq(nf_flow_load(path, NULL, &out, NULL), NF_OK);
  remove(path);
  nf_flow_free(out);
  nf_flow_free(flow);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {tanh_propagates_nan, tanh_mlp_nan_propagates, radial_huge_radius,
                          sizes_overflow, recipe_memory_refused_before_allocating,
                          flow_calls_refuse_bad_input, set_params_refuses_bad_log_scales,
                          layer_interface_refuses_bad_input, rng_null_is_a_no_op,
                          containers_and_training_refuse_bad_input,
                          odenet_refuses_bad_input, cnf_refuses_bad_input, ode_refuses_bad_input,
                          model_files_refuse_bad_paths,
                          preprocess_noise_mlp_coupling_refuse_bad_input,
                          layer_apply_vjp_refuse_bad_input, flow_ws_calls_refuse_bad_workspaces,
                          trainer_state_refuses_bad_paths, alloc_limit_refuses_large_files, NULL};
  return th_run_tests("bad_input", 60, tests);
}
