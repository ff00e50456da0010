/* tests/test_coupling.c — additive and affine coupling layers: round trip,
   log-det against a finite-difference Jacobian, vjp against central
   differences (input, context, parameters; both directions), log-det
   cancellation, the soft clamp, identity start, masks, bad options and inputs,
   kind names, save and load; and the internal transformers on their own
   (forward, inverse, backward against finite differences; identity values).
   Linked -static: the transformers and nf_config_new are internal. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "io/io_internal.h"
#include "nflow/layer_impl.h"
#include "nflow/config.h"
#include "transformer.h"

#define N_ROWS 6
#define BOUND 2.0
#define RT_TOL 1e-10
#define VJP_STEP 1e-5
#define CANCEL_TOL 1e-10

static const size_t hidden2[2] = {8, 6};

/* The default options of a transformer kind with the affine soft clamp at bound. */
static nf_transformer_spec spec_of(nf_transformer_kind kind, double bound)
{
  nf_transformer_spec s = nf_transformer_spec_default(kind);
  s.scale_bound = bound;
  return s;
}

/* A coupling of the given kind on R^d with context width c; mask_kind 0 = half,
   1 = alternate, with the given parity; activation act. Aborts the test on failure. */
static nf_layer *make_coupling(nf_transformer_kind kind, size_t d, size_t c, int mask_kind,
                               int parity, nf_activation act)
{
  unsigned char mask[8];
  (mask_kind ? nf_coupling_mask_alternate : nf_coupling_mask_half)(d, parity, mask);
  nf_coupling_opts o = {spec_of(kind, BOUND), mask, 2, hidden2, act, NF_PRECISION_DOUBLE};
  nf_layer *layer = nf_coupling_new(d, c, &o, NULL);
  ck_assert_msg(layer != NULL, "nf_coupling_new failed: %s", nf_errmsg());
  return layer;
}

/* Every numerical check of one configuration, with parameters ~ N(0, 0.3^2). */
static void check_config(nf_transformer_kind kind, size_t d, size_t c, int mask_kind, int parity,
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
            check_config((nf_transformer_kind)kind, dims[di], ctxs[ci], mk, par, acts[seed % 3],
                         seed);
}
END_TEST

/* With an rng the layer starts as the exact identity, but its parameter
   gradient is not zero (the hidden layers are drawn). */
START_TEST(test_identity_start)
{
  unsigned char mask[4];
  nf_coupling_mask_alternate(4, 0, mask);
  nf_coupling_opts o = {spec_of(NF_TRANSFORMER_AFFINE, 3.0), mask, 2, hidden2, NF_ACT_RELU, NF_PRECISION_DOUBLE};
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
  nf_layer *layer = make_coupling(NF_TRANSFORMER_AFFINE, 5, 0, 0, 0, NF_ACT_TANH);
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
  nf_layer *layer = make_coupling(NF_TRANSFORMER_AFFINE, 5, 3, 1, 1, NF_ACT_TANH);
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
  nf_layer *layer = make_coupling(NF_TRANSFORMER_ADDITIVE, 5, 0, 1, 0, NF_ACT_TANH);
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
  nf_coupling_opts o = {spec_of(NF_TRANSFORMER_AFFINE, 3.0), ok, 2, hidden2, NF_ACT_TANH, NF_PRECISION_DOUBLE}, b;
  expect_bad(3, NULL, "NULL options");
  expect_bad(0, &o, "dim 0");
  b = o; b.mask = NULL; expect_bad(3, &b, "NULL mask");
  b = o; b.mask = ones; expect_bad(3, &b, "all-ones mask");
  b = o; b.mask = zeros; expect_bad(3, &b, "all-zeros mask");
  b = o; b.mask = two; expect_bad(3, &b, "mask entry 2");
  b = o; b.transformer.kind = (nf_transformer_kind)7; expect_bad(3, &b, "unknown kind");
  b = o; b.transformer.scale_bound = 0; expect_bad(3, &b, "scale_bound 0");
  b = o; b.transformer.scale_bound = -1; expect_bad(3, &b, "scale_bound -1");
  b = o; b.transformer.scale_bound = NAN; expect_bad(3, &b, "scale_bound NaN");
  b = o; b.transformer.scale_bound = INFINITY; expect_bad(3, &b, "scale_bound Inf");
  b = o; b.hidden = NULL; expect_bad(3, &b, "NULL hidden widths");
  b = o; b.hidden = zero_width; expect_bad(3, &b, "zero hidden width");
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "width 0"));
  b = o; b.act = (nf_activation)42; expect_bad(3, &b, "unknown activation");
  expect_bad(1, &o, "dim 1 (no room for both halves)");
  /* additive ignores scale_bound; zero hidden layers is a single affine conditioner */
  b = o; b.transformer.kind = NF_TRANSFORMER_ADDITIVE; b.transformer.scale_bound = 0; b.n_hidden = 0; b.hidden = NULL;
  nf_layer *layer = nf_coupling_new(3, 0, &b, NULL);
  ck_assert_ptr_nonnull(layer);
  ck_assert_uint_eq(nf_layer_n_params(layer), (1 + 1) * 2);
  nf_layer_free(layer);
}
END_TEST

START_TEST(test_bad_inputs)
{
  nf_layer *layer = make_coupling(NF_TRANSFORMER_AFFINE, 2, 3, 0, 0, NF_ACT_TANH);
  double *theta = th_random_theta(layer, 3, 0.3);
  th_check_bad_calls(layer, theta);
  nf_layer_free(layer);
  free(theta);
}
END_TEST

/* Couplings of either kind for the flow-level checks: alternate masks with
   the parity of the rng's next draw, context width ctx_dim, parameters from rng. */
static nf_layer *make_kind(nf_transformer_kind kind, size_t dim, size_t ctx_dim, nf_rng *rng)
{
  unsigned char mask[8];
  nf_coupling_mask_alternate(dim, (int)(nf_rng_u64(rng) & 1), mask);
  nf_coupling_opts o = {spec_of(kind, BOUND), mask, 2, hidden2, NF_ACT_TANH, NF_PRECISION_DOUBLE};
  return nf_coupling_new(dim, ctx_dim, &o, rng);
}

static nf_layer *make_additive(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_kind(NF_TRANSFORMER_ADDITIVE, dim, ctx_dim, rng);
}

static nf_layer *make_affine_coupling(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_kind(NF_TRANSFORMER_AFFINE, dim, ctx_dim, rng);
}

/* Both kinds in conditional flows (log p depends on ctx; NF_EDIM for another
   context width) and shared by two threads (with a context). */
START_TEST(test_conditional_flows_and_threads)
{
  th_check_family_flows(make_additive, 0.3);
  th_check_family_flows(make_affine_coupling, 0.3);
}
END_TEST

/* ---- the transformers on their own ---- */

#define TF_N 4
#define TF_DB 3
#define TF_MAX_RAW 2
#define TF_STEP 1e-6
#define TF_TOL 1e-7

static const nf_transformer *const transformers[] = {&nf_transformer_additive,
                                                     &nf_transformer_affine};

/* tf's map in direction dir: out = τ^{+-1}(in; h), logdet (zeroed first). */
static void tf_apply(const nf_transformer *tf, const nf_transformer_opts *o, nf_dir dir,
                     const double *h, const double *in, double *out, double *logdet, double *rec)
{
  for (size_t i = 0; i < TF_N; i++) logdet[i] = 0;
  nf_status st = dir == NF_FORWARD ? tf->forward(o, TF_N, TF_DB, h, in, out, logdet, rec)
                                   : tf->inverse(o, TF_N, TF_DB, h, in, out, logdet, rec);
  ck_assert_int_eq(st, NF_OK);
}

/* L = sum(g_out out) + sum(g_l logdet) of tf's map in direction dir. */
static double tf_loss(const nf_transformer *tf, const nf_transformer_opts *o, nf_dir dir,
                      const double *h, const double *in, const double *g_out, const double *g_l)
{
  double out[TF_N * TF_DB], ld[TF_N], rec[TF_N * TF_DB * 4], L = 0;
  tf_apply(tf, o, dir, h, in, out, ld, rec);
  for (size_t k = 0; k < TF_N * TF_DB; k++) L += g_out[k] * out[k];
  for (size_t i = 0; i < TF_N; i++) L += g_l[i] * ld[i];
  return L;
}

/* Central difference of tf_loss along entry k of v (in or h). */
static double tf_fd(const nf_transformer *tf, const nf_transformer_opts *o, nf_dir dir,
                    double *h, double *in, double *v, size_t k, const double *g_out,
                    const double *g_l)
{
  double keep = v[k];
  v[k] = keep + TF_STEP;
  double up = tf_loss(tf, o, dir, h, in, g_out, g_l);
  v[k] = keep - TF_STEP;
  double down = tf_loss(tf, o, dir, h, in, g_out, g_l);
  v[k] = keep;
  return (up - down) / (2 * TF_STEP);
}

/* Each transformer in both directions, on raw values ~ N(0, 1) (affine with
   B = 2): round trip, log-det cancellation, an elementwise Jacobian whose
   log-diagonal sums to the log-det, and backward against central differences
   for the input and the raw values (g_in NULL leaves g_h as it was). */
START_TEST(test_transformers_fd)
{
  nf_transformer_opts o = nf_transformer_spec_default(NF_TRANSFORMER_AFFINE);
  o.scale_bound = 2.0;
  nf_rng rng;
  nf_rng_seed(&rng, 77);
  for (size_t t = 0; t < sizeof transformers / sizeof *transformers; t++) {
    const nf_transformer *tf = transformers[t];
    size_t nr = tf->n_raw(&o), nh = TF_N * TF_DB * nr;
    ck_assert_uint_le(nr, TF_MAX_RAW);
    ck_assert_uint_le(tf->n_record(&o), 4);
    ck_assert_int_eq(tf->check_opts(&o, "test"), NF_OK);
    double h[TF_N * TF_DB * TF_MAX_RAW], x[TF_N * TF_DB], y[TF_N * TF_DB], x2[TF_N * TF_DB];
    double ld_f[TF_N], ld_i[TF_N], rec[TF_N * TF_DB * 4];
    th_randn(&rng, nh, 1.0, h);
    th_randn(&rng, TF_N * TF_DB, 1.0, x);
    tf_apply(tf, &o, NF_FORWARD, h, x, y, ld_f, rec);
    tf_apply(tf, &o, NF_INVERSE, h, y, x2, ld_i, rec);
    double cancel = 0;
    for (size_t i = 0; i < TF_N; i++) cancel = fmax(cancel, fabs(ld_f[i] + ld_i[i]));
    printf("transformer %s: round trip %.2e, log-det cancellation %.2e\n", tf->name,
           th_max_abs_diff(TF_N * TF_DB, x2, x), cancel);
    ck_assert_double_le(th_max_abs_diff(TF_N * TF_DB, x2, x), 1e-13);
    ck_assert_double_le(cancel, 1e-13);
    for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
      double *in = dir == NF_FORWARD ? x : y, out[TF_N * TF_DB], ld[TF_N];
      /* elementwise Jacobian, its log-diagonal summing to the log-det */
      double sum_log[TF_N] = {0}, off_diag = 0;
      for (size_t k = 0; k < TF_N * TF_DB; k++) {
        double keep = in[k], up[TF_N * TF_DB], down[TF_N * TF_DB];
        in[k] = keep + TF_STEP;
        tf_apply(tf, &o, (nf_dir)dir, h, in, up, ld, rec);
        in[k] = keep - TF_STEP;
        tf_apply(tf, &o, (nf_dir)dir, h, in, down, ld, rec);
        in[k] = keep;
        for (size_t m = 0; m < TF_N * TF_DB; m++)
          if (m != k) off_diag = fmax(off_diag, fabs(up[m] - down[m]));
        sum_log[k / TF_DB] += log(fabs((up[k] - down[k]) / (2 * TF_STEP)));
      }
      tf_apply(tf, &o, (nf_dir)dir, h, in, out, ld, rec);
      double ld_err = 0;
      for (size_t i = 0; i < TF_N; i++) ld_err = fmax(ld_err, fabs(sum_log[i] - ld[i]));
      ck_assert_double_eq(off_diag, 0.0);
      ck_assert_double_le(ld_err, 1e-8);
      /* backward against central differences */
      double g_out[TF_N * TF_DB], g_l[TF_N], g_in[TF_N * TF_DB], g_h[TF_N * TF_DB * TF_MAX_RAW];
      double fd_in[TF_N * TF_DB], fd_h[TF_N * TF_DB * TF_MAX_RAW], g_h2[TF_N * TF_DB * TF_MAX_RAW];
      th_randn(&rng, TF_N * TF_DB, 1.0, g_out);
      th_randn(&rng, TF_N, 1.0, g_l);
      tf->backward(&o, (nf_dir)dir, TF_N, TF_DB, h, in, out, rec, g_out, g_l, g_in, g_h);
      for (size_t k = 0; k < TF_N * TF_DB; k++)
        fd_in[k] = tf_fd(tf, &o, (nf_dir)dir, h, in, in, k, g_out, g_l);
      for (size_t k = 0; k < nh; k++) fd_h[k] = tf_fd(tf, &o, (nf_dir)dir, h, in, h, k, g_out, g_l);
      double e_in = th_rel_err(TF_N * TF_DB, g_in, fd_in, 1e-3), e_h = th_rel_err(nh, g_h, fd_h, 1e-3);
      printf("transformer %s %s: log-det vs FD %.2e, backward vs FD: in %.2e, raw %.2e (<= %g)\n",
             tf->name, nf_dir_name((nf_dir)dir), ld_err, e_in, e_h, TF_TOL);
      ck_assert_double_le(e_in, TF_TOL);
      ck_assert_double_le(e_h, TF_TOL);
      /* no input cotangent wanted: the same raw cotangents, exactly */
      tf_apply(tf, &o, (nf_dir)dir, h, in, out, ld, rec);
      tf->backward(&o, (nf_dir)dir, TF_N, TF_DB, h, in, out, rec, g_out, g_l, NULL, g_h2);
      ck_assert_mem_eq(g_h2, g_h, nh * sizeof *g_h);
    }
  }
}
END_TEST

/* identity_init's raw values make τ the identity, log-det 0, in both directions;
   affine refuses a bound that is not finite and > 0; options survive a config. */
START_TEST(test_transformers_identity_and_opts)
{
  nf_transformer_opts o = nf_transformer_spec_default(NF_TRANSFORMER_AFFINE);
  o.scale_bound = 3.0;
  nf_rng rng;
  nf_rng_seed(&rng, 8);
  for (size_t t = 0; t < sizeof transformers / sizeof *transformers; t++) {
    const nf_transformer *tf = transformers[t];
    size_t nr = tf->n_raw(&o);
    double h[TF_N * TF_DB * TF_MAX_RAW], x[TF_N * TF_DB], y[TF_N * TF_DB], ld[TF_N];
    double rec[TF_N * TF_DB * 4];
    for (size_t k = 0; k < TF_N * TF_DB; k++) tf->identity_init(&o, h + k * nr);
    th_randn(&rng, TF_N * TF_DB, 2.0, x);
    for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
      tf_apply(tf, &o, (nf_dir)dir, h, x, y, ld, rec);
      ck_assert_mem_eq(y, x, sizeof x);
      for (size_t i = 0; i < TF_N; i++) ck_assert_double_eq(ld[i], 0.0);
    }
    nf_config *cfg = nf_config_new();
    ck_assert_ptr_nonnull(cfg);
    nf_transformer_opts back = {0};
    if (tf->save_opts) ck_assert_int_eq(tf->save_opts(&o, cfg), NF_OK);
    if (tf->load_opts) ck_assert_int_eq(tf->load_opts(cfg, &back), NF_OK);
    ck_assert_int_eq(tf->check_opts(&back, "test"), NF_OK);
    nf_config_free(cfg);
  }
  ck_assert_uint_eq(nf_transformer_additive.n_raw(&o), 1);
  ck_assert_uint_eq(nf_transformer_affine.n_raw(&o), 2);
  const double bad[3] = {0.0, -1.0, NAN};
  for (size_t k = 0; k < 3; k++) {
    nf_transformer_opts b = nf_transformer_spec_default(NF_TRANSFORMER_AFFINE);
    b.scale_bound = bad[k];
    ck_assert_int_eq(nf_transformer_affine.check_opts(&b, "fn"), NF_EINVAL);
    ck_assert_ptr_nonnull(strstr(nf_errmsg(), "scale_bound"));
    ck_assert_int_eq(nf_transformer_additive.check_opts(&b, "fn"), NF_OK);
  }
}
END_TEST

/* ---- names, save and load ---- */

START_TEST(test_kind_names)
{
  nf_transformer_kind k = NF_TRANSFORMER_ADDITIVE;
  const char *names[4] = {"additive", "affine", "spline", "circular-spline"};
  for (int t = 0; t < 4; t++) {
    ck_assert_str_eq(nf_transformer_kind_name((nf_transformer_kind)t), names[t]);
    ck_assert_int_eq(nf_transformer_kind_parse(names[t], &k), NF_OK);
    ck_assert_int_eq(k, t);
    ck_assert_str_eq(nf_transformer_of_kind(k)->name, names[t]);
  }
  ck_assert_str_eq(nf_transformer_kind_name((nf_transformer_kind)7), "?");
  ck_assert_ptr_null(nf_transformer_of_kind((nf_transformer_kind)7));
  ck_assert_int_eq(nf_transformer_kind_parse("sline", &k), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "sline"));
  ck_assert_int_eq(k, NF_TRANSFORMER_CIRCULAR_SPLINE);
  ck_assert_int_eq(nf_transformer_kind_parse(NULL, &k), NF_EINVAL);
  ck_assert_int_eq(nf_transformer_kind_parse("affine", NULL), NF_EINVAL);
  for (int a = NF_ACT_IDENTITY; a <= NF_ACT_SOFTPLUS; a++) {
    nf_activation back = NF_ACT_IDENTITY;
    ck_assert_int_eq(nf_activation_parse(nf_activation_name((nf_activation)a), &back), NF_OK);
    ck_assert_int_eq(back, a);
  }
  ck_assert_str_eq(nf_activation_name((nf_activation)42), "?");
}
END_TEST

/* apply of a and b with the same theta agree bit for bit in both directions. */
static void assert_same_maps(const nf_layer *a, const nf_layer *b, const double *theta,
                             uint64_t seed)
{
  size_t d = nf_layer_dim(a), c = nf_layer_ctx_dim(a);
  double *z = th_random_points(N_ROWS, d, seed, 1.0);
  double *ctx = c ? th_random_points(N_ROWS, c, seed + 1, 1.0) : NULL;
  double xa[N_ROWS * 8], xb[N_ROWS * 8], la[N_ROWS] = {0}, lb[N_ROWS] = {0};
  double *wa = nf_layer_work_new(a, N_ROWS), *wb = nf_layer_work_new(b, N_ROWS);
  for (int dir = NF_FORWARD; dir <= NF_INVERSE; dir++) {
    ck_assert_int_eq(nf_layer_apply(a, theta, (nf_dir)dir, N_ROWS, z, ctx, xa, la, NULL, wa), NF_OK);
    ck_assert_int_eq(nf_layer_apply(b, theta, (nf_dir)dir, N_ROWS, z, ctx, xb, lb, NULL, wb), NF_OK);
    ck_assert_mem_eq(xa, xb, N_ROWS * d * sizeof *xa);
    ck_assert_mem_eq(la, lb, sizeof la);
  }
  nf_layer_work_free(a, N_ROWS, wa);
  nf_layer_work_free(b, N_ROWS, wb);
  free(z);
  free(ctx);
}

/* Saved and loaded through the registry: the same map for the same theta
   (both kinds, an irregular mask, context or not), zero initial parameters. */
START_TEST(test_save_load)
{
  const nf_layer_type *type = nf_layer_type_find("coupling");
  ck_assert_ptr_nonnull(type);
  const unsigned char mask[5] = {0, 1, 1, 0, 1};
  const size_t hidden[2] = {5, 3};
  for (int kind = 0; kind < 2; kind++)
    for (size_t c = 0; c <= 2; c += 2) {
      nf_coupling_opts o = {spec_of((nf_transformer_kind)kind, 2.5), mask, 2, hidden, NF_ACT_ELU, NF_PRECISION_DOUBLE};
      nf_rng rng;
      nf_rng_seed(&rng, 31 + (uint64_t)kind);
      nf_layer *layer = nf_coupling_new(5, c, &o, &rng);
      ck_assert_ptr_nonnull(layer);
      nf_config *cfg = nf_config_new();
      ck_assert_int_eq(type->save(layer, cfg), NF_OK);
      const char *s = NULL;
      ck_assert_int_eq(nf_config_get_string(cfg, "transformer", &s), NF_OK);
      ck_assert_str_eq(s, kind ? "affine" : "additive");
      ck_assert_int_eq(nf_config_has(cfg, "scale_bound"), kind == NF_TRANSFORMER_AFFINE);
      ck_assert_int_eq(nf_config_has(cfg, "kind"), 0);
      nf_layer *back = type->load(5, c, cfg, NULL);
      ck_assert_msg(back != NULL, "load: %s", nf_errmsg());
      ck_assert_uint_eq(nf_layer_n_params(back), nf_layer_n_params(layer));
      ck_assert_uint_eq(nf_layer_ctx_dim(back), c);
      for (size_t k = 0; k < nf_layer_n_params(back); k++)
        ck_assert_double_eq(nf_layer_init_params(back)[k], 0.0);
      double *theta = th_random_theta(layer, 40 + c, 0.3);
      assert_same_maps(layer, back, theta, 50 + c);
      free(theta);
      nf_layer_free(back);
      nf_layer_free(layer);
      nf_config_free(cfg);
    }
}
END_TEST

/* A valid saved configuration of an affine coupling on R^3 as earlier
   versions wrote it (with "kind"), with key `skip` left out, then `extra` (if
   non-NULL) applied. */
static nf_config *saved_config(const char *skip, void (*extra)(nf_config *))
{
  const size_t mask[3] = {1, 0, 0}, hidden[1] = {4};
  nf_config *cfg = nf_config_new();
  ck_assert_ptr_nonnull(cfg);
  if (strcmp(skip, "transformer")) nf_config_set_string(cfg, "transformer", "affine");
  if (strcmp(skip, "kind")) nf_config_set_string(cfg, "kind", "affine");
  if (strcmp(skip, "mask")) nf_config_set_sizes(cfg, "mask", 3, mask);
  if (strcmp(skip, "hidden")) nf_config_set_sizes(cfg, "hidden", 1, hidden);
  if (strcmp(skip, "activation")) nf_config_set_string(cfg, "activation", "tanh");
  if (strcmp(skip, "scale_bound")) nf_config_set_real(cfg, "scale_bound", 3.0);
  if (extra) extra(cfg);
  return cfg;
}

static void set_bad_transformer(nf_config *cfg) { nf_config_set_string(cfg, "transformer", "additive"); }
static void set_spline_transformer(nf_config *cfg) { nf_config_set_string(cfg, "transformer", "spline"); }
static void set_unknown_transformer(nf_config *cfg) { nf_config_set_string(cfg, "transformer", "bogus"); }
static void set_bad_kind(nf_config *cfg) { nf_config_set_string(cfg, "kind", "spline"); }
static void set_bad_activation(nf_config *cfg) { nf_config_set_string(cfg, "activation", "relu6"); }
static void set_short_mask(nf_config *cfg) { const size_t m[2] = {1, 0}; nf_config_set_sizes(cfg, "mask", 2, m); }
static void set_mask_two(nf_config *cfg) { const size_t m[3] = {1, 2, 0}; nf_config_set_sizes(cfg, "mask", 3, m); }
static void set_mask_ones(nf_config *cfg) { const size_t m[3] = {1, 1, 1}; nf_config_set_sizes(cfg, "mask", 3, m); }
static void set_bound_zero(nf_config *cfg) { nf_config_set_real(cfg, "scale_bound", 0.0); }
static void set_zero_width(nf_config *cfg) { const size_t h[1] = {0}; nf_config_set_sizes(cfg, "hidden", 1, h); }

/* The registered coupling loader on R^3 without context. */
static nf_layer *nf_coupling_type_load_for_test(const nf_config *cfg)
{
  return nf_layer_type_find("coupling")->load(3, 0, cfg, NULL);
}

/* Load refuses with NF_EFORMAT and a message naming the coupling and why. */
static void expect_bad_load(const char *skip, void (*extra)(nf_config *), const char *why)
{
  nf_config *cfg = saved_config(skip, extra);
  nf_layer *layer = nf_coupling_type_load_for_test(cfg);
  ck_assert_msg(layer == NULL, "loaded: %s", why);
  ck_assert_int_eq(nf_last_status(), NF_EFORMAT);
  ck_assert_msg(strstr(nf_errmsg(), "coupling") && strstr(nf_errmsg(), why),
                "%s: message '%s'", why, nf_errmsg());
  nf_config_free(cfg);
}

START_TEST(test_load_refuses)
{
  nf_config *cfg = saved_config("", NULL);
  nf_layer *ok = nf_coupling_type_load_for_test(cfg);
  ck_assert_msg(ok != NULL, "%s", nf_errmsg());
  ck_assert_uint_eq(nf_layer_n_params(ok), (1 + 1) * 4 + (4 + 1) * 4);
  nf_layer_free(ok);
  nf_config_free(cfg);
  /* without "kind": the current format, the same layer */
  cfg = saved_config("kind", NULL);
  ok = nf_coupling_type_load_for_test(cfg);
  ck_assert_msg(ok != NULL, "%s", nf_errmsg());
  ck_assert_uint_eq(nf_layer_n_params(ok), (1 + 1) * 4 + (4 + 1) * 4);
  nf_layer_free(ok);
  nf_config_free(cfg);
  const char *keys[5] = {"transformer", "mask", "hidden", "activation", "scale_bound"};
  for (size_t k = 0; k < 5; k++) expect_bad_load(keys[k], NULL, keys[k]);
  expect_bad_load("transformer", set_bad_transformer, "does not match");
  expect_bad_load("kind", set_bad_kind, "spline");
  expect_bad_load("transformer", set_spline_transformer, "'kind': 'affine' does not match");
  expect_bad_load("transformer", set_unknown_transformer, "bogus");
  expect_bad_load("activation", set_bad_activation, "relu6");
  expect_bad_load("mask", set_short_mask, "2 entries");
  expect_bad_load("mask", set_mask_two, "entry 1 is 2");
  expect_bad_load("mask", set_mask_ones, "at least one");
  expect_bad_load("scale_bound", set_bound_zero, "scale_bound");
  expect_bad_load("hidden", set_zero_width, "width 0");
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_numerics, test_identity_start, test_soft_clamp,
                          test_vjp_accumulates, test_masks, test_bad_options, test_bad_inputs,
                          test_conditional_flows_and_threads, test_transformers_fd,
                          test_transformers_identity_and_opts, test_kind_names, test_save_load,
                          test_load_refuses, NULL};
  return th_run_tests("coupling", 30, tests);
}
