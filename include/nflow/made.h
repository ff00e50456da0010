/* nflow/made.h — MADE, the masked autoencoder for distribution estimation
   (Germain et al. 2015): an MLP whose weights are multiplied by binary masks
   so that output j depends only on the inputs before j in an order. It is the
   conditioner of autoregressive layers (MAF, IAF, NSF).

   Inputs are dim coordinates followed by ctx_dim context inputs; outputs are
   n_per_dim raw values per coordinate, coordinate-major: for row i the k-th
   output of coordinate j is y[(i dim + j) n_per_dim + k]. Each coordinate j
   has a degree, its position in the order plus one (1 .. dim); hidden unit u
   of every hidden layer has degree u mod (dim - 1) + 1 (as in MADE and zuko;
   0 when dim = 1), or u mod dim with a context; context inputs have degree 0. A connection from a unit of
   degree a to a hidden unit of degree b exists iff b >= a; to an output of
   coordinate j iff the source's degree is < deg(j). So every output sees the
   context, and output j sees exactly the coordinates before j in the order
   (when the hidden layers are wide enough: dim - 1 units, dim with a context).

   Like nf_mlp, the network holds only its shape and masks: the parameters are
   a caller's flat vector in the nf_mlp layout (for each layer W, rows =
   outputs, then b; masked entries are stored but have no effect and receive
   exactly zero gradient). A workspace of nf_made_work_size(n) doubles holds
   the masked weights W∘M (nf_made_mask, once per parameter vector), the
   record of the last forward pass and backward's scratch. */
#ifndef NFLOW_MADE_H
#define NFLOW_MADE_H

#include <stddef.h>
#include <stdint.h>
#include "nflow/mlp.h"
#include "nflow/rng.h"
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The order of the coordinates: 0, 1, .., d-1; d-1, .., 0; or a random
   permutation drawn from a seed (xoshiro256**, nf_rng_shuffle). */
typedef enum nf_order_kind { NF_ORDER_NATURAL = 0, NF_ORDER_REVERSED, NF_ORDER_RANDOM } nf_order_kind;

/* "natural", "reversed", "random" ("?" for another value). */
const char *nf_order_kind_name(nf_order_kind kind);
/* Parses those names; NF_EINVAL on another name or NULL (*kind untouched). */
nf_status nf_order_kind_parse(const char *name, nf_order_kind *kind);

typedef struct nf_made nf_made;

/* A MADE on dim coordinates plus ctx_dim context inputs, hidden widths
   hidden[0..n_hidden) (NULL if n_hidden = 0: one masked affine layer),
   n_per_dim outputs per coordinate, activation act after every hidden layer,
   order `order` (seed is used by NF_ORDER_RANDOM only). NULL (with nf_errmsg)
   on dim or n_per_dim 0, zero or NULL hidden widths, an unknown activation or
   order, or no memory. */
nf_made *nf_made_new(size_t dim, size_t ctx_dim, size_t n_hidden, const size_t *hidden,
                     size_t n_per_dim, nf_activation act, nf_order_kind order, uint64_t seed);
/* Frees the network; NULL is a no-op. */
void nf_made_free(nf_made *made);

/* Sizes (0 for NULL): coordinates, context inputs, outputs per coordinate,
   parameters (the nf_mlp count of (dim + ctx_dim) -> hidden -> dim n_per_dim). */
size_t nf_made_dim(const nf_made *made);
size_t nf_made_ctx_dim(const nf_made *made);
size_t nf_made_n_per_dim(const nf_made *made);
size_t nf_made_n_params(const nf_made *made);

/* order[k] = the coordinate at position k (dim entries, valid while made lives). */
const size_t *nf_made_order(const nf_made *made);

/* The binary mask of every parameter (n_params entries, 1 for biases): the
   parameters' effective values are theta ∘ mask. */
const double *nf_made_mask_of(const nf_made *made);

/* Uniform weights with LeCun's bound 1 / sqrt(fan_in) in the hidden layers
   (PyTorch's nn.Linear default; nf_mlp_init's He bound is 2.45x wider and
   cost 0.3 nats on a 16-D table, bench/tabular/README.md), Glorot's scaled by
   out_scale in the output layer (0 makes the outputs equal the output
   biases), zero biases, then masked weights set to 0. No-op on NULL arguments. */
void nf_made_init(const nf_made *made, nf_rng *rng, double out_scale, double *params);

/* The arithmetic of the passes, as nf_mlp_set_precision (nflow/mlp.h): in
   single precision nf_made_mask also converts the masked weights to float
   (once per parameter vector) and forward and backward run in float with
   sgemm; theta, inputs, outputs and gradients stay double. Set it once, right
   after nf_made_new, before sizing workspaces or sharing the network.
   NF_EINVAL (unchanged) on NULL or an unknown value. */
nf_status nf_made_set_precision(nf_made *made, nf_precision precision);
/* The precision set (NF_PRECISION_DOUBLE for NULL). */
nf_precision nf_made_precision(const nf_made *made);

/* Doubles of workspace for batches of up to n rows; 0 on overflow or NULL. */
size_t nf_made_work_size(const nf_made *made, size_t n);

/* Writes the masked parameters theta ∘ mask into work: call once for a theta,
   then any number of forward and backward passes. */
void nf_made_mask(const nf_made *made, const double *theta, double *work);

/* y = MADE(x, ctx) for n rows (x: n x dim, ctx: n x ctx_dim or NULL when
   ctx_dim = 0, y: n x dim n_per_dim) with the weights nf_made_mask wrote;
   records the pass in work. Hot path: silent return on NULL arguments. */
void nf_made_forward(const nf_made *made, size_t n, const double *x, const double *ctx,
                     double *y, double *work);

/* Backpropagation of g_y = dL/dy through the last nf_made_forward of n rows
   with this work: WRITES g_x (n x dim; NULL: not wanted), ADDS dL/dctx into
   g_ctx (n x ctx_dim; NULL: not wanted) and ADDS dL/dtheta into g_theta
   (NULL: not wanted; exactly 0 at masked entries). */
void nf_made_backward(const nf_made *made, size_t n, const double *g_y, double *g_x,
                      double *g_ctx, double *g_theta, double *work);

#ifdef __cplusplus
}
#endif
#endif
