/* lib/mlp.c — batched multilayer perceptron: one dgemm per layer over the
   whole batch (rows = samples), backpropagation with two more dgemms per layer.

   Parameters of layer l (n_in = width[l], n_out = width[l+1]): W_l, n_out x n_in
   row-major, then b_l (n_out). Forward: H_l = act(H_{l-1} W_l^T + b_l), H_{-1} = x,
   no activation on the last layer. The workspace keeps the post-activation
   hidden outputs H_0 .. H_{L-2} (the record backward reads: every activation's
   derivative is a function of its output), then two n x max_hidden scratch
   buffers for the backward deltas. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/mlp.h"

struct nf_mlp {
  size_t n_layers;    /* affine layers: n_hidden + 1 */
  size_t *width;      /* n_layers + 1 widths: n_in, hidden..., n_out */
  nf_activation act;
  size_t n_params;
  size_t sum_hidden;  /* sum of hidden widths: doubles per row of the record */
  size_t max_hidden;  /* widest hidden layer (0 if none): doubles per row of a scratch buffer */
};

nf_mlp *nf_mlp_new(size_t n_in, size_t n_hidden, const size_t *hidden,
                   size_t n_out, nf_activation act)
{
  if (n_in == 0 || n_out == 0) {
    nf_fail(NF_EINVAL, "nf_mlp_new: input width %zu and output width %zu must be > 0",
            n_in, n_out);
    return NULL;
  }
  if (n_hidden > 0 && !hidden) {
    nf_fail(NF_EINVAL, "nf_mlp_new: %zu hidden layers but hidden widths are NULL", n_hidden);
    return NULL;
  }
  for (size_t l = 0; l < n_hidden; l++)
    if (hidden[l] == 0) {
      nf_fail(NF_EINVAL, "nf_mlp_new: hidden layer %zu has width 0", l);
      return NULL;
    }
  if ((unsigned)act > NF_ACT_SOFTPLUS) {
    nf_fail(NF_EINVAL, "nf_mlp_new: unknown activation %d", (int)act);
    return NULL;
  }
  nf_mlp *mlp = calloc(1, sizeof *mlp);
  size_t *width = n_hidden < SIZE_MAX - 2 ? calloc(n_hidden + 2, sizeof *width) : NULL;
  if (!mlp || !width) {
    free(mlp);
    free(width);
    nf_fail(NF_ENOMEM, "nf_mlp_new: out of memory");
    return NULL;
  }
  width[0] = n_in;
  for (size_t l = 0; l < n_hidden; l++) width[l + 1] = hidden[l];
  width[n_hidden + 1] = n_out;
  mlp->n_layers = n_hidden + 1;
  mlp->width = width;
  mlp->act = act;
  size_t fan_in, np, bytes;
  for (size_t l = 0; l < mlp->n_layers; l++)
    if (nf_size_add(width[l], 1, &fan_in) || nf_size_mul(fan_in, width[l + 1], &np) ||
        nf_size_add(mlp->n_params, np, &mlp->n_params) ||
        nf_size_mul(mlp->n_params, sizeof(double), &bytes)) {
      nf_fail(NF_EINVAL, "nf_mlp_new: the parameter count (widths %zu -> %zu at layer %zu) "
              "overflows", width[l], width[l + 1], l);
      nf_mlp_free(mlp);
      return NULL;
    }
  for (size_t l = 0; l < n_hidden; l++) {
    if (nf_size_add(mlp->sum_hidden, hidden[l], &mlp->sum_hidden)) {
      nf_fail(NF_EINVAL, "nf_mlp_new: the sum of the hidden widths overflows");
      nf_mlp_free(mlp);
      return NULL;
    }
    if (hidden[l] > mlp->max_hidden) mlp->max_hidden = hidden[l];
  }
  return mlp;
}

void nf_mlp_free(nf_mlp *mlp)
{
  if (!mlp) return;
  free(mlp->width);
  free(mlp);
}

size_t nf_mlp_n_in(const nf_mlp *mlp) { return mlp ? mlp->width[0] : 0; }
size_t nf_mlp_n_out(const nf_mlp *mlp) { return mlp ? mlp->width[mlp->n_layers] : 0; }
size_t nf_mlp_n_params(const nf_mlp *mlp) { return mlp ? mlp->n_params : 0; }

/* Activation names, indexed by nf_activation. */
static const char *const act_names[] = {"identity", "relu", "tanh", "elu", "softplus"};

const char *nf_activation_name(nf_activation act)
{
  return (unsigned)act <= NF_ACT_SOFTPLUS ? act_names[act] : "?";
}

nf_status nf_activation_parse(const char *name, nf_activation *act)
{
  int i = 0;
  nf_status st = nf_parse_choice("activation", name, act_names, 5, act ? &i : NULL);
  if (st == NF_OK) *act = (nf_activation)i;
  return st;
}

/* u[0..n) ~ uniform(-a, a). */
static void uniform_fill(nf_rng *rng, size_t n, double a, double *u)
{
  for (size_t i = 0; i < n; i++) u[i] = a * (2.0 * nf_rng_uniform(rng) - 1.0);
}

/* Hidden layers: He-uniform limit sqrt(6 / fan_in) for relu and elu (He et al.
   2015), Glorot-uniform sqrt(6 / (fan_in + fan_out)) otherwise (Glorot & Bengio
   2010); the output layer is Glorot-uniform times out_scale. Biases are zero.
   No-op if an argument is NULL. */
/* Uniform weights, zero biases, the last layer scaled by out_scale; hidden
   layers' bound sqrt(6 / fan_in) (He) for relu/elu, else sqrt(6 / (fan_in +
   fan_out)) (Glorot), or 1 / sqrt(fan_in) (LeCun uniform, PyTorch's
   nn.Linear default) when lecun; the last layer always Glorot's. */
static void init_layers(const nf_mlp *mlp, nf_rng *rng, double out_scale, int lecun, double *params)
{
  if (!mlp || !rng || !params) return;
  int he = mlp->act == NF_ACT_RELU || mlp->act == NF_ACT_ELU;
  double *p = params;
  for (size_t l = 0; l < mlp->n_layers; l++) {
    size_t fan_in = mlp->width[l], fan_out = mlp->width[l + 1];
    int last = l + 1 == mlp->n_layers;
    double a = last    ? sqrt(6.0 / (double)(fan_in + fan_out))
               : lecun ? 1.0 / sqrt((double)fan_in)
               : he    ? sqrt(6.0 / (double)fan_in)
                       : sqrt(6.0 / (double)(fan_in + fan_out));
    uniform_fill(rng, fan_in * fan_out, last ? a * out_scale : a, p);
    p += fan_in * fan_out;
    memset(p, 0, fan_out * sizeof *p);
    p += fan_out;
  }
}

void nf_mlp_init(const nf_mlp *mlp, nf_rng *rng, double out_scale, double *params)
{
  init_layers(mlp, rng, out_scale, 0, params);
}

void nf_mlp_init_lecun(const nf_mlp *mlp, nf_rng *rng, double out_scale, double *params)
{
  init_layers(mlp, rng, out_scale, 1, params);
}

size_t nf_mlp_work_size(const nf_mlp *mlp, size_t n)
{
  size_t per_row, total;
  if (!mlp) return 0;
  if (nf_size_mul(2, mlp->max_hidden, &per_row) || nf_size_add(per_row, mlp->sum_hidden, &per_row) ||
      nf_size_mul(n, per_row, &total))
    return SIZE_MAX; /* no allocation holds it; adding to it overflows too */
  return total;
}

double nf_mlp_flops_per_row(const nf_mlp *mlp)
{
  double f = 0;
  for (size_t l = 0; mlp && l < mlp->n_layers; l++)
    f += (double)mlp->width[l] * (double)mlp->width[l + 1];
  return f;
}

/* Y[i, :] = act(Y[i, :] + b) for n rows of width w, in place. */
NF_VECTOR_LOOP static void add_bias_activate(nf_activation act, size_t n, size_t w, const double *b, double *y)
{
  for (size_t i = 0; i < n; i++) {
    double *r = y + i * w;
    switch (act) {
    case NF_ACT_IDENTITY:
      for (size_t j = 0; j < w; j++) r[j] += b[j];
      break;
    case NF_ACT_RELU:
      for (size_t j = 0; j < w; j++) {
        double v = r[j] + b[j];
        r[j] = 0.5 * (v + fabs(v)); /* max(v, 0), exact and branch-free */
      }
      break;
    case NF_ACT_TANH:
      for (size_t j = 0; j < w; j++) r[j] = nf_tanh(r[j] + b[j]);
      break;
    case NF_ACT_ELU:
      for (size_t j = 0; j < w; j++) {
        double v = r[j] + b[j];
        r[j] = v > 0 ? v : expm1(v);
      }
      break;
    case NF_ACT_SOFTPLUS:
      for (size_t j = 0; j < w; j++) r[j] = nf_softplus(r[j] + b[j]);
      break;
    }
  }
}

/* G = G * act'(.), with act' written in the activation's output H (relu: H > 0;
   tanh: 1 - H^2; elu: H > 0 ? 1 : H + 1; softplus: sigmoid = 1 - exp(-H)). */
NF_VECTOR_LOOP static void activation_backward(nf_activation act, size_t n, size_t w, const double *h,
                                double *g)
{
  const size_t nw = n * w;
  switch (act) {
  case NF_ACT_IDENTITY:
    break;
  case NF_ACT_RELU:
    for (size_t k = 0; k < nw; k++) g[k] = h[k] > 0 ? g[k] : 0.0;
    break;
  case NF_ACT_TANH:
    for (size_t k = 0; k < nw; k++) g[k] *= 1.0 - h[k] * h[k];
    break;
  case NF_ACT_ELU:
    for (size_t k = 0; k < nw; k++) g[k] *= h[k] > 0 ? 1.0 : h[k] + 1.0;
    break;
  case NF_ACT_SOFTPLUS:
    for (size_t k = 0; k < nw; k++) g[k] *= -expm1(-h[k]);
    break;
  }
}

/* gb += column sums of the n x w matrix g. */
NF_VECTOR_LOOP static void add_column_sums(size_t n, size_t w, const double *restrict g, double *restrict gb)
{
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < w; j++) gb[j] += g[i * w + j];
}

/* Start of layer l's W in a parameter vector (b_l follows W_l). */
static size_t layer_offset(const nf_mlp *mlp, size_t l)
{
  size_t off = 0;
  for (size_t k = 0; k < l; k++) off += (mlp->width[k] + 1) * mlp->width[k + 1];
  return off;
}

/* Start of the record of hidden layer l (its output H_l) in work. */
static double *hidden_record(const nf_mlp *mlp, size_t n, size_t l, double *work)
{
  size_t off = 0;
  for (size_t k = 0; k < l; k++) off += mlp->width[k + 1];
  return work + n * off;
}

void nf_mlp_forward(const nf_mlp *mlp, const double *params, size_t n,
                    const double *x, double *y, double *work)
{
  if (!mlp || !params || n == 0 || !x || !y || (mlp->n_layers > 1 && !work)) return;
  const double *in = x, *p = params;
  for (size_t l = 0; l < mlp->n_layers; l++) {
    size_t w_in = mlp->width[l], w_out = mlp->width[l + 1];
    int last = l + 1 == mlp->n_layers;
    double *out = last ? y : hidden_record(mlp, n, l, work);
    const double *W = p, *b = p + w_in * w_out;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)w_out, (int)w_in,
                1.0, in, (int)w_in, W, (int)w_in, 0.0, out, (int)w_out);
    add_bias_activate(last ? NF_ACT_IDENTITY : mlp->act, n, w_out, b, out);
    in = out;
    p = b + w_out;
  }
}

void nf_mlp_backward(const nf_mlp *mlp, const double *params, size_t n,
                     const double *x, const double *g_y, double *g_x,
                     double *g_params, double *work)
{
  if (!mlp || !params || n == 0 || !x || !g_y || (!g_params && !g_x) ||
      (mlp->n_layers > 1 && !work))
    return;
  double *scratch[2] = {NULL, NULL};
  if (work) {
    scratch[0] = work + n * mlp->sum_hidden;
    scratch[1] = scratch[0] + n * mlp->max_hidden;
  }
  const double *delta = g_y; /* dL/d(pre-activation) of layer l */
  for (size_t l = mlp->n_layers; l-- > 0;) {
    size_t w_in = mlp->width[l], w_out = mlp->width[l + 1], off = layer_offset(mlp, l);
    const double *W = params + off;
    const double *h_prev = l > 0 ? hidden_record(mlp, n, l - 1, work) : x;
    /* gW_l += delta^T H_{l-1}, gb_l += column sums of delta */
    if (g_params) {
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)w_out, (int)w_in, (int)n,
                  1.0, delta, (int)w_out, h_prev, (int)w_in, 1.0, g_params + off, (int)w_in);
      add_column_sums(n, w_out, delta, g_params + off + w_in * w_out);
    }
    double *g_prev = l > 0 ? scratch[l % 2] : g_x;
    if (!g_prev) break;
    /* dL/dH_{l-1} = delta W_l, then through the activation of layer l - 1 */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)w_in, (int)w_out,
                1.0, delta, (int)w_out, W, (int)w_in, 0.0, g_prev, (int)w_in);
    if (l > 0) activation_backward(mlp->act, n, w_in, h_prev, g_prev);
    delta = g_prev;
  }
}
