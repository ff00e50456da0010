/* tests/test_recipes.c — the ready-made flows: names, layer counts, parameter
   counts, densities that match their samples and integrate to one, bad arguments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define N_KINDS 11
static const char *const names[N_KINDS] = {"realnvp", "nice", "glow",         "planar",
                                           "radial",  "maf",  "iaf",          "nsf",
                                           "nsf-coupling", "gf", "resflow"};
static const size_t hidden[] = {8, 8};

/* A recipe of kind k on R^dim with context width ctx_dim, 3 blocks, hidden
   8-8, tanh; parameters perturbed (seed 5, scale 0.2) so the couplings are
   not the identity. */
static nf_flow *recipe_flow(nf_recipe_kind kind, size_t dim, size_t ctx_dim)
{
  nf_rng rng;
  nf_rng_seed(&rng, 4);
  nf_recipe r = nf_recipe_defaults(kind);
  r.layers = 3;
  r.n_hidden = 2;
  r.hidden = hidden;
  r.act = NF_ACT_TANH;
  nf_flow *flow = nf_recipe_build(dim, ctx_dim, &r, &rng);
  ck_assert_msg(flow != NULL, "%s: %s", names[kind], nf_errmsg());
  nf_rng_seed(&rng, 5);
  th_perturb_flow(flow, &rng, 0.2);
  return flow;
}

/* The 2-D recipe of kind k of the density checks. */
static nf_flow *small_flow(nf_recipe_kind kind)
{
  return recipe_flow(kind, 2, 0);
}

START_TEST(names_parse_and_print)
{
  for (int k = 0; k < N_KINDS; k++) {
    nf_recipe_kind kind;
    ck_assert_int_eq(nf_recipe_parse(names[k], &kind), NF_OK);
    ck_assert_int_eq(kind, k);
    ck_assert_str_eq(nf_recipe_name(kind), names[k]);
  }
  nf_recipe_kind kind = NF_RECIPE_NICE;
  ck_assert_int_eq(nf_recipe_parse("made", &kind), NF_EINVAL);
  ck_assert_int_eq(kind, NF_RECIPE_NICE);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "unknown flow 'made'"));
  ck_assert_str_eq(nf_recipe_name((nf_recipe_kind)N_KINDS), "?");
}
END_TEST

/* (in + 1) x 8, 8 x 8 + 8, then 8 + 1 per output: an MLP in -> 8 -> 8 -> out. */
static size_t mlp_params(size_t in, size_t out)
{
  return (in + 1) * 8 + (8 * 8 + 8) + 9 * out;
}

/* Layer counts per block, and parameter counts from the layers' own formulas
   on R^2: coupling conditioners 1 -> 8 -> 8 -> raw values of one coordinate
   (affine 2, additive 1, spline 3K - 1 = 23), MADEs 2 -> 8 -> 8 -> raw values
   of both (masked weights count), LU 2 + 4, actnorm 4, Gaussianization 3K per
   coordinate (K = 8), residual g 2 -> 8 -> 8 -> 2. */
START_TEST(layer_and_parameter_counts)
{
  const size_t layers[N_KINDS] = {3, 4, 9, 3, 3, 3, 3, 3, 3, 6, 6};
  const size_t params[N_KINDS] = {3 * mlp_params(1, 2),           3 * mlp_params(1, 1) + 4,
                                  3 * (4 + 6 + mlp_params(1, 2)), 3 * 5,
                                  3 * 4,                          3 * mlp_params(2, 4),
                                  3 * mlp_params(2, 4),           3 * mlp_params(2, 46),
                                  3 * mlp_params(1, 23),          3 * (48 + 6),
                                  3 * (4 + mlp_params(2, 2))};
  for (int k = 0; k < N_KINDS; k++) {
    nf_flow *flow = small_flow((nf_recipe_kind)k);
    ck_assert_msg(nf_flow_n_layers(flow) == layers[k], "%s: %zu layers", names[k],
                  nf_flow_n_layers(flow));
    ck_assert_msg(nf_flow_n_params(flow) == params[k], "%s: %zu parameters", names[k],
                  nf_flow_n_params(flow));
    ck_assert_uint_eq(nf_flow_dim(flow), 2);
    ck_assert_uint_eq(nf_flow_ctx_dim(flow), 0);
    nf_flow_free(flow);
  }
}
END_TEST

/* Samples' log-densities equal log_prob of the samples (1e-9), and the density
   integrates to one on a grid (1e-3). */
START_TEST(densities_are_consistent_and_normalised)
{
  enum { N = 500 };
  nf_flow *flow = small_flow((nf_recipe_kind)_i);
  ck_assert_int_eq(nf_flow_reserve(flow, N), NF_OK);
  double x[2 * N], lp[N], lp2[N];
  nf_rng rng;
  nf_rng_seed(&rng, 6);
  ck_assert_int_eq(nf_flow_sample(flow, &rng, N, NULL, x, lp), NF_OK);
  ck_assert_int_eq(nf_flow_log_prob(flow, N, x, NULL, lp2), NF_OK);
  ck_assert_double_le(th_max_abs_diff(N, lp, lp2), 1e-9);
  th_check_grid_mass(names[_i], flow, 16.0, 800, 1e-3);
  nf_flow_free(flow);
}
END_TEST

START_TEST(bad_arguments)
{
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  nf_recipe r = nf_recipe_defaults(NF_RECIPE_REALNVP);
  ck_assert_ptr_null(nf_recipe_build(2, 0, NULL, &rng));
  ck_assert_ptr_null(nf_recipe_build(2, 0, &r, NULL));
  ck_assert_ptr_null(nf_recipe_build(0, 0, &r, &rng));
  r.layers = 0;
  ck_assert_ptr_null(nf_recipe_build(2, 0, &r, &rng));
  const nf_recipe_kind unconditional[] = {NF_RECIPE_PLANAR, NF_RECIPE_RADIAL, NF_RECIPE_GF};
  for (int k = 0; k < 3; k++) { /* no layer would use it */
    nf_recipe c = nf_recipe_defaults(unconditional[k]);
    ck_assert_ptr_null(nf_recipe_build(2, 3, &c, &rng));
    ck_assert_ptr_nonnull(strstr(nf_errmsg(), "context"));
  }
  nf_recipe bad = nf_recipe_defaults((nf_recipe_kind)N_KINDS);
  ck_assert_ptr_null(nf_recipe_build(2, 0, &bad, &rng));
  bad = nf_recipe_defaults(NF_RECIPE_NSF);
  bad.bins = 0;
  ck_assert_ptr_null(nf_recipe_build(2, 0, &bad, &rng));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "bins >= 1"));
  bad = nf_recipe_defaults(NF_RECIPE_GF);
  bad.components = 0;
  ck_assert_ptr_null(nf_recipe_build(2, 0, &bad, &rng));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "components >= 1"));
  bad = nf_recipe_defaults(NF_RECIPE_NSF_COUPLING);
  bad.tail_bound = NAN;
  ck_assert_ptr_null(nf_recipe_build(2, 0, &bad, &rng));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "tail_bound"));
  bad = nf_recipe_defaults(NF_RECIPE_REALNVP);
  bad.mixing = (nf_recipe_mixing)7;
  ck_assert_ptr_null(nf_recipe_build(2, 0, &bad, &rng));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "mixing"));
  ck_assert_int_eq(nf_flow_reserve(NULL, 4), NF_EINVAL);
  ck_assert_uint_eq(nf_flow_n_layers(NULL), 0);
  nf_recipe cond = nf_recipe_defaults(NF_RECIPE_REALNVP); /* couplings take a context */
  nf_flow *flow = nf_recipe_build(2, 3, &cond, &rng);
  ck_assert_ptr_nonnull(flow);
  ck_assert_uint_eq(nf_flow_ctx_dim(flow), 3);
  nf_flow_free(flow);
}
END_TEST

/* Each recipe on R^3 is shared by two threads, and the recipes with a
   conditional layer (couplings, autoregressive and residual layers take the
   context, the other layers receive ctx = NULL) work in conditional flows
   whose log p depends on ctx. */
START_TEST(threads_and_conditional_flows)
{
  enum { D = 3, N = 40 };
  nf_recipe_kind kind = (nf_recipe_kind)_i;
  int conditional = kind != NF_RECIPE_PLANAR && kind != NF_RECIPE_RADIAL && kind != NF_RECIPE_GF;
  nf_flow *flow = recipe_flow(kind, D, conditional ? 2 : 0);
  double *x = th_random_points(N, D, 7, 1.0), *ctx = th_random_points(N, 2, 8, 1.0);
  th_check_threads(flow, N, x, conditional ? ctx : NULL);
  if (conditional) th_check_conditional_flow(flow, NULL);
  nf_flow_free(flow);
  free(x);
  free(ctx);
}
END_TEST

/* Coupling recipes on R^d, d >= 3, alternate even and odd masks and put
   the recipe's mixing between consecutive couplings: random permutations
   (seeded: two builds agree), reversals, or nothing; on R^2 nothing. */
START_TEST(coupling_masks_and_mixing)
{
  static const struct {
    nf_recipe_mixing mixing;
    size_t dim, layers;
    const char *between;
  } cases[] = {{NF_MIXING_RANDOM, 4, 5, "permute"}, {NF_MIXING_REVERSE, 4, 5, "permute"},
               {NF_MIXING_NONE, 4, 3, NULL},        {NF_MIXING_RANDOM, 2, 3, NULL}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    nf_recipe r = nf_recipe_defaults(NF_RECIPE_NSF_COUPLING);
    r.layers = 3;
    r.mixing = cases[c].mixing;
    nf_rng rng;
    nf_rng_seed(&rng, 9);
    nf_flow *flow = nf_recipe_build(cases[c].dim, 0, &r, &rng);
    ck_assert_ptr_nonnull(flow);
    ck_assert_uint_eq(nf_flow_n_layers(flow), cases[c].layers);
    for (size_t k = 0; k < cases[c].layers; k++) {
      int mixing_slot = cases[c].between && k % 2 == 1;
      ck_assert_str_eq(nf_layer_name(nf_flow_layer(flow, k)), mixing_slot ? cases[c].between : "coupling");
    }
    if (cases[c].dim == 4) { /* the first coupling transforms the odd coordinates */
      double x[4] = {0.3, -0.2, 0.5, 1.1}, z[4];
      const nf_layer *first = nf_flow_layer(flow, 0);
      double *theta = th_random_theta(first, 3, 0.5), *work = nf_layer_work_new(first, 1), ld = 0;
      ck_assert_int_eq(nf_layer_apply(first, theta, NF_INVERSE, 1, x, NULL, z, &ld, NULL, work), NF_OK);
      ck_assert(z[0] == x[0] && z[2] == x[2] && z[1] != x[1] && z[3] != x[3]);
      nf_layer_work_free(first, 1, work);
      free(theta);
    }
    nf_flow_free(flow);
  }
}
END_TEST

/* A lattice recipe (L = 4 on R^16) alternates checkerboard masks and puts
   nothing between its couplings: layer k leaves exactly the sites with
   r + c of parity k unchanged; a lattice that does not fill R^d is refused. */
START_TEST(lattice_checkerboard)
{
  enum { L = 4, N = L * L };
  nf_recipe r = nf_recipe_defaults(NF_RECIPE_REALNVP);
  r.layers = 2;
  r.lattice = L;
  nf_rng rng;
  nf_rng_seed(&rng, 10);
  nf_flow *flow = nf_recipe_build(N, 0, &r, &rng);
  ck_assert_ptr_nonnull(flow);
  ck_assert_uint_eq(nf_flow_n_layers(flow), 2);
  double x[N], z[N];
  for (size_t j = 0; j < N; j++) x[j] = nf_rng_normal(&rng);
  for (size_t k = 0; k < 2; k++) {
    const nf_layer *layer = nf_flow_layer(flow, k);
    double *theta = th_random_theta(layer, 4 + k, 0.5), *work = nf_layer_work_new(layer, 1);
    ck_assert_int_eq(nf_layer_apply(layer, theta, NF_FORWARD, 1, x, NULL, z, NULL, NULL, work), NF_OK);
    for (size_t j = 0; j < N; j++)
      ck_assert_msg((z[j] == x[j]) == ((j / L + j % L) % 2 == k), "layer %zu site %zu", k, j);
    nf_layer_work_free(layer, 1, work);
    free(theta);
  }
  nf_flow_free(flow);
  r.lattice = 3;
  ck_assert_ptr_null(nf_recipe_build(N, 0, &r, &rng));
  ck_assert_int_eq(nf_last_status(), NF_EDIM);
  ck_assert_msg(strstr(nf_errmsg(), "a 3 x 3 lattice does not fill R^16"), "%s", nf_errmsg());
}
END_TEST

int main(void)
{
  Suite *s = suite_create("recipes");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, names_parse_and_print);
  tcase_add_test(tc, layer_and_parameter_counts);
  tcase_add_loop_test(tc, densities_are_consistent_and_normalised, 0, N_KINDS);
  tcase_add_test(tc, bad_arguments);
  tcase_add_test(tc, coupling_masks_and_mixing);
  tcase_add_test(tc, lattice_checkerboard);
  tcase_add_loop_test(tc, threads_and_conditional_flows, 0, N_KINDS);
  suite_add_tcase(s, tc);
  return th_run_suite(s);
}
