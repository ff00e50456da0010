/* lib/bijectors/preprocess.c — preprocessing as fixed bijections (no
   parameters; constants saved as config tensors): "standardize" and "logit".

   standardize: x = shift + scale z;  dx/dz = scale, log-det sum log scale.
   logit, with c = (1 - 2 alpha)/(hi - lo), u = alpha + c (x - lo) and
   v = 1 - u = alpha + c (hi - x) (each formed from its own side, so neither
   cancels near its bound):
     inverse  z = log u - log v,          dz/dx = c/(u v),
              log-det log c - log u - log v,   d/dx of it = c/v - c/u;
     forward  u = sigmoid(z), v = sigmoid(-z), x = lo + (u - alpha)/c for
              z <= 0, x = hi - (v - alpha)/c otherwise,   dx/dz = u v / c,
              log-det log u + log v - log c (log u = -softplus(-z),
              log v = -softplus(z)),  d/dz of it = v - u. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nflow/config.h"
#include "nflow/preprocess.h"

/* Constants of either family: a[d], b[d] (shift, scale or lo, hi), c[d]
   (logit only), alpha, and the log-det of the forward map's constant part. */
typedef struct pre_data {
  double *a, *b, *c;
  double alpha;
  double ld; /* standardize: sum log scale; logit: -sum log c */
} pre_data;

static void pre_destroy(void *data)
{
  pre_data *p = data;
  if (!p) return;
  free(p->a);
  free(p->b);
  free(p->c);
  free(p);
}

/* A pre_data with copies of a and b (and room for c if with_c); NULL with
   nf_errmsg on no memory. */
static pre_data *pre_new(const char *fn, size_t d, const double *a, const double *b, int with_c)
{
  pre_data *p = calloc(1, sizeof *p);
  if (p) {
    p->a = nf_alloc_n(d, sizeof *p->a);
    p->b = nf_alloc_n(d, sizeof *p->b);
    p->c = with_c ? nf_alloc_n(d, sizeof *p->c) : NULL;
  }
  if (!p || !p->a || !p->b || (with_c && !p->c)) {
    pre_destroy(p);
    nf_fail(NF_ENOMEM, "%s: out of memory", fn);
    return NULL;
  }
  memcpy(p->a, a, d * sizeof *a);
  memcpy(p->b, b, d * sizeof *b);
  return p;
}

/* NF_EINVAL "fn: name[j] = v is not finite" for the first non-finite entry. */
static nf_status check_finite(const char *fn, const char *name, size_t d, const double *v)
{
  size_t j = nf_first_nonfinite(d, v);
  return j < d ? nf_fail(NF_EINVAL, "%s: %s[%zu] = %g is not finite", fn, name, j, v[j]) : NF_OK;
}

/* ---------------------------------------------------------------- standardize */

static nf_status std_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                           const double *in, const double *ctx, double *out, double *logdet,
                           const nf_apply_opts *opts, double *work)
{
  (void)theta;
  (void)ctx;
  (void)opts;
  (void)work;
  const pre_data *p = layer->data;
  size_t d = layer->dim;
  const double *shift = p->a, *scale = p->b;
  if (dir == NF_FORWARD) {
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < d; j++) out[i * d + j] = shift[j] + scale[j] * in[i * d + j];
  } else {
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < d; j++) out[i * d + j] = (in[i * d + j] - shift[j]) / scale[j];
  }
  nf_logdet_add(n, logdet, nf_dir_sign(dir) * p->ld);
  return NF_OK;
}

/* g_in = g_out * scale (forward) or g_out / scale (inverse); the log-det is constant. */
static nf_status std_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                         const double *in, const double *ctx, const double *out,
                         const double *g_out, const double *g_logdet, double *g_in,
                         double *g_ctx, double *g_theta, double *work)
{
  (void)theta;
  (void)in;
  (void)ctx;
  (void)out;
  (void)g_logdet;
  (void)g_ctx;
  (void)g_theta;
  (void)work;
  const pre_data *p = layer->data;
  size_t d = layer->dim;
  for (size_t i = 0; g_in && i < n; i++)
    for (size_t j = 0; j < d; j++)
      g_in[i * d + j] = dir == NF_FORWARD ? g_out[i * d + j] * p->b[j] : g_out[i * d + j] / p->b[j];
  return NF_OK;
}

/* save: "shift" and "scale" as tensors. */
static nf_status std_save(const nf_layer *layer, nf_config *cfg)
{
  const pre_data *p = layer->data;
  nf_status st = nf_config_set_tensor(cfg, "shift", layer->dim, p->a);
  return st ? st : nf_config_set_tensor(cfg, "scale", layer->dim, p->b);
}

/* Reads tensors ka and kb of dim values each into new arrays; then make(a, b). */
static nf_layer *load_pair(const char *family, size_t dim, const nf_config *cfg, const char *ka,
                           const char *kb, double alpha,
                           nf_layer *(*make)(size_t, const double *, const double *, double))
{
  double *a = nf_alloc_n(dim, sizeof *a), *b = nf_alloc_n(dim, sizeof *b);
  nf_layer *layer = NULL;
  if (!a || !b)
    nf_fail(NF_ENOMEM, "%s: out of memory", family);
  else if (!nf_config_get_tensor(cfg, ka, dim, a) && !nf_config_get_tensor(cfg, kb, dim, b))
    layer = make(dim, a, b, alpha);
  free(a);
  free(b);
  return layer;
}

static nf_layer *std_make(size_t dim, const double *shift, const double *scale, double unused)
{
  (void)unused;
  return nf_standardize_new(dim, shift, scale);
}

static nf_layer *std_load(size_t dim, size_t ctx_dim, const nf_config *cfg, const nf_resolver *res)
{
  (void)ctx_dim;
  (void)res;
  return load_pair("standardize", dim, cfg, "shift", "scale", 0.0, std_make);
}

const nf_layer_type nf_standardize_type = {
  .name = "standardize",
  .apply = std_apply,
  .vjp = std_vjp,
  .destroy = pre_destroy,
  .save = std_save,
  .load = std_load,
};

nf_layer *nf_standardize_new(size_t dim, const double *shift, const double *scale)
{
  const char *fn = "nf_standardize_new";
  if (nf_check_dim(fn, dim)) return NULL;
  if (!shift || !scale) {
    nf_fail(NF_EINVAL, "%s: shift or scale is NULL", fn);
    return NULL;
  }
  if (check_finite(fn, "shift", dim, shift) || check_finite(fn, "scale", dim, scale)) return NULL;
  for (size_t j = 0; j < dim; j++)
    if (!(scale[j] >= DBL_MIN)) {
      nf_fail(NF_EINVAL, "%s: scale[%zu] = %g is not > 0 (a normal double)", fn, j, scale[j]);
      return NULL;
    }
  pre_data *p = pre_new(fn, dim, shift, scale, 0);
  if (!p) return NULL;
  for (size_t j = 0; j < dim; j++) p->ld += log(scale[j]);
  return nf_layer_create(&nf_standardize_type, dim, 0, 0, p);
}

nf_status nf_standardize_fit(size_t n, size_t dim, const double *x, double *shift, double *scale)
{
  const char *fn = "nf_standardize_fit";
  if (!x || !shift || !scale) return nf_fail(NF_EINVAL, "%s: NULL array", fn);
  if (n == 0 || dim == 0) return nf_fail(NF_EINVAL, "%s: no rows or no columns", fn);
  size_t nd;
  if (nf_size_mul(n, dim, &nd)) return nf_fail(NF_EINVAL, "%s: n x dim overflows", fn);
  size_t bad = nf_first_nonfinite(nd, x);
  if (bad < nd)
    return nf_fail(NF_ENONFINITE, "%s: row %zu, column %zu is not finite", fn, bad / dim,
                   bad % dim);
  for (size_t j = 0; j < dim; j++) {
    double mean = 0, ss = 0;
    int constant = 1;
    for (size_t i = 0; i < n; i++) {
      mean += x[i * dim + j];
      constant &= x[i * dim + j] == x[j];
    }
    mean /= (double)n;
    if (!isfinite(mean)) { /* the sum overflowed: average scaled values */
      mean = 0;
      for (size_t i = 0; i < n; i++) mean += x[i * dim + j] / (double)n;
    }
    for (size_t i = 0; i < n; i++) {
      double e = x[i * dim + j] - mean;
      ss += e * e;
    }
    double sd = sqrt(ss / (double)n);
    shift[j] = constant ? x[j] : mean;
    scale[j] = constant || !(sd >= DBL_MIN) || !isfinite(sd) ? 1.0 : sd;
  }
  return NF_OK;
}

/* ---------------------------------------------------------------- logit */

/* u = alpha + c (x - lo) and v = alpha + c (hi - x) for column j. */
static void logit_uv(const pre_data *p, size_t j, double x, double *u, double *v)
{
  *u = p->alpha + p->c[j] * (x - p->a[j]);
  *v = p->alpha + p->c[j] * (p->b[j] - x);
}

/* NF_EDOMAIN for the first entry of the n x d batch outside the inverse's
   domain (global row row0 + i): the forward map's image, the open interval
   where u > 0 and v > 0, i.e. (lo - alpha/c, hi + alpha/c), which is (lo, hi)
   when alpha = 0. A NaN fails both tests. */
static nf_status logit_check_domain(const nf_layer *layer, size_t n, const double *x, size_t row0)
{
  const pre_data *p = layer->data;
  size_t d = layer->dim;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) {
      double xv = x[i * d + j], u, v;
      logit_uv(p, j, xv, &u, &v);
      if (!(u > 0 && v > 0 && isfinite(u) && isfinite(v)))
        return nf_fail(NF_EDOMAIN, "logit: row %zu, column %zu: x = %.17g is outside the "
                       "image (%.17g, %.17g) of the map on [%.17g, %.17g] with alpha = %g",
                       row0 + i, j, xv, p->a[j] - p->alpha / p->c[j],
                       p->b[j] + p->alpha / p->c[j], p->a[j], p->b[j], p->alpha);
    }
  return NF_OK;
}

/* x = lo + (u - alpha)/c (z <= 0) or hi - (v - alpha)/c, moved inwards by
   as many ulps as it takes for the inverse's u and v to be positive: where
   sigmoid(z) is below alpha's rounding (|z| > ~37) the formula can land on
   the image's end, and every sample must have a density. */
static double logit_forward_x(const pre_data *p, size_t j, double z)
{
  double x = z <= 0 ? p->a[j] + (nf_sigmoid(z) - p->alpha) / p->c[j]
                    : p->b[j] - (nf_sigmoid(-z) - p->alpha) / p->c[j];
  double u, v, mid = 0.5 * p->a[j] + 0.5 * p->b[j];
  logit_uv(p, j, x, &u, &v);
  for (int k = 0; k < 256 && !(u > 0 && v > 0); k++) {
    x = nextafter(x, mid);
    logit_uv(p, j, x, &u, &v);
  }
  return x;
}

static nf_status logit_apply(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                             const double *in, const double *ctx, double *out, double *logdet,
                             const nf_apply_opts *opts, double *work)
{
  (void)theta;
  (void)ctx;
  (void)work;
  const pre_data *p = layer->data;
  size_t d = layer->dim;
  if (dir == NF_INVERSE) {
    nf_status st = logit_check_domain(layer, n, in, opts->row0);
    if (st) return st;
    for (size_t i = 0; i < n; i++) {
      double ld = -p->ld; /* sum log c */
      for (size_t j = 0; j < d; j++) {
        double u, v;
        logit_uv(p, j, in[i * d + j], &u, &v);
        double lu = log(u), lv = log(v);
        out[i * d + j] = lu - lv;
        ld -= lu + lv;
      }
      if (logdet) logdet[i] += ld;
    }
    return NF_OK;
  }
  for (size_t i = 0; i < n; i++) {
    double ld = p->ld; /* -sum log c */
    for (size_t j = 0; j < d; j++) {
      double z = in[i * d + j];
      out[i * d + j] = logit_forward_x(p, j, z);
      ld -= nf_softplus(-z) + nf_softplus(z);
    }
    if (logdet) logdet[i] += ld;
  }
  return NF_OK;
}

/* Forward at z: g_in = g_out u v / c + g_l (v - u); inverse at x:
   g_in = g_out c / (u v) + g_l (c/v - c/u). */
static nf_status logit_vjp(const nf_layer *layer, const double *theta, nf_dir dir, size_t n,
                           const double *in, const double *ctx, const double *out,
                           const double *g_out, const double *g_logdet, double *g_in,
                           double *g_ctx, double *g_theta, double *work)
{
  (void)theta;
  (void)ctx;
  (void)out;
  (void)g_ctx;
  (void)g_theta;
  (void)work;
  const pre_data *p = layer->data;
  size_t d = layer->dim;
  for (size_t i = 0; g_in && i < n; i++) {
    double gl = g_logdet ? g_logdet[i] : 0.0;
    for (size_t j = 0; j < d; j++) {
      double t = in[i * d + j], g = g_out[i * d + j], u, v, c = p->c[j];
      if (dir == NF_FORWARD) {
        u = nf_sigmoid(t);
        v = nf_sigmoid(-t);
        g_in[i * d + j] = g * (u * v / c) + gl * (v - u);
      } else {
        logit_uv(p, j, t, &u, &v);
        g_in[i * d + j] = g * (c / (u * v)) + gl * (c / v - c / u);
      }
    }
  }
  return NF_OK;
}

/* save: "alpha" and the "lo", "hi" tensors. */
static nf_status logit_save(const nf_layer *layer, nf_config *cfg)
{
  const pre_data *p = layer->data;
  nf_status st = nf_config_set_real(cfg, "alpha", p->alpha);
  if (!st) st = nf_config_set_tensor(cfg, "lo", layer->dim, p->a);
  return st ? st : nf_config_set_tensor(cfg, "hi", layer->dim, p->b);
}

static nf_layer *logit_load(size_t dim, size_t ctx_dim, const nf_config *cfg,
                            const nf_resolver *res)
{
  (void)ctx_dim;
  (void)res;
  double alpha;
  if (nf_config_get_real(cfg, "alpha", &alpha)) return NULL;
  return load_pair("logit", dim, cfg, "lo", "hi", alpha, nf_logit_new);
}

const nf_layer_type nf_logit_type = {
  .name = "logit",
  .apply = logit_apply,
  .vjp = logit_vjp,
  .destroy = pre_destroy,
  .save = logit_save,
  .load = logit_load,
};

nf_layer *nf_logit_new(size_t dim, const double *lo, const double *hi, double alpha)
{
  const char *fn = "nf_logit_new";
  if (nf_check_dim(fn, dim)) return NULL;
  if (!lo || !hi) {
    nf_fail(NF_EINVAL, "%s: lo or hi is NULL", fn);
    return NULL;
  }
  if (check_finite(fn, "lo", dim, lo) || check_finite(fn, "hi", dim, hi)) return NULL;
  if (!(alpha >= 0 && alpha < 0.5)) {
    nf_fail(NF_EINVAL, "%s: alpha = %g is not in [0, 0.5)", fn, alpha);
    return NULL;
  }
  for (size_t j = 0; j < dim; j++) {
    double w = hi[j] - lo[j], c = (1 - 2 * alpha) / w;
    if (!(w > 0) || !isfinite(w) || !(c >= DBL_MIN) || !isfinite(c)) {
      nf_fail(NF_EINVAL, "%s: column %zu: [lo, hi] = [%g, %g] is not an interval of finite, "
              "positive width", fn, j, lo[j], hi[j]);
      return NULL;
    }
  }
  pre_data *p = pre_new(fn, dim, lo, hi, 1);
  if (!p) return NULL;
  p->alpha = alpha;
  for (size_t j = 0; j < dim; j++) {
    p->c[j] = (1 - 2 * alpha) / (hi[j] - lo[j]);
    p->ld -= log(p->c[j]);
  }
  return nf_layer_create(&nf_logit_type, dim, 0, 0, p);
}
