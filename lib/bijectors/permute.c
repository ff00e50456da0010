/* lib/permute.c — fixed coordinate permutation x[i] = z[perm[i]]; no
   parameters, log-det 0. The inverse is the gather z[j] = x[inv[j]] with
   inv = perm^-1, and each direction's vjp is the gather of the other. */
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"
#include "nflow/config.h"
#include "nflow/permute.h"

typedef struct permute_data {
  size_t *perm; /* forward gather: out[i] = in[perm[i]] */
  size_t *inv;  /* inverse gather: out[j] = in[inv[j]] */
} permute_data;

static void permute_destroy(void *data)
{
  permute_data *p = data;
  if (!p) return;
  free(p->perm);
  free(p->inv);
  free(p);
}

/* out[r, i] = in[r, idx[i]] for every row r of an n x d batch. */
static void gather_rows(size_t n, size_t d, const size_t *idx, const double *in, double *out)
{
  for (size_t r = 0; r < n; r++)
    for (size_t i = 0; i < d; i++) out[r * d + i] = in[r * d + idx[i]];
}

/* Gather with perm (forward) or inv (inverse); logdet += 0. */
static nf_status permute_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                               const double *ctx, double *out, double *logdet, const nf_apply_opts *opts, double *work)
{
  (void)theta;
  (void)ctx;
  (void)logdet;
  (void)opts;
  (void)work;
  const permute_data *p = layer->data;
  gather_rows(n, layer->dim, dir == NF_FORWARD ? p->perm : p->inv, in, out);
  return NF_OK;
}

/* g_in = P^T g_out: the gather of the opposite direction; no parameters. */
static nf_status permute_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                             const double *ctx, const double *out, const double *g_out,
                             const double *g_logdet, double *g_in, double *g_ctx, double *g_theta, double *work)
{
  (void)theta;
  (void)in;
  (void)ctx;
  (void)out;
  (void)g_logdet;
  (void)g_ctx;
  (void)g_theta;
  (void)work;
  const permute_data *p = layer->data;
  if (g_in) gather_rows(n, layer->dim, dir == NF_FORWARD ? p->inv : p->perm, g_out, g_in);
  return NF_OK;
}

/* save: the forward gather perm, as a list "perm". */
static nf_status permute_save(const nf_layer *layer, nf_config *cfg)
{
  const permute_data *p = layer->data;
  return nf_config_set_sizes(cfg, "perm", layer->dim, p->perm);
}

/* load: nf_permute_new with the saved "perm" (of exactly dim entries). */
static nf_layer *permute_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                              const nf_resolver *res)
{
  (void)ctx_dim;
  (void)res;
  size_t *perm = nf_alloc_n(dim, sizeof *perm);
  if (!perm) {
    nf_fail(NF_ENOMEM, "permute: out of memory");
    return NULL;
  }
  nf_layer *layer = nf_config_get_sizes(cfg, "perm", dim, perm) ? NULL : nf_permute_new(dim, perm);
  free(perm);
  return layer;
}

const nf_layer_type nf_permute_type = {
  .name = "permute",
  .save = permute_save,
  .load = permute_load,
  .work_size = NULL,
  .apply = permute_apply,
  .vjp = permute_vjp,
  .destroy = permute_destroy,
};

/* Writes inv = perm^-1; NF_EINVAL naming the first out-of-range or repeated entry. */
static nf_status invert_perm(size_t dim, const size_t *perm, size_t *inv)
{
  for (size_t j = 0; j < dim; j++) inv[j] = SIZE_MAX;
  for (size_t i = 0; i < dim; i++) {
    if (perm[i] >= dim)
      return nf_fail(NF_EINVAL, "nf_permute_new: perm[%zu] = %zu is out of range 0..%zu",
                     i, perm[i], dim - 1);
    if (inv[perm[i]] != SIZE_MAX)
      return nf_fail(NF_EINVAL, "nf_permute_new: perm[%zu] = %zu repeats perm[%zu]", i,
                     perm[i], inv[perm[i]]);
    inv[perm[i]] = i;
  }
  return NF_OK;
}

nf_layer *nf_permute_new(size_t dim, const size_t *perm)
{
  if (nf_check_dim("nf_permute_new", dim)) return NULL;
  if (!perm) {
    nf_fail(NF_EINVAL, "nf_permute_new: perm is NULL");
    return NULL;
  }
  permute_data *p = calloc(1, sizeof *p);
  if (p) {
    p->perm = nf_alloc_n(dim, sizeof *p->perm);
    p->inv = nf_alloc_n(dim, sizeof *p->inv);
  }
  if (!p || !p->perm || !p->inv) {
    permute_destroy(p);
    nf_fail(NF_ENOMEM, "nf_permute_new: out of memory");
    return NULL;
  }
  if (invert_perm(dim, perm, p->inv)) {
    permute_destroy(p);
    return NULL;
  }
  for (size_t i = 0; i < dim; i++) p->perm[i] = perm[i];
  return nf_layer_create(&nf_permute_type, dim, 0, 0, p);
}

/* Permute layer of 0..dim-1 shuffled by rng, or reversed when rng is NULL. */
static nf_layer *new_from_order(const char *fn, size_t dim, nf_rng *rng)
{
  if (nf_check_dim(fn, dim)) return NULL;
  size_t *perm = nf_alloc_n(dim, sizeof *perm);
  if (!perm) {
    nf_fail(NF_ENOMEM, "%s: out of memory", fn);
    return NULL;
  }
  for (size_t i = 0; i < dim; i++) perm[i] = rng ? i : dim - 1 - i;
  if (rng) nf_rng_shuffle(rng, dim, perm);
  nf_layer *layer = nf_permute_new(dim, perm);
  free(perm);
  return layer;
}

nf_layer *nf_permute_reverse_new(size_t dim)
{
  return new_from_order("nf_permute_reverse_new", dim, NULL);
}

nf_layer *nf_reverse_new(size_t dim)
{
  return new_from_order("nf_reverse_new", dim, NULL);
}

nf_layer *nf_permute_random_new(size_t dim, nf_rng *rng)
{
  if (!rng) {
    nf_fail(NF_EINVAL, "nf_permute_random_new: rng is NULL");
    return NULL;
  }
  return new_from_order("nf_permute_random_new", dim, rng);
}
