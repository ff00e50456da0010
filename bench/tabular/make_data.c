/* bench/tabular/make_data.c — a seeded 16-D tabular set for comparing density
   estimators: a mixture of C = 4 curved ("banana") Gaussian components.

   Parameters (drawn once from nf_rng seeded with SEED, in this order, per c):
     s_{c,j}  ~ U[0.3, 1.0]          j = 0..15   component scales
     k_{c,k}  ~ U[1, 2] * (+-1)      k = 0..7    standardised curvature of pair k
     b_{c,k}  = k_{c,k} s_{c,2k+1} / s_{c,2k}^2
     Q_c      = Gram-Schmidt of a 16x16 standard normal matrix (orthogonal)
     m_c      ~ N(0, 3^2 I_16)                   component mean
   weights w = (0.35, 0.30, 0.20, 0.15).
   A row: c ~ w; u ~ N(0, diag(s_c^2)); v = u except
     v_{2k+1} = u_{2k+1} + b_{c,k} (u_{2k}^2 - s_{c,2k}^2)   (k = 0..7)
   x = m_c + Q_c v.
   In standardised units z = u / s each pair is the banana
   z_{2k+1} += k (z_{2k}^2 - 1). The bend has unit Jacobian and Q_c is
   orthogonal, so the exact density is
     p(x) = sum_c w_c N(v_c(x); 0, diag s_c^2),
     u_c(x) = unbend(Q_c^T (x - m_c)),
   and the program prints the exact mean NLL of each file (the floor any
   estimator can reach, up to sampling noise of the mean).

   Rows 1..10000 go to DIR/train.csv, the next 1000 to DIR/val.csv, the next
   1000 to DIR/test.csv; CSV with a header x1,...,x16 and %.17g values.
   Usage: bench/tabular/make_data DIR [SEED]   (SEED default 1) */
#define _POSIX_C_SOURCE 200809L
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nflow.h"

#define D 16
#define C 4
#define LOG_2PI 1.8378770664093453

typedef struct component {
  double w, s[D], b[D / 2], q[D][D], m[D];
} component;

static const double weights[C] = {0.35, 0.30, 0.20, 0.15};
static const struct part {
  const char *name;
  size_t rows;
} parts[] = {{"train", 10000}, {"val", 1000}, {"test", 1000}};

/* Modified Gram-Schmidt on the rows of a standard normal matrix: a random orthogonal Q. */
static void random_orthogonal(nf_rng *rng, double q[D][D])
{
  for (int i = 0; i < D; i++) {
    for (int j = 0; j < D; j++) q[i][j] = nf_rng_normal(rng);
    for (int p = 0; p < i; p++) {
      double dot = 0;
      for (int j = 0; j < D; j++) dot += q[i][j] * q[p][j];
      for (int j = 0; j < D; j++) q[i][j] -= dot * q[p][j];
    }
    double norm = 0;
    for (int j = 0; j < D; j++) norm += q[i][j] * q[i][j];
    norm = sqrt(norm);
    for (int j = 0; j < D; j++) q[i][j] /= norm;
  }
}

/* Draws one component's parameters as the header comment says. */
static void draw_component(nf_rng *rng, double w, component *cp)
{
  cp->w = w;
  for (int j = 0; j < D; j++) cp->s[j] = 0.3 + 0.7 * nf_rng_uniform(rng);
  for (int k = 0; k < D / 2; k++) {
    double kappa = (1.0 + nf_rng_uniform(rng)) * nf_rng_rademacher(rng);
    cp->b[k] = kappa * cp->s[2 * k + 1] / (cp->s[2 * k] * cp->s[2 * k]);
  }
  random_orthogonal(rng, cp->q);
  for (int j = 0; j < D; j++) cp->m[j] = 3.0 * nf_rng_normal(rng);
}

/* x = m + Q v, v = bend(u), u ~ N(0, diag s^2). */
static void draw_row(nf_rng *rng, const component *cp, double *x)
{
  double v[D];
  for (int j = 0; j < D; j++) v[j] = cp->s[j] * nf_rng_normal(rng);
  for (int k = 0; k < D / 2; k++)
    v[2 * k + 1] += cp->b[k] * (v[2 * k] * v[2 * k] - cp->s[2 * k] * cp->s[2 * k]);
  for (int i = 0; i < D; i++) {
    x[i] = cp->m[i];
    for (int j = 0; j < D; j++) x[i] += cp->q[j][i] * v[j];
  }
}

/* log w_c + log N(unbend(Q^T (x - m)); 0, diag s^2) (the bend has unit Jacobian). */
static double component_log_density(const component *cp, const double *x)
{
  double u[D], lp = log(cp->w) - 0.5 * D * LOG_2PI;
  for (int j = 0; j < D; j++) {
    u[j] = 0;
    for (int i = 0; i < D; i++) u[j] += cp->q[j][i] * (x[i] - cp->m[i]);
  }
  for (int k = 0; k < D / 2; k++)
    u[2 * k + 1] -= cp->b[k] * (u[2 * k] * u[2 * k] - cp->s[2 * k] * cp->s[2 * k]);
  for (int j = 0; j < D; j++) lp -= 0.5 * (u[j] / cp->s[j]) * (u[j] / cp->s[j]) + log(cp->s[j]);
  return lp;
}

/* log sum_c w_c p_c(x), by log-sum-exp. */
static double log_density(const component *cps, const double *x)
{
  double lp[C], top = -INFINITY, sum = 0;
  for (int c = 0; c < C; c++) {
    lp[c] = component_log_density(&cps[c], x);
    if (lp[c] > top) top = lp[c];
  }
  for (int c = 0; c < C; c++) sum += exp(lp[c] - top);
  return top + log(sum);
}

/* Index of the component a uniform draw falls in. */
static int pick_component(nf_rng *rng)
{
  double r = nf_rng_uniform(rng), acc = 0;
  for (int c = 0; c < C - 1; c++) {
    acc += weights[c];
    if (r < acc) return c;
  }
  return C - 1;
}

/* Writes one part's rows to DIR/NAME.csv and prints its exact mean NLL. */
static int write_part(const char *dir, const struct part *pt, const component *cps, nf_rng *rng)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.csv", dir, pt->name);
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    return 1;
  }
  for (int j = 0; j < D; j++) fprintf(f, "x%d%c", j + 1, j + 1 < D ? ',' : '\n');
  double nll = 0, x[D];
  for (size_t r = 0; r < pt->rows; r++) {
    draw_row(rng, &cps[pick_component(rng)], x);
    nll -= log_density(cps, x);
    for (int j = 0; j < D; j++) fprintf(f, "%.17g%c", x[j], j + 1 < D ? ',' : '\n');
  }
  if (fclose(f) != 0) {
    perror(path);
    return 1;
  }
  printf("%s_rows=%zu\n%s_true_nll=%.4f\n", pt->name, pt->rows, pt->name, nll / (double)pt->rows);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s DIR [SEED]\n", argv[0]);
    return 2;
  }
  uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
  nf_rng rng;
  nf_rng_seed(&rng, seed);
  component cps[C];
  for (int c = 0; c < C; c++) draw_component(&rng, weights[c], &cps[c]);
  for (size_t p = 0; p < sizeof parts / sizeof *parts; p++)
    if (write_part(argv[1], &parts[p], cps, &rng)) return 1;
  return 0;
}
