/* tests/test_autoregressive.c — autoregressive layers (MADE x transformer:
   MAF) and the inverse wrapper (IAF = inverse of MAF): th_check_bijector for
   every transformer, order and context (round trip, log-det vs brute-force
   Jacobian, vjp vs central differences in both directions, including the
   forward direction's triangular adjoint solve), identity at init, grid mass
   of a 2-D flow, conditional flows and threads, bad options, theta and
   input, save -> load through the registry (nested inner configuration for
   the inverse). Linked -static: nf_config_new is internal. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "io/io_internal.h"
#include "nflow/config.h"
#include "nflow/layer_impl.h"

#define N_ROWS 6

static const size_t hidden2[2] = {8, 7};

/* The transformer kinds checked here (splines join when they exist). */
static const nf_transformer_kind kinds[] = {NF_TRANSFORMER_ADDITIVE, NF_TRANSFORMER_AFFINE,
                                            NF_TRANSFORMER_SPLINE};
#define N_TF (sizeof kinds / sizeof *kinds)

/* Entrywise relative tolerance of "the identity at initialisation": exact
   for additive and affine, rounding for the spline (uniform bins, unit
   derivatives computed through softmax and softplus). */
static double identity_tol(nf_transformer_kind tk)
{
  return tk == NF_TRANSFORMER_SPLINE ? 1e-13 : 0.0;
}

/* Options: two hidden layers, activation act, order kind/seed, transformer kind (bound 2). */
static nf_autoregressive_opts opts_of(nf_transformer_kind tk, nf_order_kind order, uint64_t seed,
                                      nf_activation act)
{
  nf_autoregressive_opts o = nf_autoregressive_opts_default();
  o.n_hidden = 2;
  o.hidden = hidden2;
  o.act = act;
  o.order = order;
  o.order_seed = seed;
  o.transformer = nf_transformer_spec_default(tk);
  o.transformer.scale_bound = 2.0;
  return o;
}

static nf_layer *make_ar(size_t d, size_t c, nf_transformer_kind tk, nf_order_kind order,
                         uint64_t seed, nf_activation act, nf_rng *rng)
{
  nf_autoregressive_opts o = opts_of(tk, order, seed, act);
  nf_layer *layer = nf_autoregressive_new(d, c, &o, rng);
  ck_assert_msg(layer != NULL, "nf_autoregressive_new: %s", nf_errmsg());
  return layer;
}

/* th_check_bijector on n rows ~ N(0, 1), theta ~ N(0, 0.3^2). */
static void check_layer(const char *label, const nf_layer *layer, uint64_t seed)
{
  size_t d = nf_layer_dim(layer), c = nf_layer_ctx_dim(layer);
  double *theta = th_random_theta(layer, seed, 0.3);
  double *z = th_random_points(N_ROWS, d, seed + 1, 1.0);
  double *ctx = c ? th_random_points(N_ROWS, c, seed + 2, 1.0) : NULL;
  th_check_bijector(label, layer, theta, N_ROWS, z, ctx, NULL);
  free(theta);
  free(z);
  free(ctx);
}

/* MAF and NSF: every transformer (additive, affine, spline), order and context width 0 and 2, d = 1, 3 and 4;
   default tolerances (1e-10 round trip, 1e-6 log-det and vjp). */
START_TEST(test_numerics)
{
  const nf_activation acts[3] = {NF_ACT_TANH, NF_ACT_ELU, NF_ACT_SOFTPLUS};
  const size_t dims[3] = {1, 3, 4};
  uint64_t seed = 100;
  for (size_t t = 0; t < N_TF; t++)
    for (int order = NF_ORDER_NATURAL; order <= NF_ORDER_RANDOM; order++)
      for (size_t di = 0; di < 3; di++)
        for (size_t c = 0; c <= 2; c += 2, seed += 3) {
          nf_layer *layer = make_ar(dims[di], c, kinds[t], (nf_order_kind)order, seed,
                                    acts[seed % 3], NULL);
          char label[96];
          snprintf(label, sizeof label, "MAF %s, %s order, d %zu, ctx %zu",
                   nf_transformer_kind_name(kinds[t]), nf_order_kind_name((nf_order_kind)order),
                   dims[di], c);
          check_layer(label, layer, seed);
          nf_layer_free(layer);
        }
}
END_TEST

/* The inverse wrapper around affine, LU and autoregressive layers (IAF) passes
   the same battery; its maps are the inner layer's other direction, bit for bit. */
START_TEST(test_inverse_numerics)
{
  nf_rng rng;
  nf_rng_seed(&rng, 3);
  const size_t perm[3] = {2, 0, 1};
  nf_layer *inner[4] = {nf_affine_new(3), nf_linear_lu_new(3, perm, NF_DIAG_SOFTPLUS, &rng),
                        make_ar(3, 0, NF_TRANSFORMER_AFFINE, NF_ORDER_RANDOM, 5, NF_ACT_TANH, NULL),
                        make_ar(4, 2, NF_TRANSFORMER_ADDITIVE, NF_ORDER_REVERSED, 0, NF_ACT_ELU,
                                NULL)};
  const char *labels[4] = {"inverse(affine)", "inverse(linear_lu)", "IAF affine",
                           "IAF additive, context"};
  for (size_t k = 0; k < 4; k++) {
    ck_assert_ptr_nonnull(inner[k]);
    size_t np = nf_layer_n_params(inner[k]);
    nf_layer *inv = nf_inverse_new(inner[k]);
    ck_assert_msg(inv != NULL, "%s", nf_errmsg());
    ck_assert_str_eq(nf_layer_name(inv), "inverse");
    ck_assert_ptr_eq(nf_inverse_inner(inv), inner[k]);
    ck_assert_uint_eq(nf_layer_n_params(inv), np);
    ck_assert_uint_eq(nf_layer_ctx_dim(inv), nf_layer_ctx_dim(inner[k]));
    if (np) ck_assert_mem_eq(nf_layer_init_params(inv), nf_layer_init_params(inner[k]), np * sizeof(double));
    nf_layer_free(inner[k]); /* owned by the wrapper: refused */
    ck_assert_int_eq(nf_last_status(), NF_ESTATE);
    check_layer(labels[k], inv, 40 + k);
    /* forward of the wrapper is the inner inverse, bit for bit */
    size_t d = nf_layer_dim(inv), c = nf_layer_ctx_dim(inv);
    double *theta = th_random_theta(inv, 50 + k, 0.3), *x = th_random_points(N_ROWS, d, 51, 1.0);
    double *ctx = c ? th_random_points(N_ROWS, c, 52, 1.0) : NULL;
    double a[N_ROWS * 4], b[N_ROWS * 4], la[N_ROWS] = {0}, lb[N_ROWS] = {0};
    double *w = nf_layer_work_new(inv, N_ROWS);
    for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
      ck_assert_int_eq(nf_layer_apply(inv, theta, (nf_dir)dir, N_ROWS, x, ctx, a, la, NULL, w), NF_OK);
      ck_assert_int_eq(nf_layer_apply(inner[k], theta, (nf_dir)(1 - dir), N_ROWS, x, ctx, b, lb,
                                      NULL, w), NF_OK);
      ck_assert_mem_eq(a, b, N_ROWS * d * sizeof *a);
      ck_assert_mem_eq(la, lb, sizeof la);
    }
    nf_layer_work_free(inv, N_ROWS, w);
    free(theta);
    free(x);
    free(ctx);
    nf_layer_free(inv);
  }
  /* a wrapped layer cannot join a flow or another wrapper on its own */
  nf_layer *lu = nf_linear_lu_new(2, NULL, NF_DIAG_EXP, NULL), *inv = nf_inverse_new(lu);
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  ck_assert_int_eq(nf_flow_push(flow, lu), NF_EINVAL);
  ck_assert_ptr_null(nf_inverse_new(lu));
  ck_assert_int_eq(nf_flow_push(flow, inv), NF_OK);
  nf_flow_free(flow);
  ck_assert_ptr_null(nf_inverse_new(NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "NULL"));
  ck_assert_ptr_null(nf_inverse_inner(NULL));
}
END_TEST

/* With an rng the layer (and its inverse) starts as the exact identity, with
   a non-zero parameter gradient; the vjp contract (accumulation, NULLs). */
START_TEST(test_identity_and_accumulation)
{
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  for (size_t t = 0; t < N_TF; t++) {
    nf_layer *layer = make_ar(4, 2, kinds[t], NF_ORDER_RANDOM, 9, NF_ACT_RELU, &rng);
    th_check_identity(layer, N_ROWS, 11, identity_tol(kinds[t]));
    const double *theta = nf_layer_init_params(layer);
    size_t np = nf_layer_n_params(layer);
    double *z = th_random_points(N_ROWS, 4, 12, 1.0), *ctx = th_random_points(N_ROWS, 2, 13, 1.0);
    double x[N_ROWS * 4], g[N_ROWS * 4], *g_t = calloc(np, sizeof *g_t), norm = 0;
    double *w = nf_layer_work_new(layer, N_ROWS);
    th_randn(&rng, N_ROWS * 4, 1.0, g);
    ck_assert_int_eq(nf_layer_apply(layer, theta, NF_INVERSE, N_ROWS, z, ctx, x, NULL, NULL, w), NF_OK);
    ck_assert_int_eq(nf_layer_vjp(layer, theta, NF_INVERSE, N_ROWS, z, ctx, x, g, NULL, NULL, NULL,
                                  g_t, w), NF_OK);
    for (size_t k = 0; k < np; k++) norm += fabs(g_t[k]);
    ck_assert_double_gt(norm, 0.0);
    double *rt = th_random_theta(layer, 14, 0.3);
    th_check_vjp_accumulates(layer, rt, 4, z, ctx);
    nf_layer *inv = nf_inverse_new(layer);
    th_check_identity(inv, N_ROWS, 15, identity_tol(kinds[t]));
    th_check_vjp_accumulates(inv, rt, 4, z, ctx);
    nf_layer_work_free(layer, N_ROWS, w);
    nf_layer_free(inv);
    free(rt);
    free(z);
    free(ctx);
    free(g_t);
  }
}
END_TEST

/* Makers for the flow-level checks: MAF affine / additive with a random order
   drawn from rng, and IAF affine; parameters from rng. */
static nf_layer *make_flow_layer(size_t dim, size_t ctx_dim, nf_rng *rng, nf_transformer_kind tk)
{
  nf_autoregressive_opts o = opts_of(tk, NF_ORDER_RANDOM, nf_rng_u64(rng), NF_ACT_TANH);
  return nf_autoregressive_new(dim, ctx_dim, &o, rng);
}
static nf_layer *make_maf_affine(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_flow_layer(dim, ctx_dim, rng, NF_TRANSFORMER_AFFINE);
}
static nf_layer *make_maf_additive(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_flow_layer(dim, ctx_dim, rng, NF_TRANSFORMER_ADDITIVE);
}
static nf_layer *make_nsf(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_flow_layer(dim, ctx_dim, rng, NF_TRANSFORMER_SPLINE);
}
static nf_layer *make_iaf(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return nf_inverse_new(make_maf_affine(dim, ctx_dim, rng));
}

/* Conditional flows (log p depends on ctx), two threads equal to serial. */
START_TEST(test_flows_and_threads)
{
  th_check_family_flows(make_maf_affine, 0.3);
  th_check_family_flows(make_maf_additive, 0.3);
  th_check_family_flows(make_nsf, 0.3);
  th_check_family_flows(make_iaf, 0.3);
}
END_TEST

/* 2-D flows of three MAF layers and of three IAF layers with theta ~
   N(0, 0.5^2), and of three NSF layers with theta ~ N(0, 0.3^2) (on
   [-10, 10]^2, 1000^2 points: its bins are narrower): the density integrates to 1 +- 1e-3 on [-20, 20]^2 (400^2 points). */
START_TEST(test_grid_mass)
{
  nf_flow *maf = th_flow_of(make_maf_affine, 2, 0, 3, 21, 0.5);
  th_check_grid_mass("MAF affine, 3 layers", maf, 20.0, 400, 1e-3);
  nf_flow_free(maf);
  nf_flow *iaf = th_flow_of(make_iaf, 2, 0, 3, 22, 0.5);
  th_check_grid_mass("IAF affine, 3 layers", iaf, 20.0, 400, 1e-3);
  nf_flow_free(iaf);
  nf_flow *nsf = th_flow_of(make_nsf, 2, 0, 3, 23, 0.3);
  th_check_grid_mass("NSF (autoregressive spline), 3 layers", nsf, 10.0, 1000, 1e-3);
  nf_flow_free(nsf);
}
END_TEST

/* Bad calls and bad theta are refused with a status; bad options too. */
START_TEST(test_bad_calls_and_options)
{
  nf_layer *layer = make_ar(3, 2, NF_TRANSFORMER_AFFINE, NF_ORDER_NATURAL, 0, NF_ACT_TANH, NULL);
  double *theta = th_random_theta(layer, 3, 0.3);
  th_check_bad_calls(layer, theta);
  nf_layer *inv = nf_inverse_new(layer);
  th_check_bad_calls(inv, theta);
  nf_layer_free(inv);
  free(theta);
  nf_flow *flow = th_flow_of(make_maf_affine, 2, 0, 2, 4, 0.3);
  th_check_param_refused(flow, 5, NAN, NF_ENONFINITE);
  th_check_param_refused(flow, nf_flow_n_params(flow) - 1, INFINITY, NF_ENONFINITE);
  nf_flow_free(flow);
  flow = th_flow_of(make_iaf, 2, 0, 2, 4, 0.3);
  th_check_param_refused(flow, 7, NAN, NF_ENONFINITE);
  nf_flow_free(flow);

  nf_autoregressive_opts o = opts_of(NF_TRANSFORMER_AFFINE, NF_ORDER_NATURAL, 0, NF_ACT_TANH);
  ck_assert_ptr_null(nf_autoregressive_new(0, 0, &o, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "dimension"));
  o.transformer.kind = (nf_transformer_kind)42;
  ck_assert_ptr_null(nf_autoregressive_new(3, 0, &o, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "transformer"));
  o = opts_of(NF_TRANSFORMER_AFFINE, NF_ORDER_NATURAL, 0, NF_ACT_TANH);
  o.transformer.scale_bound = 0.0;
  ck_assert_ptr_null(nf_autoregressive_new(3, 0, &o, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "scale_bound"));
  o = opts_of(NF_TRANSFORMER_AFFINE, (nf_order_kind)7, 0, NF_ACT_TANH);
  ck_assert_ptr_null(nf_autoregressive_new(3, 0, &o, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "order"));
  const size_t zero[2] = {4, 0};
  o = opts_of(NF_TRANSFORMER_AFFINE, NF_ORDER_NATURAL, 0, NF_ACT_TANH);
  o.hidden = zero;
  ck_assert_ptr_null(nf_autoregressive_new(3, 0, &o, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "width 0"));
  /* NULL options: the defaults (MAF affine, 64 x 64, relu) */
  nf_layer *def = nf_autoregressive_new(2, 0, NULL, NULL);
  ck_assert_ptr_nonnull(def);
  ck_assert_uint_eq(nf_layer_n_params(def), (2 + 1) * 64 + (64 + 1) * 64 + (64 + 1) * 4);
  nf_layer_free(def);
}
END_TEST

/* th_check_same_maps with theta ~ N(0, 0.3^2) from seed. */
static void assert_same_maps(const nf_layer *a, const nf_layer *b, uint64_t seed)
{
  double *theta = th_random_theta(a, seed, 0.3);
  th_check_same_maps(a, b, theta, N_ROWS, seed + 1);
  free(theta);
}

/* Saves layer through its family and loads it back through the registry. */
static nf_layer *save_load(const nf_layer *layer, nf_config **cfg_out)
{
  const nf_layer_type *type = nf_layer_type_find(nf_layer_name(layer));
  ck_assert_ptr_nonnull(type);
  nf_config *cfg = nf_config_new();
  ck_assert_int_eq(type->save(layer, cfg), NF_OK);
  nf_layer *back = type->load(nf_layer_dim(layer), nf_layer_ctx_dim(layer), cfg, NULL);
  ck_assert_msg(back != NULL, "load: %s", nf_errmsg());
  if (cfg_out) *cfg_out = cfg;
  else nf_config_free(cfg);
  return back;
}

/* Every transformer and order, with context or not, a seed above 2^63, and
   inverses (of autoregressive, linear_lu and standardize, whose constants
   are nested tensors) rebuild the same maps; loaded layers start as the identity. */
START_TEST(test_save_load)
{
  nf_rng rng;
  nf_rng_seed(&rng, 31);
  for (size_t t = 0; t < N_TF; t++)
    for (int order = NF_ORDER_NATURAL; order <= NF_ORDER_RANDOM; order++)
      for (size_t c = 0; c <= 2; c += 2) {
        nf_layer *layer = make_ar(5, c, kinds[t], (nf_order_kind)order, 0xfedcba9876543210ULL,
                                  NF_ACT_ELU, &rng);
        nf_config *cfg = NULL;
        nf_layer *back = save_load(layer, &cfg);
        const char *s = NULL;
        ck_assert_int_eq(nf_config_get_string(cfg, "order_seed", &s), NF_OK);
        ck_assert_str_eq(s, "18364758544493064720");
        th_check_identity(back, N_ROWS, 60 + c, identity_tol(kinds[t])); /* zero weights */
        assert_same_maps(layer, back, 40 + c);
        nf_layer *inv = nf_inverse_new(layer), *inv_back = save_load(inv, NULL);
        ck_assert_str_eq(nf_layer_name(nf_inverse_inner(inv_back)), "autoregressive");
        assert_same_maps(inv, inv_back, 50 + c);
        nf_layer_free(inv);
        nf_layer_free(inv_back);
        nf_layer_free(back);
        nf_config_free(cfg);
      }
  const double shift[3] = {0.5, -1, 2}, scale[3] = {2, 0.25, 1.5};
  nf_layer *pre[3] = {nf_inverse_new(nf_standardize_new(3, shift, scale)),
                      nf_inverse_new(nf_linear_lu_new(3, NULL, NF_DIAG_EXP, &rng)),
                      nf_inverse_new(nf_inverse_new(nf_standardize_new(3, shift, scale)))};
  for (size_t k = 0; k < 3; k++) {
    nf_config *cfg = NULL;
    nf_layer *back = save_load(pre[k], &cfg);
    ck_assert_int_eq(nf_config_has(cfg, "inner_config.shift"), k == 0);
    ck_assert_int_eq(nf_config_has(cfg, "inner_config.inner_config.shift"), k == 2);
    assert_same_maps(pre[k], back, 60 + k);
    nf_layer_free(back);
    nf_layer_free(pre[k]);
    nf_config_free(cfg);
  }
}
END_TEST

/* A valid saved configuration of an autoregressive layer on R^3, with key
   skip left out, then a bad value for key `bad` (if non-NULL). */
static nf_config *saved_config(const char *skip, const char *bad)
{
  const size_t perm[3] = {0, 1, 2}, hidden[1] = {4};
  nf_config *cfg = nf_config_new();
  const char *keys[7] = {"transformer", "scale_bound", "hidden", "activation", "order",
                         "order_seed", "permutation"};
  for (size_t k = 0; k < 7; k++) {
    const char *key = keys[k];
    int b = bad && !strcmp(bad, key);
    if (!strcmp(skip, key)) continue;
    if (k == 0) nf_config_set_string(cfg, key, b ? "sigmoid" : "affine");
    if (k == 1) nf_config_set_real(cfg, key, b ? -1.0 : 3.0);
    if (k == 2) nf_config_set_sizes(cfg, key, 1, b ? perm : hidden); /* 0: a zero width */
    if (k == 3) nf_config_set_string(cfg, key, b ? "relu6" : "tanh");
    if (k == 4) nf_config_set_string(cfg, key, b ? "sorted" : "natural");
    if (k == 5) nf_config_set_string(cfg, key, b ? "-3" : "7");
    if (k == 6) nf_config_set_sizes(cfg, key, b ? 2 : 3, perm);
  }
  return cfg;
}

/* Loading refuses a missing or bad key with NF_EFORMAT and a message naming it. */
START_TEST(test_load_refuses)
{
  const nf_layer_type *type = nf_layer_type_find("autoregressive");
  nf_config *cfg = saved_config("", NULL);
  nf_layer *ok = type->load(3, 0, cfg, NULL);
  ck_assert_msg(ok != NULL, "%s", nf_errmsg());
  ck_assert_uint_eq(nf_layer_n_params(ok), (3 + 1) * 4 + (4 + 1) * 6);
  nf_layer_free(ok);
  nf_config_free(cfg);
  const char *keys[7] = {"transformer", "scale_bound", "hidden", "activation", "order",
                         "order_seed", "permutation"};
  const char *why[7] = {"sigmoid", "scale_bound", "width 0", "relu6", "sorted", "-3", "2 entries"};
  for (size_t k = 0; k < 7; k++)
    for (int b = 0; b < 2; b++) {
      nf_config *c = saved_config(b ? "" : keys[k], b ? keys[k] : NULL);
      nf_layer *l = type->load(3, 0, c, NULL);
      ck_assert_msg(l == NULL, "loaded with key %s %s", keys[k], b ? "bad" : "missing");
      ck_assert_int_eq(nf_last_status(), NF_EFORMAT);
      const char *want = b ? why[k] : keys[k];
      ck_assert_msg(strstr(nf_errmsg(), "autoregressive") && strstr(nf_errmsg(), want),
                    "%s: message '%s'", want, nf_errmsg());
      nf_config_free(c);
    }
  /* a permutation other than the order the kind gives */
  cfg = nf_config_new();
  const size_t perm[3] = {1, 0, 2}, hidden[1] = {4};
  nf_config_set_string(cfg, "transformer", "additive");
  nf_config_set_sizes(cfg, "hidden", 1, hidden);
  nf_config_set_string(cfg, "activation", "tanh");
  nf_config_set_string(cfg, "order", "natural");
  nf_config_set_string(cfg, "order_seed", "7");
  nf_config_set_sizes(cfg, "permutation", 3, perm);
  ck_assert_ptr_null(type->load(3, 0, cfg, NULL));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "permutation"));
  nf_config_free(cfg);
  /* the inverse: an unknown inner family, a missing inner configuration */
  const nf_layer_type *inv = nf_layer_type_find("inverse");
  ck_assert_ptr_nonnull(inv);
  cfg = nf_config_new();
  nf_config_set_string(cfg, "inner", "no_such_family");
  nf_config *sub = nf_config_new();
  nf_config_set_config(cfg, "inner_config", sub);
  ck_assert_ptr_null(inv->load(3, 0, cfg, NULL));
  ck_assert_int_eq(nf_last_status(), NF_EFORMAT);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "no_such_family"));
  nf_config_free(cfg);
  cfg = nf_config_new();
  nf_config_set_string(cfg, "inner", "affine");
  ck_assert_ptr_null(inv->load(3, 0, cfg, NULL));
  ck_assert_int_eq(nf_last_status(), NF_EFORMAT);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "inner_config"));
  nf_config_free(cfg);
  nf_config_free(sub);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_numerics, test_inverse_numerics, test_identity_and_accumulation,
                          test_flows_and_threads, test_grid_mass, test_bad_calls_and_options,
                          test_save_load, test_load_refuses, NULL};
  return th_run_tests("autoregressive", 120, tests);
}
