/* tests/test_made.c — MADE (Germain et al. 2015): the autoregressive property
   (a finite-difference Jacobian that is exactly zero where the order forbids
   and non-zero where it allows, for the three orders and several hidden
   layers, every output seeing the context), masked weights without effect
   and with exactly zero gradient, backward against central differences,
   order names and bad arguments. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define N 4
#define D 5
#define C 2
#define NP 3
#define FD_STEP 1e-6
#define FD_TOL 1e-7

static const size_t hidden3[3] = {12, 10, 9};

/* A MADE on D coordinates with context width c and order kind, three hidden layers. */
static nf_made *make(size_t c, nf_order_kind kind, nf_activation act)
{
  nf_made *m = nf_made_new(D, c, 3, hidden3, NP, act, kind, 1234);
  ck_assert_msg(m != NULL, "nf_made_new: %s", nf_errmsg());
  return m;
}

/* y = MADE(x, ctx) with theta, in a fresh workspace. */
static void run(const nf_made *m, const double *theta, const double *x, const double *ctx,
                double *y)
{
  double *work = calloc(nf_made_work_size(m, N), sizeof *work);
  nf_made_mask(m, theta, work);
  nf_made_forward(m, N, x, ctx, y, work);
  free(work);
}

/* Theta ~ N(0, 0.5^2) on every entry, masked ones included. */
static double *random_theta(const nf_made *m, uint64_t seed)
{
  return th_random_points(1, nf_made_n_params(m), seed, 0.5);
}

/* For each order kind, with and without a context: the change of every
   output under a perturbation of each input is exactly zero when the input's
   position is not before the output's coordinate, and non-zero (> 1e-9)
   otherwise; with a context every output moves with every context input. */
START_TEST(test_autoregressive_property)
{
  for (int kind = NF_ORDER_NATURAL; kind <= NF_ORDER_RANDOM; kind++)
    for (size_t c = 0; c <= C; c += C) {
      nf_made *m = make(c, (nf_order_kind)kind, NF_ACT_TANH);
      const size_t *order = nf_made_order(m);
      size_t pos[D], nout = D * NP;
      for (size_t k = 0; k < D; k++) pos[order[k]] = k;
      double *theta = random_theta(m, 10 + (uint64_t)kind);
      double *x = th_random_points(N, D, 20, 1.0), *ctx = th_random_points(N, C, 21, 1.0);
      double y0[N * D * NP], y1[N * D * NP];
      run(m, theta, x, c ? ctx : NULL, y0);
      size_t forbidden = 0, allowed = 0;
      double min_allowed = INFINITY;
      for (size_t l = 0; l < D + c; l++) {
        double *v = l < D ? x : ctx;
        size_t col = l < D ? l : l - D, w = l < D ? D : C;
        for (size_t i = 0; i < N; i++) {
          double keep = v[i * w + col];
          v[i * w + col] = keep + 1e-3;
          run(m, theta, x, c ? ctx : NULL, y1);
          v[i * w + col] = keep;
          for (size_t r = 0; r < N; r++)
            for (size_t o = 0; o < nout; o++) {
              double dy = fabs(y1[r * nout + o] - y0[r * nout + o]);
              size_t j = o / NP;
              int may = r == i && (l >= D || pos[l] < pos[j]);
              if (may) {
                allowed++;
                min_allowed = fmin(min_allowed, dy);
              } else {
                forbidden++;
                ck_assert_msg(dy == 0.0, "order %d: output %zu moved with input %zu by %g", kind,
                              o, l, dy);
              }
            }
        }
      }
      printf("MADE order %s, context %zu: %zu forbidden pairs exactly 0, %zu allowed >= %.2e\n",
             nf_order_kind_name((nf_order_kind)kind), c, forbidden, allowed, min_allowed);
      ck_assert_double_gt(min_allowed, 1e-9);
      free(theta);
      free(x);
      free(ctx);
      nf_made_free(m);
    }
}
END_TEST

/* Masked entries change nothing (outputs identical with them zeroed) and get
   exactly zero gradient; unmasked ones get some. */
START_TEST(test_masked_weights)
{
  nf_made *m = make(C, NF_ORDER_RANDOM, NF_ACT_RELU);
  size_t np = nf_made_n_params(m), masked = 0;
  const double *mask = nf_made_mask_of(m);
  double *theta = random_theta(m, 3), *zeroed = malloc(np * sizeof *zeroed);
  for (size_t k = 0; k < np; k++) {
    zeroed[k] = theta[k] * mask[k];
    masked += mask[k] == 0.0;
  }
  double *x = th_random_points(N, D, 4, 1.0), *ctx = th_random_points(N, C, 5, 1.0);
  double *g_y = th_random_points(N, D * NP, 6, 1.0);
  double y0[N * D * NP], y1[N * D * NP];
  run(m, theta, x, ctx, y0);
  run(m, zeroed, x, ctx, y1);
  ck_assert_mem_eq(y0, y1, sizeof y0);
  double *work = calloc(nf_made_work_size(m, N), sizeof *work), *g = calloc(np, sizeof *g);
  nf_made_mask(m, theta, work);
  nf_made_forward(m, N, x, ctx, y0, work);
  nf_made_backward(m, N, g_y, NULL, NULL, g, work);
  size_t nonzero = 0;
  for (size_t k = 0; k < np; k++) {
    if (mask[k] == 0.0) ck_assert_msg(g[k] == 0.0, "masked parameter %zu has gradient %g", k, g[k]);
    nonzero += g[k] != 0.0;
  }
  printf("MADE: %zu of %zu parameters masked, all with gradient exactly 0; %zu non-zero\n",
         masked, np, nonzero);
  ck_assert_uint_gt(masked, np / 4);
  ck_assert_uint_gt(nonzero, (np - masked) / 2);
  /* nf_made_init zeroes the masked weights */
  nf_rng rng;
  nf_rng_seed(&rng, 9);
  nf_made_init(m, &rng, 1.0, g);
  for (size_t k = 0; k < np; k++)
    if (mask[k] == 0.0) ck_assert_double_eq(g[k], 0.0);
  free(theta);
  free(zeroed);
  free(x);
  free(ctx);
  free(g_y);
  free(work);
  free(g);
  nf_made_free(m);
}
END_TEST

/* L = <g_y, MADE(x, ctx; theta)>. */
static double loss(const nf_made *m, const double *theta, const double *x, const double *ctx,
                   const double *g_y)
{
  double y[N * D * NP], L = 0;
  run(m, theta, x, ctx, y);
  for (size_t k = 0; k < N * D * NP; k++) L += g_y[k] * y[k];
  return L;
}

/* Central differences of loss along each entry of v[0..len) into fd. */
static void fd_grad(const nf_made *m, double *theta, double *x, double *ctx, const double *g_y,
                    double *v, size_t len, double *fd)
{
  for (size_t k = 0; k < len; k++) {
    double keep = v[k];
    v[k] = keep + FD_STEP;
    double up = loss(m, theta, x, ctx, g_y);
    v[k] = keep - FD_STEP;
    double down = loss(m, theta, x, ctx, g_y);
    v[k] = keep;
    fd[k] = (up - down) / (2 * FD_STEP);
  }
}

/* Backward's input, context and parameter gradients against central
   differences (norm-wise relative error <= 1e-7), every activation and order;
   g_ctx and g_theta accumulate. */
START_TEST(test_backward_fd)
{
  for (int a = NF_ACT_TANH; a <= NF_ACT_SOFTPLUS; a++)
    for (int kind = NF_ORDER_NATURAL; kind <= NF_ORDER_RANDOM; kind++) {
      nf_made *m = make(C, (nf_order_kind)kind, (nf_activation)a);
      size_t np = nf_made_n_params(m);
      double *theta = random_theta(m, 30 + (uint64_t)a), *x = th_random_points(N, D, 31, 1.0);
      double *ctx = th_random_points(N, C, 32, 1.0), *g_y = th_random_points(N, D * NP, 33, 1.0);
      double *g_t = calloc(np, sizeof *g_t), *fd_t = malloc(np * sizeof *fd_t);
      double g_x[N * D], g_c[N * C] = {0}, fd_x[N * D], fd_c[N * C];
      double *work = calloc(nf_made_work_size(m, N), sizeof *work), y[N * D * NP];
      nf_made_mask(m, theta, work);
      nf_made_forward(m, N, x, ctx, y, work);
      nf_made_backward(m, N, g_y, g_x, g_c, g_t, work);
      fd_grad(m, theta, x, ctx, g_y, x, N * D, fd_x);
      fd_grad(m, theta, x, ctx, g_y, ctx, N * C, fd_c);
      fd_grad(m, theta, x, ctx, g_y, theta, np, fd_t);
      double ex = th_rel_err(N * D, g_x, fd_x, 1e-3), ec = th_rel_err(N * C, g_c, fd_c, 1e-3);
      double et = th_rel_err(np, g_t, fd_t, 1e-3);
      printf("MADE backward %s/%s vs FD: x %.2e, ctx %.2e, theta %.2e (<= %g)\n",
             nf_activation_name((nf_activation)a), nf_order_kind_name((nf_order_kind)kind), ex,
             ec, et, FD_TOL);
      ck_assert_double_le(ex, FD_TOL);
      ck_assert_double_le(ec, FD_TOL);
      ck_assert_double_le(et, FD_TOL);
      double g_c1[N * C], *g_t1 = malloc(np * sizeof *g_t1);
      memcpy(g_c1, g_c, sizeof g_c);
      memcpy(g_t1, g_t, np * sizeof *g_t);
      nf_made_backward(m, N, g_y, NULL, g_c, g_t, work);
      for (size_t k = 0; k < N * C; k++) ck_assert_double_eq_tol(g_c[k], 2 * g_c1[k], 1e-14);
      for (size_t k = 0; k < np; k++) ck_assert_double_eq_tol(g_t[k], 2 * g_t1[k], 1e-14);
      free(g_t1);
      free(theta);
      free(x);
      free(ctx);
      free(g_y);
      free(g_t);
      free(fd_t);
      free(work);
      nf_made_free(m);
    }
}
END_TEST

/* The orders: natural and reversed, a seeded random permutation that
   depends on the seed only; one coordinate and no hidden layers work. */
START_TEST(test_orders)
{
  nf_made *a = nf_made_new(6, 0, 1, hidden3, 2, NF_ACT_RELU, NF_ORDER_RANDOM, 7);
  nf_made *b = nf_made_new(6, 0, 1, hidden3, 2, NF_ACT_RELU, NF_ORDER_RANDOM, 7);
  nf_made *c = nf_made_new(6, 0, 1, hidden3, 2, NF_ACT_RELU, NF_ORDER_RANDOM, 8);
  nf_made *r = nf_made_new(6, 0, 0, NULL, 2, NF_ACT_RELU, NF_ORDER_REVERSED, 0);
  nf_made *one = nf_made_new(1, 2, 2, hidden3, 3, NF_ACT_ELU, NF_ORDER_NATURAL, 0);
  ck_assert(a && b && c && r && one);
  ck_assert_mem_eq(nf_made_order(a), nf_made_order(b), 6 * sizeof(size_t));
  ck_assert_int_ne(memcmp(nf_made_order(a), nf_made_order(c), 6 * sizeof(size_t)), 0);
  int seen[6] = {0};
  for (size_t k = 0; k < 6; k++) {
    seen[nf_made_order(a)[k]]++;
    ck_assert_uint_eq(nf_made_order(r)[k], 5 - k);
  }
  for (size_t k = 0; k < 6; k++) ck_assert_int_eq(seen[k], 1);
  ck_assert_uint_eq(nf_made_n_params(r), (6 + 1) * 12);
  ck_assert_uint_eq(nf_made_n_params(one), (3 + 1) * 12 + (12 + 1) * 10 + (10 + 1) * 3);
  ck_assert_uint_eq(nf_made_dim(one), 1);
  ck_assert_uint_eq(nf_made_ctx_dim(one), 2);
  ck_assert_uint_eq(nf_made_n_per_dim(one), 3);
  nf_made_free(a);
  nf_made_free(b);
  nf_made_free(c);
  nf_made_free(r);
  nf_made_free(one);
  nf_order_kind k = NF_ORDER_NATURAL;
  for (int i = NF_ORDER_NATURAL; i <= NF_ORDER_RANDOM; i++) {
    ck_assert_int_eq(nf_order_kind_parse(nf_order_kind_name((nf_order_kind)i), &k), NF_OK);
    ck_assert_int_eq(k, i);
  }
  ck_assert_str_eq(nf_order_kind_name((nf_order_kind)9), "?");
  ck_assert_int_eq(nf_order_kind_parse("shuffled", &k), NF_EINVAL);
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "shuffled"));
  ck_assert_int_eq(nf_order_kind_parse(NULL, &k), NF_EINVAL);
}
END_TEST

/* Bad shapes are refused with a message; NULL is a no-op everywhere. */
START_TEST(test_bad_arguments)
{
  const size_t zero[1] = {0};
  ck_assert_ptr_null(nf_made_new(0, 0, 1, hidden3, 1, NF_ACT_RELU, NF_ORDER_NATURAL, 0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "dimension"));
  ck_assert_ptr_null(nf_made_new(3, 0, 1, hidden3, 0, NF_ACT_RELU, NF_ORDER_NATURAL, 0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "outputs per coordinate"));
  ck_assert_ptr_null(nf_made_new(3, 0, 1, zero, 1, NF_ACT_RELU, NF_ORDER_NATURAL, 0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "width 0"));
  ck_assert_ptr_null(nf_made_new(3, 0, 1, NULL, 1, NF_ACT_RELU, NF_ORDER_NATURAL, 0));
  ck_assert_ptr_null(nf_made_new(3, 0, 1, hidden3, 1, (nf_activation)17, NF_ORDER_NATURAL, 0));
  ck_assert_ptr_null(nf_made_new(3, 0, 1, hidden3, 1, NF_ACT_RELU, (nf_order_kind)5, 0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "order"));
  const size_t huge[3] = {SIZE_MAX, SIZE_MAX / 2 + 1, (size_t)1 << 60}, wide[2] = {4, SIZE_MAX / 4};
  for (size_t k = 0; k < 3; k++) {
    ck_assert_ptr_null(nf_made_new(huge[k], 0, 1, hidden3, 1, NF_ACT_RELU, NF_ORDER_NATURAL, 0));
    ck_assert_ptr_nonnull(strstr(nf_errmsg(), "overflows"));
    ck_assert_ptr_null(nf_made_new(3, huge[k], 1, hidden3, 1, NF_ACT_RELU, NF_ORDER_NATURAL, 0));
    ck_assert_ptr_nonnull(strstr(nf_errmsg(), "overflows"));
    ck_assert_ptr_null(nf_made_new(3, 0, 1, hidden3, huge[k], NF_ACT_RELU, NF_ORDER_NATURAL, 0));
    ck_assert_ptr_nonnull(strstr(nf_errmsg(), "overflows"));
  }
  ck_assert_ptr_null(nf_made_new(3, 0, 2, wide, 2, NF_ACT_RELU, NF_ORDER_NATURAL, 0));
  ck_assert_ptr_nonnull(strstr(nf_errmsg(), "overflows"));
  nf_made *m = nf_made_new(3, 1, 1, hidden3, 2, NF_ACT_RELU, NF_ORDER_NATURAL, 0);
  ck_assert_uint_eq(nf_made_work_size(m, SIZE_MAX / 8), 0);
  nf_made_free(m);
  nf_made_free(NULL);
  ck_assert_uint_eq(nf_made_n_params(NULL), 0);
  ck_assert_ptr_null(nf_made_order(NULL));
  ck_assert_uint_eq(nf_made_work_size(NULL, 4), 0);
}
END_TEST

int main(void)
{
  const TTest *tests[] = {test_autoregressive_property, test_masked_weights, test_backward_fd,
                          test_orders, test_bad_arguments, NULL};
  return th_run_tests("made", 60, tests);
}
