/* lib/recipes.c — standard flows assembled from the bijector families. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/affine.h"
#include "nflow/coupling.h"
#include "nflow/linear_lu.h"
#include "nflow/planar.h"
#include "nflow/radial.h"
#include "nflow/recipes.h"

/* Tolerance of the planar and radial inverses' root finding. */
#define NF_RECIPE_INV_TOL 1e-12

static const size_t default_hidden[] = {64, 64};
static const char *const kind_names[] = {"realnvp", "nice", "glow", "planar", "radial"};

nf_recipe nf_recipe_defaults(nf_recipe_kind kind)
{
  nf_recipe r = {kind, 8, 2, default_hidden, NF_ACT_RELU, 3.0};
  return r;
}

const char *nf_recipe_name(nf_recipe_kind kind)
{
  return (unsigned)kind < sizeof kind_names / sizeof *kind_names ? kind_names[kind] : "?";
}

nf_status nf_recipe_parse(const char *name, nf_recipe_kind *kind)
{
  int i = 0;
  nf_status st = nf_parse_choice("flow", name, kind_names, sizeof kind_names / sizeof *kind_names,
                                 kind ? &i : NULL);
  if (st == NF_OK) *kind = (nf_recipe_kind)i;
  return st;
}

/* Coupling k of a chain: half mask whose parity alternates with k. */
static nf_layer *coupling_at(size_t dim, size_t ctx_dim, const nf_recipe *r,
                             nf_coupling_kind kind, size_t k, nf_rng *rng)
{
  unsigned char *mask = malloc(dim);
  if (!mask) {
    nf_fail(NF_ENOMEM, "nf_recipe_build: out of memory");
    return NULL;
  }
  nf_coupling_mask_half(dim, (int)(k % 2), mask);
  nf_coupling_opts opts = {kind, mask, r->n_hidden, r->hidden, r->act, r->scale_bound};
  nf_layer *layer = nf_coupling_new(dim, ctx_dim, &opts, rng);
  free(mask);
  return layer;
}

/* Pushes layer (NULL = its constructor failed, whose status is kept). */
static nf_status push(nf_flow *flow, nf_layer *layer)
{
  return layer ? nf_flow_push(flow, layer) : nf_last_status();
}

/* Layers of block k of the recipe, in sampling order. */
static nf_status push_block(nf_flow *flow, size_t dim, size_t ctx_dim, const nf_recipe *r,
                            size_t k, nf_rng *rng)
{
  nf_status st = NF_OK;
  switch (r->kind) {
  case NF_RECIPE_REALNVP:
    return push(flow, coupling_at(dim, ctx_dim, r, NF_COUPLING_AFFINE, k, rng));
  case NF_RECIPE_NICE:
    st = push(flow, coupling_at(dim, ctx_dim, r, NF_COUPLING_ADDITIVE, k, rng));
    if (!st && k + 1 == r->layers) st = push(flow, nf_affine_new(dim));
    return st;
  case NF_RECIPE_GLOW:
    /* with a context, the couplings take it; actnorm and LU receive ctx = NULL */
    if (!(st = push(flow, nf_affine_new(dim))) &&
        !(st = push(flow, nf_linear_lu_new(dim, NULL, NF_DIAG_EXP, rng))))
      st = push(flow, coupling_at(dim, ctx_dim, r, NF_COUPLING_AFFINE, k, rng));
    return st;
  case NF_RECIPE_PLANAR:
  case NF_RECIPE_RADIAL:
    if (ctx_dim > 0)
      return nf_fail(NF_EINVAL, "nf_recipe_build: recipe '%s' has no layer that takes a "
                     "context, so it cannot model p(x | y); use realnvp, nice or glow",
                     nf_recipe_name(r->kind));
    return push(flow, r->kind == NF_RECIPE_PLANAR ? nf_planar_new(dim, NF_RECIPE_INV_TOL, rng)
                                                  : nf_radial_new(dim, NF_RECIPE_INV_TOL, rng));
  }
  return nf_fail(NF_EINVAL, "nf_recipe_build: unknown recipe kind %d", (int)r->kind);
}

nf_flow *nf_recipe_build(size_t dim, size_t ctx_dim, const nf_recipe *recipe, nf_rng *rng)
{
  if (!recipe || !rng || recipe->layers == 0) {
    nf_fail(NF_EINVAL, "nf_recipe_build: recipe or rng is NULL, or no layers");
    return NULL;
  }
  nf_flow *flow = nf_flow_new(dim, ctx_dim, NF_BASE_STD_NORMAL);
  for (size_t k = 0; flow && k < recipe->layers; k++)
    if (push_block(flow, dim, ctx_dim, recipe, k, rng)) {
      nf_flow_free(flow);
      flow = NULL;
    }
  return flow;
}
