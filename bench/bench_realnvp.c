/* bench/bench_realnvp.c — speed of a RealNVP (8 affine couplings, hidden 64,64,
   2-D) at one BLAS thread, in double and in single precision, against the
   machine's dgemm and sgemm rates measured in the same run: training
   iteration (NLL + gradient + Adam) at batch 256, log_prob and sample
   throughput at batch 10^5, one-point log_prob latency.
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

/* The figures of one precision. */
typedef struct figures {
  double iter_s, logp_s, sample_s, one_s, flops;
} figures;

/* Builds the RealNVP in the given precision, warms its trainer up and times it. */
static int measure(nf_precision precision, int reps, figures *f)
{
  bench b = {0};
  nf_rng_seed(&b.rng, 1);
  nf_recipe recipe = nf_recipe_defaults(NF_RECIPE_REALNVP);
  recipe.layers = LAYERS;
  recipe.precision = precision;
  b.flow = nf_recipe_build(2, 0, &recipe, &b.rng);
  nf_dataset *data = NULL;
  nf_adam *adam = b.flow ? nf_adam_new(nf_flow_n_params(b.flow), NULL) : NULL;
  nf_trainer_opts topts = nf_trainer_defaults();
  topts.batch_size = BATCH;
  if (adam && !nf_toy_sample("8gaussians", 100000, &b.rng, &data))
    b.trainer = nf_trainer_new(b.flow, adam, data, NULL, &topts, &b.rng);
  b.big_x = malloc(2 * BIG * sizeof *b.big_x);
  b.big_logp = malloc(BIG * sizeof *b.big_logp);
  int ok = b.trainer && b.big_x && b.big_logp;
  if (ok) {
    for (int i = 0; i < 50; i++) do_train_step(&b); /* warm up, leave the identity */
    f->iter_s = bench_median_time(do_train_step, &b, reps, 50);
    f->flops = train_flops(2, &recipe);
    do_sample_big(&b);
    f->sample_s = bench_median_time(do_sample_big, &b, reps, 1);
    f->logp_s = bench_median_time(do_log_prob_big, &b, reps, 1);
    f->one_s = bench_median_time(do_log_prob_one, &b, reps, 10000);
  } else {
    fprintf(stderr, "bench_realnvp: setup failed: %s\n", nf_errmsg());
  }
  nf_trainer_free(b.trainer);
  nf_adam_free(adam);
  nf_dataset_free(data);
  nf_flow_free(b.flow);
  free(b.big_x);
  free(b.big_logp);
  return ok;
}

/* One precision's rows of the table. */
static void report(const char *name, const figures *f, double gemm_rate, const char *gemm)
{
  printf("%s precision:\n", name);
  printf("  training iteration (b=256):  %8.3f ms   %6.2f GFLOP/s = %.2f of %s\n", f->iter_s * 1e3,
         f->flops / f->iter_s * 1e-9, f->flops / f->iter_s / gemm_rate, gemm);
  printf("  log_prob (b=1e5):            %8.3f Mpoints/s\n", BIG / f->logp_s * 1e-6);
  printf("  sample (b=1e5):              %8.3f Mpoints/s\n", BIG / f->sample_s * 1e-6);
  printf("  log_prob one point:          %8.2f us\n", f->one_s * 1e6);
}

/* Its key=value lines (suffix "" for double, "_single"). */
static void keys(const char *suffix, const figures *f, double gemm_rate, const char *gemm)
{
  printf("iter_ms%s=%.4f\niter_gflops%s=%.3f\niter_%s_fraction%s=%.3f\n", suffix, f->iter_s * 1e3,
         suffix, f->flops / f->iter_s * 1e-9, gemm, suffix, f->flops / f->iter_s / gemm_rate);
  printf("log_prob_points_per_s%s=%.0f\nsample_points_per_s%s=%.0f\nlog_prob_one_us%s=%.3f\n",
         suffix, BIG / f->logp_s, suffix, BIG / f->sample_s, suffix, f->one_s * 1e6);
}

int main(int argc, char **argv)
{
  int reps = argc > 1 ? atoi(argv[1]) : 7;
  if (reps < 1) reps = 7;
  bench_one_thread();
  double dgemm_rate = bench_dgemm_gflops(1024, reps) * 1e9;
  double sgemm_rate = bench_sgemm_gflops(1024, reps) * 1e9;
  figures d, s;
  if (!measure(NF_PRECISION_DOUBLE, reps, &d) || !measure(NF_PRECISION_SINGLE, reps, &s)) return 1;
  printf("RealNVP %zu couplings, hidden 64,64, 2-D, 1 BLAS thread, %d repetitions (medians)\n",
         (size_t)LAYERS, reps);
  printf("  dgemm 1024^3:                %8.2f GFLOP/s\n", dgemm_rate * 1e-9);
  printf("  sgemm 1024^3:                %8.2f GFLOP/s\n", sgemm_rate * 1e-9);
  report("double", &d, dgemm_rate, "dgemm");
  report("single", &s, sgemm_rate, "sgemm");
  printf("dgemm_gflops=%.3f\nsgemm_gflops=%.3f\n", dgemm_rate * 1e-9, sgemm_rate * 1e-9);
  keys("", &d, dgemm_rate, "dgemm");
  keys("_single", &s, sgemm_rate, "sgemm");
  return 0;
}
