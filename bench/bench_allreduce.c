/* bench/bench_allreduce.c — the two figures of the strong-scaling model of
   data-parallel training (nf_trainer_set_comm over libnflow-mpi): the time of
   one all-reduce (nf_comm_mpi's order-fixed sum) of what a step sums (the flat
   gradient, the loss sum and one status slot per rank) for RealNVP
   (bench_realnvp's: 8 couplings, hidden 64,64, 2-D) and the FFJORD toy CNF
   (nf_cnf_defaults, 2-D), and the time of one training step of each at its
   default batch (256, 100) on one process, 1 BLAS thread.
   Usage: mpirun -np 2 bench/bench_allreduce [calls]   (rank 0 prints) */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <stdio.h>
#include <stdlib.h>

#include "nflow.h"
#include "nflow/mpi.h"
#include "timing.h"

/* Median seconds of one comm->sum of n doubles over calls calls. */
static double allreduce_time(nf_comm *comm, size_t n, int calls)
{
  double *v = calloc(n, sizeof *v), *t = malloc((size_t)calls * sizeof *t);
  for (int k = 0; k < calls; k++) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = bench_now();
    comm->sum(v, n, comm->user);
    t[k] = bench_now() - t0;
  }
  double m = bench_median(t, (size_t)calls);
  free(v), free(t);
  return m;
}

/* Median seconds of one step of a one-process trainer of flow at batch. */
static double step_time(nf_flow *flow, size_t batch, int steps)
{
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  nf_dataset *data = NULL;
  nf_toy_sample("8gaussians", 20000, &rng, &data);
  nf_adam *adam = nf_adam_new(nf_flow_n_params(flow), NULL);
  nf_trainer_opts o = nf_trainer_defaults();
  o.batch_size = batch;
  nf_trainer *tr = nf_trainer_new(flow, adam, data, NULL, &o, &rng);
  double *t = malloc((size_t)steps * sizeof *t);
  for (int k = 0; k < 5; k++) nf_trainer_step(tr, NULL); /* warm up */
  for (int k = 0; k < steps; k++) {
    double t0 = bench_now();
    nf_trainer_step(tr, NULL);
    t[k] = bench_now() - t0;
  }
  double m = bench_median(t, (size_t)steps);
  free(t);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_dataset_free(data);
  return m;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int calls = argc > 1 ? atoi(argv[1]) : 2000;
  if (calls < 1) calls = 2000;
  bench_one_thread();
  nf_comm *comm = nf_comm_mpi_new(MPI_COMM_WORLD);
  if (!comm) {
    fprintf(stderr, "bench_allreduce: %s\n", nf_errmsg());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  nf_recipe recipe = nf_recipe_defaults(NF_RECIPE_REALNVP);
  recipe.layers = 8;
  nf_flow *realnvp = nf_recipe_build(2, 0, &recipe, &rng);
  nf_flow *cnf = nf_flow_new(2, 0, NF_BASE_STD_NORMAL);
  nf_cnf_opts co = nf_cnf_defaults();
  nf_flow_push(cnf, nf_cnf_new(2, 0, &co, &rng));
  struct { const char *name; nf_flow *flow; size_t batch; } cases[] = {
    {"realnvp", realnvp, 256}, {"ffjord", cnf, 100}};
  if (comm->rank == 0)
    printf("all-reduce over %zu ranks (median of %d calls) and one-process step time "
           "(1 BLAS thread)\n", comm->size, calls);
  for (int c = 0; c < 2; c++) {
    size_t np = nf_flow_n_params(cases[c].flow), n = np + 1 + comm->size;
    double ar = allreduce_time(comm, n, calls);
    double st = step_time(cases[c].flow, cases[c].batch, c ? 20 : 200);
    if (comm->rank == 0)
      printf("%s_params=%zu\n%s_allreduce_us=%.2f\n%s_batch=%zu\n%s_step_ms=%.3f\n",
             cases[c].name, np, cases[c].name, ar * 1e6, cases[c].name, cases[c].batch,
             cases[c].name, st * 1e3);
  }
  nf_flow_free(realnvp);
  nf_flow_free(cnf);
  nf_comm_mpi_free(comm);
  MPI_Finalize();
  return 0;
}
