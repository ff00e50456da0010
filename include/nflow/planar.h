/* nflow/planar.h — planar flow x = z + u_hat tanh(w.z + b) (Rezende & Mohamed 2015),
   with u_hat = u + (m(w.u) - w.u) w/|w|^2, m(a) = -1 + softplus(a), which keeps
   w.u_hat >= -1 and the map invertible; inverse by 1-D root finding along w. */
#ifndef NFLOW_PLANAR_H
#define NFLOW_PLANAR_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif
/* Parameters u[d], w[d], b. rng: random N(0, 0.1^2) init (NULL: u = 0, w = e_0/.. as documented).
   inv_tol: absolute tolerance of the inverse's root finding (e.g. 1e-13); the
   inverse returns NF_ENOCONV if it is not met. NULL (with nf_errmsg) on bad arguments. */
nf_layer *nf_planar_new(size_t dim, double inv_tol, nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
