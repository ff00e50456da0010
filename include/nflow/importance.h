/* nflow/importance.h — importance weights of a flow's samples against a
   target: w = p~(x) / q(x) for x ~ q, and what they estimate.

   With n draws and weights w_i (kept as log w_i, scaled by their largest
   before exponentiating, so any range of log weights is safe):
   - Kish's effective sample size per sample, ESS = (sum w)^2 / (n sum w^2),
     in (0, 1]; 1 iff all weights are equal (q = p);
   - log Z = log((1/n) sum w), the log normaliser of p~ (unbiased in Z, not in
     log Z), with the delta-method standard error s_w / (sqrt(n) mean w), s_w
     the sample standard deviation of the weights;
   - self-normalised expectations <O>_p = sum w O / sum w, with the
     delta-method standard error sqrt(sum w^2 (O - <O>)^2) / sum w. */
#ifndef NFLOW_IMPORTANCE_H
#define NFLOW_IMPORTANCE_H

#include <stddef.h>
#include "nflow/status.h"
#include "nflow/rng.h"
#include "nflow/flow.h"
#include "nflow/target.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nf_importance {
  size_t n;         /* draws */
  double ess;       /* Kish effective sample size per sample, in (0, 1] */
  double log_z;     /* log of the mean weight */
  double log_z_err; /* its standard error */
} nf_importance;

/* Summary of n >= 2 log weights. NF_EINVAL on NULL arguments or n < 2,
   NF_ENONFINITE naming a log weight that is NaN or +Inf (-Inf, a weight of
   0, is allowed as long as one weight is positive). */
nf_status nf_importance_summary(size_t n, const double *log_w, nf_importance *out);

/* Self-normalised <O_j>_p and its standard error for m observables of the n
   draws (obs: n x m, row-major) into mean (m) and err (m, may be NULL).
   Same refusals as nf_importance_summary, and NF_ENONFINITE for obs. */
nf_status nf_importance_mean(size_t n, const double *log_w, size_t m, const double *obs,
                             double *mean, double *err);

/* Draws n samples x ~ q from an unconditional flow (x: n x dim) and their log
   weights log w = log p~(x) - log q(x) (n), q's log-dets exact where a layer
   estimates them (nf_flow_sample). NF_EINVAL on NULL arguments or n == 0,
   NF_EDIM when the target's dimension is not the flow's or the flow is
   conditional, the flow's or the target's status. */
nf_status nf_importance_sample(nf_flow *flow, nf_rng *rng, const nf_target *target, size_t n,
                               double *x, double *log_w);

/* The same with a workspace: reentrant (const flow). */
nf_status nf_importance_sample_ws(const nf_flow *flow, nf_flow_ws *ws, nf_rng *rng,
                                  const nf_target *target, size_t n, double *x, double *log_w);

#ifdef __cplusplus
}
#endif
#endif
