/* nflow/mlp.h — batched multilayer perceptron (rows = batch, one dgemm per layer). */
#ifndef NFLOW_MLP_H
#define NFLOW_MLP_H

#include <stddef.h>
#include "nflow/precision.h"
#include "nflow/status.h"
#include "nflow/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_activation {
  NF_ACT_IDENTITY = 0,
  NF_ACT_RELU,
  NF_ACT_TANH,
  NF_ACT_ELU,
  NF_ACT_SOFTPLUS
} nf_activation;

/* Shape of an MLP: n_in -> hidden[0] -> ... -> hidden[n_hidden-1] -> n_out,
   activation after every hidden layer, none after the output layer. The
   object holds only the shape; parameters live in a caller's flat vector:
   for each layer, W (rows = outputs, row-major) then b. */
typedef struct nf_mlp nf_mlp;

/* The shape n_in -> hidden[0..n_hidden) -> n_out (hidden may be NULL if
   n_hidden == 0: a single affine layer). NULL (with nf_errmsg) on zero widths,
   NULL hidden widths, an unknown activation or allocation failure. */
nf_mlp *nf_mlp_new(size_t n_in, size_t n_hidden, const size_t *hidden,
                   size_t n_out, nf_activation act);
/* Frees the shape; NULL is a no-op. */
void nf_mlp_free(nf_mlp *mlp);

/* Input width, output width, and sum over layers of (n_in + 1) n_out (0 for NULL). */
size_t nf_mlp_n_in(const nf_mlp *mlp);
size_t nf_mlp_n_out(const nf_mlp *mlp);
size_t nf_mlp_n_params(const nf_mlp *mlp);

/* "identity", "relu", "tanh", "elu" or "softplus" ("?" for another value). */
const char *nf_activation_name(nf_activation act);

/* Parses "relu", "tanh", "elu", "softplus", "identity" (lower case); NF_EINVAL
   on another name or a NULL argument (*act then untouched). */
nf_status nf_activation_parse(const char *name, nf_activation *act);

/* Hidden weights uniform(-a, a) with a = sqrt(6 / fan_in) (He) for relu and
   elu, a = sqrt(6 / (fan_in + fan_out)) (Glorot) otherwise; output weights
   Glorot-uniform times out_scale (0 makes the output exactly 0); zero biases.
   No-op if an argument is NULL. */
void nf_mlp_init(const nf_mlp *mlp, nf_rng *rng, double out_scale, double *params);

/* The arithmetic of the passes (nflow/precision.h). NF_PRECISION_DOUBLE (the
   default) runs them in double with dgemm. NF_PRECISION_SINGLE converts the
   weights and inputs to float once per forward call, runs the products with
   sgemm and the activations in float, and converts outputs and gradients back
   (weight gradients are ADDED to the double g_params): parameters, inputs and
   outputs stay double, results agree with double to about 1e-6 relative.
   Set it once, right after nf_mlp_new and before the network is shared
   between threads or its workspace sized (nf_mlp_work_size depends on it).
   NF_EINVAL (unchanged) on NULL or an unknown value. */
nf_status nf_mlp_set_precision(nf_mlp *mlp, nf_precision precision);
/* The precision set (NF_PRECISION_DOUBLE for NULL). */
nf_precision nf_mlp_precision(const nf_mlp *mlp);

/* Doubles of workspace for a batch of n. Double precision: hidden activations
   (the record backward reads, n x sum of hidden widths) followed by backward
   scratch (2 n x widest hidden layer); 0 without hidden layers. Single
   precision, in floats: the converted weights and a weight-gradient buffer
   (n_params each), the input and its cotangent (n x n_in each), the output
   (n x n_out), then the same record and scratch; never 0. */
size_t nf_mlp_work_size(const nf_mlp *mlp, size_t n);

/* y = mlp(x) for n rows: x is n x n_in, y is n x n_out; records into work.
   Hot path: no checks beyond a silent return (y untouched) on NULL arguments
   or n == 0; work may be NULL without hidden layers in double precision. */
void nf_mlp_forward(const nf_mlp *mlp, const double *params, size_t n,
                    const double *x, double *y, double *work);

/* Backpropagation of g_y = dL/dy after nf_mlp_forward with the same params,
   x and work (in single precision it reads the float weights and inputs that
   forward left in work; any number of calls after one forward): writes g_x (n x n_in; may be NULL) and ADDS dL/dparams into
   g_params (may be NULL: no weight gradients, half the work). Silent return
   when both are NULL, on other NULL arguments or n == 0. */
void nf_mlp_backward(const nf_mlp *mlp, const double *params, size_t n,
                     const double *x, const double *g_y, double *g_x,
                     double *g_params, double *work);

/* Multiply-adds of one forward pass per row, sum of n_in n_out over layers
   (FLOP accounting: forward 2x this per row, backward 4x). */
double nf_mlp_flops_per_row(const nf_mlp *mlp);

#ifdef __cplusplus
}
#endif
#endif
