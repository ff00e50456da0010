/* nflow/layer.h — the one interface: a step on the state (x, logdet).

   A layer maps a batch of n rows (row-major n x d) in one direction:
     NF_FORWARD  z -> x  (sampling; ODE time t0 -> t1)
     NF_INVERSE  x -> z  (normalizing, density evaluation; t1 -> t0)
   and adds log|det d out_i / d in_i| to logdet[i] for the direction applied, so
     log p(x) = log p0(z) + sum of the inverse log-dets.

   Like a SUNDIALS ops table, nf_layer_type holds the operations of one family
   and nf_layer one instance; anybody may implement a new family. */
#ifndef NFLOW_LAYER_H
#define NFLOW_LAYER_H

#include <stddef.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_dir { NF_FORWARD = 0, NF_INVERSE = 1 } nf_dir;

typedef struct nf_layer nf_layer;

/* Operations of one layer family. Contracts, for every implementation:
   - in, out: n x d, never aliased; ctx: n x c, NULL iff c == 0.
   - apply writes out and ADDS to logdet[0..n) (logdet may be NULL: not wanted).
     It may leave a record in work (work_size(n) doubles) for vjp.
   - vjp is the vector-Jacobian product of in -> (out, logdet): given
     g_out = dL/d out (n x d) and g_logdet = dL/d logdet (n; NULL means zero),
     it WRITES g_in = dL/d in (NULL: not wanted), ADDS dL/d ctx into g_ctx
     (NULL: not wanted) and ADDS dL/d theta into layer->grad. It reads the
     record that apply(dir, n, in, ctx) left in work: call apply first, with the
     same arguments and workspace.
   - Neither keeps per-call state in the layer, so one layer may serve several
     threads with several workspaces. */
typedef struct nf_layer_type {
  const char *name;
  size_t (*work_size)(const nf_layer *layer, size_t n);
  nf_status (*apply)(const nf_layer *layer, nf_dir dir, size_t n,
                     const double *in, const double *ctx,
                     double *out, double *logdet, double *work);
  nf_status (*vjp)(const nf_layer *layer, nf_dir dir, size_t n,
                   const double *in, const double *ctx, const double *out,
                   const double *g_out, const double *g_logdet,
                   double *g_in, double *g_ctx, double *work);
  void (*destroy)(void *data); /* frees the family's private data; may be NULL */
  /* Optional (NULL for most families): */
  /* Frees what apply keeps in a workspace beyond plain doubles (a solver and its
     checkpoints); whoever frees a workspace calls it first. Such a layer finds its
     workspace zeroed when first used, and its workspace is never shared with
     another layer. */
  void (*work_release)(const nf_layer *layer, size_t n, double *work);
  /* Regularisation penalty of the last apply with this workspace (e.g. RNODE's
     weighted kinetic energy), already averaged over the batch; vjp adds its
     gradient. */
  double (*penalty)(const nf_layer *layer, size_t n, const double *work);
} nf_layer_type;

/* One layer instance. params and grad are views of n_params doubles: into the
   layer's own storage until the layer joins a flow, into the flow's flat
   parameter and gradient vectors after. */
struct nf_layer {
  const nf_layer_type *type;
  size_t dim;      /* d */
  size_t ctx_dim;  /* c: width of the conditioning input, 0 if none */
  size_t n_params;
  double *params;
  double *grad;
  double *storage; /* own 2 * n_params doubles (params, then grad); NULL once in a flow */
  void *data;      /* family-specific, owned */
};

/* For implementers: a layer of `type` with zeroed parameters and gradient;
   takes ownership of data (destroyed on failure too). NULL on allocation failure. */
nf_layer *nf_layer_create(const nf_layer_type *type, size_t dim, size_t ctx_dim,
                          size_t n_params, void *data);

/* Frees a layer not owned by a flow; NULL is a no-op. */
void nf_layer_free(nf_layer *layer);

/* Doubles of workspace apply and vjp need for a batch of n rows. */
size_t nf_layer_work_size(const nf_layer *layer, size_t n);

/* A zeroed workspace for batches of n rows (NULL with nf_errmsg on no memory;
   a valid pointer even when the layer needs none). Free it with nf_layer_work_free. */
double *nf_layer_work_new(const nf_layer *layer, size_t n);

/* Releases what the layer keeps in work, then frees it; NULL is a no-op. */
void nf_layer_work_free(const nf_layer *layer, size_t n, double *work);

/* Checked apply: NF_EINVAL on NULL arrays or n == 0, NF_ENONFINITE on a
   non-finite input (out and logdet are then untouched). work may be NULL if
   nf_layer_work_size(layer, n) == 0. */
nf_status nf_layer_apply(const nf_layer *layer, nf_dir dir, size_t n,
                         const double *in, const double *ctx,
                         double *out, double *logdet, double *work);

/* Checked vjp (see nf_layer_type); the same argument checks as nf_layer_apply. */
nf_status nf_layer_vjp(const nf_layer *layer, nf_dir dir, size_t n,
                       const double *in, const double *ctx, const double *out,
                       const double *g_out, const double *g_logdet,
                       double *g_in, double *g_ctx, double *work);

#ifdef __cplusplus
}
#endif
#endif
