/* lib/transformers/rq_bins.h — monotone rational-quadratic splines (internal),
   the one implementation of the bin math behind the spline transformers:
     interval  K bins on [lo, hi] with identity tails outside (Durkan et al.
               2019, "Neural Spline Flows": rq_spline.c);
     circular  K bins on [-pi, pi] whose end derivatives are one value, a
               diffeomorphism of the circle (Rezende et al. 2020, "Normalizing
               flows on tori and spheres": circular_spline.c).

   Raw values per coordinate (n_raw): K width logits u, K height logits v, then
   the derivative raws r (interval: K - 1 for the interior knots, the end
   derivatives being 1 to match the tails; circular: K, knot K sharing knot 0's):
     widths  w_i = min_w + (1 - K min_w) softmax(u)_i   (of hi - lo; heights alike)
     d_j     = min_d + softplus(r_j).
   Inside bin k, with xi = (x - x_k) / W_k, s = H_k / W_k, t = xi (1 - xi)
   (Durkan et al. 2019, eqs. 4-5):
     y = y_k + H_k (s xi^2 + d_k t) / (s + (d_k + d_k+1 - 2 s) t),
     dy/dx = s^2 (d_k+1 xi^2 + 2 s t + d_k (1 - xi)^2) / (s + (...) t)^2.

   Record per coordinate (n_record = 2K + 6): softmax(u), softmax(v) (computed
   once, read again by backward), then the bin index (-1: a tail), xi, d_k,
   d_k+1 and their softplus slopes sigmoid(r) (0 for a fixed end derivative). */
#ifndef NFLOW_RQ_BINS_H
#define NFLOW_RQ_BINS_H

#include <stddef.h>
#include "nflow/layer.h"
#include "nflow/status.h"
#include "transformer.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* Most bins a spline may have (keeps every per-coordinate count far from overflow). */
#define RQ_MAX_BINS 4096

/* The ops of both spline transformers (transformer.h), one set of functions
   serving both: the variant is o->kind (NF_TRANSFORMER_SPLINE: bins,
   tail_bound and minima of o; NF_TRANSFORMER_CIRCULAR_SPLINE: bins and
   minima, the interval [-pi, pi]). */

/* 3K - 1 (interval) or 3K (circular). */
size_t rq_n_raw(const nf_transformer_opts *o);
/* 2K + 6. */
size_t rq_n_record(const nf_transformer_opts *o);
/* NF_EINVAL "fn: ..." unless o->kind is a spline kind, 1 <= K <= RQ_MAX_BINS,
   min_bin_width and min_bin_height are finite in [0, 1/K), min_derivative in
   [0, 1) (so that unit derivatives exist) and (interval) tail_bound is
   finite and > 0. */
nf_status rq_check_opts(const nf_transformer_opts *o, const char *fn);
/* The spline or its inverse on n x db elements (layout of transformer.h),
   logdet[i] += / -= sum_j log dy/dx; writes rec. Circular: NF_EDOMAIN naming
   the row and coordinate of an input outside [-pi, pi], before anything is
   written. */
nf_status rq_forward(const nf_transformer_opts *o, size_t n, size_t db, const double *h,
                     const double *x, double *y, double *logdet, double *rec);
nf_status rq_inverse(const nf_transformer_opts *o, size_t n, size_t db, const double *h,
                     const double *y, double *x, double *logdet, double *rec);
/* Pullback of direction dir recorded in rec: writes g_in (if not NULL) and g_h. */
void rq_backward(const nf_transformer_opts *o, nf_dir dir, size_t n, size_t db, const double *h,
                 const double *in, const double *out, const double *rec, const double *g_out,
                 const double *g_logdet, double *g_in, double *g_h);
/* Raw values of the identity: uniform bins, unit derivatives. */
void rq_identity_init(const nf_transformer_opts *o, double *h0);
/* Writes / reads "bins", "min_bin_width", "min_bin_height", "min_derivative"
   and (interval) "tail_bound". */
nf_status rq_save_opts(const nf_transformer_opts *o, nf_config *cfg);
nf_status rq_load_opts(const nf_config *cfg, nf_transformer_opts *o);

/* The shared ops, for the two transformers' tables. */
#define RQ_SPLINE_OPS                                                                   \
  .n_raw = rq_n_raw, .n_record = rq_n_record, .check_opts = rq_check_opts,            \
  .forward = rq_forward, .inverse = rq_inverse, .backward = rq_backward,               \
  .identity_init = rq_identity_init, .save_opts = rq_save_opts, .load_opts = rq_load_opts

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
