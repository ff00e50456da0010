/* nflow/inverse.h — the inverse of a layer (TensorFlow Probability's Invert):
   the same bijector with its directions exchanged, so its NF_FORWARD is the
   inner layer's NF_INVERSE and the other way round, and each direction's
   log-det is the inner layer's for the other direction. The parameters are
   the inner layer's (same count and layout, initial values copied); check,
   penalty and workspace are the inner layer's too.
   IAF (Kingma et al. 2016) = nf_inverse_new(nf_autoregressive_new(...)):
   sampling is one MADE pass, the density dim passes.
   Layer type "inverse" (saves the inner layer's type name and configuration). */
#ifndef NFLOW_INVERSE_H
#define NFLOW_INVERSE_H

#include "nflow/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The inverse of inner, taking ownership of inner (freed with the wrapper,
   and on failure too). NULL (with nf_errmsg) on a NULL inner, one that
   belongs to a flow (then not freed: its flow owns it), or no memory. */
nf_layer *nf_inverse_new(nf_layer *inner);

/* The wrapped layer (NULL if layer is not an inverse). */
const nf_layer *nf_inverse_inner(const nf_layer *layer);

#ifdef __cplusplus
}
#endif
#endif
