/* nflow/linear_lu.h — invertible linear layer x = P L U z + b in LU form
   (Kingma & Dhariwal 2018, Glow): fixed permutation P, unit-lower L, upper U
   whose diagonal is exp(s) or softplus(s) > 0; O(d) log-det sum(log diag U),
   inverse by two triangular solves. */
#ifndef NFLOW_LINEAR_LU_H
#define NFLOW_LINEAR_LU_H
#include "nflow/layer.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef enum nf_diag_map { NF_DIAG_EXP = 0, NF_DIAG_SOFTPLUS } nf_diag_map;
/* perm: permutation of 0..dim-1 (copied) or NULL for the identity.
   rng: NULL initialises to the identity map; otherwise small random L, U, b.
   NULL (with nf_errmsg) on bad arguments or allocation failure. */
nf_layer *nf_linear_lu_new(size_t dim, const size_t *perm, nf_diag_map diag, nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
