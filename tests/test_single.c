/* tests/test_single.c — single-precision network arithmetic
   (nflow/precision.h) in nf_mlp and nf_made and in the layers that own them
   (coupling, autoregressive): single against double passes, backward against
   finite differences, the layers' bijector battery in single precision with
   steps and tolerances fit for float (h = 1e-3, 1e-3), two threads, grid
   mass, save -> load bit for bit, refusals, and training to the same NLL as
   double. Linked -static: nf_config_new is internal. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "io/io_internal.h"
#include "nflow/config.h"
#include "nflow/layer_impl.h"

#define N_ROWS 24
#define AGREE_TOL 1e-5 /* single vs double, norm-wise relative */
#define FD_STEP 1e-3   /* finite-difference step of single-precision maps */
#define FD_TOL 1e-3    /* their relative error */

static const size_t hidden2[2] = {16, 12};
static const nf_activation acts[5] = {NF_ACT_IDENTITY, NF_ACT_RELU, NF_ACT_TANH, NF_ACT_ELU,
                                      NF_ACT_SOFTPLUS};

/* A network under test in both arithmetics: an MLP (made == NULL) of
   n_in -> hidden2 -> n_out, or a MADE on d coordinates with context c. */
typedef struct net_case {
  nf_mlp *mlp[2];   /* [double, single] */
  nf_made *made[2];
  size_t n_in, n_x, n_out, n_params, n_work; /* n_work: enough for both */
} net_case;

static net_case mlp_case(size_t n_in, size_t n_out, nf_activation act)
{
  net_case c = {.n_in = n_in, .n_x = n_in, .n_out = n_out};
  for (int s = 0; s < 2; s++) {
    c.mlp[s] = nf_mlp_new(n_in, 2, hidden2, n_out, act);
    ck_assert_int_eq(nf_mlp_set_precision(c.mlp[s], (nf_precision)s), NF_OK);
    ck_assert_int_eq(nf_mlp_precision(c.mlp[s]), s);
  }
  c.n_params = nf_mlp_n_params(c.mlp[0]);
  c.n_work = nf_mlp_work_size(c.mlp[1], N_ROWS) + nf_mlp_work_size(c.mlp[0], N_ROWS);
  return c;
}

static net_case made_case(size_t d, size_t ctx, nf_activation act)
{
  net_case c = {.n_in = d + ctx, .n_x = d, .n_out = 3 * d};
  for (int s = 0; s < 2; s++) {
    c.made[s] = nf_made_new(d, ctx, 2, hidden2, 3, act, NF_ORDER_RANDOM, 5);
    ck_assert_int_eq(nf_made_set_precision(c.made[s], (nf_precision)s), NF_OK);
    ck_assert_int_eq(nf_made_precision(c.made[s]), s);
  }
  c.n_params = nf_made_n_params(c.made[0]);
  c.n_work = nf_made_work_size(c.made[1], N_ROWS) + nf_made_work_size(c.made[0], N_ROWS);
  return c;
}

static void free_case(net_case *c)
{
  for (int s = 0; s < 2; s++) {
    nf_mlp_free(c->mlp[s]);
    nf_made_free(c->made[s]);
  }
}

/* y = net_s(in) (in: n x n_in, the MADE's [x, ctx] split per row). */
static void net_forward(const net_case *c, int s, const double *theta, const double *in,
                        double *y, double *work)
{
  if (c->mlp[s]) {
    nf_mlp_forward(c->mlp[s], theta, N_ROWS, in, y, work);
    return;
  }
  size_t d = c->n_x, ctx = c->n_in - d;
  double x[N_ROWS * 8], cx[N_ROWS * 8];
  for (size_t i = 0; i < N_ROWS; i++) {
    memcpy(x + i * d, in + i * c->n_in, d * sizeof *x);
    memcpy(cx + i * ctx, in + i * c->n_in + d, ctx * sizeof *cx);
  }
  nf_made_mask(c->made[s], theta, work);
  nf_made_forward(c->made[s], N_ROWS, x, ctx ? cx : NULL, y, work);
}

/* g_in = dL/din (n x n_in) and g_theta += dL/dtheta after net_forward. */
static void net_backward(const net_case *c, int s, const double *theta, const double *in,
                         const double *g_y, double *g_in, double *g_theta, double *work)
{
  if (c->mlp[s]) {
    nf_mlp_backward(c->mlp[s], theta, N_ROWS, in, g_y, g_in, g_theta, work);
    return;
  }
  size_t d = c->n_x, ctx = c->n_in - d;
  double gx[N_ROWS * 8], gc[N_ROWS * 8] = {0};
  nf_made_backward(c->made[s], N_ROWS, g_y, gx, ctx ? gc : NULL, g_theta, work);
  for (size_t i = 0; i < N_ROWS; i++) {
    memcpy(g_in + i * c->n_in, gx + i * d, d * sizeof *gx);
    memcpy(g_in + i * c->n_in + d, gc + i * ctx, ctx * sizeof *gc);
  }
}

/* L = <g_y, net_s(in; theta)>. */
static double net_loss(const net_case *c, int s, const double *theta, const double *in,
                       const double *g_y, double *work)
{
  double y[N_ROWS * 24], l = 0;
  net_forward(c, s, theta, in, y, work);
  for (size_t k = 0; k < N_ROWS * c->n_out; k++) l += g_y[k] * y[k];
  return l;
}

/* Central differences (step h) of net_loss in v[0..n) (in or theta). */
static void net_fd(const net_case *c, int s, double *theta, double *in, double *v, size_t n,
                   const double *g_y, double h, double *fd, double *work)
{
  for (size_t k = 0; k < n; k++) {
    double v0 = v[k];
    v[k] = v0 + h;
    double lp = net_loss(c, s, theta, in, g_y, work);
    v[k] = v0 - h;
    double lm = net_loss(c, s, theta, in, g_y, work);
    v[k] = v0;
    fd[k] = (lp - lm) / (2 * h);
  }
}

/* Single against double on one case (theta ~ N(0, 0.5^2), rows ~ N(0, 1),
   seed 42): outputs, input and parameter gradients agree to AGREE_TOL;
   single backward against central differences (FD_STEP) to FD_TOL (not for
   relu, whose kinks a step of 1e-3 crosses); g_theta
   accumulates (ADDED to 1); a second backward after one forward repeats the
   first bit for bit; masked MADE entries get exactly 0. */
static void check_case(const char *label, net_case *c, int fd_check)
{
  nf_rng rng;
  nf_rng_seed(&rng, 42);
  const size_t ni = N_ROWS * c->n_in, no = N_ROWS * c->n_out, np = c->n_params;
  double *theta = malloc(np * sizeof *theta), *work = malloc(c->n_work * sizeof *work);
  double in[N_ROWS * 8], g_y[N_ROWS * 24], y[2][N_ROWS * 24], g_in[3][N_ROWS * 8];
  double *g_th[3], *fd = malloc((np + ni) * sizeof *fd);
  th_randn(&rng, np, 0.5, theta);
  th_randn(&rng, ni, 1.0, in);
  th_randn(&rng, no, 1.0, g_y);
  for (int s = 0; s < 3; s++) g_th[s] = calloc(np, sizeof **g_th);
  for (int s = 0; s < 2; s++) {
    net_forward(c, s, theta, in, y[s], work);
    net_backward(c, s, theta, in, g_y, g_in[s], g_th[s], work);
  }
  for (size_t k = 0; k < np; k++) g_th[2][k] = 1.0;
  net_backward(c, 1, theta, in, g_y, g_in[2], g_th[2], work); /* again, after one forward */
  for (size_t k = 0; k < np; k++) g_th[2][k] -= 1.0;
  double e_y = th_rel_err(no, y[1], y[0], 1e-300), e_gx = th_rel_err(ni, g_in[1], g_in[0], 1e-300),
         e_gp = th_rel_err(np, g_th[1], g_th[0], 1e-300);
  ck_assert_msg(memcmp(g_in[2], g_in[1], ni * sizeof **g_in) == 0, "%s: 2nd backward", label);
  ck_assert_double_le(th_rel_err(np, g_th[2], g_th[1], 1e-300), 1e-14); /* 1 + g - 1 */
  double f_p = 0, f_x = 0;
  if (fd_check) {
    net_fd(c, 1, theta, in, theta, np, g_y, FD_STEP, fd, work);
    net_fd(c, 1, theta, in, in, ni, g_y, FD_STEP, fd + np, work);
    f_p = th_rel_err(np, g_th[1], fd, 1e-300);
    f_x = th_rel_err(ni, g_in[1], fd + np, 1e-300);
  }
  printf("%s: single vs double: y %.2e, g_in %.2e, g_theta %.2e; single vs FD (h %.0e): "
         "g_in %.2e, g_theta %.2e\n", label, e_y, e_gx, e_gp, FD_STEP, f_x, f_p);
  ck_assert_msg(e_y <= AGREE_TOL && e_gx <= AGREE_TOL && e_gp <= AGREE_TOL, "%s: agreement", label);
  ck_assert_msg(e_y > 0, "%s: single equals double bit for bit (not single?)", label);
  ck_assert_msg(f_p <= FD_TOL && f_x <= FD_TOL, "%s: finite differences", label);
  const double *mask = c->made[1] ? nf_made_mask_of(c->made[1]) : NULL;
  for (size_t k = 0; mask && k < np; k++)
    if (mask[k] == 0) ck_assert_double_eq(g_th[1][k], 0.0);
  for (int s = 0; s < 3; s++) free(g_th[s]);
  free(theta);
  free(work);
  free(fd);
}

START_TEST(test_mlp_single)
{
  for (int a = 0; a < 5; a++) {
    net_case c = mlp_case(5, 3, acts[a]);
    char label[64];
    snprintf(label, sizeof label, "mlp 5-16-12-3 %s", nf_activation_name(acts[a]));
    check_case(label, &c, acts[a] != NF_ACT_RELU);
    free_case(&c);
  }
  /* no hidden layer: single needs a workspace (NULL: y untouched) */
  nf_mlp *one = nf_mlp_new(2, 0, NULL, 1, NF_ACT_TANH);
  ck_assert_int_eq(nf_mlp_set_precision(one, NF_PRECISION_SINGLE), NF_OK);
  ck_assert_uint_gt(nf_mlp_work_size(one, 1), 0);
  double p[3] = {1, 2, 3}, x[2] = {1, 1}, y = -7;
  nf_mlp_forward(one, p, 1, x, &y, NULL);
  ck_assert_double_eq(y, -7);
  double *w = malloc(nf_mlp_work_size(one, 1) * sizeof *w);
  nf_mlp_forward(one, p, 1, x, &y, w);
  ck_assert_double_eq(y, 6);
  free(w);
  nf_mlp_free(one);
}
END_TEST

START_TEST(test_made_single)
{
  const size_t ctxs[2] = {0, 2};
  for (int a = 1; a < 5; a++)
    for (int k = 0; k < 2; k++) {
      net_case c = made_case(4, ctxs[k], acts[a]);
      char label[64];
      snprintf(label, sizeof label, "made d 4 ctx %zu %s", ctxs[k], nf_activation_name(acts[a]));
      check_case(label, &c, acts[a] != NF_ACT_RELU);
      free_case(&c);
    }
}
END_TEST

/* Setting refused: NULL, unknown values (the precision unchanged). */
START_TEST(test_set_precision_refused)
{
  nf_mlp *m = nf_mlp_new(2, 1, hidden2, 1, NF_ACT_TANH);
  nf_made *d = nf_made_new(3, 0, 1, hidden2, 2, NF_ACT_TANH, NF_ORDER_NATURAL, 0);
  ck_assert_int_eq(nf_mlp_set_precision(NULL, NF_PRECISION_SINGLE), NF_EINVAL);
  ck_assert_int_eq(nf_made_set_precision(NULL, NF_PRECISION_SINGLE), NF_EINVAL);
  ck_assert_int_eq(nf_mlp_set_precision(m, NF_PRECISION_SINGLE), NF_OK);
  ck_assert_int_eq(nf_mlp_set_precision(m, (nf_precision)7), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "precision 7"));
  ck_assert_int_eq(nf_mlp_precision(m), NF_PRECISION_SINGLE);
  ck_assert_int_eq(nf_made_set_precision(d, (nf_precision)-1), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_made_set_precision"));
  ck_assert_int_eq(nf_made_precision(d), NF_PRECISION_DOUBLE);
  ck_assert_int_eq(nf_mlp_precision(NULL), NF_PRECISION_DOUBLE);
  ck_assert_int_eq(nf_made_precision(NULL), NF_PRECISION_DOUBLE);
  nf_mlp_free(m);
  nf_made_free(d);
}
END_TEST

/* Layers of the four kinds: coupling affine / spline (mask half, tanh) and
   autoregressive affine (MAF) / spline (NSF) (random order, tanh); affine
   scales soft-clamped at 2. */
enum { COUPLING_AFFINE, COUPLING_SPLINE, MAF, NSF, N_KINDS };
static const char *const kind_names[N_KINDS] = {"coupling affine", "coupling spline", "MAF",
                                                "NSF"};

static nf_layer *make_kind(int kind, size_t dim, size_t ctx_dim, nf_rng *rng, nf_precision prec)
{
  nf_transformer_kind tk = kind == COUPLING_AFFINE || kind == MAF ? NF_TRANSFORMER_AFFINE
                                                                  : NF_TRANSFORMER_SPLINE;
  nf_transformer_spec spec = nf_transformer_spec_default(tk);
  spec.scale_bound = 2.0;
  nf_layer *layer;
  if (kind <= COUPLING_SPLINE) {
    unsigned char mask[8];
    nf_coupling_mask_half(dim, (int)(nf_rng_u64(rng) % 2), mask);
    nf_coupling_opts o = {.transformer = spec, .mask = mask,
                          .n_hidden = 2, .hidden = hidden2, .act = NF_ACT_TANH,
                          .precision = prec};
    layer = nf_coupling_new(dim, ctx_dim, &o, rng);
  } else {
    nf_autoregressive_opts o = nf_autoregressive_opts_default();
    o.n_hidden = 2;
    o.hidden = hidden2;
    o.act = NF_ACT_TANH;
    o.order = NF_ORDER_RANDOM;
    o.order_seed = nf_rng_u64(rng);
    o.transformer = spec;
    o.precision = prec;
    layer = nf_autoregressive_new(dim, ctx_dim, &o, rng);
  }
  ck_assert_msg(layer != NULL, "%s: %s", kind_names[kind], nf_errmsg());
  return layer;
}

static int current_kind;
static nf_precision current_prec = NF_PRECISION_SINGLE;
static nf_layer *make_current(size_t dim, size_t ctx_dim, nf_rng *rng)
{
  return make_kind(current_kind, dim, ctx_dim, rng, current_prec);
}

/* th_check_bijector in single precision on d = 3 with context 0 and 2, theta
   ~ N(0, 0.3^2) (seed 7 + kind), 8 rows ~ N(0, 1): round trip and log-det
   cancellation 1e-5; log-det vs brute-force Jacobian and vjp vs central
   differences in both directions with steps 1e-3, tolerance 1e-3. */
START_TEST(test_layers_bijector)
{
  th_tolerances tol = {.roundtrip = 1e-5, .cancel = 1e-5, .logdet = FD_TOL, .vjp = FD_TOL,
                       .h_logdet = FD_STEP, .h_vjp = FD_STEP};
  for (int kind = 0; kind < N_KINDS; kind++)
    for (size_t c = 0; c <= 2; c += 2) {
      nf_rng rng;
      nf_rng_seed(&rng, 7 + (uint64_t)kind);
      nf_layer *layer = make_kind(kind, 3, c, &rng, NF_PRECISION_SINGLE);
      double *theta = malloc(nf_layer_n_params(layer) * sizeof *theta), z[8 * 3], ctx[8 * 2];
      th_randomize_params(layer, &rng, 0.3, theta);
      th_randn(&rng, 8 * 3, 1.0, z);
      th_randn(&rng, 8 * 2, 1.0, ctx);
      char label[64];
      snprintf(label, sizeof label, "single %s, ctx %zu", kind_names[kind], c);
      th_check_bijector(label, layer, theta, 8, z, c ? ctx : NULL, &tol);
      nf_layer_free(layer);
      free(theta);
    }
}
END_TEST

/* Flows of single layers: conditional flows and two threads equal to serial
   bit for bit (th_check_family_flows, theta ~ N(0, 0.3^2)); the density of a
   2-D flow of three layers, theta ~ N(0, 0.15^2) (seed 31 + kind),
   integrates to 1 +- 2e-3 on [-10, 10]^2 (1000^2 points; at 0.3 the MAF's
   ridges are narrower than the grid, in double alike). */
START_TEST(test_layers_flows)
{
  for (current_kind = 0; current_kind < N_KINDS; current_kind++) {
    th_check_family_flows(make_current, 0.3);
    nf_flow *flow = th_flow_of(make_current, 2, 0, 3, 31 + (uint64_t)current_kind, 0.15);
    th_check_grid_mass(kind_names[current_kind], flow, 10.0, 1000, 2e-3);
    nf_flow_free(flow);
  }
}
END_TEST

/* log p of n rows of flow. */
static void log_prob(const nf_flow *flow, size_t n, const double *x, double *lp)
{
  nf_flow_ws *ws = nf_flow_ws_new(flow, n);
  ck_assert_int_eq(nf_flow_log_prob_ws(flow, ws, 0, n, x, NULL, lp), NF_OK);
  nf_flow_ws_free(ws);
}

/* A 3-D flow of the four kinds, single, theta ~ N(0, 0.3^2) (seed 11): saved
   and loaded, the same layers, theta and log p bit for bit; the copy is still
   single (its log p differs from the same flow built in double). */
START_TEST(test_save_load)
{
  nf_flow *flow[2];
  for (int s = 0; s < 2; s++) {
    nf_rng rng;
    nf_rng_seed(&rng, 11);
    flow[s] = nf_flow_new(3, 0, NF_BASE_STD_NORMAL);
    for (int kind = 0; kind < N_KINDS; kind++)
      ck_assert_int_eq(nf_flow_push(flow[s], make_kind(kind, 3, 0, &rng, (nf_precision)s)), NF_OK);
    th_perturb_flow(flow[s], &rng, 0.3);
  }
  ck_assert_uint_eq(nf_flow_n_params(flow[0]), nf_flow_n_params(flow[1]));
  ck_assert(memcmp(nf_flow_params(flow[0]), nf_flow_params(flow[1]),
                   nf_flow_n_params(flow[0]) * sizeof(double)) == 0);
  double *x = th_random_points(10, 3, 12, 1.0), lp[2][10];
  nf_flow *copy = th_save_load(flow[1], 10, x);
  log_prob(copy, 10, x, lp[1]);
  log_prob(flow[0], 10, x, lp[0]);
  double diff = th_max_abs_diff(10, lp[1], lp[0]);
  printf("save/load single: |log p single - log p double| = %.2e\n", diff);
  ck_assert(diff > 0 && diff < 1e-4);
  nf_flow_free(copy);
  copy = th_save_load(flow[0], 10, x); /* double still loads as double */
  nf_flow_free(copy);
  for (int s = 0; s < 2; s++) nf_flow_free(flow[s]);
  free(x);
}
END_TEST

/* The saved configurations: "precision" = "single" only for single layers;
   a configuration without it loads as double; an unknown value is refused
   with NF_EFORMAT naming the key and the value; a bad option value is
   refused by the constructors. */
START_TEST(test_config_and_refusals)
{
  for (int kind = 0; kind < N_KINDS; kind++) {
    for (int s = 0; s < 2; s++) {
      nf_rng rng;
      nf_rng_seed(&rng, 3);
      nf_layer *layer = make_kind(kind, 3, 0, &rng, (nf_precision)s);
      const nf_layer_type *type = nf_layer_type_find(nf_layer_name(layer));
      nf_config *cfg = nf_config_new();
      ck_assert_int_eq(type->save(layer, cfg), NF_OK);
      const char *v = NULL;
      ck_assert_int_eq(nf_config_has(cfg, "precision"), s);
      if (s) {
        ck_assert_int_eq(nf_config_get_string(cfg, "precision", &v), NF_OK);
        ck_assert_str_eq(v, "single");
      } else {
        nf_layer *back = type->load(3, 0, cfg, NULL);
        ck_assert_msg(back != NULL, "%s", nf_errmsg());
        nf_layer_free(back);
        ck_assert_int_eq(nf_config_set_string(cfg, "precision", "half"), NF_OK);
        ck_assert_msg(type->load(3, 0, cfg, NULL) == NULL, "%s loaded 'half'", kind_names[kind]);
        ck_assert_int_eq(nf_last_status(), NF_EFORMAT);
        ck_assert_msg(strstr(nf_errmsg(), "'precision'") && strstr(nf_errmsg(), "half") &&
                          strstr(nf_errmsg(), type->name),
                      "message '%s'", nf_errmsg());
      }
      nf_config_free(cfg);
      nf_layer_free(layer);
    }
    nf_rng rng;
    nf_rng_seed(&rng, 3);
    nf_layer *bad = NULL;
    if (kind <= COUPLING_SPLINE) {
      unsigned char mask[3] = {1, 0, 0};
      nf_coupling_opts o = {.transformer = nf_transformer_spec_default(NF_TRANSFORMER_AFFINE),
                            .mask = mask, .n_hidden = 2, .hidden = hidden2,
                            .act = NF_ACT_TANH, .precision = (nf_precision)2};
      bad = nf_coupling_new(3, 0, &o, &rng);
    } else {
      nf_autoregressive_opts o = nf_autoregressive_opts_default();
      o.precision = (nf_precision)2;
      bad = nf_autoregressive_new(3, 0, &o, &rng);
    }
    ck_assert_ptr_null(bad);
    ck_assert_int_eq(nf_last_status(), NF_EINVAL);
    ck_assert_msg(strstr(nf_errmsg(), "precision 2"), "message '%s'", nf_errmsg());
  }
}
END_TEST

/* 2-D "banana" data: x0 ~ N(0, 1), x1 = x0^2 / 2 + N(0, 0.5^2), n rows from seed. */
static nf_dataset banana(size_t n, uint64_t seed)
{
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  nf_dataset ds = {.n = n, .dim = 2, .x = malloc(n * 2 * sizeof(double))};
  for (size_t i = 0; i < n; i++) {
    double a = nf_rng_normal(&rng);
    ds.x[2 * i] = a;
    ds.x[2 * i + 1] = 0.5 * a * a + 0.5 * nf_rng_normal(&rng);
  }
  return ds;
}

/* Mean NLL of ds under the banana density: N(x0; 0, 1) N(x1; x0^2 / 2, 0.5^2). */
static double banana_nll(const nf_dataset *ds)
{
  double s = 0;
  for (size_t i = 0; i < ds->n; i++) {
    double a = ds->x[2 * i], u = (ds->x[2 * i + 1] - 0.5 * a * a) / 0.5;
    s += 0.5 * a * a + 0.5 * u * u + log(0.5) + 1.8378770664093453; /* log(2 pi) */
  }
  return s / (double)ds->n;
}

/* Validation NLL after training a 2-D flow of four layers of kind (double or
   single, same seeds): 3000 Adam steps (lr 3e-3, cosine) of batch 128 on 4000
   banana rows, validated on 4000 others. */
static double trained_nll(int kind, nf_precision prec, const nf_dataset *train,
                          const nf_dataset *val)
{
  current_kind = kind;
  current_prec = prec;
  nf_flow *flow = th_flow_of(make_current, 2, 0, 4, 17, 0.0);
  current_prec = NF_PRECISION_SINGLE;
  nf_adam_opts ao = nf_adam_defaults();
  ao.lr = 3e-3;
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), &ao);
  nf_trainer_opts o = {.batch_size = 128, .iterations = 3000, .val_every = 3000,
                       .schedule = NF_LR_COSINE, .lr_min = 1e-4, .data_init = 1};
  nf_rng rng;
  nf_rng_seed(&rng, 19);
  nf_trainer *tr = nf_trainer_new(flow, adam, train, val, &o, &rng);
  ck_assert_msg(tr != NULL, "nf_trainer_new: %s", nf_errmsg());
  nf_train_report rep;
  ck_assert_msg(nf_trainer_run(tr, &rep) == NF_OK, "run: %s", nf_errmsg());
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  return rep.val_nll_last;
}

/* RealNVP (affine couplings) and MAF reach the same validation NLL in single
   as in double: within 0.02 of each other, both within 0.1 of the true NLL. */
START_TEST(test_training)
{
  nf_dataset train = banana(4000, 1), val = banana(4000, 2);
  double ref = banana_nll(&val);
  const int kinds[2] = {COUPLING_AFFINE, MAF};
  for (int k = 0; k < 2; k++) {
    double nd = trained_nll(kinds[k], NF_PRECISION_DOUBLE, &train, &val);
    double ns = trained_nll(kinds[k], NF_PRECISION_SINGLE, &train, &val);
    printf("training %s: val NLL double %.4f, single %.4f, true NLL %.4f\n",
           kind_names[kinds[k]], nd, ns, ref);
    ck_assert_msg(fabs(ns - nd) < 0.02, "%s: single %.4f vs double %.4f", kind_names[kinds[k]],
                  ns, nd);
    ck_assert_msg(nd - ref < 0.1 && ns - ref < 0.1, "%s: NLL %.4f / %.4f vs true %.4f",
                  kind_names[kinds[k]], nd, ns, ref);
  }
  free(train.x);
  free(val.x);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_mlp_single, test_made_single, test_set_precision_refused,
                          test_layers_bijector, test_layers_flows, test_save_load,
                          test_config_and_refusals, test_training, NULL};
  return th_run_tests("single", 600, tests);
}
