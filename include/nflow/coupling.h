/* nflow/coupling.h — coupling layers with a binary mask: the masked part z_a
   passes unchanged and conditions an elementwise transformer of the rest z_b
   (nflow/transformer.h) through an MLP conditioner (input z_a and the context):
     additive (NICE, Dinh et al. 2014):   x_b = z_b + t(z_a)
     affine (RealNVP, Dinh et al. 2016):  x_b = z_b exp(s(z_a)) + t(z_a),
       with s = B tanh(s_raw / B), a soft clamp to (-B, B) so training cannot blow up
     spline (NSF-coupling, Durkan et al. 2019): a rational-quadratic spline of
       K bins on [-B, B] with identity tails, its bins and derivatives from z_a
     circular-spline (Rezende et al. 2020): the same on the circle [-pi, pi).
   Coupling layers save and load (layer type "coupling"). */
#ifndef NFLOW_COUPLING_H
#define NFLOW_COUPLING_H
#include "nflow/layer.h"
#include "nflow/mlp.h"
#include "nflow/rng.h"
#include "nflow/transformer.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef struct nf_coupling_opts {
  nf_transformer_spec transformer; /* the elementwise transformer and its options
                                      (start from nf_transformer_spec_default) */
  const unsigned char *mask; /* length dim: 1 = passes and conditions, 0 = transformed;
                                at least one of each */
  size_t n_hidden;           /* conditioner hidden layers */
  const size_t *hidden;      /* their widths */
  nf_activation act;
  nf_precision precision;    /* the conditioner's arithmetic (nflow/precision.h;
                                0 = double) */
} nf_coupling_opts;

/* Fills mask[0..dim) with 1 on the first floor(dim/2) indices (parity 0) or on
   the others (parity != 0), 0 elsewhere; NULL mask: no-op. */
void nf_coupling_mask_half(size_t dim, int parity, unsigned char *mask);
/* Fills mask[0..dim) with 1 on the even (parity 0) or odd (parity != 0)
   indices; NULL mask: no-op. */
void nf_coupling_mask_alternate(size_t dim, int parity, unsigned char *mask);
/* Fills mask[0..side^2) with the checkerboard of a side x side lattice stored
   row-major: 1 on the sites (r, c) with r + c even (parity 0) or odd (parity
   != 0), so that every site is conditioned on its four neighbours (Albergo,
   Kanwar & Shanahan 2019); NULL mask: no-op. */
void nf_coupling_mask_checkerboard(size_t side, int parity, unsigned char *mask);

/* A coupling layer on R^dim with conditioning width ctx_dim (0: unconditional).
   The conditioner is an MLP (opts->n_hidden, opts->hidden, opts->act) from the
   row [z_a, ctx] (z_a: the mask-1 coordinates in index order) to the
   transformer's raw values of each transformed coordinate in turn (db = number
   of mask-0 coordinates; per coordinate additive 1: t; affine 2: s_raw, t;
   spline 3K - 1: K width logits, K height logits, K - 1 interior derivative
   raws; circular-spline 3K: K derivative raws); the layer's parameters are
   the MLP's (nf_mlp layout). With rng, nf_mlp_init draws the hidden layers
   and zeroes the output layer's weights (out_scale = 0) and its bias is set
   to the transformer's identity raw values: the layer starts as the identity
   (exactly for additive and affine, to rounding for the splines) yet has
   non-zero gradients. With rng == NULL the weights are zero and the bias is
   the same (also the identity; for parameters set by the caller, e.g. loaded
   from a file). A circular-spline coupling refuses (NF_EDOMAIN) transformed
   coordinates outside [-pi, pi].
   The layer keeps a copy of the mask and widths (for saving). NULL (with nf_errmsg) on dim == 0, NULL opts or mask, a
   mask entry other than 0 and 1, a mask without both a 0 and a 1, an unknown
   transformer kind, activation or precision, NULL or zero hidden widths,
   transformer options its kind cannot use (affine: scale_bound not finite and > 0;
   splines: bins outside [1, 4096], minima outside [0, 1/bins) or a
   min_derivative outside [0, 1), a tail_bound not finite and > 0), or no memory. */
nf_layer *nf_coupling_new(size_t dim, size_t ctx_dim, const nf_coupling_opts *opts,
                          nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
