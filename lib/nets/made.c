/* lib/nets/made.c — MADE (Germain et al. 2015): an nf_mlp over the row
   [x, ctx] whose parameters are multiplied by fixed binary masks.

   The masks are a per-parameter 0/1 vector M (1 on biases). A call sequence
   writes P ∘ M into the workspace once (nf_made_mask), then runs the plain
   MLP on the masked parameters with one dgemm per layer; backward runs the
   MLP's backpropagation into a scratch gradient G and adds M ∘ G to g_theta,
   so masked entries receive exactly zero.

   Workspace of n rows: masked parameters (P), gradient scratch (P), in
   single precision the masked parameters as floats (P floats, converted once
   by nf_made_mask), the MLP input [x, ctx] (n x (d + c)), its cotangent
   (n x (d + c)), then the MLP's own workspace (single: nf_mlp_single_work_size,
   the float pass on the converted weights). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/made.h"

struct nf_made {
  size_t dim, ctx_dim, n_per, n_params, w_in; /* w_in = dim + ctx_dim */
  nf_mlp *net;
  size_t *order; /* order[k]: the coordinate at position k */
  double *mask;  /* n_params entries, 0 or 1 */
};

static const char *const order_names[] = {"natural", "reversed", "random"};
#define N_ORDERS (sizeof order_names / sizeof *order_names)

const char *nf_order_kind_name(nf_order_kind kind)
{
  return (unsigned)kind < N_ORDERS ? order_names[kind] : "?";
}

nf_status nf_order_kind_parse(const char *name, nf_order_kind *kind)
{
  int i = 0;
  nf_status st = nf_parse_choice("order", name, order_names, N_ORDERS, kind ? &i : NULL);
  if (st == NF_OK) *kind = (nf_order_kind)i;
  return st;
}

void nf_made_free(nf_made *made)
{
  if (!made) return;
  nf_mlp_free(made->net);
  free(made->order);
  free(made->mask);
  free(made);
}

/* order[k] for the kind: k, d-1-k, or a Fisher-Yates shuffle seeded by seed. */
static void fill_order(size_t d, nf_order_kind kind, uint64_t seed, size_t *order)
{
  for (size_t k = 0; k < d; k++) order[k] = kind == NF_ORDER_REVERSED ? d - 1 - k : k;
  if (kind == NF_ORDER_RANDOM) {
    nf_rng rng;
    nf_rng_seed(&rng, seed);
    nf_rng_shuffle(&rng, d, order);
  }
}

/* Degrees of one layer's units: inputs (coordinate j: its position + 1;
   context: 0), hidden units (hidden_degrees), output (j, k): the degree of
   coordinate j. */
static void input_degrees(const nf_made *m, const size_t *pos, size_t *deg)
{
  for (size_t j = 0; j < m->dim; j++) deg[j] = pos[j] + 1;
  for (size_t j = 0; j < m->ctx_dim; j++) deg[m->dim + j] = 0;
}

/* Hidden unit u: lo + u mod (d - lo), cycling over 1 .. d-1 (MADE, zuko), or
   over 0 .. d-1 with a context (lo = 0), so that units of degree 0, which see
   only the context, feed the first coordinate's outputs too. */
static void hidden_degrees(size_t d, size_t c, size_t width, size_t *deg)
{
  size_t lo = c == 0 && d > 1 ? 1 : 0;
  for (size_t u = 0; u < width; u++) deg[u] = lo + u % (d - lo);
}

/* M for the layer src -> tgt at p (W rows = targets, then biases = 1):
   hidden targets connect to sources of degree <= theirs, outputs (strict) to
   sources of degree < theirs (Germain et al. 2015, eq. 12-13). */
static double *layer_mask(size_t w_in, const size_t *src, size_t w_out, const size_t *tgt,
                          int strict, double *p)
{
  for (size_t v = 0; v < w_out; v++)
    for (size_t u = 0; u < w_in; u++)
      *p++ = (strict ? src[u] < tgt[v] : src[u] <= tgt[v]) ? 1.0 : 0.0;
  for (size_t v = 0; v < w_out; v++) *p++ = 1.0;
  return p;
}

/* Fills m->mask layer by layer from the degrees (scratch: two arrays of the widest layer). */
static void build_masks(nf_made *m, size_t n_hidden, const size_t *hidden, size_t *pos,
                        size_t *a, size_t *b)
{
  for (size_t k = 0; k < m->dim; k++) pos[m->order[k]] = k;
  input_degrees(m, pos, a);
  size_t w = m->w_in;
  double *p = m->mask;
  for (size_t l = 0; l < n_hidden; l++) {
    hidden_degrees(m->dim, m->ctx_dim, hidden[l], b);
    p = layer_mask(w, a, hidden[l], b, 0, p);
    memcpy(a, b, hidden[l] * sizeof *a);
    w = hidden[l];
  }
  for (size_t j = 0; j < m->dim; j++)
    for (size_t k = 0; k < m->n_per; k++) b[j * m->n_per + k] = pos[j] + 1;
  layer_mask(w, a, m->dim * m->n_per, b, 1, p);
}

nf_made *nf_made_new(size_t dim, size_t ctx_dim, size_t n_hidden, const size_t *hidden,
                     size_t n_per_dim, nf_activation act, nf_order_kind order, uint64_t seed)
{
  const char *fn = "nf_made_new";
  size_t n_out, w_in;
  if (nf_check_dim(fn, dim)) return NULL;
  if (n_per_dim == 0) {
    nf_fail(NF_EINVAL, "%s: outputs per coordinate must be > 0", fn);
    return NULL;
  }
  if (nf_size_mul(dim, n_per_dim, &n_out) || nf_size_add(dim, ctx_dim, &w_in)) {
    nf_fail(NF_EINVAL, "%s: the widths (%zu coordinates x %zu outputs, context %zu) overflow"
            "s the address space", fn, dim, n_per_dim, ctx_dim);
    return NULL;
  }
  if ((unsigned)order >= N_ORDERS) {
    nf_fail(NF_EINVAL, "%s: unknown order %d", fn, (int)order);
    return NULL;
  }
  nf_made *m = calloc(1, sizeof *m);
  if (!m) {
    nf_fail(NF_ENOMEM, "%s: out of memory", fn);
    return NULL;
  }
  m->dim = dim;
  m->ctx_dim = ctx_dim;
  m->n_per = n_per_dim;
  m->w_in = w_in;
  if (!(m->net = nf_mlp_new(w_in, n_hidden, hidden, n_out, act))) {
    nf_fail_prefixed(nf_last_status(), fn);
    nf_made_free(m);
    return NULL;
  }
  m->n_params = nf_mlp_n_params(m->net);
  size_t widest = w_in > n_out ? w_in : n_out;
  for (size_t l = 0; l < n_hidden; l++) widest = hidden[l] > widest ? hidden[l] : widest;
  size_t *scratch = nf_alloc_n(dim + 2 * widest, sizeof *scratch); /* widest < n_params */
  m->order = nf_alloc_n(dim, sizeof *m->order);
  m->mask = nf_dalloc(m->n_params);
  if (!scratch || !m->order || !m->mask) {
    free(scratch);
    nf_made_free(m);
    nf_fail(NF_ENOMEM, "%s: out of memory", fn);
    return NULL;
  }
  fill_order(dim, order, seed, m->order);
  build_masks(m, n_hidden, hidden, scratch, scratch + dim, scratch + dim + widest);
  free(scratch);
  return m;
}

size_t nf_made_dim(const nf_made *made) { return made ? made->dim : 0; }
size_t nf_made_ctx_dim(const nf_made *made) { return made ? made->ctx_dim : 0; }
size_t nf_made_n_per_dim(const nf_made *made) { return made ? made->n_per : 0; }
size_t nf_made_n_params(const nf_made *made) { return made ? made->n_params : 0; }
const size_t *nf_made_order(const nf_made *made) { return made ? made->order : NULL; }
const double *nf_made_mask_of(const nf_made *made) { return made ? made->mask : NULL; }

/* nf_mlp_init, then params ∘= M. */
void nf_made_init(const nf_made *made, nf_rng *rng, double out_scale, double *params)
{
  if (!made || !rng || !params) return;
  /* LeCun-uniform hidden layers: on a 16-D table He's 2.45x wider bound cost
     NSF 0.3 nats of test NLL against zuko (bench/tabular/README.md) */
  nf_mlp_init_lecun(made->net, rng, out_scale, params);
  for (size_t k = 0; k < made->n_params; k++) params[k] *= made->mask[k];
}

nf_status nf_made_set_precision(nf_made *made, nf_precision precision)
{
  if (!made) return nf_fail(NF_EINVAL, "nf_made_set_precision: the network is NULL");
  nf_status st = nf_mlp_set_precision(made->net, precision);
  return st ? nf_fail_prefixed(st, "nf_made_set_precision") : NF_OK;
}

nf_precision nf_made_precision(const nf_made *made)
{
  return made ? nf_mlp_precision(made->net) : NF_PRECISION_DOUBLE;
}

/* Single precision: the doubles holding the P float masked weights (0 in double). */
static size_t float_params_size(const nf_made *m)
{
  return nf_made_precision(m) == NF_PRECISION_SINGLE ? m->n_params / 2 + m->n_params % 2 : 0;
}

/* 2 P (+ P floats) + 2 n (d + c) + the MLP's workspace (single: its float pass's). */
size_t nf_made_work_size(const nf_made *made, size_t n)
{
  size_t own, rows, total;
  if (!made) return 0;
  size_t net = nf_made_precision(made) == NF_PRECISION_SINGLE
                   ? nf_mlp_single_work_size(made->net, n)
                   : nf_mlp_work_size(made->net, n);
  if (nf_size_mul(2, made->n_params, &own) || nf_size_add(own, float_params_size(made), &own) ||
      nf_size_mul3(2, n, made->w_in, &rows) || nf_size_add(own, rows, &total) ||
      nf_size_add(total, net, &total))
    return 0;
  return total;
}

/* Views of the workspace (top of the file); fparams is NULL in double. */
typedef struct made_ws {
  double *params, *g_params, *in, *g_in, *mlp;
  float *fparams;
} made_ws;

static made_ws ws_layout(const nf_made *m, size_t n, double *work)
{
  made_ws ws;
  ws.params = work;
  ws.g_params = ws.params + m->n_params;
  ws.fparams = float_params_size(m) ? (float *)(ws.g_params + m->n_params) : NULL;
  ws.in = ws.g_params + m->n_params + float_params_size(m);
  ws.g_in = ws.in + n * m->w_in;
  ws.mlp = ws.g_in + n * m->w_in;
  return ws;
}

/* work's masked parameters = theta ∘ M (and their floats in single precision). */
void nf_made_mask(const nf_made *made, const double *theta, double *work)
{
  if (!made || !theta || !work) return;
  for (size_t k = 0; k < made->n_params; k++) work[k] = theta[k] * made->mask[k];
  made_ws ws = ws_layout(made, 0, work);
  if (ws.fparams) nf_to_float(made->n_params, ws.params, ws.fparams);
}

/* y = MLP_{P∘M}([x, ctx]). */
void nf_made_forward(const nf_made *made, size_t n, const double *x, const double *ctx,
                     double *y, double *work)
{
  if (!made || n == 0 || !x || !y || !work || (made->ctx_dim && !ctx)) return;
  const size_t d = made->dim, c = made->ctx_dim, w = made->w_in;
  made_ws ws = ws_layout(made, n, work);
  for (size_t i = 0; i < n; i++) {
    memcpy(ws.in + i * w, x + i * d, d * sizeof *x);
    if (c) memcpy(ws.in + i * w + d, ctx + i * c, c * sizeof *ctx);
  }
  if (ws.fparams)
    nf_mlp_forward_single(made->net, ws.fparams, n, ws.in, y, ws.mlp);
  else
    nf_mlp_forward(made->net, ws.params, n, ws.in, y, ws.mlp);
}

/* Backpropagation through the masked MLP: g_[x, ctx] = J^T g_y; g_theta += M ∘ G. */
void nf_made_backward(const nf_made *made, size_t n, const double *g_y, double *g_x,
                      double *g_ctx, double *g_theta, double *work)
{
  if (!made || n == 0 || !g_y || !work) return;
  const size_t d = made->dim, c = made->ctx_dim, w = made->w_in;
  made_ws ws = ws_layout(made, n, work);
  int want_in = g_x || (g_ctx && c);
  if (g_theta) memset(ws.g_params, 0, made->n_params * sizeof *ws.g_params);
  double *g_in = want_in ? ws.g_in : NULL, *g_params = g_theta ? ws.g_params : NULL;
  if (ws.fparams)
    nf_mlp_backward_single(made->net, ws.fparams, n, g_y, g_in, g_params, ws.mlp);
  else
    nf_mlp_backward(made->net, ws.params, n, ws.in, g_y, g_in, g_params, ws.mlp);
  if (g_theta)
    for (size_t k = 0; k < made->n_params; k++) g_theta[k] += made->mask[k] * ws.g_params[k];
  for (size_t i = 0; want_in && i < n; i++) {
    const double *gi = ws.g_in + i * w;
    if (g_x) memcpy(g_x + i * d, gi, d * sizeof *g_x);
    if (g_ctx && c)
      for (size_t j = 0; j < c; j++) g_ctx[i * c + j] += gi[d + j];
  }
}
