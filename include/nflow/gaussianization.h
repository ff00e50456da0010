/* nflow/gaussianization.h — the elementwise layer of Gaussianization flows
   (Meng et al. 2020): per dimension a mixture of K logistics,
     F(x) = sum_k pi_k sigmoid((x - mu_k) / s_k),  pi = softmax(logits),
   s_k = exp(log_scale_k), and in the density direction (NF_INVERSE, x -> z)
     z = Phi^-1(F(x)),  log-det = log f(x) - log phi(z),  f = F'.
   Gaussianization flows alternate it with learned rotations; here the LU
   layer (linear_lu.h) serves: [gaussianization, LU, gaussianization, LU, ...].

   Numerics: log F and log(1 - F) by log-sum-exp of log-sigmoids, and z from
   the smaller of the two through an inverse normal CDF that takes a log
   probability (AS241 polished by Newton steps on log Phi), so z stays
   accurate far into the tails: |z| of 30 and beyond, where F rounds to 0 or
   1 in plain arithmetic; the log-det is log(f/F) + log(Phi(z)/phi(z)), so
   that nothing of size z^2 cancels. NF_FORWARD (z -> x, sampling) solves
   the same log-space equation by Newton's method safeguarded by bisection
   (whenever a step leaves the bracket or shrinks less than twofold), its
   bracket grown by doubling from the component means +- the largest scale;
   it stops when a step is below 1e-14 (|x| + smallest scale), which leaves x
   within about 1e-14 relative; NF_ENOCONV after 200 iterations. Round trips
   hold to 1e-8 relative (1e-8 absolute below 1) for |z| <= 1e8 and for
   |x| <= 1e299, i.e. wherever x / s is a finite double (measured in
   tests/test_gaussianization.c with K = 4, parameters = init + N(0, 0.5^2):
   3e-14 and 9e-15 at worst). NF_EDOMAIN (entry named, logdet untouched) for
   an input whose image is not a finite double (|x| / s overflowing).

   Parameters (n_params = 3 K d), dimension by dimension: for dimension j the
   block theta[3Kj .. 3K(j+1)) holds K logits, K means mu_k, K log-scales.
   Log-scales must lie in [-NF_GAUSSIANIZATION_MAX_LOG_SCALE,
   +NF_GAUSSIANIZATION_MAX_LOG_SCALE] (NF_EDOMAIN otherwise, when theta is
   written), so scales stay in [2e-9, 5e8]: positive, finite, and x / s finite
   for any |x| < 1e299. vjp in both directions (NF_FORWARD through the
   implicit function theorem). */
#ifndef NFLOW_GAUSSIANIZATION_H
#define NFLOW_GAUSSIANIZATION_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif

#define NF_GAUSSIANIZATION_MAX_LOG_SCALE 20.0

/* A Gaussianization layer on R^dim with n_components = K >= 1 logistics per
   dimension. Initialisation, the same for every dimension: equal weights
   (logits 0), means at the normal quantiles mu_k = Phi^-1((k + 1/2) / K), and
   one scale s with s^2 pi^2 / 3 = 1 - mean_k mu_k^2, so the mixture has mean
   0 and variance 1 like the normal: F is within 0.03 of Phi everywhere
   (measured for K <= 16), so the layer starts close to the identity and a
   deep stack starts close to the base. (An exact identity is impossible:
   logistic tails are exponential, not Gaussian.) rng: NULL for exactly this
   start; otherwise every parameter gets N(0, 0.1^2) added. NULL (with
   nf_errmsg) on dim == 0, n_components == 0, a parameter count that
   overflows, or no memory. */
nf_layer *nf_gaussianization_new(size_t dim, size_t n_components, nf_rng *rng);

/* K of a Gaussianization layer (0 for NULL or another family). */
size_t nf_gaussianization_components(const nf_layer *layer);

#ifdef __cplusplus
}
#endif
#endif
