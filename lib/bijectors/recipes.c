/* lib/recipes.c — standard flows assembled from the bijector families. */
#define _DEFAULT_SOURCE /* sysconf(_SC_PHYS_PAGES) */
#include <stdlib.h>
#include <unistd.h>
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
  nf_recipe r = {kind, 8, 2, default_hidden, NF_ACT_RELU, 3.0, 0};
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
                             nf_transformer_kind kind, size_t k, nf_rng *rng)
{
  unsigned char *mask = malloc(dim);
  if (!mask) {
    nf_fail(NF_ENOMEM, "nf_recipe_build: out of memory");
    return NULL;
  }
  nf_coupling_mask_half(dim, (int)(k % 2), mask);
  nf_coupling_opts opts = {nf_transformer_spec_default(kind), mask, r->n_hidden, r->hidden, r->act};
  opts.transformer.scale_bound = r->scale_bound;
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
    return push(flow, coupling_at(dim, ctx_dim, r, NF_TRANSFORMER_AFFINE, k, rng));
  case NF_RECIPE_NICE:
    st = push(flow, coupling_at(dim, ctx_dim, r, NF_TRANSFORMER_ADDITIVE, k, rng));
    if (!st && k + 1 == r->layers) st = push(flow, nf_affine_new(dim));
    return st;
  case NF_RECIPE_GLOW:
    /* with a context, the couplings take it; actnorm and LU receive ctx = NULL */
    if (!(st = push(flow, nf_affine_new(dim))) &&
        !(st = push(flow, nf_linear_lu_new(dim, NULL, NF_DIAG_EXP, rng))))
      st = push(flow, coupling_at(dim, ctx_dim, r, NF_TRANSFORMER_AFFINE, k, rng));
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

/* Doubles a theta-sized copy takes during training: theta, gradient, Adam's m and v, best copy. */
#define NF_RECIPE_COPIES 5

/* Parameters of a coupling's conditioner: sum over its layers of (fan_in + 1)
   fan_out, from da + ctx_dim inputs to db x n_raw outputs; SIZE_MAX on overflow. */
static size_t conditioner_params(size_t da, size_t ctx_dim, size_t db, size_t n_raw,
                                 const nf_recipe *r)
{
  size_t total = 0, fan_in, out, np;
  if (nf_size_add(da, ctx_dim, &fan_in)) return SIZE_MAX;
  for (size_t l = 0; l <= r->n_hidden; l++) {
    size_t fan_out = l < r->n_hidden ? r->hidden[l] : 0;
    if (l == r->n_hidden && nf_size_mul(db, n_raw, &fan_out)) return SIZE_MAX;
    if (nf_size_add(fan_in, 1, &out) || nf_size_mul(out, fan_out, &np) ||
        nf_size_add(total, np, &total))
      return SIZE_MAX;
    fan_in = fan_out;
  }
  return total;
}

/* Parameters of one block of the recipe (an upper bound: both coupling
   halves rounded up; nice's final affine apart); SIZE_MAX on overflow. */
static size_t block_params(size_t dim, size_t ctx_dim, const nf_recipe *r)
{
  size_t half = dim / 2 + dim % 2, np = 0, dd;
  switch (r->kind) {
  case NF_RECIPE_REALNVP: return conditioner_params(half, ctx_dim, half, 2, r);
  case NF_RECIPE_NICE: return conditioner_params(half, ctx_dim, half, 1, r);
  case NF_RECIPE_GLOW: /* actnorm 2 dim, LU dim + dim^2, affine coupling */
    np = conditioner_params(half, ctx_dim, half, 2, r);
    if (nf_size_mul(dim, dim + 3, &dd) || nf_size_add(np, dd, &np)) return SIZE_MAX;
    return np;
  case NF_RECIPE_PLANAR: return 2 * dim + 1;
  case NF_RECIPE_RADIAL: return dim + 2;
  }
  return 0;
}

size_t nf_recipe_memory(size_t dim, size_t ctx_dim, const nf_recipe *recipe)
{
  size_t per_block, np, bytes;
  if (!recipe || dim == 0 || (recipe->n_hidden && !recipe->hidden)) return 0;
  if (dim > SIZE_MAX / 8) return SIZE_MAX; /* keeps 2 dim + 1 and dim + 3 exact */
  per_block = block_params(dim, ctx_dim, recipe);
  size_t once = recipe->kind == NF_RECIPE_NICE ? 2 * dim : 0; /* nice's final affine */
  if (per_block == SIZE_MAX || nf_size_mul(per_block, recipe->layers, &np) ||
      nf_size_add(np, once, &np) || nf_size_mul(np, NF_RECIPE_COPIES * sizeof(double), &bytes))
    return SIZE_MAX;
  return bytes;
}

/* The machine's physical memory in bytes (SIZE_MAX if unknown). */
static size_t physical_memory(void)
{
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  size_t bytes;
  if (pages <= 0 || page <= 0 || nf_size_mul((size_t)pages, (size_t)page, &bytes)) return SIZE_MAX;
  return bytes;
}

nf_flow *nf_recipe_build(size_t dim, size_t ctx_dim, const nf_recipe *recipe, nf_rng *rng)
{
  const char *fn = "nf_recipe_build";
  if (!recipe || !rng || recipe->layers == 0) {
    nf_fail(NF_EINVAL, "%s: recipe or rng is NULL, or no layers", fn);
    return NULL;
  }
  if (nf_check_dim(fn, dim)) return NULL;
  if (recipe->n_hidden && !recipe->hidden) {
    nf_fail(NF_EINVAL, "%s: %zu hidden layers but hidden widths are NULL", fn, recipe->n_hidden);
    return NULL;
  }
  size_t need = nf_recipe_memory(dim, ctx_dim, recipe);
  size_t limit = recipe->max_memory ? recipe->max_memory : physical_memory();
  if (need > limit) {
    nf_fail(NF_ENOMEM, "%s: recipe '%s' with %zu layers on R^%zu needs about %.3g GB to train "
            "(parameters x 8 bytes x %d), more than the limit of %.3g GB (%s)", fn,
            nf_recipe_name(recipe->kind), recipe->layers, dim, (double)need / 1e9,
            NF_RECIPE_COPIES, (double)limit / 1e9,
            recipe->max_memory ? "max_memory" : "physical memory");
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
