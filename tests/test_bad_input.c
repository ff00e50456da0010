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

#include "helpers.h"
#include "internal.h" /* nf_tanh: static inline, nothing to link */

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
    nf_coupling_opts co = {NF_COUPLING_AFFINE, mask, 2, hidden, NF_ACT_RELU, 3.0};
    EXPECT_NULL(nf_coupling_new(w, 0, &co, &rng), NF_EINVAL, "nf_coupling_new", "overflows");
    size_t wide[2] = {w, w};
    co.hidden = wide;
    EXPECT_NULL(nf_coupling_new(2, 0, &co, &rng), NF_EINVAL, "nf_coupling_new", "overflows");
    EXPECT_NULL(nf_coupling_new(2, w, &(nf_coupling_opts){NF_COUPLING_AFFINE, mask, 2, hidden,
                                                         NF_ACT_RELU, 3.0}, &rng),
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

int main(void)
{
  const TTest *tests[] = {tanh_propagates_nan, tanh_mlp_nan_propagates, radial_huge_radius,
                          sizes_overflow, recipe_memory_refused_before_allocating, NULL};
  return th_run_tests("bad_input", 60, tests);
}
