/* lib/core/flow.c — base distribution + chain of layers over one flat
   parameter vector, evaluated through plan-once workspaces.

   Sampling order: z ~ p0, then layer 0, 1, ..., K-1 forward gives x.
   Density: log p(x) = log p0(z) + sum_k logdet_k, z and logdet_k from the
   inverse pass K-1, ..., 0 (each logdet for the direction applied). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/flow.h"
#include "nflow/layer_impl.h"
#include "nflow/pool.h"

/* Rows per chunk of the convenience inference calls: bounds their memory
   whatever n is; 256 rows keep a chunk's activations in cache while dgemm
   still runs at full speed (RealNVP log_prob at batch 1e5, bench_realnvp:
   0.49 M points/s at 256 rows against 0.38 at 4096 and 0.45 at 1024). */
#define NF_FLOW_CHUNK 256

/* A threaded workspace splits a batch (or chunk) only when every slice gets
   at least this many rows; smaller batches run inline on its own buffers,
   where the pool's wake-up would cost more than the rows. */
#define NF_FLOW_MIN_SLICE 8

static const double LOG_2PI = 1.83787706640934548356;

struct nf_flow {
  size_t dim, ctx_dim;
  nf_base base;
  size_t n_layers, layers_cap;
  nf_layer **layers;
  size_t *offset;        /* layers_cap + 1 offsets into theta; offset[0] = base parameters */
  size_t n_params, params_cap;
  double *params, *grad;
  unsigned long generation; /* changes with every push: invalidates workspaces */
  uint64_t seed;         /* noise of the convenience calls */
  nf_flow_ws *own;       /* workspace of the convenience calls */
  double penalty;        /* at the last nf_flow_nll_grad */
  int params_set;        /* theta was written by nf_flow_set_params (user, loader, trainer) */
  size_t threads;        /* of the own workspace; 0 means 1 */
};

/* Buffers of every layer for `rows` rows: vjp reads each layer's record. */
struct nf_flow_ws {
  const nf_flow *flow;
  unsigned long generation;
  size_t rows;
  double *states;    /* (K + 1) x rows x d: states[k] is the input of layer k in sampling order */
  double *work;      /* concatenated layer workspaces */
  size_t *work_off;  /* K + 1 offsets into work */
  double *logdet, *g_logdet; /* rows */
  double *g_a, *g_b; /* rows x d cotangents */
  double *g_ctx;     /* rows x c */
  double *g_theta;   /* n_params: staged parameter cotangents */
  /* threaded (nf_flow_ws_new_threads with T > 1): */
  size_t threads;    /* T (1 for a serial workspace) */
  nf_pool *pool;     /* T workers, or NULL */
  const nf_pool *layer_pool; /* handed to the layers: the pool when a layer couples rows */
  nf_flow_ws **child; /* T workspaces of ceil(rows / T) rows, one per slice; NULL: no split */
  double *g_slices;  /* T x n_params: each slice's gradient, summed in slice order */
  double *slice_pen; /* T: each slice's penalty share */
};

static const char *const base_names[] = {"std_normal", "diag_normal"};

const char *nf_base_name(nf_base base)
{
  return (unsigned)base < 2 ? base_names[base] : "?";
}

nf_status nf_base_parse(const char *name, nf_base *base)
{
  int i = 0;
  nf_status st = nf_parse_choice("base distribution", name, base_names, 2, base ? &i : NULL);
  if (st == NF_OK) *base = (nf_base)i;
  return st;
}

static size_t base_n_params(nf_base base, size_t dim)
{
  return base == NF_BASE_DIAG_NORMAL ? 2 * dim : 0;
}

/* Grows theta and the gradient to hold at least np parameters (doubling). */
static nf_status reserve_params(nf_flow *flow, size_t np)
{
  if (np <= flow->params_cap && flow->params) return NF_OK; /* allocated even for 0 */
  size_t cap = flow->params_cap ? flow->params_cap : 64, bytes;
  while (cap < np) cap = cap > SIZE_MAX / 2 ? np : 2 * cap;
  if (nf_size_mul(cap, sizeof(double), &bytes))
    return nf_fail(NF_ENOMEM, "nf_flow: %zu parameters overflow the address space", np);
  double *params = realloc(flow->params, bytes);
  if (params) flow->params = params;
  double *grad = params ? realloc(flow->grad, bytes) : NULL;
  if (grad) flow->grad = grad;
  if (!params || !grad) return nf_fail(NF_ENOMEM, "nf_flow: out of memory for %zu parameters", np);
  flow->params_cap = cap;
  return NF_OK;
}

/* Grows the layer list (and its offsets) to hold one more layer (doubling). */
static nf_status reserve_layers(nf_flow *flow)
{
  if (flow->n_layers < flow->layers_cap) return NF_OK;
  size_t cap = flow->layers_cap ? 2 * flow->layers_cap : 8;
  nf_layer **layers = realloc(flow->layers, cap * sizeof *layers);
  if (layers) flow->layers = layers;
  size_t *offset = layers ? realloc(flow->offset, (cap + 1) * sizeof *offset) : NULL;
  if (offset) flow->offset = offset;
  if (!layers || !offset) return nf_fail(NF_ENOMEM, "nf_flow_push: out of memory");
  flow->layers_cap = cap;
  return NF_OK;
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
  if (!flow) {
    nf_fail(NF_ENOMEM, "nf_flow_new: out of memory");
    return NULL;
  }
  flow->dim = dim;
  flow->ctx_dim = ctx_dim;
  flow->base = base;
  size_t np = base_n_params(base, dim);
  if (reserve_params(flow, np) || reserve_layers(flow)) {
    nf_flow_free(flow);
    return NULL;
  }
  memset(flow->params, 0, np * sizeof *flow->params); /* mu = 0, log_sigma = 0 */
  memset(flow->grad, 0, np * sizeof *flow->grad);
  flow->n_params = np;
  flow->offset[0] = np;
  return flow;
}

void nf_flow_free(nf_flow *flow)
{
  if (!flow) return;
  nf_flow_ws_free(flow->own);
  for (size_t k = 0; k < flow->n_layers; k++) {
    flow->layers[k]->in_flow = 0;
    nf_layer_free(flow->layers[k]);
  }
  free(flow->layers);
  free(flow->offset);
  free(flow->params);
  free(flow->grad);
  free(flow);
}

/* Frees a layer the flow was handed but could not take, and returns status. */
static nf_status refuse_layer(nf_layer *layer, nf_status status)
{
  if (layer && !layer->in_flow) nf_layer_free(layer);
  return status;
}

nf_status nf_flow_push(nf_flow *flow, nf_layer *layer)
{
  if (!flow || !layer)
    return refuse_layer(layer, nf_fail(NF_EINVAL, "nf_flow_push: flow or layer is NULL"));
  if (layer->in_flow)
    return nf_fail(NF_EINVAL, "nf_flow_push: layer '%s' already belongs to a flow",
                   layer->type->name);
  if (layer->dim != flow->dim || (layer->ctx_dim && layer->ctx_dim != flow->ctx_dim))
    return refuse_layer(layer, nf_fail(NF_EDIM,
        "nf_flow_push: layer '%s' is %zu-D with context %zu, flow is %zu-D with context %zu",
        layer->type->name, layer->dim, layer->ctx_dim, flow->dim, flow->ctx_dim));
  size_t np = flow->n_params + layer->n_params;
  if (np < flow->n_params)
    return refuse_layer(layer, nf_fail(NF_ENOMEM, "nf_flow_push: parameter count overflows"));
  nf_status st = reserve_layers(flow);
  if (!st) st = reserve_params(flow, np);
  if (st) return refuse_layer(layer, st);
  memcpy(flow->params + flow->n_params, layer->init, layer->n_params * sizeof *flow->params);
  memset(flow->grad + flow->n_params, 0, layer->n_params * sizeof *flow->grad);
  flow->n_params = np;
  layer->in_flow = 1;
  flow->layers[flow->n_layers++] = layer;
  flow->offset[flow->n_layers] = np;
  flow->generation++;
  nf_flow_ws_free(flow->own);
  flow->own = NULL;
  return NF_OK;
}

size_t nf_flow_dim(const nf_flow *flow) { return flow ? flow->dim : 0; }
size_t nf_flow_ctx_dim(const nf_flow *flow) { return flow ? flow->ctx_dim : 0; }
size_t nf_flow_n_layers(const nf_flow *flow) { return flow ? flow->n_layers : 0; }
size_t nf_flow_n_params(const nf_flow *flow) { return flow ? flow->n_params : 0; }
const double *nf_flow_params(const nf_flow *flow) { return flow ? flow->params : NULL; }
double *nf_flow_grad(nf_flow *flow) { return flow ? flow->grad : NULL; }
nf_base nf_flow_base(const nf_flow *flow) { return flow ? flow->base : NF_BASE_STD_NORMAL; }
size_t nf_flow_base_n_params(const nf_flow *flow) { return flow ? flow->offset[0] : 0; }
const double *nf_flow_base_params(const nf_flow *flow) { return flow ? flow->params : NULL; }
double nf_flow_penalty(const nf_flow *flow) { return flow ? flow->penalty : 0.0; }
void nf_flow_set_seed(nf_flow *flow, uint64_t seed) { if (flow) flow->seed = seed; }
uint64_t nf_flow_seed(const nf_flow *flow) { return flow ? flow->seed : 0; }
int nf_flow_params_fresh(const nf_flow *flow) { return flow && !flow->params_set; }

const nf_layer *nf_flow_layer(const nf_flow *flow, size_t k)
{
  return flow && k < flow->n_layers ? flow->layers[k] : NULL;
}

size_t nf_flow_param_offset(const nf_flow *flow, size_t k)
{
  return flow && k <= flow->n_layers ? flow->offset[k] : 0;
}

/* The base's parameters are finite and log_sigma keeps exp(+-log_sigma) normal. */
static nf_status check_base_params(const nf_flow *flow, const double *theta)
{
  size_t d = flow->dim, np = flow->offset[0];
  size_t bad = nf_first_nonfinite(np, theta);
  if (bad < np)
    return nf_fail(NF_ENONFINITE, "base '%s': parameter %zu (%s[%zu]) is %g, not finite",
                   nf_base_name(flow->base), bad, bad < d ? "mu" : "log_sigma", bad % d, theta[bad]);
  return np ? nf_check_log_scales("base diag_normal", "log_sigma", d, theta + d, d) : NF_OK;
}

nf_status nf_flow_check_params(const nf_flow *flow, const double *theta)
{
  if (!flow || (!theta && flow->n_params))
    return nf_fail(NF_EINVAL, "nf_flow_check_params: flow or theta is NULL");
  nf_status st = check_base_params(flow, theta);
  for (size_t k = 0; !st && k < flow->n_layers; k++)
    if ((st = nf_layer_check_params(flow->layers[k], theta + flow->offset[k]))) {
      char prefix[64];
      snprintf(prefix, sizeof prefix, "layer %zu (theta from index %zu)", k, flow->offset[k]);
      return nf_fail_prefixed(st, prefix);
    }
  return st;
}

nf_status nf_flow_set_params(nf_flow *flow, const double *theta)
{
  nf_status st = nf_flow_check_params(flow, theta);
  if (st) return st;
  if (flow->n_params && theta != flow->params)
    memmove(flow->params, theta, flow->n_params * sizeof *theta);
  flow->params_set = 1;
  return NF_OK;
}

/* ---- workspaces ---- */

void nf_flow_ws_free(nf_flow_ws *ws)
{
  if (!ws) return;
  const nf_flow *flow = ws->flow;
  for (size_t k = 0; ws->work && ws->generation == flow->generation && k < flow->n_layers; k++)
    if (flow->layers[k]->type->work_release)
      flow->layers[k]->type->work_release(flow->layers[k], ws->rows, ws->work + ws->work_off[k]);
  free(ws->states);
  free(ws->work);
  free(ws->work_off);
  free(ws->logdet);
  free(ws->g_logdet);
  free(ws->g_a);
  free(ws->g_b);
  free(ws->g_ctx);
  free(ws->g_theta);
  for (size_t s = 0; ws->child && s < ws->threads; s++) nf_flow_ws_free(ws->child[s]);
  free(ws->child);
  nf_pool_free(ws->pool);
  free(ws->g_slices);
  free(ws->slice_pen);
  free(ws);
}

/* Doubles of each buffer of a workspace of `rows` rows: states (K + 1) rows d,
   nd = rows d, nc = rows c; NF_EINVAL "fn: ... overflows" if one overflows. */
static nf_status ws_sizes(const char *fn, const nf_flow *flow, size_t rows, size_t *states,
                          size_t *nd, size_t *nc)
{
  if (nf_count_doubles(fn, "the rows", rows, flow->dim, nd) ||
      nf_count_doubles(fn, "the layers' states", *nd, flow->n_layers + 1, states) ||
      nf_count_doubles(fn, "the contexts", rows, flow->ctx_dim ? flow->ctx_dim : 1, nc))
    return NF_EINVAL;
  return NF_OK;
}

nf_flow_ws *nf_flow_ws_new(const nf_flow *flow, size_t max_rows)
{
  const char *fn = "nf_flow_ws_new";
  size_t n_states, nd, nc, total = 0, K = flow ? flow->n_layers : 0;
  if (!flow || max_rows == 0) {
    nf_fail(NF_EINVAL, "%s: flow is NULL or max_rows is 0", fn);
    return NULL;
  }
  if (ws_sizes(fn, flow, max_rows, &n_states, &nd, &nc)) return NULL;
  nf_flow_ws *ws = calloc(1, sizeof *ws);
  size_t *off = ws ? nf_alloc_n(K + 1, sizeof *off) : NULL;
  for (size_t k = 0; off && k < K; k++) {
    off[k] = total;
    size_t need = nf_layer_work_size(flow->layers[k], max_rows);
    if ((need == 0 && flow->layers[k]->type->work_size) || nf_size_add(total, need, &total))
      total = SIZE_MAX; /* a layer's workspace overflows */
  }
  if (ws) {
    ws->flow = flow;
    ws->generation = flow->generation;
    ws->rows = max_rows;
    ws->work_off = off;
    ws->threads = 1;
  }
  if (off && total == SIZE_MAX) {
    ws->generation = flow->generation + 1; /* nothing for the layers to release */
    nf_flow_ws_free(ws);
    nf_fail(NF_EINVAL, "%s: the layers' workspaces for %zu rows overflow the address space", fn,
            max_rows);
    return NULL;
  }
  if (off) {
    off[K] = total;
    ws->states = nf_dalloc(n_states);
    ws->work = nf_dalloc(total);
    ws->logdet = nf_dalloc(max_rows);
    ws->g_logdet = nf_dalloc(max_rows);
    ws->g_a = nf_dalloc(nd);
    ws->g_b = nf_dalloc(nd);
    ws->g_ctx = nf_dalloc(nc);
    ws->g_theta = nf_dalloc(flow->n_params);
  }
  if (!ws || !off || !ws->states || !ws->work || !ws->logdet || !ws->g_logdet || !ws->g_a ||
      !ws->g_b || !ws->g_ctx || !ws->g_theta) {
    if (ws) ws->generation = flow->generation + 1; /* nothing for the layers to release */
    nf_flow_ws_free(ws);
    nf_fail(NF_ENOMEM, "%s: out of memory for a workspace of %zu rows", fn, max_rows);
    return NULL;
  }
  return ws;
}

size_t nf_flow_ws_rows(const nf_flow_ws *ws) { return ws ? ws->rows : 0; }
size_t nf_flow_ws_threads(const nf_flow_ws *ws) { return ws ? ws->threads : 0; }

/* Whether a layer couples its rows (nf_layer_type.couples_rows), looking
   through the inverse wrapper (whose data is the inner layer). */
static int couples_rows(const nf_layer *layer)
{
  if (layer->type == &nf_inverse_type) return couples_rows(layer->data);
  return layer->type->couples_rows != 0;
}

/* Whether a layer of the flow couples its rows. */
static int flow_couples_rows(const nf_flow *flow)
{
  for (size_t k = 0; k < flow->n_layers; k++)
    if (couples_rows(flow->layers[k])) return 1;
  return 0;
}

/* Adds to a serial workspace the pool of T threads and, unless a layer
   couples rows, the T slice workspaces and their gradient buffers. */
static nf_status add_threads(const nf_flow *flow, nf_flow_ws *ws, size_t T)
{
  const char *fn = "nf_flow_ws_new_threads";
  ws->threads = T;
  if (!(ws->pool = nf_pool_new(T))) return nf_last_status();
  if (flow_couples_rows(flow)) {
    ws->layer_pool = ws->pool;
    return NF_OK;
  }
  size_t np = flow->n_params ? flow->n_params : 1;
  ws->child = calloc(T, sizeof *ws->child);
  ws->g_slices = nf_alloc_n(T, np * sizeof *ws->g_slices);
  ws->slice_pen = nf_dalloc(T);
  if (!ws->child || !ws->g_slices || !ws->slice_pen)
    return nf_fail(NF_ENOMEM, "%s: out of memory for %zu threads", fn, T);
  for (size_t s = 0; s < T; s++)
    if (!(ws->child[s] = nf_flow_ws_new(flow, (ws->rows + T - 1) / T))) return nf_last_status();
  return NF_OK;
}

nf_flow_ws *nf_flow_ws_new_threads(const nf_flow *flow, size_t max_rows, size_t n_threads)
{
  if (n_threads == 0 || n_threads > NF_MAX_THREADS) {
    nf_fail(NF_EINVAL, "nf_flow_ws_new_threads: %zu threads, not in [1, %d] (NF_MAX_THREADS)",
            n_threads, NF_MAX_THREADS);
    return NULL;
  }
  nf_flow_ws *ws = nf_flow_ws_new(flow, max_rows);
  if (!ws || n_threads == 1) return ws;
  if (add_threads(flow, ws, n_threads)) {
    nf_status st = nf_last_status();
    char msg[512];
    snprintf(msg, sizeof msg, "%s", nf_errmsg());
    nf_flow_ws_free(ws);
    nf_set_error(st, "%s", msg);
    return NULL;
  }
  return ws;
}

/* The flow's own workspace, grown to at least `rows` rows, with its thread count. */
static nf_status own_ws(nf_flow *flow, size_t rows)
{
  size_t T = flow->threads ? flow->threads : 1;
  if (flow->own && flow->own->rows >= rows && flow->own->threads == T) return NF_OK;
  nf_flow_ws_free(flow->own);
  flow->own = nf_flow_ws_new_threads(flow, rows, T);
  return flow->own ? NF_OK : nf_last_status();
}

nf_status nf_flow_set_threads(nf_flow *flow, size_t n_threads)
{
  if (!flow || n_threads == 0 || n_threads > NF_MAX_THREADS)
    return nf_fail(NF_EINVAL, "nf_flow_set_threads: flow is NULL or %zu threads, not in [1, %d] "
                   "(NF_MAX_THREADS)", n_threads, NF_MAX_THREADS);
  flow->threads = n_threads;
  if (flow->own && flow->own->threads != n_threads) {
    nf_flow_ws_free(flow->own);
    flow->own = NULL;
  }
  return NF_OK;
}

nf_status nf_flow_reserve(nf_flow *flow, size_t n)
{
  if (!flow || n == 0) return nf_fail(NF_EINVAL, "nf_flow_reserve: flow is NULL or n is 0");
  return own_ws(flow, n);
}

/* ---- checks ---- */

/* NF_ENONFINITE naming the first non-finite entry (global row, column) of an n x w array. */
static nf_status check_finite(const char *fn, const char *what, size_t n, size_t w,
                              const double *v)
{
  size_t bad = nf_first_nonfinite(n * w, v);
  if (bad < n * w)
    return nf_fail(NF_ENONFINITE, "%s: %s row %zu, column %zu is %g, not finite", fn, what,
                   bad / w, bad % w, v[bad]);
  return NF_OK;
}

/* Checks the arguments every call shares; x is checked for finiteness when it is an input. */
static nf_status check_call(const char *fn, const nf_flow *flow, const nf_flow_ws *ws, size_t n,
                            const double *x, int x_is_input, const double *ctx)
{
  size_t n_states, nd, nc;
  if (!flow) return nf_fail(NF_EINVAL, "%s: flow is NULL", fn);
  if (!ws) return nf_fail(NF_EINVAL, "%s: workspace is NULL", fn);
  if (ws->flow != flow || ws->generation != flow->generation)
    return nf_fail(NF_ESTATE, "%s: the workspace was made for another flow, or before the "
                   "last nf_flow_push", fn);
  if (n == 0) return nf_fail(NF_EINVAL, "%s: batch size n is 0", fn);
  if (ws_sizes(fn, flow, n, &n_states, &nd, &nc)) return NF_EINVAL;
  if (!x) return nf_fail(NF_EINVAL, "%s: %s is NULL", fn, x_is_input ? "input" : "output");
  if (flow->ctx_dim > 0 && !ctx)
    return nf_fail(NF_EINVAL, "%s: the flow is conditional (context width %zu) but ctx is NULL",
                   fn, flow->ctx_dim);
  nf_status st = x_is_input ? check_finite(fn, "x", n, flow->dim, x) : NF_OK;
  if (!st && flow->ctx_dim > 0) st = check_finite(fn, "ctx", n, flow->ctx_dim, ctx);
  return st;
}

/* NF_EINVAL unless n rows fit the workspace (the gradient calls do not chunk). */
static nf_status check_fits(const char *fn, const nf_flow_ws *ws, size_t n)
{
  if (n <= ws->rows) return NF_OK;
  return nf_fail(NF_EINVAL, "%s: %zu rows exceed the workspace's %zu (make it with "
                 "nf_flow_ws_new(flow, %zu) or split the batch)", fn, n, ws->rows, n);
}

/* ---- the base distribution ---- */

/* Adds log p0(z_i) to logp[i]: standard or diagonal normal density. */
static void base_log_prob(const nf_flow *flow, size_t n, const double *z, double *logp)
{
  size_t d = flow->dim;
  const double *mu = flow->params, *log_sigma = flow->params + d;
  int diag = flow->base == NF_BASE_DIAG_NORMAL;
  double norm = -0.5 * (double)d * LOG_2PI;
  for (size_t j = 0; diag && j < d; j++) norm -= log_sigma[j];
  for (size_t i = 0; i < n; i++) {
    double q = 0;
    for (size_t j = 0; j < d; j++) {
      double u = diag ? (z[i * d + j] - mu[j]) * exp(-log_sigma[j]) : z[i * d + j];
      q += u * u;
    }
    logp[i] += norm - 0.5 * q;
  }
}

/* Pullback of per-row cotangents w_i of log p0(z_i): with u = (z - mu)/sigma,
   g_z = -w u / sigma (written), and for the diagonal base (g_base != NULL)
   g_mu += sum_i w_i u/sigma, g_log_sigma += sum_i w_i (u^2 - 1). */
static void base_vjp(const nf_flow *flow, size_t n, const double *z, const double *w,
                     double *g_z, double *g_base)
{
  size_t d = flow->dim;
  int diag = flow->base == NF_BASE_DIAG_NORMAL;
  const double *mu = flow->params, *log_sigma = flow->params + d;
  for (size_t j = 0; j < d; j++) {
    double inv_sigma = diag ? exp(-log_sigma[j]) : 1.0, m = diag ? mu[j] : 0.0;
    double g_mu = 0, g_ls = 0;
    for (size_t i = 0; i < n; i++) {
      double u = (z[i * d + j] - m) * inv_sigma;
      g_z[i * d + j] = -w[i] * u * inv_sigma;
      g_mu += w[i] * u * inv_sigma;
      g_ls += w[i] * (u * u - 1.0);
    }
    if (diag && g_base) {
      g_base[j] += g_mu;
      g_base[d + j] += g_ls;
    }
  }
}

/* z = mu + sigma eps for the diagonal base, in place on n rows of eps. */
static void base_shift_scale(const nf_flow *flow, size_t n, double *z)
{
  size_t d = flow->dim;
  if (flow->base != NF_BASE_DIAG_NORMAL) return;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++)
      z[i * d + j] = flow->params[j] + exp(flow->params[d + j]) * z[i * d + j];
}

/* ---- passes through the chain ---- */

/* How a pass evaluates: evaluation (densities, samples: exact log-dets where
   a layer estimates them) or training (the layers' own estimators, with a
   penalty weight). */
typedef struct pass_mode {
  double penalty_weight;
  int exact;
} pass_mode;
static const pass_mode EVALUATION = {0.0, 1}, TRAINING = {1.0, 0}, TRAINING_NO_PENALTY = {0.0, 0};

/* Layer k's per-call options: its own noise key, the batch's global first
   row, and the workspace's pool when a layer couples rows. */
static nf_apply_opts layer_opts(uint64_t seed, size_t k, size_t row0, pass_mode mode,
                                const nf_flow_ws *ws)
{
  nf_apply_opts o = {nf_noise_key(seed, k), row0, mode.penalty_weight, mode.exact,
                     ws->layer_pool};
  return o;
}

/* Layer k's context: ctx, or NULL for a layer that takes none. */
static const double *layer_ctx(const nf_flow *flow, size_t k, const double *ctx)
{
  return flow->layers[k]->ctx_dim ? ctx : NULL;
}

/* Applies layer k in direction dir from states[from] to out (states[to] when out is NULL). */
static nf_status apply_layer(const nf_flow *flow, nf_flow_ws *ws, size_t k, nf_dir dir, size_t n,
                             const double *in, const double *ctx, double *out,
                             const nf_apply_opts *o)
{
  const nf_layer *layer = flow->layers[k];
  return layer->type->apply(layer, flow->params + flow->offset[k], dir, n, in,
                            layer_ctx(flow, k, ctx), out, ws->logdet, o,
                            ws->work + ws->work_off[k]);
}

/* Inverse pass of n rows from x (copied into states[K]) down to z = states[0];
   ws->logdet[i] = the sum of the inverse log-dets. */
static nf_status inverse_pass(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t row0,
                              size_t n, const double *x, const double *ctx, pass_mode mode)
{
  size_t K = flow->n_layers, nd = n * flow->dim;
  memcpy(ws->states + K * nd, x, nd * sizeof *x);
  memset(ws->logdet, 0, n * sizeof *ws->logdet);
  for (size_t k = K; k-- > 0;) {
    nf_apply_opts o = layer_opts(seed, k, row0, mode, ws);
    nf_status st = apply_layer(flow, ws, k, NF_INVERSE, n, ws->states + (k + 1) * nd, ctx,
                               ws->states + k * nd, &o);
    if (st) return st;
  }
  return NF_OK;
}

/* Forward pass of n rows from z = states[0] up to states[K];
   ws->logdet[i] = the sum of the forward log-dets. */
static nf_status forward_pass(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t row0,
                              size_t n, const double *ctx, pass_mode mode)
{
  size_t K = flow->n_layers, nd = n * flow->dim;
  memset(ws->logdet, 0, n * sizeof *ws->logdet);
  for (size_t k = 0; k < K; k++) {
    nf_apply_opts o = layer_opts(seed, k, row0, mode, ws);
    nf_status st = apply_layer(flow, ws, k, NF_FORWARD, n, ws->states + k * nd, ctx,
                               ws->states + (k + 1) * nd, &o);
    if (st) return st;
  }
  return NF_OK;
}

/* Where a chunked call writes: straight into the caller's array when one
   chunk covers the batch, else into a staging copy (all or nothing). */
static double *staging(size_t n, size_t rows, size_t width, double *final)
{
  if (!final || n <= rows) return final;
  double *s = nf_alloc_n(n, width * sizeof *s); /* n x width: checked by check_call */
  if (!s) nf_fail(NF_ENOMEM, "nf_flow: out of memory staging %zu rows", n);
  return s;
}

/* Publishes a staging copy into the caller's array on success; frees it. */
static void publish(double *stage, double *final, size_t count, nf_status st)
{
  if (!stage || stage == final) return;
  if (!st) memcpy(final, stage, count * sizeof *final);
  free(stage);
}

/* Prefixes a failure inside chunk [i0, i0 + m) with the global row range. */
static nf_status chunk_failure(nf_status st, const char *fn, size_t i0, size_t m, size_t n)
{
  char prefix[160];
  if (m == n) snprintf(prefix, sizeof prefix, "%s", fn);
  else snprintf(prefix, sizeof prefix, "%s: rows %zu to %zu", fn, i0, i0 + m - 1);
  return nf_fail_prefixed(st, prefix);
}

/* ---- threaded workspaces: a batch split into T contiguous slices ----
   Slice s of m rows is [lo(s), lo(s + 1)), a fixed function of m and T; each
   runs on its own slice workspace (worker s of the pool) with its global row
   numbers (noise, messages) and writes its disjoint part of the parent's
   buffers; gradients go to one buffer per slice, summed in slice order. */

static nf_status backward_pass(const nf_flow *flow, nf_flow_ws *ws, size_t n, const double *ctx,
                               const double *w, int want_x, double *g_ctx, double *g_theta);
static nf_status forward_backward_pass(const nf_flow *flow, nf_flow_ws *ws, size_t n,
                                       const double *ctx, const double *w, double *g_ctx,
                                       double *g_theta);
static void base_reparam_vjp(const nf_flow *flow, size_t n, const double *z, const double *g_z,
                             const double *g_log_q, double *g_base);
static double layer_penalties(const nf_flow *flow, const nf_flow_ws *ws, size_t n);

/* Whether a chunk of m rows is split across the workspace's threads. */
static int splits(const nf_flow_ws *ws, size_t m)
{
  return ws->child && m >= NF_FLOW_MIN_SLICE * ws->threads;
}

typedef enum slice_stage { SLICE_PASS, SLICE_PULLBACK, SLICE_SAMPLE_BACK } slice_stage;

/* One split call: what every slice task reads. Row pointers are the chunk's. */
typedef struct slices {
  const char *fn;
  const nf_flow *flow;
  nf_flow_ws *ws;          /* the parent */
  slice_stage stage;
  uint64_t seed;
  size_t i0, m, n;         /* the chunk's first global row and rows; the call's rows */
  nf_dir dir;              /* SLICE_PASS */
  const double *in, *ctx;  /* in: x (inverse); z is read from the parent's states[0] (forward) */
  const double *g_logp;    /* SLICE_PULLBACK: per-row cotangents, NULL: all w0 */
  double w0;
  pass_mode mode;
  int want_x, want_ctx, want_theta, want_pen;
} slices;

/* A slice's pass through the chain: inverse from in, or forward from the
   parent's z; both end states and the log-dets go to the parent (m rows). */
static nf_status slice_pass(const slices *a, nf_flow_ws *c, size_t r0, size_t ms,
                            const double *ctx)
{
  const nf_flow *flow = a->flow;
  nf_flow_ws *ws = a->ws;
  size_t d = flow->dim, K = flow->n_layers, md = a->m * d, sd = ms * d;
  nf_status st;
  if (a->dir == NF_INVERSE) {
    st = inverse_pass(flow, c, a->seed, a->i0 + r0, ms, a->in + r0 * d, ctx, a->mode);
  } else {
    memcpy(c->states, ws->states + r0 * d, sd * sizeof *c->states);
    st = forward_pass(flow, c, a->seed, a->i0 + r0, ms, ctx, a->mode);
  }
  if (st) return st;
  memcpy(ws->states + r0 * d, c->states, sd * sizeof *c->states);
  memcpy(ws->states + K * md + r0 * d, c->states + K * sd, sd * sizeof *c->states);
  memcpy(ws->logdet + r0, c->logdet, ms * sizeof *c->logdet);
  return NF_OK;
}

/* A slice's log p and pullback (nll_grad, log_prob_vjp, log_prob_grad): its
   penalty weight scaled by its share ms / n of the batch average. */
static nf_status slice_pullback(const slices *a, size_t s, nf_flow_ws *c, size_t r0, size_t ms,
                                const double *ctx)
{
  const nf_flow *flow = a->flow;
  nf_flow_ws *ws = a->ws;
  size_t d = flow->dim, np = flow->n_params, nc = ms * flow->ctx_dim;
  pass_mode mode = a->mode;
  mode.penalty_weight *= (double)ms / (double)a->n;
  nf_status st = inverse_pass(flow, c, a->seed, r0, ms, a->in + r0 * d, ctx, mode);
  if (st) return st;
  base_log_prob(flow, ms, c->states, c->logdet);
  for (size_t i = 0; i < ms; i++) c->g_logdet[i] = a->g_logp ? a->g_logp[r0 + i] : a->w0;
  double *g_theta = a->want_theta ? ws->g_slices + s * np : NULL;
  if (g_theta) memset(g_theta, 0, np * sizeof *g_theta);
  if (a->want_ctx) memset(c->g_ctx, 0, nc * sizeof *c->g_ctx);
  st = backward_pass(flow, c, ms, ctx, c->g_logdet, a->want_x, a->want_ctx ? c->g_ctx : NULL,
                     g_theta);
  if (st) return st;
  memcpy(ws->logdet + r0, c->logdet, ms * sizeof *c->logdet);
  if (a->want_x) memcpy(ws->g_a + r0 * d, c->g_a, ms * d * sizeof *c->g_a);
  if (a->want_ctx) memcpy(ws->g_ctx + r0 * flow->ctx_dim, c->g_ctx, nc * sizeof *c->g_ctx);
  if (a->want_pen) ws->slice_pen[s] = layer_penalties(flow, c, ms) * (double)ms / (double)a->n;
  return NF_OK;
}

/* A slice's pullback of a reparametrised sample after its slice_pass
   forward: g_x from the parent's ws->g_a, the log-det weights from
   ws->logdet, g_log_q from ws->g_logdet; g_ctx to the parent. */
static nf_status slice_sample_back(const slices *a, size_t s, nf_flow_ws *c, size_t r0,
                                   size_t ms, const double *ctx)
{
  const nf_flow *flow = a->flow;
  nf_flow_ws *ws = a->ws;
  size_t d = flow->dim, np = flow->n_params, nc = ms * flow->ctx_dim;
  double *g_theta = ws->g_slices + s * np;
  memset(g_theta, 0, np * sizeof *g_theta);
  memset(c->g_ctx, 0, nc * sizeof *c->g_ctx);
  memcpy(c->g_a, ws->g_a + r0 * d, ms * d * sizeof *c->g_a);
  nf_status st = forward_backward_pass(flow, c, ms, ctx, ws->logdet + r0, c->g_ctx, g_theta);
  if (st) return st;
  base_reparam_vjp(flow, ms, c->states, c->g_a, ws->g_logdet + r0, g_theta);
  memcpy(ws->g_ctx + r0 * flow->ctx_dim, c->g_ctx, nc * sizeof *c->g_ctx);
  return NF_OK;
}

/* Pool task s: slice s of the chunk on slice workspace s; failures name its global rows. */
static nf_status slice_task(size_t s, size_t worker, void *user)
{
  (void)worker;
  const slices *a = user;
  size_t T = a->ws->threads, r0 = nf_slice_lo(a->m, T, s), ms = nf_slice_lo(a->m, T, s + 1) - r0;
  nf_flow_ws *c = a->ws->child[s];
  const double *ctx = a->ctx ? a->ctx + r0 * a->flow->ctx_dim : NULL;
  nf_status st = a->stage == SLICE_PASS       ? slice_pass(a, c, r0, ms, ctx)
                 : a->stage == SLICE_PULLBACK ? slice_pullback(a, s, c, r0, ms, ctx)
                                              : slice_sample_back(a, s, c, r0, ms, ctx);
  return st ? chunk_failure(st, a->fn, a->i0 + r0, ms, a->n) : NF_OK;
}

/* Runs the slices' tasks; on success the slice gradients (when the stage
   makes them) summed in slice order into g_theta (overwritten; may be NULL). */
static nf_status run_slices(const slices *a, double *g_theta)
{
  nf_status st = nf_pool_run(a->ws->pool, a->ws->threads, slice_task, (void *)a);
  if (st || !g_theta) return st;
  size_t np = a->flow->n_params;
  memcpy(g_theta, a->ws->g_slices, np * sizeof *g_theta);
  for (size_t s = 1; s < a->ws->threads; s++)
    for (size_t p = 0; p < np; p++) g_theta[p] += a->ws->g_slices[s * np + p];
  return NF_OK;
}

/* A pass of chunk [i0, i0 + m) in direction dir (inverse from in; forward
   from states[0]), split across the threads when it is large enough: ends
   with z in states[0], x in states[K] and the log-dets in ws->logdet.
   Failures of a split pass are prefixed with the slice's rows (of n). */
static nf_status pass(const char *fn, const nf_flow *flow, nf_flow_ws *ws, uint64_t seed,
                      size_t i0, size_t m, size_t n, nf_dir dir, const double *in,
                      const double *ctx, pass_mode mode)
{
  if (!splits(ws, m)) {
    nf_status st = dir == NF_INVERSE ? inverse_pass(flow, ws, seed, i0, m, in, ctx, mode)
                                     : forward_pass(flow, ws, seed, i0, m, ctx, mode);
    return st ? chunk_failure(st, fn, i0, m, n) : NF_OK;
  }
  slices a = {.fn = fn, .flow = flow, .ws = ws, .stage = SLICE_PASS, .seed = seed, .i0 = i0,
              .m = m, .n = n, .dir = dir, .in = in, .ctx = ctx, .mode = mode};
  return run_slices(&a, NULL);
}

/* log p of n rows chunk by chunk into logp (if not NULL) and their sum into *sum. */
static nf_status log_prob_chunks(const char *fn, const nf_flow *flow, nf_flow_ws *ws,
                                 uint64_t seed, size_t n, const double *x, const double *ctx,
                                 double *logp, double *sum)
{
  size_t d = flow->dim, c = flow->ctx_dim;
  nf_status st = NF_OK;
  *sum = 0;
  for (size_t i0 = 0; !st && i0 < n; i0 += ws->rows) {
    size_t m = n - i0 < ws->rows ? n - i0 : ws->rows;
    st = pass(fn, flow, ws, seed, i0, m, n, NF_INVERSE, x + i0 * d, ctx ? ctx + i0 * c : NULL,
              EVALUATION);
    if (st) return st;
    base_log_prob(flow, m, ws->states, ws->logdet);
    for (size_t i = 0; i < m; i++) *sum += ws->logdet[i];
    if (logp) memcpy(logp + i0, ws->logdet, m * sizeof *logp);
  }
  return st;
}

nf_status nf_flow_log_prob_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                              const double *x, const double *ctx, double *logp)
{
  const char *fn = "nf_flow_log_prob";
  nf_status st = check_call(fn, flow, ws, n, x, 1, ctx);
  if (st) return st;
  if (!logp) return nf_fail(NF_EINVAL, "%s: logp is NULL", fn);
  double sum, *out = staging(n, ws->rows, 1, logp);
  if (!out) return NF_ENOMEM;
  st = log_prob_chunks(fn, flow, ws, seed, n, x, ctx, out, &sum);
  publish(out, logp, n, st);
  return st;
}

nf_status nf_flow_nll_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                         const double *x, const double *ctx, double *nll)
{
  const char *fn = "nf_flow_nll";
  nf_status st = check_call(fn, flow, ws, n, x, 1, ctx);
  if (st) return st;
  if (!nll) return nf_fail(NF_EINVAL, "%s: nll is NULL", fn);
  double sum;
  if ((st = log_prob_chunks(fn, flow, ws, seed, n, x, ctx, NULL, &sum))) return st;
  *nll = -sum / (double)n;
  return NF_OK;
}

nf_status nf_flow_sample_ws(const nf_flow *flow, nf_flow_ws *ws, nf_rng *rng, size_t n,
                            const double *ctx, double *x, double *logp)
{
  const char *fn = "nf_flow_sample";
  nf_status st = check_call(fn, flow, ws, n, x, 0, ctx);
  if (st) return st;
  if (!rng) return nf_fail(NF_EINVAL, "%s: rng is NULL", fn);
  size_t d = flow->dim, c = flow->ctx_dim, K = flow->n_layers;
  uint64_t seed = nf_rng_u64(rng);
  double *xs = staging(n, ws->rows, d, x), *ls = staging(n, ws->rows, 1, logp);
  if (!xs || (logp && !ls)) st = NF_ENOMEM;
  for (size_t i0 = 0; !st && i0 < n; i0 += ws->rows) {
    size_t m = n - i0 < ws->rows ? n - i0 : ws->rows;
    nf_rng_normal_fill(rng, m * d, ws->states);
    base_shift_scale(flow, m, ws->states);
    st = pass(fn, flow, ws, seed, i0, m, n, NF_FORWARD, NULL, ctx ? ctx + i0 * c : NULL,
              EVALUATION);
    if (st) break;
    memcpy(xs + i0 * d, ws->states + K * m * d, m * d * sizeof *xs);
    if (!ls) continue;
    for (size_t i = 0; i < m; i++) ls[i0 + i] = -ws->logdet[i];
    base_log_prob(flow, m, ws->states, ls + i0);
  }
  publish(xs, x, n * d, st);
  publish(ls, logp, n, st);
  return st;
}

nf_status nf_flow_transform_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, nf_dir dir,
                               size_t n, const double *in, const double *ctx, double *out,
                               double *logdet)
{
  const char *fn = "nf_flow_transform";
  nf_status st = check_call(fn, flow, ws, n, in, 1, ctx);
  if (st) return st;
  if (!out || out == in) return nf_fail(NF_EINVAL, "%s: out is NULL or aliases in", fn);
  if (dir != NF_FORWARD && dir != NF_INVERSE)
    return nf_fail(NF_EINVAL, "%s: direction %d is neither NF_FORWARD nor NF_INVERSE", fn, (int)dir);
  size_t d = flow->dim, c = flow->ctx_dim, K = flow->n_layers;
  double *os = staging(n, ws->rows, d, out), *ls = staging(n, ws->rows, 1, logdet);
  if (!os || (logdet && !ls)) st = NF_ENOMEM;
  for (size_t i0 = 0; !st && i0 < n; i0 += ws->rows) {
    size_t m = n - i0 < ws->rows ? n - i0 : ws->rows, md = m * d;
    const double *chunk_ctx = ctx ? ctx + i0 * c : NULL;
    if (dir == NF_FORWARD) memcpy(ws->states, in + i0 * d, md * sizeof *in);
    st = pass(fn, flow, ws, seed, i0, m, n, dir, in + i0 * d, chunk_ctx, EVALUATION);
    if (st) break;
    memcpy(os + i0 * d, ws->states + (dir == NF_FORWARD ? K * md : 0), md * sizeof *os);
    if (ls) memcpy(ls + i0, ws->logdet, m * sizeof *ls);
  }
  publish(os, out, n * d, st);
  publish(ls, logdet, n, st);
  return st;
}

/* The backward pass after inverse_pass: with per-row cotangents w of log p,
   pulls them through the base and the chain. Leaves g_x in ws->g_a (when
   want_x), ADDS into g_ctx (n x c, may be NULL) and g_theta (n_params, may be NULL). */
static nf_status backward_pass(const nf_flow *flow, nf_flow_ws *ws, size_t n, const double *ctx,
                               const double *w, int want_x, double *g_ctx, double *g_theta)
{
  size_t K = flow->n_layers, nd = n * flow->dim;
  base_vjp(flow, n, ws->states, w, ws->g_a, g_theta);
  for (size_t k = 0; k < K; k++) {
    const nf_layer *layer = flow->layers[k];
    double *g_in = k + 1 < K || want_x ? ws->g_b : NULL;
    nf_status st = layer->type->vjp(
        layer, flow->params + flow->offset[k], NF_INVERSE, n, ws->states + (k + 1) * nd,
        layer_ctx(flow, k, ctx), ws->states + k * nd, ws->g_a, w, g_in,
        layer->ctx_dim ? g_ctx : NULL, g_theta ? g_theta + flow->offset[k] : NULL,
        ws->work + ws->work_off[k]);
    if (st) return st;
    double *t = ws->g_a; ws->g_a = ws->g_b; ws->g_b = t;
  }
  return NF_OK;
}

/* The sum over layers of their penalties at the last pass, each averaged over the rows. */
static double layer_penalties(const nf_flow *flow, const nf_flow_ws *ws, size_t n)
{
  double p = 0;
  for (size_t k = 0; k < flow->n_layers; k++) {
    const nf_layer *layer = flow->layers[k];
    if (layer->type->penalty) p += layer->type->penalty(layer, n, ws->work + ws->work_off[k]);
  }
  return p;
}

/* log p of n rows into ws->logdet and the pullback of per-row cotangents
   (g_logp, or w0 for every row when NULL) through the base and the chain:
   g_x into ws->g_a (want_x), g_ctx into ws->g_ctx (want_ctx), g_theta
   OVERWRITTEN (may be NULL), *pen (may be NULL) = the layers' penalties.
   Split across the threads when the batch is large enough. */
static nf_status pullback(const char *fn, const nf_flow *flow, nf_flow_ws *ws, uint64_t seed,
                          size_t n, const double *x, const double *ctx, const double *g_logp,
                          double w0, int want_x, int want_ctx, double *g_theta, pass_mode mode,
                          double *pen)
{
  if (splits(ws, n)) {
    slices a = {.fn = fn, .flow = flow, .ws = ws, .stage = SLICE_PULLBACK, .seed = seed, .m = n,
                .n = n, .in = x, .ctx = ctx, .g_logp = g_logp, .w0 = w0, .mode = mode,
                .want_x = want_x, .want_ctx = want_ctx, .want_theta = g_theta != NULL,
                .want_pen = pen != NULL};
    nf_status st = run_slices(&a, g_theta);
    for (size_t s = 0; !st && pen && s < ws->threads; s++) *pen += ws->slice_pen[s];
    return st;
  }
  nf_status st = inverse_pass(flow, ws, seed, 0, n, x, ctx, mode);
  if (st) return st;
  base_log_prob(flow, n, ws->states, ws->logdet);
  for (size_t i = 0; i < n; i++) ws->g_logdet[i] = g_logp ? g_logp[i] : w0;
  if (want_ctx) memset(ws->g_ctx, 0, n * flow->ctx_dim * sizeof *ws->g_ctx);
  if (g_theta) memset(g_theta, 0, flow->n_params * sizeof *g_theta);
  st = backward_pass(flow, ws, n, ctx, ws->g_logdet, want_x, want_ctx ? ws->g_ctx : NULL, g_theta);
  if (st) return chunk_failure(st, fn, 0, n, n);
  if (pen) *pen = layer_penalties(flow, ws, n);
  return NF_OK;
}

nf_status nf_flow_nll_grad_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                              const double *x, const double *ctx, double *nll, double *grad,
                              double *penalty)
{
  const char *fn = "nf_flow_nll_grad";
  if (flow && grad) memset(grad, 0, flow->n_params * sizeof *grad);
  nf_status st = check_call(fn, flow, ws, n, x, 1, ctx);
  if (!st && (!nll || (!grad && flow->n_params)))
    st = nf_fail(NF_EINVAL, "%s: nll or grad is NULL", fn);
  if (!st) st = check_fits(fn, ws, n);
  double pen = 0, sum = 0;
  if (!st) st = pullback(fn, flow, ws, seed, n, x, ctx, NULL, -1.0 / (double)n, 0, 0, grad,
                         TRAINING, &pen);
  if (st) {
    if (grad) memset(grad, 0, flow->n_params * sizeof *grad);
    return st;
  }
  for (size_t i = 0; i < n; i++) sum -= ws->logdet[i];
  *nll = sum / (double)n;
  if (penalty) *penalty = pen;
  return NF_OK;
}

/* Shared body of log_prob_vjp and log_prob_grad: one pass over n rows with
   per-row cotangents g_logp (NULL: all 1); outputs written only on success,
   g_ctx added to (add_ctx) or overwritten. */
static nf_status log_prob_pullback(const char *fn, const nf_flow *flow, nf_flow_ws *ws,
                                   uint64_t seed, size_t n, const double *x, const double *ctx,
                                   const double *g_logp, double *logp, double *g_x,
                                   double *g_ctx, int add_ctx, double *g_theta, pass_mode mode)
{
  nf_status st = check_call(fn, flow, ws, n, x, 1, ctx);
  if (!st) st = check_fits(fn, ws, n);
  if (!st && g_logp) st = check_finite(fn, "g_logp", n, 1, g_logp);
  if (!st) st = pullback(fn, flow, ws, seed, n, x, ctx, g_logp, 1.0, g_x != NULL, g_ctx != NULL,
                         g_theta ? ws->g_theta : NULL, mode, NULL);
  if (st) return st;
  size_t nc = n * flow->ctx_dim, nd = n * flow->dim;
  if (logp) memcpy(logp, ws->logdet, n * sizeof *logp);
  if (g_x) memcpy(g_x, ws->g_a, nd * sizeof *g_x);
  for (size_t i = 0; g_ctx && i < nc; i++) g_ctx[i] = (add_ctx ? g_ctx[i] : 0.0) + ws->g_ctx[i];
  for (size_t p = 0; g_theta && p < flow->n_params; p++) g_theta[p] += ws->g_theta[p];
  return NF_OK;
}

nf_status nf_flow_log_prob_vjp_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                                  const double *x, const double *ctx, const double *g_logp,
                                  double *logp, double *g_x, double *g_ctx, double *g_theta)
{
  const char *fn = "nf_flow_log_prob_vjp";
  if (!g_logp) return nf_fail(NF_EINVAL, "%s: g_logp is NULL", fn);
  return log_prob_pullback(fn, flow, ws, seed, n, x, ctx, g_logp, logp, g_x, g_ctx, 1, g_theta,
                           TRAINING_NO_PENALTY);
}

nf_status nf_flow_log_prob_grad_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                                   const double *x, const double *ctx, double *logp,
                                   double *g_x, double *g_ctx)
{
  const char *fn = "nf_flow_log_prob_grad";
  if (!g_x) return nf_fail(NF_EINVAL, "%s: g_x is NULL", fn);
  return log_prob_pullback(fn, flow, ws, seed, n, x, ctx, NULL, logp, g_x, g_ctx, 0, NULL,
                           EVALUATION);
}

/* The backward pass after a forward pass of z = states[0]: pulls g_x (in
   ws->g_a) and per-row cotangents w of the summed forward log-dets down the
   chain K-1, ..., 0; leaves g_z in ws->g_a, ADDS into g_ctx and g_theta. */
static nf_status forward_backward_pass(const nf_flow *flow, nf_flow_ws *ws, size_t n,
                                       const double *ctx, const double *w, double *g_ctx,
                                       double *g_theta)
{
  size_t nd = n * flow->dim;
  for (size_t k = flow->n_layers; k-- > 0;) {
    const nf_layer *layer = flow->layers[k];
    nf_status st = layer->type->vjp(
        layer, flow->params + flow->offset[k], NF_FORWARD, n, ws->states + k * nd,
        layer_ctx(flow, k, ctx), ws->states + (k + 1) * nd, ws->g_a, w, ws->g_b,
        layer->ctx_dim ? g_ctx : NULL, g_theta + flow->offset[k], ws->work + ws->work_off[k]);
    if (st) return st;
    double *t = ws->g_a; ws->g_a = ws->g_b; ws->g_b = t;
  }
  return NF_OK;
}

/* Pullback through z = mu + sigma eps and log p0(z) = log N(eps) - sum log sigma
   for the diagonal base: g_mu += sum_i g_z, g_log_sigma += sum_i g_z (z - mu)
   + g_log_q (the explicit -1 per log sigma_j). */
static void base_reparam_vjp(const nf_flow *flow, size_t n, const double *z, const double *g_z,
                             const double *g_log_q, double *g_base)
{
  size_t d = flow->dim;
  if (flow->base != NF_BASE_DIAG_NORMAL) return;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) {
      g_base[j] += g_z[i * d + j];
      g_base[d + j] += g_z[i * d + j] * (z[i * d + j] - flow->params[j]) - g_log_q[i];
    }
}

/* The caller's cotangents of the samples into ws->g_a (g_x) and ws->g_logdet
   (g_log_q), checked finite. */
static nf_status sample_cotangents(const char *fn, const nf_flow *flow, nf_flow_ws *ws, size_t n,
                                   nf_sample_cotangent_fn cotangent, void *user)
{
  size_t d = flow->dim;
  const double *x = ws->states + flow->n_layers * n * d;
  nf_status st = cotangent(n, d, x, ws->logdet, ws->g_a, ws->g_logdet, user);
  if (st) return st;
  st = check_finite(fn, "the cotangent g_x", n, d, ws->g_a);
  return st ? st : check_finite(fn, "the cotangent g_log_q", n, 1, ws->g_logdet);
}

/* The pullback of a reparametrised sample after its forward pass, with the
   cotangents in ws->g_a (g_x), ws->logdet (of the log-dets) and ws->g_logdet
   (g_log_q): g_theta into ws->g_theta, g_ctx into ws->g_ctx (overwritten). */
static nf_status sample_pullback(const char *fn, const nf_flow *flow, nf_flow_ws *ws, size_t n,
                                 const double *ctx)
{
  if (splits(ws, n)) {
    slices a = {.fn = fn, .flow = flow, .ws = ws, .stage = SLICE_SAMPLE_BACK, .m = n, .n = n,
                .ctx = ctx};
    return run_slices(&a, ws->g_theta);
  }
  memset(ws->g_theta, 0, flow->n_params * sizeof *ws->g_theta);
  memset(ws->g_ctx, 0, n * flow->ctx_dim * sizeof *ws->g_ctx);
  nf_status st = forward_backward_pass(flow, ws, n, ctx, ws->logdet, ws->g_ctx, ws->g_theta);
  if (st) return chunk_failure(st, fn, 0, n, n);
  base_reparam_vjp(flow, n, ws->states, ws->g_a, ws->g_logdet, ws->g_theta);
  return NF_OK;
}

nf_status nf_flow_sample_grad_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                                 const double *eps, const double *ctx,
                                 nf_sample_cotangent_fn cotangent, void *user, double *x,
                                 double *log_q, double *g_ctx, double *g_theta)
{
  const char *fn = "nf_flow_sample_grad";
  nf_status st = check_call(fn, flow, ws, n, x, 0, ctx);
  if (!st && (!eps || !cotangent)) st = nf_fail(NF_EINVAL, "%s: eps or cotangent is NULL", fn);
  if (!st) st = check_finite(fn, "eps", n, flow->dim, eps);
  if (!st) st = check_fits(fn, ws, n);
  if (st) return st;
  size_t d = flow->dim, nd = n * d, nc = n * flow->ctx_dim, K = flow->n_layers;
  memcpy(ws->states, eps, nd * sizeof *eps);
  base_shift_scale(flow, n, ws->states);
  if ((st = pass(fn, flow, ws, seed, 0, n, n, NF_FORWARD, NULL, ctx, TRAINING_NO_PENALTY)))
    return st;
  for (size_t i = 0; i < n; i++) ws->logdet[i] = -ws->logdet[i];
  base_log_prob(flow, n, ws->states, ws->logdet); /* now log q(x) */
  if ((st = sample_cotangents(fn, flow, ws, n, cotangent, user))) return st;
  memcpy(x, ws->states + K * nd, nd * sizeof *x);
  if (log_q) memcpy(log_q, ws->logdet, n * sizeof *log_q);
  for (size_t i = 0; i < n; i++) ws->logdet[i] = -ws->g_logdet[i]; /* d L / d (sum of log-dets) */
  if ((st = sample_pullback(fn, flow, ws, n, ctx))) return st;
  for (size_t p = 0; g_theta && p < flow->n_params; p++) g_theta[p] += ws->g_theta[p];
  for (size_t i = 0; g_ctx && i < nc; i++) g_ctx[i] += ws->g_ctx[i];
  return NF_OK;
}

/* ---- convenience calls ---- */

/* The own workspace for an inference call of n rows (chunks of NF_FLOW_CHUNK
   rows per thread). */
static nf_status own_infer(nf_flow *flow, size_t n)
{
  if (!flow) return nf_fail(NF_EINVAL, "nf_flow: flow is NULL");
  size_t T = flow->threads ? flow->threads : 1, chunk = NF_FLOW_CHUNK * T;
  if (flow->own && flow->own->threads == T && flow->own->rows >= (n < chunk ? n : chunk))
    return NF_OK;
  return own_ws(flow, n < chunk ? (n ? n : 1) : chunk);
}

/* The own workspace for a gradient call of n rows (one pass). */
static nf_status own_train(nf_flow *flow, size_t n)
{
  if (!flow) return nf_fail(NF_EINVAL, "nf_flow: flow is NULL");
  return own_ws(flow, n ? n : 1);
}

nf_status nf_flow_log_prob(nf_flow *flow, size_t n, const double *x, const double *ctx,
                           double *logp)
{
  nf_status st = own_infer(flow, n);
  return st ? st : nf_flow_log_prob_ws(flow, flow->own, flow->seed, n, x, ctx, logp);
}

nf_status nf_flow_sample(nf_flow *flow, nf_rng *rng, size_t n, const double *ctx, double *x,
                         double *logp)
{
  nf_status st = own_infer(flow, n);
  return st ? st : nf_flow_sample_ws(flow, flow->own, rng, n, ctx, x, logp);
}

nf_status nf_flow_transform(nf_flow *flow, nf_dir dir, size_t n, const double *in,
                            const double *ctx, double *out, double *logdet)
{
  nf_status st = own_infer(flow, n);
  return st ? st : nf_flow_transform_ws(flow, flow->own, flow->seed, dir, n, in, ctx, out, logdet);
}

nf_status nf_flow_nll(nf_flow *flow, size_t n, const double *x, const double *ctx, double *nll)
{
  nf_status st = own_infer(flow, n);
  return st ? st : nf_flow_nll_ws(flow, flow->own, flow->seed, n, x, ctx, nll);
}

nf_status nf_flow_nll_grad(nf_flow *flow, size_t n, const double *x, const double *ctx,
                           double *nll)
{
  if (flow) memset(flow->grad, 0, flow->n_params * sizeof *flow->grad);
  nf_status st = own_train(flow, n);
  if (st) return st;
  double pen = 0;
  st = nf_flow_nll_grad_ws(flow, flow->own, flow->seed, n, x, ctx, nll, flow->grad, &pen);
  if (!st) flow->penalty = pen;
  return st;
}

nf_status nf_flow_sample_grad(nf_flow *flow, nf_rng *rng, size_t n, const double *ctx,
                              nf_sample_cotangent_fn cotangent, void *user, double *x,
                              double *log_q)
{
  if (!flow || !rng || n == 0)
    return nf_fail(NF_EINVAL, "nf_flow_sample_grad: flow or rng is NULL, or n is 0");
  nf_status st = own_train(flow, n);
  if (st) return st;
  size_t nd;
  if (nf_count_doubles("nf_flow_sample_grad", "the draws", n, flow->dim, &nd)) return NF_EINVAL;
  double *eps = nf_dalloc(nd);
  if (!eps) return nf_fail(NF_ENOMEM, "nf_flow_sample_grad: out of memory for %zu draws", n);
  nf_rng_normal_fill(rng, nd, eps);
  memset(flow->grad, 0, flow->n_params * sizeof *flow->grad);
  st = nf_flow_sample_grad_ws(flow, flow->own, flow->seed, n, eps, ctx, cotangent, user, x, log_q,
                              NULL, flow->grad);
  free(eps);
  return st;
}

nf_status nf_flow_log_prob_grad(nf_flow *flow, size_t n, const double *x, const double *ctx,
                                double *logp, double *g_x, double *g_ctx)
{
  nf_status st = own_train(flow, n);
  return st ? st : nf_flow_log_prob_grad_ws(flow, flow->own, flow->seed, n, x, ctx, logp, g_x, g_ctx);
}
