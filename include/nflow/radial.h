/* nflow/radial.h — radial flow x = z + beta h(alpha, r)(z - z0), h = 1/(alpha + r),
   r = |z - z0| (Rezende & Mohamed 2015), alpha = softplus(a) > 0 and
   beta = -alpha + softplus(b) > -alpha keep it invertible; the inverse is closed-form. */
#ifndef NFLOW_RADIAL_H
#define NFLOW_RADIAL_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif

/* A radial layer on R^dim (no context).

   Parameters (n_params = dim + 2, in this order): z0[0..dim), a, b.
   Forward: x = z + beta/(alpha + r) (z - z0), r = |z - z0|: the radius scales by
   rho(r) = 1 + beta/(alpha + r) = (softplus(b) + r)/(alpha + r) > 0, and
     logdet = (dim - 1) log rho(r) + log(1 + alpha beta/(alpha + r)^2),
   both factors computed as ratios of sums of positive terms (no cancellation).
   Inverse: the radius r_x = |x - z0| = r rho(r) gives the quadratic
   r^2 + (softplus(b) - r_x) r - alpha r_x = 0, whose positive root is taken in
   a cancellation-free form; then z = z0 + (x - z0)/rho(r) (x = z0 gives z = z0).
   At z = z0 the log-det has a cone point; vjp then takes its radial derivative as 0.
   apply and vjp return NF_ENONFINITE if a parameter is not finite.
   vjp in both directions gives input and parameter gradients.

   rng != NULL: z0 ~ N(0, I), a = 0, b ~ N(0, 0.1^2) (a random perturbation of
   the identity: alpha = log 2, beta = softplus(b) - log 2).
   rng == NULL: z0 = 0, a = b = 0: beta = 0, the identity map.
   inv_tol: accepted for symmetry with nf_planar_new and checked (finite, > 0),
   but unused: the inverse is closed-form.
   Returns NULL (with nf_errmsg) if dim == 0 or inv_tol is not finite and > 0,
   or on allocation failure. */
nf_layer *nf_radial_new(size_t dim, double inv_tol, nf_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
