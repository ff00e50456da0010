/* nflow/linear_lu.h — invertible linear layer x = P L U z + b in LU form
   (Kingma & Dhariwal 2018, Glow): fixed permutation P, unit-lower L, upper U
   whose diagonal is exp(s) or softplus(s) > 0; O(d) log-det sum(log diag U),
   inverse by two triangular solves. P is the gather (P v)[i] = v[perm[i]],
   as in nf_permute_new.

   Parameters (n_params = d + d*d): b[d], then one row-major d x d matrix W
   packed like LAPACK's getrf output: its strict lower part holds L's strict
   lower entries, its strict upper part U's strict upper entries, and its
   diagonal s with diag(U) = m(s) (m = exp or softplus). */
#ifndef NFLOW_LINEAR_LU_H
#define NFLOW_LINEAR_LU_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef enum nf_diag_map { NF_DIAG_EXP = 0, NF_DIAG_SOFTPLUS } nf_diag_map;

/* "exp", "softplus" ("?" for another value); nf_diag_map_parse reads them
   back (NF_EINVAL otherwise). */
const char *nf_diag_map_name(nf_diag_map diag);
nf_status nf_diag_map_parse(const char *name, nf_diag_map *diag);
/* perm: permutation of 0..dim-1 (copied) or NULL for the identity.
   rng: NULL initialises to the identity map (b = 0, L = U = I: s = 0 for exp,
   s = log(e - 1) for softplus); otherwise small random draws around it
   (b, s - s0 ~ N(0, 0.1^2); off-diagonals ~ N(0, 0.1^2 / d)).
   NULL (with nf_errmsg) on dim == 0, an unknown diag, a perm that is not a
   permutation, or allocation failure. */
nf_layer *nf_linear_lu_new(size_t dim, const size_t *perm, nf_diag_map diag, nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
