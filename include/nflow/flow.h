/* nflow/flow.h — a base distribution and a chain of layers with one flat
   parameter vector theta and one flat gradient vector.

   A flow owns the workspaces of its calls (sized once per batch size, grown
   when a larger batch comes), so one flow serves one thread at a time; its
   layers keep no per-call state and may serve several threads through
   nf_layer_apply/nf_layer_vjp with a workspace each. */
#ifndef NFLOW_FLOW_H
#define NFLOW_FLOW_H

#include <stddef.h>
#include "nflow/status.h"
#include "nflow/rng.h"
#include "nflow/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_base {
  NF_BASE_STD_NORMAL = 0, /* N(0, I), no parameters */
  NF_BASE_DIAG_NORMAL     /* N(mu, diag(exp(2 log_sigma))): 2d parameters, first in theta */
} nf_base;

typedef struct nf_flow nf_flow;

/* A flow on R^dim with conditioning width ctx_dim (0: unconditional).
   NULL (with nf_errmsg) on dim == 0 or allocation failure. */
nf_flow *nf_flow_new(size_t dim, size_t ctx_dim, nf_base base);

/* Frees the flow and every layer it owns; NULL is a no-op. */
void nf_flow_free(nf_flow *flow);

/* Appends a layer in sampling order: z -> layer 0 -> layer 1 -> ... -> x.
   On NF_OK the flow owns the layer and its parameters move into theta
   (values kept); on failure (NF_EDIM, NF_EINVAL, NF_ENOMEM) the caller keeps it. */
nf_status nf_flow_push(nf_flow *flow, nf_layer *layer);

size_t nf_flow_dim(const nf_flow *flow);
size_t nf_flow_ctx_dim(const nf_flow *flow);
size_t nf_flow_n_layers(const nf_flow *flow);
nf_layer *nf_flow_layer(nf_flow *flow, size_t k); /* NULL if k is out of range */

/* The flat vectors (n_params doubles each); valid until the next nf_flow_push. */
size_t nf_flow_n_params(const nf_flow *flow);
double *nf_flow_params(nf_flow *flow);
double *nf_flow_grad(nf_flow *flow);

/* Sizes the workspaces for batches of up to n rows now rather than on first use. */
nf_status nf_flow_reserve(nf_flow *flow, size_t n);

/* log p(x_i) for n rows: inverse through the chain, plus log p0(z).
   NF_ENONFINITE if a row of x (or ctx) is not finite; logp is then untouched. */
nf_status nf_flow_log_prob(nf_flow *flow, size_t n, const double *x,
                           const double *ctx, double *logp);

/* n samples x ~ p (n x d) and, if logp != NULL, their log-densities. */
nf_status nf_flow_sample(nf_flow *flow, nf_rng *rng, size_t n, const double *ctx,
                         double *x, double *logp);

/* Mean negative log-likelihood of a batch; does not touch the gradient.
   Works in chunks, so n may exceed any reserved batch size. */
nf_status nf_flow_nll(nf_flow *flow, size_t n, const double *x, const double *ctx,
                      double *nll);

/* Mean NLL of a batch and its gradient: OVERWRITES the flat gradient with
   d(mean NLL + penalty)/d theta, where penalty is the sum of the layers'
   regularisation penalties (RNODE's kinetic and Jacobian terms of a CNF; 0 for
   discrete layers), given by nf_flow_penalty. On failure the gradient is zero
   and *nll untouched. */
nf_status nf_flow_nll_grad(nf_flow *flow, size_t n, const double *x,
                           const double *ctx, double *nll);

/* The penalty part of the objective at the last nf_flow_nll_grad. */
double nf_flow_penalty(const nf_flow *flow);

#ifdef __cplusplus
}
#endif
#endif
