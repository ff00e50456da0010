/* lib/bijectors/inverse.c — the inverse of a layer (TensorFlow Probability's
   Invert): every op delegates to the inner layer's with the direction
   exchanged (T^-1 forward, T inverse); the log-det of the direction applied
   is the inner layer's for the other direction, which is the right sign.
   The wrapper's theta is the inner layer's, so is its workspace. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "io/io_internal.h"
#include "nflow/config.h"
#include "nflow/inverse.h"

/* The other direction. */
static nf_dir swap_dir(nf_dir dir) { return dir == NF_FORWARD ? NF_INVERSE : NF_FORWARD; }

static size_t inv_work_size(const nf_layer *layer, size_t n)
{
  return nf_layer_work_size(layer->data, n);
}

/* out = inner's map in the other direction. */
static nf_status inv_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                           const double *in, const double *ctx, double *out, double *logdet,
                           const nf_apply_opts *opts, double *work)
{
  const nf_layer *inner = layer->data;
  return inner->type->apply(inner, theta, swap_dir(dir), n, in, ctx, out, logdet, opts, work);
}

/* The inner layer's vjp of the other direction. */
static nf_status inv_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                         const double *in, const double *ctx, const double *out,
                         const double *g_out, const double *g_logdet, double *g_in, double *g_ctx,
                         double *g_theta, double *work)
{
  const nf_layer *inner = layer->data;
  if (!inner->type->vjp)
    return nf_fail(NF_EINVAL, "inverse: layer '%s' has no vector-Jacobian product",
                   inner->type->name);
  return inner->type->vjp(inner, theta, swap_dir(dir), n, in, ctx, out, g_out, g_logdet, g_in,
                          g_ctx, g_theta, work);
}

static void inv_destroy(void *data)
{
  nf_layer *inner = data;
  if (inner) inner->in_flow = 0; /* owned by the wrapper, not a flow */
  nf_layer_free(inner);
}

static void inv_work_release(const nf_layer *layer, size_t n, double *work)
{
  const nf_layer *inner = layer->data;
  if (inner->type->work_release) inner->type->work_release(inner, n, work);
}

static double inv_penalty(const nf_layer *layer, size_t n, const double *work)
{
  const nf_layer *inner = layer->data;
  return inner->type->penalty ? inner->type->penalty(inner, n, work) : 0.0;
}

static nf_status inv_check_params(const nf_layer *layer, const double *theta)
{
  const nf_layer *inner = layer->data;
  return inner->type->check_params ? inner->type->check_params(inner, theta) : NF_OK;
}

/* Configuration keys: "inner" (the inner layer's type name) and "inner_config"
   (its configuration, nested: nf_config_set_config). */
static nf_status inv_save(const nf_layer *layer, nf_config *cfg)
{
  const nf_layer *inner = layer->data;
  if (!inner->type->save)
    return nf_fail(NF_EINVAL, "inverse: layer '%s' cannot be saved: its family has no save "
                   "operation", inner->type->name);
  nf_config *sub = nf_config_new();
  if (!sub) return NF_ENOMEM;
  nf_status st = inner->type->save(inner, sub);
  if (!st) st = nf_config_set_string(cfg, "inner", inner->type->name);
  if (!st) st = nf_config_set_config(cfg, "inner_config", sub);
  nf_config_free(sub);
  return st ? nf_fail_prefixed(st, "inverse") : NF_OK;
}

/* Rebuilds the inner layer through the registry, then wraps it. */
static nf_layer *inv_load(size_t dim, size_t ctx_dim, const nf_config *cfg, const nf_resolver *res)
{
  const char *name = NULL;
  nf_config *sub = NULL;
  const nf_layer_type *type = NULL;
  nf_layer *inner = NULL;
  if (nf_config_get_string(cfg, "inner", &name) || nf_config_get_config(cfg, "inner_config", &sub))
    nf_fail_prefixed(nf_last_status(), "inverse");
  else if (!(type = nf_layer_type_find(name)))
    nf_fail(NF_EFORMAT, "inverse: config key 'inner': unknown family '%s'", name);
  else if (!(inner = type->load(dim, ctx_dim, sub, res)))
    nf_fail_prefixed(nf_last_status(), "inverse");
  nf_config_free(sub);
  return inner ? nf_inverse_new(inner) : NULL;
}

const nf_layer_type nf_inverse_type = {
  .name = "inverse",
  .work_size = inv_work_size,
  .apply = inv_apply,
  .vjp = inv_vjp,
  .destroy = inv_destroy,
  .work_release = inv_work_release,
  .penalty = inv_penalty,
  .check_params = inv_check_params,
  .save = inv_save,
  .load = inv_load,
};

nf_layer *nf_inverse_new(nf_layer *inner)
{
  if (!inner) {
    nf_fail(NF_EINVAL, "nf_inverse_new: inner layer is NULL");
    return NULL;
  }
  if (inner->in_flow) {
    nf_fail(NF_EINVAL, "nf_inverse_new: layer '%s' belongs to a flow", inner->type->name);
    return NULL;
  }
  inner->in_flow = 1; /* nf_layer_free on it alone now refuses: the wrapper owns it */
  nf_layer *layer = nf_layer_create(&nf_inverse_type, inner->dim, inner->ctx_dim,
                                    inner->n_params, inner);
  if (!layer) return NULL; /* nf_layer_create destroyed inner */
  if (inner->n_params) memcpy(layer->init, inner->init, inner->n_params * sizeof *layer->init);
  return layer;
}

const nf_layer *nf_inverse_inner(const nf_layer *layer)
{
  return layer && layer->type == &nf_inverse_type ? layer->data : NULL;
}
