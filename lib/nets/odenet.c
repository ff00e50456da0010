/* lib/odenet.c — the CNF dynamics network f(t, z; theta) (FFJORD, Grathwohl et
   al. 2018) with forward-mode tangents, the exact / Hutchinson trace, the RNODE
   regularisers (Finlay et al. 2020) and reverse mode over all of it.

   Every layer l (p inputs, q outputs) is written as
       a = gamma(t) * (W h) + beta(t)        (per output unit)
   concatsquash: gamma = sigmoid(w_g t + b_g), beta = gamma b + w_b t;
   concat:       gamma = 1, beta = w_t t + b;
   sinusoidal:   gamma = 1, beta = U e(t) + b.
   So a tangent (directional derivative along d in z-space) obeys
   a' = gamma * (W h'), h' = act'(a) * a', and one dgemm per layer serves the
   primal rows and the tangent rows together.

   Workspace (one call; nothing kept between calls), rows = n (1 + m) for m
   tangent directions per sample (0, 1 or dim), row r < n the primal of sample
   r, row n + i m + k direction k of sample i:
     per layer l: X_l (rows x x_l; layer 0 holds z and the directions, without
                  the context), U_l = X_l W_l^T (rows x q_l);
     Y (rows x dim): f and the tangent outputs J d;
     D1, D2 (n x q_l per layer): act'(a_l), act''(a_l) of the primal rows;
     gamma, beta (q_l per layer);
     two cotangent buffers (rows x widest) and g_gamma, g_beta (widest).
   Reverse pass, with G = dS/dA_l (primal and tangent rows):
     dS/dgamma = sum over all rows of G * U_l, dS/dbeta = sum over primal rows of G,
     G <- gamma * G, dS/dW += G^T X_l, dS/dX_l = G W_l, and through the
     activation of the layer below (h = act(a), h' = act'(a) a'):
     dS/da' = act'(a) dS/dh',  dS/da = act'(a) dS/dh + act''(a) sum_k a'_k dS/dh'_k. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/odenet.h"

/* Activation code of the output layer: the identity. */
#define ACT_NONE (-1)

struct nf_odenet {
  size_t dim, ctx_dim;
  size_t n_layers;     /* affine layers: n_hidden + 1 */
  size_t *width;       /* n_layers + 1 widths: dim, hidden..., dim */
  size_t *param_off;   /* n_layers: start of layer l (its W) in theta */
  size_t *xu_off;      /* n_layers + 1: doubles per row of X_k, U_k for k < l */
  size_t *q_off;       /* n_layers + 1: sum of the output widths of layers k < l */
  nf_odenet_kind kind;
  nf_odenet_act act;
  size_t n_params;
  size_t max_width;    /* widest of dim + ctx_dim and every width */
};

/* The workspace of one call, cut into the buffers described above. */
typedef struct frame {
  size_t n, m, rows;
  double *xu, *y, *d1, *d2, *gamma, *beta, *g[2], *g_gamma, *g_beta;
} frame;

/* ---- shape ---- */

/* Inputs p of layer l (layer 0 also reads the context). */
static size_t in_width(const nf_odenet *net, size_t l)
{
  return net->width[l] + (l == 0 ? net->ctx_dim : 0);
}

/* Time parameters of a layer with q outputs (layout in odenet.h). */
static size_t time_param_count(nf_odenet_kind kind, size_t q)
{
  switch (kind) {
  case NF_ODENET_CONCATSQUASH: return 4 * q;
  case NF_ODENET_CONCAT: return 2 * q;
  case NF_ODENET_SINUSOIDAL: return (2 * NF_ODENET_N_FREQ + 1) * q;
  }
  return 0;
}

/* Fills the offset tables and n_params (sum over layers of p q + time
   parameters); NF_EINVAL if a count or its bytes overflow size_t. */
static nf_status set_offsets(nf_odenet *net)
{
  size_t bytes, pq, size, p;
  if (nf_size_add(net->dim, net->ctx_dim, &net->max_width)) return NF_EINVAL;
  for (size_t l = 0; l < net->n_layers; l++) {
    size_t q = net->width[l + 1];
    if (nf_size_add(net->width[l], l == 0 ? net->ctx_dim : 0, &p) ||
        nf_size_mul(2 * NF_ODENET_N_FREQ + 1, q, &size) || nf_size_mul(p, q, &pq) ||
        nf_size_add(pq, time_param_count(net->kind, q), &pq) ||
        nf_size_add(net->n_params, pq, &net->n_params) ||
        nf_size_mul(net->n_params, 4 * sizeof(double), &bytes) ||
        nf_size_add(net->xu_off[l], net->width[l] + q, &net->xu_off[l + 1]) ||
        nf_size_add(net->q_off[l], q, &net->q_off[l + 1]))
      return NF_EINVAL;
    net->param_off[l] = net->n_params - pq;
    if (q > net->max_width) net->max_width = q;
  }
  return NF_OK;
}

nf_odenet *nf_odenet_new(size_t dim, size_t ctx_dim, size_t n_hidden, const size_t *hidden,
                         nf_odenet_kind kind, nf_odenet_act act)
{
  if (nf_check_dim("nf_odenet_new", dim)) return NULL;
  if (n_hidden > SIZE_MAX / (4 * sizeof(double))) { /* before reading hidden[] */
    nf_fail(NF_EINVAL, "nf_odenet_new: %zu hidden layers overflows the address space", n_hidden);
    return NULL;
  }
  if (n_hidden > 0 && !hidden) {
    nf_fail(NF_EINVAL, "nf_odenet_new: %zu hidden layers but hidden widths are NULL", n_hidden);
    return NULL;
  }
  for (size_t l = 0; l < n_hidden; l++)
    if (hidden[l] == 0) {
      nf_fail(NF_EINVAL, "nf_odenet_new: hidden layer %zu has width 0", l);
      return NULL;
    }
  if ((unsigned)kind > NF_ODENET_SINUSOIDAL || (unsigned)act > NF_ODENET_SWISH) {
    nf_fail(NF_EINVAL, "nf_odenet_new: unknown layer kind %d or activation %d", (int)kind,
            (int)act);
    return NULL;
  }
  nf_odenet *net = calloc(1, sizeof *net);
  size_t n_layers = n_hidden + 1;
  if (net && n_hidden < SIZE_MAX / sizeof(size_t) - 1) {
    net->width = calloc(n_layers + 1, sizeof *net->width);
    net->param_off = calloc(n_layers, sizeof *net->param_off);
    net->xu_off = calloc(n_layers + 1, sizeof *net->xu_off);
    net->q_off = calloc(n_layers + 1, sizeof *net->q_off);
  }
  if (!net || !net->width || !net->param_off || !net->xu_off || !net->q_off) {
    nf_odenet_free(net);
    nf_fail(NF_ENOMEM, "nf_odenet_new: out of memory");
    return NULL;
  }
  net->dim = dim;
  net->ctx_dim = ctx_dim;
  net->n_layers = n_layers;
  net->kind = kind;
  net->act = act;
  net->width[0] = net->width[n_layers] = dim;
  for (size_t l = 0; l < n_hidden; l++) net->width[l + 1] = hidden[l];
  if (set_offsets(net) != NF_OK) {
    nf_odenet_free(net);
    nf_fail(NF_EINVAL, "nf_odenet_new: parameter count overflows size_t");
    return NULL;
  }
  return net;
}

void nf_odenet_free(nf_odenet *net)
{
  if (!net) return;
  free(net->width);
  free(net->param_off);
  free(net->xu_off);
  free(net->q_off);
  free(net);
}

size_t nf_odenet_dim(const nf_odenet *net) { return net ? net->dim : 0; }
size_t nf_odenet_ctx_dim(const nf_odenet *net) { return net ? net->ctx_dim : 0; }
size_t nf_odenet_n_params(const nf_odenet *net) { return net ? net->n_params : 0; }

static const char *const kind_names[] = {"concatsquash", "concat", "sinusoidal"};
static const char *const act_names[] = {"tanh", "softplus", "swish"};

const char *nf_odenet_kind_name(nf_odenet_kind kind)
{
  return (unsigned)kind < 3 ? kind_names[kind] : "?";
}

const char *nf_odenet_act_name(nf_odenet_act act)
{
  return (unsigned)act < 3 ? act_names[act] : "?";
}

nf_status nf_odenet_kind_parse(const char *name, nf_odenet_kind *kind)
{
  int k = 0;
  nf_status st = nf_parse_choice("dynamics kind", name, kind_names, 3, kind ? &k : NULL);
  if (st == NF_OK) *kind = (nf_odenet_kind)k;
  return st;
}

nf_status nf_odenet_act_parse(const char *name, nf_odenet_act *act)
{
  int k = 0;
  nf_status st = nf_parse_choice("activation", name, act_names, 3, act ? &k : NULL);
  if (st == NF_OK) *act = (nf_odenet_act)k;
  return st;
}

/* u[0..n) ~ U(-a, a). */
static void uniform_fill(nf_rng *rng, size_t n, double a, double *u)
{
  for (size_t i = 0; i < n; i++) u[i] = a * (2.0 * nf_rng_uniform(rng) - 1.0);
}

/* PyTorch nn.Linear init U(+-1/sqrt(fan_in)) per affine map (see odenet.h). */
nf_status nf_odenet_init(const nf_odenet *net, nf_rng *rng, double *params)
{
  if (!net || !rng || !params)
    return nf_fail(NF_EINVAL, "nf_odenet_init: net, rng or params is NULL");
  for (size_t l = 0; l < net->n_layers; l++) {
    size_t p = in_width(net, l), q = net->width[l + 1];
    size_t size = p * q + time_param_count(net->kind, q);
    double *theta = params + net->param_off[l];
    switch (net->kind) {
    case NF_ODENET_CONCATSQUASH:
      uniform_fill(rng, p * q + q, 1.0 / sqrt((double)p), theta);
      uniform_fill(rng, 3 * q, 1.0, theta + p * q + q);
      break;
    case NF_ODENET_CONCAT:
      uniform_fill(rng, size, 1.0 / sqrt((double)(p + 1)), theta);
      break;
    case NF_ODENET_SINUSOIDAL:
      uniform_fill(rng, size, 1.0 / sqrt((double)(p + 2 * NF_ODENET_N_FREQ)), theta);
      break;
    }
  }
  return NF_OK;
}

/* Workspace doubles for n samples carrying m tangent directions each:
   n (1 + m) (xu + dim + 2 max_width) + 2 n sum_q + 2 sum_q + 2 max_width;
   SIZE_MAX if that overflows (no allocation holds it; sums with it overflow). */
static size_t work_doubles(const nf_odenet *net, size_t n, size_t m)
{
  size_t rows, per_row, a, b, c, sum_q = net->q_off[net->n_layers], w2 = 2 * net->max_width;
  if (nf_size_mul(n, m + 1, &rows) || nf_size_add(net->xu_off[net->n_layers], net->dim, &per_row) ||
      nf_size_add(per_row, w2, &per_row) || nf_size_mul(rows, per_row, &a) ||
      nf_size_mul3(2, n, sum_q, &b) || nf_size_add(a, b, &c) || nf_size_add(c, 2 * sum_q + w2, &c))
    return SIZE_MAX;
  return c;
}

size_t nf_odenet_work_size(const nf_odenet *net, size_t n, int exact_trace)
{
  return net ? work_doubles(net, n, exact_trace ? net->dim : 1) : 0;
}

/* Cuts work into the buffers of a call with m directions per sample. */
static frame frame_make(const nf_odenet *net, size_t n, size_t m, double *work)
{
  frame fr = {.n = n, .m = m, .rows = n * (1 + m)};
  size_t sum_q = net->q_off[net->n_layers];
  fr.xu = work;
  fr.y = fr.xu + fr.rows * net->xu_off[net->n_layers];
  fr.g[0] = fr.y + fr.rows * net->dim;
  fr.g[1] = fr.g[0] + fr.rows * net->max_width;
  fr.d1 = fr.g[1] + fr.rows * net->max_width;
  fr.d2 = fr.d1 + n * sum_q;
  fr.gamma = fr.d2 + n * sum_q;
  fr.beta = fr.gamma + sum_q;
  fr.g_gamma = fr.beta + sum_q;
  fr.g_beta = fr.g_gamma + net->max_width;
  return fr;
}

/* X_l of layer l (rows x width[l]); U_l follows it (rows x q_l). */
static double *frame_x(const nf_odenet *net, const frame *fr, size_t l)
{
  return fr->xu + fr->rows * net->xu_off[l];
}

/* ---- time dependence of one layer: a = gamma * (W h) + beta ---- */

/* Sinusoidal embedding e(t) and its derivative de/dt (2K values each). */
static void embed_time(double t, double *e, double *de)
{
  for (int k = 0; k < NF_ODENET_N_FREQ; k++) {
    double w = ldexp(1.0, k), s = sin(w * t), c = cos(w * t);
    e[2 * k] = s;
    e[2 * k + 1] = c;
    de[2 * k] = w * c;
    de[2 * k + 1] = -w * s;
  }
}

/* gamma(t), beta(t) of a layer with q outputs from its time parameters tp. */
static void layer_time(nf_odenet_kind kind, size_t q, double t, const double *tp,
                       double *gamma, double *beta)
{
  double e[2 * NF_ODENET_N_FREQ], de[2 * NF_ODENET_N_FREQ];
  switch (kind) {
  case NF_ODENET_CONCATSQUASH: /* tp = b, w_g, b_g, w_b */
    for (size_t j = 0; j < q; j++) {
      gamma[j] = nf_sigmoid(tp[q + j] * t + tp[2 * q + j]);
      beta[j] = gamma[j] * tp[j] + tp[3 * q + j] * t;
    }
    break;
  case NF_ODENET_CONCAT: /* tp = w_t, b */
    for (size_t j = 0; j < q; j++) {
      gamma[j] = 1.0;
      beta[j] = tp[j] * t + tp[q + j];
    }
    break;
  case NF_ODENET_SINUSOIDAL: /* tp = U (q x 2K), b */
    embed_time(t, e, de);
    for (size_t j = 0; j < q; j++) {
      gamma[j] = 1.0;
      beta[j] = tp[2 * NF_ODENET_N_FREQ * q + j];
      for (size_t c = 0; c < 2 * NF_ODENET_N_FREQ; c++)
        beta[j] += tp[2 * NF_ODENET_N_FREQ * j + c] * e[c];
    }
    break;
  }
}

/* Pulls dS/dgamma, dS/dbeta of a layer back: ADDS dS/d(time parameters) into
   g_tp (if non-NULL) and returns dS/dt through this layer. */
static double layer_time_backward(nf_odenet_kind kind, size_t q, double t, const double *tp,
                                  const double *gamma, const double *g_gamma,
                                  const double *g_beta, double *g_tp)
{
  double e[2 * NF_ODENET_N_FREQ], de[2 * NF_ODENET_N_FREQ], g_t = 0;
  switch (kind) {
  case NF_ODENET_CONCATSQUASH:
    for (size_t j = 0; j < q; j++) {
      double g_s = (g_gamma[j] + g_beta[j] * tp[j]) * gamma[j] * (1.0 - gamma[j]);
      g_t += g_s * tp[q + j] + g_beta[j] * tp[3 * q + j];
      if (!g_tp) continue;
      g_tp[j] += g_beta[j] * gamma[j];
      g_tp[q + j] += g_s * t;
      g_tp[2 * q + j] += g_s;
      g_tp[3 * q + j] += g_beta[j] * t;
    }
    break;
  case NF_ODENET_CONCAT:
    for (size_t j = 0; j < q; j++) {
      g_t += g_beta[j] * tp[j];
      if (!g_tp) continue;
      g_tp[j] += g_beta[j] * t;
      g_tp[q + j] += g_beta[j];
    }
    break;
  case NF_ODENET_SINUSOIDAL:
    embed_time(t, e, de);
    for (size_t j = 0; j < q; j++) {
      for (size_t c = 0; c < 2 * NF_ODENET_N_FREQ; c++) {
        g_t += g_beta[j] * tp[2 * NF_ODENET_N_FREQ * j + c] * de[c];
        if (g_tp) g_tp[2 * NF_ODENET_N_FREQ * j + c] += g_beta[j] * e[c];
      }
      if (g_tp) g_tp[2 * NF_ODENET_N_FREQ * q + j] += g_beta[j];
    }
    break;
  }
  return g_t;
}

/* ---- activations ---- */

/* s = (act(a), act'(a), act''(a)): tanh; softplus (act' = sigmoid); swish a sigmoid(a). */
static void act_eval(nf_odenet_act act, double a, double s[3])
{
  double p;
  switch (act) {
  case NF_ODENET_SOFTPLUS:
    p = nf_sigmoid(a);
    s[0] = nf_softplus(a);
    s[1] = p;
    s[2] = p * (1.0 - p);
    break;
  case NF_ODENET_SWISH:
    p = nf_sigmoid(a);
    s[0] = a * p;
    s[1] = p * (1.0 + a * (1.0 - p));
    s[2] = p * (1.0 - p) * (2.0 + a * (1.0 - 2.0 * p));
    break;
  default: /* NF_ODENET_TANH */
    s[0] = nf_tanh(a);
    s[1] = 1.0 - s[0] * s[0];
    s[2] = -2.0 * s[0] * s[1];
    break;
  }
}

/* ---- forward ---- */

/* Tangent rows of X_0: the directions dirs (n x dim, m = 1) or, for
   dirs == NULL (m = dim), the unit vectors e_1..e_dim of every sample. */
static void set_directions(size_t n, size_t m, size_t dim, const double *dirs, double *x)
{
  if (dirs) {
    memcpy(x, dirs, n * dim * sizeof *x);
    return;
  }
  memset(x, 0, n * m * dim * sizeof *x);
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < m; k++) x[(i * m + k) * dim + k] = 1.0;
}

/* In place over count pre-activations: a -> act(a), with d1 = act'(a), d2 = act''(a);
   tanh through the vectorisable nf_tanh. */
NF_VECTOR_LOOP static void activate_block(nf_odenet_act act, size_t count, double *a,
                                          double *d1, double *d2)
{
  if (act == NF_ODENET_TANH) {
    for (size_t k = 0; k < count; k++) {
      double y = nf_tanh(a[k]), dy = 1.0 - y * y;
      a[k] = y;
      d1[k] = dy;
      d2[k] = -2.0 * y * dy;
    }
    return;
  }
  for (size_t k = 0; k < count; k++) {
    double s[3];
    act_eval(act, a[k], s);
    a[k] = s[0];
    d1[k] = s[1];
    d2[k] = s[2];
  }
}

/* Output of a layer from U: primal a = gamma u + beta, out = act(a) (and
   d1 = act'(a), d2 = act''(a)) or out = a for the last layer (d1 == NULL);
   tangent rows out' = act'(a) gamma u'. */
NF_VECTOR_LOOP static void layer_output(nf_odenet_act act, const frame *fr, size_t q,
                                        const double *gamma, const double *beta,
                                        const double *u, double *d1, double *d2, double *out)
{
  size_t n = fr->n, m = fr->m;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < q; j++) out[i * q + j] = gamma[j] * u[i * q + j] + beta[j];
  if (d1) activate_block(act, n * q, out, d1, d2);
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < m; k++) {
      size_t r = (n + i * m + k) * q;
      const double *di = d1 ? d1 + i * q : NULL;
      for (size_t j = 0; j < q; j++) out[r + j] = (di ? di[j] : 1.0) * gamma[j] * u[r + j];
    }
}

/* Forward pass of the primal rows (z, ctx) and the tangent rows (dirs, see
   set_directions) through every layer; Y receives f and J d. */
static void forward(const nf_odenet *net, const double *params, const frame *fr, double t,
                    const double *z, const double *ctx, const double *dirs)
{
  size_t n = fr->n, rows = fr->rows, dim = net->dim, c = net->ctx_dim;
  double *x0 = frame_x(net, fr, 0);
  memcpy(x0, z, n * dim * sizeof *x0);
  if (fr->m > 0) set_directions(n, fr->m, dim, dirs, x0 + n * dim);
  for (size_t l = 0; l < net->n_layers; l++) {
    size_t p = in_width(net, l), xw = net->width[l], q = net->width[l + 1];
    const double *W = params + net->param_off[l];
    double *gamma = fr->gamma + net->q_off[l], *beta = fr->beta + net->q_off[l];
    double *x = frame_x(net, fr, l), *u = x + rows * xw;
    layer_time(net->kind, q, t, W + p * q, gamma, beta);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)q, (int)xw, 1.0, x,
                (int)xw, W, (int)p, 0.0, u, (int)q);
    if (l == 0 && c > 0)
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)q, (int)c, 1.0, ctx,
                  (int)c, W + dim, (int)p, 1.0, u, (int)q);
    int last = l + 1 == net->n_layers;
    double *d1 = last ? NULL : fr->d1 + n * net->q_off[l];
    double *d2 = last ? NULL : fr->d2 + n * net->q_off[l];
    layer_output(net->act, fr, q, gamma, beta, u, d1, d2, last ? fr->y : frame_x(net, fr, l + 1));
  }
}

/* ---- reverse ---- */

/* g_gamma[j] = sum over all rows of g * u, g_beta[j] = sum over the n primal rows of g. */
NF_VECTOR_LOOP static void time_cotangents(const frame *fr, size_t q, const double *restrict g,
                                           const double *restrict u, double *restrict g_gamma,
                                           double *restrict g_beta)
{
  memset(g_gamma, 0, q * sizeof *g_gamma);
  memset(g_beta, 0, q * sizeof *g_beta);
  for (size_t r = 0; r < fr->rows; r++)
    for (size_t j = 0; j < q; j++) g_gamma[j] += g[r * q + j] * u[r * q + j];
  for (size_t r = 0; r < fr->n; r++)
    for (size_t j = 0; j < q; j++) g_beta[j] += g[r * q + j];
}

/* g[r, j] *= gamma[j] for every row. */
NF_VECTOR_LOOP static void scale_columns(size_t rows, size_t q, const double *restrict gamma,
                                         double *restrict g)
{
  for (size_t r = 0; r < rows; r++)
    for (size_t j = 0; j < q; j++) g[r * q + j] *= gamma[j];
}

/* Through h = act(a), h' = act'(a) a' (a' = gamma u' from the layer below):
   g_a' = act'(a) g_h', g_a = act'(a) g_h + act''(a) sum_k a'_k g_h'_k, in place. */
NF_VECTOR_LOOP static void activation_backward(const frame *fr, size_t w,
                                               const double *restrict d1,
                                               const double *restrict d2,
                                               const double *restrict gamma,
                                               const double *restrict u, double *restrict g)
{
  size_t n = fr->n, m = fr->m;
  for (size_t i = 0; i < n; i++) {
    double *gi = g + i * w;
    for (size_t j = 0; j < w; j++) gi[j] *= d1[i * w + j];
    for (size_t k = 0; k < m; k++) {
      size_t r = (n + i * m + k) * w;
      for (size_t j = 0; j < w; j++) {
        gi[j] += d2[i * w + j] * gamma[j] * u[r + j] * g[r + j];
        g[r + j] *= d1[i * w + j];
      }
    }
  }
}

/* Reverse pass from dS/dY in fr->g[0] (rows x dim): ADDS dS/dtheta into g_params
   (if non-NULL), writes dS/dt into *g_t (if non-NULL) and returns dS/d[z, ctx]
   (n x (dim + c), in a frame buffer) if want_input, else NULL. */
static const double *backward(const nf_odenet *net, const double *params, const frame *fr,
                              double t, const double *ctx, double *g_params, double *g_t,
                              int want_input)
{
  size_t n = fr->n, rows = fr->rows, dim = net->dim, c = net->ctx_dim;
  double *g = fr->g[0], *g_next = fr->g[1], dt = 0;
  const double *result = NULL;
  for (size_t l = net->n_layers; l-- > 0;) {
    size_t p = in_width(net, l), xw = net->width[l], q = net->width[l + 1];
    const double *W = params + net->param_off[l], *gamma = fr->gamma + net->q_off[l];
    double *gW = g_params ? g_params + net->param_off[l] : NULL;
    const double *x = frame_x(net, fr, l), *u = x + rows * xw;
    if (g_params || g_t) {
      time_cotangents(fr, q, g, u, fr->g_gamma, fr->g_beta);
      dt += layer_time_backward(net->kind, q, t, W + p * q, gamma, fr->g_gamma, fr->g_beta,
                                gW ? gW + p * q : NULL);
    }
    scale_columns(rows, q, gamma, g);
    if (gW) {
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)xw, (int)rows, 1.0, g,
                  (int)q, x, (int)xw, 1.0, gW, (int)p);
      if (l == 0 && c > 0)
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)q, (int)c, (int)n, 1.0, g,
                    (int)q, ctx, (int)c, 1.0, gW + dim, (int)p);
    }
    if (l == 0) {
      if (want_input) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)p, (int)q, 1.0, g,
                    (int)q, W, (int)p, 0.0, g_next, (int)p);
        result = g_next;
      }
      break;
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)p, (int)q, 1.0, g,
                (int)q, W, (int)p, 0.0, g_next, (int)p);
    activation_backward(fr, p, fr->d1 + n * net->q_off[l - 1], fr->d2 + n * net->q_off[l - 1],
                        fr->gamma + net->q_off[l - 1],
                        frame_x(net, fr, l - 1) + rows * net->width[l - 1], g_next);
    double *swap = g;
    g = g_next;
    g_next = swap;
  }
  if (g_t) *g_t = dt;
  return result;
}

/* ---- the calls ---- */

/* NF_EINVAL / NF_ENONFINITE if the array p of count values is NULL while
   required, or holds a non-finite value. */
static nf_status check_array(const char *fn, const char *name, const double *p, size_t count,
                             int required)
{
  if (!p) return required ? nf_fail(NF_EINVAL, "%s: %s is NULL", fn, name) : NF_OK;
  size_t k = nf_first_nonfinite(count, p);
  if (k < count) return nf_fail(NF_ENONFINITE, "%s: %s[%zu] is not finite", fn, name, k);
  return NF_OK;
}

/* Checks shared by every call: net, params, work, n, t, z, ctx, and n (1 + dim)
   rows within the range of a BLAS int. */
static nf_status check_common(const char *fn, const nf_odenet *net, const double *params,
                              size_t n, double t, const double *z, const double *ctx,
                              const double *work)
{
  if (!net || !params || !work) return nf_fail(NF_EINVAL, "%s: net, params or work is NULL", fn);
  if (n == 0) return nf_fail(NF_EINVAL, "%s: n must be > 0", fn);
  if (n > (size_t)INT_MAX / (1 + net->dim))
    return nf_fail(NF_EINVAL, "%s: batch of %zu rows is too large for BLAS", fn, n);
  if (!isfinite(t)) return nf_fail(NF_ENONFINITE, "%s: t is not finite", fn);
  nf_status st = check_array(fn, "z", z, n * net->dim, 1);
  if (st == NF_OK && net->ctx_dim > 0) st = check_array(fn, "ctx", ctx, n * net->ctx_dim, 1);
  return st;
}

/* Per sample: tr_i = sum_k d_ik . y_ik and jac_i = sum_k |y_ik|^2 over its m tangent
   rows (directions d in X_0, outputs J d in Y); kin_i = |f_i|^2. NULL: not wanted. */
static void row_terms(const nf_odenet *net, const frame *fr, double *tr, double *kin,
                      double *jac)
{
  size_t n = fr->n, m = fr->m, dim = net->dim;
  const double *d = frame_x(net, fr, 0), *y = fr->y;
  for (size_t i = 0; i < n; i++) {
    double s_tr = 0, s_jac = 0, s_kin = 0;
    for (size_t j = 0; j < dim; j++) s_kin += y[i * dim + j] * y[i * dim + j];
    for (size_t k = 0; k < m; k++)
      for (size_t j = 0; j < dim; j++) {
        size_t r = (n + i * m + k) * dim + j;
        s_tr += d[r] * y[r];
        s_jac += y[r] * y[r];
      }
    if (tr) tr[i] = s_tr;
    if (kin) kin[i] = s_kin;
    if (jac) jac[i] = s_jac;
  }
}

/* dS/dY into g (rows x dim): primal rows a_i + 2 wk_i f_i, tangent rows
   w_i d_ik + 2 wj_i (J d)_ik; NULL weights are zero. */
static void seed_cotangent(const nf_odenet *net, const frame *fr, const double *a,
                           const double *w, const double *wk, const double *wj, double *g)
{
  size_t n = fr->n, m = fr->m, dim = net->dim;
  const double *d = frame_x(net, fr, 0), *y = fr->y;
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < dim; j++)
      g[i * dim + j] = (a ? a[i * dim + j] : 0.0) + (wk ? 2.0 * wk[i] * y[i * dim + j] : 0.0);
    for (size_t k = 0; k < m; k++)
      for (size_t j = 0; j < dim; j++) {
        size_t r = (n + i * m + k) * dim + j;
        g[r] = (w ? w[i] * d[r] : 0.0) + (wj ? 2.0 * wj[i] * y[r] : 0.0);
      }
  }
}

/* The one engine behind eval, vjp, trace and adjoint (see nf_odenet_adjoint). */
static nf_status evaluate(const char *fn, const nf_odenet *net, const double *params, size_t n,
                          double t, const double *z, const double *ctx, const double *probe,
                          const double *a, const double *w, const double *wk,
                          const double *wj, double *f, double *tr, double *kin, double *jac,
                          double *g_z, double *g_params, double *g_t, double *g_ctx,
                          double *work)
{
  nf_status st = check_common(fn, net, params, n, t, z, ctx, work);
  size_t dim = net ? net->dim : 0, c = net ? net->ctx_dim : 0;
  if (st == NF_OK) st = check_array(fn, "probe", probe, n * dim, 0);
  if (st == NF_OK) st = check_array(fn, "a", a, n * dim, 0);
  if (st == NF_OK) st = check_array(fn, "w", w, n, 0);
  if (st == NF_OK) st = check_array(fn, "wk", wk, n, 0);
  if (st == NF_OK) st = check_array(fn, "wj", wj, n, 0);
  if (st != NF_OK) return st;
  int tangents = tr || jac || w || wj;
  frame fr = frame_make(net, n, tangents ? (probe ? 1 : dim) : 0, work);
  forward(net, params, &fr, t, z, ctx, probe);
  if (f) memcpy(f, fr.y, n * dim * sizeof *f);
  row_terms(net, &fr, tr, kin, jac);
  if (!g_z && !g_params && !g_t && !g_ctx) return NF_OK;
  seed_cotangent(net, &fr, a, w, wk, wj, fr.g[0]);
  const double *g_in = backward(net, params, &fr, t, ctx, g_params, g_t, g_z || g_ctx);
  for (size_t i = 0; g_in && i < n; i++) {
    if (g_z) memcpy(g_z + i * dim, g_in + i * (dim + c), dim * sizeof *g_z);
    for (size_t j = 0; g_ctx && j < c; j++) g_ctx[i * c + j] += g_in[i * (dim + c) + dim + j];
  }
  return NF_OK;
}

nf_status nf_odenet_eval(const nf_odenet *net, const double *params, size_t n, double t,
                         const double *z, const double *ctx, double *f, double *work)
{
  if (!f) return nf_fail(NF_EINVAL, "nf_odenet_eval: f is NULL");
  return evaluate("nf_odenet_eval", net, params, n, t, z, ctx, NULL, NULL, NULL, NULL, NULL, f,
                  NULL, NULL, NULL, NULL, NULL, NULL, NULL, work);
}

nf_status nf_odenet_jvp(const nf_odenet *net, const double *params, size_t n, double t,
                        const double *z, const double *ctx, const double *v,
                        double *f, double *jv, double *work)
{
  const char *fn = "nf_odenet_jvp";
  nf_status st = check_common(fn, net, params, n, t, z, ctx, work);
  if (st == NF_OK) st = check_array(fn, "v", v, n * net->dim, 1);
  if (st == NF_OK && !jv) st = nf_fail(NF_EINVAL, "%s: jv is NULL", fn);
  if (st != NF_OK) return st;
  frame fr = frame_make(net, n, 1, work);
  forward(net, params, &fr, t, z, ctx, v);
  if (f) memcpy(f, fr.y, n * net->dim * sizeof *f);
  memcpy(jv, fr.y + n * net->dim, n * net->dim * sizeof *jv);
  return NF_OK;
}

nf_status nf_odenet_vjp(const nf_odenet *net, const double *params, size_t n, double t,
                        const double *z, const double *ctx, const double *u,
                        double *f, double *g_z, double *g_params, double *g_t,
                        double *g_ctx, double *work)
{
  if (!u) return nf_fail(NF_EINVAL, "nf_odenet_vjp: u is NULL");
  return evaluate("nf_odenet_vjp", net, params, n, t, z, ctx, NULL, u, NULL, NULL, NULL, f,
                  NULL, NULL, NULL, g_z, g_params, g_t, g_ctx, work);
}

nf_status nf_odenet_trace(const nf_odenet *net, const double *params, size_t n, double t,
                          const double *z, const double *ctx, const double *probe,
                          double *f, double *tr, double *kin, double *jac, double *work)
{
  if (!f || !tr) return nf_fail(NF_EINVAL, "nf_odenet_trace: f or tr is NULL");
  return evaluate("nf_odenet_trace", net, params, n, t, z, ctx, probe, NULL, NULL, NULL, NULL,
                  f, tr, kin, jac, NULL, NULL, NULL, NULL, work);
}

nf_status nf_odenet_adjoint(const nf_odenet *net, const double *params, size_t n, double t,
                            const double *z, const double *ctx, const double *probe,
                            const double *a, const double *w, const double *wk,
                            const double *wj, double *f, double *tr, double *kin,
                            double *jac, double *g_z, double *g_params, double *g_t,
                            double *g_ctx, double *work)
{
  return evaluate("nf_odenet_adjoint", net, params, n, t, z, ctx, probe, a, w, wk, wj, f, tr,
                  kin, jac, g_z, g_params, g_t, g_ctx, work);
}

/* ---- FLOP accounting ---- */

/* Multiply-adds per sample of the forward products: the primal row reads [z, ctx],
   each of the m tangent rows reads only its z-part. */
static double forward_madds(const nf_odenet *net, size_t m)
{
  double s = 0;
  for (size_t l = 0; net && l < net->n_layers; l++) {
    double q = (double)net->width[l + 1];
    s += q * (double)in_width(net, l) + (double)m * q * (double)net->width[l];
  }
  return s;
}

double nf_odenet_trace_flops(const nf_odenet *net, int exact_trace)
{
  if (!net) return 0;
  return 2.0 * forward_madds(net, exact_trace ? net->dim : 1);
}

/* Reverse products per sample: dS/dW (like the forward) and dS/dX (all rows, but
   only the primal row in layer 0). */
double nf_odenet_adjoint_flops(const nf_odenet *net, int exact_trace)
{
  if (!net) return 0;
  size_t m = exact_trace ? net->dim : 1;
  double back = forward_madds(net, m);
  for (size_t l = 0; l < net->n_layers; l++) {
    double pq = (double)in_width(net, l) * (double)net->width[l + 1];
    back += l == 0 ? pq : (double)(1 + m) * pq;
  }
  return 2.0 * (forward_madds(net, m) + back);
}
