/* bench/bench_threads.c — 1 worker thread against 2 (threaded workspaces,
   nflow/pool.h), one BLAS thread each: RealNVP (bench_realnvp's recipe: 8
   affine couplings, hidden 64,64, 2-D) log_prob at batch 10^5 and its
   training iteration (NLL + gradient + Adam) at batch 256, and FFJORD's toy
   CNF (nf_cnf_defaults, 2-D) training iteration at batch 100. Each figure is
   the median and min-max over the repetitions.
   Usage: bench/bench_threads [repetitions]   (prints a table and key=value lines) */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <stdio.h>
#include <stdlib.h>

#include "nflow.h"
#include "timing.h"

#define BIG 100000

/* Median, min and max of t[0..n) (sorts t). */
typedef struct spread {
  double median, min, max;
} spread;

static spread spread_of(double *t, int n)
{
  spread s = {bench_median(t, (size_t)n), t[0], t[n - 1]};
  return s;
}

/* Times per call of fn(arg) over reps repetitions of `calls` calls. */
static spread time_calls(void (*fn)(void *), void *arg, int reps, int calls)
{
  double *t = malloc((size_t)reps * sizeof *t);
  for (int r = 0; r < reps; r++) {
    double t0 = bench_now();
    for (int c = 0; c < calls; c++) fn(arg);
    t[r] = (bench_now() - t0) / calls;
  }
  spread s = spread_of(t, reps);
  free(t);
  return s;
}

typedef struct case_ {
  nf_flow *flow;
  nf_trainer *trainer;
  nf_adam *adam;
  double *x, *logp;
} case_;

static void do_log_prob(void *arg)
{
  case_ *c = arg;
  nf_flow_log_prob(c->flow, BIG, c->x, NULL, c->logp);
}

static void do_step(void *arg) { nf_trainer_step(((case_ *)arg)->trainer, NULL); }

/* A flow with a trainer of `threads` threads at batch `batch` on data (warmed up by `warm` steps). */
static case_ make_case(nf_flow *flow, const nf_dataset *data, size_t batch, size_t threads,
                       int warm, nf_rng *rng)
{
  case_ c = {flow, NULL, nf_adam_new(nf_flow_n_params(flow), NULL), NULL, NULL};
  nf_trainer_opts o = nf_trainer_defaults();
  o.batch_size = batch;
  o.threads = threads;
  c.trainer = nf_trainer_new(flow, c.adam, data, NULL, &o, rng);
  if (!c.trainer) {
    fprintf(stderr, "bench_threads: %s\n", nf_errmsg());
    exit(1);
  }
  for (int i = 0; i < warm; i++) do_step(&c);
  return c;
}

static void free_case(case_ *c)
{
  nf_trainer_free(c->trainer);
  nf_adam_free(c->adam);
  nf_flow_free(c->flow);
}

static nf_flow *realnvp(nf_rng *rng)
{
  nf_recipe r = nf_recipe_defaults(NF_RECIPE_REALNVP);
  r.layers = 8;
  return nf_recipe_build(2, 0, &r, rng);
}

static nf_flow *toy_cnf(nf_rng *rng)
{
  nf_cnf_opts o = nf_cnf_defaults();
  nf_flow *flow = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  nf_flow_push(flow, nf_cnf_new(2, 0, &o, rng));
  return flow;
}

/* Prints one row: median and min-max in ms, and the speedup over 1 thread when given. */
static void row(const char *label, const spread *s, double speedup)
{
  printf("  %-34s %10.3f ms  [%.3f - %.3f]", label, s->median * 1e3, s->min * 1e3, s->max * 1e3);
  if (speedup > 0) printf("   speedup %.2fx", speedup);
  printf("\n");
}

int main(int argc, char **argv)
{
  int reps = argc > 1 ? atoi(argv[1]) : 5;
  if (reps < 3) reps = 3;
  bench_one_thread();
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  nf_dataset *data;
  if (nf_toy_sample("8gaussians", 100000, &rng, &data)) return 1;
  spread lp[2], it[2], cnf[2];
  for (size_t T = 1; T <= 2; T++) {
    nf_rng r1;
    nf_rng_seed(&r1, 7);
    case_ c = make_case(realnvp(&r1), data, 256, T, 50, &r1);
    c.x = malloc(2 * BIG * sizeof *c.x);
    c.logp = malloc(BIG * sizeof *c.logp);
    nf_flow_sample(c.flow, &r1, BIG, NULL, c.x, c.logp);
    do_log_prob(&c);
    lp[T - 1] = time_calls(do_log_prob, &c, reps, 1);
    it[T - 1] = time_calls(do_step, &c, reps, 50);
    free(c.x);
    free(c.logp);
    free_case(&c);
    nf_rng_seed(&r1, 7);
    case_ k = make_case(toy_cnf(&r1), data, 100, T, 3, &r1);
    cnf[T - 1] = time_calls(do_step, &k, reps, 3);
    free_case(&k);
  }
  printf("1 vs 2 worker threads (1 BLAS thread), %d repetitions: median [min - max]\n", reps);
  row("RealNVP log_prob b=1e5, 1 thread", &lp[0], 0);
  row("RealNVP log_prob b=1e5, 2 threads", &lp[1], lp[0].median / lp[1].median);
  printf("  %-34s %10.3f / %.3f Mpoints/s\n", "RealNVP log_prob throughput", BIG / lp[0].median * 1e-6,
         BIG / lp[1].median * 1e-6);
  row("RealNVP train iter b=256, 1 thread", &it[0], 0);
  row("RealNVP train iter b=256, 2 threads", &it[1], it[0].median / it[1].median);
  row("CNF toy train iter b=100, 1 thread", &cnf[0], 0);
  row("CNF toy train iter b=100, 2 threads", &cnf[1], cnf[0].median / cnf[1].median);
  printf("log_prob_points_per_s_1=%.0f\nlog_prob_points_per_s_2=%.0f\nlog_prob_speedup=%.3f\n",
         BIG / lp[0].median, BIG / lp[1].median, lp[0].median / lp[1].median);
  printf("realnvp_iter_ms_1=%.4f\nrealnvp_iter_ms_2=%.4f\nrealnvp_iter_speedup=%.3f\n",
         it[0].median * 1e3, it[1].median * 1e3, it[0].median / it[1].median);
  printf("cnf_iter_ms_1=%.3f\ncnf_iter_ms_2=%.3f\ncnf_iter_speedup=%.3f\n", cnf[0].median * 1e3,
         cnf[1].median * 1e3, cnf[0].median / cnf[1].median);
  nf_dataset_free(data);
  return 0;
}
