/* nflow/coupling.h — coupling layers with a binary mask: the masked part z_a
   passes unchanged and conditions the transform of the rest z_b through an MLP
   conditioner (input z_a and the context):
     additive (NICE, Dinh et al. 2014):   x_b = z_b + t(z_a)
     affine (RealNVP, Dinh et al. 2016):  x_b = z_b exp(s(z_a)) + t(z_a),
   with s = B tanh(s_raw / B), a soft clamp to (-B, B) so training cannot blow up. */
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

/* Fills mask[0..dim) with the first half (parity 0) or second half (parity 1) set. */
void nf_mask_half(size_t dim, int parity, unsigned char *mask);
/* Fills mask[0..dim) with even (parity 0) or odd (parity 1) indices set. */
void nf_mask_alternate(size_t dim, int parity, unsigned char *mask);

/* The conditioner is initialised by nf_mlp_init with out_scale = 0 when
   rng == NULL... see coupling.c; NULL (with nf_errmsg) on bad options. */
nf_layer *nf_coupling_new(size_t dim, size_t ctx_dim, const nf_coupling_opts *opts,
                          nf_rng *rng);
#ifdef __cplusplus
}
#endif
#endif
