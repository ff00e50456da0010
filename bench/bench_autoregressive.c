/* bench/bench_autoregressive.c — speed of the autoregressive recipes (issue 8)
   at one BLAS thread: the maximum-likelihood training iteration
   (nf_flow_nll_grad_ws, an Adam step, nf_flow_set_params) at batch 256 on
   standard normal data, per shape, against the machine's dgemm rate measured
   in the same run, with the iteration split into its parts (the MADE passes
   alone, the forward pass alone, the Adam step) to show where the time goes.
   Shapes: NSF (spline, 8 bins, 4 transforms, hidden 64-64) and MAF (affine,
   8 transforms, hidden 64-64), the recipes' defaults, at d = 2 and 16.
   Usage: bench/bench_autoregressive [SHAPES [ITERATIONS [REPETITIONS]]]
     SHAPES: "all" (default: nsf:2,nsf:16,maf:2,maf:16) or a comma list of
     maf:D / nsf:D; ITERATIONS per repetition (50); REPETITIONS (7).
   Prints a line per shape and key=value lines (one per shape, "shape=..." first). */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nflow.h"
#include "timing.h"

#define BATCH 256
#define POOL 64 /* batches of data cycled through */
#define WARMUP 20

typedef struct shape {
  nf_recipe_kind kind;
  size_t dim;
} shape;

typedef struct bench {
  nf_flow *flow;
  nf_flow_ws *ws;
  nf_adam *adam;
  double *data, *theta, *grad;
  size_t dim, next;
  /* the MADE of one layer alone, for the parts */
  nf_made *made;
  double *made_theta, *made_work, *made_y, *made_gy, *made_gx, *made_gtheta;
} bench;

/* The next batch of the pool. */
static const double *next_batch(bench *b)
{
  const double *x = b->data + b->next * BATCH * b->dim;
  b->next = (b->next + 1) % POOL;
  return x;
}

/* One training iteration: mean NLL and its gradient, Adam on a copy of theta, theta back. */
static void do_iteration(void *arg)
{
  bench *b = arg;
  double nll;
  if (nf_flow_nll_grad_ws(b->flow, b->ws, 0, BATCH, next_batch(b), NULL, &nll, b->grad, NULL) ||
      nf_adam_step(b->adam, b->theta, b->grad) || nf_flow_set_params(b->flow, b->theta)) {
    fprintf(stderr, "bench_autoregressive: iteration failed: %s\n", nf_errmsg());
    exit(1);
  }
}

/* The forward (density) pass alone: mean NLL. */
static void do_nll(void *arg)
{
  bench *b = arg;
  double nll;
  nf_flow_nll_ws(b->flow, b->ws, 0, BATCH, next_batch(b), NULL, &nll);
}

/* The Adam step and the parameter write alone. */
static void do_adam(void *arg)
{
  bench *b = arg;
  nf_adam_step(b->adam, b->theta, b->grad);
  nf_flow_set_params(b->flow, b->theta);
}

/* One layer's MADE as the iteration runs it: mask, forward, backward to x and theta. */
static void do_made(void *arg)
{
  bench *b = arg;
  nf_made_mask(b->made, b->made_theta, b->made_work);
  nf_made_forward(b->made, BATCH, next_batch(b), NULL, b->made_y, b->made_work);
  nf_made_backward(b->made, BATCH, b->made_gy, b->made_gx, NULL, b->made_gtheta, b->made_work);
}

/* Raw transformer values per coordinate: affine (s, t) 2; spline 3K - 1 (rq_bins.h). */
static size_t n_raw(const nf_recipe *r)
{
  return r->kind == NF_RECIPE_NSF ? 3 * r->bins - 1 : 2;
}

/* Estimated flops of the transformer per element and iteration (map + pullback;
   a transcendental counted as one flop). Affine: soft clamp, scale, shift and
   log-det ~10, pullback ~15. Spline (K bins, lib/transformers/rq_bins.c): map =
   two softmaxes 10K + knot search 5K + bin_at 6K + derivatives, quadratic
   root and evaluation ~60; pullback = two bin_at 12K + two softmax pullbacks
   10K + partials and chain rule ~90: 43K + 150 in all. */
static double transformer_flops(const nf_recipe *r)
{
  return r->kind == NF_RECIPE_NSF ? 43.0 * (double)r->bins + 150.0 : 25.0;
}

/* FLOPs of one training iteration, per transform: the MADE's matrices,
   2 n in out forward and 2 x that backward (input and weight cotangents), so
   6 n sum(in out) over d -> hidden -> d nr; plus the transformer's estimate on
   the n d elements. Adam and the elementwise glue are left out. */
static double iteration_flops(size_t d, const nf_recipe *r)
{
  double macs = bench_mlp_macs(d, r->n_hidden, r->hidden, d * n_raw(r));
  double tf = transformer_flops(r) * (double)BATCH * (double)d;
  return (6.0 * (double)BATCH * macs + tf) * (double)r->layers;
}

/* Builds the flow, its workspace, Adam and the lone MADE of the shape; 0 on success. */
static int setup(bench *b, const shape *s, nf_recipe *r, nf_rng *rng)
{
  *r = nf_recipe_defaults(s->kind);
  size_t d = s->dim, nr = n_raw(r);
  b->dim = d;
  b->flow = nf_recipe_build(d, 0, r, rng);
  if (!b->flow) return 1;
  size_t np = nf_flow_n_params(b->flow);
  b->ws = nf_flow_ws_new(b->flow, BATCH);
  b->adam = nf_adam_new(np, NULL);
  b->made = nf_made_new(d, 0, r->n_hidden, r->hidden, nr, r->act, NF_ORDER_NATURAL, 0);
  if (!b->ws || !b->adam || !b->made) return 1;
  size_t mp = nf_made_n_params(b->made), rows = (size_t)BATCH * d;
  b->data = malloc(POOL * rows * sizeof *b->data);
  b->theta = malloc(np * sizeof *b->theta);
  b->grad = malloc(np * sizeof *b->grad);
  b->made_theta = malloc(mp * sizeof *b->made_theta);
  b->made_gtheta = calloc(mp, sizeof *b->made_gtheta);
  b->made_work = malloc(nf_made_work_size(b->made, BATCH) * sizeof *b->made_work);
  b->made_y = malloc(rows * nr * sizeof *b->made_y);
  b->made_gy = malloc(rows * nr * sizeof *b->made_gy);
  b->made_gx = malloc(rows * sizeof *b->made_gx);
  if (!b->data || !b->theta || !b->grad || !b->made_theta || !b->made_gtheta || !b->made_work ||
      !b->made_y || !b->made_gy || !b->made_gx)
    return 1;
  nf_rng_normal_fill(rng, POOL * rows, b->data);
  memcpy(b->theta, nf_flow_params(b->flow), np * sizeof *b->theta);
  nf_made_init(b->made, rng, 1.0, b->made_theta);
  nf_rng_normal_fill(rng, rows * nr, b->made_gy);
  return 0;
}

static void teardown(bench *b)
{
  nf_flow_ws_free(b->ws);
  nf_flow_free(b->flow);
  nf_adam_free(b->adam);
  nf_made_free(b->made);
  free(b->data); free(b->theta); free(b->grad);
  free(b->made_theta); free(b->made_gtheta); free(b->made_work);
  free(b->made_y); free(b->made_gy); free(b->made_gx);
  memset(b, 0, sizeof *b);
}

/* Times one shape and prints its lines; 0 on success. */
static int run_shape(const shape *s, int iters, int reps, double gemm_rate)
{
  bench b = {0};
  nf_recipe r;
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  if (setup(&b, s, &r, &rng)) {
    fprintf(stderr, "bench_autoregressive: setup failed: %s\n", nf_errmsg());
    teardown(&b);
    return 1;
  }
  for (int i = 0; i < WARMUP; i++) do_iteration(&b); /* leave the identity */
  double iter_s = bench_median_time(do_iteration, &b, reps, iters);
  double nll_s = bench_median_time(do_nll, &b, reps, iters);
  double adam_s = bench_median_time(do_adam, &b, reps, iters);
  double made_s = bench_median_time(do_made, &b, reps, iters) * (double)r.layers;
  double flops = iteration_flops(s->dim, &r), rate = flops / iter_s;
  const char *name = nf_recipe_name(s->kind);
  printf("%s d=%zu (%zu transforms, %zu raw/coord): %8.3f ms/iter  %7.1f MFLOP  %6.2f GFLOP/s "
         "= %.3f of dgemm | MADE fwd+bwd %.3f ms, forward pass %.3f ms, Adam %.3f ms\n",
         name, s->dim, r.layers, n_raw(&r), iter_s * 1e3, flops * 1e-6, rate * 1e-9,
         rate / gemm_rate, made_s * 1e3, nll_s * 1e3, adam_s * 1e3);
  printf("shape=%s:%zu iter_ms=%.4f flops_per_iter=%.0f iter_gflops=%.3f "
         "iter_dgemm_fraction=%.4f made_ms=%.4f forward_ms=%.4f adam_ms=%.4f\n",
         name, s->dim, iter_s * 1e3, flops, rate * 1e-9, rate / gemm_rate, made_s * 1e3,
         nll_s * 1e3, adam_s * 1e3);
  teardown(&b);
  return 0;
}

/* Parses "all" or a comma list of maf:D / nsf:D into shapes (at most max); count, or 0 on error. */
static size_t parse_shapes(const char *arg, shape *out, size_t max)
{
  static const shape all[] = {{NF_RECIPE_NSF, 2}, {NF_RECIPE_NSF, 16}, {NF_RECIPE_MAF, 2},
                              {NF_RECIPE_MAF, 16}};
  if (!strcmp(arg, "all")) {
    memcpy(out, all, sizeof all);
    return sizeof all / sizeof *all;
  }
  char buf[256];
  snprintf(buf, sizeof buf, "%s", arg);
  size_t n = 0;
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *colon = strchr(tok, ':');
    if (!colon || n == max) return 0;
    *colon = '\0';
    long d = atol(colon + 1);
    nf_recipe_kind k;
    if (nf_recipe_parse(tok, &k) || (k != NF_RECIPE_MAF && k != NF_RECIPE_NSF) || d < 1)
      return 0;
    out[n++] = (shape){k, (size_t)d};
  }
  return n;
}

int main(int argc, char **argv)
{
  shape shapes[16];
  size_t n = parse_shapes(argc > 1 ? argv[1] : "all", shapes, 16);
  int iters = argc > 2 ? atoi(argv[2]) : 50, reps = argc > 3 ? atoi(argv[3]) : 7;
  if (n == 0 || iters < 1 || reps < 1) {
    fprintf(stderr, "usage: %s [all | maf:D,nsf:D,... [iterations [repetitions]]]\n", argv[0]);
    return 2;
  }
  bench_one_thread();
  double gemm_rate = bench_dgemm_gflops(1024, reps) * 1e9;
  printf("autoregressive flows, batch %d, standard normal data, 1 BLAS thread, %d x %d "
         "iterations (median of the repetitions)\n", BATCH, reps, iters);
  printf("dgemm_gflops=%.3f\n", gemm_rate * 1e-9);
  int bad = 0;
  for (size_t k = 0; k < n; k++) bad |= run_shape(&shapes[k], iters, reps, gemm_rate);
  return bad;
}
