/* nflow/planar.h — planar flow x = z + u_hat tanh(w.z + b) (Rezende & Mohamed 2015),
   with u_hat = u + (m(w.u) - w.u) w/|w|^2, m(a) = -1 + softplus(a), which keeps
   w.u_hat = m(w.u) > -1 and the map invertible; inverse by 1-D root finding along w. */
#ifndef NFLOW_PLANAR_H
#define NFLOW_PLANAR_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif

/* Default cap on the iterations of the inverse's root finding, per row. */
#define NF_PLANAR_MAX_ITER 200

/* A planar layer on R^dim (no context).

   Parameters (n_params = 2 dim + 1, in this order): u[0..dim), w[0..dim), b.
   Forward: x = z + u_hat tanh(a), a = w.z + b,
            logdet = log(1 + s sech^2(a)), s = w.u_hat, computed as
            log1p(s sech^2(a)) or log(tanh^2(a) + softplus(w.u) sech^2(a)) (no cancellation).
   u_hat = u + c w with c = (m(w.u) - w.u)/|w|^2, and |c| grows like
   (1 - log 2)/|w|^2 as w -> 0:
   if |w|^2 = 0 (or c overflows), u_hat = u and s = w.u instead, so w = 0 gives
   the translation x = z + u tanh(b) with logdet 0 (u_hat is discontinuous there).
   Inverse: with y = w.x + b, the root a of a + s tanh(a) = y (increasing in a)
   by Newton's method safeguarded by bisection on the bracket between y and
   y - s sign(y); then z = x - u_hat tanh(a). The root finding stops when the
   last step or the bracket is at most inv_tol (absolute, in a; a step is 0 at
   an exact root or when no double lies inside the bracket). If that takes more
   than the iteration cap (NF_PLANAR_MAX_ITER unless set by
   nf_planar_set_max_iter), apply returns NF_ENOCONV naming the row, with out
   and logdet untouched. The map's own conditioning is 1/det J: near a = 0 with
   w.u << 0, det J ~ a^2 and z is recovered only to about eps |x| / det J.
   apply and vjp return NF_ENONFINITE if a parameter is not finite.
   vjp in both directions gives input and parameter gradients (the inverse's
   through the root a by the implicit function theorem).

   rng != NULL: w_j ~ N(0, 1/dim), u = log(e - 1) w/|w|^2 + N(0, 0.1^2 I),
   b ~ N(0, 0.1^2): a random perturbation of the identity (|u_hat| = O(0.1)).
   rng == NULL: w = e_0, u = log(e - 1) e_0, b = 0: u_hat = 0 up to rounding,
   the identity map, with non-degenerate gradients.
   inv_tol: absolute tolerance of the inverse's root finding, finite and > 0
   (e.g. 1e-13). Returns NULL (with nf_errmsg) if dim == 0 or inv_tol is not
   finite and > 0, or on allocation failure. */
nf_layer *nf_planar_new(size_t dim, double inv_tol, nf_rng *rng);

/* Sets the iteration cap of the inverse's root finding (>= 1).
   NF_EINVAL if layer is NULL or not a planar layer, or max_iter == 0. */
nf_status nf_planar_set_max_iter(nf_layer *layer, unsigned max_iter);

#ifdef __cplusplus
}
#endif
#endif
