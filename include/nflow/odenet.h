/* nflow/odenet.h — the dynamics network f(t, z; theta) of a continuous
   normalizing flow (FFJORD, Grathwohl et al. 2018), with every derivative the
   CNF and its adjoint need: J v, u^T J, the exact trace tr(df/dz), Hutchinson's
   v^T J v, the RNODE regularisers (Finlay et al. 2020) and the gradient of a
   weighted sum of all of them with respect to z, theta, t and the context.

   Network: an MLP  dim -> hidden[0] -> ... -> hidden[L-1] -> dim, a smooth
   activation after each hidden layer, none after the last. Every affine layer
   (input h of width p, output of width q) sees the time t, one kind for the
   whole net:
     NF_ODENET_CONCATSQUASH  y = (W h + b) * sigmoid(w_g t + b_g) + w_b t
                             (FFJORD's ConcatSquashLinear; per-unit gate and
                             time bias, w_b has no bias term);
     NF_ODENET_CONCAT        y = W h + w_t t + b  (= W' [h, t] + b, FFJORD's
                             ConcatLinear);
     NF_ODENET_SINUSOIDAL    y = W h + U e(t) + b, with the fixed embedding
                             e(t) = (sin(w_1 t), cos(w_1 t), ..., sin(w_K t), cos(w_K t)),
                             K = NF_ODENET_N_FREQ = 4, w_k = 2^(k-1) (1, 2, 4, 8).
   Conditional flows p(x|y): the context ctx (width c) is appended to the input
   of the FIRST layer only, h_0 = [z, ctx] (p_0 = dim + c); J and the trace are
   with respect to z only.

   Parameter layout (a caller's flat vector theta of nf_odenet_n_params()
   doubles), layer after layer, each layer (p inputs, q outputs) as
     W (q x p, row-major: row j holds the weights of output unit j), then
     concatsquash: b (q), w_g (q), b_g (q), w_b (q);
     concat:       w_t (q), b (q);
     sinusoidal:   U (q x 2K, row-major, columns in the order of e(t)), b (q).

   Batching: z is n x dim (rows = samples), ctx n x c, t one scalar for the
   whole batch. Every product with W is one cblas_dgemm over the batch; the
   tangents (directions d in z-space) are carried as extra rows of the same
   matrices, so the exact trace propagates the dim unit directions e_1..e_dim
   of all n rows as one (n * dim)-row matrix: one dgemm per layer, not dim
   passes. The calls allocate nothing: they use the caller's workspace of
   nf_odenet_work_size() doubles (scratch only, nothing is kept between calls;
   one net may serve several threads with several workspaces).

   Conventions of the calls: outputs are WRITTEN, except g_params and g_ctx
   which are ADDED to. Optional outputs may be NULL (not wanted). Errors:
   NF_EINVAL for a NULL net/params/work/array that is required, n == 0, a NULL
   ctx when c > 0 (ctx is ignored when c == 0), or n (1 + dim) beyond the range
   of a BLAS int; NF_ENONFINITE for a non-finite t or input entry (outputs are then
   untouched). Activations are smooth (the adjoint of the trace needs second
   derivatives), hence their own enum rather than nf_activation. */
#ifndef NFLOW_ODENET_H
#define NFLOW_ODENET_H

#include <stddef.h>
#include "nflow/precision.h"
#include "nflow/status.h"
#include "nflow/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How each layer sees the time t (see above). */
typedef enum nf_odenet_kind {
  NF_ODENET_CONCATSQUASH = 0,
  NF_ODENET_CONCAT,
  NF_ODENET_SINUSOIDAL
} nf_odenet_kind;

/* Smooth activations (twice differentiable): tanh, softplus log(1 + e^x),
   swish x * sigmoid(x) (Ramachandran et al. 2017, fixed beta = 1). */
typedef enum nf_odenet_act {
  NF_ODENET_TANH = 0,
  NF_ODENET_SOFTPLUS,
  NF_ODENET_SWISH
} nf_odenet_act;

/* Number K of frequencies of the sinusoidal time embedding (2K features). */
#define NF_ODENET_N_FREQ 4

/* Shape of the network; holds no parameters. */
typedef struct nf_odenet nf_odenet;

/* A net dim (+ ctx_dim) -> hidden[0..n_hidden) -> dim; NULL (with nf_errmsg) on
   dim == 0, a zero hidden width, NULL hidden with n_hidden > 0, an unknown
   kind or activation, or allocation failure. n_hidden == 0 gives one affine layer. */
nf_odenet *nf_odenet_new(size_t dim, size_t ctx_dim, size_t n_hidden, const size_t *hidden,
                         nf_odenet_kind kind, nf_odenet_act act);

/* Frees the net; NULL is a no-op. */
void nf_odenet_free(nf_odenet *net);

/* dim, the width of z and of f (0 for a NULL net). */
size_t nf_odenet_dim(const nf_odenet *net);

/* c, the width of the context (0 for a NULL net or an unconditional one). */
size_t nf_odenet_ctx_dim(const nf_odenet *net);

/* Length of the flat parameter vector theta (layout above). */
size_t nf_odenet_n_params(const nf_odenet *net);

/* Parses "concatsquash", "concat", "sinusoidal". */
nf_status nf_odenet_kind_parse(const char *name, nf_odenet_kind *kind);

/* Parses "tanh", "softplus", "swish". */
nf_status nf_odenet_act_parse(const char *name, nf_odenet_act *act);

/* The names the parsers read ("?" for another value). */
const char *nf_odenet_kind_name(nf_odenet_kind kind);
const char *nf_odenet_act_name(nf_odenet_act act);

/* FFJORD-like default init (PyTorch nn.Linear): every parameter of an affine
   map with fan-in m ~ U(-1/sqrt(m), 1/sqrt(m)); the fan-in counts the time
   inputs (concat: p + 1, sinusoidal: p + 2K) and, in layer 0, the context;
   concatsquash's gate and time-bias maps have fan-in 1, so w_g, b_g, w_b ~ U(-1, 1). */
nf_status nf_odenet_init(const nf_odenet *net, nf_rng *rng, double *params);

/* The arithmetic of every pass (nflow/precision.h): set once by the owner right
   after nf_odenet_new, before the workspace is sized (the single-precision
   workspace holds float copies of the weights). In NF_PRECISION_SINGLE the
   products run in cblas_sgemm and the activations and their first and second
   derivatives in float; theta, z, ctx, t, every output and every gradient stay
   double (float gradients are accumulated into double; tr, kin, jac sum in
   double). NF_EINVAL for a NULL net or an unknown precision. */
nf_status nf_odenet_set_precision(nf_odenet *net, nf_precision precision);

/* The net's precision (NF_PRECISION_DOUBLE for a NULL net). */
nf_precision nf_odenet_precision(const nf_odenet *net);

/* Doubles of workspace for a batch of n rows (in the net's precision). exact_trace != 0: enough for every
   call; exact_trace == 0: enough for every call that does not take the exact
   trace (eval, jvp, vjp, and trace/adjoint with a probe). */
size_t nf_odenet_work_size(const nf_odenet *net, size_t n, int exact_trace);

/* f_i = f(t, z_i, ctx_i) (n x dim; f required). */
nf_status nf_odenet_eval(const nf_odenet *net, const double *params, size_t n, double t,
                         const double *z, const double *ctx, double *f, double *work);

/* Jacobian-vector product jv_i = J_i v_i, J_i = df/dz at row i (v, jv: n x dim,
   required); also writes f if non-NULL. */
nf_status nf_odenet_jvp(const nf_odenet *net, const double *params, size_t n, double t,
                        const double *z, const double *ctx, const double *v,
                        double *f, double *jv, double *work);

/* Vector-Jacobian product of L = sum_i u_i . f_i (u: n x dim, required): WRITES g_z_i = u_i^T J_i
   and *g_t = dL/dt, ADDS dL/dtheta into g_params and dL/dctx into g_ctx; each of
   f, g_z, g_params, g_t, g_ctx may be NULL. */
nf_status nf_odenet_vjp(const nf_odenet *net, const double *params, size_t n, double t,
                        const double *z, const double *ctx, const double *u,
                        double *f, double *g_z, double *g_params, double *g_t,
                        double *g_ctx, double *work);

/* The CNF right-hand side: f (n x dim) and the divergence estimate per row,
     tr_i = tr(J_i) exactly (probe == NULL)  or  tr_i = v_i^T J_i v_i (Hutchinson;
     probe v: n x dim, e.g. Rademacher or Gaussian),
   and, if non-NULL, the RNODE terms k_i = |f_i|^2 and
     j_i = |J_i v_i|^2 (probe)  or  j_i = ||J_i||_F^2 = sum_k |J_i e_k|^2 (exact),
   an unbiased estimate of ||J_i||_F^2 for probes with E[v v^T] = I.
   f and tr are required; kin and jac may be NULL. */
nf_status nf_odenet_trace(const nf_odenet *net, const double *params, size_t n, double t,
                          const double *z, const double *ctx, const double *probe,
                          double *f, double *tr, double *kin, double *jac, double *work);

/* The CNF adjoint right-hand side: with tr_i, k_i, j_i as in nf_odenet_trace
   (same probe) and per-row weights a (n x dim), w, wk, wj (n; NULL = term absent),
     S = sum_i [ a_i . f_i + w_i tr_i + wk_i k_i + wj_i j_i ],
   WRITES g_z = dS/dz (n x dim) and *g_t = dS/dt, ADDS dS/dtheta into g_params and
   dS/dctx into g_ctx; also writes the forward values f, tr, kin, jac. Every
   output may be NULL (not wanted). Second order: reverse mode over the
   forward-mode tangents, with the activations' second derivatives. */
nf_status nf_odenet_adjoint(const nf_odenet *net, const double *params, size_t n, double t,
                            const double *z, const double *ctx, const double *probe,
                            const double *a, const double *w, const double *wk,
                            const double *wj, double *f, double *tr, double *kin,
                            double *jac, double *g_z, double *g_params, double *g_t,
                            double *g_ctx, double *work);

/* Floating-point operations per row of nf_odenet_trace (matrix products only,
   2 per multiply-add): exact_trace != 0 for probe == NULL (1 + dim directions
   of rows), 0 for a probe (2 rows). */
double nf_odenet_trace_flops(const nf_odenet *net, int exact_trace);

/* Floating-point operations per row of nf_odenet_adjoint with the trace term
   (matrix products only, 2 per multiply-add): the forward pass plus the two
   products per layer of the reverse pass. */
double nf_odenet_adjoint_flops(const nf_odenet *net, int exact_trace);

#ifdef __cplusplus
}
#endif
#endif
