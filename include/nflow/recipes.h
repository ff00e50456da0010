/* nflow/recipes.h — ready-made flows from the literature, built from the
   library's bijectors (as zuko.flows offers them): one call gives a flow with
   initialised parameters. */
#ifndef NFLOW_RECIPES_H
#define NFLOW_RECIPES_H

#include <stddef.h>
#include "nflow/flow.h"
#include "nflow/mlp.h"
#include "nflow/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_recipe_kind {
  NF_RECIPE_REALNVP = 0, /* affine couplings, alternating half masks (Dinh et al. 2016) */
  NF_RECIPE_NICE,        /* additive couplings, alternating half masks, then an elementwise
                            affine scaling layer (Dinh et al. 2014) */
  NF_RECIPE_GLOW,        /* per block: elementwise affine (actnorm), LU-linear, affine
                            coupling (Kingma & Dhariwal 2018) */
  NF_RECIPE_PLANAR,      /* planar layers (Rezende & Mohamed 2015) */
  NF_RECIPE_RADIAL       /* radial layers (Rezende & Mohamed 2015) */
} nf_recipe_kind;

typedef struct nf_recipe {
  nf_recipe_kind kind;
  size_t layers;         /* couplings / blocks / planar or radial layers, >= 1 */
  size_t n_hidden;       /* conditioner hidden layers (coupling recipes) */
  const size_t *hidden;  /* their widths */
  nf_activation act;     /* conditioner activation */
  double scale_bound;    /* soft clamp of the affine couplings' log-scale, > 0 */
  size_t max_memory;     /* bytes nf_recipe_build may plan for (nf_recipe_memory);
                            0: the machine's physical memory */
} nf_recipe;

/* Defaults for a kind: 8 layers, hidden 64,64, relu, scale bound 3, max_memory 0. */
nf_recipe nf_recipe_defaults(nf_recipe_kind kind);

/* Parses "realnvp", "nice", "glow", "planar", "radial". */
nf_status nf_recipe_parse(const char *name, nf_recipe_kind *kind);

/* Name of a kind ("realnvp", ...). */
const char *nf_recipe_name(nf_recipe_kind kind);

/* Bytes a flow of this recipe on R^dim (context width ctx_dim) takes to
   train: its parameter count (bounded above: halves rounded up) x 8 bytes x 5
   (theta, gradient, Adam's two moments, the best copy). Computed without
   allocating; SIZE_MAX if it overflows, 0 for a NULL recipe or dim == 0. */
size_t nf_recipe_memory(size_t dim, size_t ctx_dim, const nf_recipe *recipe);

/* A flow on R^dim (standard normal base) built by the recipe, parameters drawn
   from rng (couplings start at the identity). With ctx_dim > 0 the couplings
   of realnvp, nice and glow see the context (glow's affine and LU layers take
   none); planar and radial have no conditional layer and are refused, naming
   the recipe. NULL (with nf_errmsg) on bad arguments or no memory, and
   NF_ENOMEM, before allocating anything, when nf_recipe_memory exceeds
   max_memory (or the physical memory), the message giving both in GB. */
nf_flow *nf_recipe_build(size_t dim, size_t ctx_dim, const nf_recipe *recipe, nf_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
