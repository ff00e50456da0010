/* tests/phi4_mcmc.h — a reference Markov chain for phi^4 on an L x L periodic
   lattice (the action of nf_target_phi4), written for the tests and the
   bench, not part of the library: local Metropolis sweeps plus the exact
   global Z2 move phi -> -phi, and the autocorrelation-aware error analysis of
   the chain's observables. */
#ifndef NFLOW_TEST_PHI4_MCMC_H
#define NFLOW_TEST_PHI4_MCMC_H

#include <stddef.h>
#include <stdint.h>

typedef struct phi4_chain {
  size_t L;
  double m2, lambda;
  double step;   /* Metropolis proposal phi' = phi + step (2u - 1) */
  int flip;      /* nonzero: after each sweep phi -> -phi with probability 1/2 */
} phi4_chain;

/* Runs `burn` sweeps from phi = 0, then n sweeps, recording the
   magnetisation M = sum_x phi_x after each into m[0..n). Returns the
   acceptance rate of the local updates, or -1 on no memory. */
double phi4_mcmc_run(const phi4_chain *chain, uint64_t seed, size_t burn, size_t n, double *m);

/* Mean of the series y[0..n), its integrated autocorrelation time
   tau = 1/2 + sum_{t=1}^{W} rho(t) with Sokal's automatic window (the
   smallest W >= c tau(W), c = 6), and the error sqrt(2 tau var / n). */
typedef struct phi4_stat {
  double mean, err, tau;
} phi4_stat;
phi4_stat phi4_autocorr(size_t n, const double *y);

/* The error of the mean of y by blocking: the naive error of the means of
   blocks of length b (n / b blocks, at least 16). */
double phi4_block_error(size_t n, const double *y, size_t b);

/* Histogram of M over [-hi, hi] in `bins` bins (odd: one bin centred on 0);
   values outside are clamped into the end bins. */
void phi4_histogram(size_t n, const double *m, double hi, size_t bins, double *count);

/* Shape of a histogram symmetric about its central bin: the ratio of the
   central bin to the highest bin (1: peaked at 0; near 0: a dip at 0 between
   two peaks). */
double phi4_dip_ratio(size_t bins, const double *count);

#endif
