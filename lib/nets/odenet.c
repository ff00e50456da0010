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
#include "nflow/precision.h"

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
  size_t max_pq;       /* largest weight block p q of a layer */
  nf_precision precision;
};

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
    if (p * q > net->max_pq) net->max_pq = p * q;
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

/* Workspace doubles for n samples carrying m tangent directions each: the
   double arrays 2 sum_q + 2 max_width, then in the pass's type
   n (1 + m) (xu + dim + 2 max_width) + 2 n sum_q, and in single precision also
   2 sum_q + n c + n_params + max_pq floats (gamma, beta, the context, the
   weights, one dS/dW block), two floats to a double; SIZE_MAX if that
   overflows (no allocation holds it; sums with it overflow). */
static size_t work_doubles(const nf_odenet *net, size_t n, size_t m)
{
  size_t rows, per_row, a, b, r, extra, sum_q = net->q_off[net->n_layers], w2 = 2 * net->max_width;
  int single = net->precision == NF_PRECISION_SINGLE;
  if (nf_size_mul(n, m + 1, &rows) || nf_size_add(net->xu_off[net->n_layers], net->dim, &per_row) ||
      nf_size_add(per_row, w2, &per_row) || nf_size_mul(rows, per_row, &a) ||
      nf_size_mul3(2, n, sum_q, &b) || nf_size_add(a, b, &r))
    return SIZE_MAX;
  if (single && (nf_size_mul(n, net->ctx_dim, &extra) ||
                 nf_size_add(extra, 2 * sum_q + net->n_params + net->max_pq, &extra) ||
                 nf_size_add(r, extra, &r)))
    return SIZE_MAX;
  if (single) r = r / 2 + 1;
  if (nf_size_add(r, 2 * sum_q + w2, &r)) return SIZE_MAX;
  return r;
}

size_t nf_odenet_work_size(const nf_odenet *net, size_t n, int exact_trace)
{
  return net ? work_doubles(net, n, exact_trace ? net->dim : 1) : 0;
}

nf_status nf_odenet_set_precision(nf_odenet *net, nf_precision precision)
{
  if (!net) return nf_fail(NF_EINVAL, "nf_odenet_set_precision: net is NULL");
  nf_status st = nf_check_precision("nf_odenet_set_precision", precision);
  if (!st) net->precision = precision;
  return st;
}

nf_precision nf_odenet_precision(const nf_odenet *net)
{
  return net ? net->precision : NF_PRECISION_DOUBLE;
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

/* expm1(y) for y in [-40, 0] to about 1 ulp, branch-free: y = k ln2 + r
   (nf_exp_reduce), expm1(r) = r + r^2 nf_exp_tail(r), expm1(y) = 2^k expm1(r)
   + (2^k - 1) (exact for k = 0). */
static inline double expm1_nonpositive(double y)
{
  double r, scale = nf_exp_reduce(y, &r);
  double s = nf_exp_tail(r);
  return scale * (r + r * r * s) + (scale - 1.0);
}

/* tanh(x) = -E / (2 + E), E = expm1(-2|x|), sign restored: one exponential,
   a few ulp everywhere (no cancellation near 0), |x| capped at 20 (tanh = 1 in
   double); NaN propagates (the cap's comparison fails). */
static inline double tanh_d(double x)
{
  double ax = x < 0 ? -x : x;
  double e = expm1_nonpositive(-2.0 * (ax > 20.0 ? 20.0 : ax));
  double t = -e / (2.0 + e);
  return x < 0 ? -t : t;
}

/* expm1(y) in float for y in [-18, 0] as expm1_nonpositive, expm1(r) =
   r + r^2 (1/2 + ... + r^6/8!) (truncation < 2e-9 relative). */
static inline float expm1f_nonpositive(float y)
{
  const float shifter = 0x1.8p23f, log2e = 1.44269504f;
  const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  float kf = y * log2e + shifter, k = kf - shifter;
  float r = (y - k * ln2_hi) - k * ln2_lo;
  float s = 1.0f / 40320.0f;
  s = s * r + 1.0f / 5040.0f;
  s = s * r + 1.0f / 720.0f;
  s = s * r + 1.0f / 120.0f;
  s = s * r + 1.0f / 24.0f;
  s = s * r + 1.0f / 6.0f;
  s = s * r + 0.5f;
  uint32_t kbits, sbits = 0x4B400000U; /* bits of the shifter */
  memcpy(&kbits, &kf, sizeof kbits);
  uint32_t scale_bits = (kbits - sbits + 127) << 23;
  float scale;
  memcpy(&scale, &scale_bits, sizeof scale);
  return scale * (r + r * r * s) + (scale - 1.0f);
}

/* tanh_d in float: |x| capped at 9 (tanh = 1 in float). */
static inline float tanh_f(float x)
{
  float ax = x < 0 ? -x : x;
  float e = expm1f_nonpositive(-2.0f * (ax > 9.0f ? 9.0f : ax));
  float t = -e / (2.0f + e);
  return x < 0 ? -t : t;
}

/* ---- the passes, in double and in float (odenet_pass.h) ---- */

/* The activation loop lets the compiler fuse multiply-adds (FMA in the AVX2 and
   AVX-512 clones; -std=c11 turns contraction off): the polynomials of tanh are
   its cost. Results change within rounding only. */
#if defined(__GNUC__) && !defined(__clang__)
#define CONTRACT __attribute__((optimize("fp-contract=fast")))
#else
#define CONTRACT
#endif

/* What one call asks for: n rows with m directions each (dirs, or the unit
   vectors for dirs == NULL and m = dim); the weights of S; the outputs (NULL:
   not wanted). */
typedef struct request {
  size_t n, m;
  double t;
  const double *z, *ctx, *dirs, *a, *w, *wk, *wj;
  double *f, *jv, *tr, *kin, *jac, *g_z, *g_params, *g_t, *g_ctx;
} request;

#define R double
#define SFX(x) x##_d
#define GEMM cblas_dgemm
#define TANH tanh_d
#define SINGLE 0
#include "odenet_pass.h"
#undef R
#undef SFX
#undef GEMM
#undef TANH
#undef SINGLE

#define R float
#define SFX(x) x##_f
#define GEMM cblas_sgemm
#define TANH tanh_f
#define SINGLE 1
#include "odenet_pass.h"
#undef R
#undef SFX
#undef GEMM
#undef TANH
#undef SINGLE

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

/* Checks a request's inputs and runs it in the net's precision. */
static nf_status evaluate(const char *fn, const nf_odenet *net, const double *params,
                          const request *q, double *work)
{
  nf_status st = check_common(fn, net, params, q->n, q->t, q->z, q->ctx, work);
  size_t n = q->n, dim = net ? net->dim : 0;
  if (st == NF_OK) st = check_array(fn, q->jv ? "v" : "probe", q->dirs, n * dim, q->jv != NULL);
  if (st == NF_OK) st = check_array(fn, "a", q->a, n * dim, 0);
  if (st == NF_OK) st = check_array(fn, "w", q->w, n, 0);
  if (st == NF_OK) st = check_array(fn, "wk", q->wk, n, 0);
  if (st == NF_OK) st = check_array(fn, "wj", q->wj, n, 0);
  if (st != NF_OK) return st;
  request r = *q;
  int tangents = r.jv || r.tr || r.jac || r.w || r.wj;
  r.m = tangents ? (r.dirs ? 1 : dim) : 0;
  if (net->precision == NF_PRECISION_SINGLE)
    run_f(net, params, &r, work);
  else
    run_d(net, params, &r, work);
  return NF_OK;
}
nf_status nf_odenet_eval(const nf_odenet *net, const double *params, size_t n, double t,
                         const double *z, const double *ctx, double *f, double *work)
{
  if (!f) return nf_fail(NF_EINVAL, "nf_odenet_eval: f is NULL");
  request q = {.n = n, .t = t, .z = z, .ctx = ctx, .f = f};
  return evaluate("nf_odenet_eval", net, params, &q, work);
}

nf_status nf_odenet_jvp(const nf_odenet *net, const double *params, size_t n, double t,
                        const double *z, const double *ctx, const double *v,
                        double *f, double *jv, double *work)
{
  if (!jv) return nf_fail(NF_EINVAL, "nf_odenet_jvp: jv is NULL");
  request q = {.n = n, .t = t, .z = z, .ctx = ctx, .dirs = v, .f = f, .jv = jv};
  return evaluate("nf_odenet_jvp", net, params, &q, work);
}

nf_status nf_odenet_vjp(const nf_odenet *net, const double *params, size_t n, double t,
                        const double *z, const double *ctx, const double *u,
                        double *f, double *g_z, double *g_params, double *g_t,
                        double *g_ctx, double *work)
{
  if (!u) return nf_fail(NF_EINVAL, "nf_odenet_vjp: u is NULL");
  request q = {.n = n, .t = t, .z = z, .ctx = ctx, .a = u, .f = f, .g_z = g_z,
               .g_params = g_params, .g_t = g_t, .g_ctx = g_ctx};
  return evaluate("nf_odenet_vjp", net, params, &q, work);
}

nf_status nf_odenet_trace(const nf_odenet *net, const double *params, size_t n, double t,
                          const double *z, const double *ctx, const double *probe,
                          double *f, double *tr, double *kin, double *jac, double *work)
{
  if (!f || !tr) return nf_fail(NF_EINVAL, "nf_odenet_trace: f or tr is NULL");
  request q = {.n = n, .t = t, .z = z, .ctx = ctx, .dirs = probe, .f = f, .tr = tr,
               .kin = kin, .jac = jac};
  return evaluate("nf_odenet_trace", net, params, &q, work);
}

nf_status nf_odenet_adjoint(const nf_odenet *net, const double *params, size_t n, double t,
                            const double *z, const double *ctx, const double *probe,
                            const double *a, const double *w, const double *wk,
                            const double *wj, double *f, double *tr, double *kin,
                            double *jac, double *g_z, double *g_params, double *g_t,
                            double *g_ctx, double *work)
{
  request q = {.n = n, .t = t, .z = z, .ctx = ctx, .dirs = probe, .a = a, .w = w, .wk = wk,
               .wj = wj, .f = f, .tr = tr, .kin = kin, .jac = jac, .g_z = g_z,
               .g_params = g_params, .g_t = g_t, .g_ctx = g_ctx};
  return evaluate("nf_odenet_adjoint", net, params, &q, work);
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
