/* nflow/autoregressive.h — autoregressive layers: a MADE conditioner times an
   elementwise transformer (Papamakarios et al. 2017, MAF; with the spline
   transformer, Durkan et al. 2019's autoregressive NSF, zuko's default):
     x_j = τ(z_j; h_j(x_<j, ctx)),  h = MADE(x, ctx),
   "<j" meaning earlier in the layer's order. The density direction
   (NF_INVERSE, x -> z) is one MADE pass: z = τ^-1(x; MADE(x, ctx)), the cost
   of a coupling layer. Sampling (NF_FORWARD, z -> x) takes dim + 1 passes, one
   per coordinate in order and one for the record. Both directions have a vjp;
   the forward one solves the triangular adjoint system exactly by dim sweeps
   of one MADE backward pass each, plus one for the parameters
   (lib/bijectors/autoregressive.c).
   IAF (Kingma et al. 2016) is nf_inverse_new(nf_autoregressive_new(...))
   (nflow/inverse.h): one pass to sample, dim passes for the density.
   Layer type "autoregressive" (saves the order, its seed, the widths and the
   transformer). */
#ifndef NFLOW_AUTOREGRESSIVE_H
#define NFLOW_AUTOREGRESSIVE_H

#include <stdint.h>
#include "nflow/layer.h"
#include "nflow/made.h"
#include "nflow/mlp.h"
#include "nflow/rng.h"
#include "nflow/transformer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_autoregressive_opts {
  size_t n_hidden;          /* MADE hidden layers */
  const size_t *hidden;     /* their widths (>= dim - 1 for full connectivity) */
  nf_activation act;
  nf_order_kind order;      /* natural, reversed or random */
  uint64_t order_seed;      /* the random order's seed */
  nf_transformer_spec transformer;
  nf_precision precision;   /* the MADE's arithmetic (nflow/precision.h; 0 = double) */
} nf_autoregressive_opts;

/* Two hidden layers of 64, relu, natural order, seed 0, the affine
   transformer with its defaults (MAF). */
nf_autoregressive_opts nf_autoregressive_opts_default(void);

/* An autoregressive layer on R^dim with conditioning width ctx_dim (0:
   unconditional); opts NULL means the defaults. Its parameters are the
   MADE's (nf_mlp layout, nflow/made.h) with opts->transformer's raw values
   per coordinate as outputs. With rng, nf_made_init draws the hidden layers
   and zeroes the output weights, whose biases are the transformer's identity
   values: the layer starts as the exact identity with non-zero gradients.
   Without rng every weight is zero (and the biases the identity values).
   NULL (with nf_errmsg) on dim == 0, an unknown transformer kind or order,
   bad transformer options, NULL or zero hidden widths, an unknown activation
   or precision, or no memory. */
nf_layer *nf_autoregressive_new(size_t dim, size_t ctx_dim, const nf_autoregressive_opts *opts,
                                nf_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
