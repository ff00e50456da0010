/* lib/adam.c — Adam (Kingma & Ba 2015) with L2 or decoupled weight decay
   (AdamW, Loshchilov & Hutter 2019) and global gradient-norm clipping. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/adam.h"

struct nf_adam {
  size_t n;
  nf_adam_opts opts;
  size_t t;         /* steps taken */
  double grad_norm; /* ||g||_2 of the last accepted gradient, before clipping */
  double *m;        /* first moment, n */
  double *v;        /* second moment, n */
};

nf_adam_opts nf_adam_defaults(void)
{
  nf_adam_opts o = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                    .weight_decay = 0.0, .decoupled = 0, .clip_norm = 0.0};
  return o;
}

/* NF_OK if lr is a usable step size (finite and > 0), else NF_EINVAL with a message. */
static nf_status check_lr(const char *fn, double lr)
{
  if (!(lr > 0) || !isfinite(lr))
    return nf_fail(NF_EINVAL, "%s: lr must be finite and > 0 (got %g)", fn, lr);
  return NF_OK;
}

/* Validates every option: lr > 0, betas in [0, 1), eps > 0, decay and clip >= 0, all finite. */
static nf_status check_opts(const nf_adam_opts *o)
{
  const char *fn = "nf_adam_new";
  if (check_lr(fn, o->lr) != NF_OK) return NF_EINVAL;
  if (!(o->beta1 >= 0 && o->beta1 < 1))
    return nf_fail(NF_EINVAL, "%s: beta1 must be in [0, 1) (got %g)", fn, o->beta1);
  if (!(o->beta2 >= 0 && o->beta2 < 1))
    return nf_fail(NF_EINVAL, "%s: beta2 must be in [0, 1) (got %g)", fn, o->beta2);
  if (!(o->eps > 0) || !isfinite(o->eps))
    return nf_fail(NF_EINVAL, "%s: eps must be finite and > 0 (got %g)", fn, o->eps);
  if (!(o->weight_decay >= 0) || !isfinite(o->weight_decay))
    return nf_fail(NF_EINVAL, "%s: weight_decay must be finite and >= 0 (got %g)", fn,
                   o->weight_decay);
  if (!(o->clip_norm >= 0) || !isfinite(o->clip_norm))
    return nf_fail(NF_EINVAL, "%s: clip_norm must be finite and >= 0 (got %g)", fn,
                   o->clip_norm);
  return NF_OK;
}

nf_adam *nf_adam_new(size_t n, const nf_adam_opts *opts)
{
  nf_adam_opts o = opts ? *opts : nf_adam_defaults();
  if (n == 0) {
    nf_fail(NF_EINVAL, "nf_adam_new: n must be >= 1");
    return NULL;
  }
  size_t count;
  if (check_opts(&o) != NF_OK || nf_count_doubles("nf_adam_new", "the moments", n, 1, &count))
    return NULL;
  nf_adam *adam = calloc(1, sizeof *adam);
  double *m = nf_dalloc(n), *v = nf_dalloc(n);
  if (!adam || !m || !v) {
    free(adam);
    free(m);
    free(v);
    nf_fail(NF_ENOMEM, "nf_adam_new: out of memory for %zu parameters", n);
    return NULL;
  }
  adam->n = n;
  adam->opts = o;
  adam->m = m;
  adam->v = v;
  return adam;
}

void nf_adam_free(nf_adam *adam)
{
  if (!adam) return;
  free(adam->m);
  free(adam->v);
  free(adam);
}

/* ||g||_2 of n values; rescaled by max |g_i| only if the plain sum of squares overflows. */
static double norm2(size_t n, const double *g)
{
  double ss = 0.0;
  for (size_t i = 0; i < n; i++) ss += g[i] * g[i];
  if (isfinite(ss)) return sqrt(ss);
  double amax = 0.0;
  for (size_t i = 0; i < n; i++) amax = fmax(amax, fabs(g[i]));
  ss = 0.0;
  for (size_t i = 0; i < n; i++) ss += (g[i] / amax) * (g[i] / amax);
  return amax * sqrt(ss);
}

/* Factor min(1, clip / ||g||) that caps the gradient's 2-norm at clip (1 if clip == 0). */
static double clip_scale(double clip, double norm)
{
  return (clip > 0 && norm > clip) ? clip / norm : 1.0;
}

/* The moment updates and theta -= lr mhat / (sqrt(vhat) + eps), mhat = m / (1 - beta1^t),
   vhat = v / (1 - beta2^t), on g = scale grad + l2 theta, after theta *= shrink. */
NF_VECTOR_LOOP static void moments_update(nf_adam *adam, double scale, double l2, double shrink,
                                          double *restrict params, const double *restrict grad)
{
  const nf_adam_opts *o = &adam->opts;
  double step = o->lr / (1.0 - pow(o->beta1, (double)adam->t));
  double inv_bc2 = 1.0 / (1.0 - pow(o->beta2, (double)adam->t));
  double b1 = o->beta1, b2 = o->beta2, eps = o->eps;
  double *restrict m = adam->m, *restrict v = adam->v;
  for (size_t i = 0; i < adam->n; i++) {
    double g = scale * grad[i] + l2 * params[i];
    m[i] = b1 * m[i] + (1.0 - b1) * g;
    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
    params[i] = shrink * params[i] - step * m[i] / (sqrt(v[i] * inv_bc2) + eps);
  }
}

nf_status nf_adam_step(nf_adam *adam, double *params, const double *grad)
{
  if (!adam || !params || !grad)
    return nf_fail(NF_EINVAL, "nf_adam_step: NULL %s",
                   !adam ? "optimizer" : !params ? "params" : "grad");
  size_t n = adam->n, bad = nf_first_nonfinite(n, grad);
  if (bad < n)
    return nf_fail(NF_ENONFINITE, "nf_adam_step: gradient entry %zu is %g", bad, grad[bad]);
  const nf_adam_opts *o = &adam->opts;
  double norm = norm2(n, grad);
  double scale = clip_scale(o->clip_norm, norm);
  double l2 = o->decoupled ? 0.0 : o->weight_decay;
  double shrink = o->decoupled ? 1.0 - o->lr * o->weight_decay : 1.0;
  adam->t++;
  moments_update(adam, scale, l2, shrink, params, grad);
  adam->grad_norm = norm;
  return NF_OK;
}

nf_status nf_adam_set_lr(nf_adam *adam, double lr)
{
  if (!adam) return nf_fail(NF_EINVAL, "nf_adam_set_lr: NULL optimizer");
  nf_status st = check_lr("nf_adam_set_lr", lr);
  if (st == NF_OK) adam->opts.lr = lr;
  return st;
}

void nf_adam_reset(nf_adam *adam)
{
  if (!adam) return;
  for (size_t i = 0; i < adam->n; i++) adam->m[i] = adam->v[i] = 0.0;
  adam->t = 0;
  adam->grad_norm = 0.0;
}

size_t nf_adam_size(const nf_adam *adam) { return adam ? adam->n : 0; }

size_t nf_adam_steps(const nf_adam *adam) { return adam ? adam->t : 0; }

nf_adam_opts nf_adam_options(const nf_adam *adam)
{
  return adam ? adam->opts : nf_adam_defaults();
}

double nf_adam_grad_norm(const nf_adam *adam) { return adam ? adam->grad_norm : 0.0; }

size_t nf_adam_get_state(const nf_adam *adam, double *m, double *v)
{
  if (!adam) return 0;
  if (m) memcpy(m, adam->m, adam->n * sizeof *m);
  if (v) memcpy(v, adam->v, adam->n * sizeof *v);
  return adam->t;
}

nf_status nf_adam_set_state(nf_adam *adam, size_t t, const double *m, const double *v)
{
  const char *fn = "nf_adam_set_state";
  if (!adam || !m || !v)
    return nf_fail(NF_EINVAL, "%s: NULL %s", fn, !adam ? "optimizer" : !m ? "m" : "v");
  size_t bad = nf_first_nonfinite(adam->n, m);
  if (bad < adam->n)
    return nf_fail(NF_ENONFINITE, "%s: first moment %zu is %g", fn, bad, m[bad]);
  bad = nf_first_nonfinite(adam->n, v);
  if (bad < adam->n)
    return nf_fail(NF_ENONFINITE, "%s: second moment %zu is %g", fn, bad, v[bad]);
  for (size_t i = 0; i < adam->n; i++)
    if (v[i] < 0)
      return nf_fail(NF_EDOMAIN, "%s: second moment %zu is negative (%g)", fn, i, v[i]);
  memcpy(adam->m, m, adam->n * sizeof *m);
  memcpy(adam->v, v, adam->n * sizeof *v);
  adam->t = t;
  return NF_OK;
}
