/* nflow/map.h — maximum a posteriori estimates with a flow prior under
   Gaussian noise: for each of n rows, independently,

     y* = argmax_y J(y),  J(y) = log N(d | y, diag(noise_var)) + log p(y | ctx),

   d the observed row, noise_var the per-coordinate noise variances and
   p the flow (its log-density and gradient by nf_flow_log_prob_grad_ws).
   J is the log posterior up to the constant log p(d): the log likelihood
   (with its normalisation -1/2 sum log(2 pi v)) plus the log prior.

   Each row is optimised on its own and stops on its own when the 2-norm of
   grad_y J falls to opts.grad_tol; the rows still running are evaluated
   together, one batch per iteration, in blocks of the workspace's rows.
   L-BFGS (Nocedal 1980; two-loop recursion, Nocedal & Wright 2006 alg. 7.4)
   with a backtracking line search that takes a step satisfying Armijo's
   condition or, near the optimum, where J's differences are lost in
   rounding, Hager & Zhang's (2005) approximate Wolfe conditions; or Adam
   (Kingma & Ba 2015) per row with opts.lr.

   The prior is const and all state lives in the caller's workspace and the
   call's own buffers (one allocation per call): threads may run calls on one
   prior at once, each with its own workspace.

   The objective must be deterministic: flows whose log-density is an
   estimate (a CNF with a Hutchinson trace, a residual flow above d = 16)
   are evaluated with seed 0 keyed by the row's place in the batch, so the
   noise changes as rows converge; use exact-trace settings for MAP. */
#ifndef NFLOW_MAP_H
#define NFLOW_MAP_H

#include <stddef.h>
#include "nflow/status.h"
#include "nflow/flow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nf_map_method {
  NF_MAP_LBFGS = 0, /* limited-memory BFGS with a backtracking line search */
  NF_MAP_ADAM       /* Adam steps of size lr (beta1 0.9, beta2 0.999, eps 1e-8) */
} nf_map_method;

typedef struct nf_map_opts {
  nf_map_method method;
  size_t max_iter; /* iterations per row, >= 1 */
  double grad_tol; /* a row has converged when ||grad_y J||_2 <= grad_tol (finite, >= 0) */
  double lr;       /* Adam's step size (finite, > 0); unused by L-BFGS */
  size_t memory;   /* L-BFGS correction pairs, 1..100; unused by Adam */
} nf_map_opts;

/* The defaults: L-BFGS, 1000 iterations, grad_tol 1e-6, lr 1e-2, memory 8. */
nf_map_opts nf_map_defaults(void);

typedef struct nf_map_report {
  size_t iterations;     /* the most iterations any row took */
  size_t converged_rows; /* rows that reached grad_tol */
  double max_grad_norm;  /* the largest ||grad_y J||_2 over the rows at the returned y */
} nf_map_report;

/* MAP estimates of n rows of prior's space (dim = nf_flow_dim(prior)).
   data: n x dim observations; noise_var: dim variances, each finite and > 0;
   ctx: n x ctx_dim contexts of a conditional prior, NULL iff the prior is
   unconditional; opts: NULL for the defaults. y: n x dim, in: the starting
   points (a copy of data is the usual start; y may be data itself), out: the
   estimates. log_post (n, may be NULL): J at the estimates. report (may be
   NULL): see nf_map_report. Rows run in blocks of nf_flow_ws_rows(ws).

   NF_OK when every row has run: a row that stops short of grad_tol (max_iter
   reached, or no step along its direction decreases -J any more) still
   returns its best point, which is usually a useful estimate; check
   report->converged_rows == n for convergence. NF_EINVAL on a NULL argument,
   n == 0, a ctx given or missing against the prior, a noise variance not
   finite and > 0, or options out of range; NF_ENONFINITE naming the row and
   column of a non-finite entry of data, y or ctx; NF_ENOMEM; or the flow's
   status. On failure y, log_post and report are untouched. */
nf_status nf_map_gaussian_noise(const nf_flow *prior, nf_flow_ws *ws, size_t n,
                                const double *data, const double *noise_var, const double *ctx,
                                const nf_map_opts *opts, double *y, double *log_post,
                                nf_map_report *report);

#ifdef __cplusplus
}
#endif
#endif
