/* nflow/affine.h — elementwise affine bijector x = z * exp(log_scale) + shift
   (per-dimension scale and shift; Glow's actnorm without data-dependent init).
   Forward log-det sum(log_scale), inverse z = (x - shift) * exp(-log_scale). */
#ifndef NFLOW_AFFINE_H
#define NFLOW_AFFINE_H
#include "nflow/layer.h"
#ifdef __cplusplus
extern "C" {
#endif
/* Parameters shift[d] then log_scale[d], all zero: exactly the identity.
   NULL (with nf_errmsg) on dim == 0 or allocation failure. */
nf_layer *nf_affine_new(size_t dim);
#ifdef __cplusplus
}
#endif
#endif
