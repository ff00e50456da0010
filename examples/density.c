/* examples/density.c — fit a RealNVP to the two-moons toy set, then evaluate
   its exact density on a grid and draw samples.
   Build against an installed nflow:  cc density.c $(pkg-config --cflags --libs nflow) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <nflow.h>

/* Prints the failing call's status and detail and returns 1. */
static int fail(const char *what, nf_status st)
{
  fprintf(stderr, "density: %s: %s: %s\n", what, nf_status_str(st), nf_errmsg());
  return 1;
}

int main(void)
{
  nf_rng rng;
  nf_rng_seed(&rng, 2024);

  nf_dataset *data;
  nf_status st = nf_toy_sample("moons", 20000, &rng, &data);
  if (st) return fail("nf_toy_sample", st);

  nf_recipe recipe = nf_recipe_defaults(NF_RECIPE_REALNVP); /* 8 couplings, 64-64 relu */
  nf_flow *flow = nf_recipe_build(2, 0, &recipe, &rng);
  nf_adam *adam = flow ? nf_adam_new(nf_flow_n_params(flow), NULL) : NULL;
  nf_trainer_opts opts = nf_trainer_defaults();
  opts.batch_size = 256;
  opts.iterations = 300;
  nf_trainer *trainer = adam ? nf_trainer_new(flow, adam, data, NULL, &opts, &rng) : NULL;
  if (!trainer) return fail("setup", NF_EINVAL);
  nf_train_report report;
  if ((st = nf_trainer_run(trainer, &report))) return fail("nf_trainer_run", st);
  printf("train_nll=%.4f\n", report.train_loss);

  /* The density integrates to one: midpoint rule on [-6, 6]^2. */
  enum { M = 240 };
  double cell = 12.0 / M, mass = 0, grid[2 * M], logp[M];
  for (int i = 0; i < M; i++) {
    for (int j = 0; j < M; j++) {
      grid[2 * j] = -6 + (i + 0.5) * cell;
      grid[2 * j + 1] = -6 + (j + 0.5) * cell;
    }
    if ((st = nf_flow_log_prob(flow, M, grid, NULL, logp))) return fail("nf_flow_log_prob", st);
    for (int j = 0; j < M; j++) mass += exp(logp[j]) * cell * cell;
  }
  printf("mass=%.4f\n", mass);

  double x[2 * 3], lp[3];
  if ((st = nf_flow_sample(flow, &rng, 3, NULL, x, lp))) return fail("nf_flow_sample", st);
  for (int i = 0; i < 3; i++) printf("sample=%.4f,%.4f logp=%.4f\n", x[2 * i], x[2 * i + 1], lp[i]);

  nf_trainer_free(trainer);
  nf_adam_free(adam);
  nf_flow_free(flow);
  nf_dataset_free(data);
  return 0;
}
