/* nflow/layer.h — the one interface: a step on the state (x, logdet).

   A layer maps a batch of n rows (row-major n x d) in one direction:
     NF_FORWARD  z -> x  (sampling; ODE time t0 -> t1)
     NF_INVERSE  x -> z  (normalizing, density evaluation; t1 -> t0)
   and adds log|det d out_i / d in_i| to logdet[i] for the direction applied, so
     log p(x) = log p0(z) + sum of the inverse log-dets.
   This is TensorFlow Probability's convention (forward samples). zuko names
   the other way round: its transforms map x -> z, so zuko's "forward" is our
   NF_INVERSE.

   A layer is immutable after construction, like an FFTW plan: its parameters
   theta are an argument of every call (the layer's slice of a flow's flat
   vector), each call's scratch lives in a caller's workspace, and parameter
   gradients go into the caller's g_theta. So one layer serves any number of
   threads at once, each with its own workspace and gradient buffer. Nothing
   in the library writes through a const nf_layer *.

   Families live one per header (affine.h, coupling.h, cnf.h, ...); writing
   a new family: layer_impl.h. */
#ifndef NFLOW_LAYER_H
#define NFLOW_LAYER_H

#include <stddef.h>
#include <stdint.h>
#include "nflow/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_dir { NF_FORWARD = 0, NF_INVERSE = 1 } nf_dir;

/* "forward" or "inverse" ("?" for another value). */
const char *nf_dir_name(nf_dir dir);

typedef struct nf_layer nf_layer;

/* Per-call inputs of apply beyond the batch (NULL means all zero):
   - noise (Hutchinson probes, ...) is drawn from a counter-based stream keyed
     by seed and by the global row index row0 + i of batch row i, so results
     do not depend on workspaces, chunking or threads;
   - penalty_weight is the weight of this call's regularisation penalty (a
     CNF's RNODE terms, averaged over the n rows) in the caller's objective:
     vjp adds penalty_weight times the penalty's gradient (0: none);
   - exact != 0 asks a layer whose log-det is a stochastic estimate (a CNF
     with a Hutchinson trace; not yet a residual flow's series) for the exact
     log-det where that is affordable (d <= NF_EXACT_LOGDET_MAX_DIM): a flow's
     evaluation verbs (log_prob, nll, sample, transform, log_prob_grad) set
     it, its training verbs (nll_grad, log_prob_vjp) do not;
   - pool (NULL: serial) lends worker threads to a layer whose rows are
     coupled (nf_layer_type.couples_rows: a CNF's adaptive solve), which a
     threaded flow workspace does not split but hands its pool instead; the
     layer splits its own inner work (results agree with the serial ones to
     rounding). A layer that keeps state for vjp keeps the pool with it. */
typedef struct nf_pool nf_pool;
typedef struct nf_apply_opts {
  uint64_t seed;
  size_t row0;
  double penalty_weight;
  int exact;
  const nf_pool *pool;
} nf_apply_opts;

/* The largest dimension at which estimating layers honour nf_apply_opts.exact
   (the exact trace costs d tangent passes per evaluation). */
#define NF_EXACT_LOGDET_MAX_DIM 128

/* Frees a layer that no flow owns; NULL is a no-op. A layer owned by a flow
   is left alone (the flow frees it) and NF_ESTATE is recorded for
   nf_last_status()/nf_errmsg(). */
void nf_layer_free(nf_layer *layer);

/* The family's name ("affine", "coupling", "cnf", ...), d, c, and the number
   of parameters; 0 or "" for NULL. */
const char *nf_layer_name(const nf_layer *layer);
size_t nf_layer_dim(const nf_layer *layer);
size_t nf_layer_ctx_dim(const nf_layer *layer); /* 0: takes no context */
size_t nf_layer_n_params(const nf_layer *layer);

/* The parameters the constructor chose (its initialisation; all zero when it
   was given no rng): n_params doubles, valid while the layer lives. A flow
   copies them into its flat vector when the layer joins it. */
const double *nf_layer_init_params(const nf_layer *layer);

/* Checks theta (n_params doubles) for this layer: NF_ENONFINITE naming the
   first non-finite entry, or NF_EDOMAIN naming an entry that makes the map
   singular or overflow (e.g. a log-scale whose exp underflows to 0). This is
   the check every writer of theta runs (nf_flow_set_params, the optimizer
   step, the model loader), so evaluation never scans theta. */
nf_status nf_layer_check_params(const nf_layer *layer, const double *theta);

/* Doubles of workspace apply and vjp need for a batch of n rows; 0 on
   overflow or a NULL layer (nf_layer_work_new then refuses). */
size_t nf_layer_work_size(const nf_layer *layer, size_t n);

/* A zeroed workspace for batches of up to n rows (NULL with nf_errmsg on no
   memory). Free it with nf_layer_work_free. */
double *nf_layer_work_new(const nf_layer *layer, size_t n);

/* Releases what the layer keeps in work (a solver), then frees it; NULL is a no-op. */
void nf_layer_work_free(const nf_layer *layer, size_t n, double *work);

/* out = T(in) (NF_FORWARD) or T^-1(in) (NF_INVERSE) for n rows, and ADDS the
   direction's log|det| to logdet[0..n) (logdet may be NULL). theta: the
   layer's n_params parameters, as checked by nf_layer_check_params. ctx:
   n x c, or NULL when the layer takes no context (a layer without one also
   accepts any ctx and ignores it). work: a workspace of at least n rows; it
   keeps the record vjp reads. NF_EINVAL on NULL arrays, n == 0 or aliased
   in/out; NF_ENONFINITE on a non-finite input (out and logdet untouched). */
nf_status nf_layer_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                         const double *in, const double *ctx, double *out, double *logdet,
                         const nf_apply_opts *opts, double *work);

/* Vector-Jacobian product of in -> (out, logdet) after nf_layer_apply with the
   same theta, dir, n, in, ctx and work: given g_out = dL/d out (n x d) and
   g_logdet = dL/d logdet (n; NULL means zero) it WRITES g_in (NULL: not
   wanted), ADDS dL/d ctx into g_ctx (NULL: not wanted) and ADDS dL/d theta into
   g_theta (NULL: not wanted). NF_ESTATE if work holds no matching apply (for
   layers that can tell); a family that cannot pull back a direction says so
   with NF_EINVAL, never a wrong number. */
nf_status nf_layer_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                       const double *in, const double *ctx, const double *out,
                       const double *g_out, const double *g_logdet, double *g_in, double *g_ctx,
                       double *g_theta, double *work);

#ifdef __cplusplus
}
#endif
#endif
