/* bench/bench_realnvp.c — speed of a RealNVP (8 affine couplings, hidden 64,64,
   2-D) at one BLAS thread, against the machine's dgemm rate measured in the
   same run: training iteration (NLL + gradient + Adam) at batch 256, log_prob
   and sample throughput at batch 10^5, one-point log_prob latency.
   Usage: bench/bench_realnvp [repetitions]   (prints a table and key=value lines) */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <stdio.h>
#include <stdlib.h>

#include "nflow.h"
#include "timing.h"

#define BATCH 256
#define BIG 100000
#define LAYERS 8

typedef struct bench {
  nf_flow *flow;
  nf_trainer *trainer;
  nf_rng rng;
  double *big_x, *big_logp;
} bench;

static void do_train_step(void *arg) { nf_trainer_step(((bench *)arg)->trainer, NULL); }

static void do_log_prob_big(void *arg)
{
  bench *b = arg;
  nf_flow_log_prob(b->flow, BIG, b->big_x, NULL, b->big_logp);
}

static void do_sample_big(void *arg)
{
  bench *b = arg;
  nf_flow_sample(b->flow, &b->rng, BIG, NULL, b->big_x, b->big_logp);
}

static void do_log_prob_one(void *arg)
{
  bench *b = arg;
  nf_flow_log_prob(b->flow, 1, b->big_x, NULL, b->big_logp);
}

/* Floating-point operations of one training iteration: per coupling, the
   conditioner's forward (2 flops per multiply-add) and backward (twice that). */
static double train_flops(size_t dim, const nf_recipe *r)
{
  double macs = bench_mlp_macs(dim / 2, r->n_hidden, r->hidden, 2 * (dim - dim / 2));
  return 6.0 * macs * BATCH * (double)r->layers;
}

int main(int argc, char **argv)
{
  int reps = argc > 1 ? atoi(argv[1]) : 7;
  if (reps < 1) reps = 7;
  bench_one_thread();
  bench b = {0};
  nf_rng_seed(&b.rng, 1);
  double gemm_rate = bench_dgemm_gflops(1024, reps) * 1e9;

  nf_recipe recipe = nf_recipe_defaults(NF_RECIPE_REALNVP);
  recipe.layers = LAYERS;
  b.flow = nf_recipe_build(2, 0, &recipe, &b.rng);
  nf_dataset *data;
  nf_adam *adam = nf_adam_new(nf_flow_n_params(b.flow), NULL);
  if (!b.flow || !adam || nf_toy_sample("8gaussians", 100000, &b.rng, &data)) {
    fprintf(stderr, "bench_realnvp: setup failed: %s\n", nf_errmsg());
    return 1;
  }
  nf_trainer_opts topts = nf_trainer_defaults();
  topts.batch_size = BATCH;
  b.trainer = nf_trainer_new(b.flow, adam, data, NULL, &topts, &b.rng);
  for (int i = 0; i < 50; i++) do_train_step(&b); /* warm up, leave the identity */
  double iter_s = bench_median_time(do_train_step, &b, reps, 50);
  double flops = train_flops(2, &recipe);

  b.big_x = malloc(2 * BIG * sizeof *b.big_x);
  b.big_logp = malloc(BIG * sizeof *b.big_logp);
  do_sample_big(&b);
  double sample_s = bench_median_time(do_sample_big, &b, reps, 1);
  double logp_s = bench_median_time(do_log_prob_big, &b, reps, 1);
  double one_s = bench_median_time(do_log_prob_one, &b, reps, 10000);

  printf("RealNVP %zu couplings, hidden 64,64, 2-D, 1 BLAS thread, %d repetitions (medians)\n",
         (size_t)LAYERS, reps);
  printf("  dgemm 1024^3:                %8.2f GFLOP/s\n", gemm_rate * 1e-9);
  printf("  training iteration (b=256):  %8.3f ms   %6.2f GFLOP/s = %.2f of dgemm\n",
         iter_s * 1e3, flops / iter_s * 1e-9, flops / iter_s / gemm_rate);
  printf("  log_prob (b=1e5):            %8.3f Mpoints/s\n", BIG / logp_s * 1e-6);
  printf("  sample (b=1e5):              %8.3f Mpoints/s\n", BIG / sample_s * 1e-6);
  printf("  log_prob one point:          %8.2f us\n", one_s * 1e6);
  printf("dgemm_gflops=%.3f\niter_ms=%.4f\niter_gflops=%.3f\niter_dgemm_fraction=%.3f\n",
         gemm_rate * 1e-9, iter_s * 1e3, flops / iter_s * 1e-9, flops / iter_s / gemm_rate);
  printf("log_prob_points_per_s=%.0f\nsample_points_per_s=%.0f\nlog_prob_one_us=%.3f\n",
         BIG / logp_s, BIG / sample_s, one_s * 1e6);
  nf_trainer_free(b.trainer);
  nf_adam_free(adam);
  nf_dataset_free(data);
  nf_flow_free(b.flow);
  free(b.big_x); free(b.big_logp);
  return 0;
}
