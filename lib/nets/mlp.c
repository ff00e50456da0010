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
  size_t max_hidden;  /* widest hidden layer (0 if none): elements per row of a scratch buffer */
  nf_precision precision; /* the passes' arithmetic (nf_mlp_set_precision) */
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

double nf_mlp_flops_per_row(const nf_mlp *mlp)
{
  double f = 0;
  for (size_t l = 0; mlp && l < mlp->n_layers; l++)
    f += (double)mlp->width[l] * (double)mlp->width[l + 1];
  return f;
}

/* Start of layer l's W in a parameter vector (b_l follows W_l). */
static size_t layer_offset(const nf_mlp *mlp, size_t l)
{
  size_t off = 0;
  for (size_t k = 0; k < l; k++) off += (mlp->width[k] + 1) * mlp->width[k + 1];
  return off;
}

#define REAL double
#define GEMM cblas_dgemm
#define PASS(name) name##_d
#include "mlp_pass.h"
#define REAL float
#define GEMM cblas_sgemm
#define PASS(name) name##_f
#include "mlp_pass.h"

/* Float views of a single-precision workspace of n rows (after the weights):
   the weight gradient (P), the input and its cotangent (n x n_in each), the
   output, then its cotangent (n x n_out), then the passes' record and scratch. */
typedef struct mlp_fws {
  float *g_params, *x, *g_x, *y, *net;
} mlp_fws;

static mlp_fws float_layout(const nf_mlp *mlp, size_t n, double *work)
{
  mlp_fws f;
  f.g_params = (float *)work;
  f.x = f.g_params + mlp->n_params;
  f.g_x = f.x + n * mlp->width[0];
  f.y = f.g_x + n * mlp->width[0];
  f.net = f.y + n * mlp->width[mlp->n_layers];
  return f;
}

/* Doubles holding k floats. */
static size_t doubles_for_floats(size_t k) { return k / 2 + k % 2; }

/* Elements of the passes' record and scratch: n (sum_hidden + 2 max_hidden);
   SIZE_MAX on overflow. */
static size_t pass_work(const nf_mlp *mlp, size_t n)
{
  size_t per_row, total;
  if (nf_size_mul(2, mlp->max_hidden, &per_row) || nf_size_add(per_row, mlp->sum_hidden, &per_row) ||
      nf_size_mul(n, per_row, &total))
    return SIZE_MAX; /* no allocation holds it; adding to it overflows too */
  return total;
}

size_t nf_mlp_single_work_size(const nf_mlp *mlp, size_t n)
{
  size_t in, out, floats;
  if (!mlp) return 0;
  if (nf_size_mul3(2, n, mlp->width[0], &in) || nf_size_mul(n, mlp->width[mlp->n_layers], &out) ||
      nf_size_add(in, out, &floats) || nf_size_add(floats, mlp->n_params, &floats) ||
      nf_size_add(floats, pass_work(mlp, n), &floats))
    return SIZE_MAX;
  return doubles_for_floats(floats);
}

size_t nf_mlp_work_size(const nf_mlp *mlp, size_t n)
{
  size_t total;
  if (!mlp) return 0;
  if (mlp->precision == NF_PRECISION_DOUBLE) return pass_work(mlp, n);
  if (nf_size_add(doubles_for_floats(mlp->n_params), nf_mlp_single_work_size(mlp, n), &total))
    return SIZE_MAX;
  return total;
}

nf_status nf_mlp_set_precision(nf_mlp *mlp, nf_precision precision)
{
  if (!mlp) return nf_fail(NF_EINVAL, "nf_mlp_set_precision: the network is NULL");
  nf_status st = nf_check_precision("nf_mlp_set_precision", precision);
  if (!st) mlp->precision = precision;
  return st;
}

nf_precision nf_mlp_precision(const nf_mlp *mlp)
{
  return mlp ? mlp->precision : NF_PRECISION_DOUBLE;
}

/* out = in as doubles (n values). */
static void set_from_float(size_t n, const float *in, double *out)
{
  memset(out, 0, n * sizeof *out);
  nf_add_float(n, in, out);
}

void nf_mlp_forward_single(const nf_mlp *mlp, const float *params, size_t n, const double *x,
                           double *y, double *work)
{
  mlp_fws f = float_layout(mlp, n, work);
  nf_to_float(n * mlp->width[0], x, f.x);
  forward_f(mlp, params, n, f.x, f.y, f.net);
  set_from_float(n * mlp->width[mlp->n_layers], f.y, y);
}

void nf_mlp_backward_single(const nf_mlp *mlp, const float *params, size_t n, const double *g_y,
                            double *g_x, double *g_params, double *work)
{
  mlp_fws f = float_layout(mlp, n, work);
  nf_to_float(n * mlp->width[mlp->n_layers], g_y, f.y);
  if (g_params) memset(f.g_params, 0, mlp->n_params * sizeof *f.g_params);
  backward_f(mlp, params, n, f.x, f.y, g_x ? f.g_x : NULL, g_params ? f.g_params : NULL, f.net);
  if (g_params) nf_add_float(mlp->n_params, f.g_params, g_params);
  if (g_x) set_from_float(n * mlp->width[0], f.g_x, g_x);
}

void nf_mlp_forward(const nf_mlp *mlp, const double *params, size_t n,
                    const double *x, double *y, double *work)
{
  if (!mlp || !params || n == 0 || !x || !y || (mlp->n_layers > 1 && !work)) return;
  if (mlp->precision == NF_PRECISION_DOUBLE) {
    forward_d(mlp, params, n, x, y, work);
  } else if (work) { /* the weights as floats, then the single pass's workspace */
    nf_to_float(mlp->n_params, params, (float *)work);
    nf_mlp_forward_single(mlp, (const float *)work, n, x, y,
                          work + doubles_for_floats(mlp->n_params));
  }
}

void nf_mlp_backward(const nf_mlp *mlp, const double *params, size_t n,
                     const double *x, const double *g_y, double *g_x,
                     double *g_params, double *work)
{
  if (!mlp || !params || n == 0 || !x || !g_y || (!g_params && !g_x) ||
      (mlp->n_layers > 1 && !work))
    return;
  if (mlp->precision == NF_PRECISION_DOUBLE)
    backward_d(mlp, params, n, x, g_y, g_x, g_params, work);
  else if (work) /* the float weights and inputs forward left in work */
    nf_mlp_backward_single(mlp, (const float *)work, n, g_y, g_x, g_params,
                           work + doubles_for_floats(mlp->n_params));
}
