/* nflow/transformer.h — the elementwise transformer a coupling or
   autoregressive layer applies to each transformed coordinate (zuko's
   transformer × conditioner split; Papamakarios et al. 2021, §3):
     additive  y = x + t                                  (NICE, Dinh et al. 2014)
     affine    y = x exp(s) + t, s = B tanh(s_raw / B)    (RealNVP, Dinh et al. 2016)
     spline    a monotone rational-quadratic spline with K bins on [-B, B] and
               identity tails outside                     (Durkan et al. 2019)
     circular  a rational-quadratic spline on [-pi, pi) whose end derivatives
               match, a diffeomorphism of the circle      (Rezende et al. 2020)
   The conditioner emits each coordinate's raw parameters; the transformer
   turns them into the map (a soft clamp, softmaxes over bin widths and
   heights, softplus derivatives). */
#ifndef NFLOW_TRANSFORMER_PUBLIC_H
#define NFLOW_TRANSFORMER_PUBLIC_H
#include <stddef.h>
#include "nflow/status.h"
#ifdef __cplusplus
extern "C" {
#endif
typedef enum nf_transformer_kind {
  NF_TRANSFORMER_ADDITIVE = 0,
  NF_TRANSFORMER_AFFINE,
  NF_TRANSFORMER_SPLINE,
  NF_TRANSFORMER_CIRCULAR_SPLINE
} nf_transformer_kind;

/* A transformer and its options; each kind reads its own fields. Start from
   nf_transformer_spec_default(kind). */
typedef struct nf_transformer_spec {
  nf_transformer_kind kind;
  double scale_bound;    /* affine: B of the soft clamp, finite and > 0 (default 3) */
  size_t bins;           /* splines: K >= 1 (default 8) */
  double tail_bound;     /* spline: B, the bins cover [-B, B] (default 5; circular: pi, fixed) */
  double min_bin_width;  /* splines: each bin's width >= this fraction of the interval (1e-3) */
  double min_bin_height; /* splines: the same for heights (1e-3) */
  double min_derivative; /* splines: knot derivatives >= this (1e-3) */
} nf_transformer_spec;

/* The defaults above for a kind (an unknown kind gets them too, and is refused
   by the layer constructors). */
nf_transformer_spec nf_transformer_spec_default(nf_transformer_kind kind);

/* "additive", "affine", "spline", "circular-spline" ("?" for another value). */
const char *nf_transformer_kind_name(nf_transformer_kind kind);
/* Parses those names; NF_EINVAL on another name or NULL (*kind untouched). */
nf_status nf_transformer_kind_parse(const char *name, nf_transformer_kind *kind);
#ifdef __cplusplus
}
#endif
#endif
