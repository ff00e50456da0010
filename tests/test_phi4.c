/* tests/test_phi4.c — a flow trained by reverse KL on phi^4 (8 x 8 lattice,
   m^2 = -4) reproduces a Markov chain's <|M|> and <M^2> by importance
   reweighting, in the symmetric phase (lambda = 8: the histogram of
   M = sum_x phi_x has one peak at 0) and in the broken phase (lambda = 3: two
   peaks, a dip at 0; reverse KL puts the flow on one of them, and the
   reweighting uses the symmetrised flow, phi4_flow_sample). Nearer the
   transition (lambda = 4, 4.25) the flow misses the domain-wall
   configurations between the peaks and <|M|> comes out 5-9 errors high. The reference chain (tests/phi4_mcmc.c: local Metropolis
   with the exact global move phi -> -phi) runs here, 2 x 10^5 sweeps, its
   errors from the integrated autocorrelation time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "helpers.h"
#include "phi4_flow.h"
#include "phi4_mcmc.h"

enum { LAT = 8, SWEEPS = 200000, DRAWS = 16384, BINS = 25 };

/* The chain's <|M|>, <M^2> (stat[2]) and the dip ratio of its histogram of M. */
static double chain_reference(double m2, double lambda, phi4_stat *stat)
{
  phi4_chain c = {LAT, m2, lambda, 1.0, 1};
  double *m = malloc(SWEEPS * sizeof *m), *a = malloc(SWEEPS * sizeof *a);
  double *q = malloc(SWEEPS * sizeof *q), h[BINS];
  ck_assert(m && a && q);
  double acc = phi4_mcmc_run(&c, 11, 2000, SWEEPS, m);
  ck_assert_msg(acc > 0.3 && acc < 0.7, "Metropolis acceptance %.3f", acc);
  for (size_t i = 0; i < SWEEPS; i++) {
    a[i] = fabs(m[i]);
    q[i] = m[i] * m[i];
  }
  stat[0] = phi4_autocorr(SWEEPS, a);
  stat[1] = phi4_autocorr(SWEEPS, q);
  /* the windowed tau and blocking (blocks of 1000 >> tau sweeps) agree */
  double blk = phi4_block_error(SWEEPS, a, 1000);
  ck_assert_msg(blk > 0.7 * stat[0].err && blk < 1.4 * stat[0].err,
                "<|M|> error: %.4g from tau, %.4g from blocking", stat[0].err, blk);
  phi4_histogram(SWEEPS, m, 2.5 * sqrt(stat[1].mean), BINS, h);
  free(q);
  free(a);
  free(m);
  return phi4_dip_ratio(BINS, h);
}

static void check_point(double m2, double lambda, int broken)
{
  phi4_stat ref[2];
  double dip = chain_reference(m2, lambda, ref);
  printf("phi4 m2=%g lambda=%g: MCMC <|M|> = %.4f +- %.4f (tau %.1f), <M^2> = %.3f +- %.3f "
         "(tau %.1f), histogram centre/peak %.3f\n", m2, lambda, ref[0].mean, ref[0].err,
         ref[0].tau, ref[1].mean, ref[1].err, ref[1].tau, dip);
  if (broken)
    ck_assert_msg(dip < 0.2, "broken phase: histogram centre/peak %.3f, no dip at 0", dip);
  else
    ck_assert_msg(dip > 0.9, "symmetric phase: histogram centre/peak %.3f, not peaked at 0", dip);

  nf_target *t = nf_target_phi4(LAT, m2, lambda);
  phi4_flow_opts o = phi4_flow_defaults();
  nf_flow *flow = phi4_flow_build(LAT, &o);
  ck_assert_msg(t && flow, "%s", nf_errmsg());
  double loss, pos, mean[2], err[2];
  ck_assert_msg(phi4_flow_train(flow, t, &o, &loss) == NF_OK, "%s", nf_errmsg());
  double *x = malloc((size_t)DRAWS * LAT * LAT * sizeof *x), *log_w = malloc(DRAWS * sizeof *log_w);
  ck_assert(x && log_w);
  nf_rng rng;
  nf_rng_seed(&rng, 5);
  ck_assert_msg(phi4_flow_sample(flow, t, &rng, DRAWS, x, log_w, &pos) == NF_OK, "%s", nf_errmsg());
  nf_importance imp;
  ck_assert(nf_importance_summary(DRAWS, log_w, &imp) == NF_OK);
  ck_assert(phi4_flow_moments(t, DRAWS, x, log_w, mean, err) == NF_OK);
  printf("  flow (loss %.3f): ESS %.4f, raw draws with M > 0 %.3f; <|M|> = %.4f +- %.4f, "
         "<M^2> = %.3f +- %.3f\n", loss, imp.ess, pos, mean[0], err[0], mean[1], err[1]);
  /* a trained flow: the comparison below is not won by huge error bars */
  ck_assert_msg(imp.ess > 0.01, "ESS %.4f per sample", imp.ess);
  ck_assert_msg(err[0] < 0.05 * mean[0], "<|M|> error %.3g of %.3g", err[0], mean[0]);
  for (int k = 0; k < 2; k++) {
    double tol = 3 * sqrt(err[k] * err[k] + ref[k].err * ref[k].err);
    ck_assert_msg(fabs(mean[k] - ref[k].mean) < tol, "%s: flow %.4f, MCMC %.4f, 3 sigma %.4f",
                  k ? "<M^2>" : "<|M|>", mean[k], ref[k].mean, tol);
  }
  free(log_w);
  free(x);
  nf_flow_free(flow);
  nf_target_free(t);
}

START_TEST(test_symmetric) { check_point(-4.0, 8.0, 0); }
END_TEST

START_TEST(test_broken) { check_point(-4.0, 3.0, 1); }
END_TEST

int main(void)
{
  const TTest *tests[] = {test_symmetric, test_broken, NULL};
  return th_run_tests("phi4", 300, tests);
}
