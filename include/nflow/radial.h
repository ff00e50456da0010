/* nflow/radial.h — radial flow x = z + beta h(alpha, r)(z - z0), h = 1/(alpha + r),
   r = |z - z0| (Rezende & Mohamed 2015), alpha = softplus(a) > 0 and
   beta = -alpha + softplus(b) >= -alpha keep it invertible; inverse by solving
   the 1-D equation for r. */
#ifndef NFLOW_RADIAL_H
#define NFLOW_RADIAL_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif
/* Parameters z0[d], a, b. rng: random init (NULL: near-identity, documented).
   inv_tol as for nf_planar_new. NULL (with nf_errmsg) on bad arguments. */
nf_layer *nf_radial_new(size_t dim, double inv_tol, nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
