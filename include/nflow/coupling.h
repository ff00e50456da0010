/* nflow/coupling.h — coupling layers with a binary mask: the masked part z_a
   passes unchanged and conditions an elementwise transform of the rest z_b
   through an MLP conditioner (input z_a and the context):
     additive (NICE, Dinh et al. 2014):   x_b = z_b + t(z_a)
     affine (RealNVP, Dinh et al. 2016):  x_b = z_b exp(s(z_a)) + t(z_a),
   with s = B tanh(s_raw / B), a soft clamp to (-B, B) so training cannot blow up.
   The kind names the elementwise transformer; coupling layers save and load
   (layer type "coupling"). */
#ifndef NFLOW_COUPLING_H
#define NFLOW_COUPLING_H
#include "nflow/layer.h"
#include "nflow/mlp.h"
#include "nflow/rng.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef enum nf_coupling_kind { NF_COUPLING_ADDITIVE = 0, NF_COUPLING_AFFINE } nf_coupling_kind;

typedef struct nf_coupling_opts {
  nf_coupling_kind kind;
  const unsigned char *mask; /* length dim: 1 = passes and conditions, 0 = transformed;
                                at least one of each */
  size_t n_hidden;           /* conditioner hidden layers */
  const size_t *hidden;      /* their widths */
  nf_activation act;
  double scale_bound;        /* B of the soft clamp (affine only), > 0; e.g. 3 */
} nf_coupling_opts;

/* "additive" or "affine" ("?" for another value). */
const char *nf_coupling_kind_name(nf_coupling_kind kind);
/* Parses "additive" or "affine"; NF_EINVAL on another name or a NULL
   argument (*kind then untouched). */
nf_status nf_coupling_kind_parse(const char *name, nf_coupling_kind *kind);

/* Fills mask[0..dim) with 1 on the first floor(dim/2) indices (parity 0) or on
   the others (parity != 0), 0 elsewhere; NULL mask: no-op. */
void nf_coupling_mask_half(size_t dim, int parity, unsigned char *mask);
/* Fills mask[0..dim) with 1 on the even (parity 0) or odd (parity != 0)
   indices; NULL mask: no-op. */
void nf_coupling_mask_alternate(size_t dim, int parity, unsigned char *mask);

/* A coupling layer on R^dim with conditioning width ctx_dim (0: unconditional).
   The conditioner is an MLP (opts->n_hidden, opts->hidden, opts->act) from the
   row [z_a, ctx] (z_a: the mask-1 coordinates in index order) to t (additive:
   db outputs, db = number of mask-0 coordinates) or to (s_raw, t) (affine:
   2 db outputs, (s_raw, t) of each transformed coordinate in turn:
   s_raw_0, t_0, s_raw_1, t_1, ...); the layer's parameters are the MLP's
   (nf_mlp layout). With rng, nf_mlp_init draws the hidden layers and zeroes
   the output layer (out_scale = 0): the layer starts as the exact identity yet
   has non-zero gradients. With rng == NULL every parameter is zero (also the
   identity; for parameters set by the caller, e.g. loaded from a file).
   The layer keeps a copy of the mask and widths (for saving). NULL (with nf_errmsg) on dim == 0, NULL opts or mask, a
   mask entry other than 0 and 1, a mask without both a 0 and a 1, an unknown
   kind or activation, NULL or zero hidden widths, an affine scale_bound that
   is not finite and > 0, or no memory. */
nf_layer *nf_coupling_new(size_t dim, size_t ctx_dim, const nf_coupling_opts *opts,
                          nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
