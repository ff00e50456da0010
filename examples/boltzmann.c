/* examples/boltzmann.c — a Boltzmann generator: a neural spline flow learns
   to sample the double well p(x) ~ exp(-4 (x1^2 - 1)^2 - x2^2 / 2) by reverse
   KL, knowing only the unnormalised density (here a user callback, as a
   physicist's own energy would be), then estimates log Z and <x1^2> by
   importance weights.
   usage: boltzmann [ITERATIONS [SAMPLES]]   (defaults 1000, 100000) */
#include <stdio.h>
#include <stdlib.h>
#include "nflow.h"

/* log p~(x) = -E(x), E the double-well energy, and its gradient. */
static int double_well(size_t n, size_t dim, const double *x, double *logp, double *grad,
                       void *user)
{
  (void)user;
  for (size_t i = 0; i < n; i++) {
    const double *xi = x + i * dim;
    double s = xi[0] * xi[0] - 1.0;
    logp[i] = -4.0 * s * s - 0.5 * xi[1] * xi[1];
    if (grad) {
      grad[i * dim] = -16.0 * xi[0] * s;
      grad[i * dim + 1] = -xi[1];
    }
  }
  return 0;
}

int main(int argc, char **argv)
{
  size_t iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
  size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000;
  nf_rng rng;
  nf_rng_seed(&rng, 1);
  nf_target *target = nf_target_new(2, double_well, NULL);
  nf_recipe recipe = nf_recipe_defaults(NF_RECIPE_NSF);
  nf_flow *flow = target ? nf_recipe_build(2, 0, &recipe, &rng) : NULL;
  nf_adam *adam = flow ? nf_adam_new(nf_flow_n_params(flow), NULL) : NULL;
  /* reverse KL, E_q[log q - log p~]: no data, 256 fresh draws per step */
  nf_objective objective = nf_objective_reverse_kl(target);
  nf_trainer_opts to = nf_trainer_defaults();
  to.iterations = iters;
  to.batch_size = 256;
  to.objective = &objective;
  to.schedule = NF_LR_COSINE;
  nf_trainer *tr = adam ? nf_trainer_new(flow, adam, NULL, NULL, &to, &rng) : NULL;
  nf_train_report rep;
  nf_status st = tr ? nf_trainer_run(tr, &rep) : nf_last_status();
  /* importance weights w = p~ / q of fresh samples */
  double *x = malloc(2 * n * sizeof *x), *log_w = malloc(n * sizeof *log_w);
  double *x1sq = malloc(n * sizeof *x1sq), mean, err;
  nf_importance imp;
  if (!st && (!x || !log_w || !x1sq)) st = NF_ENOMEM;
  if (!st) st = nf_importance_sample(flow, &rng, target, n, x, log_w);
  if (!st) st = nf_importance_summary(n, log_w, &imp);
  for (size_t i = 0; !st && i < n; i++) x1sq[i] = x[2 * i] * x[2 * i];
  if (!st) st = nf_importance_mean(n, log_w, 1, x1sq, &mean, &err);
  if (st) {
    fprintf(stderr, "boltzmann: %s\n", st == NF_ENOMEM ? "out of memory" : nf_errmsg());
  } else {
    size_t right = 0;
    for (size_t i = 0; i < n; i++) right += x[2 * i] > 0;
    printf("loss=%.6f\ness=%.4f\nlogz=%.5f\nlogz_err=%.5f\n", rep.train_loss, imp.ess, imp.log_z,
           imp.log_z_err);
    printf("x1_squared=%.5f\nx1_squared_err=%.5f\nmode_frac=%.4f\n", mean, err,
           (double)right / (double)n);
  }
  free(x);
  free(log_w);
  free(x1sq);
  nf_trainer_free(tr);
  nf_adam_free(adam);
  nf_flow_free(flow);
  nf_target_free(target);
  return st ? 1 : 0;
}
