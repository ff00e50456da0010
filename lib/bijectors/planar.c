/* lib/planar.c — planar flow x = z + u_hat tanh(w.z + b) (Rezende & Mohamed 2015).

   The map moves z along u_hat by an amount that depends on z only through
   a = w.z + b. Its Jacobian I + sech^2(a) u_hat w^T has determinant
   1 + s sech^2(a), s = w.u_hat = m(w.u) > -1, which is positive: the map is a
   bijection, and its inverse reduces to the scalar equation a + s tanh(a) = w.x + b.
   vjp in the inverse direction reuses the forward pullback: for z = F^-1(x; theta),
   g_x = J^-T (g_z - g_logdet grad_z logdet_F) and the parameter gradient is the
   forward one with cotangents (-g_x, -g_logdet) (implicit function theorem;
   nf_vjp_rows).

   Parameters: u = params[0..d), w = params[d..2d), b = params[2d].
   Workspace: u_hat[d], the cotangent of u_hat[d], one row's cotangent[d], and
   the inverse's roots[n]. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "nflow/config.h"
#include "nflow/planar.h"

typedef struct planar_data {
  double inv_tol;     /* absolute tolerance on the root a of the inverse */
  unsigned max_iter;  /* iteration cap of that root finding, per row */
} planar_data;

/* Quantities derived from (u, w) shared by every row. */
typedef struct planar_coef {
  const double *u, *w;
  double b;
  double s;        /* w.u_hat = m(w.u) = -1 + softplus(w.u) */
  double q;        /* 1 + s = softplus(w.u) > 0, without cancellation */
  double sig;      /* m'(w.u) = sigmoid(w.u) */
  double c;        /* u_hat = u + c w, c = (m(w.u) - w.u)/|w|^2 */
  double ww;       /* |w|^2 */
  int degenerate;  /* |w|^2 too small: u_hat = u, s = w.u */
} planar_coef;

/* One row's geometry at a = w.z + b. */
typedef struct planar_row {
  double t;       /* tanh(a) */
  double k;       /* sech^2(a) = 1 - t^2 */
  double jac;     /* det J = 1 + s k = t^2 + q k, a sum of non-negative terms */
  double log_jac; /* log det J */
} planar_row;

/* Dot product sum_j a_j b_j. */
static double dot(size_t d, const double *a, const double *b)
{
  double s = 0;
  for (size_t j = 0; j < d; j++) s += a[j] * b[j];
  return s;
}

/* u_hat and the scalars of planar_coef from the (checked, finite) parameters. */
static void planar_setup(const nf_layer *layer, const double *theta, planar_coef *pc,
                         double *uhat)
{
  size_t d = layer->dim;
  pc->u = theta;
  pc->w = theta + d;
  pc->b = theta[2 * d];
  double wu = dot(d, pc->w, pc->u);
  pc->ww = dot(d, pc->w, pc->w);
  pc->c = (nf_softplus(-wu) - 1.0) / pc->ww; /* m(wu) - wu = softplus(-wu) - 1 */
  pc->degenerate = !(pc->ww > 0) || !isfinite(pc->ww) || !isfinite(pc->c);
  if (pc->degenerate) {
    pc->c = 0;
    pc->s = wu;
    pc->q = 1.0 + wu;
    pc->sig = 1.0;
  } else {
    pc->q = nf_softplus(wu);
    pc->s = pc->q - 1.0;
    pc->sig = nf_sigmoid(wu);
  }
  for (size_t j = 0; j < d; j++) uhat[j] = pc->u[j] + pc->c * pc->w[j];
}

/* tanh, sech^2 and log det J = log(1 + s sech^2(a)) at a, stable for all a. */
static planar_row planar_at(const planar_coef *pc, double a)
{
  planar_row r;
  double e = exp(-2.0 * fabs(a));
  r.t = tanh(a);
  r.k = 4.0 * e / ((1.0 + e) * (1.0 + e));
  r.jac = r.t * r.t + pc->q * r.k;
  r.log_jac = nf_log1p_or_ratio(pc->s * r.k, r.jac);
  return r;
}

/* Root of f(a) = a + s tanh(a) - y (f' = det J >= 0) by Newton's method, falling
   back to bisection when a step leaves the bracket or does not halve (rtsafe);
   1 once a step or the bracket is at most tol (a step is 0 at an exact root or
   when no double lies inside the bracket), 0 after max_iter iterations. */
static int planar_solve(const planar_coef *pc, double y, double tol, unsigned max_iter,
                        double *root)
{
  double other = y - pc->s * copysign(1.0, y); /* |s tanh(a)| <= |s| bounds the root */
  double lo = fmin(y, other), hi = fmax(y, other);
  double a = fmin(fmax(y / pc->q, lo), hi); /* the root of the linearisation at 0 */
  double step = hi - lo, step_old = step;
  for (unsigned it = 0; it < max_iter; it++) {
    planar_row r = planar_at(pc, a);
    double f = a + pc->s * r.t - y;
    if (f < 0) lo = a; else hi = a;
    double newton = a - f / r.jac;
    int take = newton > lo && newton < hi && 2.0 * fabs(newton - a) <= step_old;
    double next = f == 0 ? a : take ? newton : 0.5 * (lo + hi);
    step_old = step;
    step = fabs(next - a);
    a = next;
    if (step <= tol || hi - lo <= tol) {
      *root = a;
      return 1;
    }
  }
  return 0;
}

/* planar's row pullbacks (nf_row_pullback.self): the coefficients and u_hat, and
   the accumulated dL/du_hat and dL/ds. */
typedef struct planar_pull {
  const nf_layer *layer;
  double *g_theta;
  const planar_coef *pc;
  const double *uhat;
  double *g_uhat, g_s;
} planar_pull;

/* nf_row_pullback.pull: g_in = J^T (sg g_x) + sg g_l grad_z logdet at row z;
   dL/dw (direct part) and dL/db into g_theta, dL/du_hat and dL/ds into self. */
static void planar_pull_row(void *self, const double *z, const double *g_x, double g_l,
                            double sg, double *g_in)
{
  planar_pull *pp = self;
  const planar_coef *pc = pp->pc;
  size_t d = pp->layer->dim;
  double *g_w = pp->g_theta + d;
  planar_row r = planar_at(pc, dot(d, pc->w, z) + pc->b);
  double g_a = sg * dot(d, g_x, pp->uhat) * r.k - sg * g_l * 2.0 * pc->s * r.t * r.k / r.jac;
  for (size_t j = 0; j < d; j++) {
    if (g_in) g_in[j] = sg * g_x[j] + g_a * pc->w[j];
    g_w[j] += g_a * z[j];
    pp->g_uhat[j] += sg * g_x[j] * r.t;
  }
  pp->g_theta[2 * d] += g_a;
  pp->g_s += sg * g_l * r.k / r.jac;
}

/* Adds to dL/du, dL/dw the chain through u_hat(u, w) and s(u, w), given dL/du_hat and dL/ds. */
static void planar_pull_coef(const nf_layer *layer, const planar_coef *pc,
                             const double *g_uhat, double g_s, double *g_theta)
{
  size_t d = layer->dim;
  double *g_u = g_theta, *g_w = g_theta + d;
  if (pc->degenerate) { /* u_hat = u, s = w.u */
    for (size_t j = 0; j < d; j++) {
      g_u[j] += g_uhat[j] + g_s * pc->w[j];
      g_w[j] += g_s * pc->u[j];
    }
    return;
  }
  double wu = dot(d, pc->w, pc->u);
  double g_c = dot(d, g_uhat, pc->w);              /* dL/dc */
  double g_wu = g_c * (-nf_sigmoid(-wu)) / pc->ww  /* dc/d(w.u) = (m' - 1)/|w|^2 */
                + g_s * pc->sig;                   /* ds/d(w.u) = m' */
  double g_ww = -g_c * pc->c / pc->ww;             /* dc/d|w|^2 */
  for (size_t j = 0; j < d; j++) {
    g_u[j] += g_uhat[j] + g_wu * pc->w[j];
    g_w[j] += pc->c * g_uhat[j] + g_wu * pc->u[j] + 2.0 * g_ww * pc->w[j];
  }
}

/* Workspace: u_hat[d], dL/du_hat[d], one row's cotangent[d], a parameter
   cotangent [2d + 1] for when the caller wants none, roots[n]. */
static size_t planar_work_size(const nf_layer *layer, size_t n)
{
  size_t total;
  return nf_size_add(5 * layer->dim + 1, n, &total) ? 0 : total; /* 5 dim: nf_check_dim */
}

/* Forward x = z + u_hat tanh(w.z + b), logdet += log(1 + s sech^2). */
static void planar_forward(const nf_layer *layer, const planar_coef *pc, const double *uhat,
                           size_t n, const double *z, double *x, double *logdet)
{
  size_t d = layer->dim;
  for (size_t i = 0; i < n; i++) {
    const double *zi = z + i * d;
    planar_row r = planar_at(pc, dot(d, pc->w, zi) + pc->b);
    for (size_t j = 0; j < d; j++) x[i * d + j] = zi[j] + uhat[j] * r.t;
    if (logdet) logdet[i] += r.log_jac;
  }
}

/* Inverse z = x - u_hat tanh(a), a the root of a + s tanh(a) = w.x + b; logdet -= log det J(a).
   All roots are found before out and logdet are written. */
static nf_status planar_inverse(const nf_layer *layer, const planar_coef *pc, const double *uhat,
                                size_t n, const double *x, double *z, double *logdet,
                                double *roots)
{
  const planar_data *pd = layer->data;
  size_t d = layer->dim;
  for (size_t i = 0; i < n; i++)
    if (!planar_solve(pc, dot(d, pc->w, x + i * d) + pc->b, pd->inv_tol, pd->max_iter, &roots[i]))
      return nf_fail(NF_ENOCONV,
                     "planar inverse: root finding for row %zu did not reach tolerance %g "
                     "in %u iterations", i, pd->inv_tol, pd->max_iter);
  for (size_t i = 0; i < n; i++) {
    planar_row r = planar_at(pc, roots[i]);
    for (size_t j = 0; j < d; j++) z[i * d + j] = x[i * d + j] - uhat[j] * r.t;
    if (logdet) logdet[i] -= r.log_jac;
  }
  return NF_OK;
}

/* nf_layer_type.apply: x = z + u_hat tanh(w.z + b) or its inverse, with log-det. */
static nf_status planar_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                              const double *ctx, double *out, double *logdet, const nf_apply_opts *opts, double *work)
{
  (void)ctx;
  (void)opts;
  planar_coef pc;
  double *uhat = work;
  planar_setup(layer, theta, &pc, uhat);
  if (dir == NF_FORWARD) {
    planar_forward(layer, &pc, uhat, n, in, out, logdet);
    return NF_OK;
  }
  return planar_inverse(layer, &pc, uhat, n, in, out, logdet, work + 5 * layer->dim + 1);
}

/* nf_row_pullback.inverse_cotangent: v = J^-T (g_z - g_l grad_z logdet_F) at row z
   (Sherman-Morrison on J^T = I + sech^2 w u_hat^T). */
static void planar_inverse_cotangent(void *self, const double *z, const double *g_z, double g_l,
                                     double *v)
{
  const planar_pull *pp = self;
  const planar_coef *pc = pp->pc;
  size_t d = pp->layer->dim;
  planar_row r = planar_at(pc, dot(d, pc->w, z) + pc->b);
  double g_w_coef = g_l * 2.0 * pc->s * r.t * r.k / r.jac; /* g_z - g_l grad logdet_F = g_z + this w */
  double u_dot = dot(d, pp->uhat, g_z) + g_w_coef * pc->s;
  double coef = g_w_coef - r.k * u_dot / r.jac;
  for (size_t j = 0; j < d; j++) v[j] = g_z[j] + coef * pc->w[j];
}

/* nf_layer_type.vjp: input and parameter cotangents of either direction (nf_vjp_rows). */
static nf_status planar_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n, const double *in,
                            const double *ctx, const double *out, const double *g_out,
                            const double *g_logdet, double *g_in, double *g_ctx, double *g_theta, double *work)
{
  (void)ctx;
  (void)g_ctx;
  size_t d = layer->dim;
  planar_coef pc;
  double *g_params = g_theta ? g_theta : work + 3 * d;
  planar_pull pp = {layer, g_params, &pc, work, work + d, 0.0};
  planar_setup(layer, theta, &pc, work);
  for (size_t j = 0; j < d; j++) pp.g_uhat[j] = 0;
  nf_row_pullback pb = {planar_pull_row, planar_inverse_cotangent, &pp};
  nf_vjp_rows(&pb, dir, n, d, in, out, g_out, g_logdet, g_in, work + 2 * d);
  planar_pull_coef(layer, &pc, pp.g_uhat, pp.g_s, g_params);
  return NF_OK;
}

/* Frees the planar_data. */
static void planar_destroy(void *data) { free(data); }

/* save: "inv_tol" and "max_iter". */
static nf_status planar_save(const nf_layer *layer, nf_config *cfg)
{
  const planar_data *pd = layer->data;
  nf_status st = nf_config_set_real(cfg, "inv_tol", pd->inv_tol);
  return st ? st : nf_config_set_int(cfg, "max_iter", (long long)pd->max_iter);
}

/* load: nf_planar_new(dim, inv_tol, NULL), then its iteration cap. */
static nf_layer *planar_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                             const nf_resolver *res)
{
  (void)ctx_dim;
  (void)res;
  double inv_tol;
  long long max_iter;
  if (nf_config_get_real(cfg, "inv_tol", &inv_tol) || nf_config_get_int(cfg, "max_iter", &max_iter))
    return NULL;
  if (max_iter < 1 || (unsigned long long)max_iter > UINT_MAX) {
    nf_fail(NF_EFORMAT, "config key 'max_iter': %lld is not in 1..%u", max_iter, UINT_MAX);
    return NULL;
  }
  nf_layer *layer = nf_planar_new(dim, inv_tol, NULL);
  if (layer) nf_planar_set_max_iter(layer, (unsigned)max_iter);
  return layer;
}

const nf_layer_type nf_planar_type = {
  .name = "planar",
  .save = planar_save,
  .load = planar_load,
  .work_size = planar_work_size,
  .apply = planar_apply,
  .vjp = planar_vjp,
  .destroy = planar_destroy,
};

/* Initial parameters: see nf_planar_new in planar.h. */
static void planar_init(nf_layer *layer, nf_rng *rng)
{
  size_t d = layer->dim;
  double *u = layer->init, *w = layer->init + d, ww = 0;
  const double log_e_minus_1 = 0.54132485461291810; /* softplus^-1(1): m(w.u) = 0 */
  for (size_t j = 0; j < d; j++) {
    w[j] = rng ? nf_rng_normal(rng) / sqrt((double)d) : (j == 0);
    ww += w[j] * w[j];
  }
  if (ww == 0) w[0] = ww = 1.0; /* all draws zero: keep |w| > 0 */
  for (size_t j = 0; j < d; j++)
    u[j] = log_e_minus_1 * w[j] / ww + (rng ? 0.1 * nf_rng_normal(rng) : 0.0);
  layer->init[2 * d] = rng ? 0.1 * nf_rng_normal(rng) : 0.0;
}

/* Validates the arguments, then a layer with planar_init's parameters (see planar.h). */
nf_layer *nf_planar_new(size_t dim, double inv_tol, nf_rng *rng)
{
  if (nf_check_dim("nf_planar_new", dim) || nf_check_positive("nf_planar_new", "inv_tol", inv_tol))
    return NULL;
  planar_data *pd = malloc(sizeof *pd);
  if (!pd) {
    nf_fail(NF_ENOMEM, "nf_planar_new: out of memory");
    return NULL;
  }
  pd->inv_tol = inv_tol;
  pd->max_iter = NF_PLANAR_MAX_ITER;
  nf_layer *layer = nf_layer_create(&nf_planar_type, dim, 0, 2 * dim + 1, pd); /* nf_check_dim */
  if (layer) planar_init(layer, rng);
  return layer;
}

/* Sets planar_data.max_iter (see planar.h). */
nf_status nf_planar_set_max_iter(nf_layer *layer, unsigned max_iter)
{
  if (!layer || layer->type != &nf_planar_type)
    return nf_fail(NF_EINVAL, "nf_planar_set_max_iter: layer is NULL or not a planar layer");
  if (max_iter == 0) return nf_fail(NF_EINVAL, "nf_planar_set_max_iter: max_iter is 0");
  ((planar_data *)layer->data)->max_iter = max_iter;
  return NF_OK;
}
