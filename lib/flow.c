/* lib/flow.c — base distribution + chain of layers over one flat parameter vector.

   Sampling order: z ~ p0, then layer 0, 1, ..., K-1 forward gives x.
   Density: log p(x) = log p0(z) + sum_k logdet_k, z and logdet_k from the
   inverse pass K-1, ..., 0 (each logdet for the direction applied). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/flow.h"

/* Rows per chunk of the inference paths (log_prob, sample, nll): bounds their
   memory whatever n is, and is large enough for dgemm to run at full speed. */
#define NF_FLOW_CHUNK 4096

static const double LOG_2PI = 1.83787706640934548356;

/* Workspace of a batch size: states and records of every layer, for one pass
   that vjp then reads (training) or one chunk (inference). */
typedef struct flow_ws {
  size_t rows;      /* batch size it fits; 0 = not allocated */
  size_t n_layers;  /* layers it was laid out for */
  double *states;   /* (K + 1) x rows x d: states[k] is the input of layer k in sampling order */
  double *work;     /* concatenated layer workspaces */
  size_t *work_off; /* K + 1 offsets into work */
  double *logdet;   /* rows */
  double *g_a, *g_b;/* rows x d cotangents */
  double *g_logdet; /* rows */
} flow_ws;

struct nf_flow {
  size_t dim, ctx_dim;
  nf_base base;
  size_t n_layers, cap;
  nf_layer **layers;
  size_t n_params;
  double *params, *grad;
  flow_ws train;    /* records of all layers at once, for nll_grad */
  flow_ws infer;    /* one chunk of the inference paths: layers share one workspace */
  double penalty;   /* sum of the layers' penalties at the last nf_flow_nll_grad */
};

static size_t base_n_params(nf_base base, size_t dim)
{
  return base == NF_BASE_DIAG_NORMAL ? 2 * dim : 0;
}

nf_flow *nf_flow_new(size_t dim, size_t ctx_dim, nf_base base)
{
  if (dim == 0) {
    nf_fail(NF_EINVAL, "nf_flow_new: dimension is 0");
    return NULL;
  }
  if (base != NF_BASE_STD_NORMAL && base != NF_BASE_DIAG_NORMAL) {
    nf_fail(NF_EINVAL, "nf_flow_new: unknown base distribution %d", (int)base);
    return NULL;
  }
  nf_flow *flow = calloc(1, sizeof *flow);
  size_t np = base_n_params(base, dim);
  if (flow) {
    flow->params = nf_dalloc(np);
    flow->grad = nf_dalloc(np);
  }
  if (!flow || !flow->params || !flow->grad) {
    nf_flow_free(flow);
    nf_fail(NF_ENOMEM, "nf_flow_new: out of memory");
    return NULL;
  }
  flow->dim = dim;
  flow->ctx_dim = ctx_dim;
  flow->base = base;
  flow->n_params = np;
  return flow;
}

/* Frees a workspace, first letting each layer release what it keeps there. */
static void ws_release(const nf_flow *flow, flow_ws *ws)
{
  for (size_t k = 0; ws->work && k < ws->n_layers; k++) {
    const nf_layer *layer = flow->layers[k];
    if (layer->type->work_release)
      layer->type->work_release(layer, ws->rows, ws->work + ws->work_off[k]);
  }
  free(ws->states);
  free(ws->work);
  free(ws->work_off);
  free(ws->logdet);
  free(ws->g_a);
  free(ws->g_b);
  free(ws->g_logdet);
  memset(ws, 0, sizeof *ws);
}

void nf_flow_free(nf_flow *flow)
{
  if (!flow) return;
  ws_release(flow, &flow->train);
  ws_release(flow, &flow->infer);
  for (size_t k = 0; k < flow->n_layers; k++) nf_layer_free(flow->layers[k]);
  free(flow->layers);
  free(flow->params);
  free(flow->grad);
  free(flow);
}

/* Points every layer's params/grad views at its slice of the flat vectors. */
static void repoint_views(nf_flow *flow)
{
  size_t off = base_n_params(flow->base, flow->dim);
  for (size_t k = 0; k < flow->n_layers; k++) {
    nf_layer *layer = flow->layers[k];
    layer->params = flow->params + off;
    layer->grad = flow->grad + off;
    off += layer->n_params;
  }
}

nf_status nf_flow_push(nf_flow *flow, nf_layer *layer)
{
  if (!flow || !layer) return nf_fail(NF_EINVAL, "nf_flow_push: flow or layer is NULL");
  if (!layer->storage)
    return nf_fail(NF_EINVAL, "nf_flow_push: layer '%s' already belongs to a flow",
                   layer->type->name);
  if (layer->dim != flow->dim || layer->ctx_dim != flow->ctx_dim)
    return nf_fail(NF_EDIM, "nf_flow_push: layer '%s' is %zu-D with context %zu, flow is %zu-D with context %zu",
                   layer->type->name, layer->dim, layer->ctx_dim, flow->dim, flow->ctx_dim);
  if (flow->n_layers == flow->cap) {
    size_t cap = flow->cap ? 2 * flow->cap : 8;
    nf_layer **layers = realloc(flow->layers, cap * sizeof *layers);
    if (!layers) return nf_fail(NF_ENOMEM, "nf_flow_push: out of memory");
    flow->layers = layers;
    flow->cap = cap;
  }
  size_t np = flow->n_params + layer->n_params;
  double *params = nf_dalloc(np), *grad = nf_dalloc(np);
  if (!params || !grad) {
    free(params);
    free(grad);
    return nf_fail(NF_ENOMEM, "nf_flow_push: out of memory for %zu parameters", np);
  }
  memcpy(params, flow->params, flow->n_params * sizeof *params);
  memcpy(params + flow->n_params, layer->params, layer->n_params * sizeof *params);
  memcpy(grad, flow->grad, flow->n_params * sizeof *grad);
  free(flow->params);
  free(flow->grad);
  flow->params = params;
  flow->grad = grad;
  flow->n_params = np;
  free(layer->storage);
  layer->storage = NULL;
  ws_release(flow, &flow->train);
  ws_release(flow, &flow->infer);
  flow->layers[flow->n_layers++] = layer;
  repoint_views(flow);
  return NF_OK;
}

size_t nf_flow_dim(const nf_flow *flow) { return flow ? flow->dim : 0; }
size_t nf_flow_ctx_dim(const nf_flow *flow) { return flow ? flow->ctx_dim : 0; }
size_t nf_flow_n_layers(const nf_flow *flow) { return flow ? flow->n_layers : 0; }
size_t nf_flow_n_params(const nf_flow *flow) { return flow ? flow->n_params : 0; }
double *nf_flow_params(nf_flow *flow) { return flow ? flow->params : NULL; }
double *nf_flow_grad(nf_flow *flow) { return flow ? flow->grad : NULL; }

double nf_flow_penalty(const nf_flow *flow) { return flow ? flow->penalty : 0.0; }

nf_layer *nf_flow_layer(nf_flow *flow, size_t k)
{
  return flow && k < flow->n_layers ? flow->layers[k] : NULL;
}

/* Sizes ws for `rows` rows; `shared` lets all layers use one workspace
   (inference) instead of one each (training, where vjp reads every record). */
static nf_status ws_fit(const nf_flow *flow, flow_ws *ws, size_t rows, int shared)
{
  if (ws->rows >= rows) return NF_OK;
  ws_release(flow, ws);
  size_t K = flow->n_layers, d = flow->dim, common = 0, total = 0;
  ws->work_off = malloc((K + 1) * sizeof *ws->work_off);
  if (!ws->work_off) return nf_fail(NF_ENOMEM, "nf_flow: out of memory for workspaces");
  for (size_t k = 0; k < K; k++) /* the shared region comes first */
    if (shared && !flow->layers[k]->type->work_release) {
      size_t need = nf_layer_work_size(flow->layers[k], rows);
      common = need > common ? need : common;
      ws->work_off[k] = 0;
    }
  total = common;
  for (size_t k = 0; k < K; k++) /* then one private region per other layer */
    if (!shared || flow->layers[k]->type->work_release) {
      ws->work_off[k] = total;
      total += nf_layer_work_size(flow->layers[k], rows);
    }
  ws->work_off[K] = total;
  ws->n_layers = K;
  ws->states = nf_dalloc((K + 1) * rows * d);
  ws->work = nf_dalloc(total);
  ws->logdet = nf_dalloc(rows);
  ws->g_a = nf_dalloc(rows * d);
  ws->g_b = nf_dalloc(rows * d);
  ws->g_logdet = nf_dalloc(rows);
  if (!ws->states || !ws->work || !ws->logdet || !ws->g_a || !ws->g_b || !ws->g_logdet) {
    ws_release(flow, ws);
    return nf_fail(NF_ENOMEM, "nf_flow: out of memory for a workspace of %zu rows", rows);
  }
  ws->rows = rows;
  return NF_OK;
}

nf_status nf_flow_reserve(nf_flow *flow, size_t n)
{
  if (!flow || n == 0) return nf_fail(NF_EINVAL, "nf_flow_reserve: flow is NULL or n is 0");
  nf_status st = ws_fit(flow, &flow->train, n, 0);
  if (st) return st;
  return ws_fit(flow, &flow->infer, n < NF_FLOW_CHUNK ? n : NF_FLOW_CHUNK, 1);
}

/* Checks the arguments shared by the batch entry points; x may be an output (check_x = 0). */
static nf_status check_batch(const char *fn, const nf_flow *flow, size_t n, const double *x,
                             const double *ctx, int check_x)
{
  if (!flow) return nf_fail(NF_EINVAL, "%s: flow is NULL", fn);
  if (n == 0) return nf_fail(NF_EINVAL, "%s: batch size n is 0", fn);
  if (!x) return nf_fail(NF_EINVAL, "%s: x is NULL", fn);
  if (flow->ctx_dim > 0 && !ctx)
    return nf_fail(NF_EINVAL, "%s: the flow is conditional (context width %zu) but ctx is NULL",
                   fn, flow->ctx_dim);
  size_t bad;
  if (check_x && (bad = nf_first_nonfinite(n * flow->dim, x)) < n * flow->dim)
    return nf_fail(NF_ENONFINITE, "%s: x row %zu, column %zu is not finite", fn,
                   bad / flow->dim, bad % flow->dim);
  if (flow->ctx_dim > 0 && (bad = nf_first_nonfinite(n * flow->ctx_dim, ctx)) < n * flow->ctx_dim)
    return nf_fail(NF_ENONFINITE, "%s: ctx row %zu, column %zu is not finite", fn,
                   bad / flow->ctx_dim, bad % flow->ctx_dim);
  return NF_OK;
}

/* Adds log p0(z_i) to logp[i]: standard or diagonal normal density. */
static void base_log_prob(const nf_flow *flow, size_t n, const double *z, double *logp)
{
  size_t d = flow->dim;
  const double *mu = flow->params, *log_sigma = flow->params + d;
  int diag = flow->base == NF_BASE_DIAG_NORMAL;
  double norm = -0.5 * (double)d * LOG_2PI;
  if (diag)
    for (size_t j = 0; j < d; j++) norm -= log_sigma[j];
  for (size_t i = 0; i < n; i++) {
    double q = 0;
    for (size_t j = 0; j < d; j++) {
      double u = diag ? (z[i * d + j] - mu[j]) * exp(-log_sigma[j]) : z[i * d + j];
      q += u * u;
    }
    logp[i] += norm - 0.5 * q;
  }
}

/* Gradient of mean_i(-log p0(z_i)) + 0: g_z = (1/n) (z - mu)/sigma^2, and for the
   diagonal base the parameter gradient, written into the flow's gradient. */
static void base_nll_grad(nf_flow *flow, size_t n, const double *z, double *g_z)
{
  size_t d = flow->dim;
  int diag = flow->base == NF_BASE_DIAG_NORMAL;
  const double *mu = flow->params, *log_sigma = flow->params + d;
  double *g_mu = flow->grad, *g_log_sigma = flow->grad + d, inv_n = 1.0 / (double)n;
  for (size_t j = 0; j < d; j++) {
    double inv_var = diag ? exp(-2 * log_sigma[j]) : 1.0, m = diag ? mu[j] : 0.0;
    double sum_g = 0, sum_u2 = 0;
    for (size_t i = 0; i < n; i++) {
      double r = z[i * d + j] - m;
      g_z[i * d + j] = inv_n * r * inv_var;
      sum_g += r * inv_var;
      sum_u2 += r * r * inv_var;
    }
    if (diag) {
      g_mu[j] = -inv_n * sum_g;
      g_log_sigma[j] = 1.0 - inv_n * sum_u2;
    }
  }
}

/* Inverse pass of n rows from x (copied into states[K]) down to z = states[0];
   logdet[i] = sum of the inverse log-dets. */
static nf_status inverse_pass(nf_flow *flow, flow_ws *ws, size_t n, const double *x,
                              const double *ctx)
{
  size_t K = flow->n_layers, nd = n * flow->dim;
  memcpy(ws->states + K * nd, x, nd * sizeof *x);
  memset(ws->logdet, 0, n * sizeof *ws->logdet);
  for (size_t k = K; k-- > 0;) {
    nf_layer *layer = flow->layers[k];
    nf_status st = layer->type->apply(layer, NF_INVERSE, n, ws->states + (k + 1) * nd, ctx,
                                      ws->states + k * nd, ws->logdet,
                                      ws->work + ws->work_off[k]);
    if (st) return st;
  }
  return NF_OK;
}

/* log p(x) of n rows chunk by chunk: written to logp (if not NULL), summed into *sum. */
static nf_status log_prob_chunks(nf_flow *flow, size_t n, const double *x, const double *ctx,
                                 double *logp, double *sum)
{
  flow_ws *ws = &flow->infer;
  nf_status st = ws_fit(flow, ws, n < NF_FLOW_CHUNK ? n : NF_FLOW_CHUNK, 1);
  for (size_t i0 = 0; !st && i0 < n; i0 += NF_FLOW_CHUNK) {
    size_t m = n - i0 < NF_FLOW_CHUNK ? n - i0 : NF_FLOW_CHUNK;
    st = inverse_pass(flow, ws, m, x + i0 * flow->dim, ctx ? ctx + i0 * flow->ctx_dim : NULL);
    if (st) break;
    base_log_prob(flow, m, ws->states, ws->logdet);
    for (size_t i = 0; i < m; i++) *sum += ws->logdet[i];
    if (logp) memcpy(logp + i0, ws->logdet, m * sizeof *logp);
  }
  return st;
}

nf_status nf_flow_log_prob(nf_flow *flow, size_t n, const double *x, const double *ctx,
                           double *logp)
{
  if (!logp) return nf_fail(NF_EINVAL, "nf_flow_log_prob: logp is NULL");
  nf_status st = check_batch("nf_flow_log_prob", flow, n, x, ctx, 1);
  if (st) return st;
  double sum = 0;
  return log_prob_chunks(flow, n, x, ctx, logp, &sum);
}

nf_status nf_flow_nll(nf_flow *flow, size_t n, const double *x, const double *ctx, double *nll)
{
  if (!nll) return nf_fail(NF_EINVAL, "nf_flow_nll: nll is NULL");
  nf_status st = check_batch("nf_flow_nll", flow, n, x, ctx, 1);
  if (st) return st;
  double sum = 0;
  if ((st = log_prob_chunks(flow, n, x, ctx, NULL, &sum))) return st;
  *nll = -sum / (double)n;
  return NF_OK;
}

/* One chunk of samples: z from the base, forward through the chain. */
static nf_status sample_chunk(nf_flow *flow, nf_rng *rng, size_t n, const double *ctx,
                              double *x, double *logp)
{
  flow_ws *ws = &flow->infer;
  size_t K = flow->n_layers, d = flow->dim, nd = n * d;
  double *z = ws->states;
  nf_rng_normal_fill(rng, nd, z);
  if (flow->base == NF_BASE_DIAG_NORMAL)
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < d; j++)
        z[i * d + j] = flow->params[j] + exp(flow->params[d + j]) * z[i * d + j];
  memset(ws->logdet, 0, n * sizeof *ws->logdet);
  for (size_t k = 0; k < K; k++) {
    nf_layer *layer = flow->layers[k];
    double *out = k + 1 == K ? x : ws->states + (k + 1) * nd;
    nf_status st = layer->type->apply(layer, NF_FORWARD, n, ws->states + k * nd, ctx, out,
                                      ws->logdet, ws->work + ws->work_off[k]);
    if (st) return st;
  }
  if (K == 0) memcpy(x, z, nd * sizeof *x);
  if (logp) {
    for (size_t i = 0; i < n; i++) logp[i] = -ws->logdet[i];
    base_log_prob(flow, n, z, logp);
  }
  return NF_OK;
}

nf_status nf_flow_sample(nf_flow *flow, nf_rng *rng, size_t n, const double *ctx, double *x,
                         double *logp)
{
  if (!rng) return nf_fail(NF_EINVAL, "nf_flow_sample: rng is NULL");
  nf_status st = check_batch("nf_flow_sample", flow, n, x, ctx, 0);
  if (st) return st;
  st = ws_fit(flow, &flow->infer, n < NF_FLOW_CHUNK ? n : NF_FLOW_CHUNK, 1);
  for (size_t i0 = 0; !st && i0 < n; i0 += NF_FLOW_CHUNK) {
    size_t m = n - i0 < NF_FLOW_CHUNK ? n - i0 : NF_FLOW_CHUNK;
    st = sample_chunk(flow, rng, m, ctx ? ctx + i0 * flow->ctx_dim : NULL, x + i0 * flow->dim,
                      logp ? logp + i0 : NULL);
  }
  return st;
}

nf_status nf_flow_nll_grad(nf_flow *flow, size_t n, const double *x, const double *ctx,
                           double *nll)
{
  if (!nll) return nf_fail(NF_EINVAL, "nf_flow_nll_grad: nll is NULL");
  nf_status st = check_batch("nf_flow_nll_grad", flow, n, x, ctx, 1);
  if (st) return st;
  memset(flow->grad, 0, flow->n_params * sizeof *flow->grad);
  flow_ws *ws = &flow->train;
  if ((st = ws_fit(flow, ws, n, 0)) || (st = inverse_pass(flow, ws, n, x, ctx))) return st;
  size_t K = flow->n_layers, nd = n * flow->dim;
  base_log_prob(flow, n, ws->states, ws->logdet);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum -= ws->logdet[i];
  flow->penalty = 0;
  for (size_t k = 0; k < K; k++)
    if (flow->layers[k]->type->penalty)
      flow->penalty += flow->layers[k]->type->penalty(flow->layers[k], n, ws->work + ws->work_off[k]);
  base_nll_grad(flow, n, ws->states, ws->g_a);
  for (size_t i = 0; i < n; i++) ws->g_logdet[i] = -1.0 / (double)n;
  for (size_t k = 0; k < K; k++) {
    nf_layer *layer = flow->layers[k];
    double *g_in = k + 1 < K ? ws->g_b : NULL;
    st = layer->type->vjp(layer, NF_INVERSE, n, ws->states + (k + 1) * nd, ctx,
                          ws->states + k * nd, ws->g_a, ws->g_logdet, g_in, NULL,
                          ws->work + ws->work_off[k]);
    if (st) {
      memset(flow->grad, 0, flow->n_params * sizeof *flow->grad);
      return st;
    }
    double *t = ws->g_a; ws->g_a = ws->g_b; ws->g_b = t;
  }
  *nll = sum / (double)n;
  return NF_OK;
}
