/* bench/bench_cnf.c — speed of FFJORD's toy CNF (concatsquash 64-64-64, tanh,
   exact trace, T = 0.5 learnable, batch 100) at one BLAS thread, for each
   gradient mode and solver, and the FLOP rate of one right-hand side (f with
   the exact trace) against the machine's dgemm rate measured in the same run,
   and in single precision against the sgemm rate.
   Every mode trains from the same initial parameters on the same batches.
   Usage: bench/bench_cnf [iterations per mode] [repetitions of the RHS timing] */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <stdio.h>
#include <stdlib.h>
#include <cblas.h>

#include "nflow.h"
#include "timing.h"

#define BATCH 100
#define DIM 2

typedef struct mode {
  const char *name;
  nf_ode_method method;
  nf_ode_grad grad;
} mode;

/* Trains a fresh copy of the toy CNF for iters steps with one mode; prints
   median and mean ms per iteration and the mean NFE per iteration. */
static void bench_mode(const mode *m, const nf_dataset *data, size_t iters)
{
  nf_rng rng;
  nf_rng_seed(&rng, 7);
  nf_cnf_opts o = nf_cnf_defaults();
  o.ode = nf_ode_defaults(m->method);
  o.ode.rtol = o.ode.atol = 1e-5;
  o.ode.fixed_steps = 8; /* RK4: about the DOPRI5 step count of early training */
  o.ode.grad = m->grad;
  nf_flow *flow = nf_flow_new(DIM, 0, NF_BASE_STD_NORMAL);
  nf_layer *cnf = nf_cnf_new(DIM, 0, &o, &rng);
  nf_flow_push(flow, cnf);
  nf_adam_opts ao = nf_adam_defaults();
  ao.weight_decay = 1e-5;
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), &ao);
  nf_trainer_opts to = nf_trainer_defaults();
  to.batch_size = BATCH;
  to.iterations = iters;
  nf_trainer *tr = nf_trainer_new(flow, adam, data, NULL, &to, &rng);
  double *t = malloc(iters * sizeof *t), total = 0, loss = 0;
  size_t done = 0;
  for (; done < iters; done++) {
    double t0 = bench_now();
    if (nf_trainer_step(tr, &loss)) break;
    t[done] = bench_now() - t0;
    total += t[done];
  }
  nf_cnf_counters c;
  nf_cnf_get_counters(cnf, &c);
  if (done == 0) {
    printf("  %-22s failed: %s\n", m->name, nf_errmsg());
  } else {
    double median = bench_median(t, done);
    printf("  %-22s %9.2f %9.2f %9.1f %9.1f %9.3f\n", m->name, median * 1e3,
           total / (double)done * 1e3, (double)c.nfe / (double)done,
           (double)c.nfe_adjoint / (double)done, loss);
    printf("key %s.ms_median=%.3f %s.ms_mean=%.3f %s.nfe_forward=%.1f %s.nfe_backward=%.1f "
           "%s.integrators=%zu\n",
           m->name, median * 1e3, m->name, total / (double)done * 1e3, m->name,
           (double)c.nfe / (double)done, m->name, (double)c.nfe_adjoint / (double)done, m->name,
           c.integrators);
  }
  free(t);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
}

/* sgemm of two n x n float matrices (the single-precision peer of bench_dgemm_gflops). */
typedef struct fsquare {
  int n;
  float *a, *c;
} fsquare;

static void square_sgemm(void *arg)
{
  fsquare *s = arg;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->n, s->n, 1.0f, s->a, s->n, s->a,
              s->n, 0.0f, s->c, s->n);
}

/* GFLOP/s of an n^3 sgemm at one thread, median of reps. */
static double sgemm_gflops(int n, int reps)
{
  fsquare s = {n, malloc((size_t)n * n * sizeof(float)), malloc((size_t)n * n * sizeof(float))};
  for (size_t i = 0; i < (size_t)n * n; i++) s.a[i] = 1.0f / (float)(i % 97 + 1);
  square_sgemm(&s); /* warm up */
  double sec = bench_median_time(square_sgemm, &s, reps, 1);
  free(s.a);
  free(s.c);
  return 2.0 * n * (double)n * n / sec * 1e-9;
}

/* GFLOP/s of one exact-trace right-hand side evaluation of the toy net at batch
   100, in the given precision. */
static double rhs_gflops(int reps, nf_precision precision)
{
  static const size_t hidden[] = {64, 64, 64};
  nf_rng rng;
  nf_rng_seed(&rng, 3);
  nf_odenet *net = nf_odenet_new(DIM, 0, 3, hidden, NF_ODENET_CONCATSQUASH, NF_ODENET_TANH);
  nf_odenet_set_precision(net, precision);
  double *theta = malloc(nf_odenet_n_params(net) * sizeof *theta);
  double *work = malloc(nf_odenet_work_size(net, BATCH, 1) * sizeof *work);
  double z[BATCH * DIM], f[BATCH * DIM], tr[BATCH], *t = malloc((size_t)reps * sizeof *t);
  nf_odenet_init(net, &rng, theta);
  nf_rng_normal_fill(&rng, BATCH * DIM, z);
  for (int r = 0; r <= reps; r++) {
    double t0 = bench_now();
    for (int k = 0; k < 100; k++) nf_odenet_trace(net, theta, BATCH, 0.25, z, NULL, NULL, f, tr, NULL, NULL, work);
    if (r) t[r - 1] = (bench_now() - t0) / 100;
  }
  double median = bench_median(t, (size_t)reps);
  double rate = nf_odenet_trace_flops(net, 1) * BATCH / median * 1e-9;
  printf("  one RHS (f + exact trace, batch %d, %s): %.1f us\n", BATCH,
         nf_precision_name(precision), median * 1e6);
  free(theta); free(work); free(t);
  nf_odenet_free(net);
  return rate;
}

int main(int argc, char **argv)
{
  size_t iters = argc > 1 ? (size_t)atoi(argv[1]) : 30;
  int reps = argc > 2 ? atoi(argv[2]) : 7;
  if (iters < 1) iters = 30;
  if (reps < 1) reps = 7;
  bench_one_thread();
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  nf_dataset *data;
  if (nf_toy_sample("8gaussians", iters * BATCH, &rng, &data)) return 1;
  double gemm = bench_dgemm_gflops(1024, reps);
  printf("FFJORD toy CNF, 8gaussians, batch %d, 1 BLAS thread, %zu iterations per mode\n", BATCH, iters);
  printf("  dgemm 1024^3: %.2f GFLOP/s\n", gemm);
  double rhs = rhs_gflops(reps, NF_PRECISION_DOUBLE);
  printf("  RHS rate: %.2f GFLOP/s = %.2f of dgemm\n", rhs, rhs / gemm);
  double sgemm = sgemm_gflops(1024, reps), rhs_s = rhs_gflops(reps, NF_PRECISION_SINGLE);
  printf("  sgemm 1024^3: %.2f GFLOP/s\n", sgemm);
  printf("  single RHS rate: %.2f GFLOP/s = %.2f of sgemm\n", rhs_s, rhs_s / sgemm);
  printf("  %-22s %9s %9s %9s %9s %9s\n", "mode", "ms med", "ms mean", "nfe fwd", "nfe bwd", "loss");
  static const mode modes[] = {
    {"dopri5-backsolve", NF_ODE_DOPRI5, NF_GRAD_BACKSOLVE},
    {"dopri5-discrete", NF_ODE_DOPRI5, NF_GRAD_DISCRETE},
    {"rk4x8-discrete", NF_ODE_RK4, NF_GRAD_DISCRETE},
    {"rk4x8-backsolve", NF_ODE_RK4, NF_GRAD_BACKSOLVE},
    {"adams-backsolve", NF_ODE_ADAMS, NF_GRAD_BACKSOLVE},
    {"adams-checkpoint", NF_ODE_ADAMS, NF_GRAD_CHECKPOINT},
    {"bdf-checkpoint", NF_ODE_BDF, NF_GRAD_CHECKPOINT},
  };
  for (size_t k = 0; k < sizeof modes / sizeof *modes; k++) bench_mode(&modes[k], data, iters);
  printf("dgemm_gflops=%.3f\nrhs_gflops=%.3f\nrhs_dgemm_fraction=%.3f\n", gemm, rhs, rhs / gemm);
  printf("sgemm_gflops=%.3f\nrhs_single_gflops=%.3f\nrhs_sgemm_fraction=%.3f\n", sgemm, rhs_s,
         rhs_s / sgemm);
  nf_dataset_free(data);
  return 0;
}
