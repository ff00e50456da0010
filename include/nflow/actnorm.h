/* nflow/actnorm.h — activation normalisation (Kingma & Dhariwal 2018, Glow):
   the elementwise affine map of affine.h, x = z * exp(log_scale) + shift,
   whose parameters are initialised from data.

   Parameters (n_params = 2 d): shift[d] then log_scale[d], as nf_affine_new;
   zero (the identity) until initialised. Data-dependent initialisation
   (nf_flow_init_from_data, which the trainer calls on its first batch, see
   trainer.h): given the rows x entering the layer in the density direction,
   shift_j = mean_j(x) and log_scale_j = log sd_j(x) (population moments), so
   the layer's output z = (x - shift) exp(-log_scale) has mean 0 and variance
   1 per dimension on those rows. A column with no spread (sd_j <= 64 eps
   max_i |x_ij|: constant up to rounding) keeps scale 1 (log_scale_j = 0) and
   is only centred. NF_EDOMAIN if some |log sd_j| exceeds 700 (the affine
   layer's bound). The parameters are then ordinary parameters: trained,
   saved and loaded like any others. */
#ifndef NFLOW_ACTNORM_H
#define NFLOW_ACTNORM_H
#include "nflow/layer.h"
#ifdef __cplusplus
extern "C" {
#endif
/* An actnorm layer on R^dim with zero parameters (the identity until its
   data-dependent initialisation). NULL (with nf_errmsg) on dim == 0 or no
   memory. */
nf_layer *nf_actnorm_new(size_t dim);
#ifdef __cplusplus
}
#endif
#endif
