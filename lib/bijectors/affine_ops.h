/* lib/bijectors/affine_ops.h — the elementwise affine layer's ops, shared
   with actnorm (the same map x = z exp(a) + b, theta = b[d] then a[d], plus
   data-dependent initialisation). Internal. */
#ifndef NFLOW_AFFINE_OPS_H
#define NFLOW_AFFINE_OPS_H
#include "nflow/layer_impl.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

size_t nf_affine_work_size(const nf_layer *layer, size_t n);
nf_status nf_affine_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                          const double *in, const double *ctx, double *out, double *logdet,
                          const nf_apply_opts *opts, double *work);
nf_status nf_affine_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                        const double *in, const double *ctx, const double *out,
                        const double *g_out, const double *g_logdet, double *g_in, double *g_ctx,
                        double *g_theta, double *work);
nf_status nf_affine_check_params(const nf_layer *layer, const double *theta);
nf_status nf_affine_save(const nf_layer *layer, nf_config *cfg);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
