/* tests/test_mlp.c — batched MLP: forward against a naive triple loop,
   backward against central differences for every activation, the single
   affine layer, initialisation, sizes, activation names and bad arguments. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define N_ROWS 7
#define FD_STEP 1e-6
#define FD_TOL 1e-6
#define FWD_TOL 1e-12

static const nf_activation all_acts[] = {NF_ACT_IDENTITY, NF_ACT_RELU, NF_ACT_TANH,
                                         NF_ACT_ELU, NF_ACT_SOFTPLUS};
#define N_ACTS (sizeof all_acts / sizeof all_acts[0])

/* The activation written out independently of the library. */
static double ref_act(nf_activation act, double v)
{
  switch (act) {
  case NF_ACT_RELU: return v > 0 ? v : 0;
  case NF_ACT_TANH: return tanh(v);
  case NF_ACT_ELU: return v > 0 ? v : exp(v) - 1;
  case NF_ACT_SOFTPLUS: return log(1 + exp(v));
  default: return v;
  }
}

/* Naive forward pass with triple loops; *min_abs_pre receives the smallest
   |pre-activation| of any hidden unit (distance to the relu/elu kink). */
static void ref_forward(size_t n_layers, const size_t *width, nf_activation act,
                        const double *params, size_t n, const double *x, double *y,
                        double *min_abs_pre)
{
  size_t wmax = 0;
  for (size_t l = 0; l <= n_layers; l++) wmax = width[l] > wmax ? width[l] : wmax;
  double *a = malloc(wmax * sizeof *a), *b = malloc(wmax * sizeof *b);
  *min_abs_pre = INFINITY;
  for (size_t i = 0; i < n; i++) {
    memcpy(a, x + i * width[0], width[0] * sizeof *a);
    const double *p = params;
    for (size_t l = 0; l < n_layers; l++) {
      size_t wi = width[l], wo = width[l + 1];
      int last = l + 1 == n_layers;
      for (size_t o = 0; o < wo; o++) {
        double v = p[wi * wo + o];
        for (size_t k = 0; k < wi; k++) v += p[o * wi + k] * a[k];
        if (!last) *min_abs_pre = fmin(*min_abs_pre, fabs(v));
        b[o] = last ? v : ref_act(act, v);
      }
      memcpy(a, b, wo * sizeof *a);
      p += (wi + 1) * wo;
    }
    memcpy(y + i * width[n_layers], a, width[n_layers] * sizeof *y);
  }
  free(a);
  free(b);
}

/* An MLP under test with its arrays: params, input, workspace, output. */
typedef struct fixture {
  nf_mlp *mlp;
  size_t n_layers, width[4], n, np;
  nf_activation act;
  double *params, *x, *y, *work;
} fixture;

/* MLP n_in -> hidden... -> n_out with N(0, 0.5^2) params and N(0, 1) inputs. */
static fixture fixture_new(size_t n_in, size_t n_hidden, const size_t *hidden, size_t n_out,
                           nf_activation act, uint64_t seed)
{
  fixture f = {0};
  f.mlp = nf_mlp_new(n_in, n_hidden, hidden, n_out, act);
  ck_assert_msg(f.mlp != NULL, "nf_mlp_new failed: %s", nf_errmsg());
  f.n_layers = n_hidden + 1;
  f.width[0] = n_in;
  for (size_t l = 0; l < n_hidden; l++) f.width[l + 1] = hidden[l];
  f.width[n_hidden + 1] = n_out;
  f.act = act;
  f.n = N_ROWS;
  f.np = nf_mlp_n_params(f.mlp);
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  f.params = malloc(f.np * sizeof *f.params);
  f.x = malloc(f.n * n_in * sizeof *f.x);
  f.y = malloc(f.n * n_out * sizeof *f.y);
  f.work = calloc(nf_mlp_work_size(f.mlp, f.n) + 1, sizeof *f.work);
  th_randn(&rng, f.np, 0.5, f.params);
  th_randn(&rng, f.n * n_in, 1.0, f.x);
  return f;
}

static void fixture_free(fixture *f)
{
  nf_mlp_free(f->mlp);
  free(f->params);
  free(f->x);
  free(f->y);
  free(f->work);
}

/* L = sum(g_y * mlp(x)). */
static double probe(const fixture *f, const double *g_y)
{
  size_t no = f->width[f->n_layers];
  nf_mlp_forward(f->mlp, f->params, f->n, f->x, f->y, f->work);
  double s = 0;
  for (size_t k = 0; k < f->n * no; k++) s += g_y[k] * f->y[k];
  return s;
}

/* Central differences of probe in every entry of v (restored). */
static void fd_grad(const fixture *f, const double *g_y, double *v, size_t len, double *grad)
{
  for (size_t k = 0; k < len; k++) {
    double v0 = v[k];
    v[k] = v0 + FD_STEP;
    double lp = probe(f, g_y);
    v[k] = v0 - FD_STEP;
    double lm = probe(f, g_y);
    v[k] = v0;
    grad[k] = (lp - lm) / (2 * FD_STEP);
  }
}

/* Relative errors of backward's input and parameter gradients against
   central differences; backward must ADD into a non-zero g_params. */
static void check_backward(fixture *f, double *err_x, double *err_p)
{
  size_t ni = f->width[0], no = f->width[f->n_layers];
  nf_rng rng;
  nf_rng_seed(&rng, 99);
  double *g_y = malloc(f->n * no * sizeof *g_y);
  double *g_x = malloc(f->n * ni * sizeof *g_x), *g_p = malloc(f->np * sizeof *g_p);
  double *fd_x = malloc(f->n * ni * sizeof *fd_x), *fd_p = malloc(f->np * sizeof *fd_p);
  th_randn(&rng, f->n * no, 1.0, g_y);
  for (size_t k = 0; k < f->np; k++) g_p[k] = 1.0;
  nf_mlp_forward(f->mlp, f->params, f->n, f->x, f->y, f->work);
  nf_mlp_backward(f->mlp, f->params, f->n, f->x, g_y, g_x, g_p, f->work);
  for (size_t k = 0; k < f->np; k++) g_p[k] -= 1.0;
  fd_grad(f, g_y, f->x, f->n * ni, fd_x);
  fd_grad(f, g_y, f->params, f->np, fd_p);
  *err_x = th_rel_err(f->n * ni, g_x, fd_x, 1e-8);
  *err_p = th_rel_err(f->np, g_p, fd_p, 1e-8);
  free(g_y); free(g_x); free(g_p); free(fd_x); free(fd_p);
}

START_TEST(test_forward_matches_reference)
{
  const size_t hidden[2] = {6, 5};
  double worst = 0;
  for (size_t a = 0; a < N_ACTS; a++) {
    fixture f = fixture_new(3, 2, hidden, 4, all_acts[a], 11 + a);
    double *ref = malloc(f.n * 4 * sizeof *ref), gap;
    nf_mlp_forward(f.mlp, f.params, f.n, f.x, f.y, f.work);
    ref_forward(f.n_layers, f.width, f.act, f.params, f.n, f.x, ref, &gap);
    double err = th_max_abs_diff(f.n * 4, f.y, ref);
    ck_assert_msg(err <= FWD_TOL, "act %d: forward error %g > %g", (int)f.act, err, FWD_TOL);
    worst = fmax(worst, err);
    free(ref);
    fixture_free(&f);
  }
  printf("mlp: max forward error vs triple loop %.3g\n", worst);
}
END_TEST

START_TEST(test_backward_matches_fd)
{
  const size_t hidden[2] = {6, 5};
  double worst_x = 0, worst_p = 0;
  for (size_t a = 0; a < N_ACTS; a++) {
    fixture f = fixture_new(3, 2, hidden, 4, all_acts[a], 21 + a);
    double *ref = malloc(f.n * 4 * sizeof *ref), gap, ex, ep;
    ref_forward(f.n_layers, f.width, f.act, f.params, f.n, f.x, ref, &gap);
    /* keep finite differences away from the relu/elu kink */
    ck_assert_msg(gap > 1e3 * FD_STEP, "act %d: a pre-activation is %g from the kink",
                  (int)f.act, gap);
    check_backward(&f, &ex, &ep);
    ck_assert_msg(ex <= FD_TOL, "act %d: input gradient error %g > %g", (int)f.act, ex, FD_TOL);
    ck_assert_msg(ep <= FD_TOL, "act %d: parameter gradient error %g > %g", (int)f.act, ep,
                  FD_TOL);
    worst_x = fmax(worst_x, ex);
    worst_p = fmax(worst_p, ep);
    free(ref);
    fixture_free(&f);
  }
  printf("mlp: max backward error vs central differences: input %.3g, params %.3g\n",
         worst_x, worst_p);
}
END_TEST

START_TEST(test_single_affine_layer)
{
  fixture f = fixture_new(3, 0, NULL, 2, NF_ACT_TANH, 5);
  ck_assert_uint_eq(f.np, 8);
  ck_assert_uint_eq(nf_mlp_work_size(f.mlp, 100), 0);
  double ref[N_ROWS * 2], gap, ex, ep;
  nf_mlp_forward(f.mlp, f.params, f.n, f.x, f.y, NULL);
  ref_forward(1, f.width, f.act, f.params, f.n, f.x, ref, &gap);
  ck_assert_double_le(th_max_abs_diff(f.n * 2, f.y, ref), FWD_TOL);
  check_backward(&f, &ex, &ep);
  ck_assert_double_le(ex, FD_TOL);
  ck_assert_double_le(ep, FD_TOL);
  fixture_free(&f);
}
END_TEST

/* Without g_x the parameter gradient is the same. */
START_TEST(test_backward_without_input_gradient)
{
  const size_t hidden[1] = {8};
  fixture f = fixture_new(4, 1, hidden, 3, NF_ACT_ELU, 8);
  double g_y[N_ROWS * 3], g_x[N_ROWS * 4];
  double *g1 = calloc(f.np, sizeof *g1), *g2 = calloc(f.np, sizeof *g2);
  for (size_t k = 0; k < f.n * 3; k++) g_y[k] = sin((double)k);
  nf_mlp_forward(f.mlp, f.params, f.n, f.x, f.y, f.work);
  nf_mlp_backward(f.mlp, f.params, f.n, f.x, g_y, g_x, g1, f.work);
  nf_mlp_backward(f.mlp, f.params, f.n, f.x, g_y, NULL, g2, f.work);
  ck_assert_double_eq(th_max_abs_diff(f.np, g1, g2), 0.0);
  free(g1);
  free(g2);
  fixture_free(&f);
}
END_TEST

START_TEST(test_init)
{
  const size_t hidden[2] = {16, 8};
  nf_rng rng;
  nf_rng_seed(&rng, 3);
  for (size_t a = 0; a < N_ACTS; a++) {
    fixture f = fixture_new(5, 2, hidden, 3, all_acts[a], 31);
    int he = f.act == NF_ACT_RELU || f.act == NF_ACT_ELU;
    /* out_scale 0: the output is exactly zero */
    nf_mlp_init(f.mlp, &rng, 0.0, f.params);
    nf_mlp_forward(f.mlp, f.params, f.n, f.x, f.y, f.work);
    for (size_t k = 0; k < f.n * 3; k++) ck_assert_double_eq(f.y[k], 0.0);
    /* out_scale 1: weights within their limits, biases zero, output non-zero */
    nf_mlp_init(f.mlp, &rng, 1.0, f.params);
    const double *p = f.params;
    for (size_t l = 0; l < 3; l++) {
      size_t wi = f.width[l], wo = f.width[l + 1];
      double lim = (he && l < 2) ? sqrt(6.0 / wi) : sqrt(6.0 / (wi + wo)), m = 0;
      for (size_t k = 0; k < wi * wo; k++) m = fmax(m, fabs(p[k]));
      ck_assert_double_le(m, lim);
      ck_assert_double_ge(m, 0.5 * lim);
      for (size_t k = 0; k < wo; k++) ck_assert_double_eq(p[wi * wo + k], 0.0);
      p += (wi + 1) * wo;
    }
    nf_mlp_forward(f.mlp, f.params, f.n, f.x, f.y, f.work);
    double m = 0;
    for (size_t k = 0; k < f.n * 3; k++) m = fmax(m, fabs(f.y[k]));
    ck_assert_double_gt(m, 1e-3);
    fixture_free(&f);
  }
}
END_TEST

START_TEST(test_sizes)
{
  const size_t hidden[2] = {16, 8};
  nf_mlp *mlp = nf_mlp_new(5, 2, hidden, 3, NF_ACT_RELU);
  ck_assert_ptr_nonnull(mlp);
  ck_assert_uint_eq(nf_mlp_n_in(mlp), 5);
  ck_assert_uint_eq(nf_mlp_n_out(mlp), 3);
  ck_assert_uint_eq(nf_mlp_n_params(mlp), 6 * 16 + 17 * 8 + 9 * 3);
  ck_assert_double_eq(nf_mlp_flops_per_row(mlp), 5 * 16 + 16 * 8 + 8 * 3);
  ck_assert_uint_eq(nf_mlp_work_size(mlp, 10), 10 * (16 + 8 + 2 * 16));
  nf_mlp_free(mlp);
}
END_TEST

START_TEST(test_activation_parse)
{
  const char *names[] = {"identity", "relu", "tanh", "elu", "softplus"};
  nf_activation act;
  for (size_t a = 0; a < N_ACTS; a++) {
    ck_assert_int_eq(nf_activation_parse(names[a], &act), NF_OK);
    ck_assert_int_eq(act, all_acts[a]);
  }
  act = NF_ACT_TANH;
  ck_assert_int_eq(nf_activation_parse("sigmoid", &act), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "sigmoid"));
  ck_assert_int_eq(act, NF_ACT_TANH);
  ck_assert_int_eq(nf_activation_parse("RELU", &act), NF_EINVAL);
  ck_assert_int_eq(nf_activation_parse(NULL, &act), NF_EINVAL);
  ck_assert_int_eq(nf_activation_parse("relu", NULL), NF_EINVAL);
}
END_TEST

START_TEST(test_bad_args)
{
  const size_t hidden[2] = {4, 0};
  ck_assert_ptr_null(nf_mlp_new(0, 0, NULL, 2, NF_ACT_RELU));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "nf_mlp_new"));
  ck_assert_ptr_null(nf_mlp_new(2, 0, NULL, 0, NF_ACT_RELU));
  ck_assert_ptr_null(nf_mlp_new(2, 1, NULL, 2, NF_ACT_RELU));
  ck_assert_ptr_null(nf_mlp_new(2, 2, hidden, 2, NF_ACT_RELU));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "hidden layer 1"));
  ck_assert_ptr_null(nf_mlp_new(2, 1, hidden, 2, (nf_activation)17));
  ck_assert_uint_eq(nf_mlp_n_in(NULL), 0);
  ck_assert_uint_eq(nf_mlp_n_out(NULL), 0);
  ck_assert_uint_eq(nf_mlp_n_params(NULL), 0);
  ck_assert_uint_eq(nf_mlp_work_size(NULL, 5), 0);
  ck_assert_double_eq(nf_mlp_flops_per_row(NULL), 0.0);
  nf_mlp_free(NULL);
  nf_mlp_init(NULL, NULL, 1.0, NULL);
  /* NULL arguments leave the outputs untouched */
  fixture f = fixture_new(2, 1, hidden, 2, NF_ACT_RELU, 1);
  double y[N_ROWS * 2] = {0}, g_x[N_ROWS * 2] = {0}, *g_p = calloc(f.np, sizeof *g_p);
  nf_mlp_forward(f.mlp, NULL, f.n, f.x, y, f.work);
  nf_mlp_forward(f.mlp, f.params, 0, f.x, y, f.work);
  nf_mlp_forward(f.mlp, f.params, f.n, f.x, y, NULL);
  nf_mlp_forward(NULL, f.params, f.n, f.x, y, f.work);
  nf_mlp_backward(f.mlp, f.params, f.n, f.x, NULL, g_x, g_p, f.work);
  nf_mlp_backward(f.mlp, f.params, f.n, f.x, y, g_x, g_p, NULL);
  for (size_t k = 0; k < f.n * 2; k++) ck_assert_double_eq(y[k] + g_x[k], 0.0);
  for (size_t k = 0; k < f.np; k++) ck_assert_double_eq(g_p[k], 0.0);
  free(g_p);
  fixture_free(&f);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_forward_matches_reference, test_backward_matches_fd,
                          test_single_affine_layer, test_backward_without_input_gradient,
                          test_init, test_sizes, test_activation_parse, test_bad_args, NULL};
  return th_run_tests("mlp", 0, tests);
}
