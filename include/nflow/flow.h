/* nflow/flow.h — a base distribution and a chain of layers over one flat
   parameter vector theta (and one flat gradient of the same layout).

   Sampling order: z ~ p0, then layer 0, 1, ..., K-1 forward gives x; the
   density is log p(x) = log p0(z) + the sum of the inverse log-dets.

   Plan once, execute many (as FFTW): an nf_flow_ws holds every buffer the
   calls need for batches of up to max_rows rows. The _ws calls take a const
   flow, a workspace and a gradient buffer of the caller's, so any number of
   threads may evaluate one flow at once, each with its own workspace and
   buffer. The plain calls are the same with the flow's own workspace and
   gradient: one thread at a time.

   Theta is written only through checked calls (nf_flow_set_params, the
   trainer's optimizer step, which writes through it, and the model loader), which refuse
   non-finite values and values that make a map singular; evaluation never
   scans theta.

   Noise (Hutchinson probes, ...) comes from a counter-based stream keyed by
   the seed passed to a _ws call (the plain calls use the flow's seed,
   nf_flow_set_seed) and by each row's index in the caller's batch, so the
   noise a row sees never depends on workspaces, chunking, threads or
   save/load. Results are bit for bit the same for the same call (same rows,
   same max_rows) whatever the workspace or thread, and after save/load, on
   one machine with one BLAS build. A different chunking (another max_rows)
   may change the last bit (BLAS kernels block rows differently) and, for a
   CNF with an adaptive solver, changes its results within the solver's
   tolerance (the steps are chosen for the whole batch, as FFJORD does).
   Worker threads inside one call: nf_flow_ws_new_threads, nf_flow_set_threads. */
#ifndef NFLOW_FLOW_H
#define NFLOW_FLOW_H

#include <stddef.h>
#include <stdint.h>
#include "nflow/status.h"
#include "nflow/rng.h"
#include "nflow/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_base {
  NF_BASE_STD_NORMAL = 0, /* N(0, I), no parameters */
  NF_BASE_DIAG_NORMAL     /* N(mu, diag(exp(2 log_sigma))): mu then log_sigma, 2d
                             parameters, first in theta */
} nf_base;

/* "std_normal", "diag_normal"; nf_base_parse reads them back (NF_EINVAL otherwise). */
const char *nf_base_name(nf_base base);
nf_status nf_base_parse(const char *name, nf_base *base);

typedef struct nf_flow nf_flow;
typedef struct nf_flow_ws nf_flow_ws;

/* A flow on R^dim with conditioning width ctx_dim (0: unconditional).
   NULL (with nf_errmsg) on dim == 0, an unknown base or no memory. */
nf_flow *nf_flow_new(size_t dim, size_t ctx_dim, nf_base base);

/* Frees the flow and every layer it owns; NULL is a no-op. */
void nf_flow_free(nf_flow *flow);

/* Appends a layer in sampling order and takes ownership of it, on failure too
   (the layer is then freed), so nf_flow_push(f, nf_affine_new(...)) cannot
   leak. Its initial parameters are appended to theta. A layer built without a
   context joins a conditional flow and receives ctx = NULL. NF_EINVAL on a
   NULL argument or a layer already in a flow (not freed: its flow owns it),
   NF_EDIM on another dimension or context width, NF_ENOMEM. Amortised O(1). */
nf_status nf_flow_push(nf_flow *flow, nf_layer *layer);

size_t nf_flow_dim(const nf_flow *flow);
size_t nf_flow_ctx_dim(const nf_flow *flow);
size_t nf_flow_n_layers(const nf_flow *flow);
const nf_layer *nf_flow_layer(const nf_flow *flow, size_t k); /* NULL if k is out of range */

/* The base distribution, its parameter count (0 or 2 dim) and its
   parameters (the first nf_flow_base_n_params entries of theta). */
nf_base nf_flow_base(const nf_flow *flow);
size_t nf_flow_base_n_params(const nf_flow *flow);
const double *nf_flow_base_params(const nf_flow *flow);

/* theta: n_params doubles, the base's then each layer's in order; layer k's
   slice starts at nf_flow_param_offset(flow, k). Valid until the next push. */
size_t nf_flow_n_params(const nf_flow *flow);
const double *nf_flow_params(const nf_flow *flow);
size_t nf_flow_param_offset(const nf_flow *flow, size_t k);

/* Copies theta (n_params doubles) into the flow after checking it (every
   layer's nf_layer_check_params and the base's log_sigma); on failure the
   flow is unchanged and the message names the layer and parameter index. */
nf_status nf_flow_set_params(nf_flow *flow, const double *theta);

/* Checks theta for this flow without writing it (what nf_flow_set_params checks). */
nf_status nf_flow_check_params(const nf_flow *flow, const double *theta);

/* 1 while theta holds only the layers' constructor parameters: nothing has
   been written through nf_flow_set_params since the flow was made (not by
   the caller, the model loader, a trainer's step or state, or
   nf_flow_init_from_data); 0 after, and for NULL. */
int nf_flow_params_fresh(const nf_flow *flow);

/* Data-dependent initialisation (Glow's actnorm): pushes the n rows x
   (contexts ctx, NULL iff the flow is unconditional) through the chain in
   the density direction, layer K-1 down to 0; each layer whose family has
   the init_from_data op (layer_impl.h; actnorm) first sets its parameters
   from the rows entering it, then maps them on with those parameters. The
   new theta is written through nf_flow_set_params, so it is checked; other
   layers' parameters are unchanged. Noise is keyed by the flow's seed, rows
   0..n-1. NF_EINVAL on NULL arguments or n == 0, NF_ENONFINITE naming the
   row and column of a non-finite entry, NF_EDOMAIN (or another layer's
   status) prefixed with the layer; on failure the flow is unchanged. A flow
   without such layers is left as it is (NF_OK). */
nf_status nf_flow_init_from_data(nf_flow *flow, size_t n, const double *x, const double *ctx);

/* The gradient the plain calls write (n_params doubles). */
double *nf_flow_grad(nf_flow *flow);

/* Seed of the noise the plain calls draw (default 0). */
void nf_flow_set_seed(nf_flow *flow, uint64_t seed);
uint64_t nf_flow_seed(const nf_flow *flow);

/* ---- workspaces ---- */

/* Buffers for batches of up to max_rows rows of this flow (CNF integrators
   included, made once for any batch size up to max_rows). Larger batches are
   processed in chunks of max_rows by the inference calls; the gradient calls
   refuse them. NULL (with nf_errmsg) on a NULL flow, max_rows == 0 or no
   memory. A workspace belongs to the flow it was made for and is invalidated
   by nf_flow_push. */
nf_flow_ws *nf_flow_ws_new(const nf_flow *flow, size_t max_rows);
void nf_flow_ws_free(nf_flow_ws *ws);
size_t nf_flow_ws_rows(const nf_flow_ws *ws);

/* A workspace whose calls use n_threads worker threads (nflow/pool.h; 1:
   nf_flow_ws_new). It owns a pool and, unless a layer couples its rows
   (nf_layer_type.couples_rows: a CNF), one slice workspace per thread for
   ceil(max_rows / n_threads) rows and one gradient buffer per thread, so it
   holds about twice the memory of a serial one. Every _ws call splits its
   batch (each chunk of max_rows rows) into n_threads contiguous slices, a
   fixed function of the rows and n_threads, when each slice gets at least 8
   rows (smaller batches run on one thread); slice s runs on worker s with
   its global row numbers (noise and messages), and per-slice gradients are
   summed in slice order 0, 1, ..., so results are bit for bit the same for
   the same n_threads and agree with 1 thread to rounding. sample draws all
   z serially first. A flow with a row-coupling layer is not split: its
   layers receive the pool (nf_apply_opts.pool) and split their inner work.
   Errors: the lowest failing slice's status, its message prefixed with its
   global rows; outputs all or nothing as for every _ws call. One call at a
   time per workspace, like every workspace. NULL (with nf_errmsg) on
   n_threads == 0 or > NF_MAX_THREADS, or what nf_flow_ws_new refuses. */
nf_flow_ws *nf_flow_ws_new_threads(const nf_flow *flow, size_t max_rows, size_t n_threads);

/* Its thread count (1 for nf_flow_ws_new's; 0 for NULL). */
size_t nf_flow_ws_threads(const nf_flow_ws *ws);

/* Threads of the plain calls' own workspace (default 1; their inference
   chunks are 256 rows per thread). NF_EINVAL on a NULL flow, 0 or more than
   NF_MAX_THREADS. */
nf_status nf_flow_set_threads(nf_flow *flow, size_t n_threads);

/* ---- reentrant calls (const flow, caller's workspace) ----
   Common rules: x, out: n x dim; ctx: n x ctx_dim (NULL iff the flow is
   unconditional); NF_ENONFINITE names the first non-finite row and column of
   the caller's arrays (global row numbers). On failure the outputs are left
   untouched (all or nothing). */

/* log p(x_i | ctx_i) for n rows. */
nf_status nf_flow_log_prob_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                              const double *x, const double *ctx, double *logp);

/* x ~ p(. | ctx) for n rows (z from rng) and, if logp != NULL, log p(x). */
nf_status nf_flow_sample_ws(const nf_flow *flow, nf_flow_ws *ws, nf_rng *rng, size_t n,
                            const double *ctx, double *x, double *logp);

/* out = T(in) (NF_FORWARD: z -> x) or T^-1(in) (NF_INVERSE: x -> z) through the
   chain, without the base; logdet[i] (may be NULL) = the summed log|det| of
   the direction applied. */
nf_status nf_flow_transform_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, nf_dir dir,
                               size_t n, const double *in, const double *ctx, double *out,
                               double *logdet);

/* Mean negative log-likelihood of n rows, *nll; n may exceed the workspace (chunks). */
nf_status nf_flow_nll_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                         const double *x, const double *ctx, double *nll);

/* Mean NLL of n <= max_rows rows (plus the layers' penalties, e.g. a CNF's
   RNODE terms) and its gradient: OVERWRITES grad (n_params doubles) with
   d(mean NLL + penalty)/d theta; *penalty (may be NULL) gets the penalty part.
   On failure grad is zeroed and *nll untouched. */
nf_status nf_flow_nll_grad_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                              const double *x, const double *ctx, double *nll, double *grad,
                              double *penalty);

/* Pulls per-row cotangents g_logp (n) of log p(x_i) back: writes logp (may be
   NULL), g_x (n x dim, may be NULL), ADDS into g_ctx (may be NULL) and ADDS into
   g_theta (n_params, may be NULL). For weighted likelihoods and custom losses;
   n <= max_rows. */
nf_status nf_flow_log_prob_vjp_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                                  const double *x, const double *ctx, const double *g_logp,
                                  double *logp, double *g_x, double *g_ctx, double *g_theta);

/* log p(x_i), grad_x log p (n x dim) and grad_ctx log p (n x ctx_dim, may be
   NULL); no theta work. For MAP estimates with a flow prior and gradient-based
   samplers; n <= max_rows. */
nf_status nf_flow_log_prob_grad_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                                   const double *x, const double *ctx, double *logp,
                                   double *g_x, double *g_ctx);

/* Cotangents of a reparametrised sample (nf_flow_sample_grad_ws): given the n
   rows x = T(z) and their log q(x), WRITES g_x (n x dim) = dL/dx and
   g_log_q (n) = dL/d log q(x) of the caller's loss L. Returns NF_OK, or a
   status (with nf_set_error) that stops the call. */
typedef nf_status (*nf_sample_cotangent_fn)(size_t n, size_t dim, const double *x,
                                            const double *log_q, double *g_x, double *g_log_q,
                                            void *user);

/* Reparametrised sampling with gradients: z = mu + sigma eps from the
   caller's standard normal draws eps (n x dim; fixed draws give common random
   numbers), x = T(z) through the chain, log q(x) = log p0(z) - the summed
   forward log-dets; then cotangent(...) gives dL/dx and dL/d log q for each
   row, and their pullback through x(theta) and log q(x(theta)) (the total
   derivative: the path through x and the explicit dependence on theta) is
   ADDED into g_theta (n_params, may be NULL) and g_ctx (n x ctx_dim, may be
   NULL). x and log_q (may be NULL) receive the samples. Every layer's
   forward-direction vjp is used (a CNF through its adjoint, in the mode it
   was built with); the layers use their training estimators (a Hutchinson
   CNF its probes, keyed by seed and row) and no penalty. n <= max_rows.
   NF_EINVAL on NULL eps, x or cotangent; NF_ENONFINITE on a non-finite draw
   or cotangent; the cotangent's status; a layer's. On failure g_theta and
   g_ctx are untouched. */
nf_status nf_flow_sample_grad_ws(const nf_flow *flow, nf_flow_ws *ws, uint64_t seed, size_t n,
                                 const double *eps, const double *ctx,
                                 nf_sample_cotangent_fn cotangent, void *user, double *x,
                                 double *log_q, double *g_ctx, double *g_theta);

/* ---- convenience calls: the flow's own workspace (grown as needed), its
   gradient and its seed; one thread at a time per flow ---- */
nf_status nf_flow_log_prob(nf_flow *flow, size_t n, const double *x, const double *ctx,
                           double *logp);
nf_status nf_flow_sample(nf_flow *flow, nf_rng *rng, size_t n, const double *ctx, double *x,
                         double *logp);
nf_status nf_flow_transform(nf_flow *flow, nf_dir dir, size_t n, const double *in,
                            const double *ctx, double *out, double *logdet);
nf_status nf_flow_nll(nf_flow *flow, size_t n, const double *x, const double *ctx, double *nll);
/* Into nf_flow_grad(flow); the penalty part is then nf_flow_penalty(flow). */
nf_status nf_flow_nll_grad(nf_flow *flow, size_t n, const double *x, const double *ctx,
                           double *nll);
nf_status nf_flow_log_prob_grad(nf_flow *flow, size_t n, const double *x, const double *ctx,
                                double *logp, double *g_x, double *g_ctx);
/* nf_flow_sample_grad_ws with draws eps from rng, the flow's workspace and
   seed, OVERWRITING nf_flow_grad(flow) with the pullback (no g_ctx). */
nf_status nf_flow_sample_grad(nf_flow *flow, nf_rng *rng, size_t n, const double *ctx,
                              nf_sample_cotangent_fn cotangent, void *user, double *x,
                              double *log_q);
/* Sizes the flow's own workspace for batches of up to n rows now. */
nf_status nf_flow_reserve(nf_flow *flow, size_t n);
/* The penalty part of the objective at the last nf_flow_nll_grad. */
double nf_flow_penalty(const nf_flow *flow);

#ifdef __cplusplus
}
#endif
#endif
