/* lib/core/layer.c — layer creation, the checked entry points of the layer
   interface, and the registry of families that model files load by name. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/layer_impl.h"

nf_layer *nf_layer_create(const nf_layer_type *type, size_t dim, size_t ctx_dim,
                          size_t n_params, void *data)
{
  const char *fn = "nf_layer_create";
  nf_status st = NF_OK;
  if (!type || !type->apply || !type->name)
    st = nf_fail(NF_EINVAL, "%s: the layer type is NULL or has no name or apply", fn);
  else if (dim == 0)
    st = nf_fail(NF_EINVAL, "%s: layer '%s' has dimension 0", fn, type->name);
  else if (nf_size_mul(n_params, sizeof(double), &(size_t){0}))
    st = nf_fail(NF_EINVAL, "%s: layer '%s' with %zu parameters overflows the address space",
                 fn, type->name, n_params);
  nf_layer *layer = st ? NULL : calloc(1, sizeof *layer);
  double *init = layer ? nf_dalloc(n_params) : NULL;
  if (!layer || !init) {
    free(layer);
    if (type && type->destroy) type->destroy(data);
    if (!st) nf_fail(NF_ENOMEM, "%s: out of memory for %zu parameters", fn, n_params);
    return NULL;
  }
  layer->type = type;
  layer->dim = dim;
  layer->ctx_dim = ctx_dim;
  layer->n_params = n_params;
  layer->init = init;
  layer->data = data;
  return layer;
}

void nf_layer_free(nf_layer *layer)
{
  if (!layer) return;
  if (layer->in_flow) {
    nf_fail(NF_ESTATE, "nf_layer_free: layer '%s' belongs to a flow, which frees it",
            layer->type->name);
    return;
  }
  if (layer->type->destroy) layer->type->destroy(layer->data);
  free(layer->init);
  free(layer);
}

const char *nf_layer_name(const nf_layer *layer) { return layer ? layer->type->name : ""; }
size_t nf_layer_dim(const nf_layer *layer) { return layer ? layer->dim : 0; }
size_t nf_layer_ctx_dim(const nf_layer *layer) { return layer ? layer->ctx_dim : 0; }
size_t nf_layer_n_params(const nf_layer *layer) { return layer ? layer->n_params : 0; }
const double *nf_layer_init_params(const nf_layer *layer) { return layer ? layer->init : NULL; }

nf_status nf_layer_check_params(const nf_layer *layer, const double *theta)
{
  if (!layer || (!theta && layer->n_params))
    return nf_fail(NF_EINVAL, "nf_layer_check_params: layer or theta is NULL");
  size_t bad = nf_first_nonfinite(layer->n_params, theta);
  if (bad < layer->n_params)
    return nf_fail(NF_ENONFINITE, "layer '%s': parameter %zu is %g, not finite",
                   layer->type->name, bad, theta[bad]);
  return layer->type->check_params ? layer->type->check_params(layer, theta) : NF_OK;
}

size_t nf_layer_work_size(const nf_layer *layer, size_t n)
{
  if (!layer || !layer->type->work_size) return 0;
  return layer->type->work_size(layer, n);
}

double *nf_layer_work_new(const nf_layer *layer, size_t n)
{
  size_t size = nf_layer_work_size(layer, n);
  if (!layer || (layer->type->work_size && size == 0)) {
    nf_fail(NF_EINVAL, "nf_layer_work_new: layer is NULL or the workspace of %zu rows overflows", n);
    return NULL;
  }
  double *work = nf_dalloc(size);
  if (!work) nf_fail(NF_ENOMEM, "nf_layer_work_new: out of memory for %zu rows", n);
  return work;
}

void nf_layer_work_free(const nf_layer *layer, size_t n, double *work)
{
  if (!work) return;
  if (layer && layer->type->work_release) layer->type->work_release(layer, n, work);
  free(work);
}

/* NF_ENONFINITE naming the first non-finite entry of an n x w array, else NF_OK. */
static nf_status check_finite_rows(const char *fn, const char *what, size_t n, size_t w,
                                   const double *v)
{
  size_t nw = n * w; /* checked by check_call */
  size_t bad = nf_first_nonfinite(nw, v);
  if (bad < nw)
    return nf_fail(NF_ENONFINITE, "%s: %s row %zu, column %zu is not finite", fn, what,
                   bad / w, bad % w);
  return NF_OK;
}

/* Argument checks common to apply and vjp. */
static nf_status check_call(const char *fn, const nf_layer *layer, const double *theta,
                            nf_dir dir, size_t n, const double *in, const double *ctx,
                            const double *work)
{
  size_t nd;
  if (!layer) return nf_fail(NF_EINVAL, "%s: layer is NULL", fn);
  if (!theta && layer->n_params) return nf_fail(NF_EINVAL, "%s: theta is NULL", fn);
  if (dir != NF_FORWARD && dir != NF_INVERSE)
    return nf_fail(NF_EINVAL, "%s: direction %d is neither NF_FORWARD nor NF_INVERSE", fn, (int)dir);
  if (n == 0) return nf_fail(NF_EINVAL, "%s: batch size n is 0", fn);
  if (nf_count_doubles(fn, "the input", n, layer->dim, &nd) ||
      nf_count_doubles(fn, "the context", n, layer->ctx_dim, &nd))
    return NF_EINVAL;
  if (!in) return nf_fail(NF_EINVAL, "%s: input array is NULL", fn);
  if (layer->ctx_dim > 0 && !ctx)
    return nf_fail(NF_EINVAL, "%s: layer '%s' needs a context of width %zu, got NULL", fn,
                   layer->type->name, layer->ctx_dim);
  if (!work && nf_layer_work_size(layer, n) > 0)
    return nf_fail(NF_EINVAL, "%s: workspace is NULL (needs %zu doubles)", fn,
                   nf_layer_work_size(layer, n));
  nf_status st = check_finite_rows(fn, "input", n, layer->dim, in);
  if (!st && layer->ctx_dim > 0) st = check_finite_rows(fn, "context", n, layer->ctx_dim, ctx);
  return st;
}

nf_status nf_layer_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                         const double *in, const double *ctx, double *out, double *logdet,
                         const nf_apply_opts *opts, double *work)
{
  static const nf_apply_opts no_opts = {0, 0, 0.0, 0, NULL};
  nf_status st = check_call("nf_layer_apply", layer, theta, dir, n, in, ctx, work);
  if (st) return st;
  if (!out) return nf_fail(NF_EINVAL, "nf_layer_apply: output array is NULL");
  if (out == in) return nf_fail(NF_EINVAL, "nf_layer_apply: output aliases input");
  return layer->type->apply(layer, theta, dir, n, in, layer->ctx_dim ? ctx : NULL, out, logdet,
                            opts ? opts : &no_opts, work);
}

nf_status nf_layer_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                       const double *in, const double *ctx, const double *out,
                       const double *g_out, const double *g_logdet, double *g_in, double *g_ctx,
                       double *g_theta, double *work)
{
  nf_status st = check_call("nf_layer_vjp", layer, theta, dir, n, in, ctx, work);
  if (st) return st;
  if (!out || !g_out) return nf_fail(NF_EINVAL, "nf_layer_vjp: out or g_out is NULL");
  if (!layer->type->vjp)
    return nf_fail(NF_EINVAL, "nf_layer_vjp: layer '%s' has no vector-Jacobian product",
                   layer->type->name);
  int conditional = layer->ctx_dim > 0;
  return layer->type->vjp(layer, theta, dir, n, in, conditional ? ctx : NULL, out, g_out,
                          g_logdet, g_in, conditional ? g_ctx : NULL, g_theta, work);
}

/* ---- the registry of loadable families ---- */

#define NF_MAX_FAMILIES 64

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static const nf_layer_type *registry[NF_MAX_FAMILIES];
static size_t registry_count;

/* The registered type of that name; call with the lock held. */
static const nf_layer_type *find_locked(const char *name)
{
  for (size_t i = 0; i < registry_count; i++)
    if (strcmp(registry[i]->name, name) == 0) return registry[i];
  return NULL;
}

nf_status nf_layer_register(const nf_layer_type *type)
{
  if (!type || !type->name || !type->apply || !type->save || !type->load)
    return nf_fail(NF_EINVAL, "nf_layer_register: a loadable type needs a name, apply, save and load");
  nf_status st = NF_OK;
  pthread_mutex_lock(&registry_lock);
  const nf_layer_type *known = find_locked(type->name);
  if (known && known != type)
    st = nf_fail(NF_EINVAL, "nf_layer_register: another family is registered as '%s'", type->name);
  else if (!known && registry_count == NF_MAX_FAMILIES)
    st = nf_fail(NF_ENOMEM, "nf_layer_register: the registry holds %d families at most",
                 NF_MAX_FAMILIES);
  else if (!known)
    registry[registry_count++] = type;
  pthread_mutex_unlock(&registry_lock);
  return st;
}

const nf_layer_type *nf_layer_type_find(const char *name)
{
  if (!name) return NULL;
  nf_register_builtin_families();
  pthread_mutex_lock(&registry_lock);
  const nf_layer_type *type = find_locked(name);
  pthread_mutex_unlock(&registry_lock);
  return type;
}

/* Adds the library's families that can be saved to the registry. */
static void register_builtins_once(void)
{
  const nf_layer_type *builtin[] = {&nf_affine_type, &nf_permute_type, &nf_linear_lu_type,
                                    &nf_planar_type, &nf_radial_type, &nf_coupling_type,
                                    &nf_cnf_type, &nf_standardize_type, &nf_logit_type,
                                    &nf_residual_type, &nf_autoregressive_type, &nf_inverse_type,
                                    &nf_actnorm_type, &nf_gaussianization_type};
  for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
    if (builtin[i]->save && builtin[i]->load) nf_layer_register(builtin[i]);
}

void nf_register_builtin_families(void)
{
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, register_builtins_once);
}
