/* lib/bijectors/residual.c — the residual flow layer (i-ResNet, Behrmann et
   al. 2019; Residual Flows, Chen et al. 2019): z = x + g(x) in the density
   direction, x by the fixed point x = z - g(x) for sampling, log-dets and
   gradients from residual_logdet.c, the net from residual_net.c. Contract and
   numbers: nflow/residual.h. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/config.h"
#include "nflow/residual.h"
#include "residual_internal.h"

static const char *const logdet_names[] = {"exact", "estimate"};

const char *nf_residual_logdet_name(nf_residual_logdet mode)
{
  return (unsigned)mode <= NF_RESIDUAL_ESTIMATE ? logdet_names[mode] : "?";
}

nf_status nf_residual_logdet_parse(const char *name, nf_residual_logdet *mode)
{
  int i = 0;
  nf_status st = nf_parse_choice("residual log-det mode", name, logdet_names, 2, mode ? &i : NULL);
  if (st == NF_OK) *mode = (nf_residual_logdet)i;
  return st;
}

nf_residual_opts nf_residual_defaults(void)
{
  static const size_t hidden32[1] = {32};
  nf_residual_opts o = {0};
  o.n_hidden = 1;
  o.hidden = hidden32;
  o.lipschitz = 0.9;
  o.power_iters = 500;
  o.power_tol = 1e-12;
  o.fixed_max_iter = 1000;
  o.fixed_tol = 1e-12;
  o.logdet = NF_RESIDUAL_EXACT;
  o.n_exact_terms = 2;
  o.roulette_p = 0.5;
  o.probe = NF_NOISE_RADEMACHER;
  o.probe_seed = 0x5eed;
  return o;
}

/* NF_EINVAL naming the first option of o outside its range, else NF_OK. */
static nf_status check_opts(const char *fn, const nf_residual_opts *o)
{
  if (o->n_hidden == 0 || !o->hidden)
    return nf_fail(NF_EINVAL, "%s: n_hidden must be >= 1 with non-NULL hidden widths", fn);
  for (size_t l = 0; l < o->n_hidden; l++)
    if (o->hidden[l] == 0) return nf_fail(NF_EINVAL, "%s: hidden layer %zu has width 0", fn, l);
  if (!(o->lipschitz > 0 && o->lipschitz < 1))
    return nf_fail(NF_EINVAL, "%s: lipschitz must be in (0, 1), got %g", fn, o->lipschitz);
  if (o->power_iters == 0 || o->fixed_max_iter == 0)
    return nf_fail(NF_EINVAL, "%s: power_iters and fixed_max_iter must be >= 1", fn);
  nf_status st = nf_check_positive(fn, "power_tol", o->power_tol);
  if (!st) st = nf_check_positive(fn, "fixed_tol", o->fixed_tol);
  if (st) return st;
  if ((unsigned)o->logdet > NF_RESIDUAL_ESTIMATE)
    return nf_fail(NF_EINVAL, "%s: unknown log-det mode %d", fn, (int)o->logdet);
  if (o->n_exact_terms == 0)
    return nf_fail(NF_EINVAL, "%s: n_exact_terms must be >= 1", fn);
  if (!(o->roulette_p >= 0.01 && o->roulette_p < 1))
    return nf_fail(NF_EINVAL, "%s: roulette_p must be in [0.01, 1), got %g", fn, o->roulette_p);
  if (o->probe != NF_NOISE_NORMAL && o->probe != NF_NOISE_RADEMACHER)
    return nf_fail(NF_EINVAL, "%s: probe must be NF_NOISE_NORMAL or NF_NOISE_RADEMACHER", fn);
  return NF_OK;
}

/* Frees a net shape. */
static void net_free(void *data)
{
  rn_net *net = data;
  if (net) free(net->width);
  free(net);
}

/* The shape [d + c] -> hidden -> d with its counts; NULL (nf_errmsg) on overflow or no memory. */
static rn_net *net_new(size_t d, size_t c, const nf_residual_opts *o)
{
  const char *fn = "nf_residual_new";
  rn_net *net = calloc(1, sizeof *net);
  size_t L = o->n_hidden + 1;
  size_t *width = o->n_hidden < SIZE_MAX - 2 ? nf_alloc_n(L + 1, sizeof *width) : NULL;
  if (!net || !width) {
    free(net);
    free(width);
    nf_fail(NF_ENOMEM, "%s: out of memory", fn);
    return NULL;
  }
  net->d = d;
  net->c = c;
  net->n_layers = L;
  net->width = width;
  net->o = *o;
  net->o.hidden = width + 1;
  int bad = nf_size_add(d, c, &width[0]);
  memcpy(width + 1, o->hidden, o->n_hidden * sizeof *width);
  width[L] = d;
  for (size_t l = 0; !bad && l < L; l++) {
    size_t p = width[l], q = width[l + 1], np;
    bad = nf_size_add(p, 1, &np) || nf_size_mul(np, q, &np) ||
          nf_size_add(net->n_params, np, &net->n_params) ||
          nf_size_add(net->sum_out, q, &net->sum_out) ||
          nf_size_add(net->sum_norm, l ? p : d, &net->sum_norm) ||
          (l + 1 < L && nf_size_add(net->sum_hidden, q, &net->sum_hidden)) ||
          nf_size_mul(np, sizeof(double), &np) || p > INT_MAX || q > INT_MAX;
    if (p > net->max_width) net->max_width = p;
  }
  if (bad) {
    nf_fail(NF_EINVAL, "%s: the widths overflow the parameter count or a BLAS int", fn);
    net_free(net);
    return NULL;
  }
  return net;
}

/* Glorot-uniform weights sqrt(6 / (fan_in + fan_out)), the last layer's times
   0.1 (g starts small, the layer near the identity), zero biases. */
static void net_init(const rn_net *net, nf_rng *rng, double *theta)
{
  double *p = theta;
  for (size_t l = 0; l < net->n_layers; l++) {
    size_t fi = net->width[l], fo = net->width[l + 1];
    double a = sqrt(6.0 / (double)(fi + fo)) * (l + 1 == net->n_layers ? 0.1 : 1.0);
    for (size_t k = 0; k < fi * fo; k++) *p++ = a * (2.0 * nf_rng_uniform(rng) - 1.0);
    memset(p, 0, fo * sizeof *p);
    p += fo;
  }
}

nf_layer *nf_residual_new(size_t dim, size_t ctx_dim, const nf_residual_opts *opts, nf_rng *rng)
{
  const char *fn = "nf_residual_new";
  nf_residual_opts o = opts ? *opts : nf_residual_defaults();
  if (nf_check_dim(fn, dim) || check_opts(fn, &o)) return NULL;
  rn_net *net = net_new(dim, ctx_dim, &o);
  if (!net) return NULL;
  if (rn_work_size(net, 1) == 0) {
    nf_fail(NF_EINVAL, "%s: the workspace of one row overflows", fn);
    net_free(net);
    return NULL;
  }
  nf_layer *layer = nf_layer_create(&nf_residual_type, dim, ctx_dim, net->n_params, net);
  if (layer && rng) net_init(net, rng, layer->init);
  return layer;
}

static size_t residual_work_size(const nf_layer *layer, size_t n)
{
  return rn_work_size(layer->data, n);
}

/* F = g(x) (the sampling fixed point) or F = J^T x at the recorded point (its adjoint). */
typedef void (*fp_map)(const rn_net *net, const rn_work *w, size_t n, const double *x,
                       const double *ctx, double *F);

static void map_g(const rn_net *net, const rn_work *w, size_t n, const double *x,
                  const double *ctx, double *F)
{
  rn_forward(net, w, n, x, ctx, F);
}

static void map_jt(const rn_net *net, const rn_work *w, size_t n, const double *x,
                   const double *ctx, double *F)
{
  rn_backward(net, w, n, NULL, ctx, x, F, NULL, NULL);
}

/* The fixed point x = b - F(x) from x_0 = b, row by row: row i stops (and
   keeps its iterate) once max_j |x_{k+1} - x_k| <= fixed_tol max(1, |b_i|_inf),
   so its result does not depend on the other rows. NF_ESOLVER naming the first
   row (row0 + i) still moving after fixed_max_iter iterations. Uses w->s[2..3]. */
static nf_status fixed_point(const rn_net *net, const rn_work *w, size_t n, const double *b,
                             const double *ctx, fp_map map, double *x, const char *what,
                             size_t row0)
{
  size_t d = net->d, left = n;
  double *F = w->s[2], *done = w->s[3], tol = net->o.fixed_tol;
  memcpy(x, b, n * d * sizeof *x);
  memset(done, 0, n * sizeof *done);
  for (size_t it = 0; it < net->o.fixed_max_iter && left; it++) {
    map(net, w, n, x, ctx, F);
    for (size_t i = 0; i < n; i++) {
      if (done[i] != 0.0) continue;
      double change = 0, scale = 1;
      for (size_t j = 0; j < d; j++) {
        double xn = b[i * d + j] - F[i * d + j];
        change = fmax(change, fabs(xn - x[i * d + j]));
        scale = fmax(scale, fabs(b[i * d + j]));
        x[i * d + j] = xn;
      }
      if (change <= tol * scale) {
        done[i] = 1.0;
        left--;
      }
    }
  }
  for (size_t i = 0; left && i < n; i++)
    if (done[i] == 0.0)
      return nf_fail(NF_ESOLVER, "residual: the fixed point %s did not converge to %g in %zu "
                     "iterations at row %zu", what, tol, net->o.fixed_max_iter, row0 + i);
  return NF_OK;
}

/* NF_INVERSE: z = x + g(x), logdet += log|det(I + J(x))|; NF_FORWARD: x = z - g(x)
   by the fixed point, logdet -= log|det(I + J(x))|. Nothing is written on failure. */
static nf_status residual_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                                const double *in, const double *ctx, double *out, double *logdet,
                                const nf_apply_opts *opts, double *work)
{
  const rn_net *net = layer->data;
  size_t d = net->d, nd = n * d;
  rn_work w = rn_layout(net, n, work);
  rn_normalize(net, theta, &w);
  double *res = w.s[0], *ld = w.s[1];
  nf_status st = NF_OK;
  if (dir == NF_FORWARD)
    st = fixed_point(net, &w, n, in, ctx, map_g, res, "x = z - g(x)", opts->row0);
  if (st) return st;
  const double *x = dir == NF_INVERSE ? in : res;
  rn_forward(net, &w, n, x, ctx, w.s[2]); /* the record at x; g(x) */
  for (size_t k = 0; dir == NF_INVERSE && k < nd; k++) res[k] = in[k] + w.s[2][k];
  st = rn_logdet(net, &w, n, opts->seed, opts->row0, ld);
  if (st) return st;
  size_t bad = nf_first_nonfinite(nd, res), bad_ld = nf_first_nonfinite(n, ld);
  if (bad < nd || bad_ld < n)
    return nf_fail(NF_ENONFINITE, "residual: the output of row %zu overflows",
                   opts->row0 + (bad < nd ? bad / d : bad_ld));
  memcpy(out, res, nd * sizeof *out);
  for (size_t i = 0; logdet && i < n; i++) logdet[i] += dir == NF_INVERSE ? ld[i] : -ld[i];
  return NF_OK;
}

/* vjp of in -> (out, logdet) at the point x (in for NF_INVERSE, out for
   NF_FORWARD) with a = g_out + s g_l grad_x logdet(x) (s = +1 inverse, -1 forward):
   NF_INVERSE: g_in = a + J^T g_out, theta and ctx get dg^T g_out + s g_l dlogdet;
   NF_FORWARD (implicit function theorem): (I + J)^T lambda = a by the fixed
   point lambda = a - J^T lambda, g_in = lambda, theta and ctx get
   -dg^T lambda + s g_l dlogdet. Parameter cotangents go through the spectral
   normalisation (u v^T). Nothing is written on failure. */
static nf_status residual_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                              const double *in, const double *ctx, const double *out,
                              const double *g_out, const double *g_logdet, double *g_in,
                              double *g_ctx, double *g_theta, double *work)
{
  const rn_net *net = layer->data;
  size_t d = net->d, nd = n * d, c = net->c;
  rn_work w = rn_layout(net, n, work);
  const double *x = dir == NF_INVERSE ? in : out;
  double *gc = c ? w.gc : NULL, *a = w.s[1], *lam = w.s[0], sg = dir == NF_INVERSE ? 1.0 : -1.0;
  memset(w.gpt, 0, net->n_params * sizeof *w.gpt);
  if (gc) memset(gc, 0, n * c * sizeof *gc);
  rn_forward(net, &w, n, x, ctx, w.s[2]);
  if (g_logdet) {
    double *gl = w.s[3];
    for (size_t i = 0; i < n; i++) gl[i] = sg * g_logdet[i];
    rn_logdet_grad(net, &w, n, x, ctx, gl, a, gc);
  } else {
    memset(a, 0, nd * sizeof *a);
  }
  for (size_t k = 0; k < nd; k++) a[k] += g_out[k];
  if (dir == NF_INVERSE) {
    rn_backward(net, &w, n, x, ctx, g_out, lam, gc, w.gpt);
    for (size_t k = 0; k < nd; k++) lam[k] += a[k];
  } else {
    nf_status st = fixed_point(net, &w, n, a, ctx, map_jt, lam, "(I + J)^T lambda = g", 0);
    if (st) return st;
    for (size_t k = 0; k < nd; k++) w.s[2][k] = -lam[k];
    rn_backward(net, &w, n, x, ctx, w.s[2], NULL, gc, w.gpt);
  }
  if (g_in) memcpy(g_in, lam, nd * sizeof *g_in);
  for (size_t k = 0; g_ctx && gc && k < n * c; k++) g_ctx[k] += gc[k];
  if (g_theta) rn_normalize_backward(net, theta, &w, g_theta);
  return NF_OK;
}

/* ---- model files ---- */

/* key = v as a model file's integer. */
static nf_status set_size(nf_config *cfg, const char *key, size_t v)
{
  if (v > (size_t)LLONG_MAX)
    return nf_fail(NF_EINVAL, "residual save: %s = %zu does not fit a model file's integers", key, v);
  return nf_config_set_int(cfg, key, (long long)v);
}

/* Writes widths, activation, c, the log-det mode, power-iteration, fixed-point and series settings. */
static nf_status residual_save(const nf_layer *layer, nf_config *cfg)
{
  const nf_residual_opts *o = &((const rn_net *)layer->data)->o;
  char seed[24];
  snprintf(seed, sizeof seed, "%" PRIu64, o->probe_seed);
  nf_status st;
  if ((st = nf_config_set_sizes(cfg, "hidden", o->n_hidden, o->hidden)) ||
      (st = nf_config_set_string(cfg, "activation", "tanh")) ||
      (st = nf_config_set_real(cfg, "lipschitz", o->lipschitz)) ||
      (st = set_size(cfg, "power_iters", o->power_iters)) ||
      (st = nf_config_set_real(cfg, "power_tol", o->power_tol)) ||
      (st = set_size(cfg, "fixed_max_iter", o->fixed_max_iter)) ||
      (st = nf_config_set_real(cfg, "fixed_tol", o->fixed_tol)) ||
      (st = nf_config_set_string(cfg, "logdet", nf_residual_logdet_name(o->logdet))) ||
      (st = set_size(cfg, "n_exact_terms", o->n_exact_terms)) ||
      (st = nf_config_set_real(cfg, "roulette_p", o->roulette_p)) ||
      (st = nf_config_set_string(cfg, "probe", nf_noise_kind_name(o->probe))) ||
      (st = nf_config_set_string(cfg, "probe_seed", seed)))
    return nf_fail_prefixed(st, "residual");
  return NF_OK;
}

/* Reads residual_save's keys into o (hidden into a new array *hidden). */
static nf_status load_opts(const nf_config *cfg, nf_residual_opts *o, size_t **hidden)
{
  const char *act, *mode, *probe, *seed;
  size_t nh;
  nf_status st;
  if ((st = nf_config_get_string(cfg, "activation", &act)) ||
      (st = nf_config_get_real(cfg, "lipschitz", &o->lipschitz)) ||
      (st = nf_config_get_size(cfg, "power_iters", &o->power_iters)) ||
      (st = nf_config_get_real(cfg, "power_tol", &o->power_tol)) ||
      (st = nf_config_get_size(cfg, "fixed_max_iter", &o->fixed_max_iter)) ||
      (st = nf_config_get_real(cfg, "fixed_tol", &o->fixed_tol)) ||
      (st = nf_config_get_string(cfg, "logdet", &mode)) ||
      (st = nf_config_get_size(cfg, "n_exact_terms", &o->n_exact_terms)) ||
      (st = nf_config_get_real(cfg, "roulette_p", &o->roulette_p)) ||
      (st = nf_config_get_string(cfg, "probe", &probe)) ||
      (st = nf_config_get_string(cfg, "probe_seed", &seed)) ||
      (st = nf_config_get_len(cfg, "hidden", &nh)))
    return st;
  if (strcmp(act, "tanh") != 0)
    return nf_fail(NF_EFORMAT, "config key 'activation' is \"%s\", expected \"tanh\"", act);
  if (nf_residual_logdet_parse(mode, &o->logdet) || nf_noise_kind_parse(probe, &o->probe))
    return nf_fail_prefixed(NF_EFORMAT, "config");
  errno = 0;
  char *end;
  unsigned long long v = strtoull(seed, &end, 10);
  if (!*seed || *end || *seed == '-' || errno == ERANGE)
    return nf_fail(NF_EFORMAT, "config key 'probe_seed' is \"%s\", not an unsigned 64-bit "
                   "integer", seed);
  o->probe_seed = (uint64_t)v;
  if (nh == 0 || !(*hidden = nf_alloc_n(nh, sizeof **hidden)))
    return nf_fail(nh ? NF_ENOMEM : NF_EFORMAT, "config key 'hidden': %s",
                   nh ? "out of memory" : "no hidden layer");
  o->n_hidden = nh;
  o->hidden = *hidden;
  return nf_config_get_sizes(cfg, "hidden", nh, *hidden);
}

/* Rebuilds a residual layer from its saved configuration, with zero parameters. */
static nf_layer *residual_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                               const nf_resolver *res)
{
  (void)res;
  nf_residual_opts o = nf_residual_defaults();
  size_t *hidden = NULL;
  nf_layer *layer = NULL;
  if (load_opts(cfg, &o, &hidden))
    nf_fail_prefixed(nf_last_status(), "residual");
  else if (!(layer = nf_residual_new(dim, ctx_dim, &o, NULL)))
    nf_fail_prefixed(nf_last_status() == NF_ENOMEM ? NF_ENOMEM : NF_EFORMAT, "residual");
  free(hidden);
  return layer;
}

const nf_layer_type nf_residual_type = {
  .name = "residual",
  .work_size = residual_work_size,
  .apply = residual_apply,
  .vjp = residual_vjp,
  .destroy = net_free,
  .save = residual_save,
  .load = residual_load,
};
