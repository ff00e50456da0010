/* lib/transformers/transformer.h — elementwise monotone transformers (internal).

   A transformer is the elementwise half of a coupling or autoregressive layer
   (Papamakarios et al. 2021, §3): y_j = τ(x_j; h_j), monotone in x_j, whose raw
   parameters h_j come from a conditioner that sees only the other coordinates
   (and the context). The conditioner owns the network; the transformer owns the
   map from raw outputs to the map itself (a soft clamp, a softmax over bin
   widths, ...), its log-derivative and its pullbacks.

   Every call works on a whole block of n rows and db transformed coordinates,
   so a layer makes one call per batch, not one per element:
     x, y      n x db, row-major (the transformed coordinates, gathered);
     h         n x db x n_raw: row i, coordinate j holds its n_raw raw values at
               h[(i db + j) n_raw + k], k = 0 .. n_raw - 1 (the conditioner emits
               exactly this layout: coordinate-major within a row);
     logdet    n, ADDED to (NULL: not wanted);
     rec       n x db x n_record doubles the direction's map leaves for backward
               (values it would otherwise recompute: scales, bin indices, ...).
   Directions follow layer.h: forward is z -> x (sampling), inverse x -> z.

   Options are one struct for all transformers; each reads its own fields.

   Everything here is hidden from the shared library's exported symbols. */
#ifndef NFLOW_TRANSFORMER_H
#define NFLOW_TRANSFORMER_H

#include <stddef.h>
#include "nflow/layer.h"
#include "nflow/status.h"
#include "nflow/transformer.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

typedef struct nf_config nf_config; /* nflow/config.h */

/* Per-transformer options: the public spec (nflow/transformer.h); each
   transformer reads its own fields. */
typedef nf_transformer_spec nf_transformer_opts;

typedef struct nf_transformer {
  const char *name; /* unique: the key saved in model files */
  /* Raw conditioner outputs per transformed coordinate (additive 1: t;
     affine 2: s_raw, t; a rational-quadratic spline with K bins 3K - 1, circular 3K). */
  size_t (*n_raw)(const nf_transformer_opts *o);
  /* Doubles per transformed coordinate that forward and inverse record for backward. */
  size_t (*n_record)(const nf_transformer_opts *o);
  /* NF_EINVAL with "fn: ..." for options this transformer cannot use. */
  nf_status (*check_opts)(const nf_transformer_opts *o, const char *fn);
  /* y = τ(x; h), logdet[i] += sum_j log|dτ/dx|(x_ij); writes rec. */
  nf_status (*forward)(const nf_transformer_opts *o, size_t n, size_t db, const double *h,
                       const double *x, double *y, double *logdet, double *rec);
  /* x = τ^-1(y; h), logdet[i] -= sum_j log|dτ/dx|(x_ij); writes rec. May fail
     (a spline's root finding) with a status and nf_errmsg, never printing; y
     and logdet are then unspecified. */
  nf_status (*inverse)(const nf_transformer_opts *o, size_t n, size_t db, const double *h,
                       const double *y, double *x, double *logdet, double *rec);
  /* Pullback of the direction dir's map in -> (out, logdet) recorded in rec
     (in, out: that direction's input and output, n x db): given g_out (n x db)
     and g_logdet (n; NULL = zero) WRITES g_in (NULL: not wanted) and WRITES
     g_h (n x db x n_raw, the cotangent of the raw parameters). */
  void (*backward)(const nf_transformer_opts *o, nf_dir dir, size_t n, size_t db,
                   const double *h, const double *in, const double *out, const double *rec,
                   const double *g_out, const double *g_logdet, double *g_in, double *g_h);
  /* Writes the n_raw raw values h0 with τ(.; h0) = identity: what a
     conditioner's output bias must be when its last layer's weights are zero,
     for a layer that starts as the identity. Additive and affine: all zero
     (t = 0, s = 0). A spline would say: equal raw widths and heights (uniform
     bins) and raw derivatives whose positive map gives 1 (unit derivatives). */
  void (*identity_init)(const nf_transformer_opts *o, double *h0);
  /* Writes / reads this transformer's options (its own keys, e.g.
     "scale_bound"); NULL when it has none. load fills only its own fields,
     returns the config's status (NF_EFORMAT naming a missing key). */
  nf_status (*save_opts)(const nf_transformer_opts *o, nf_config *cfg);
  nf_status (*load_opts)(const nf_config *cfg, nf_transformer_opts *o);
} nf_transformer;

/* The library's transformers, one file each. */
extern const nf_transformer nf_transformer_additive, nf_transformer_affine, nf_transformer_spline,
    nf_transformer_circular_spline;

/* The transformer of a kind (NULL for an unknown or not yet built kind). */
const nf_transformer *nf_transformer_of_kind(nf_transformer_kind kind);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
