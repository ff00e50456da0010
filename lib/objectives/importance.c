/* lib/objectives/importance.c — importance weights w = p~/q of a flow's
   samples: Kish's effective sample size, log Z and self-normalised
   expectations with delta-method standard errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/importance.h"

/* NF_ENONFINITE/NF_EINVAL unless the n log weights are < +Inf, not NaN and
   not all -Inf; *top = the largest. */
static nf_status check_log_weights(const char *fn, size_t n, const double *log_w, double *top)
{
  if (!log_w || n < 2) return nf_fail(NF_EINVAL, "%s: log_w is NULL or n < 2 (n = %zu)", fn, n);
  *top = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    if (isnan(log_w[i]) || log_w[i] == INFINITY)
      return nf_fail(NF_ENONFINITE, "%s: log weight %zu is %g", fn, i, log_w[i]);
    *top = log_w[i] > *top ? log_w[i] : *top;
  }
  if (*top == -INFINITY) return nf_fail(NF_ENONFINITE, "%s: every weight is 0 (log w = -inf)", fn);
  return NF_OK;
}

nf_status nf_importance_summary(size_t n, const double *log_w, nf_importance *out)
{
  double top;
  nf_status st = check_log_weights("nf_importance_summary", n, log_w, &top);
  if (st) return st;
  if (!out) return nf_fail(NF_EINVAL, "nf_importance_summary: out is NULL");
  double s1 = 0, s2 = 0;
  for (size_t i = 0; i < n; i++) {
    double w = exp(log_w[i] - top);
    s1 += w;
    s2 += w * w;
  }
  double dn = (double)n, mean = s1 / dn;
  double var = (s2 / dn - mean * mean) * dn / (dn - 1.0);
  out->n = n;
  out->ess = s1 * s1 / (dn * s2);
  out->log_z = top + log(mean);
  out->log_z_err = sqrt(var > 0 ? var / dn : 0.0) / mean;
  return NF_OK;
}

nf_status nf_importance_mean(size_t n, const double *log_w, size_t m, const double *obs,
                             double *mean, double *err)
{
  const char *fn = "nf_importance_mean";
  double top;
  nf_status st = check_log_weights(fn, n, log_w, &top);
  if (st) return st;
  if (!obs || !mean || m == 0) return nf_fail(NF_EINVAL, "%s: obs or mean is NULL, or m is 0", fn);
  size_t nm, bad;
  if (nf_count_doubles(fn, "the observables", n, m, &nm)) return NF_EINVAL;
  if ((bad = nf_first_nonfinite(nm, obs)) < nm)
    return nf_fail(NF_ENONFINITE, "%s: observable %zu of draw %zu is %g, not finite", fn, bad % m,
                   bad / m, obs[bad]);
  for (size_t j = 0; j < m; j++) {
    double s1 = 0, so = 0, se = 0;
    for (size_t i = 0; i < n; i++) {
      double w = exp(log_w[i] - top);
      s1 += w;
      so += w * obs[i * m + j];
    }
    double mu = so / s1;
    for (size_t i = 0; err && i < n; i++) {
      double w = exp(log_w[i] - top), dev = obs[i * m + j] - mu;
      se += w * w * dev * dev;
    }
    mean[j] = mu;
    if (err) err[j] = sqrt(se) / s1;
  }
  return NF_OK;
}

/* Checks shared by the two samplers. */
static nf_status check_sampler(const char *fn, const nf_flow *flow, const nf_target *target,
                               size_t n, const double *x, const double *log_w)
{
  if (!flow || !target || !x || !log_w || n == 0)
    return nf_fail(NF_EINVAL, "%s: NULL argument or n is 0", fn);
  if (nf_target_dim(target) != nf_flow_dim(flow) || nf_flow_ctx_dim(flow))
    return nf_fail(NF_EDIM, "%s: target '%s' is %zu-D, the flow %zu-D with context %zu", fn,
                   nf_target_name(target), nf_target_dim(target), nf_flow_dim(flow),
                   nf_flow_ctx_dim(flow));
  return NF_OK;
}

/* log w = log p~(x) - log q(x), in place over log q (n rows of x). */
static nf_status log_weights(const nf_target *target, size_t n, const double *x, double *log_w)
{
  double *log_p = nf_dalloc(n);
  if (!log_p) return nf_fail(NF_ENOMEM, "nf_importance_sample: out of memory");
  nf_status st = nf_target_eval(target, n, x, log_p, NULL);
  for (size_t i = 0; !st && i < n; i++) log_w[i] = log_p[i] - log_w[i];
  free(log_p);
  return st;
}

nf_status nf_importance_sample(nf_flow *flow, nf_rng *rng, const nf_target *target, size_t n,
                               double *x, double *log_w)
{
  nf_status st = check_sampler("nf_importance_sample", flow, target, n, x, log_w);
  if (!st) st = nf_flow_sample(flow, rng, n, NULL, x, log_w);
  return st ? st : log_weights(target, n, x, log_w);
}

nf_status nf_importance_sample_ws(const nf_flow *flow, nf_flow_ws *ws, nf_rng *rng,
                                  const nf_target *target, size_t n, double *x, double *log_w)
{
  nf_status st = check_sampler("nf_importance_sample", flow, target, n, x, log_w);
  if (!st) st = nf_flow_sample_ws(flow, ws, rng, n, NULL, x, log_w);
  return st ? st : log_weights(target, n, x, log_w);
}
