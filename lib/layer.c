/* lib/layer.c — layer creation and the checked entry points of the layer interface. */
#include <stdlib.h>

#include "internal.h"
#include "nflow/layer.h"

nf_layer *nf_layer_create(const nf_layer_type *type, size_t dim, size_t ctx_dim,
                          size_t n_params, void *data)
{
  nf_layer *layer = calloc(1, sizeof *layer);
  double *storage = nf_dalloc(2 * n_params);
  if (!layer || !storage) {
    free(layer);
    free(storage);
    if (type && type->destroy) type->destroy(data);
    nf_fail(NF_ENOMEM, "nf_layer_create: out of memory");
    return NULL;
  }
  layer->type = type;
  layer->dim = dim;
  layer->ctx_dim = ctx_dim;
  layer->n_params = n_params;
  layer->storage = storage;
  layer->params = storage;
  layer->grad = storage + n_params;
  layer->data = data;
  return layer;
}

void nf_layer_free(nf_layer *layer)
{
  if (!layer) return;
  if (layer->type && layer->type->destroy) layer->type->destroy(layer->data);
  free(layer->storage);
  free(layer);
}

size_t nf_layer_work_size(const nf_layer *layer, size_t n)
{
  if (!layer || !layer->type->work_size) return 0;
  return layer->type->work_size(layer, n);
}

double *nf_layer_work_new(const nf_layer *layer, size_t n)
{
  double *work = nf_dalloc(nf_layer_work_size(layer, n));
  if (!work) nf_fail(NF_ENOMEM, "nf_layer_work_new: out of memory for %zu rows", n);
  return work;
}

void nf_layer_work_free(const nf_layer *layer, size_t n, double *work)
{
  if (!work) return;
  if (layer && layer->type->work_release) layer->type->work_release(layer, n, work);
  free(work);
}

/* Argument checks common to apply and vjp. */
static nf_status check_call(const char *fn, const nf_layer *layer, nf_dir dir, size_t n,
                            const double *in, const double *ctx, const double *work)
{
  if (!layer) return nf_fail(NF_EINVAL, "%s: layer is NULL", fn);
  if (dir != NF_FORWARD && dir != NF_INVERSE)
    return nf_fail(NF_EINVAL, "%s: direction %d is neither NF_FORWARD nor NF_INVERSE", fn, (int)dir);
  if (n == 0) return nf_fail(NF_EINVAL, "%s: batch size n is 0", fn);
  if (!in) return nf_fail(NF_EINVAL, "%s: input array is NULL", fn);
  if (layer->ctx_dim > 0 && !ctx)
    return nf_fail(NF_EINVAL, "%s: layer '%s' needs a context of width %zu, got NULL", fn,
                   layer->type->name, layer->ctx_dim);
  if (!work && nf_layer_work_size(layer, n) > 0)
    return nf_fail(NF_EINVAL, "%s: workspace is NULL (needs %zu doubles)", fn,
                   nf_layer_work_size(layer, n));
  size_t bad = nf_first_nonfinite(n * layer->dim, in);
  if (bad < n * layer->dim)
    return nf_fail(NF_ENONFINITE, "%s: input row %zu, column %zu is not finite", fn,
                   bad / layer->dim, bad % layer->dim);
  if (layer->ctx_dim > 0) {
    bad = nf_first_nonfinite(n * layer->ctx_dim, ctx);
    if (bad < n * layer->ctx_dim)
      return nf_fail(NF_ENONFINITE, "%s: context row %zu, column %zu is not finite", fn,
                     bad / layer->ctx_dim, bad % layer->ctx_dim);
  }
  return NF_OK;
}

nf_status nf_layer_apply(const nf_layer *layer, nf_dir dir, size_t n,
                         const double *in, const double *ctx,
                         double *out, double *logdet, double *work)
{
  nf_status st = check_call("nf_layer_apply", layer, dir, n, in, ctx, work);
  if (st) return st;
  if (!out) return nf_fail(NF_EINVAL, "nf_layer_apply: output array is NULL");
  if (out == in) return nf_fail(NF_EINVAL, "nf_layer_apply: output aliases input");
  return layer->type->apply(layer, dir, n, in, ctx, out, logdet, work);
}

nf_status nf_layer_vjp(const nf_layer *layer, nf_dir dir, size_t n,
                       const double *in, const double *ctx, const double *out,
                       const double *g_out, const double *g_logdet,
                       double *g_in, double *g_ctx, double *work)
{
  nf_status st = check_call("nf_layer_vjp", layer, dir, n, in, ctx, work);
  if (st) return st;
  if (!out || !g_out) return nf_fail(NF_EINVAL, "nf_layer_vjp: out or g_out is NULL");
  return layer->type->vjp(layer, dir, n, in, ctx, out, g_out, g_logdet, g_in, g_ctx, work);
}
