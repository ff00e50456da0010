/* lib/core/flow_init.c — data-dependent initialisation of a flow's layers
   (Glow's actnorm): the rows are pushed x -> z through the chain, and each
   layer with the init_from_data op sets its parameters from its input first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/flow.h"

/* NF_ENONFINITE naming the first non-finite entry of the n x w array v. */
static nf_status check_rows(const char *fn, const char *what, size_t n, size_t w, const double *v)
{
  size_t bad = nf_first_nonfinite(n * w, v); /* n * w counted by the caller */
  if (bad < n * w)
    return nf_fail(NF_ENONFINITE, "%s: %s row %zu, column %zu is %g, not finite", fn, what,
                   bad / w, bad % w, v[bad]);
  return NF_OK;
}

/* The lowest layer index with the op, or K if none has it. */
static size_t lowest_initialised(const nf_flow *flow)
{
  size_t K = nf_flow_n_layers(flow), lo = K;
  for (size_t k = 0; k < K; k++)
    if (nf_flow_layer(flow, k)->type->init_from_data) {
      lo = k;
      break;
    }
  return lo;
}

/* Layer k: its parameters from the rows `in` (if it has the op), checked,
   then out = its NF_INVERSE image when out != NULL. */
static nf_status init_layer(const nf_flow *flow, size_t k, double *theta, size_t n,
                            const double *in, const double *ctx, double *out)
{
  const nf_layer *layer = nf_flow_layer(flow, k);
  const double *lctx = layer->ctx_dim ? ctx : NULL;
  nf_status st = NF_OK;
  if (layer->type->init_from_data) {
    st = layer->type->init_from_data(layer, theta, n, in, lctx);
    if (!st) st = nf_layer_check_params(layer, theta);
  }
  if (st || !out) return st;
  double *work = nf_layer_work_new(layer, n);
  if (!work) return NF_ENOMEM;
  nf_apply_opts o = {nf_noise_key(nf_flow_seed(flow), k), 0, 0.0, 1, NULL};
  st = nf_layer_apply(layer, theta, NF_INVERSE, n, in, lctx, out, NULL, &o, work);
  nf_layer_work_free(layer, n, work);
  return st;
}

nf_status nf_flow_init_from_data(nf_flow *flow, size_t n, const double *x, const double *ctx)
{
  const char *fn = "nf_flow_init_from_data";
  size_t nd, nc;
  if (!flow || !x || n == 0) return nf_fail(NF_EINVAL, "%s: flow or x is NULL, or n is 0", fn);
  size_t d = nf_flow_dim(flow), c = nf_flow_ctx_dim(flow);
  if (c > 0 && !ctx)
    return nf_fail(NF_EINVAL, "%s: the flow is conditional (context width %zu) but ctx is NULL",
                   fn, c);
  if (nf_count_doubles(fn, "x", n, d, &nd) || nf_count_doubles(fn, "ctx", n, c, &nc))
    return NF_EINVAL;
  nf_status st = check_rows(fn, "x", n, d, x);
  if (!st && c > 0) st = check_rows(fn, "ctx", n, c, ctx);
  size_t K = nf_flow_n_layers(flow), lo = lowest_initialised(flow), np = nf_flow_n_params(flow);
  if (st || lo == K) return st;
  double *theta = nf_dalloc(np), *a = nf_alloc_n(nd, sizeof *a), *b = nf_alloc_n(nd, sizeof *b);
  if (!theta || !a || !b) st = nf_fail(NF_ENOMEM, "%s: out of memory for %zu rows", fn, n);
  else {
    memcpy(theta, nf_flow_params(flow), np * sizeof *theta);
    memcpy(a, x, nd * sizeof *a);
  }
  for (size_t k = K; !st && k-- > lo;) {
    st = init_layer(flow, k, theta + nf_flow_param_offset(flow, k), n, a, ctx, k > lo ? b : NULL);
    double *t = a;
    a = b;
    b = t;
    if (st) {
      char prefix[160];
      snprintf(prefix, sizeof prefix, "%s: layer %zu ('%s')", fn, k, nf_flow_layer(flow, k)->type->name);
      st = nf_fail_prefixed(st, prefix);
    }
  }
  if (!st) st = nf_flow_set_params(flow, theta);
  free(theta);
  free(a);
  free(b);
  return st;
}
