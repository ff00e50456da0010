/* nflow/residual.h — residual flow layer (i-ResNet, Behrmann et al. 2019;
   Residual Flows, Chen et al. 2019).

   Explicit in the density direction:
     NF_INVERSE  z = x + g(x)        (g(x) = g(x, ctx) for a conditional layer)
     NF_FORWARD  x = z - g(x)        by the fixed point x_{k+1} = z - g(x_k), x_0 = z,
                                     until max_j |x_{k+1,j} - x_{k,j}| <= fixed_tol max(1, |z|_inf)
                                     per row (error then <= Lip/(1 - Lip) times that; a
                                     converged row stops, so rows do not depend on each
                                     other); NF_ESOLVER naming the row if fixed_max_iter
                                     iterations do not get there (nothing is written then).
                                     With Lip = c^L = 0.81 a 1e-12 tolerance takes ~130.
   g is an MLP [x, ctx] -> hidden... -> d with tanh after each hidden layer
   (tanh: 1-Lipschitz, smooth, and its first and second derivatives are
   functions of its output, 1 - h^2 and -2 h (1 - h^2), which the log-det
   gradient needs; ELU is not twice differentiable at 0, and LipSwish would
   cost an exp per unit and a stored pre-activation). Every weight matrix is
   spectrally normalised, W~ = W min(1, c / sigma(W)) with 0 < c < 1 (the
   first layer's x-columns only: ctx does not enter the Lipschitz bound), so
   Lip_x(g) <= c^L < 1 for L affine layers and z = x + g(x) is a bijection.

   sigma(W) is a deterministic function of W, recomputed on every apply (no
   state besides theta, so layers stay immutable and reentrant): power
   iteration v <- W^T W v / |W^T W v| from the fixed start v_j = 1 + j/(p+1)
   (normalised), until max_j |v_k - v_{k-1}| <= power_tol or power_iters
   iterations, sigma = |W v|, u = W v / sigma. Its gradient d sigma / dW = u v^T
   (at the computed vectors) is part of the vjp; it is the derivative of the
   computed sigma when the iteration converged (a matrix with sigma_2 / sigma_1
   near 1 can need hundreds of iterations: with a cap of 100, one test matrix
   gave a parameter gradient off by 5e-6 relative, with 500 by 1e-9). A
   truncated iteration underestimates sigma; the bound then holds with
   c (1 + error). Cost: K iterations on a q x p matrix are 4 K p q flops
   against 2 n p q for one pass of the net over a batch of n rows, a ratio
   2K/n of one pass (an apply makes 2 + d passes in exact mode, 1 + K_series
   in estimate mode, 10-100 more when sampling). Measured iterations to 1e-12
   on Gaussian matrices (200 each, median / 90th percentile): 16 x 3: 60 / 134,
   12 x 16: 113 / 320, 32 x 2: 66 / 162, 64 x 64: 285 / 500 (the cap) — so for
   n = 1000 the normalisation costs a fraction of a pass, for n = 10 several.

   Log-det log|det(I + J_g(x))| (J_g = dg/dx), added with + for NF_INVERSE and
   - for NF_FORWARD (at the point x):
   - NF_RESIDUAL_EXACT: J by d Jacobian-vector products batched through the
     net, LU with partial pivoting. Its gradient tr((I + J)^-1 dJ).
   - NF_RESIDUAL_ESTIMATE: the power series sum_{k>=1} (-1)^{k+1} tr(J^k)/k,
     unbiased by Russian roulette (Chen et al. 2019): n_exact_terms terms, then
     N ~ Geometric(roulette_p) more (P(N >= j) = (1 - p)^j, term n_exact + j
     weighted by 1 / P(N >= j)), tr(J^k) by one Hutchinson probe v (Gaussian or
     Rademacher): v^T J^k v. Probe and N of batch row i are counter-based noise
     keyed by (opts seed, probe_seed) at the global row row0 + i, so results
     do not depend on chunking or threads. The gradient is the Neumann-series
     estimator (Chen et al. 2019, eq. 8) with the same probe and N:
       d logdet ~ sum_{k=0}^{K-1} (-1)^k w_{k+1} v^T dJ J^k v   (K = n_exact + N,
     w the terms' roulette weights), an unbiased estimate of tr((I+J)^-1 dJ) —
     not the derivative of the log-det estimate itself.
   Both gradients contract dJ through one second-order primitive: the gradient
   of sum_i w_i^T J_g(x_i) v_i with respect to theta, x and ctx (a tangent
   carried forward through the net, then reverse mode over both).

   apply computes the log-det (the record vjp reads) also when logdet is NULL.
   vjp in both directions; NF_FORWARD by the implicit-function theorem: the
   cotangent lambda of z solves (I + J)^T lambda = a by the fixed point
   lambda <- a - J^T lambda with the same tolerance and cap (NF_ESOLVER if it
   does not converge).

   Parameters: the net's, layer after layer, W (q x p row-major) then b (q),
   with p = d + c for the first layer (x-columns first). */
#ifndef NFLOW_RESIDUAL_H
#define NFLOW_RESIDUAL_H

#include <stddef.h>
#include <stdint.h>
#include "nflow/layer.h"
#include "nflow/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_residual_logdet {
  NF_RESIDUAL_EXACT = 0, /* Jacobian and LU: small d, tests, densities */
  NF_RESIDUAL_ESTIMATE   /* Russian-roulette power series with a Hutchinson probe */
} nf_residual_logdet;

typedef struct nf_residual_opts {
  size_t n_hidden;         /* hidden layers of g (>= 1) */
  const size_t *hidden;    /* their widths */
  double lipschitz;        /* c in (0, 1): bound on each weight's spectral norm */
  size_t power_iters;      /* cap on power iterations per weight matrix, >= 1 */
  double power_tol;        /* power iteration tolerance on the unit vector, > 0 */
  size_t fixed_max_iter;   /* cap on the fixed-point iterations of NF_FORWARD (and its vjp) */
  double fixed_tol;        /* their relative tolerance, > 0 */
  nf_residual_logdet logdet;
  size_t n_exact_terms;    /* ESTIMATE: terms always taken, >= 1 */
  double roulette_p;       /* ESTIMATE: parameter of the geometric N, in [0.01, 1): a batch
                              takes n_exact + max_i N_i tangent passes, about
                              n_exact + log(n) / p, at most n_exact + 37 / p */
  nf_noise_kind probe;     /* ESTIMATE: NF_NOISE_NORMAL or NF_NOISE_RADEMACHER */
  uint64_t probe_seed;     /* ESTIMATE: with the call's seed, the key of the noise */
} nf_residual_opts;

/* One hidden layer of 32, c = 0.9, at most 500 power iterations to 1e-12, 1000
   fixed-point iterations to 1e-12, exact log-det; for the estimate 2 exact
   terms, p = 0.5, Rademacher probes, probe_seed 0x5eed. */
nf_residual_opts nf_residual_defaults(void);

/* "exact", "estimate" ("?" for another value); the parser reads them back
   (NF_EINVAL, output untouched, otherwise). */
const char *nf_residual_logdet_name(nf_residual_logdet mode);
nf_status nf_residual_logdet_parse(const char *name, nf_residual_logdet *mode);

/* A residual layer on R^dim with context width ctx_dim (opts NULL: defaults);
   the net's weights from rng (Glorot-uniform, output layer scaled by 0.1;
   rng NULL: all zero, the identity). NULL (with nf_errmsg naming the option)
   on bad options or no memory. */
nf_layer *nf_residual_new(size_t dim, size_t ctx_dim, const nf_residual_opts *opts, nf_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
