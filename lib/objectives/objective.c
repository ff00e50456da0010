/* lib/objectives/objective.c — weighted sums of maximum likelihood, reverse
   KL, E_q[F] and H[q], estimated and differentiated through reparametrised
   draws (nf_flow_sample_grad_ws). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/objective.h"

static const char *const estimator_names[] = {"total", "stl"};

const char *nf_grad_estimator_name(nf_grad_estimator estimator)
{
  return (unsigned)estimator < 2 ? estimator_names[estimator] : "?";
}

nf_status nf_grad_estimator_parse(const char *name, nf_grad_estimator *estimator)
{
  int i = 0;
  nf_status st = nf_parse_choice("gradient estimator", name, estimator_names, 2,
                                 estimator ? &i : NULL);
  if (st == NF_OK) *estimator = (nf_grad_estimator)i;
  return st;
}

nf_objective nf_objective_max_likelihood(void)
{
  nf_objective o = {1.0, 0.0, 0.0, 0.0, NULL, NULL, NF_GRAD_TOTAL, 1.0};
  return o;
}

nf_objective nf_objective_reverse_kl(const nf_target *target)
{
  nf_objective o = {0.0, 1.0, 0.0, 0.0, target, NULL, NF_GRAD_TOTAL, 1.0};
  return o;
}

int nf_objective_samples(const nf_objective *o)
{
  return o && (o->reverse_kl_weight != 0 || o->expectation_weight != 0 || o->entropy_weight != 0);
}

/* NF_EDIM unless a function with a nonzero weight is given and has the flow's dimension. */
static nf_status check_function(const char *what, double weight, const nf_target *t, size_t dim)
{
  if (weight == 0) return NF_OK;
  if (!t) return nf_fail(NF_EINVAL, "nf_objective: the %s term has weight %g but no %s", what,
                         weight, what);
  if (nf_target_dim(t) != dim)
    return nf_fail(NF_EDIM, "nf_objective: the %s '%s' is %zu-D, the flow %zu-D", what,
                   nf_target_name(t), nf_target_dim(t), dim);
  return NF_OK;
}

nf_status nf_objective_check(const nf_objective *o, size_t dim, size_t ctx_dim)
{
  if (!o) return nf_fail(NF_EINVAL, "nf_objective: objective is NULL");
  double w[4] = {o->nll_weight, o->reverse_kl_weight, o->expectation_weight, o->entropy_weight};
  static const char *const names[4] = {"nll", "reverse_kl", "expectation", "entropy"};
  int any = 0;
  for (int k = 0; k < 4; k++) {
    if (!isfinite(w[k]))
      return nf_fail(NF_EINVAL, "nf_objective: %s_weight is %g, not finite", names[k], w[k]);
    any |= w[k] != 0;
  }
  if (!any) return nf_fail(NF_EINVAL, "nf_objective: every weight is 0");
  if (!(o->beta >= 0 && o->beta <= 1))
    return nf_fail(NF_EINVAL, "nf_objective: beta is %g, not in (0, 1] (0 means 1)", o->beta);
  if ((unsigned)o->estimator > NF_GRAD_STL)
    return nf_fail(NF_EINVAL, "nf_objective: unknown gradient estimator %d", (int)o->estimator);
  nf_status st = check_function("target", o->reverse_kl_weight, o->target, dim);
  if (!st) st = check_function("observable", o->expectation_weight, o->observable, dim);
  if (!st && ctx_dim && nf_objective_samples(o))
    st = nf_fail(NF_EDIM, "nf_objective: the flow is conditional (context width %zu); terms "
                 "over samples of q need an unconditional flow", ctx_dim);
  return st;
}

/* What the draws' cotangent sees and leaves: the objective, scratch for the
   function values and the observable's gradient, and the sums of the terms. */
typedef struct draws {
  const nf_objective *o;
  double *log_p, *f, *grad_f; /* n, n, n x d */
  double *log_w;              /* the caller's (n) or NULL */
  double sum_kl, sum_f, sum_neg_log_q;
} draws;

/* Per draw i of n, the loss a (log q - b log p~) + c F - h log q (b = beta):
   cotangents g_x = (c grad F - a b grad log p~) / n and g_log_q = (a - h) / n. */
static nf_status draws_cotangent(size_t n, size_t d, const double *x, const double *log_q,
                                 double *g_x, double *g_log_q, void *user)
{
  draws *s = user;
  const nf_objective *o = s->o;
  double a = o->reverse_kl_weight, c = o->expectation_weight, h = o->entropy_weight;
  double inv_n = 1.0 / (double)n, beta = o->beta > 0 ? o->beta : 1.0;
  nf_status st = NF_OK;
  memset(g_x, 0, n * d * sizeof *g_x);
  if (a != 0 && !(st = nf_target_eval(o->target, n, x, s->log_p, g_x))) {
    for (size_t k = 0; k < n * d; k++) g_x[k] *= -a * beta * inv_n;
    for (size_t i = 0; i < n; i++) s->log_p[i] *= beta;
  }
  if (!st && c != 0 && !(st = nf_target_eval(o->observable, n, x, s->f, s->grad_f)))
    for (size_t k = 0; k < n * d; k++) g_x[k] += c * inv_n * s->grad_f[k];
  if (st) return st;
  for (size_t i = 0; i < n; i++) {
    g_log_q[i] = (a - h) * inv_n;
    s->sum_neg_log_q -= log_q[i];
    if (a != 0) s->sum_kl += log_q[i] - s->log_p[i];
    if (a != 0 && s->log_w) s->log_w[i] = s->log_p[i] - log_q[i];
    if (c != 0) s->sum_f += s->f[i];
  }
  return NF_OK;
}

/* The sample terms over n draws: loss and gradient ADDED into *loss and grad;
   STL then removes (a - h)/n sum_i d/dtheta log q_theta(x_i) at fixed x_i. */
static nf_status sample_terms(const nf_objective *o, const nf_flow *flow, nf_flow_ws *ws,
                              uint64_t seed, size_t n, const double *eps, double *loss,
                              double *grad, double *log_w, nf_objective_terms *terms)
{
  size_t d = nf_flow_dim(flow), nd;
  if (nf_count_doubles("nf_objective_grad", "the draws", n, d, &nd)) return NF_EINVAL;
  double *scratch = nf_dalloc(3 * nd + 2 * n);
  if (!scratch) return nf_fail(NF_ENOMEM, "nf_objective_grad: out of memory for %zu draws", n);
  draws s = {o, scratch, scratch + n, scratch + 2 * n, log_w, 0, 0, 0};
  double *x = s.grad_f + nd, *g_score = x + nd;
  nf_status st = nf_flow_sample_grad_ws(flow, ws, seed, n, eps, NULL, draws_cotangent, &s, x,
                                        NULL, NULL, grad);
  double a = o->reverse_kl_weight, h = o->entropy_weight;
  if (!st && o->estimator == NF_GRAD_STL && a != h) {
    for (size_t i = 0; i < n; i++) g_score[i] = -(a - h) / (double)n;
    st = nf_flow_log_prob_vjp_ws(flow, ws, seed, n, x, NULL, g_score, NULL, NULL, NULL, grad);
  }
  if (!st) {
    double inv_n = 1.0 / (double)n;
    *loss += (a * s.sum_kl + o->expectation_weight * s.sum_f + h * s.sum_neg_log_q) * inv_n;
    if (terms) {
      terms->reverse_kl = a != 0 ? s.sum_kl * inv_n : NAN;
      terms->expectation = o->expectation_weight != 0 ? s.sum_f * inv_n : NAN;
      terms->entropy = s.sum_neg_log_q * inv_n;
    }
  }
  free(scratch);
  return st;
}

nf_status nf_objective_grad_ws(const nf_objective *o, const nf_flow *flow, nf_flow_ws *ws,
                               uint64_t seed, size_t n_draws, const double *eps, size_t n_data,
                               const double *x_data, const double *ctx_data, double *loss,
                               double *grad, double *log_w, nf_objective_terms *terms)
{
  const char *fn = "nf_objective_grad";
  size_t np = nf_flow_n_params(flow);
  if (flow && grad) memset(grad, 0, np * sizeof *grad);
  if (!flow || !loss || (!grad && np)) return nf_fail(NF_EINVAL, "%s: flow, loss or grad is NULL", fn);
  nf_status st = nf_objective_check(o, nf_flow_dim(flow), nf_flow_ctx_dim(flow));
  if (st) return st;
  int sampling = nf_objective_samples(o);
  if (sampling && n_draws == 0) return nf_fail(NF_EINVAL, "%s: the objective samples q but n_draws is 0", fn);
  if (o->nll_weight != 0 && n_data == 0)
    return nf_fail(NF_EINVAL, "%s: the objective has a data term but n_data is 0", fn);
  double value = 0, nll = NAN;
  nf_objective_terms parts = {NAN, NAN, NAN, NAN};
  if (o->nll_weight != 0) {
    st = nf_flow_nll_grad_ws(flow, ws, seed, n_data, x_data, ctx_data, &nll, grad, NULL);
    for (size_t p = 0; !st && p < np; p++) grad[p] *= o->nll_weight;
    value = o->nll_weight * nll;
    parts.nll = nll;
  }
  if (!st && sampling) st = sample_terms(o, flow, ws, seed, n_draws, eps, &value, grad, log_w, &parts);
  if (st) {
    memset(grad, 0, np * sizeof *grad);
    return st;
  }
  *loss = value;
  if (terms) *terms = parts;
  return NF_OK;
}
