/* nflow/cnf.h — continuous normalizing flow layer (FFJORD, Grathwohl et al. 2018;
   Chen et al. 2018): the time-T map of dz/dt = f(t, z; theta) given by an
   nf_odenet, integrated together with its log-density change,

     d/dt [z, l] = [f(t, z), tr(df/dz)],   l(0) = 0,   log|det dz(T)/dz(0)| = l(T),

   NF_FORWARD (sampling) from t = 0 to T, NF_INVERSE (density) from T back to 0.
   The trace is exact (d tangents batched through the net) or Hutchinson's
   v^T (df/dz) v with one probe per sample held fixed through a solve and its
   adjoint. The whole batch is one ODE system, so each right-hand side is a few
   dgemms. vjp is the adjoint ODE solve of nflow/ode.h (backsolve, CVODES
   checkpoints, or reverse mode through the Runge–Kutta steps); the end time T
   may be learned (theta_T with T = theta_T^2, as FFJORD's sqrt_end_time).
   RNODE (Finlay et al. 2020) regularisers integrate the kinetic energy
   int |f|^2 dt and the Jacobian Frobenius norm int |df/dz|_F^2 dt (Hutchinson
   with the same probe, exact with the exact trace) per sample; their weighted
   batch means are the layer's penalty, whose gradient vjp adds.
   With a Hutchinson trace the log-det is an unbiased estimate: the probe of
   batch row i is counter-based noise (nflow/rng.h) keyed by the layer's
   probe_seed and the call's seed (nf_apply_opts.seed; a flow derives it from
   the seed of its call) at the row's global index row0 + i, so it does not
   depend on workspaces, chunking or threads, and a new seed gives new
   estimates. A call with nf_apply_opts.exact (a flow's evaluation verbs:
   log_prob, nll, sample, transform, log_prob_grad) takes the exact trace
   instead when d <= NF_EXACT_LOGDET_MAX_DIM, so a CNF trained with Hutchinson
   still reports densities; the training verbs keep the estimate. The noise is exact per row,
   but with an adaptive method (DOPRI5, ADAMS, BDF) the batch is one ODE
   system whose steps are chosen for all its rows, so a row's result depends
   on the rows solved with it to within the tolerance (chunks of another size
   agree to about rtol, not bit for bit); the same batch gives the same bits
   in any workspace or thread, and EULER and RK4 give per-row results that
   do not depend on the chunking at all.

   Each workspace keeps one integrator (and, for ADAMS and BDF, one
   SUNContext and CVODES memory), made at its first apply for that apply's
   batch size; smaller batches reuse it through nf_ode_resize. Only a batch
   larger than any before in that workspace makes a new one (the counter
   `integrators` below counts them). */
#ifndef NFLOW_CNF_H
#define NFLOW_CNF_H

#include <stddef.h>
#include <stdint.h>
#include "nflow/field.h"
#include "nflow/layer.h"
#include "nflow/ode.h"
#include "nflow/odenet.h"
#include "nflow/precision.h"
#include "nflow/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_trace_kind {
  NF_TRACE_EXACT = 0,   /* tr(df/dz) exactly: d tangent directions per row */
  NF_TRACE_GAUSSIAN,    /* Hutchinson, probe ~ N(0, I) */
  NF_TRACE_RADEMACHER   /* Hutchinson, probe entries +-1 */
} nf_trace_kind;

/* Largest RNODE weight nf_cnf_new accepts. The weighted penalties enter the
   loss and the adjoint's initial values; a weight beyond this swamps the
   likelihood, and one near DBL_MAX makes weight x penalty overflow (the
   solver then failed with a step size underflow rather than a clear error). */
#define NF_CNF_MAX_WEIGHT 1e10

typedef struct nf_cnf_opts {
  size_t n_hidden;          /* dynamics net hidden layers */
  const size_t *hidden;     /* their widths */
  nf_odenet_kind kind;      /* how the layers see t */
  nf_odenet_act act;
  double end_time;          /* T > 0 */
  int train_end_time;       /* nonzero: T is a parameter (theta_T = sqrt(T)) */
  nf_trace_kind trace;
  nf_ode_opts ode;          /* method, gradient mode, tolerances, step limits */
  double kinetic_weight;    /* RNODE weight of int |f|^2 dt, in [0, NF_CNF_MAX_WEIGHT] */
  double jacobian_weight;   /* RNODE weight of int |df/dz|_F^2 dt, in [0, NF_CNF_MAX_WEIGHT] */
  uint64_t probe_seed;      /* Hutchinson probes: with the call's seed, the key of their stream */
  nf_precision precision;   /* arithmetic of the dynamics net (nflow/precision.h; default double);
                               the ODE state stays double. Single refuses ode.rtol or ode.atol
                               below 100 FLT_EPSILON (about 1.2e-5, nf_ode_tolerance_floor) */
} nf_cnf_opts;

/* FFJORD's toy configuration: concatsquash 64-64-64, tanh, T = 0.5 learnable,
   exact trace, DOPRI5 with rtol = atol = 1e-5 and the backsolve adjoint
   (seminorm), no regularisation. */
nf_cnf_opts nf_cnf_defaults(void);

/* "exact", "gaussian", "rademacher" ("?" for another value); nf_cnf_trace_parse
   reads them back (NF_EINVAL, output untouched, otherwise). */
const char *nf_cnf_trace_name(nf_trace_kind trace);
nf_status nf_cnf_trace_parse(const char *name, nf_trace_kind *trace);

/* A CNF layer on R^dim with context width ctx_dim; the net's parameters are
   drawn from rng (nf_odenet_init), then theta_T. NULL (with nf_errmsg) on bad
   options (NF_EINVAL naming the option and its bound: e.g. a weight outside
   [0, NF_CNF_MAX_WEIGHT], or what nf_ode_new refuses in ode) or no memory. Parameter layout: the net's (nf_odenet_n_params), then
   theta_T if train_end_time. */
nf_layer *nf_cnf_new(size_t dim, size_t ctx_dim, const nf_cnf_opts *opts, nf_rng *rng);

/* A CNF layer whose dynamics are the user's vector field (nflow/field.h,
   copied) rather than a network. From opts it takes end_time,
   train_end_time and ode; the trace must be NF_TRACE_EXACT (the field's
   divergence) and the regularisation weights 0. The field's parameters come
   first in the layer's params, zeroed: set them after creation; theta_T
   follows. field->name is copied (a field without a name works but cannot be
   saved in a model file). NULL (with nf_errmsg) on a NULL f or options it
   cannot honour. */
nf_layer *nf_cnf_field_new(size_t dim, size_t ctx_dim, const nf_field *field,
                           const nf_cnf_opts *opts);

/* Counters accumulated over every apply and successful vjp of a CNF layer
   (atomic; any thread): solves, right-hand side evaluations and steps of the
   forward solves, gradients and their evaluations (of the adjoint system: one
   per combined rhs + vjp evaluation in backsolve mode), and integrators made
   (one per workspace, plus one per batch larger than any before in it). */
typedef struct nf_cnf_counters {
  size_t solves, nfe, steps, rejected;
  size_t gradients, nfe_adjoint, steps_adjoint;
  size_t integrators;
} nf_cnf_counters;

/* The counters of a CNF layer (NF_EINVAL if layer is not one). */
nf_status nf_cnf_get_counters(const nf_layer *layer, nf_cnf_counters *out);

/* Zeroes the counters of a CNF layer. */
nf_status nf_cnf_reset_counters(const nf_layer *layer);

/* The end time T the layer integrates to with parameters theta (its slice of a
   flow's theta; NULL: the configured end time); 0 for a non-CNF layer. */
double nf_cnf_end_time(const nf_layer *layer, const double *theta);

/* Multiply-adds x2 of one right-hand side evaluation (f with the trace) per
   batch row: for FLOP-rate figures. */
double nf_cnf_rhs_flops(const nf_layer *layer);

#ifdef __cplusplus
}
#endif
#endif
