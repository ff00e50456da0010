/* bench/bench_phi4.c — flow against Markov chain on phi^4 (8 x 8, m^2 = -4) at
   the two points of tests/test_phi4.c (lambda = 8 symmetric, lambda = 3
   broken). Per point and run (seed): the flow's training time, ESS,
   <|M|> +- err reweighted from N symmetrised draws and their sampling time;
   the chain's cost per sweep and integrated autocorrelation time of |M|,
   hence its time to the flow's error bar, t = cost 2 tau var(|M|) / err^2.
   Usage: bench_phi4 [runs draws]   (defaults 3 16384) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "phi4_flow.h"
#include "phi4_mcmc.h"
#include "timing.h"

enum { LAT = 8, SWEEPS = 400000 };

/* The chain's seconds to an error err on <|M|>. */
static double chain_time(double m2, double lambda, uint64_t seed, double err, double *tau)
{
  phi4_chain c = {LAT, m2, lambda, 1.0, 1};
  double *m = malloc(SWEEPS * sizeof *m), var = 0;
  if (!m) return NAN;
  double t0 = bench_now();
  phi4_mcmc_run(&c, seed, 2000, SWEEPS, m);
  double per_sweep = (bench_now() - t0) / (SWEEPS + 2000);
  for (size_t i = 0; i < SWEEPS; i++) m[i] = fabs(m[i]);
  phi4_stat st = phi4_autocorr(SWEEPS, m);
  for (size_t i = 0; i < SWEEPS; i++) var += (m[i] - st.mean) * (m[i] - st.mean);
  var /= SWEEPS;
  free(m);
  *tau = st.tau;
  printf("  mcmc: <|M|> = %.4f +- %.4f from %d sweeps, %.3g us/sweep, tau %.1f\n", st.mean,
         st.err, SWEEPS, 1e6 * per_sweep, st.tau);
  return per_sweep * 2 * st.tau * var / (err * err);
}

/* One run at (m2, lambda): prints the figures, returns nonzero on failure. */
static int run(double m2, double lambda, uint64_t seed, size_t n, double *row)
{
  phi4_flow_opts o = phi4_flow_defaults();
  o.seed = seed;
  nf_target *t = nf_target_phi4(LAT, m2, lambda);
  nf_flow *flow = phi4_flow_build(LAT, &o);
  double *x = malloc(n * LAT * LAT * sizeof *x), *log_w = malloc(n * sizeof *log_w);
  double loss, pos, mean[2], err[2], tau;
  nf_importance imp;
  nf_rng rng;
  nf_rng_seed(&rng, seed + 100);
  int bad = !t || !flow || !x || !log_w;
  double t0 = bench_now();
  bad = bad || phi4_flow_train(flow, t, &o, &loss);
  double t1 = bench_now();
  bad = bad || phi4_flow_sample(flow, t, &rng, n, x, log_w, &pos);
  double t2 = bench_now();
  bad = bad || nf_importance_summary(n, log_w, &imp) || phi4_flow_moments(t, n, x, log_w, mean, err);
  if (!bad) {
    printf("lambda=%g seed=%llu: train %.1f s, ESS %.4f, raw M>0 %.3f, <|M|> = %.4f +- %.4f "
           "from %zu draws in %.2f s\n", lambda, (unsigned long long)seed, t1 - t0, imp.ess, pos,
           mean[0], err[0], n, t2 - t1);
    double tm = chain_time(m2, lambda, seed, err[0], &tau);
    printf("  mcmc time to +- %.4f: %.3g s (flow: %.1f s with training, %.2f s sampling)\n",
           err[0], tm, t2 - t0, t2 - t1);
    double r[5] = {t1 - t0, imp.ess, err[0], t2 - t1, tm};
    for (int k = 0; k < 5; k++) row[k] = r[k];
  } else {
    fprintf(stderr, "bench_phi4: %s\n", nf_errmsg());
  }
  free(log_w);
  free(x);
  nf_flow_free(flow);
  nf_target_free(t);
  return bad;
}

int main(int argc, char **argv)
{
  int runs = argc > 1 ? atoi(argv[1]) : 3;
  size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 16384;
  static const char *const names[5] = {"train_s", "ess", "abs_m_err", "sample_s", "mcmc_s"};
  const double lambdas[2] = {8.0, 3.0};
  if (runs < 1 || runs > 16 || n < 2) return 2;
  bench_one_thread();
  for (int p = 0; p < 2; p++) {
    double rows[16][5], col[16];
    for (int r = 0; r < runs; r++)
      if (run(-4.0, lambdas[p], (uint64_t)r + 1, n, rows[r])) return 1;
    printf("summary lambda=%g (median [min, max] of %d):", lambdas[p], runs);
    for (int k = 0; k < 5; k++) {
      double lo = INFINITY, hi = -INFINITY;
      for (int r = 0; r < runs; r++) {
        col[r] = rows[r][k];
        lo = fmin(lo, col[r]);
        hi = fmax(hi, col[r]);
      }
      printf(" %s=%.4g [%.4g, %.4g]", names[k], bench_median(col, (size_t)runs), lo, hi);
    }
    printf("\n");
  }
  return 0;
}
