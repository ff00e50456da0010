/* nflow/affine.h — elementwise affine bijector x = z * exp(log_scale) + shift. */
#ifndef NFLOW_AFFINE_H
#define NFLOW_AFFINE_H
#include "nflow/layer.h"
#ifdef __cplusplus
extern "C" {
#endif
/* Learnable shift[d] then log_scale[d], initialised to the identity.
   NULL (with nf_errmsg) on dim == 0 or allocation failure. */
nf_layer *nf_affine_new(size_t dim);
#ifdef __cplusplus
}
#endif
#endif
