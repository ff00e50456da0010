/* tests/phi4_flow.c — checkerboard spline-coupling flows for phi^4, trained by
   reverse KL and reweighted (see phi4_flow.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "phi4_flow.h"

phi4_flow_opts phi4_flow_defaults(void)
{
  phi4_flow_opts o = {4, 64, 8, 64, 2000, 1e-3, 1};
  return o;
}

nf_flow *phi4_flow_build(size_t L, const phi4_flow_opts *o)
{
  size_t d = L * L, hidden[2] = {o->width, o->width};
  unsigned char *mask = malloc(d);
  nf_flow *flow = nf_flow_new(d, 0, NF_BASE_STD_NORMAL);
  nf_rng rng;
  nf_rng_seed(&rng, o->seed);
  nf_status st = mask && flow ? NF_OK : NF_ENOMEM;
  for (size_t k = 0; !st && k < o->layers; k++) {
    for (size_t j = 0; j < d; j++) mask[j] = (j / L + j % L + k) % 2 == 0;
    nf_coupling_opts co = {nf_transformer_spec_default(NF_TRANSFORMER_SPLINE), mask, 2, hidden,
                           NF_ACT_TANH, NF_PRECISION_DOUBLE};
    co.transformer.bins = o->bins;
    st = nf_flow_push(flow, nf_coupling_new(d, 0, &co, &rng));
  }
  free(mask);
  if (st) {
    nf_flow_free(flow);
    return NULL;
  }
  return flow;
}

nf_status phi4_flow_train(nf_flow *flow, const nf_target *target, const phi4_flow_opts *o,
                          double *loss)
{
  nf_objective obj = nf_objective_reverse_kl(target);
  size_t np = nf_flow_n_params(flow), nd = o->batch * nf_flow_dim(flow);
  nf_adam_opts ao = nf_adam_defaults();
  ao.lr = o->lr;
  nf_adam *adam = nf_adam_new(np, &ao);
  nf_flow_ws *ws = nf_flow_ws_new(flow, o->batch);
  double *theta = malloc(np * sizeof *theta), *grad = malloc(np * sizeof *grad);
  double *eps = malloc(nd * sizeof *eps);
  nf_status st = adam && ws && theta && grad && eps ? NF_OK : NF_ENOMEM;
  nf_rng rng;
  nf_rng_seed(&rng, o->seed + 1);
  if (!st) memcpy(theta, nf_flow_params(flow), np * sizeof *theta);
  for (size_t it = 0; !st && it < o->iters; it++) {
    /* cosine annealing (Loshchilov & Hutter 2017), never exactly 0 */
    st = nf_adam_set_lr(adam, o->lr * (0.5 * (1 + cos(3.14159265358979323846 * (double)it / (double)o->iters)) + 1e-3));
    nf_rng_normal_fill(&rng, nd, eps);
    if (!st) st = nf_objective_grad_ws(&obj, flow, ws, it, o->batch, eps, 0, NULL, NULL, loss,
                                       grad, NULL, NULL);
    if (!st) st = nf_adam_step(adam, theta, grad);
    if (!st) st = nf_flow_set_params(flow, theta);
  }
  free(eps);
  free(grad);
  free(theta);
  nf_flow_ws_free(ws);
  nf_adam_free(adam);
  return st;
}

/* Sampling x ~ q and y = s x with a random sign s gives y ~ q_s, and
   q_s(y) = q_s(x) = (q(x) + q(-x)) / 2 costs one more density pass, at -x. */
nf_status phi4_flow_sample(nf_flow *flow, const nf_target *target, nf_rng *rng, size_t n,
                           double *x, double *log_w, double *raw_positive)
{
  size_t d = nf_flow_dim(flow);
  double *log_q = malloc(n * sizeof *log_q), *log_qm = malloc(n * sizeof *log_qm);
  double *m = malloc(n * sizeof *m);
  nf_status st = log_q && log_qm && m ? NF_OK : NF_ENOMEM;
  if (!st) st = nf_flow_sample(flow, rng, n, NULL, x, log_q);
  if (!st) st = nf_target_phi4_magnetisation(target, n, x, m);
  for (size_t j = 0; !st && j < n * d; j++) x[j] = -x[j];
  if (!st) st = nf_flow_log_prob(flow, n, x, NULL, log_qm);
  size_t pos = 0;
  for (size_t i = 0; !st && i < n; i++) {
    pos += m[i] > 0;
    double s = nf_rng_uniform(rng) < 0.5 ? -1.0 : 1.0; /* x holds -x: s = -1 keeps it */
    for (size_t j = 0; j < d; j++) x[i * d + j] *= -s;
  }
  if (!st) st = nf_target_eval(target, n, x, log_w, NULL);
  for (size_t i = 0; !st && i < n; i++) {
    double a = log_q[i], b = log_qm[i], top = a > b ? a : b;
    log_w[i] -= top + log1p(exp(-fabs(a - b))) - log(2.0);
  }
  if (!st && raw_positive) *raw_positive = (double)pos / (double)n;
  free(m);
  free(log_qm);
  free(log_q);
  return st;
}

nf_status phi4_flow_moments(const nf_target *target, size_t n, const double *x,
                            const double *log_w, double *mean, double *err)
{
  double *obs = malloc(3 * n * sizeof *obs), *m = obs + 2 * n;
  if (!obs) return NF_ENOMEM;
  nf_status st = nf_target_phi4_magnetisation(target, n, x, m);
  for (size_t i = 0; !st && i < n; i++) {
    obs[2 * i] = fabs(m[i]);
    obs[2 * i + 1] = m[i] * m[i];
  }
  if (!st) st = nf_importance_mean(n, log_w, 2, obs, mean, err);
  free(obs);
  return st;
}
