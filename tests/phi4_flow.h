/* tests/phi4_flow.h — a flow for phi^4 on an L x L lattice trained by reverse
   KL, and its importance-reweighted observables, for tests/test_phi4.c and
   bench/bench_phi4.c (not part of the library).

   The flow: rational-quadratic spline couplings (Durkan et al. 2019) with
   checkerboard masks (Albergo, Kanwar & Shanahan 2019: each transformed site's
   four neighbours condition it), alternating colours, on a standard normal base. */
#ifndef NFLOW_TEST_PHI4_FLOW_H
#define NFLOW_TEST_PHI4_FLOW_H

#include <stddef.h>
#include <stdint.h>
#include "nflow.h"

typedef struct phi4_flow_opts {
  size_t layers;  /* couplings */
  size_t width;   /* two hidden layers of this width (tanh) */
  size_t bins;    /* spline bins on [-5, 5] */
  size_t batch;   /* draws per reverse-KL step */
  size_t iters;   /* Adam steps, lr cosine-annealed from lr to 0 */
  double lr;
  uint64_t seed;  /* initial parameters and draws */
} phi4_flow_opts;

/* 4 couplings, width 64, 8 bins, batch 64, 2000 steps, lr 1e-3, seed 1. */
phi4_flow_opts phi4_flow_defaults(void);

/* The untrained flow on the L x L lattice; NULL (with nf_errmsg) on failure. */
nf_flow *phi4_flow_build(size_t L, const phi4_flow_opts *o);

/* Trains the flow on target by reverse KL (nf_objective_grad_ws, Adam);
   *loss gets the last step's estimate of KL(q || p) - log Z. */
nf_status phi4_flow_train(nf_flow *flow, const nf_target *target, const phi4_flow_opts *o,
                          double *loss);

/* n draws from the symmetrised flow q_s(phi) = (q(phi) + q(-phi)) / 2 (a draw
   of q with a random sign), exact for the Z2-symmetric target: x (n x dim),
   log w = log p~(x) - log q_s(x) (n). *raw_positive (may be NULL) gets the
   fraction of q's own draws with M > 0 (before the sign). */
nf_status phi4_flow_sample(nf_flow *flow, const nf_target *target, nf_rng *rng, size_t n,
                           double *x, double *log_w, double *raw_positive);

/* <|M|> and <M^2> (mean[2], err[2]) reweighted from n draws x, log_w. */
nf_status phi4_flow_moments(const nf_target *target, size_t n, const double *x,
                            const double *log_w, double *mean, double *err);

#endif
