/* tests/phi4_mcmc.c — local Metropolis for phi^4 and its error analysis
   (see phi4_mcmc.h). */
#include <math.h>
#include <stdlib.h>

#include "nflow/rng.h"
#include "phi4_mcmc.h"

/* Change of S = sum_x [-2 phi_x (phi_{x+e1} + phi_{x+e2}) + (4 + m2) phi_x^2 +
   lambda phi_x^4] when phi_x goes from a to b, nb the sum of its four neighbours. */
static double delta_action(const phi4_chain *c, double a, double b, double nb)
{
  double a2 = a * a, b2 = b * b;
  return -2.0 * (b - a) * nb + (4.0 + c->m2) * (b2 - a2) + c->lambda * (b2 * b2 - a2 * a2);
}

/* One Metropolis sweep over the lattice in site order (Metropolis et al. 1953);
   returns the number of accepted updates. */
static size_t sweep(const phi4_chain *c, nf_rng *rng, double *phi)
{
  size_t L = c->L, acc = 0;
  for (size_t r = 0; r < L; r++)
    for (size_t col = 0; col < L; col++) {
      size_t at = r * L + col;
      double nb = phi[r * L + (col + 1) % L] + phi[r * L + (col + L - 1) % L] +
                  phi[((r + 1) % L) * L + col] + phi[((r + L - 1) % L) * L + col];
      double a = phi[at], b = a + c->step * (2.0 * nf_rng_uniform(rng) - 1.0);
      double ds = delta_action(c, a, b, nb);
      if (ds <= 0 || nf_rng_uniform(rng) < exp(-ds)) {
        phi[at] = b;
        acc++;
      }
    }
  return acc;
}

double phi4_mcmc_run(const phi4_chain *c, uint64_t seed, size_t burn, size_t n, double *m)
{
  size_t d = c->L * c->L, acc = 0;
  double *phi = calloc(d, sizeof *phi);
  if (!phi) return -1;
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  for (size_t t = 0; t < burn + n; t++) {
    size_t a = sweep(c, &rng, phi);
    double s = c->flip && nf_rng_uniform(&rng) < 0.5 ? -1.0 : 1.0, sum = 0;
    for (size_t j = 0; j < d; j++) sum += phi[j] *= s;
    if (t < burn) continue;
    acc += a;
    m[t - burn] = sum;
  }
  free(phi);
  return n ? (double)acc / ((double)n * (double)d) : 0;
}

/* Mean and variance (1/n) of y. */
static void moments(size_t n, const double *y, double *mean, double *var)
{
  double s = 0, v = 0;
  for (size_t i = 0; i < n; i++) s += y[i];
  s /= (double)n;
  for (size_t i = 0; i < n; i++) v += (y[i] - s) * (y[i] - s);
  *mean = s;
  *var = v / (double)n;
}

phi4_stat phi4_autocorr(size_t n, const double *y)
{
  phi4_stat st;
  double var;
  moments(n, y, &st.mean, &var);
  st.tau = 0.5;
  for (size_t t = 1; var > 0 && t < n / 2 && (double)t < 6.0 * st.tau; t++) {
    double c = 0;
    for (size_t i = 0; i + t < n; i++) c += (y[i] - st.mean) * (y[i + t] - st.mean);
    st.tau += c / ((double)(n - t) * var);
  }
  st.err = sqrt(2.0 * st.tau * var / (double)n);
  return st;
}

double phi4_block_error(size_t n, const double *y, size_t b)
{
  size_t k = n / b;
  if (b == 0 || k < 16) return NAN;
  double *blk = malloc(k * sizeof *blk), mean, var;
  if (!blk) return NAN;
  for (size_t j = 0; j < k; j++) {
    double s = 0;
    for (size_t i = 0; i < b; i++) s += y[j * b + i];
    blk[j] = s / (double)b;
  }
  moments(k, blk, &mean, &var);
  free(blk);
  return sqrt(var / (double)(k - 1));
}

void phi4_histogram(size_t n, const double *m, double hi, size_t bins, double *count)
{
  for (size_t b = 0; b < bins; b++) count[b] = 0;
  for (size_t i = 0; i < n; i++) {
    double u = floor((m[i] + hi) / (2.0 * hi) * (double)bins);
    size_t b = u < 0 ? 0 : u >= (double)bins ? bins - 1 : (size_t)u;
    count[b] += 1;
  }
}

double phi4_dip_ratio(size_t bins, const double *count)
{
  double top = 0;
  for (size_t b = 0; b < bins; b++) top = count[b] > top ? count[b] : top;
  return top > 0 ? count[bins / 2] / top : NAN;
}
