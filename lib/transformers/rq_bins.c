/* lib/transformers/rq_bins.c — the rational-quadratic bin math of both spline
   transformers (rq_bins.h): softmax bins, knot search, evaluation, the stable
   quadratic inverse and the analytic pullbacks. One pass per element, no
   allocation; the softmaxes are computed once per coordinate and recorded. */
#include <math.h>

#include "internal.h"
#include "nflow/config.h"
#include "rq_bins.h"

#define RQ_PI 3.14159265358979323846

/* The per-element helpers are inlined into rq_map and rq_backward, so that
   their loops get those functions' vector clones (NF_VECTOR_LOOP). */
#if defined(__GNUC__)
#define RQ_INLINE static inline __attribute__((always_inline))
#else
#define RQ_INLINE static inline
#endif

/* A spline's shape: bins, interval and minima, and which variant. */
typedef struct rq_geom {
  size_t bins;
  double lo, hi;
  double min_w, min_h, min_d;
  int circular;
  const char *name; /* in messages */
} rq_geom;

/* 1 for the circular variant (o->kind NF_TRANSFORMER_CIRCULAR_SPLINE). */
static int is_circular(const nf_transformer_opts *o)
{
  return o->kind == NF_TRANSFORMER_CIRCULAR_SPLINE;
}

/* The shape of the interval ([-B, B]) or circular ([-pi, pi]) spline of o. */
static rq_geom geom_of(const nf_transformer_opts *o)
{
  const int circular = is_circular(o);
  double b = circular ? RQ_PI : o->tail_bound;
  rq_geom g = {o->bins, -b, b, o->min_bin_width, o->min_bin_height, o->min_derivative,
               circular, circular ? "circular spline" : "spline"};
  return g;
}

size_t rq_n_raw(const nf_transformer_opts *o)
{
  return 3 * o->bins - (is_circular(o) ? 0 : 1);
}

size_t rq_n_record(const nf_transformer_opts *o)
{
  return 2 * o->bins + 6;
}

/* NF_EINVAL unless v is finite, v >= 0 and count v < 1 ("fn: name must be
   finite and in [0, 1/count) ..."). */
static nf_status check_fraction(const char *fn, const char *name, double v, size_t count,
                                const char *count_text)
{
  if (isfinite(v) && v >= 0 && v * (double)count < 1.0) return NF_OK;
  return nf_fail(NF_EINVAL, "%s: %s must be finite and in [0, 1/%s) = [0, %g), got %g", fn, name,
                 count_text, 1.0 / (double)count, v);
}

nf_status rq_check_opts(const nf_transformer_opts *o, const char *fn)
{
  const rq_geom G = geom_of(o), *g = &G;
  if (o->kind != NF_TRANSFORMER_SPLINE && !g->circular)
    return nf_fail(NF_EINVAL, "%s: spline options of transformer kind '%s'", fn,
                   nf_transformer_kind_name(o->kind));
  if (!g->circular && nf_check_positive(fn, "tail_bound", o->tail_bound)) return NF_EINVAL;
  if (g->bins < 1 || g->bins > RQ_MAX_BINS)
    return nf_fail(NF_EINVAL, "%s: %s bins must be between 1 and %d, got %zu", fn, g->name,
                   RQ_MAX_BINS, g->bins);
  nf_status st = check_fraction(fn, "min_bin_width", g->min_w, g->bins, "bins");
  if (!st) st = check_fraction(fn, "min_bin_height", g->min_h, g->bins, "bins");
  if (!st) st = check_fraction(fn, "min_derivative", g->min_d, 1, "1");
  return st;
}

/* The raw derivative values start after the 2K logits. */
#define DERIV_RAW(g, h) ((h) + 2 * (g)->bins)

/* Index among the derivative raws of knot j's derivative, or -1 when it is
   fixed at 1 (the interval spline's ends); circular: knot K is knot 0. */
RQ_INLINE long deriv_index(const rq_geom *g, size_t j)
{
  if (g->circular) return j == g->bins ? 0 : (long)j;
  return j == 0 || j == g->bins ? -1 : (long)j - 1;
}

/* d_j = min_d + softplus(r) with one exp and one log1p; *slope = sigmoid(r)
   = dd_j/dr (0 for a fixed end derivative, d_j = 1). */
RQ_INLINE double knot_derivative(const rq_geom *g, const double *r, size_t j, double *slope)
{
  long i = deriv_index(g, j);
  if (i < 0) {
    *slope = 0.0;
    return 1.0;
  }
  double v = r[i], e = exp(-fabs(v)), inv = 1.0 / (1.0 + e);
  *slope = v >= 0 ? inv : e * inv;
  return g->min_d + (v > 0 ? v : 0.0) + log1p(e);
}

/* p = softmax(u) over K logits (max-shifted, so every exp argument is <= 0;
   the exp loop has no reduction, so that it vectorises). */
RQ_INLINE void softmax(size_t K, const double *u, double *p)
{
  double mx = u[0], sum = 0.0;
  for (size_t i = 1; i < K; i++) mx = u[i] > mx ? u[i] : mx;
  for (size_t i = 0; i < K; i++) p[i] = nf_exp_nonpositive(u[i] - mx);
  for (size_t i = 0; i < K; i++) sum += p[i];
  const double inv = 1.0 / sum;
  for (size_t i = 0; i < K; i++) p[i] *= inv;
}

/* The knot after c: c + (hi - lo) (m + (1 - K m) p_i), the last one exactly hi. */
RQ_INLINE double next_knot(size_t K, double lo, double hi, double m, const double *p,
                           size_t i, double c)
{
  return i + 1 == K ? hi : c + (hi - lo) * (m + (1.0 - (double)K * m) * p[i]);
}

/* The bin k of v among the knots of the softmax p (v in [lo, hi]): the last
   knot <= v, branch-free; its left knot and width. */
RQ_INLINE size_t find_bin(size_t K, double lo, double hi, double m, const double *p,
                          double v, double *left, double *width)
{
  double c = lo, l = lo, r = hi;
  size_t k = 0;
  for (size_t i = 0; i < K; i++) {
    double nx = next_knot(K, lo, hi, m, p, i, c);
    int here = v >= c;
    k = here ? i : k;
    l = here ? c : l;
    r = here ? nx : r;
    c = nx;
  }
  *left = l;
  *width = r - l;
  return k;
}

/* Bin k's left knot and width (the same sums as find_bin) and P = sum_{i<k} p_i. */
RQ_INLINE void bin_at(size_t K, double lo, double hi, double m, const double *p, size_t k,
                      double *left, double *width, double *cum)
{
  double c = lo, P = 0.0;
  for (size_t i = 0; i < k; i++) {
    c = next_knot(K, lo, hi, m, p, i, c);
    P += p[i];
  }
  *left = c;
  *width = next_knot(K, lo, hi, m, p, k, c) - c;
  *cum = P;
}

/* One bin: left knots, widths and knot derivatives in x and y. */
typedef struct rq_bin {
  double xk, w, yk, h, d0, d1;
} rq_bin;

/* y(xi) of the bin and *logd = log dy/dx (Durkan et al. 2019, eqs. 4-5). */
RQ_INLINE double bin_eval(const rq_bin *b, double xi, double *logd)
{
  double s = b->h / b->w, om = 1.0 - xi, t = xi * om;
  double den = s + (b->d0 + b->d1 - 2.0 * s) * t;
  double g = b->d1 * xi * xi + 2.0 * s * t + b->d0 * om * om;
  *logd = log(s * s * g / (den * den));
  return b->yk + b->h * (s * xi * xi + b->d0 * t) / den;
}

/* xi with y(xi) = yk + dy: the root of a xi^2 + b xi + c = 0 in the stable
   form xi = 2c / (-b - sqrt(b^2 - 4ac)) (Durkan et al. 2019, eqs. 6-8, 29). */
RQ_INLINE double bin_solve(const rq_bin *b, double dy)
{
  double s = b->h / b->w, delta = b->d0 + b->d1 - 2.0 * s;
  double qa = b->h * (s - b->d0) + dy * delta, qb = b->h * b->d0 - dy * delta, qc = -s * dy;
  double disc = qb * qb - 4.0 * qa * qc;
  return 2.0 * qc / (-qb - sqrt(disc > 0 ? disc : 0.0));
}

/* Partial derivatives of y = yk + H R(xi, s, d0, d1) and of L = log dy/dx
   at xi, with s = H/W: y_* = H dR/d*, L_* = dL/d*. */
typedef struct rq_partials {
  double s, R, y_xi, y_s, y_d0, y_d1, l_xi, l_s, l_d0, l_d1;
} rq_partials;

/* The partials above: R = (s xi^2 + d0 t)/den, L = 2 log s + log g - 2 log den. */
RQ_INLINE rq_partials bin_partials(const rq_bin *b, double xi)
{
  rq_partials P;
  const double s = b->h / b->w, d0 = b->d0, d1 = b->d1, H = b->h;
  const double om = 1.0 - xi, t = xi * om, u = 1.0 - 2.0 * xi, delta = d0 + d1 - 2.0 * s;
  const double den = s + delta * t, ide = 1.0 / den, ide2 = ide * ide;
  const double nr = s * xi * xi + d0 * t, g = d1 * xi * xi + 2.0 * s * t + d0 * om * om;
  const double ig = 1.0 / g, hd2 = H * ide2;
  P.s = s;
  P.R = nr * ide;
  P.y_xi = hd2 * s * g;
  P.y_s = hd2 * (xi * xi * den - nr * (1.0 - 2.0 * t));
  P.y_d0 = hd2 * t * (s * om * om + d1 * t);
  P.y_d1 = -hd2 * nr * t;
  P.l_xi = 2.0 * (d1 * xi + s * u - d0 * om) * ig - 2.0 * delta * u * ide;
  P.l_s = 2.0 / s + 2.0 * t * ig - 2.0 * (1.0 - 2.0 * t) * ide;
  P.l_d0 = om * om * ig - 2.0 * t * ide;
  P.l_d1 = xi * xi * ig - 2.0 * t * ide;
  return P;
}

/* Cotangents of (x, xk, W, yk, H, d0, d1) of gy y + gl L, x held as the input:
   xi = (x - xk)/W and s = H/W by the chain rule. */
typedef struct rq_grad {
  double x, xk, w, yk, h, d0, d1;
} rq_grad;

RQ_INLINE rq_grad bin_pull(const rq_bin *b, const rq_partials *P, double xi, double gy,
                           double gl)
{
  rq_grad G;
  const double g_xi = gy * P->y_xi + gl * P->l_xi, g_s = gy * P->y_s + gl * P->l_s;
  const double iw = 1.0 / b->w;
  G.x = g_xi * iw;
  G.xk = -G.x;
  G.w = -(g_xi * xi + g_s * P->s) * iw;
  G.yk = gy;
  G.h = gy * P->R + g_s * iw;
  G.d0 = gy * P->y_d0 + gl * P->l_d0;
  G.d1 = gy * P->y_d1 + gl * P->l_d1;
  return G;
}

/* Softmax pullback of a bin's left knot lo + span sum_{i<k} w_i and width
   span w_k (w = m + a softmax(u)): gu_j = span a p_j ([j<k] g_left + [j=k] g_w
   - P g_left - p_k g_w), P = sum_{i<k} p_i. */
RQ_INLINE void softmax_pull(size_t K, double scale, const double *p, size_t k, double P,
                            double g_left, double g_w, double *gu)
{
  const double mean = g_left * P + g_w * p[k];
  for (size_t j = 0; j < K; j++)
    gu[j] = scale * p[j] * ((j < k ? g_left : 0.0) + (j == k ? g_w : 0.0) - mean);
}

/* One element inside [lo, hi]: out = the spline (fwd) or its inverse at v,
   *logd = log dy/dx there; records the softmaxes, bin, xi, derivatives. */
RQ_INLINE double map_element(const rq_geom *g, int fwd, const double *hr, double v,
                             double *rc, double *logd)
{
  const size_t K = g->bins;
  double *p = rc, *q = rc + K, *tail = rc + 2 * K, lin, win, lout, wout, cum, s0, s1;
  softmax(K, hr, p);
  softmax(K, hr + K, q);
  size_t k = find_bin(K, g->lo, g->hi, fwd ? g->min_w : g->min_h, fwd ? p : q, v, &lin, &win);
  bin_at(K, g->lo, g->hi, fwd ? g->min_h : g->min_w, fwd ? q : p, k, &lout, &wout, &cum);
  const double *r = DERIV_RAW(g, hr);
  rq_bin b = {fwd ? lin : lout, fwd ? win : wout, fwd ? lout : lin, fwd ? wout : win,
              knot_derivative(g, r, k, &s0), knot_derivative(g, r, k + 1, &s1)};
  double xi = fwd ? (v - b.xk) / b.w : bin_solve(&b, v - b.yk);
  xi = xi < 0.0 ? 0.0 : xi > 1.0 ? 1.0 : xi;
  double y = bin_eval(&b, xi, logd);
  tail[0] = (double)k;
  tail[1] = xi;
  tail[2] = b.d0;
  tail[3] = b.d1;
  tail[4] = s0;
  tail[5] = s1;
  return fwd ? y : b.xk + xi * b.w;
}

/* NF_EDOMAIN for the first input outside [lo, hi] (circular only: checked
   before anything is written). */
static nf_status check_domain(const rq_geom *g, size_t n, size_t db, const double *in)
{
  for (size_t e = 0; e < n * db; e++)
    if (!(in[e] >= g->lo && in[e] <= g->hi))
      return nf_fail(NF_EDOMAIN, "%s: input %g at row %zu, coordinate %zu lies outside [-pi, pi] "
                     "(the circle it is defined on)", g->name, in[e], e / db, e % db);
  return NF_OK;
}

/* The spline (dir forward) or its inverse: identity tails (interval) or
   NF_EDOMAIN outside the circle (circular); logdet[i] += +-sum_j log dy/dx. */
NF_VECTOR_LOOP static nf_status rq_map(const nf_transformer_opts *o, nf_dir dir, size_t n,
                                       size_t db, const double *h, const double *in, double *out,
                                       double *logdet, double *rec)
{
  const rq_geom G = geom_of(o), *g = &G;
  const size_t nr = rq_n_raw(o), nc = rq_n_record(o), K = g->bins;
  const int fwd = dir == NF_FORWARD;
  if (g->circular && check_domain(g, n, db, in)) return NF_EDOMAIN;
  for (size_t i = 0; i < n; i++) {
    double sum = 0.0;
    for (size_t j = 0; j < db; j++) {
      const size_t e = i * db + j;
      const double v = in[e];
      double *rc = rec + e * nc, logd = 0.0;
      if (v >= g->lo && v <= g->hi) {
        out[e] = map_element(g, fwd, h + e * nr, v, rc, &logd);
      } else { /* identity tail (interval spline): slope 1, log-det 0 */
        out[e] = v;
        rc[2 * K] = -1.0;
      }
      sum += logd;
    }
    if (logdet) logdet[i] += fwd ? sum : -sum;
  }
  return NF_OK;
}

/* Pullback of one element recorded in rc (not a tail), cotangents go (output)
   and gl (log-det of direction fwd); writes gh (n_raw, zeroed by the caller)
   and returns the input cotangent. The inverse uses the implicit function
   theorem: u = (go - gl dL/dx) / (dy/dx), then the forward pullback of (-u, -gl). */
RQ_INLINE double pull_element(const rq_geom *g, int fwd, const double *rc, double go,
                              double gl, double *gh)
{
  const size_t K = g->bins, k = (size_t)rc[2 * K];
  const double xi = rc[2 * K + 1], span = g->hi - g->lo;
  double px, py;
  rq_bin b;
  bin_at(K, g->lo, g->hi, g->min_w, rc, k, &b.xk, &b.w, &px);
  bin_at(K, g->lo, g->hi, g->min_h, rc + K, k, &b.yk, &b.h, &py);
  b.d0 = rc[2 * K + 2];
  b.d1 = rc[2 * K + 3];
  rq_partials P = bin_partials(&b, xi);
  const double sg = fwd ? 1.0 : -1.0, u = fwd ? go : (go * b.w - gl * P.l_xi) / P.y_xi;
  rq_grad G = bin_pull(&b, &P, xi, sg * u, sg * gl);
  softmax_pull(K, span * (1.0 - (double)K * g->min_w), rc, k, px, G.xk, G.w, gh);
  softmax_pull(K, span * (1.0 - (double)K * g->min_h), rc + K, k, py, G.yk, G.h, gh + K);
  long i0 = deriv_index(g, k), i1 = deriv_index(g, k + 1);
  double *gr = DERIV_RAW(g, gh);
  if (i0 >= 0) gr[i0] += G.d0 * rc[2 * K + 4];
  if (i1 >= 0) gr[i1] += G.d1 * rc[2 * K + 5];
  return fwd ? G.x : u;
}

nf_status rq_forward(const nf_transformer_opts *o, size_t n, size_t db, const double *h,
                     const double *x, double *y, double *logdet, double *rec)
{
  return rq_map(o, NF_FORWARD, n, db, h, x, y, logdet, rec);
}

nf_status rq_inverse(const nf_transformer_opts *o, size_t n, size_t db, const double *h,
                     const double *y, double *x, double *logdet, double *rec)
{
  return rq_map(o, NF_INVERSE, n, db, h, y, x, logdet, rec);
}

NF_VECTOR_LOOP void rq_backward(const nf_transformer_opts *o, nf_dir dir, size_t n, size_t db,
                                const double *h, const double *in, const double *out,
                                const double *rec, const double *g_out, const double *g_logdet,
                                double *g_in, double *g_h)
{
  (void)h, (void)in, (void)out; /* everything needed is in rec */
  const rq_geom G = geom_of(o), *g = &G;
  const size_t nr = rq_n_raw(o), nc = rq_n_record(o), K = g->bins;
  const int fwd = dir == NF_FORWARD;
  for (size_t i = 0; i < n; i++) {
    const double gl = g_logdet ? g_logdet[i] : 0.0;
    for (size_t j = 0; j < db; j++) {
      const size_t e = i * db + j;
      const double *rc = rec + e * nc;
      double *gh = g_h + e * nr, gi = g_out[e];
      for (size_t m = 0; m < nr; m++) gh[m] = 0.0;
      if (rc[2 * K] >= 0) gi = pull_element(g, fwd, rc, g_out[e], gl, gh);
      if (g_in) g_in[e] = gi;
    }
  }
}

void rq_identity_init(const nf_transformer_opts *o, double *h0)
{
  const size_t K = o->bins, nr = rq_n_raw(o);
  const double r1 = log(expm1(1.0 - o->min_derivative)); /* min_d + softplus(r1) = 1 */
  for (size_t m = 0; m < 2 * K; m++) h0[m] = 0.0;
  for (size_t m = 2 * K; m < nr; m++) h0[m] = r1;
}

nf_status rq_save_opts(const nf_transformer_opts *o, nf_config *cfg)
{
  const int circular = is_circular(o);
  nf_status st = nf_config_set_int(cfg, "bins", (long long)o->bins);
  if (!st && !circular) st = nf_config_set_real(cfg, "tail_bound", o->tail_bound);
  if (!st) st = nf_config_set_real(cfg, "min_bin_width", o->min_bin_width);
  if (!st) st = nf_config_set_real(cfg, "min_bin_height", o->min_bin_height);
  if (!st) st = nf_config_set_real(cfg, "min_derivative", o->min_derivative);
  return st;
}

/* Values are checked by the constructor that uses them (rq_check). */
nf_status rq_load_opts(const nf_config *cfg, nf_transformer_opts *o)
{
  const int circular = is_circular(o);
  nf_status st = nf_config_get_size(cfg, "bins", &o->bins);
  if (!st && !circular) st = nf_config_get_real(cfg, "tail_bound", &o->tail_bound);
  if (!st) st = nf_config_get_real(cfg, "min_bin_width", &o->min_bin_width);
  if (!st) st = nf_config_get_real(cfg, "min_bin_height", &o->min_bin_height);
  if (!st) st = nf_config_get_real(cfg, "min_derivative", &o->min_derivative);
  return st;
}
