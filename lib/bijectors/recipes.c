/* lib/recipes.c — standard flows assembled from the bijector families. */
#define _DEFAULT_SOURCE /* sysconf(_SC_PHYS_PAGES) */
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "internal.h"
#include "nflow/actnorm.h"
#include "nflow/affine.h"
#include "nflow/autoregressive.h"
#include "nflow/coupling.h"
#include "nflow/gaussianization.h"
#include "nflow/inverse.h"
#include "nflow/linear_lu.h"
#include "nflow/permute.h"
#include "nflow/planar.h"
#include "nflow/radial.h"
#include "nflow/recipes.h"
#include "nflow/residual.h"

/* Tolerance of the planar and radial inverses' root finding. */
#define NF_RECIPE_INV_TOL 1e-12

static const size_t default_hidden[] = {64, 64};
static const char *const kind_names[] = {"realnvp", "nice",         "glow", "planar",
                                         "radial",  "maf",          "iaf",  "nsf",
                                         "nsf-coupling", "gf",      "resflow"};

/* Largest dimension at which resflow computes its log-det exactly (d tangent
   passes); above it the Russian-roulette estimate. */
#define NF_RECIPE_RESFLOW_EXACT_MAX_DIM 16

nf_recipe nf_recipe_defaults(nf_recipe_kind kind)
{
  size_t layers = kind == NF_RECIPE_NSF || kind == NF_RECIPE_NSF_COUPLING ? 4
                  : kind == NF_RECIPE_GF                                  ? 6
                                                                          : 8;
  /* MAF's first coordinate in each order gets a constant affine map: a wider
     clamp helps it (8gaussians, seeds 1-3: test NLL 2.965 mean at 5, 2.979 at 3) */
  double bound = kind == NF_RECIPE_MAF || kind == NF_RECIPE_IAF ? 5.0 : 3.0;
  nf_recipe r = {kind, layers, 2, default_hidden, NF_ACT_RELU, bound, 0, NF_MIXING_RANDOM, 8, 5.0, 8, 0,
                 NF_PRECISION_DOUBLE};
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

/* The transformer of a kind with the recipe's options (affine bound, spline bins and bound). */
static nf_transformer_spec transformer_of(const nf_recipe *r, nf_transformer_kind kind)
{
  nf_transformer_spec t = nf_transformer_spec_default(kind);
  t.scale_bound = r->scale_bound;
  t.bins = r->bins;
  t.tail_bound = r->tail_bound;
  return t;
}

/* Coupling k of a chain: the even coordinates (lattice sites) pass for even
   k, the odd ones for odd k. */
static nf_layer *coupling_at(size_t dim, size_t ctx_dim, const nf_recipe *r,
                             nf_transformer_kind kind, size_t k, nf_rng *rng)
{
  unsigned char *mask = malloc(dim);
  if (!mask) {
    nf_fail(NF_ENOMEM, "nf_recipe_build: out of memory");
    return NULL;
  }
  if (r->lattice) nf_coupling_mask_checkerboard(r->lattice, (int)(k % 2), mask);
  else nf_coupling_mask_alternate(dim, (int)(k % 2), mask);
  nf_coupling_opts opts = {transformer_of(r, kind), mask, r->n_hidden, r->hidden, r->act,
                          r->precision};
  nf_layer *layer = nf_coupling_new(dim, ctx_dim, &opts, rng);
  free(mask);
  return layer;
}

/* Autoregressive layer k of a chain: natural order for even k, reversed for odd
   (zuko's MAF and NSF), inverted for IAF. */
static nf_layer *autoregressive_at(size_t dim, size_t ctx_dim, const nf_recipe *r,
                                   nf_transformer_kind kind, size_t k, nf_rng *rng)
{
  nf_autoregressive_opts o = nf_autoregressive_opts_default();
  o.n_hidden = r->n_hidden;
  o.hidden = r->hidden;
  o.act = r->act;
  o.order = k % 2 ? NF_ORDER_REVERSED : NF_ORDER_NATURAL;
  o.transformer = transformer_of(r, kind);
  o.precision = r->precision;
  nf_layer *layer = nf_autoregressive_new(dim, ctx_dim, &o, rng);
  return r->kind == NF_RECIPE_IAF && layer ? nf_inverse_new(layer) : layer;
}

/* Residual block's layer (Chen et al. 2019): g with the recipe's widths, exact
   log-det up to NF_RECIPE_RESFLOW_EXACT_MAX_DIM. */
static nf_layer *residual_of(size_t dim, size_t ctx_dim, const nf_recipe *r, nf_rng *rng)
{
  nf_residual_opts o = nf_residual_defaults();
  o.n_hidden = r->n_hidden;
  o.hidden = r->hidden;
  o.logdet = dim <= NF_RECIPE_RESFLOW_EXACT_MAX_DIM ? NF_RESIDUAL_EXACT : NF_RESIDUAL_ESTIMATE;
  return nf_residual_new(dim, ctx_dim, &o, rng);
}

/* Whether a mixing layer goes before coupling k (k > 0, d >= 3; nf_recipe_mixing). */
static int mixes_before(size_t dim, const nf_recipe *r, size_t k)
{
  return k > 0 && dim >= 3 && r->mixing != NF_MIXING_NONE && !r->lattice;
}

/* The recipe's mixing layer: a reversal or a seeded random permutation. */
static nf_layer *mixing_layer(size_t dim, const nf_recipe *r, nf_rng *rng)
{
  return r->mixing == NF_MIXING_REVERSE ? nf_permute_reverse_new(dim) : nf_permute_random_new(dim, rng);
}

/* Pushes layer (NULL = its constructor failed, whose status is kept). */
static nf_status push(nf_flow *flow, nf_layer *layer)
{
  return layer ? nf_flow_push(flow, layer) : nf_last_status();
}

/* Pushes coupling k of the transformer kind, after its mixing layer. */
static nf_status push_coupling(nf_flow *flow, size_t dim, size_t ctx_dim, const nf_recipe *r,
                               nf_transformer_kind kind, size_t k, nf_rng *rng)
{
  nf_status st = mixes_before(dim, r, k) ? push(flow, mixing_layer(dim, r, rng)) : NF_OK;
  return st ? st : push(flow, coupling_at(dim, ctx_dim, r, kind, k, rng));
}

/* Layers of block k of the recipe, in sampling order. */
static nf_status push_block(nf_flow *flow, size_t dim, size_t ctx_dim, const nf_recipe *r,
                            size_t k, nf_rng *rng)
{
  nf_status st = NF_OK;
  switch (r->kind) {
  case NF_RECIPE_REALNVP:
    return push_coupling(flow, dim, ctx_dim, r, NF_TRANSFORMER_AFFINE, k, rng);
  case NF_RECIPE_NSF_COUPLING:
    return push_coupling(flow, dim, ctx_dim, r, NF_TRANSFORMER_SPLINE, k, rng);
  case NF_RECIPE_NICE:
    st = push_coupling(flow, dim, ctx_dim, r, NF_TRANSFORMER_ADDITIVE, k, rng);
    if (!st && k + 1 == r->layers) st = push(flow, nf_affine_new(dim));
    return st;
  case NF_RECIPE_GLOW:
    /* with a context, the couplings take it; actnorm and LU receive ctx = NULL */
    if (!(st = push(flow, nf_actnorm_new(dim))) &&
        !(st = push(flow, nf_linear_lu_new(dim, NULL, NF_DIAG_EXP, rng))))
      st = push(flow, coupling_at(dim, ctx_dim, r, NF_TRANSFORMER_AFFINE, k, rng));
    return st;
  case NF_RECIPE_MAF:
  case NF_RECIPE_IAF:
    return push(flow, autoregressive_at(dim, ctx_dim, r, NF_TRANSFORMER_AFFINE, k, rng));
  case NF_RECIPE_NSF:
    return push(flow, autoregressive_at(dim, ctx_dim, r, NF_TRANSFORMER_SPLINE, k, rng));
  case NF_RECIPE_RESFLOW:
    if (!(st = push(flow, nf_actnorm_new(dim)))) st = push(flow, residual_of(dim, ctx_dim, r, rng));
    return st;
  case NF_RECIPE_PLANAR:
  case NF_RECIPE_RADIAL:
  case NF_RECIPE_GF:
    if (ctx_dim > 0)
      return nf_fail(NF_EINVAL, "nf_recipe_build: recipe '%s' has no layer that takes a "
                     "context, so it cannot model p(x | y); use realnvp, nice, glow, maf, iaf, "
                     "nsf, nsf-coupling or resflow", nf_recipe_name(r->kind));
    if (r->kind == NF_RECIPE_GF) {
      if (!(st = push(flow, nf_gaussianization_new(dim, r->components, rng))))
        st = push(flow, nf_linear_lu_new(dim, NULL, NF_DIAG_EXP, rng));
      return st;
    }
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

/* a + b, SIZE_MAX if either is SIZE_MAX or the sum overflows. */
static size_t add_params(size_t a, size_t b)
{
  size_t s;
  return a == SIZE_MAX || b == SIZE_MAX || nf_size_add(a, b, &s) ? SIZE_MAX : s;
}

/* Parameters of one block of the recipe (an upper bound: both coupling
   halves rounded up; nice's final affine apart); SIZE_MAX on overflow. */
static size_t block_params(size_t dim, size_t ctx_dim, const nf_recipe *r)
{
  size_t half = dim / 2 + dim % 2, lu = SIZE_MAX, spline_raw = SIZE_MAX, gf = SIZE_MAX;
  if (!nf_size_mul(dim, dim + 1, &lu) && r->bins <= SIZE_MAX / 3) spline_raw = 3 * r->bins - 1;
  if (r->components <= SIZE_MAX / 3) nf_size_mul(dim, 3 * r->components, &gf);
  switch (r->kind) {
  case NF_RECIPE_REALNVP: return conditioner_params(half, ctx_dim, half, 2, r);
  case NF_RECIPE_NICE: return conditioner_params(half, ctx_dim, half, 1, r);
  case NF_RECIPE_NSF_COUPLING: return conditioner_params(half, ctx_dim, half, spline_raw, r);
  case NF_RECIPE_GLOW: /* actnorm 2 dim, LU, affine coupling */
    return add_params(add_params(conditioner_params(half, ctx_dim, half, 2, r), lu), 2 * dim);
  case NF_RECIPE_MAF:
  case NF_RECIPE_IAF: return conditioner_params(dim, ctx_dim, dim, 2, r);
  case NF_RECIPE_NSF: return conditioner_params(dim, ctx_dim, dim, spline_raw, r);
  case NF_RECIPE_GF: return add_params(gf, lu);
  case NF_RECIPE_RESFLOW: return add_params(conditioner_params(dim, ctx_dim, dim, 1, r), 2 * dim);
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
  if ((unsigned)recipe->mixing > NF_MIXING_NONE) {
    nf_fail(NF_EINVAL, "%s: unknown mixing %d", fn, (int)recipe->mixing);
    return NULL;
  }
  if (recipe->lattice && (recipe->lattice < 2 || recipe->lattice > dim / recipe->lattice ||
                          recipe->lattice * recipe->lattice != dim)) {
    nf_fail(NF_EDIM, "%s: a %zu x %zu lattice does not fill R^%zu", fn, recipe->lattice,
            recipe->lattice, dim);
    return NULL;
  }
  int spline = recipe->kind == NF_RECIPE_NSF || recipe->kind == NF_RECIPE_NSF_COUPLING;
  if ((spline && recipe->bins == 0) || (recipe->kind == NF_RECIPE_GF && recipe->components == 0)) {
    nf_fail(NF_EINVAL, "%s: recipe '%s' needs %s >= 1", fn, nf_recipe_name(recipe->kind),
            spline ? "bins" : "components");
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
