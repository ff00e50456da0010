/* nflow/recipes.h — ready-made flows from the literature, built from the
   library's bijectors (as zuko.flows offers them): one call gives a flow with
   initialised parameters. */
#ifndef NFLOW_RECIPES_H
#define NFLOW_RECIPES_H

#include <stddef.h>
#include "nflow/flow.h"
#include "nflow/mlp.h"
#include "nflow/precision.h"
#include "nflow/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_recipe_kind {
  NF_RECIPE_REALNVP = 0, /* affine couplings (Dinh et al. 2016) */
  NF_RECIPE_NICE,        /* additive couplings, then an elementwise affine scaling layer
                            (Dinh et al. 2014) */
  NF_RECIPE_GLOW,        /* per block: actnorm (data-initialised), LU-linear, affine
                            coupling (Kingma & Dhariwal 2018) */
  NF_RECIPE_PLANAR,      /* planar layers (Rezende & Mohamed 2015) */
  NF_RECIPE_RADIAL,      /* radial layers (Rezende & Mohamed 2015) */
  NF_RECIPE_MAF,         /* affine autoregressive layers, orders alternating natural and
                            reversed (Papamakarios et al. 2017) */
  NF_RECIPE_IAF,         /* inverses of those: one pass to sample, d to evaluate
                            (Kingma et al. 2016) */
  NF_RECIPE_NSF,         /* rational-quadratic spline autoregressive layers (Durkan et al.
                            2019; zuko's NSF) */
  NF_RECIPE_NSF_COUPLING, /* rational-quadratic spline couplings (Durkan et al. 2019, RQ-NSF (C)) */
  NF_RECIPE_GF,          /* per block: mixture-of-logistics Gaussianization, LU rotation
                            (Meng et al. 2020) */
  NF_RECIPE_RESFLOW      /* per block: actnorm, residual layer z = x + g(x) with
                            spectrally normalised g (Chen et al. 2019) */
} nf_recipe_kind;

/* What separates consecutive coupling layers on R^d, d >= 3 (their masks
   alternate even and odd coordinates in any case; on R^2 nothing is put
   between them, since a permutation would undo the alternation). */
typedef enum nf_recipe_mixing {
  NF_MIXING_RANDOM = 0, /* a seeded random permutation (nflows' default) */
  NF_MIXING_REVERSE,    /* the reversal */
  NF_MIXING_NONE        /* nothing: the alternating masks alone (zuko's RealNVP) */
} nf_recipe_mixing;

typedef struct nf_recipe {
  nf_recipe_kind kind;
  size_t layers;         /* couplings / blocks / planar or radial layers, >= 1 */
  size_t n_hidden;       /* conditioner hidden layers (coupling recipes) */
  const size_t *hidden;  /* their widths */
  nf_activation act;     /* conditioner activation */
  double scale_bound;    /* soft clamp of the affine couplings' log-scale, > 0 */
  size_t max_memory;     /* bytes nf_recipe_build may plan for (nf_recipe_memory);
                            0: the machine's physical memory */
  nf_recipe_mixing mixing; /* coupling recipes on R^d, d >= 3 */
  size_t bins;           /* nsf, nsf-coupling: spline bins K >= 1 */
  double tail_bound;     /* nsf, nsf-coupling: the splines cover [-B, B], > 0 */
  size_t components;     /* gf: logistic components per coordinate >= 1 */
  size_t lattice;        /* coupling recipes: L > 0 on R^(L^2) alternates checkerboard masks
                            of the L x L lattice (row-major; nf_coupling_mask_checkerboard)
                            and puts no mixing layers between couplings, which would
                            scramble the lattice; 0 (default): no lattice */
  nf_precision precision; /* the coupling and autoregressive conditioners' arithmetic
                             (nflow/precision.h; default double); the other layers
                             have no network, and the residual's stays double */
} nf_recipe;

/* Defaults for a kind: 8 layers (nsf and nsf-coupling 4, gf 6, resflow 8),
   hidden 64,64, relu (resflow: the residual layer's tanh), scale bound 3
   (maf, iaf 5),
   max_memory 0, random permutations between couplings, 8 bins on [-5, 5],
   8 components, double precision. */
nf_recipe nf_recipe_defaults(nf_recipe_kind kind);

/* Parses "realnvp", "nice", "glow", "planar", "radial", "maf", "iaf", "nsf",
   "nsf-coupling", "gf", "resflow". */
nf_status nf_recipe_parse(const char *name, nf_recipe_kind *kind);

/* Name of a kind ("realnvp", ...). */
const char *nf_recipe_name(nf_recipe_kind kind);

/* Bytes a flow of this recipe on R^dim (context width ctx_dim) takes to
   train: its parameter count (bounded above: halves rounded up) x 8 bytes x 5
   (theta, gradient, Adam's two moments, the best copy). Computed without
   allocating; SIZE_MAX if it overflows, 0 for a NULL recipe or dim == 0. */
size_t nf_recipe_memory(size_t dim, size_t ctx_dim, const nf_recipe *recipe);

/* A flow on R^dim (standard normal base) built by the recipe, parameters drawn
   from rng (couplings and autoregressive layers start at the identity). The
   residual flow's log-det is exact up to d = 16 and the unbiased Russian-
   roulette estimate above (nflow/residual.h). With ctx_dim > 0 the couplings,
   autoregressive and residual layers see the context (actnorm, LU and the
   Gaussianization layers take none); planar, radial and gf have no
   conditional layer and are refused, naming the recipe. NULL (with nf_errmsg) on bad arguments or no memory, and
   NF_ENOMEM, before allocating anything, when nf_recipe_memory exceeds
   max_memory (or the physical memory), the message giving both in GB. */
nf_flow *nf_recipe_build(size_t dim, size_t ctx_dim, const nf_recipe *recipe, nf_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
