/* nflow/mlp.h — batched multilayer perceptron (rows = batch, one dgemm per layer). */
#ifndef NFLOW_MLP_H
#define NFLOW_MLP_H

#include <stddef.h>
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

/* NULL (with nf_errmsg) on zero widths or allocation failure. */
nf_mlp *nf_mlp_new(size_t n_in, size_t n_hidden, const size_t *hidden,
                   size_t n_out, nf_activation act);
void nf_mlp_free(nf_mlp *mlp);

size_t nf_mlp_n_in(const nf_mlp *mlp);
size_t nf_mlp_n_out(const nf_mlp *mlp);
size_t nf_mlp_n_params(const nf_mlp *mlp);

/* Parses "relu", "tanh", "elu", "softplus", "identity". */
nf_status nf_activation_parse(const char *name, nf_activation *act);

/* He/Glorot-uniform weights, zero biases; the output layer's weights are
   multiplied by out_scale (0 makes the net output exactly 0 at start). */
void nf_mlp_init(const nf_mlp *mlp, nf_rng *rng, double out_scale, double *params);

/* Doubles of workspace for a batch of n: hidden activations (the record
   backward reads) followed by backward scratch. */
size_t nf_mlp_work_size(const nf_mlp *mlp, size_t n);

/* y = mlp(x) for n rows: x is n x n_in, y is n x n_out; records into work. */
void nf_mlp_forward(const nf_mlp *mlp, const double *params, size_t n,
                    const double *x, double *y, double *work);

/* Backpropagation of g_y = dL/dy after nf_mlp_forward with the same x and work:
   writes g_x (n x n_in; may be NULL) and ADDS dL/dparams into g_params. */
void nf_mlp_backward(const nf_mlp *mlp, const double *params, size_t n,
                     const double *x, const double *g_y, double *g_x,
                     double *g_params, double *work);

/* Multiply-adds of one forward pass per row (for FLOP accounting). */
double nf_mlp_flops_per_row(const nf_mlp *mlp);

#ifdef __cplusplus
}
#endif
#endif
